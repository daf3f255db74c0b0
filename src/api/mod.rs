//! The HTTP API (`otp-courier api`, and part of `serve`): send, verify, resend, cancel,
//! status, list, events, attempts, reports and rate limits under `/v1`, providers' delivery
//! receipts at `/v1/receipts/{provider}`, the app-wide activity log at `/v1/logs`, the
//! dialects of the APIs our users come from (`compat`), operator replays and
//! dead-letter tools under `/v1/ops`, per-app credentials,
//! problem+json errors, and the OpenAPI document at `/openapi.json`.

mod auth;
mod compat;
mod docs;
pub mod error;
mod fraud;
mod health;
mod logs;
mod ops;
mod otp;
mod query;
mod receipts;
mod reports;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::header;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::callbacks::outbox::Notifier;
use crate::message::pin::PinKeys;
use crate::otp::ratelimit::Counters;
use crate::platform::amqp::Publisher;
use crate::platform::config::Config;
use crate::provider::Providers;
use error::ApiError;
use metrics_exporter_prometheus::PrometheusHandle;
pub use otp::OTP_ID_HEADER;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub keys: PinKeys,
    pub providers: Arc<Providers>,
    pub publisher: Publisher,
    pub counters: Counters,
    pub guard: crate::otp::fraud::Guard,
    pub notifier: Notifier,
    pub metrics: Option<PrometheusHandle>,
    /// Stores and applies the receipts the receipt routes take, in batches.
    pub receipts: crate::otp::receipts::Taker,
    /// Places for receipt requests in progress (`receipts.max_in_flight`).
    pub receipt_slots: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    pub fn new(
        pool: PgPool,
        counters: Counters,
        config: Arc<Config>,
        keys: PinKeys,
        providers: Arc<Providers>,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        let publisher = Publisher::new(config.amqp.clone());
        let notifier = Notifier::spawn(pool.clone());
        let guard = crate::otp::fraud::Guard::new(pool.clone(), config.fraud.clone());
        let receipts = crate::otp::receipts::Taker::spawn(pool.clone(), config.limits.clone());
        let receipt_slots = Arc::new(tokio::sync::Semaphore::new(config.receipts.max_in_flight));
        Self {
            inner: Arc::new(Inner {
                receipts,
                receipt_slots,
                notifier,
                guard,
                pool,
                config,
                keys,
                providers,
                publisher,
                counters,
                metrics,
            }),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.api.max_body_bytes;
    let timeout = Duration::from_secs(state.config.api.request_timeout_seconds);
    let console = if state.config.console.enabled {
        crate::console::router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(console)
        .route("/v1/otp/send", post(otp::send))
        .route("/v1/otp/verify", post(otp::verify))
        .route("/v1/otp/resend", post(otp::resend))
        .route("/v1/otp", get(query::list))
        .route("/v1/otp/{id}", get(query::status).delete(otp::cancel))
        .route("/v1/otp/{id}/events", get(query::events))
        .route("/v1/otp/{id}/attempts", get(query::attempts))
        .route("/v1/reports", get(reports::reports))
        .route("/v1/rate-limits", get(reports::rate_limits))
        .route("/v1/logs", get(logs::logs))
        .route(
            "/v1/receipts/{provider}",
            get(receipts::receive).post(receipts::receive),
        )
        .route("/v1/fraud/blocks", get(fraud::blocks))
        .route("/v1/fraud/blocks/{id}/lift", post(fraud::lift))
        .route("/v1/fraud/verdicts", get(fraud::verdicts))
        .route("/v1/ops/replay/deliveries", post(ops::replay_deliveries))
        .route("/v1/ops/replay/callbacks", post(ops::replay_callbacks))
        .route("/v1/ops/dlq", get(ops::dlq_list))
        .route("/v1/ops/dlq/requeue", post(ops::dlq_requeue))
        .route("/v1/ops/dlq/purge", post(ops::dlq_purge))
        .merge(compat::router())
        .route("/openapi.json", get(docs::openapi))
        .route("/asyncapi.json", get(docs::asyncapi))
        .route("/schemas/send-job.schema.json", get(docs::send_job_schema))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| deadline(timeout, request, next),
        ))
        .layer(axum::middleware::from_fn(trace::span))
        .with_state(state)
}

/// Answers 408 (as a problem) when a request, its body's arrival included, outlasts `limit`:
/// a client trickling a body cannot hold a connection and a handler for ever.
async fn deadline(limit: Duration, request: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
    }
}

/// Binds the configured address (port 0 picks a free one); returns the listener and address.
pub async fn bind(config: &Config) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(&config.api.listen).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

/// Serves until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Query parameters, with errors as problems.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|rejection| ApiError::Invalid {
                field: "query".into(),
                reason: rejection.body_text(),
            })
    }
}

/// A JSON body: size-limited, `application/json`, parsed with errors as problems.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = RawJson::from_request(request, state).await?.0;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::Malformed(format!("body is not valid JSON for this request: {e}")))
    }
}

/// The raw bytes of a JSON body, for handlers that parse it themselves.
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Bytes::from_request(request, state)
            .await
            .map(RawJson)
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Malformed(rejection.body_text())
                }
            })
    }
}
