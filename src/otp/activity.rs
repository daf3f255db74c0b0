//! The activity log: an app's events across its OTPs (sends, deliveries and receipts,
//! verifications, rejections, expiries), newest first, each with where its callback stands.
//! It reads the outbox, where every state change is written in the change's own transaction,
//! so the log holds exactly what happened, in the order it committed. `GET /v1/logs` and the
//! console's activity page read it.

use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// The kinds of entry a filter may name besides an exact event type (`otp.sent`).
pub const GROUPS: &[(&str, &[&str])] = &[
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

/// The event types `kind` names: a group, or one type (`otp.sent`, or `sent` for short).
pub fn event_types(kind: &str) -> Result<Vec<String>, String> {
    if let Some((_, types)) = GROUPS.iter().find(|(name, _)| *name == kind) {
        return Ok(types.iter().map(|t| t.to_string()).collect());
    }
    let full = if kind.starts_with("otp.") {
        kind.to_string()
    } else {
        format!("otp.{kind}")
    };
    if GROUPS.iter().flat_map(|(_, types)| types.iter()).any(|t| *t == full) {
        Ok(vec![full])
    } else {
        Err(format!("unknown event type or group `{kind}`"))
    }
}

/// Which entries to read; every filter is optional.
#[derive(Debug, Default)]
pub struct Filter {
    pub app: Option<String>,
    pub types: Option<Vec<String>>,
    /// Where the callback stands: `pending`, `delivered`, `gone`, `dead`, `none`.
    pub callback: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// The phone number's last digits.
    pub phone_suffix: Option<String>,
    pub request_id: Option<String>,
    /// Keyset cursor: entries before this sequence number.
    pub before: Option<i64>,
    pub limit: i64,
}

/// One event as the log shows it.
#[derive(Debug)]
pub struct Entry {
    pub id: Uuid,
    /// The cursor: the order events committed in.
    pub seq: i64,
    pub event_type: String,
    pub created_at: OffsetDateTime,
    pub app_id: String,
    pub otp_id: Option<Uuid>,
    pub payload: Value,
    pub callback: String,
    pub callback_attempts: i32,
    pub callback_status: Option<i32>,
    pub request_id: Option<String>,
    pub phone_number: Option<String>,
}

/// Up to `filter.limit` entries, newest first.
pub async fn page(pool: &PgPool, filter: &Filter) -> sqlx::Result<Vec<Entry>> {
    let mut tx = pool.begin().await?;
    // Each filter is optional; a plan made for the values at hand uses the index that fits
    // them (phone suffix, request id or the app's sequence) instead of one generic plan.
    sqlx::query!("set local plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await?;
    let entries = sqlx::query_as!(
        Entry,
        r#"select o.id, o.seq, o.event_type, o.created_at, o.app_id, o.otp_id, o.payload,
                  o.state as callback, o.attempts as callback_attempts, o.last_status as callback_status,
                  p.request_id as "request_id?", p.phone_number as "phone_number?"
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
        filter.app,
        filter.types.as_deref(),
        filter.callback,
        filter.since,
        filter.until,
        filter.phone_suffix,
        filter.request_id,
        filter.before,
        filter.limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(entries)
}
