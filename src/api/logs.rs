//! The activity log: an app's events across its OTPs (sends, deliveries and receipts,
//! verifications, rejections, expiries), newest first, each with where its callback stands.
//! It reads the outbox, where every state change is written in the change's own transaction,
//! so the log holds exactly what happened, in the order it committed.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::{AppState, QueryParams};
use crate::domain::{EventId, OtpId};
use crate::tenancy::keys::Caller;

/// The kinds of entry `type` takes besides an exact event type (`otp.sent`).
const GROUPS: &[(&str, &[&str])] = &[
    ("sends", &["otp.sent", "otp.replayed", "otp.fallback"]),
    (
        "deliveries",
        &["otp.sent", "otp.delivered", "otp.undelivered", "otp.delivery_failed"],
    ),
    ("receipts", &["otp.delivered", "otp.undelivered"]),
    (
        "verifications",
        &["otp.verified", "otp.verification_failed", "otp.max_attempts_reached"],
    ),
    ("rejections", &["otp.rejected"]),
    ("endings", &["otp.expired", "otp.cancelled"]),
];

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
    let types = filter.kind.as_deref().map(event_types).transpose()?;
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
    let app = caller.scope(filter.app_id.clone());
    let mut tx = state.pool.begin().await?;
    // Each filter is optional; a plan made for the values at hand uses the index that fits
    // them (phone suffix, request id or the app's sequence) instead of one generic plan.
    sqlx::query!("set local plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query!(
        r#"select o.id, o.seq, o.event_type, o.created_at, o.app_id, o.otp_id, o.payload, o.state,
                  o.attempts, o.last_status, p.request_id as "request_id?", p.phone_number as "phone_number?"
           from outbox o left join otps p on p.id = o.otp_id
           where ($1::text is null or o.app_id = $1)
             and ($2::text[] is null or o.event_type = any($2))
             and ($3::text is null or o.state = $3)
             and ($4::timestamptz is null or o.created_at >= $4)
             and ($5::timestamptz is null or o.created_at < $5)
             and ($6::text is null or o.otp_id in (
                   select id from otps where reverse(phone_number) like reverse($6) || '%'
                     and ($1::text is null or app_id = $1)))
             and ($7::text is null or o.otp_id in (
                   select id from otps where request_id = $7 and ($1::text is null or app_id = $1)))
             and ($8::bigint is null or o.seq < $8)
           order by o.seq desc
           limit $9"#,
        app,
        types.as_deref(),
        filter.callback,
        filter.since,
        filter.until,
        suffix,
        filter.request_id,
        before,
        limit + 1,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let next_cursor = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].seq.to_string());
    let items = rows
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
                callback: r.state,
                callback_attempts: r.attempts,
                callback_status: r.last_status,
            }
        })
        .collect();
    Ok(Json(LogPage { items, next_cursor }))
}

/// The event types `type` names: a group, or one type (`otp.sent`, or `sent` for short).
fn event_types(kind: &str) -> Result<Vec<String>, ApiError> {
    if let Some((_, types)) = GROUPS.iter().find(|(name, _)| *name == kind) {
        return Ok(types.iter().map(|t| t.to_string()).collect());
    }
    let full = if kind.starts_with("otp.") {
        kind.to_string()
    } else {
        format!("otp.{kind}")
    };
    let known = GROUPS.iter().flat_map(|(_, types)| types.iter()).any(|t| *t == full);
    if known {
        Ok(vec![full])
    } else {
        Err(ApiError::Invalid {
            field: "type".into(),
            reason: format!("unknown event type or group `{kind}`"),
        })
    }
}
