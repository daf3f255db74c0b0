//! The transactional outbox: each status event is a row written by the transaction that
//! made the change, so a change and its callback can never part ways. The row holds the
//! exact callback payload; its id is the `webhook-id`. Rows with a callback URL start
//! `pending` for the dispatcher; the rest are `none`.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::{EventId, OtpId};

/// Keeps the caller's transaction from notifying the dispatchers when it commits: its
/// caller pokes a [`Notifier`] after the commit instead. PostgreSQL lets one notifying
/// transaction commit at a time (it holds its notification lock through the commit's WAL
/// flush); a transaction that does not notify commits beside the others. Lasts until the
/// transaction ends, however it ends.
pub async fn without_notify(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query!("set local otp_courier.notify = off").execute(conn).await?;
    Ok(())
}

/// The payload of a [`Notifier`]'s notifications (the trigger's carry none); the
/// dispatchers read neither.
pub const AFTER_COMMIT: &str = "after-commit";

/// Wakes the dispatchers after transactions kept [`without_notify`] commit: one
/// `NOTIFY` at a time, in its own transaction, for every poke since the last. A poke lost
/// to a crash only leaves its events to the dispatchers' next poll. Cheap to clone; the
/// task that notifies ends with the last clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    pokes: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the notifying task on `pool`; needs a Tokio runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let (pokes, mut poked) = mpsc::channel(1);
        tokio::spawn(async move {
            while poked.recv().await.is_some() {
                let notify = sqlx::query!(
                    "select pg_notify($1, $2)",
                    crate::callbacks::dispatcher::CHANNEL,
                    AFTER_COMMIT
                );
                if let Err(error) = notify.execute(&pool).await {
                    tracing::warn!(%error, "could not wake the dispatchers; they find the events at their next poll");
                }
            }
        });
        Self { pokes }
    }

    /// Asks for a `NOTIFY`; a poke while one is already asked for joins it.
    pub fn poke(&self) {
        let _ = self.pokes.try_send(());
    }
}

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
    Fallback,
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
            EventType::Fallback => "otp.fallback",
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
    /// The workflow step (0 first) the event is about; absent without a workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i16>,
    /// Why a workflow moved to its next step (`otp.fallback` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Value>,
    #[serde(skip)]
    pub callback_url: Option<String>,
}

/// An event's stored body: the Standard Webhooks envelope around the OTP's snapshot.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    timestamp: &'a str,
    data: &'a OtpSnapshot,
}

/// Writes one event inside the caller's transaction.
pub async fn record(conn: &mut PgConnection, event: EventType, otp: &OtpSnapshot) -> sqlx::Result<EventId> {
    let ids = record_many(conn, event, std::slice::from_ref(otp)).await?;
    Ok(ids[0])
}

/// Writes one event per OTP inside the caller's transaction, in one statement.
pub async fn record_many(
    conn: &mut PgConnection,
    event: EventType,
    otps: &[OtpSnapshot],
) -> sqlx::Result<Vec<EventId>> {
    if otps.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<EventId> = otps.iter().map(|_| EventId::new()).collect();
    let now = OffsetDateTime::now_utc();
    let timestamp = now.format(&Rfc3339).unwrap_or_default();
    // Written as JSON text straight from the snapshots: no `Value` tree per event on the
    // way (about 30 allocations each). PostgreSQL parses the text into `jsonb` as it would
    // the binary form, and keys come out in jsonb's order either way.
    let payloads = otps
        .iter()
        .map(|otp| {
            serde_json::to_string(&Envelope {
                event_type: event.as_str(),
                timestamp: &timestamp,
                data: otp,
            })
        })
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let event_ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let otp_ids: Vec<Option<Uuid>> = otps.iter().map(|o| o.otp_id.map(|id| id.as_uuid())).collect();
    let app_ids: Vec<String> = otps.iter().map(|o| o.app_id.clone()).collect();
    let callback_urls: Vec<Option<String>> = otps.iter().map(|o| o.callback_url.clone()).collect();
    sqlx::query!(
        "insert into outbox (id, otp_id, app_id, event_type, callback_url, payload, created_at, state)
         select t.id, t.otp_id, t.app_id, $4, t.callback_url, t.payload::jsonb, $7,
                case when t.callback_url is null then 'none' else 'pending' end
         from unnest($1::uuid[], $2::uuid[], $3::text[], $5::text[], $6::text[])
              as t(id, otp_id, app_id, callback_url, payload)",
        &event_ids,
        &otp_ids as &[Option<Uuid>],
        &app_ids,
        event.as_str(),
        &callback_urls as &[Option<String>],
        &payloads,
        now,
    )
    .execute(conn)
    .await?;
    Ok(ids)
}

/// The columns of `otps` a callback describes, as `RETURNING` gives them.
#[derive(Debug, Clone)]
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
    /// The workflow step the OTP is on; null without a workflow.
    pub workflow_step: Option<i16>,
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
            step: self.workflow_step,
            fallback: None,
        }
    }
}

/// Writes one event per OTP row (as `RETURNING` gave it), each with `error`, inside the
/// caller's transaction, in one statement.
pub async fn record_rows(
    conn: &mut PgConnection,
    event: EventType,
    rows: Vec<OtpRow>,
    error: Option<Value>,
) -> sqlx::Result<Vec<EventId>> {
    let snapshots: Vec<OtpSnapshot> = rows.into_iter().map(|row| row.into_snapshot(error.clone())).collect();
    record_many(conn, event, &snapshots).await
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
                attempts, max_attempts, expires_at, metadata, callback_url, workflow_step
         from otps where id = $1",
        otp_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let ids = record_rows(conn, event, vec![row], error).await?;
    Ok(ids[0])
}
