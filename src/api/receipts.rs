//! The receipt routes: `/v1/receipts/{provider}`, one per configured provider, outside the
//! app-key auth. Each request is let in only by its provider's own proof (a signature, a
//! verify token, a token in the callback URL); anything else gets 403 and changes nothing.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::otp::receipts;
use crate::platform::batch::BatchError;
use crate::provider::receipt::{Answer, Inbound};

pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let provider = state.providers.get(&name).ok_or(ApiError::NoReceiptRoute)?;
    // A full house answers at once; whether the provider sends the receipt again is its own
    // choice (docs/OPERATIONS.md, "Delivery receipts").
    let Ok(_slot) = state.receipt_slots.try_acquire() else {
        metrics::counter!(crate::platform::observability::RECEIPTS, "provider" => name.clone(),
            "status" => "deferred")
        .increment(1);
        return Err(ApiError::Unavailable("the receipt route (receipts.max_in_flight)"));
    };
    // The URL the provider called, as Twilio signs it: the public base, then our path.
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", state.config.receipts.public_url.trim_end_matches('/'));
    let inbound = Inbound {
        method: &method,
        url: &url,
        query: uri.query().unwrap_or_default(),
        headers: &headers,
        body: &body,
    };
    // Refusals are counted; the log line is debug, so nobody can flood the logs with them.
    let answer = provider.read_receipt(&inbound).inspect_err(|refused| {
        tracing::debug!(provider = %name, reason = %refused, "receipt refused");
        metrics::counter!(crate::platform::observability::RECEIPTS, "provider" => name.clone(),
            "status" => "refused")
        .increment(1);
    })?;
    match answer {
        Answer::Challenge(challenge) => Ok((StatusCode::OK, challenge).into_response()),
        Answer::Receipts(list) => {
            state.receipts.take(&name, &list).await.map_err(not_taken)?;
            Ok(StatusCode::OK.into_response())
        }
        Answer::PollNow(ids) => {
            receipts::poll_now(&state.pool, &name, &ids).await?;
            Ok(StatusCode::OK.into_response())
        }
    }
}

/// What a receipt's writer failed with, as the route answers it: a database error as the
/// API answers any, except that locks that met (already tried again) are for later too;
/// anything else is ours.
fn not_taken(error: BatchError) -> ApiError {
    let answer = match &error {
        BatchError::Database(shared) => ApiError::of_database(shared)
            .or_else(|| crate::platform::db::is_lock_conflict(shared).then_some(ApiError::Unavailable("the database"))),
        BatchError::Stopped => Some(ApiError::Unavailable("the receipt writer")),
        BatchError::Panicked => None,
    };
    answer.unwrap_or_else(|| ApiError::Internal(Box::new(error)))
}
