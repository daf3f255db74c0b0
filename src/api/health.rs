//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ops::Operator;
use super::AppState;
use crate::platform::db::MIGRATOR;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    database: bool,
    broker: bool,
    migrations: bool,
}

/// The database and the broker answer, and the schema is current.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Result<Option<i64>, _> = sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
        .fetch_one(&state.pool)
        .await;
    let readiness = Readiness {
        database: applied.is_ok(),
        migrations: matches!(applied, Ok(Some(v)) if v >= latest),
        // The probe has a broker channel of its own: it never waits behind a send.
        broker: state.publisher.ready().await,
    };
    let ok = readiness.database && readiness.broker && readiness.migrations;
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(readiness),
    )
}

/// Prometheus metrics in the text format, for operator credentials only: the page names
/// every tenant's app ids, and this port is the tenants'. (`metrics.listen` serves it without
/// credentials on an internal address.) 404 where this process records none.
pub async fn metrics(_operator: Operator, State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
