//! The transactional outbox: each status event is a row written by the transaction that
//! made the change, so a change and its callback can never part ways. The row holds the
//! exact callback payload; its id is the `webhook-id`. Rows with a callback URL start
//! `pending` for the dispatcher; the rest are `none`.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{EventId, OtpId};

/// The events of DESIGN, "Status callbacks".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Sent,
    Delivered,
    Undelivered,
    DeliveryFailed,
    Verified,
    VerificationFailed,
    MaxAttemptsReached,
    Expired,
    Cancelled,
    Rejected,
    Replayed,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Sent => "otp.sent",
            EventType::Delivered => "otp.delivered",
            EventType::Undelivered => "otp.undelivered",
            EventType::DeliveryFailed => "otp.delivery_failed",
            EventType::Verified => "otp.verified",
            EventType::VerificationFailed => "otp.verification_failed",
            EventType::MaxAttemptsReached => "otp.max_attempts_reached",
            EventType::Expired => "otp.expired",
            EventType::Cancelled => "otp.cancelled",
            EventType::Rejected => "otp.rejected",
            EventType::Replayed => "otp.replayed",
        }
    }
}

/// An OTP as a callback describes it (the `data` object).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpSnapshot {
    pub otp_id: Option<OtpId>,
    pub app_id: String,
    pub request_id: Option<String>,
    pub phone_number: Option<String>,
    pub channel: Option<String>,
    pub status: String,
    pub delivery: Option<String>,
    pub locale: Option<String>,
    pub parts: Option<i32>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i16>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub metadata: Option<Value>,
    #[serde(skip)]
    pub callback_url: Option<String>,
}

/// Writes one event inside the caller's transaction.
pub async fn record(conn: &mut PgConnection, event: EventType, otp: &OtpSnapshot) -> sqlx::Result<EventId> {
    let id = EventId::new();
    let now = OffsetDateTime::now_utc();
    let payload = json!({
        "type": event.as_str(),
        "timestamp": now.format(&Rfc3339).unwrap_or_default(),
        "data": otp,
    });
    sqlx::query!(
        "insert into outbox (id, otp_id, app_id, event_type, callback_url, payload, created_at, state)
         values ($1, $2, $3, $4, $5, $6, $7, case when $5::text is null then 'none' else 'pending' end)",
        id.as_uuid(),
        otp.otp_id.map(|id| id.as_uuid()) as Option<Uuid>,
        otp.app_id,
        event.as_str(),
        otp.callback_url,
        payload,
        now,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The columns of `otps` a callback describes, as `RETURNING` gives them.
#[derive(Debug)]
pub struct OtpRow {
    pub id: Uuid,
    pub app_id: String,
    pub request_id: String,
    pub phone_number: String,
    pub channel: String,
    pub status: String,
    pub delivery: String,
    pub locale: String,
    pub parts: i32,
    pub attempts: i32,
    pub max_attempts: i16,
    pub expires_at: OffsetDateTime,
    pub metadata: Option<Value>,
    pub callback_url: Option<String>,
}

impl OtpRow {
    pub fn into_snapshot(self, error: Option<Value>) -> OtpSnapshot {
        OtpSnapshot {
            otp_id: Some(OtpId::from_uuid(self.id)),
            app_id: self.app_id,
            request_id: Some(self.request_id),
            phone_number: Some(self.phone_number),
            channel: Some(self.channel),
            status: self.status,
            delivery: Some(self.delivery),
            locale: Some(self.locale),
            parts: Some(self.parts),
            attempts: Some(self.attempts),
            max_attempts: Some(self.max_attempts),
            expires_at: Some(self.expires_at),
            error,
            metadata: self.metadata,
            callback_url: self.callback_url,
        }
    }
}

/// Writes an event for an OTP as it stands now in the caller's transaction.
pub async fn record_for_otp(
    conn: &mut PgConnection,
    otp_id: Uuid,
    event: EventType,
    error: Option<Value>,
) -> sqlx::Result<EventId> {
    let row = sqlx::query_as!(
        OtpRow,
        "select id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                attempts, max_attempts, expires_at, metadata, callback_url
         from otps where id = $1",
        otp_id
    )
    .fetch_one(&mut *conn)
    .await?;
    record(conn, event, &row.into_snapshot(error)).await
}
