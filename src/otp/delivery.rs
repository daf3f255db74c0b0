//! Delivering one OTP: claim it with a lease in a short transaction, derive the PIN and
//! call the provider outside any transaction (with quick backon retries), then record the
//! outcome in one transaction that only lands if the claim is still ours. A delivery whose
//! process died is taken over when its lease lapses; a transient failure is rescheduled in
//! PostgreSQL, so retries survive restarts. When the database is away at the moment of
//! recording, the outcome is held and recorded once it is back (within the lease), so a
//! database restart does not make the provider send the message twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType, OtpRow};
use crate::domain::{Channel, OtpId};
use crate::message::pin::{self, Pin, PinInput, PinLength, PinType};
use crate::message::template::{Template, Values};
use crate::otp::fraud::{self, FraudConfig};
use crate::otp::workflow::{self, Why};
use crate::platform::batch::{Batch, BatchError, Batcher};
use crate::platform::config::{Config, DeliveryConfig, LimitsConfig};
use crate::platform::observability;
use crate::provider::{redact, Accepted, Message, PollPlan, Providers, SendError};

/// An OTP this process holds the delivery lease of, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub claim: i32,
    /// `claim` when the OTP was last resent or replayed: its rounds count from there.
    pub claims_base: i32,
    pub app_id: String,
    pub request_id: String,
    pub phone_number: String,
    pub channel: String,
    pub sender: Option<String>,
    pub locale: String,
    pub template: String,
    pub provider: String,
    pub pin_type: String,
    pub pin_length: i16,
    pub pin_key_id: String,
    /// Part of the PIN input (`pin::PinInput`); not secret.
    pub pin_salt: Vec<u8>,
    pub generation: i32,
    pub ttl_seconds: i32,
    pub expires_at: OffsetDateTime,
}

impl Claim {
    pub fn otp_id(&self) -> OtpId {
        OtpId::from_uuid(self.id)
    }
}

/// How a delivery round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// A transient failure; the next round is due at this time.
    Rescheduled(OffsetDateTime),
    Failed,
    /// The lease lapsed and another process took the delivery over; nothing was recorded.
    Superseded,
}

/// Why a round did not end in `sent`.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Provider(#[from] SendError),
    #[error("the OTP expired before it could be delivered")]
    Expired,
    #[error("{0}")]
    Setup(String),
}

impl Failure {
    fn class(&self) -> &'static str {
        match self {
            Failure::Provider(e) => e.class(),
            Failure::Expired => "expired",
            Failure::Setup(_) => "config",
        }
    }
}

/// One provider request, as recorded in `delivery_attempts`.
#[derive(Debug, Clone)]
struct Attempt {
    started_at: OffsetDateTime,
    latency_ms: i32,
    outcome: &'static str,
    http_status: Option<i32>,
    error: Option<String>,
    /// The provider's id of the message this request made, where it answered with one.
    message_id: Option<String>,
    /// The provider's own error code, where its error answer carried one.
    provider_code: Option<String>,
    /// When the message this request made is to be asked about (providers that must be polled).
    poll: Option<PollPlan>,
}

/// Delivers claimed OTPs. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    batch_pool: PgPool,
    /// Records the rounds that ended `sent`, many per transaction.
    sent: Batcher<SentRounds>,
    providers: Arc<Providers>,
    pin_keys: pin::PinKeys,
    config: DeliveryConfig,
    /// What a workflow's next step counts against.
    limits: LimitsConfig,
    /// Where a delivery that failed for good is counted (it can never be verified).
    fraud: FraudConfig,
    lease: Duration,
}

impl Deliverer {
    /// `batch_pool` serves the batch writers (see `db::batch_pool`).
    pub fn new(
        pool: PgPool,
        batch_pool: PgPool,
        providers: Arc<Providers>,
        pin_keys: pin::PinKeys,
        config: &Config,
    ) -> Self {
        let (sent, _) = Batcher::spawn(SentRounds {
            pool: batch_pool.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                pool,
                batch_pool,
                sent,
                providers,
                pin_keys,
                config: config.delivery.clone(),
                limits: config.limits.clone(),
                fraud: config.fraud.clone(),
                lease: config.worker.lease(),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The pool of batch writers (`db::batch_pool`).
    pub fn batch_pool(&self) -> &PgPool {
        &self.inner.batch_pool
    }

    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    pub fn shared_providers(&self) -> Arc<Providers> {
        self.inner.providers.clone()
    }

    /// What a workflow's next step counts against.
    pub fn limits(&self) -> &LimitsConfig {
        &self.inner.limits
    }

    pub fn pin_keys(&self) -> &pin::PinKeys {
        &self.inner.pin_keys
    }

    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Runs one delivery round for a claim and records how it ended.
    #[tracing::instrument(skip_all, fields(otp_id = %claim.otp_id(), app_id = %claim.app_id,
        request_id = claim.request_id.as_str(), claim = claim.claim))]
    pub async fn deliver(&self, claim: &Claim) -> Result<Outcome, BatchError> {
        let attempts = Mutex::new(Vec::new());
        let result = self.send(claim, &attempts).await;
        let attempts = attempts.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        let outcome = self.record_within_lease(claim, &result, &attempts).await?;
        let label = match outcome {
            Outcome::Sent => "sent",
            Outcome::Rescheduled(_) => "rescheduled",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
        };
        metrics::counter!(observability::DELIVERIES, "provider" => claim.provider.clone(),
            "channel" => claim.channel.clone(), "outcome" => label)
        .increment(1);
        Ok(outcome)
    }

    async fn send(&self, claim: &Claim, attempts: &Mutex<Vec<Attempt>>) -> Result<Accepted, Failure> {
        if OffsetDateTime::now_utc() >= claim.expires_at {
            return Err(Failure::Expired);
        }
        let pin = self.derive_pin(claim)?;
        let template = Template::parse(&claim.template).map_err(|e| Failure::Setup(format!("stored template: {e}")))?;
        let from = claim.sender.as_deref();
        let text = template.render(&Values {
            pin: &pin,
            ttl_minutes: claim.ttl_seconds as u32 / 60,
            from: from.unwrap_or(""),
        });
        let provider = self
            .inner
            .providers
            .get(&claim.provider)
            .ok_or_else(|| Failure::Setup(format!("provider `{}` is not configured", claim.provider)))?;
        let message = Message {
            otp_id: claim.otp_id(),
            to: &claim.phone_number,
            channel: Channel::parse(&claim.channel).map_err(|e| Failure::Setup(e.into()))?,
            from,
            text: &text,
            pin: &pin,
            locale: &claim.locale,
        };
        let config = &self.inner.config;
        let quick_limit = Duration::from_millis(config.quick_retry_max_delay_ms);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.quick_retry_min_delay_ms))
            .with_max_delay(quick_limit)
            .with_max_times(config.quick_retries)
            .with_jitter();
        let call = || async {
            let started_at = OffsetDateTime::now_utc();
            let clock = Instant::now();
            let result = provider.send(&message).await;
            let mut attempt = attempt_record(&result, started_at, clock.elapsed(), &pin);
            if attempt.message_id.is_some() {
                attempt.poll = provider.poll_plan();
            }
            metrics::histogram!(observability::PROVIDER_REQUESTS, "provider" => claim.provider.clone(),
                "outcome" => attempt.outcome)
            .record(clock.elapsed().as_secs_f64());
            attempts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(attempt);
            result
        };
        call.retry(backoff)
            // A Retry-After longer than a quick pause is honoured by the durable schedule instead.
            .when(|e: &SendError| e.is_transient() && e.retry_after().is_none_or(|wait| wait <= quick_limit))
            .adjust(|e: &SendError, pause| pause.map(|pause| e.retry_after().map_or(pause, |wait| wait.max(pause))))
            .notify(|e: &SendError, pause| {
                metrics::counter!(observability::PROVIDER_RETRIES, "provider" => claim.provider.clone()).increment(1);
                tracing::warn!(error = %e, retry_in = ?pause, "provider request failed; retrying")
            })
            .await
            .map_err(Failure::from)
    }

    fn derive_pin(&self, claim: &Claim) -> Result<Pin, Failure> {
        let key = self
            .inner
            .pin_keys
            .get(&claim.pin_key_id)
            .ok_or_else(|| Failure::Setup(format!("PIN key `{}` is not configured", claim.pin_key_id)))?;
        let pin_type = PinType::parse(&claim.pin_type).map_err(|e| Failure::Setup(e.into()))?;
        let length = PinLength::parse(claim.pin_length.into()).map_err(|e| Failure::Setup(e.into()))?;
        let input = PinInput {
            app_id: &claim.app_id,
            salt: &claim.pin_salt,
            otp: claim.otp_id(),
            generation: claim.generation as u32,
        };
        Ok(pin::derive(key, &input, pin_type, length))
    }

    /// Records the round, retrying a failed recording until the lease lapses. The provider
    /// has had its request by now: giving up here would leave the OTP `sending`, and whoever
    /// takes the lease over would send it again. The claim fence keeps a late retry harmless.
    async fn record_within_lease(
        &self,
        claim: &Claim,
        result: &Result<Accepted, Failure>,
        attempts: &[Attempt],
    ) -> Result<Outcome, BatchError> {
        let deadline = Instant::now() + self.inner.lease;
        let pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .without_max_times()
            .with_jitter();
        (|| self.record(claim, result, attempts))
            .retry(pauses)
            .when(|error: &BatchError| !error.is_permanent() && Instant::now() < deadline)
            .notify(|error: &BatchError, pause| {
                tracing::warn!(%error, retry_in = ?pause, "could not record the delivery round; retrying")
            })
            .await
    }

    async fn record(
        &self,
        claim: &Claim,
        result: &Result<Accepted, Failure>,
        attempts: &[Attempt],
    ) -> Result<Outcome, BatchError> {
        let outcome = match result {
            Ok(accepted) => {
                tracing::info!(message_id = ?accepted.message_id, "sent");
                let round = SentRound {
                    claim: claim.clone(),
                    message_id: accepted.message_id.clone(),
                    attempts: attempts.to_vec(),
                };
                match self.inner.sent.submit(round).await? {
                    true => Outcome::Sent,
                    false => Outcome::Superseded,
                }
            }
            Err(failure) => {
                let mut tx = self.inner.pool.begin().await?;
                insert_attempts(&mut tx, &[(claim, attempts)]).await?;
                let outcome = self.record_failure(&mut tx, claim, failure).await?;
                tx.commit().await?;
                outcome
            }
        };
        if outcome == Outcome::Superseded {
            tracing::warn!("the delivery lease lapsed before the result was recorded; another process owns it");
        }
        Ok(outcome)
    }

    async fn record_failure(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        failure: &Failure,
    ) -> Result<Outcome, sqlx::Error> {
        let error = json!({
            "class": failure.class(),
            "message": failure.to_string(),
            "httpStatus": match failure { Failure::Provider(e) => e.http_status(), _ => None },
            "providerCode": match failure { Failure::Provider(e) => e.provider_code(), _ => None },
        });
        if let Some(due) = self.next_round(claim, failure) {
            tracing::warn!(error = %failure, next_attempt_at = %due, "delivery round failed; rescheduled");
            return Ok(match reschedule(conn, claim, due, &error).await? {
                true => Outcome::Rescheduled(due),
                false => Outcome::Superseded,
            });
        }
        tracing::error!(error = %failure, "delivery failed");
        match mark_failed(conn, claim, &error).await? {
            Some(row) => {
                // A workflow goes on to its next step at once. Whether it may is settled
                // first, so the failure's event says how the OTP ends up standing.
                let next = match row.workflow_step {
                    Some(step) => workflow::next_step(conn, claim.id, step, &self.inner.limits).await?,
                    None => None,
                };
                let row = match (&next, row.status.as_str()) {
                    // No next step after all (a send limit, the expiry): an OTP never sent fails.
                    (None, "pending") => fail_unsent(conn, claim.id).await?.unwrap_or(row),
                    _ => row,
                };
                if row.status == "failed" {
                    // Never delivered, so never verifiable: not held against its destination.
                    let phone = crate::domain::PhoneNumber::parse(&row.phone_number).ok();
                    let country = phone.as_ref().and_then(|p| p.region());
                    fraud::count_outcome(
                        &self.inner.pool,
                        &self.inner.fraud,
                        "failed",
                        &row.phone_number,
                        country,
                    );
                }
                outbox::record(conn, EventType::DeliveryFailed, &row.into_snapshot(Some(error))).await?;
                if let Some(next) = next {
                    workflow::start(conn, next, Why::Failed).await?;
                }
                Ok(Outcome::Failed)
            }
            None => Ok(Outcome::Superseded),
        }
    }

    /// When the next round is due, or `None` when this failure is final: permanent, past
    /// the schedule, or due only after the OTP expires.
    fn next_round(&self, claim: &Claim, failure: &Failure) -> Option<OffsetDateTime> {
        let Failure::Provider(error) = failure else {
            return None;
        };
        if !error.is_transient() {
            return None;
        }
        let schedule = &self.inner.config.retry_schedule_seconds;
        let round = usize::try_from(claim.claim - claim.claims_base - 1).ok()?;
        let base = Duration::from_secs(*schedule.get(round)?);
        let jitter = base.mul_f64(rand::rng().random_range(0.0..0.2));
        let wait = error
            .retry_after()
            .map_or(base + jitter, |asked| asked.max(base + jitter));
        let due = OffsetDateTime::now_utc() + wait;
        (due < claim.expires_at).then_some(due)
    }

    /// Claims up to `limit` OTPs whose delivery is due: queued rounds whose time has come
    /// and deliveries whose lease lapsed.
    pub async fn claim_due(&self, limit: i64) -> Result<Vec<Claim>, sqlx::Error> {
        sqlx::query_as!(
            Claim,
            r#"with due as (
                   select id from otps
                   where delivery in ('queued', 'sending') and next_attempt_at <= now() and status = 'pending'
                   order by next_attempt_at
                   limit $1
                   for update skip locked
               )
               update otps o
               set delivery = 'sending', delivery_claims = o.delivery_claims + 1,
                   next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
               from due where o.id = due.id
               returning o.id, o.delivery_claims as claim, o.claims_base, o.app_id, o.request_id, o.phone_number, o.channel, o.sender,
                         o.locale, o.template, o.provider, o.pin_type, o.pin_length, o.pin_key_id,
                         o.pin_salt, o.generation, o.ttl_seconds, o.expires_at"#,
            limit,
            self.inner.lease.as_secs_f64(),
        )
        .fetch_all(&self.inner.pool)
        .await
    }
}

fn attempt_record(
    result: &Result<Accepted, SendError>,
    started_at: OffsetDateTime,
    latency: Duration,
    pin: &Pin,
) -> Attempt {
    let (outcome, http_status, error, message_id, provider_code) = match result {
        Ok(accepted) => ("accepted", None, None, accepted.message_id.clone(), None),
        Err(e) => (
            if e.is_transient() { "transient" } else { "permanent" },
            e.http_status().map(i32::from),
            Some(redact(&e.to_string(), pin)),
            None,
            e.provider_code().map(str::to_string),
        ),
    };
    Attempt {
        started_at,
        latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
        outcome,
        http_status,
        error,
        message_id,
        provider_code,
        poll: None,
    }
}

/// A round the provider accepted, waiting to be recorded.
struct SentRound {
    claim: Claim,
    message_id: Option<String>,
    attempts: Vec<Attempt>,
}

/// Records accepted rounds in one transaction: their attempts, each OTP's move to `sent`
/// under its claim fence, and an `otp.sent` event for each that moved. Answers whether each
/// round landed (`false`: the lease lapsed and another process owns the delivery).
struct SentRounds {
    pool: PgPool,
}

impl Batch for SentRounds {
    type Item = SentRound;
    type Output = bool;

    async fn run(&self, rounds: &[SentRound]) -> Result<Vec<bool>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let attempts: Vec<(&Claim, &[Attempt])> = rounds.iter().map(|r| (&r.claim, r.attempts.as_slice())).collect();
        insert_attempts(&mut tx, &attempts).await?;
        let rows = mark_sent(&mut tx, rounds).await?;
        let landed: HashSet<Uuid> = rows.iter().map(|row| row.id).collect();
        outbox::record_rows(&mut tx, EventType::Sent, rows, None).await?;
        tx.commit().await?;
        // Two rounds of one OTP can meet in a batch when a lease lapsed under a round that
        // was still running here; only the newer claim can have matched the fence.
        let mut newest: HashMap<Uuid, i32> = HashMap::new();
        for round in rounds {
            let claim = newest.entry(round.claim.id).or_insert(round.claim.claim);
            *claim = (*claim).max(round.claim.claim);
        }
        Ok(rounds
            .iter()
            .map(|r| landed.contains(&r.claim.id) && newest.get(&r.claim.id) == Some(&r.claim.claim))
            .collect())
    }
}

/// Writes the provider requests of one or more rounds, each under its claim's number.
async fn insert_attempts(conn: &mut PgConnection, rounds: &[(&Claim, &[Attempt])]) -> Result<(), sqlx::Error> {
    let rows: Vec<(&Claim, &Attempt)> = rounds
        .iter()
        .flat_map(|(claim, attempts)| attempts.iter().map(move |a| (*claim, a)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let otp_ids: Vec<Uuid> = rows.iter().map(|(c, _)| c.id).collect();
    let claims: Vec<i32> = rows.iter().map(|(c, _)| c.claim).collect();
    let providers: Vec<String> = rows.iter().map(|(c, _)| c.provider.clone()).collect();
    let started: Vec<OffsetDateTime> = rows.iter().map(|(_, a)| a.started_at).collect();
    let latency: Vec<i32> = rows.iter().map(|(_, a)| a.latency_ms).collect();
    let outcome: Vec<String> = rows.iter().map(|(_, a)| a.outcome.to_string()).collect();
    let status: Vec<Option<i32>> = rows.iter().map(|(_, a)| a.http_status).collect();
    let error: Vec<Option<String>> = rows.iter().map(|(_, a)| a.error.clone()).collect();
    let message_ids: Vec<Option<String>> = rows.iter().map(|(_, a)| a.message_id.clone()).collect();
    let codes: Vec<Option<String>> = rows.iter().map(|(_, a)| a.provider_code.clone()).collect();
    let poll_first: Vec<Option<f64>> = rows
        .iter()
        .map(|(_, a)| a.poll.map(|p| p.first_seconds as f64))
        .collect();
    let poll_for: Vec<Option<f64>> = rows
        .iter()
        .map(|(_, a)| a.poll.map(|p| p.deadline_seconds as f64))
        .collect();
    let channels: Vec<String> = rows.iter().map(|(c, _)| c.channel.clone()).collect();
    // Messages of providers that must be asked about their fate get their first poll.
    sqlx::query!(
        r#"with rows as (
               select * from unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[],
                                    $7::int[], $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[],
                                    $13::text[])
                   as t(otp_id, claim, provider, started_at, latency_ms, outcome, http_status, error,
                        message_id, provider_code, poll_first, poll_for, channel)
           ), inserted as (
               insert into delivery_attempts (otp_id, claim, provider, started_at, latency_ms, outcome, http_status,
                                              error, message_id, provider_code)
               select otp_id, claim, provider, started_at, latency_ms, outcome, http_status, error, message_id,
                      provider_code
               from rows
               returning id, provider, message_id
           )
           insert into receipt_polls (attempt_id, provider, message_id, next_at, deadline, channel)
           select i.id, i.provider, i.message_id, now() + make_interval(secs => r.poll_first),
                  now() + make_interval(secs => r.poll_for), r.channel
           from inserted i join rows r on r.provider = i.provider and r.message_id = i.message_id
           where r.poll_first is not null
           on conflict do nothing"#,
        &otp_ids,
        &claims,
        &providers,
        &started,
        &latency,
        &outcome,
        &status as &[Option<i32>],
        &error as &[Option<String>],
        &message_ids as &[Option<String>],
        &codes as &[Option<String>],
        &poll_first as &[Option<f64>],
        &poll_for as &[Option<f64>],
        &channels,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves each round's OTP to `sent` where its claim is still the current one.
async fn mark_sent(conn: &mut PgConnection, rounds: &[SentRound]) -> Result<Vec<OtpRow>, sqlx::Error> {
    let ids: Vec<Uuid> = rounds.iter().map(|r| r.claim.id).collect();
    let claims: Vec<i32> = rounds.iter().map(|r| r.claim.claim).collect();
    let message_ids: Vec<Option<String>> = rounds.iter().map(|r| r.message_id.clone()).collect();
    sqlx::query_as!(
        OtpRow,
        r#"with rounds as materialized (
               -- `from_delivery` is a column of a materialized row set, not a literal the
               -- planner can see through: it cannot then reach these rows through the
               -- index of every OTP being sent (see `db::batch_pool`).
               select t.*, 'sending' as from_delivery
               from unnest($1::uuid[], $2::int[], $3::text[]) as t(id, claim, message_id)
           )
           update otps o set delivery = 'sent', sent_at = now(), provider_message_id = t.message_id,
                  next_attempt_at = null, last_error = null, updated_at = now()
           from rounds t
           where o.id = t.id and o.delivery_claims = t.claim and o.delivery = t.from_delivery
           returning o.id, o.app_id, o.request_id, o.phone_number, o.channel, o.status, o.delivery, o.locale,
                     o.parts, o.attempts, o.max_attempts, o.expires_at, o.metadata, o.callback_url, o.workflow_step"#,
        &ids,
        &claims,
        &message_ids as &[Option<String>],
    )
    .fetch_all(conn)
    .await
}

async fn mark_failed(conn: &mut PgConnection, claim: &Claim, error: &Value) -> Result<Option<OtpRow>, sqlx::Error> {
    sqlx::query_as!(
        OtpRow,
        "update otps set delivery = 'failed',
                -- An OTP never sent fails, unless a workflow step follows.
                status = case when status = 'pending' and sent_at is null
                                   and coalesce(jsonb_array_length(workflow), 0) <= coalesce(workflow_step, 0) + 1
                              then 'failed' else status end,
                next_attempt_at = null, last_error = $3, updated_at = now()
         where id = $1 and delivery_claims = $2 and delivery = 'sending'
         returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                   attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
        claim.id,
        claim.claim,
        error,
    )
    .fetch_optional(conn)
    .await
}

/// Fails a pending OTP that was never sent (its workflow could not go on).
async fn fail_unsent(conn: &mut PgConnection, otp_id: Uuid) -> Result<Option<OtpRow>, sqlx::Error> {
    sqlx::query_as!(
        OtpRow,
        "update otps set status = 'failed', step_due_at = null, updated_at = now()
         where id = $1 and status = 'pending' and sent_at is null
         returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                   attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
        otp_id
    )
    .fetch_optional(conn)
    .await
}

async fn reschedule(
    conn: &mut PgConnection,
    claim: &Claim,
    due: OffsetDateTime,
    error: &Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update otps set delivery = 'queued', next_attempt_at = $3, last_error = $4, updated_at = now()
         where id = $1 and delivery_claims = $2 and delivery = 'sending'",
        claim.id,
        claim.claim,
        due,
        error,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
