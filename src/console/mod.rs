//! The ops console: server-rendered pages under `/console` for operators (signed in with
//! an operator key): an overview with charts, the OTPs with filters, each OTP's timeline
//! with its actions, the activity log across OTPs, failures with bulk replay, the
//! dead-letter queue, apps and the audit log.
//! Templates are compile-time checked and escape every value (maud); the pages carry no
//! script, and a strict Content-Security-Policy forbids any; every change is a form with
//! the session's CSRF token, recorded in `operator_actions` as `console:<key id>`.

mod activity;
mod apps;
mod audit;
mod dlq;
mod failures;
mod fraud;
mod otps;
mod overview;
mod page;
mod session;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;

const STYLESHEET: &str = include_str!("static/console.css");

/// What every console answer carries: nothing runs but our own stylesheet, nothing frames
/// the pages, nothing is cached or sniffed, no referrer leaves.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/overview") }))
        .route("/console/overview", get(overview::show))
        .route("/console/sign-in", get(session::form).post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/otps", get(otps::list))
        .route("/console/activity", get(activity::list))
        .route("/console/otps/{id}", get(otps::timeline))
        .route("/console/otps/{id}/cancel", post(otps::cancel))
        .route("/console/otps/{id}/replay-delivery", post(otps::replay_delivery))
        .route("/console/otps/{id}/replay-callback", post(otps::replay_callback))
        .route("/console/failures", get(failures::page_of))
        .route("/console/failures/deliveries", post(failures::deliveries))
        .route("/console/failures/callbacks", post(failures::callbacks))
        .route("/console/fraud-blocks/{id}/lift", post(fraud::lift))
        .route("/console/dlq", get(dlq::list).post(dlq::act))
        .route("/console/apps", get(apps::list))
        .route("/console/apps/{id}/rotate-key", post(apps::rotate_key))
        .route(
            "/console/apps/{id}/rotate-webhook-secret",
            post(apps::rotate_webhook_secret),
        )
        .route("/console/audit", get(audit::list))
        .route(
            "/console/static/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response() }),
        )
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
