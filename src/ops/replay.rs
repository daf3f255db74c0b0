//! Operator replays: OTPs whose delivery failed go out again, dead callbacks are sent again.
//! Both work in batches of short transactions that lock what they change, select only rows
//! still in the state being replayed (so a second run changes nothing), and leave an
//! `operator_actions` record of who ran what.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType};

/// Rows changed per transaction.
const BATCH: i64 = 500;

/// Which failed deliveries to replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, clap::Args)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryFilter {
    /// Only this app's OTPs.
    #[arg(long)]
    pub app: Option<String>,
    /// `failed` (default): delivery failed. `expired`: expired before any delivery succeeded.
    #[arg(long)]
    pub status: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<OffsetDateTime>,
    /// Created before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<OffsetDateTime>,
    /// Only OTPs routed to this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// The class of the last error: `provider_rejected`, `provider_unavailable`, `rate_limited`,
    /// `timeout`, `connect`, `expired`, `config`, `file`; `none`: no error recorded.
    #[arg(long)]
    pub error_class: Option<String>,
    /// Only this OTP (its id).
    #[arg(long)]
    pub otp: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<i64>,
    /// Count what matches; change nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

/// Which callbacks to replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, clap::Args)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackFilter {
    /// Only this app's events.
    #[arg(long)]
    pub app: Option<String>,
    /// `dead` (default) or `gone`.
    #[arg(long)]
    pub status: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<OffsetDateTime>,
    /// Created before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<OffsetDateTime>,
    /// An event type, e.g. `otp.sent`.
    #[arg(long)]
    pub event: Option<String>,
    /// Only this OTP's events (its id).
    #[arg(long)]
    pub otp: Option<String>,
    /// Only callbacks to this host (`host` or `host:port`, as in the callback URL).
    #[arg(long)]
    pub destination: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<i64>,
    /// Count what matches; change nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

fn rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time (2026-11-22T10:00:00Z): {e}"))
}

/// A filter value the replay cannot use.
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct InvalidFilter {
    pub field: &'static str,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Invalid(#[from] InvalidFilter),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a replay did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub dry_run: bool,
    /// Rows that matched the filter when the replay started.
    pub matched: u64,
    /// Rows put back to work.
    pub replayed: u64,
    /// Of those, OTPs that had expired and got a new code and a fresh TTL.
    pub new_codes: u64,
}

/// Called after each batch with (done, matched).
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

fn limit_of(limit: Option<i64>) -> Result<i64, InvalidFilter> {
    match limit {
        None => Ok(i64::MAX),
        Some(n) if n >= 1 => Ok(n),
        Some(n) => Err(InvalidFilter {
            field: "limit",
            reason: format!("{n} is not a positive count"),
        }),
    }
}

fn otp_of(otp: Option<&str>) -> Result<Option<Uuid>, InvalidFilter> {
    otp.map(|id| {
        crate::domain::OtpId::from_str(id)
            .map(|id| id.as_uuid())
            .map_err(|e| InvalidFilter {
                field: "otp",
                reason: e.to_string(),
            })
    })
    .transpose()
}

fn one_of(field: &'static str, value: Option<&str>, allowed: &[&'static str]) -> Result<&'static str, InvalidFilter> {
    let Some(value) = value else { return Ok(allowed[0]) };
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .ok_or_else(|| InvalidFilter {
            field,
            reason: format!("`{value}` is not one of {}", allowed.join(", ")),
        })
}

/// Puts failed deliveries back in the queue. Within its TTL an OTP goes out with the same
/// PIN; past it, with a new generation (a new code) and a fresh TTL. Failed verification
/// attempts are kept. Each OTP gets an `otp.replayed` event.
pub async fn deliveries(
    pool: &PgPool,
    filter: &DeliveryFilter,
    actor: &str,
    progress: Progress<'_>,
) -> Result<Summary, ReplayError> {
    let status = one_of("status", filter.status.as_deref(), &["failed", "expired"])?;
    let limit = limit_of(filter.limit)?;
    let otp = otp_of(filter.otp.as_deref())?;
    let matched = sqlx::query_scalar!(
        r#"select count(*) as "n!" from (
               select 1 from otps o
               where o.status = $1 and ($1 = 'failed' or (o.delivery in ('queued', 'failed') and o.sent_at is null))
                 and ($2::text is null or o.app_id = $2) and ($3::timestamptz is null or o.created_at >= $3)
                 and ($4::timestamptz is null or o.created_at < $4) and ($5::text is null or o.provider = $5)
                 and ($6::text is null or coalesce(o.last_error->>'class', 'none') = $6) and ($8::uuid is null or o.id = $8)
                 -- What the replay would skip (see below) is not counted either.
                 and not exists (select 1 from otps p where p.app_id = o.app_id and p.request_id = o.request_id
                                 and p.status = 'pending' and p.id <> o.id)
                 and (not o.request_id_derived
                      or not exists (select 1 from otps p where p.app_id = o.app_id and p.request_id = o.request_id
                                     and p.id <> o.id and p.status = o.status and p.created_at > o.created_at))
               limit $7) matching"#,
        status,
        filter.app,
        filter.since,
        filter.until,
        filter.provider,
        filter.error_class,
        limit,
        otp,
    )
    .fetch_one(pool)
    .await? as u64;
    let dry_run = filter.dry_run;
    let mut summary = Summary {
        dry_run,
        matched,
        ..Summary::default()
    };
    let audit = Audit::begin(pool, "replay-deliveries", actor, json!(filter), dry_run).await?;
    let (mut cursor, mut conflicts) = (Uuid::nil(), 0);
    while !dry_run && (summary.replayed as i64) < limit {
        let mut tx = pool.begin().await?;
        // Planned for the filter's actual values: a generic plan reads each unset filter as
        // selective, and may join in an order that fresh table statistics would not pick.
        sqlx::query!("set local plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        let batch = match sqlx::query!(
            r#"with picked as (
                   select o.id, o.generation from otps o
                   where o.status = $1 and ($1 = 'failed' or (o.delivery in ('queued', 'failed') and o.sent_at is null))
                     and ($2::text is null or o.app_id = $2) and ($3::timestamptz is null or o.created_at >= $3)
                     and ($4::timestamptz is null or o.created_at < $4) and ($5::text is null or o.provider = $5)
                     and ($6::text is null or coalesce(o.last_error->>'class', 'none') = $6) and ($9::uuid is null or o.id = $9)
                     and o.id > $7
                     -- A key names one pending OTP at a time: skip the key if one is pending (the
                     -- unique index on pending keys answers that), and of several replayable OTPs
                     -- of one body-derived key take the newest only (a producer's own key has one
                     -- OTP, so only derived keys are looked up).
                     and not exists (select 1 from otps p where p.app_id = o.app_id and p.request_id = o.request_id
                                     and p.status = 'pending' and p.id <> o.id)
                     and (not o.request_id_derived
                          or not exists (select 1 from otps p where p.app_id = o.app_id and p.request_id = o.request_id
                                         and p.id <> o.id and p.status = o.status and p.created_at > o.created_at))
                   order by o.id limit $8
                   for update skip locked
               )
               update otps o
               set status = 'pending', delivery = 'queued', next_attempt_at = now(), last_error = null,
                   -- A workflow's current step starts its timer again.
                   step_due_at = case when jsonb_array_length(workflow) > workflow_step + 1
                       then now() + make_interval(secs => (workflow->workflow_step->>'timeoutSeconds')::float8) end,
                   claims_base = o.delivery_claims,
                   generation = case when o.expires_at <= now() then o.generation + 1 else o.generation end,
                   expires_at = case when o.expires_at <= now() then now() + make_interval(secs => o.ttl_seconds)
                                     else o.expires_at end,
                   status_changed_at = now(), updated_at = now()
               from picked where o.id = picked.id
               returning o.id, o.generation <> picked.generation as "new_code!""#,
            status,
            filter.app,
            filter.since,
            filter.until,
            filter.provider,
            filter.error_class,
            cursor,
            BATCH.min(limit - summary.replayed as i64),
            otp,
        )
        .fetch_all(&mut *tx)
        .await
        {
            Ok(batch) => batch,
            // A worker just inserted a pending OTP under one of these body-derived keys; the
            // next try sees it and leaves that key out.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() && conflicts < 5 => {
                conflicts += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        for row in &batch {
            outbox::record_for_otp(&mut tx, row.id, EventType::Replayed, None).await?;
        }
        tx.commit().await?;
        let Some(last) = batch.iter().map(|r| r.id).max() else {
            break;
        };
        cursor = last;
        summary.replayed += batch.len() as u64;
        summary.new_codes += batch.iter().filter(|r| r.new_code).count() as u64;
        audit.progress(pool, &summary).await?;
        progress(summary.replayed, matched);
    }
    audit.finish(pool, &summary).await?;
    Ok(summary)
}

/// Puts dead (or gone) callbacks back to pending with the same event ids, so receivers can
/// deduplicate; each starts the retry schedule afresh.
pub async fn callbacks(
    pool: &PgPool,
    filter: &CallbackFilter,
    actor: &str,
    progress: Progress<'_>,
) -> Result<Summary, ReplayError> {
    let state = one_of("status", filter.status.as_deref(), &["dead", "gone"])?;
    let limit = limit_of(filter.limit)?;
    let otp = otp_of(filter.otp.as_deref())?;
    let matched = sqlx::query_scalar!(
        r#"select count(*) as "n!" from (
               select 1 from outbox
               where state = $1 and ($2::text is null or app_id = $2) and ($3::timestamptz is null or created_at >= $3)
                 and ($4::timestamptz is null or created_at < $4) and ($5::text is null or event_type = $5)
                 and ($7::uuid is null or otp_id = $7) and ($8::text is null or destination = $8)
               limit $6) matching"#,
        state,
        filter.app,
        filter.since,
        filter.until,
        filter.event,
        limit,
        otp,
        filter.destination,
    )
    .fetch_one(pool)
    .await? as u64;
    let dry_run = filter.dry_run;
    let mut summary = Summary {
        dry_run,
        matched,
        ..Summary::default()
    };
    let audit = Audit::begin(pool, "replay-callbacks", actor, json!(filter), dry_run).await?;
    let mut cursor = Uuid::nil();
    while !dry_run && (summary.replayed as i64) < limit {
        let mut tx = pool.begin().await?;
        let batch = sqlx::query_scalar!(
            "with picked as (
                 select id from outbox
                 where state = $1 and ($2::text is null or app_id = $2) and ($3::timestamptz is null or created_at >= $3)
                   and ($4::timestamptz is null or created_at < $4) and ($5::text is null or event_type = $5)
                   and ($8::uuid is null or otp_id = $8) and ($9::text is null or destination = $9) and id > $6
                 order by id limit $7
                 for update skip locked
             )
             update outbox o
             set state = 'pending', next_attempt_at = now(), leased_until = null, retry_base = o.attempts, last_error = null
             from picked where o.id = picked.id
             returning o.id",
            state,
            filter.app,
            filter.since,
            filter.until,
            filter.event,
            cursor,
            BATCH.min(limit - summary.replayed as i64),
            otp,
            filter.destination,
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query!("select pg_notify($1, '')", crate::callbacks::dispatcher::CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(last) = batch.iter().max().copied() else { break };
        cursor = last;
        summary.replayed += batch.len() as u64;
        audit.progress(pool, &summary).await?;
        progress(summary.replayed, matched);
    }
    audit.finish(pool, &summary).await?;
    Ok(summary)
}

/// The record of one operator action, written before it starts (so an action cut short
/// still shows) and completed with its counts at the end.
pub struct Audit(i64);

impl Audit {
    pub async fn begin(pool: &PgPool, action: &str, actor: &str, filters: Value, dry_run: bool) -> sqlx::Result<Self> {
        sqlx::query_scalar!(
            "insert into operator_actions (action, actor, filters, dry_run, matched, changed, finished_at)
             values ($1, $2, $3, $4, 0, 0, null) returning id",
            action,
            actor,
            filters,
            dry_run,
        )
        .fetch_one(pool)
        .await
        .map(Audit)
    }

    /// The counts so far, for whoever watches a long action (the console's audit log).
    pub async fn progress(&self, pool: &PgPool, summary: &Summary) -> sqlx::Result<()> {
        self.record(pool, summary, false).await
    }

    pub async fn finish(self, pool: &PgPool, summary: &Summary) -> sqlx::Result<()> {
        self.record(pool, summary, true).await
    }

    async fn record(&self, pool: &PgPool, summary: &Summary, finished: bool) -> sqlx::Result<()> {
        sqlx::query!(
            "update operator_actions set matched = $2, changed = $3,
                    finished_at = case when $4 then now() end
             where id = $1",
            self.0,
            i32::try_from(summary.matched).unwrap_or(i32::MAX),
            i32::try_from(summary.replayed).unwrap_or(i32::MAX),
            finished,
        )
        .execute(pool)
        .await?;
        Ok(())
    }
}
