//! `GET /v1/logs`: the activity log (`otp::activity`) over HTTP.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::{AppState, QueryParams};
use crate::domain::{EventId, OtpId};
use crate::otp::activity;
use crate::tenancy::keys::Caller;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LogFilter {
    /// An event type (`otp.verified`) or a group: `sends`, `deliveries`, `receipts`,
    /// `verifications`, `rejections`, `endings`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Where the callback stands: `pending`, `delivered`, `gone`, `dead`, `none`.
    callback: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    since: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<OffsetDateTime>,
    /// The phone number's last digits.
    #[serde(alias = "recipient")]
    phone_suffix: Option<String>,
    request_id: Option<String>,
    /// Operators: one app's log (they see every app's otherwise).
    #[serde(alias = "appid")]
    app_id: Option<String>,
    /// 1–200, default 50.
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// The event id (a callback's `webhook-id`).
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    app_id: String,
    otp_id: Option<String>,
    request_id: Option<String>,
    phone_number: Option<String>,
    /// The event's `data`, as its callback carries it.
    data: Value,
    /// Where its callback stands: `pending`, `delivered`, `gone`, `dead`, or `none` (no URL).
    callback: String,
    callback_attempts: i32,
    /// The receiver's last HTTP status.
    callback_status: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    items: Vec<LogEntry>,
    next_cursor: Option<String>,
}

/// The app's events across its OTPs, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/logs", params(LogFilter),
    responses((status = 200, body = LogPage), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<LogFilter>,
) -> Result<Json<LogPage>, ApiError> {
    let invalid = |field: &str, reason: &str| ApiError::Invalid {
        field: field.into(),
        reason: reason.into(),
    };
    let limit = filter.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 200"));
    }
    let types = filter
        .kind
        .as_deref()
        .map(activity::event_types)
        .transpose()
        .map_err(|reason| invalid("type", &reason))?;
    let suffix = match filter.phone_suffix.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(digits) if digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit()) => Some(digits.to_string()),
        Some(_) => return Err(invalid("phoneSuffix", "up to 15 digits")),
    };
    let before = filter
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| invalid("cursor", "not a cursor this API issued"))
        })
        .transpose()?;
    let entries = activity::page(
        &state.pool,
        &activity::Filter {
            app: caller.scope(filter.app_id.clone()),
            types,
            callback: filter.callback,
            since: filter.since,
            until: filter.until,
            phone_suffix: suffix,
            request_id: filter.request_id,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = (entries.len() as i64 > limit).then(|| entries[limit as usize - 1].seq.to_string());
    let items = entries
        .into_iter()
        .take(limit as usize)
        .map(|r| {
            let mut payload = r.payload;
            LogEntry {
                id: EventId::from_uuid(r.id).to_string(),
                kind: r.event_type,
                created_at: r.created_at,
                app_id: r.app_id,
                otp_id: r.otp_id.map(|id| OtpId::from_uuid(id).to_string()),
                request_id: r.request_id,
                phone_number: r.phone_number,
                data: payload.get_mut("data").map(Value::take).unwrap_or(Value::Null),
                callback: r.callback,
                callback_attempts: r.callback_attempts,
                callback_status: r.callback_status,
            }
        })
        .collect();
    Ok(Json(LogPage { items, next_cursor }))
}
