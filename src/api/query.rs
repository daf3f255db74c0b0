//! The read side: one OTP, a filtered list, its events and its attempts. Never a PIN.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::otp::parse_id;
use super::{AppState, QueryParams};
use crate::domain::EventId;
use crate::tenancy::keys::Caller;

/// An OTP as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtpView {
    otp_id: String,
    app_id: String,
    request_id: String,
    phone_number: String,
    channel: String,
    status: String,
    delivery: String,
    locale: String,
    parts: i32,
    provider: String,
    attempts: i32,
    max_attempts: i16,
    resends: i32,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    verified_at: Option<OffsetDateTime>,
    last_error: Option<Value>,
    metadata: Option<Value>,
    /// The channel workflow, where the OTP has one: its `steps` (`channel`,
    /// `timeoutSeconds`), the `step` it is on (0 first) and, while pending, `nextStepAt`.
    workflow: Option<Value>,
}

/// The status of one OTP.
#[utoipa::path(get, path = "/v1/otp/{id}", params(("id" = String, Path, description = "otp_…")),
    responses((status = 200, body = OtpView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OtpView>, ApiError> {
    let id = parse_id(&id)?;
    let view = sqlx::query_as!(
        OtpView,
        r#"select 'otp_' || replace(id::text, '-', '') as "otp_id!", app_id, request_id, phone_number, channel,
                status, delivery, locale, parts, provider, attempts, max_attempts, resends, expires_at, created_at,
                sent_at, verified_at, last_error, metadata,
                otp_workflow_view(workflow, workflow_step, status, step_due_at) as workflow
         from otps where id = $1 and ($2::text is null or app_id = $2)"#,
        id,
        caller.app_filter()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    status: Option<String>,
    delivery: Option<String>,
    /// E.164, exact.
    #[serde(alias = "recipient")]
    phone: Option<String>,
    channel: Option<String>,
    /// Operators only: one app.
    #[serde(alias = "appid")]
    app_id: Option<String>,
    /// RFC 3339; created at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    since: Option<OffsetDateTime>,
    /// RFC 3339; created before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<OffsetDateTime>,
    /// 1-200, default 50.
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtpPage {
    items: Vec<OtpView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// OTPs, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/otp", params(ListFilter),
    responses((status = 200, body = OtpPage), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<ListFilter>,
) -> Result<Json<OtpPage>, ApiError> {
    let limit = filter.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid {
            field: "limit".into(),
            reason: "must be between 1 and 200".into(),
        });
    }
    let app = caller.scope(filter.app_id.clone());
    let (after_time, after_id) = match filter.cursor.as_deref().map(decode_cursor).transpose()? {
        Some((time, id)) => (Some(time), Some(id)),
        None => (None, None),
    };
    let mut items = sqlx::query_as!(
        OtpView,
        r#"select 'otp_' || replace(id::text, '-', '') as "otp_id!", app_id, request_id, phone_number, channel,
                status, delivery, locale, parts, provider, attempts, max_attempts, resends, expires_at, created_at,
                sent_at, verified_at, last_error, metadata,
                otp_workflow_view(workflow, workflow_step, status, step_due_at) as workflow
         from otps
         where ($1::text is null or app_id = $1) and ($2::text is null or status = $2)
           and ($3::text is null or delivery = $3) and ($4::text is null or phone_number = $4)
           and ($5::text is null or channel = $5) and ($6::timestamptz is null or created_at >= $6)
           and ($7::timestamptz is null or created_at < $7)
           and ($8::timestamptz is null or (created_at, id) < ($8, $9::uuid))
         order by created_at desc, id desc
         limit $10"#,
        app,
        filter.status,
        filter.delivery,
        filter.phone,
        filter.channel,
        filter.since,
        filter.until,
        after_time,
        after_id,
        limit + 1,
    )
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|v| encode_cursor(v.created_at, &v.otp_id))
    } else {
        None
    };
    Ok(Json(OtpPage { items, next_cursor }))
}

fn encode_cursor(time: OffsetDateTime, otp_id: &str) -> String {
    let raw = format!(
        "{}:{}",
        time.unix_timestamp_nanos() / 1000,
        otp_id.trim_start_matches("otp_")
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<(OffsetDateTime, Uuid), ApiError> {
    let invalid = || ApiError::Invalid {
        field: "cursor".into(),
        reason: "not a cursor this API issued".into(),
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
    let micros: i128 = micros.parse().map_err(|_| invalid())?;
    let nanos = micros.checked_mul(1000).ok_or_else(invalid)?;
    let time = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    Ok((time, Uuid::parse_str(id).map_err(|_| invalid())?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// The callback's `webhook-id`.
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The callback body.
    payload: Value,
    /// Its delivery to `otpCallbackUrl`; absent when the OTP has no callback URL.
    callback: Option<CallbackView>,
}

/// Where a callback stands, and every attempt at it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackView {
    /// `pending`, `delivered`, `gone` (the receiver answered 410) or `dead` (out of retries).
    state: String,
    #[serde(with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    delivered_at: Option<OffsetDateTime>,
    attempts: Vec<CallbackAttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackAttemptView {
    attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    http_status: Option<i32>,
    latency_ms: i32,
    error: Option<String>,
}

/// The status events of one OTP, oldest first.
#[utoipa::path(get, path = "/v1/otp/{id}/events", params(("id" = String, Path, description = "otp_…")),
    responses((status = 200, body = [EventView]), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let id = visible(&state, &caller, &id).await?;
    let rows = sqlx::query!(
        // While a dispatcher holds the event, the next attempt can come no sooner than its
        // lease's end.
        r#"select id, event_type, created_at, payload, state,
                  greatest(next_attempt_at, leased_until) as "next_attempt_at!", delivered_at
           from outbox where otp_id = $1 order by seq"#,
        id
    )
    .fetch_all(&state.pool)
    .await?;
    let mut attempts: HashMap<Uuid, Vec<CallbackAttemptView>> = HashMap::new();
    for a in sqlx::query!(
        "select a.event_id, a.attempt, a.started_at, a.http_status, a.latency_ms, a.error
         from callback_attempts a join outbox o on o.id = a.event_id
         where o.otp_id = $1 order by a.id",
        id
    )
    .fetch_all(&state.pool)
    .await?
    {
        attempts.entry(a.event_id).or_default().push(CallbackAttemptView {
            attempt: a.attempt,
            started_at: a.started_at,
            http_status: a.http_status,
            latency_ms: a.latency_ms,
            error: a.error,
        });
    }
    Ok(Json(
        rows.into_iter()
            .map(|r| EventView {
                id: EventId::from_uuid(r.id).to_string(),
                kind: r.event_type,
                created_at: r.created_at,
                payload: r.payload,
                callback: (r.state != "none").then(|| CallbackView {
                    next_attempt_at: (r.state == "pending").then_some(r.next_attempt_at),
                    state: r.state,
                    delivered_at: r.delivered_at,
                    attempts: attempts.remove(&r.id).unwrap_or_default(),
                }),
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttemptView {
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    provider: String,
    outcome: String,
    http_status: Option<i32>,
    latency_ms: i32,
    error: Option<String>,
    /// The provider's id of the message this request made, where it answered with one.
    message_id: Option<String>,
    /// The provider's own error code (Twilio `code`, Meta `error.code`, the field Xoxzo names).
    provider_code: Option<String>,
    /// The furthest state the provider's receipts gave the message: `queued`, `sent`,
    /// `delivered`, `read`, `undelivered` or `failed`; null before any receipt.
    receipt_status: Option<String>,
    /// The error code of that receipt, if any.
    receipt_code: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    receipt_at: Option<OffsetDateTime>,
}

/// A delivery receipt, as the provider sent it and as we read it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptView {
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    provider: String,
    message_id: String,
    /// Ours: `queued`, `sent`, `delivered`, `read`, `undelivered`, `failed`.
    status: String,
    /// The provider's own status name.
    provider_status: String,
    provider_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationAttemptView {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempts {
    deliveries: Vec<DeliveryAttemptView>,
    /// Every receipt of the OTP's messages, in the order they came.
    receipts: Vec<ReceiptView>,
    verifications: Vec<VerificationAttemptView>,
}

/// Every provider request and every verification of one OTP.
#[utoipa::path(get, path = "/v1/otp/{id}/attempts", params(("id" = String, Path, description = "otp_…")),
    responses((status = 200, body = Attempts), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Attempts>, ApiError> {
    let id = visible(&state, &caller, &id).await?;
    let deliveries = sqlx::query_as!(
        DeliveryAttemptView,
        "select started_at, provider, outcome, http_status, latency_ms, error, message_id, provider_code,
                receipt_status, receipt_code, receipt_at
         from delivery_attempts where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?;
    let receipts = sqlx::query_as!(
        ReceiptView,
        "select received_at, provider, message_id, status, provider_status, provider_code
         from delivery_receipts where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?;
    let verifications = sqlx::query_as!(
        VerificationAttemptView,
        "select at, outcome from verification_attempts where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Attempts {
        deliveries,
        receipts,
        verifications,
    }))
}

/// The OTP's id if the caller may see it; another app's OTP is simply not found.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Uuid, ApiError> {
    let id = parse_id(id)?;
    sqlx::query_scalar!(
        "select id from otps where id = $1 and ($2::text is null or app_id = $2)",
        id,
        caller.app_filter()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)
}
