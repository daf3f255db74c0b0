//! The dispatcher role: turns outbox rows into signed callbacks.
//!
//! A batch is claimed in one short statement (`FOR UPDATE SKIP LOCKED`, the lease written
//! into `leased_until`, `attempts` bumped as the fence); each POST runs outside any
//! transaction; its outcome lands only while `attempts` still matches, so a dispatcher
//! whose lease lapsed cannot overwrite its successor. An OTP's events go out in commit
//! order: an event waits while an earlier one of the same OTP is pending, for at most
//! `order_wait_seconds` (a receiver refusing one event type must not hold the rest for
//! the whole retry schedule). No destination
//! (host:port) holds more than `per_destination` of the process's slots and no app more
//! than `per_app`, so neither a slow receiver nor one tenant's many slow receivers can
//! starve the others. `LISTEN otp_courier_outbox` wakes the loop; a poll
//! catches retries that come due and anything a lost notification missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::callbacks::smscx;
use crate::callbacks::webhook::{self, Answer, Message, Sender};
use crate::domain::{EventId, OtpId};
use crate::platform::config::CallbacksConfig;
use crate::tenancy::sealing::Sealer;

mod record;

pub use record::{NotRecorded, Outcome, Recorder};

/// How long the loop lets wake-ups gather before it claims again after a partial claim.
const CLAIM_GATHER: Duration = Duration::from_millis(2);

/// The channel the outbox trigger notifies.
pub const CHANNEL: &str = "otp_courier_outbox";

/// An event this process holds the lease of, with what sending it needs.
#[derive(Clone)]
pub struct Claimed {
    pub id: Uuid,
    /// This attempt's number, 1-based; also the fence.
    pub attempts: i32,
    /// `attempts` when the event was last replayed: the retry schedule counts from there.
    pub retry_base: i32,
    pub callback_url: String,
    pub destination: String,
    pub app_id: String,
    /// The event's body as PostgreSQL prints its `jsonb` (`compact_json` takes the blanks
    /// out): sent as it is, without a `Value` tree on the way.
    pub payload: String,
    /// The OTP and request the event is about, for log spans.
    pub otp_id: Option<Uuid>,
    pub request_id: Option<String>,
    /// The app's valid signing secrets as stored (sealed, `tenancy::sealing`), newest first.
    pub secrets: Vec<String>,
    /// For an app whose callbacks take sms.cx's shape: the OTP's facts that body needs
    /// (`smscx::OtpFacts`); `None` for our own shape.
    pub smscx: Option<Value>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &EventId::from_uuid(self.id))
            .field("attempts", &self.attempts)
            .field("destination", &self.destination)
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .finish_non_exhaustive()
    }
}

/// Where an event stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Delivered,
    /// Another attempt is scheduled.
    Retrying,
    Gone,
    Dead,
    /// The lease lapsed and another dispatcher took the event over; only the attempt was recorded.
    Superseded,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Delivered => "delivered",
            State::Retrying | State::Superseded => "pending",
            State::Gone => "gone",
            State::Dead => "dead",
        }
    }
}

/// In-flight callbacks per destination (or per app), shared by the claim loop and its tasks.
#[derive(Debug, Default, Clone)]
struct Busy(Arc<Mutex<HashMap<String, i32>>>);

impl Busy {
    fn start(&self, destination: &str) {
        *self.lock().entry(destination.to_string()).or_default() += 1;
    }

    fn finish(&self, destination: &str) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(destination) {
            *n -= 1;
            if *n <= 0 {
                map.remove(destination);
            }
        }
    }

    /// (destinations, in flight) for the claim query.
    fn snapshot(&self) -> (Vec<String>, Vec<i32>) {
        self.lock().iter().map(|(d, n)| (d.clone(), *n)).unzip()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What holds the requests in flight: destinations and apps.
#[derive(Debug, Default, Clone)]
struct InFlight {
    destinations: Busy,
    apps: Busy,
}

/// A place in a destination's and an app's share of the requests in flight. Given back on
/// drop, which wakes the claim loop.
struct Share {
    in_flight: InFlight,
    destination: String,
    app: String,
    freed: Arc<Notify>,
}

impl Share {
    fn take(in_flight: &InFlight, event: &Claimed, freed: &Arc<Notify>) -> Self {
        in_flight.destinations.start(&event.destination);
        in_flight.apps.start(&event.app_id);
        Self {
            in_flight: in_flight.clone(),
            destination: event.destination.clone(),
            app: event.app_id.clone(),
            freed: freed.clone(),
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.in_flight.destinations.finish(&self.destination);
        self.in_flight.apps.finish(&self.app);
        self.freed.notify_one();
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sender: Sender,
    config: CallbacksConfig,
    sealer: Sealer,
}

impl Dispatcher {
    /// `sealer` opens the apps' signing secrets, which are stored sealed.
    pub fn new(pool: PgPool, sender: Sender, config: CallbacksConfig, sealer: Sealer) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                sender,
                config,
                sealer,
            }),
        }
    }

    /// Dispatches until `shutdown`, then gives in-flight callbacks `grace` to finish (the
    /// leases of any still running lapse and another dispatcher retries them).
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let config = &self.inner.config;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let freed = Arc::new(Notify::new());
        let busy = InFlight::default();
        let running = TaskTracker::new();
        let (recorder, writer) = Recorder::spawn(self.inner.pool.clone());
        let mut listener = None;
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            // Wait for a quarter of the slots rather than claim one event per completion.
            if slots.available_permits() < (config.concurrency / 4).max(1) {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = freed.notified() => continue,
                    () = tokio::time::sleep(config.poll_interval()) => continue,
                }
            }
            let (asked, claimed) = self.claim_and_spawn(&slots, &freed, &busy, &running, &recorder).await;
            if claimed == asked {
                continue; // a full batch: more may be due
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake(&mut listener) => {}
                () = freed.notified(), if claimed > 0 || !running.is_empty() => {}
                () = tokio::time::sleep(config.poll_interval()) => {}
            }
            // Under load every commit and every finished callback wakes the loop; a short
            // pause lets one claim take what a burst of them made due, instead of one claim
            // (a scan of the pending destinations) per wake-up.
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(CLAIM_GATHER) => {}
            }
        }
        running.close();
        if tokio::time::timeout(grace, running.wait()).await.is_err() {
            tracing::warn!("callbacks still in flight at shutdown; their leases will lapse and they will be retried");
        }
        drop(recorder);
        // Tasks still running after the grace hold handles; their leases will lapse anyway.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    }

    async fn listen(&self) -> Option<PgListener> {
        let listen = async {
            let mut listener = PgListener::connect_with(&self.inner.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for outbox notifications; polling");
                None
            }
        }
    }

    /// Claims as many due events as there are free slots and sends each in its own task;
    /// returns (free slots, claimed).
    async fn claim_and_spawn(
        &self,
        slots: &Arc<Semaphore>,
        freed: &Arc<Notify>,
        busy: &InFlight,
        running: &TaskTracker,
        recorder: &Recorder,
    ) -> (usize, usize) {
        let free = slots.available_permits();
        let events = match self.claim(&self.inner.pool, free, busy).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "could not claim due callbacks");
                return (free, 0);
            }
        };
        let count = events.len();
        for event in events {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let share = Share::take(busy, &event, freed);
            let (dispatcher, recorder, freed) = (self.clone(), recorder.clone(), freed.clone());
            // Boxed for the reason the worker boxes its jobs: the task moves a box, not the
            // kilobytes of the request's future.
            running.spawn(Box::pin(async move {
                if let Err(error) = dispatcher.deliver(&event, &recorder, share).await {
                    tracing::warn!(webhook_id = %EventId::from_uuid(event.id), %error,
                        "could not record a callback attempt; its lease will lapse and it will be retried");
                }
                // The process slot covers the recording too, so a slow writer holds claims back.
                drop(permit);
                freed.notify_one();
            }));
        }
        (free, count)
    }

    /// Claims up to `limit` due events, at most `per_destination` in flight per destination
    /// and `per_app` per app counting those `busy` already holds, and never one whose OTP has
    /// an earlier event pending.
    ///
    /// `executor` must plan each execution for its values (`plan_cache_mode =
    /// force_custom_plan`, as on `db::batch_pool`, which `run` uses): the row estimates are
    /// then kept small whatever the backlog. `shared` is the earliest `2 × limit` candidates
    /// (twice, so a dispatcher that finds the first ones locked by another still fills its
    /// batch), and the planner locks them through the primary key. Estimated at a tenth of
    /// the pending backlog instead, they were joined by hashing the whole outbox, a scan per
    /// claim: from about 3,000 due events on, each claim cost 20 ms and more, 226 ms at
    /// 80,000, and the backlog fed itself. A generic plan made before the table was analyzed
    /// scans it for good (docs/BENCHMARKS.md).
    async fn claim<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        limit: usize,
        busy: &InFlight,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let config = &self.inner.config;
        let (destinations, in_flight) = busy.destinations.snapshot();
        let (apps, app_in_flight) = busy.apps.snapshot();
        let cap = i32::try_from(config.per_destination).unwrap_or(i32::MAX);
        let app_cap = i32::try_from(config.per_app).unwrap_or(i32::MAX);
        sqlx::query_as!(
            Claimed,
            r#"with recursive destinations as (
                   -- Each destination with pending events, by a walk of the index.
                   (select o.destination from outbox o where o.state = 'pending' order by o.destination limit 1)
                   union all
                   select (select o.destination from outbox o
                           where o.state = 'pending' and o.destination > d.destination
                           order by o.destination limit 1)
                   from destinations d
                   where d.destination is not null
               ),
               candidates as (
                   -- Per destination, its earliest due events up to its free share of the cap,
                   -- so one at its cap costs a probe, not a scan of its backlog.
                   select c.id, c.app_id, c.next_attempt_at, c.attempts, c.state
                   from destinations d
                   left join unnest($2::text[], $3::int[]) as b(destination, n) on b.destination = d.destination
                   cross join lateral (
                       select o.id, o.app_id, o.next_attempt_at, o.attempts, o.state
                       from outbox o
                       where o.state = 'pending' and o.destination = d.destination and o.next_attempt_at <= now()
                         and (o.leased_until is null or o.leased_until <= now())
                         -- In order: wait while an earlier event of the OTP is pending, up to a point.
                         and (o.created_at <= now() - make_interval(secs => $6)
                              or not exists (
                                  select 1 from outbox earlier
                                  where earlier.otp_id = o.otp_id and earlier.state = 'pending'
                                    and earlier.seq < o.seq))
                       order by o.next_attempt_at
                       limit greatest($4 - coalesce(b.n, 0), 0)
                   ) c
                   where d.destination is not null
               ),
               shared as materialized (
                   -- Per app, its earliest candidates up to its free share of the app cap;
                   -- of those, the earliest 2 × `limit`, which bounds the planner's estimate.
                   select c.id, c.next_attempt_at, c.attempts, c.state
                   from (select c.*, row_number() over (partition by c.app_id order by c.next_attempt_at) as rank
                         from candidates c) c
                   left join unnest($7::text[], $8::int[]) as a(app_id, n) on a.app_id = c.app_id
                   where c.rank <= greatest($9 - coalesce(a.n, 0), 0)
                   order by c.next_attempt_at
                   limit 2 * $1::bigint
               ),
               picked as (
                   -- Locking re-reads a row another dispatcher changed since this statement's
                   -- snapshot and re-checks these conditions on it: a claim bumps `attempts`, a
                   -- recorded outcome changes `state` or schedules the next attempt, so an event
                   -- claimed or rescheduled meanwhile is passed over. They compare with the
                   -- candidate's columns rather than literals, so no plan can reach these few rows
                   -- through a partial index of the whole pending backlog.
                   select o.id from outbox o
                   join shared c on c.id = o.id and o.attempts = c.attempts and o.state = c.state
                                        and o.next_attempt_at = c.next_attempt_at
                   order by c.next_attempt_at
                   limit $1
                   for update of o skip locked
               )
               update outbox o
               -- No indexed column changes: the update stays on the row's page (HOT).
               set attempts = o.attempts + 1, leased_until = now() + make_interval(secs => $5)
               from picked
               where o.id = picked.id
               returning o.id, o.attempts, o.retry_base, o.callback_url as "callback_url!", o.destination,
                         o.app_id, o.payload::text as "payload!", o.otp_id,
                         o.payload #>> '{data,requestId}' as request_id,
                         array(select w.secret from webhook_secrets w
                               where w.app_id = o.app_id and (w.expires_at is null or w.expires_at > now())
                               order by w.id desc) as "secrets!",
                         case when (select a.callback_format from apps a where a.id = o.app_id) = 'smscx'
                              then coalesce((select jsonb_build_object('createdAt', p.created_at, 'ttl', p.ttl_seconds,
                                                                       'country', p.country,
                                                                       'requestIdDerived', p.request_id_derived)
                                             from otps p where p.id = o.otp_id), '{}'::jsonb)
                         end as smscx"#,
            i64::try_from(limit).unwrap_or(i64::MAX),
            &destinations,
            &in_flight,
            cap,
            config.lease().as_secs_f64(),
            config.order_wait_seconds as f64,
            &apps,
            &app_in_flight,
            app_cap,
        )
        .fetch_all(executor)
        .await
    }

    /// Sends one claimed event and records the attempt and the event's new state. The
    /// destination's `share` is given back as soon as the receiver has answered: the lease
    /// keeps the event from being claimed again while its outcome is written.
    #[tracing::instrument(skip_all, fields(webhook_id = %EventId::from_uuid(event.id), attempt = event.attempts,
        otp_id = event.otp_id.map(|id| tracing::field::display(OtpId::from_uuid(id))), app_id = event.app_id,
        request_id = event.request_id))]
    async fn deliver(&self, event: &Claimed, recorder: &Recorder, share: Share) -> Result<State, NotRecorded> {
        let id = EventId::from_uuid(event.id).to_string();
        let body = match &event.smscx {
            Some(facts) => {
                let facts = serde_json::from_value(facts.clone()).unwrap_or_default();
                let payload = serde_json::from_str(&event.payload).unwrap_or_default();
                serde_json::to_vec(&smscx::otp_update(&payload, &event.callback_url, &facts)).unwrap_or_default()
            }
            None => compact_json(&event.payload),
        };
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        // Opened only to sign. A secret that does not open (its key was removed from the
        // configuration) is left out; with none left the attempt fails and is retried on the
        // schedule, since an operator can restore the key.
        let mut secrets = Vec::with_capacity(event.secrets.len());
        let mut unopened = None;
        for stored in &event.secrets {
            match self.inner.sealer.open(&event.app_id, stored) {
                Ok(secret) => secrets.push(secret),
                Err(error) => {
                    tracing::warn!(%error, "a signing secret of the app cannot be opened; signing without it");
                    unopened = Some(error);
                }
            }
        }
        let answer = match (secrets.is_empty(), unopened) {
            (true, Some(error)) => Answer::Failed {
                status: None,
                retry_after: None,
                error: format!("cannot open the app's signing secrets: {error}"),
            },
            _ => {
                self.inner
                    .sender
                    .send(&Message {
                        url: &event.callback_url,
                        id: &id,
                        body: &body,
                        secrets: &secrets,
                    })
                    .await
            }
        };
        drop(share);
        let latency_ms = webhook::elapsed_ms(clock);
        let (state, next_attempt_at) = self.judge(event.attempts - event.retry_base, &answer);
        let outcome = match state {
            State::Delivered => "delivered",
            State::Retrying | State::Superseded => "retrying",
            State::Gone => "gone",
            State::Dead => "dead",
        };
        metrics::counter!(crate::platform::observability::CALLBACKS, "outcome" => outcome).increment(1);
        metrics::histogram!(crate::platform::observability::CALLBACK_REQUESTS, "outcome" => outcome)
            .record(clock.elapsed().as_secs_f64());
        let error = match &answer {
            Answer::Failed { error, .. } | Answer::Refused(error) => Some(error.clone()),
            Answer::Gone => Some("the receiver answered 410 Gone: no more callbacks to this URL".to_string()),
            Answer::Accepted(_) => None,
        };
        let outcome = Outcome {
            id: event.id,
            attempt: event.attempts,
            state,
            next_attempt_at,
            status: answer.status().map(i32::from),
            error,
            started_at,
            latency_ms,
        };
        let landed = recorder.record(outcome).await?;
        let state = if landed { state } else { State::Superseded };
        log(state, &answer);
        Ok(state)
    }

    /// The event's state after an attempt, and when the next attempt is due.
    fn judge(&self, attempt: i32, answer: &Answer) -> (State, Option<OffsetDateTime>) {
        let retry_after = match answer {
            Answer::Accepted(_) => return (State::Delivered, None),
            Answer::Gone => return (State::Gone, None),
            Answer::Refused(_) => return (State::Dead, None),
            Answer::Failed { retry_after, .. } => *retry_after,
        };
        let jitter = rand::rng().random_range(0.0..0.2);
        let schedule = &self.inner.config.retry_schedule_seconds;
        match webhook::next_delay(schedule, u32::try_from(attempt).unwrap_or(0), retry_after, jitter) {
            Some(delay) => (State::Retrying, Some(OffsetDateTime::now_utc() + delay)),
            None => (State::Dead, None),
        }
    }
}

/// `jsonb` as PostgreSQL prints it (`{"a": 1, "b": [1, 2]}`) without the blanks it puts
/// after each `:` and `,`: the JSON a serializer writes, at the cost of one copy. Only
/// blanks outside strings go; a string's escapes are copied as they are.
fn compact_json(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text.as_bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte.is_ascii_whitespace() {
            continue;
        }
        out.push(byte);
    }
    out
}

fn log(state: State, answer: &Answer) {
    match (state, answer) {
        (State::Dead, Answer::Refused(_)) => tracing::warn!(%answer, "callback refused; event is dead"),
        (State::Dead, _) => tracing::warn!(%answer, "callback retries exhausted; event is dead"),
        (State::Gone, _) => tracing::info!("receiver answered 410 Gone; callbacks to this URL stopped"),
        (State::Retrying, _) => tracing::info!(%answer, "callback failed; will retry"),
        (State::Superseded, _) => tracing::info!(%answer, "lease lapsed; another dispatcher owns this callback"),
        (State::Delivered, _) => tracing::debug!(%answer, "callback delivered"),
    }
}

/// Returns when a notification arrives; never, when there is no listener to hear one.
async fn wake(listener: &mut Option<PgListener>) {
    let Some(active) = listener else {
        return std::future::pending().await;
    };
    match active.try_recv().await {
        // `None`: the connection dropped; the next call reconnects. Look for work meanwhile.
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "outbox notifications lost; polling until they are back");
            *listener = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};
    use figment::Figment;
    use proptest::prelude::*;
    use sqlx::PgPool;

    use super::*;
    use crate::platform::config::{Config, DEFAULTS};

    /// A claim against a backlog of 5,000 due events among 25,000, to four destinations,
    /// takes the earliest ones and reads little more than its batch, whether or not the
    /// table has been analyzed since it grew.
    #[sqlx::test(migrator = "crate::platform::db::MIGRATOR")]
    async fn a_claim_against_a_large_backlog_reads_no_more_than_its_batch(pool: PgPool) {
        // No autovacuum in between: the first claim plans from a table never analyzed.
        sqlx::query("alter table outbox set (autovacuum_enabled = off)")
            .execute(&pool)
            .await
            .expect("autovacuum off");
        sqlx::query(
            "insert into outbox (id, otp_id, app_id, event_type, callback_url, payload, state, next_attempt_at)
             select gen_random_uuid(), gen_random_uuid(), 'shop', 'otp.sent',
                    'http://127.0.0.1:' || (9000 + n % 4) || '/cb', '{}',
                    case when n <= 20000 then 'delivered' else 'pending' end,
                    now() - interval '1 second' - n * interval '1 millisecond'
             from generate_series(1, 25000) n",
        )
        .execute(&pool)
        .await
        .expect("backlog");
        let config = Config::from_figment(Figment::from(Toml::string(DEFAULTS))).expect("defaults");
        let sender = Sender::new(&config.callbacks).expect("sender");
        let dispatcher = Dispatcher::new(pool.clone(), sender, config.callbacks.clone(), Sealer::default());
        let limit = 64;
        let expected = limit
            .min(config.callbacks.per_app)
            .min(4 * config.callbacks.per_destination);
        for analyzed in [false, true] {
            if analyzed {
                sqlx::query("analyze outbox").execute(&pool).await.expect("analyze");
            }
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("set local plan_cache_mode = force_custom_plan")
                .execute(&mut *tx)
                .await
                .expect("custom plans, as on the batch pool");
            // The backend's counts not yet reported, earlier transactions' included: the
            // claim's are the difference.
            let reads = "select seq_scan, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
                         from pg_stat_xact_user_tables where relname = 'outbox'";
            let (scans_before, read_before): (i64, i64) =
                sqlx::query_as(reads).fetch_one(&mut *tx).await.expect("reads");
            let claimed = dispatcher
                .claim(&mut *tx, limit, &InFlight::default())
                .await
                .expect("claim");
            let (scans, read): (i64, i64) = sqlx::query_as(reads).fetch_one(&mut *tx).await.expect("reads");
            let (scans, read) = (scans - scans_before, read - read_before);
            let mut earliest: Vec<Uuid> =
                sqlx::query_scalar("select id from outbox where state = 'pending' order by next_attempt_at limit $1")
                    .bind(i64::try_from(expected).expect("small"))
                    .fetch_all(&mut *tx)
                    .await
                    .expect("earliest");
            tx.rollback().await.expect("rollback");
            let mut ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
            ids.sort();
            earliest.sort();
            assert_eq!(ids, earliest, "analyzed: {analyzed}; the earliest due events");
            assert_eq!(scans, 0, "analyzed: {analyzed}; the claim scanned the outbox");
            assert!(
                read < 20 * i64::try_from(expected).expect("small"),
                "analyzed: {analyzed}; the claim read {read} rows of the outbox for {expected}"
            );
        }
    }

    fn json_values() -> impl Strategy<Value = Value> {
        // Strings with what a naive blank-stripper would break: blanks, quotes, backslashes,
        // escapes, separators and non-ASCII text.
        let text = "[ a\\\\\"\\n\\t:,{}\\[\\]é€😀\\u{0}]{0,12}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(text, inner, 0..6).prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever blanks a printer puts between tokens go, and nothing else does.
        #[test]
        fn compacting_printed_json_gives_what_a_serializer_writes(value in json_values()) {
            let pretty = serde_json::to_string_pretty(&value).expect("prints");
            let compact = serde_json::to_vec(&value).expect("serializes");
            prop_assert_eq!(String::from_utf8(compact_json(&pretty)), String::from_utf8(compact));
        }
    }

    /// The text PostgreSQL prints for a stored body compacts to the same JSON, with no
    /// blank left between tokens (the same length as a serializer's output).
    #[sqlx::test(migrator = "crate::platform::db::MIGRATOR")]
    async fn a_stored_body_is_sent_as_compact_json(pool: PgPool) {
        let body = serde_json::json!({
            "type": "otp.sent",
            "data": {"requestId": "a, \"b\": c\\", "text": "line\nbreak\ttab é 😀", "parts": [1, 2.5, null, true],
                     "metadata": {"k": {"nested": ["x", {}, []]}}},
        });
        let printed: String = sqlx::query_scalar("select $1::jsonb::text")
            .bind(&body)
            .fetch_one(&pool)
            .await
            .expect("prints");
        assert!(
            printed.contains(", "),
            "PostgreSQL's text has blanks to take out: {printed}"
        );
        let compact = compact_json(&printed);
        let parsed: Value = serde_json::from_slice(&compact).expect("still JSON");
        assert_eq!(parsed, body);
        assert_eq!(compact.len(), serde_json::to_vec(&body).expect("serializes").len());
    }
}
