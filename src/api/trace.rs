//! One span per HTTP request, named by an `X-Request-Id`: the caller's when it sends a
//! usable one, otherwise a fresh one. The id goes back in the response, so a caller can
//! quote it, and handlers add the OTP's `otp_id`, `app_id` and `request_id` to the span.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-chosen id kept; longer or oddly shaped ones are replaced, not logged.
const MAX_ID_LEN: usize = 128;

/// The caller's id when it is short and made of `[A-Za-z0-9._:-]`, else a new one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| usable(id))
        .map_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()), str::to_string)
}

fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

pub async fn span(request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        route,
        http_request_id = id.as_str(),
        app_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
        otp_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// Adds what a handler learnt about the OTP to the request's span.
pub fn record(app_id: Option<&str>, request_id: Option<&str>, otp_id: Option<&dyn std::fmt::Display>) {
    let span = tracing::Span::current();
    if let Some(app_id) = app_id {
        span.record("app_id", app_id);
    }
    if let Some(request_id) = request_id {
        span.record("request_id", request_id);
    }
    if let Some(otp_id) = otp_id {
        span.record("otp_id", tracing::field::display(otp_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(usable("4bf92f35-77b3-4da6.a:1_x"));
        assert!(usable(&"a".repeat(MAX_ID_LEN)));
        assert!(!usable(""));
        assert!(!usable(&"a".repeat(MAX_ID_LEN + 1)));
        assert!(!usable("a b"));
        assert!(!usable("id\"}{"));
        assert!(!usable("é"));
    }

    #[test]
    fn a_missing_id_is_made_up() {
        let request = Request::builder().body(axum::body::Body::empty()).expect("request");
        let id = request_id(&request);
        assert!(id.starts_with("req_") && usable(&id), "{id}");
        let request = Request::builder()
            .header("x-request-id", "bad id")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_ne!(request_id(&request), "bad id");
    }
}
