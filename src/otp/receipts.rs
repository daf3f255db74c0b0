//! What delivery receipts do to OTPs. Every receipt is stored; one that names a recorded
//! provider request moves that request's receipt state forward (never back, never out of a
//! final state), and, when the request made the OTP's current message, the OTP's
//! `delivery`: `delivered` with an `otp.delivered` event, `undelivered` with an
//! `otp.undelivered` event carrying the provider's code, in the same transaction. A receipt
//! that comes before its request is recorded (fast providers) waits unapplied until the
//! worker's scheduler finds the request. A missing receipt is not a failure.
//!
//! Providers that must be asked (Xoxzo) are polled from `receipt_polls`, claimed like
//! delivery rounds (`SKIP LOCKED`), on the provider's schedule until a final status or the
//! deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType, OtpRow};
use crate::otp::workflow::{self, Why};
use crate::platform::batch::{Batch, BatchError, Batcher};
use crate::platform::config::LimitsConfig;
use crate::platform::observability;
use crate::provider::receipt::{Receipt, ReceiptStatus};
use crate::provider::Providers;

/// Takes the receipts the receipt routes are given: each is stored and applied (with any
/// of its message's that wait) by a writer that runs whatever has gathered in one
/// transaction ([`crate::platform::batch`]). Receipts come as fast as messages go out; one
/// transaction each made every receipt wait for its own WAL flush. A message's receipts
/// always go to the same one of [`RECEIPT_WRITERS`] writers, so they stay in the order they
/// came; writers that meet on one OTP (receipts of its first message and of a resend's)
/// lock OTPs in id order, so they wait for each other rather than deadlock. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Taker {
    writers: Vec<Batcher<Takes>>,
}

/// Receipt writers per process. Each writer's batches run one after another; with a
/// receipt for every message at half the bench's maximum rate (docs/BENCHMARKS.md), four
/// writers took more than one.
pub const RECEIPT_WRITERS: usize = 4;

impl Taker {
    /// Starts the writers; needs a Tokio runtime.
    pub fn spawn(pool: PgPool, limits: LimitsConfig) -> Self {
        let writers = (0..RECEIPT_WRITERS)
            .map(|_| {
                Batcher::spawn(Takes {
                    pool: pool.clone(),
                    limits: limits.clone(),
                })
                .0
            })
            .collect();
        Self { writers }
    }

    fn writer(&self, provider: &str, message_id: &str) -> &Batcher<Takes> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (provider, message_id).hash(&mut hasher);
        &self.writers[(hasher.finish() % self.writers.len() as u64) as usize]
    }

    /// Stores and applies `receipts` of `provider`, in order; answers once they are committed.
    pub async fn take(&self, provider: &str, receipts: &[Receipt]) -> Result<(), BatchError> {
        let taken = receipts.iter().map(|receipt| {
            self.writer(provider, &receipt.message_id)
                .submit((provider.to_string(), receipt.clone()))
        });
        for result in futures_util::future::join_all(taken).await {
            result?;
        }
        Ok(())
    }
}

/// The batch behind [`Taker`].
struct Takes {
    pool: PgPool,
    limits: LimitsConfig,
}

impl Takes {
    /// Stores the receipts and applies their messages in one transaction.
    async fn write(&self, receipts: &[&(String, Receipt)], messages: &[(&str, &str)]) -> sqlx::Result<Latencies> {
        let mut tx = self.pool.begin().await?;
        for (provider, receipt) in receipts {
            store(&mut tx, provider, receipt).await?;
        }
        let latencies = apply_messages(&mut tx, messages, &self.limits).await?;
        tx.commit().await?;
        Ok(latencies)
    }
}

impl Batch for Takes {
    type Item = (String, Receipt);
    type Output = ();

    async fn run(&self, receipts: &[(String, Receipt)]) -> Result<Vec<()>, sqlx::Error> {
        // By message, so each message is applied once; a stable sort keeps each message's
        // receipts in the order they came.
        let mut order: Vec<&(String, Receipt)> = receipts.iter().collect();
        order.sort_by(|a, b| (&a.0, &a.1.message_id).cmp(&(&b.0, &b.1.message_id)));
        let mut messages: Vec<(&str, &str)> = order
            .iter()
            .map(|(provider, receipt)| (provider.as_str(), receipt.message_id.as_str()))
            .collect();
        messages.dedup();
        // A batch locks its OTPs in id order, but other transactions that hold several OTPs
        // (a batch of sends being recorded) may not: a deadlock is tried again, twice.
        let mut tries = 0;
        let latencies = loop {
            tries += 1;
            match self.write(&order, &messages).await {
                Err(error) if tries < 3 && crate::platform::db::is_lock_conflict(&error) => {
                    tracing::warn!(%error, "receipts met another transaction's locks; trying the batch again");
                }
                other => break other?,
            }
        };
        latencies.record();
        for (provider, receipt) in receipts {
            metrics::counter!(observability::RECEIPTS, "provider" => provider.clone(),
                "status" => receipt.status.as_str())
            .increment(1);
        }
        Ok(vec![(); receipts.len()])
    }
}

async fn store(conn: &mut PgConnection, provider: &str, receipt: &Receipt) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "insert into delivery_receipts (provider, message_id, status, provider_status, provider_code, raw)
         values ($1, $2, $3, $4, $5, $6) returning id",
        provider,
        receipt.message_id,
        receipt.status.as_str(),
        receipt.provider_status,
        receipt.code,
        receipt.raw,
    )
    .fetch_one(conn)
    .await
}

/// A message's newest provider request, with its OTP as it stands (the row locked).
struct Found {
    attempt_id: i64,
    otp_id: Uuid,
    provider: String,
    message_id: String,
    receipt_status: Option<String>,
    started_at: OffsetDateTime,
    delivery: String,
    otp_provider: String,
    provider_message_id: Option<String>,
}

/// Applies the stored receipts of these messages (provider, message id) that are not
/// applied yet, each message's in the order they came, where the provider request that
/// made the message is recorded; the others wait. A few statements for the whole set:
/// the requests and their OTPs (locked, in id order, so writers meet in one order), the
/// receipts claimed, then the requests' and OTPs' new states and the events.
///
/// Answers the latencies (provider, seconds from request to first `delivered`) for the
/// caller to record once its transaction commits.
async fn apply_messages(
    conn: &mut PgConnection,
    messages: &[(&str, &str)],
    limits: &LimitsConfig,
) -> sqlx::Result<Latencies> {
    let mut latencies = Latencies::default();
    if messages.is_empty() {
        return Ok(latencies);
    }
    let (providers, message_ids): (Vec<String>, Vec<String>) =
        messages.iter().map(|(p, m)| (p.to_string(), m.to_string())).unzip();
    // Receipts of one OTP apply one at a time: the OTP row is their lock.
    let found = sqlx::query_as!(
        Found,
        r#"with latest as (
               select distinct on (a.provider, a.message_id)
                      a.id, a.otp_id, a.provider, a.message_id, a.receipt_status, a.started_at
               from delivery_attempts a
               join unnest($1::text[], $2::text[]) as m(provider, message_id)
                 on a.provider = m.provider and a.message_id = m.message_id
               order by a.provider, a.message_id, a.id desc
           )
           select l.id as attempt_id, l.otp_id, l.provider, l.message_id as "message_id!", l.receipt_status,
                  l.started_at, o.delivery, o.provider as otp_provider, o.provider_message_id
           from latest l join otps o on o.id = l.otp_id
           order by o.id
           for no key update of o"#,
        &providers,
        &message_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    if found.is_empty() {
        return Ok(latencies);
    }
    let receipts = sqlx::query!(
        "update delivery_receipts r set attempt_id = f.attempt_id, otp_id = f.otp_id, applied_at = now()
         from unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[]) as f(provider, message_id, attempt_id, otp_id)
         where r.provider = f.provider and r.message_id = f.message_id and r.applied_at is null
         returning r.id, r.provider, r.message_id, r.status, r.provider_status, r.provider_code, r.received_at",
        &found.iter().map(|f| f.provider.clone()).collect::<Vec<_>>(),
        &found.iter().map(|f| f.message_id.clone()).collect::<Vec<_>>(),
        &found.iter().map(|f| f.attempt_id).collect::<Vec<_>>(),
        &found.iter().map(|f| f.otp_id).collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_message: HashMap<(&str, &str), Vec<_>> = HashMap::new();
    for receipt in &receipts {
        by_message
            .entry((receipt.provider.as_str(), receipt.message_id.as_str()))
            .or_default()
            .push(receipt);
    }
    // What the receipts come to: each request's furthest state, the OTPs delivered, and
    // the OTPs undelivered (each with its error; a workflow may go on from there).
    let mut attempts: Vec<(i64, &'static str, Option<String>, OffsetDateTime)> = Vec::new();
    let mut delivered: Vec<Uuid> = Vec::new();
    let mut undelivered: Vec<(Uuid, Value)> = Vec::new();
    for message in &found {
        let Some(mut list) = by_message.remove(&(message.provider.as_str(), message.message_id.as_str())) else {
            continue;
        };
        list.sort_by_key(|r| r.id);
        let mut standing = message.receipt_status.as_deref().and_then(ReceiptStatus::parse);
        let mut furthest = None;
        let mut delivery = message.delivery.as_str();
        // Only the OTP's current message speaks for its delivery: a late receipt of a
        // message a resend replaced does not.
        let current_message = message.otp_provider == message.provider
            && message.provider_message_id.as_deref() == Some(message.message_id.as_str());
        for receipt in list {
            let status = ReceiptStatus::parse(&receipt.status).unwrap_or(ReceiptStatus::Queued);
            if !status.advances(standing) {
                continue;
            }
            furthest = Some((status.as_str(), receipt.provider_code.clone(), receipt.received_at));
            let first_delivered = matches!(status, ReceiptStatus::Delivered | ReceiptStatus::Read)
                && !matches!(standing, Some(ReceiptStatus::Delivered | ReceiptStatus::Read));
            if first_delivered {
                let latency = (receipt.received_at - message.started_at).as_seconds_f64().max(0.0);
                latencies.0.push((message.provider.clone(), latency));
            }
            standing = Some(status);
            if !current_message || delivery != "sent" {
                continue;
            }
            match status {
                ReceiptStatus::Delivered | ReceiptStatus::Read => {
                    delivered.push(message.otp_id);
                    delivery = "delivered";
                }
                ReceiptStatus::Undelivered | ReceiptStatus::Failed => {
                    undelivered.push((
                        message.otp_id,
                        json!({
                            "class": "undelivered",
                            "message": format!("the provider reported the message {}", receipt.provider_status),
                            "providerStatus": receipt.provider_status,
                            "providerCode": receipt.provider_code,
                        }),
                    ));
                    delivery = "undelivered";
                }
                ReceiptStatus::Queued | ReceiptStatus::Sent => {}
            }
        }
        if let Some((status, code, at)) = furthest {
            attempts.push((message.attempt_id, status, code, at));
        }
    }
    if !attempts.is_empty() {
        sqlx::query!(
            "update delivery_attempts a set receipt_status = s.status, receipt_code = s.code, receipt_at = s.at
             from unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[]) as s(id, status, code, at)
             where a.id = s.id",
            &attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
            &attempts.iter().map(|a| a.1.to_string()).collect::<Vec<_>>(),
            &attempts.iter().map(|a| a.2.clone()).collect::<Vec<_>>() as &[Option<String>],
            &attempts.iter().map(|a| a.3).collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    if !delivered.is_empty() {
        let rows = sqlx::query_as!(
            OtpRow,
            "update otps set delivery = 'delivered', updated_at = now()
             where id = any($1)
             returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                       attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
            &delivered,
        )
        .fetch_all(&mut *conn)
        .await?;
        outbox::record_rows(conn, EventType::Delivered, rows, None).await?;
    }
    // Rare, and each carries its own error and may start a workflow's next step.
    for (otp_id, error) in undelivered {
        let row = move_delivery(conn, otp_id, "undelivered", Some(&error)).await?;
        let step = row.workflow_step;
        outbox::record_rows(conn, EventType::Undelivered, vec![row], Some(error)).await?;
        // An undelivered step of a workflow starts the next one at once.
        if let Some(step) = step {
            workflow::advance(conn, otp_id, step, Why::Undelivered, limits).await?;
        }
    }
    Ok(latencies)
}

/// Times from a provider request to its first `delivered` receipt, recorded once the
/// transaction that applied them has committed.
#[derive(Debug, Default)]
#[must_use]
struct Latencies(Vec<(String, f64)>);

impl Latencies {
    fn record(self) {
        for (provider, seconds) in self.0 {
            metrics::histogram!(observability::RECEIPT_LATENCY, "provider" => provider).record(seconds);
        }
    }
}

async fn move_delivery(
    conn: &mut PgConnection,
    otp_id: Uuid,
    delivery: &str,
    error: Option<&Value>,
) -> sqlx::Result<OtpRow> {
    sqlx::query_as!(
        OtpRow,
        "update otps set delivery = $2, last_error = coalesce($3, last_error), updated_at = now()
         where id = $1
         returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                   attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
        otp_id,
        delivery,
        error
    )
    .fetch_one(conn)
    .await
}

/// Applies receipts that came before their provider request was recorded and whose
/// request is recorded now. Receipts that found nothing within an hour are left alone.
pub async fn apply_waiting(pool: &PgPool, limit: i64, limits: &LimitsConfig) -> sqlx::Result<usize> {
    let waiting = sqlx::query!(
        r#"select distinct r.provider as "provider!", r.message_id as "message_id!" from delivery_receipts r
           where r.applied_at is null and r.received_at > now() - interval '1 hour'
             and exists (select 1 from delivery_attempts a where a.provider = r.provider and a.message_id = r.message_id)
           limit $1"#,
        limit
    )
    .fetch_all(pool)
    .await?;
    for message in &waiting {
        let mut tx = pool.begin().await?;
        let latencies = apply_messages(&mut tx, &[(&message.provider, &message.message_id)], limits).await?;
        tx.commit().await?;
        latencies.record();
    }
    Ok(waiting.len())
}

/// A message whose status is to be asked for.
#[derive(Debug)]
struct Poll {
    attempt_id: i64,
    provider: String,
    message_id: String,
    channel: String,
    polls: i32,
    deadline: OffsetDateTime,
}

/// Asks the providers for the status of up to `limit` messages whose poll is due, and
/// applies what they say. A poll's claim lasts `lease`, so a crashed poller's polls come
/// back. Answers how many were claimed.
pub async fn poll_due(
    pool: &PgPool,
    providers: &Arc<Providers>,
    limit: i64,
    lease: Duration,
    limits: &LimitsConfig,
) -> sqlx::Result<usize> {
    let due = sqlx::query_as!(
        Poll,
        "with due as (
             select attempt_id from receipt_polls where next_at <= now()
             order by next_at limit $1 for update skip locked
         )
         update receipt_polls p set next_at = now() + make_interval(secs => $2), polls = p.polls + 1
         from due where p.attempt_id = due.attempt_id
         returning p.attempt_id, p.provider, p.message_id, p.channel, p.polls, p.deadline",
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    let claimed = due.len();
    let polls = due.into_iter().map(|poll| {
        let providers = providers.clone();
        async move {
            if let Err(error) = poll_one(pool, &providers, &poll, limits).await {
                tracing::warn!(%error, provider = %poll.provider, "could not record a receipt poll; it will be asked again");
            }
        }
    });
    futures_util::future::join_all(polls).await;
    Ok(claimed)
}

async fn poll_one(pool: &PgPool, providers: &Providers, poll: &Poll, limits: &LimitsConfig) -> sqlx::Result<()> {
    let Some(provider) = providers.get(&poll.provider) else {
        sqlx::query!("delete from receipt_polls where attempt_id = $1", poll.attempt_id)
            .execute(pool)
            .await?;
        return Ok(());
    };
    let channel = crate::domain::Channel::parse(&poll.channel).unwrap_or_default();
    let answer = provider.poll(&poll.message_id, channel).await;
    let mut tx = pool.begin().await?;
    let mut done = false;
    let mut latencies = Latencies::default();
    match answer {
        Ok(Some(receipt)) => {
            // Nothing comes after delivered from a provider that is polled.
            done = receipt.status.is_final() || receipt.status == ReceiptStatus::Delivered;
            store(&mut tx, &poll.provider, &receipt).await?;
            latencies = apply_messages(&mut tx, &[(&poll.provider, &poll.message_id)], limits).await?;
            metrics::counter!(observability::RECEIPTS, "provider" => poll.provider.clone(),
                "status" => receipt.status.as_str())
            .increment(1);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, provider = %poll.provider, "receipt poll failed; asking again later"),
    }
    let next = OffsetDateTime::now_utc() + Duration::from_secs(provider.poll_delay(poll.polls as usize));
    if done || next > poll.deadline {
        if !done {
            tracing::info!(provider = %poll.provider, message_id = %poll.message_id,
                "no final status before the poll deadline; the delivery stays as it was");
        }
        sqlx::query!("delete from receipt_polls where attempt_id = $1", poll.attempt_id)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query!(
            "update receipt_polls set next_at = $2 where attempt_id = $1",
            poll.attempt_id,
            next
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    latencies.record();
    Ok(())
}

/// Makes the polls of these messages due now (a provider's notice that they changed).
pub async fn poll_now(pool: &PgPool, provider: &str, message_ids: &[String]) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "update receipt_polls set next_at = now() where provider = $1 and message_id = any($2)",
        provider,
        message_ids
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Runs in the worker: applies waiting receipts and polls providers, every `interval`.
pub async fn run(
    pool: PgPool,
    providers: Arc<Providers>,
    interval: Duration,
    lease: Duration,
    limits: LimitsConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(error) = apply_waiting(&pool, 500, &limits).await {
            tracing::warn!(%error, "could not apply waiting receipts");
        }
        if let Err(error) = poll_due(&pool, &providers, 32, lease, &limits).await {
            tracing::warn!(%error, "could not claim receipt polls");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
