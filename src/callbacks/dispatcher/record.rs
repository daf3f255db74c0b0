//! Recording attempts in batches: every finished callback hands its outcome to one writer
//! ([`crate::platform::batch`]), which lands whatever has gathered in a single statement, so a burst
//! of callbacks costs one commit instead of one each. Each outcome still lands only under
//! its own fence. A failed batch is tried again a few times; if it still fails, its events'
//! leases lapse and they are sent again (same `webhook-id`).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::State;
use crate::platform::batch::{Batch, Batcher};

/// One attempt's outcome, waiting to be written.
#[derive(Debug)]
pub struct Outcome {
    pub id: Uuid,
    /// The attempt number the claim gave; the fence.
    pub attempt: i32,
    pub state: State,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub started_at: OffsetDateTime,
    pub latency_ms: i32,
}

/// Why an outcome was not written: the batch failed, or the writer stopped.
#[derive(Debug, thiserror::Error)]
#[error("the attempt could not be recorded")]
pub struct NotRecorded;

/// The handle deliveries give their outcomes to.
#[derive(Debug, Clone)]
pub struct Recorder {
    batch: Batcher<Outcomes>,
}

impl Recorder {
    /// Starts the writer; it ends once every handle is dropped and the queue is drained.
    pub fn spawn(pool: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (batch, writer) = Batcher::spawn(Outcomes { pool });
        (Self { batch }, writer)
    }

    /// Writes `outcome`; `true` when it landed, `false` when the fence no longer matched
    /// (the lease lapsed and another dispatcher owns the event).
    pub async fn record(&self, outcome: Outcome) -> Result<bool, NotRecorded> {
        self.batch.submit(outcome).await.map_err(|_| NotRecorded)
    }
}

/// The batch behind [`Recorder`]: answers whether each outcome landed.
struct Outcomes {
    pool: PgPool,
}

impl Batch for Outcomes {
    type Item = Outcome;
    type Output = bool;

    async fn run(&self, outcomes: &[Outcome]) -> Result<Vec<bool>, sqlx::Error> {
        let landed = write(&self.pool, outcomes).await.inspect_err(|error| {
            tracing::error!(%error, count = outcomes.len(), "could not record callback attempts; their leases will lapse and they will be retried");
        })?;
        Ok(outcomes.iter().map(|o| landed.contains(&o.id)).collect())
    }
}

/// Writes a batch, trying again after a failure (a deadlock, a connection lost) before
/// giving up on it; then stops the URLs that answered 410.
async fn write(pool: &PgPool, batch: &[Outcome]) -> Result<Vec<Uuid>, sqlx::Error> {
    let landed = (|| write_once(pool, batch))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(3),
        )
        .notify(|error, pause| tracing::warn!(%error, retry_in = ?pause, "recording callback attempts failed"))
        .await?;
    let gone: Vec<Uuid> = batch
        .iter()
        .filter(|o| o.state == State::Gone && landed.contains(&o.id))
        .map(|o| o.id)
        .collect();
    // The outcomes have landed; failing to stop the URL must not undo that (each other
    // event to it will meet its own 410).
    if !gone.is_empty() {
        if let Err(error) = stop_gone_urls(pool, &gone).await {
            tracing::warn!(%error, "could not stop the other callbacks to a URL that answered 410");
        }
    }
    Ok(landed)
}

/// 410 Gone stops callbacks to that URL: the app's other pending events for it become
/// `gone` too. Separate from the batch, and skipping rows another dispatcher holds locked,
/// so two dispatchers meeting the same 410 cannot deadlock; an event in flight (leased)
/// is left to its own answer.
async fn stop_gone_urls(pool: &PgPool, gone: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox o
         set state = 'gone', last_error = 'an earlier callback to this URL was answered 410 Gone'
         where o.id in (
             select p.id from outbox p
             join outbox g on g.destination = p.destination and g.app_id = p.app_id and g.callback_url = p.callback_url
             where g.id = any($1) and p.state = 'pending' and (p.leased_until is null or p.leased_until <= now())
             for update of p skip locked)",
        gone
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One statement: every attempt row and each fenced state change. Returns the ids whose
/// state change landed.
async fn write_once(pool: &PgPool, batch: &[Outcome]) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|o| o.id).collect();
    let attempts: Vec<i32> = batch.iter().map(|o| o.attempt).collect();
    let states: Vec<String> = batch.iter().map(|o| o.state.as_str().to_string()).collect();
    let next: Vec<Option<OffsetDateTime>> = batch.iter().map(|o| o.next_attempt_at).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|o| o.status).collect();
    let errors: Vec<Option<String>> = batch.iter().map(|o| o.error.clone()).collect();
    let started: Vec<OffsetDateTime> = batch.iter().map(|o| o.started_at).collect();
    let latencies: Vec<i32> = batch.iter().map(|o| o.latency_ms).collect();
    sqlx::query_scalar!(
        r#"with input as materialized (
               select t.*, 'pending' as from_state
               from unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[],
                           $7::timestamptz[], $8::int[])
                   as t(id, attempt, state, next_attempt_at, status, error, started_at, latency_ms)
           ),
           landed as (
               update outbox o
               set state = i.state, next_attempt_at = coalesce(i.next_attempt_at, o.next_attempt_at),
                   leased_until = null, last_status = i.status, last_error = i.error,
                   delivered_at = case when i.state = 'delivered' then now() end
               from input i
               -- `from_state` is a column of a materialized row set, not a literal the planner
               -- can see through: it cannot then reach these rows through a partial index of
               -- every pending event (see `db::batch_pool`).
               where o.id = i.id and o.attempts = i.attempt and o.state = i.from_state
               returning o.id
           ),
           recorded as (
               insert into callback_attempts (event_id, attempt, started_at, http_status, latency_ms, error)
               select id, attempt, started_at, status, latency_ms, error from input
           )
           select id as "id!" from landed"#,
        &ids,
        &attempts,
        &states,
        &next as &[Option<OffsetDateTime>],
        &statuses as &[Option<i32>],
        &errors as &[Option<String>],
        &started,
        &latencies,
    )
    .fetch_all(pool)
    .await
}
