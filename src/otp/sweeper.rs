//! The sweeper role: pending OTPs past their expiry become `expired` (with an `otp.expired`
//! event in the same transaction), and rows older than the retention period are pruned —
//! never an event whose callback is still pending, nor the OTP it belongs to.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::callbacks::outbox::{self, EventType};
use crate::platform::config::SweeperConfig;

/// OTPs expired per transaction, rows deleted per statement.
const BATCH: i64 = 1000;

#[derive(Clone)]
pub struct Sweeper {
    pool: PgPool,
    config: SweeperConfig,
}

/// Rows one pruning pass deleted, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub otps: u64,
    pub events: u64,
    pub callback_attempts: u64,
    pub delivery_receipts: u64,
    pub delivery_attempts: u64,
    pub verification_attempts: u64,
    pub rejections: u64,
    pub rate_limit_windows: u64,
}

impl Sweeper {
    pub fn new(pool: PgPool, config: SweeperConfig) -> Self {
        Self { pool, config }
    }

    /// Expires every `interval`, prunes every `prune_interval`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_prune: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if let Err(error) = self.expire_due().await {
                tracing::warn!(%error, "could not expire due OTPs");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= self.config.prune_interval()) {
                match self.prune().await {
                    Ok(pruned) => tracing::info!(?pruned, "pruned rows past retention"),
                    Err(error) => tracing::warn!(%error, "could not prune old rows"),
                }
                last_prune = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.interval()) => {}
            }
        }
    }

    /// Expires every pending OTP past `expires_at`; returns how many. A delivery in flight
    /// is left to finish (the next pass takes the OTP once it is recorded).
    pub async fn expire_due(&self) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let expired = sqlx::query_as!(
                outbox::OtpRow,
                "with due as (
                     select id from otps
                     where status = 'pending' and expires_at <= now() and delivery <> 'sending'
                     order by expires_at limit $1
                     for update skip locked
                 )
                 update otps o
                 set status = 'expired', status_changed_at = now(), updated_at = now(), step_due_at = null,
                     next_attempt_at = case when o.delivery = 'queued' then null else o.next_attempt_at end
                 from due where o.id = due.id
                 returning o.id, o.app_id, o.request_id, o.phone_number, o.channel, o.status, o.delivery, o.locale,
                           o.parts, o.attempts, o.max_attempts, o.expires_at, o.metadata, o.callback_url, o.workflow_step",
                BATCH
            )
            .fetch_all(&mut *tx)
            .await?;
            let count = expired.len();
            outbox::record_rows(&mut tx, EventType::Expired, expired, None).await?;
            tx.commit().await?;
            metrics::counter!(crate::platform::observability::EXPIRED).increment(count as u64);
            total += count as u64;
            if (count as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    /// Deletes what is older than `retention_days`, in batches, in the order of the `PRUNE` table.
    pub async fn prune(&self) -> Result<Pruned, sqlx::Error> {
        let days = i32::try_from(self.config.retention_days).unwrap_or(i32::MAX);
        let mut counts = [0u64; PRUNE.len()];
        for (count, (table, sql)) in counts.iter_mut().zip(PRUNE) {
            loop {
                let deleted = sqlx::query(sql)
                    .bind(days)
                    .bind(BATCH)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                *count += deleted;
                if deleted < BATCH as u64 {
                    break;
                }
            }
            tracing::debug!(table, deleted = *count, "pruned");
        }
        let [callback_attempts, events, _polls, delivery_receipts, delivery_attempts, verification_attempts, otps, rejections, rate_limit_windows, _fraud_counts, _fraud_blocks, _fraud_verdicts] =
            counts;
        Ok(Pruned {
            otps,
            events,
            callback_attempts,
            delivery_receipts,
            delivery_attempts,
            verification_attempts,
            rejections,
            rate_limit_windows,
        })
    }
}

/// The pruning statements, children first: attempts of settled events, settled events,
/// then the attempts of old settled OTPs and the OTPs themselves once no event of theirs
/// is left (so never one with a pending callback). Rows are locked (skipping those a replay
/// holds) and the state is checked again on the locked row, so a row a replay revives
/// meanwhile is kept. `$1` is the retention in days, `$2` the
/// batch size. Each runs until it deletes less than a batch.
const PRUNE: [(&str, &str); 12] = [
    (
        "callback_attempts",
        "delete from callback_attempts where id in (
             select a.id from callback_attempts a join outbox o on o.id = a.event_id
             where o.state <> 'pending' and o.created_at < now() - make_interval(days => $1) limit $2)",
    ),
    (
        "outbox",
        "delete from outbox where id in (
             select id from outbox
             where state <> 'pending' and created_at < now() - make_interval(days => $1)
               and not exists (select 1 from callback_attempts a where a.event_id = outbox.id)
             limit $2 for update skip locked)
           and state <> 'pending'",
    ),
    (
        "receipt_polls",
        "delete from receipt_polls where attempt_id in (
             select p.attempt_id from receipt_polls p
             join delivery_attempts a on a.id = p.attempt_id join otps o on o.id = a.otp_id
             where o.created_at < now() - make_interval(days => $1) and o.status <> 'pending'
               and not exists (select 1 from outbox e where e.otp_id = o.id)
             limit $2)",
    ),
    (
        // Receipts of the OTPs about to go, and receipts that never found their message.
        "delivery_receipts",
        "delete from delivery_receipts where id in (
             select r.id from delivery_receipts r left join otps o on o.id = r.otp_id
             where (o.id is null and r.otp_id is null and r.received_at < now() - make_interval(days => $1))
                or (o.created_at < now() - make_interval(days => $1) and o.status <> 'pending'
                    and not exists (select 1 from outbox e where e.otp_id = o.id))
             limit $2)",
    ),
    (
        "delivery_attempts",
        "delete from delivery_attempts where id in (
             select a.id from delivery_attempts a join otps o on o.id = a.otp_id
             where o.created_at < now() - make_interval(days => $1) and o.status <> 'pending'
               and not exists (select 1 from outbox e where e.otp_id = o.id)
               -- A receipt or poll that came meanwhile keeps it until the next pass.
               and not exists (select 1 from delivery_receipts r where r.attempt_id = a.id)
               and not exists (select 1 from receipt_polls p where p.attempt_id = a.id)
             limit $2)",
    ),
    (
        "verification_attempts",
        "delete from verification_attempts where id in (
             select a.id from verification_attempts a join otps o on o.id = a.otp_id
             where o.created_at < now() - make_interval(days => $1) and o.status <> 'pending'
               and not exists (select 1 from outbox e where e.otp_id = o.id)
             limit $2)",
    ),
    (
        "otps",
        "delete from otps where id in (
             select o.id from otps o
             where o.created_at < now() - make_interval(days => $1) and o.status <> 'pending'
               and not exists (select 1 from outbox e where e.otp_id = o.id)
               and not exists (select 1 from delivery_attempts a where a.otp_id = o.id)
               and not exists (select 1 from verification_attempts a where a.otp_id = o.id)
               and not exists (select 1 from delivery_receipts r where r.otp_id = o.id)
             limit $2 for update skip locked)
           and status <> 'pending'",
    ),
    (
        "otp_rejections",
        "delete from otp_rejections where id in (
             select id from otp_rejections where created_at < now() - make_interval(days => $1) limit $2)",
    ),
    (
        // A counter is only read during its window (a day at most): then it is dead weight.
        "rate_limit_windows",
        "delete from rate_limit_windows where ctid in (
             select ctid from rate_limit_windows
             where window_start < now() - interval '2 days' and $1::int is not null limit $2)",
    ),
    (
        // The fraud guard's windows are a day at most, too.
        "fraud_counts",
        "delete from fraud_counts where ctid in (
             select ctid from fraud_counts
             where bucket < now() - interval '2 days' and $1::int is not null limit $2)",
    ),
    (
        // Kept past their end for the retention period: a repeat within it is blocked twice
        // as long (up to `fraud.conversion.max_block_seconds`).
        "fraud_blocks",
        "delete from fraud_blocks where id in (
             select id from fraud_blocks where ends_at < now() - make_interval(days => $1) limit $2)",
    ),
    (
        "fraud_verdicts",
        "delete from fraud_verdicts where id in (
             select id from fraud_verdicts where at < now() - make_interval(days => $1) limit $2)",
    ),
];
