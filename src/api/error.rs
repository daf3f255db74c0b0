//! The one error type of the HTTP edge, rendered as RFC 9457 `application/problem+json` with a
//! stable `type` per kind of problem. Internal errors are logged and answered opaquely.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::otp::ratelimit::Decision;

/// A problem answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("this operation needs an operator credential")]
    Forbidden,
    #[error("no such OTP")]
    NotFound,
    #[error("no provider of that name takes receipts here")]
    NoReceiptRoute,
    /// The reason stays in the debug log: the answer does not tell a prober what is set up.
    #[error("receipt refused: its proof is missing or wrong")]
    ReceiptRefused(#[from] crate::provider::receipt::Refused),
    #[error("{0}")]
    Malformed(String),
    #[error("request body is larger than the limit (api.max_body_bytes)")]
    TooLarge,
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{detail}")]
    Rejected { reason: &'static str, detail: String },
    #[error("the code is not correct")]
    InvalidCode { remaining: i32 },
    #[error("the OTP has expired")]
    Expired,
    #[error("no verification attempts are left")]
    AttemptsExhausted,
    #[error("the OTP is {0}")]
    NotPending(String),
    #[error("this OTP has been resent the maximum of {0} times")]
    ResendLimit(u32),
    #[error("a delivery of this OTP is under way")]
    DeliveryInProgress,
    #[error("rate limit `{name}` exceeded")]
    RateLimited { name: &'static str, decision: Decision },
    #[error("too many wrong codes for this phone number (limits.verify_failures_per_phone); try again later")]
    TooManyFailures(Decision),
    #[error("the request took longer than {0} s (api.request_timeout_seconds); a body must arrive within it")]
    Timeout(u64),
    #[error("{0} is unavailable; try again shortly")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::of_database(&error).unwrap_or_else(|| ApiError::Internal(Box::new(error)))
    }
}

impl ApiError {
    /// What a database error says to the caller, where it is not the server's own failure:
    /// a database out of reach is for later, and a value the database cannot take (a NUL
    /// character, an out-of-range time) is the request's fault.
    pub fn of_database(error: &sqlx::Error) -> Option<Self> {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Some(ApiError::Unavailable("the database"))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => Some(ApiError::Invalid {
                field: "request".into(),
                reason: "a value contains characters or a range the server cannot store".into(),
            }),
            _ => None,
        }
    }
}

impl From<crate::domain::JobError> for ApiError {
    fn from(error: crate::domain::JobError) -> Self {
        // A body that is not JSON at all is a malformed request, as on every other route.
        if let crate::domain::JobError::Malformed(detail) = &error {
            return ApiError::Malformed(format!("body is not a JSON object: {detail}"));
        }
        ApiError::Rejected {
            reason: error.reason(),
            detail: error.to_string(),
        }
    }
}

impl From<crate::otp::intake::Rejection> for ApiError {
    fn from(rejection: crate::otp::intake::Rejection) -> Self {
        ApiError::Rejected {
            reason: rejection.reason(),
            detail: rejection.to_string(),
        }
    }
}

/// The problem body, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable problem type, e.g. `urn:otp-courier:problem:invalid-code`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    /// (HTTP status, stable type suffix, title)
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound | NoReceiptRoute => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ReceiptRefused(_) => (StatusCode::FORBIDDEN, "receipt-refused", "Receipt refused"),
            Malformed(_) => (StatusCode::BAD_REQUEST, "malformed-request", "Malformed request"),
            TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request"),
            Rejected { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "job-rejected", "Send job rejected"),
            InvalidCode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-code", "Invalid code"),
            Expired => (StatusCode::GONE, "expired", "OTP expired"),
            AttemptsExhausted => (StatusCode::GONE, "attempts-exhausted", "Attempts exhausted"),
            NotPending(_) => (StatusCode::CONFLICT, "not-pending", "OTP not pending"),
            ResendLimit(_) => (StatusCode::CONFLICT, "resend-limit-reached", "Resend limit reached"),
            DeliveryInProgress => (StatusCode::CONFLICT, "delivery-in-progress", "Delivery in progress"),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Rate limited"),
            TooManyFailures(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failed-verifications",
                "Too many failed verifications",
            ),
            Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    fn extensions(&self) -> Map<String, Value> {
        let mut map = Map::new();
        match self {
            ApiError::Invalid { field, .. } => {
                map.insert("field".into(), json!(field));
            }
            ApiError::Rejected { reason, .. } => {
                map.insert("reason".into(), json!(reason));
            }
            ApiError::InvalidCode { remaining } => {
                map.insert("remainingAttempts".into(), json!(remaining));
            }
            ApiError::NotPending(status) => {
                map.insert("otpStatus".into(), json!(status));
            }
            ApiError::RateLimited { name, decision } => {
                metrics::counter!(crate::platform::observability::RATE_LIMITED, "limit" => *name).increment(1);
                map.insert("limit".into(), json!(name));
                map.insert("retryAfter".into(), json!(decision.retry_after().as_secs().max(1)));
            }
            ApiError::TooManyFailures(decision) => {
                metrics::counter!(crate::platform::observability::RATE_LIMITED, "limit" => "verify_failures_per_phone")
                    .increment(1);
                map.insert("limit".into(), json!("verify_failures_per_phone"));
                map.insert("retryAfter".into(), json!(decision.retry_after().as_secs().max(1)));
            }
            _ => {}
        }
        map
    }
}

/// `RateLimit-*` headers (IETF draft) and `Retry-After` when over the limit.
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, decision: &Decision) {
    let reset = decision.retry_after().as_secs().max(1);
    for (name, value) in [
        ("ratelimit-limit", decision.limit.to_string()),
        ("ratelimit-remaining", decision.remaining.to_string()),
        ("ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if !decision.allowed {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(reset));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %source, "request failed");
                "the server could not complete the request".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("urn:otp-courier:problem:{kind}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extensions());
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited { decision, .. } | ApiError::TooManyFailures(decision) = &self {
            rate_limit_headers(response.headers_mut(), decision);
        }
        if let ApiError::Unavailable(_) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}
