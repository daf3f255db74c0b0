//! From a valid job to an OTP row: the app's checks and defaults, the route, the template
//! and locale, and the insert that deduplicates on the request id. Shared by the worker
//! and (for validation) the HTTP API.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Channel, JobError, OtpId, SendJob, TemplateSet, Ttl, Workflow};
use crate::message::locale::{best_match, language_of_region, Locale};
use crate::message::segments;
use crate::message::template::Template;
use crate::otp::delivery::Claim;
use crate::otp::fraud::{self, FraudConfig, Mode, Rule};
use crate::otp::ratelimit::{self, SendKey};
use crate::platform::batch::{Batch, BatchError, Batcher};
use crate::platform::config::{Config, LimitsConfig};
use crate::provider::Providers;
use crate::tenancy::apps::{self, App, AppError};

/// Why a job is refused. `reason()` is the stable code on the dead letter and in
/// `otp_rejections`.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("unknown app `{0}`")]
    UnknownApp(String),
    #[error("app `{0}` accepts jobs only from its bound broker user")]
    BrokerUser(String),
    #[error("app does not send to country {0}")]
    CountryNotAllowed(String),
    #[error("no provider is routed for channel {0}")]
    NotRouted(Channel),
    #[error("no template: send `template` or configure one for the app")]
    NoTemplate,
    #[error("the database cannot store this job: {0}")]
    Unstorable(String),
    #[error("message headers are {size} bytes; the limit is {limit} (amqp.max_header_bytes)")]
    HeadersTooLarge { size: usize, limit: usize },
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Job(e) => e.reason(),
            Rejection::UnknownApp(_) => "unknown_app",
            Rejection::BrokerUser(_) => "broker_user_mismatch",
            Rejection::CountryNotAllowed(_) => "country_not_allowed",
            Rejection::NotRouted(_) => "channel_not_routed",
            Rejection::NoTemplate => "no_template",
            Rejection::Unstorable(_) => "unstorable",
            Rejection::HeadersTooLarge { .. } => "headers_too_large",
        }
    }
}

/// How the job reached us, for the broker-user binding.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// AMQP, with the broker-validated `user-id` property if the producer set it.
    Broker { user_id: Option<&'a str> },
    /// Published by our HTTP API after it authenticated the app.
    Api,
}

impl<'a> Source<'a> {
    /// Where a broker message comes from. RabbitMQ validates `user-id` against the publishing
    /// connection's user, so a message carrying our own broker user (`own`) was published by
    /// our API, which authenticated the app.
    pub fn of_message(user_id: Option<&'a str>, own: Option<&str>) -> Self {
        match (user_id, own) {
            (Some(user), Some(own)) if user == own => Source::Api,
            _ => Source::Broker { user_id },
        }
    }

    /// Whether this source may act for `app`: anyone may for an app bound to no broker
    /// user; for a bound one, that user or our API.
    pub fn may_act_for(&self, app: &App) -> bool {
        match (&app.broker_user, self) {
            (Some(bound), Source::Broker { user_id }) => *user_id == Some(bound.as_str()),
            _ => true,
        }
    }
}

/// An OTP ready to insert: every default applied, every choice made.
#[derive(Debug, Clone)]
pub struct NewOtp {
    pub id: OtpId,
    pub job: SendJob,
    pub sender: Option<String>,
    pub locale: Locale,
    pub template: Template,
    pub parts: u32,
    pub provider: String,
    pub ttl: Ttl,
    pub callback_url: Option<String>,
    /// The channel workflow with each step's provider chosen: `[{"channel", "timeoutSeconds", "provider"}]`.
    pub workflow: Option<Value>,
    /// The app's own modes of fraud-guard rules.
    pub fraud_modes: BTreeMap<Rule, Mode>,
}

/// Loads the job's app; an unknown app is a rejection.
pub async fn load_app(pool: &PgPool, job: &SendJob) -> Result<Result<App, Rejection>, AppError> {
    Ok(apps::load(pool, &job.app_id)
        .await?
        .ok_or_else(|| Rejection::UnknownApp(job.app_id.to_string())))
}

/// Applies the app's rules and defaults to a job.
pub fn resolve(
    job: SendJob,
    app: &App,
    source: Source<'_>,
    config: &Config,
    providers: &Providers,
) -> Result<NewOtp, Rejection> {
    if !source.may_act_for(app) {
        return Err(Rejection::BrokerUser(app.id.to_string()));
    }
    let min_length = config.pin.min_length;
    if job.pin_length.get() < min_length {
        return Err(Rejection::Job(JobError::Invalid {
            field: "pinLength".into(),
            reason: format!("must be at least {min_length} (pin.min_length)"),
        }));
    }
    if let Some(allowed) = &app.country_allowlist {
        let region = job.phone.region().unwrap_or("unknown");
        if !allowed.iter().any(|r| r == region) {
            return Err(Rejection::CountryNotAllowed(region.to_string()));
        }
    }
    let route = |channel: Channel| {
        app.routing
            .get(&channel)
            .or_else(|| config.routing.get(&channel))
            .filter(|name| providers.contains(name))
            .cloned()
            .ok_or(Rejection::NotRouted(channel))
    };
    // The job's workflow, else the app's unless the job chose its one channel.
    let workflow = job
        .workflow
        .clone()
        .or_else(|| app.workflow.clone().filter(|_| !job.channel_given));
    let channel = workflow.as_ref().map_or(job.channel, Workflow::first_channel);
    let provider = route(channel)?;
    let channels: Vec<Channel> = workflow
        .as_ref()
        .map_or(vec![channel], |w| w.steps().iter().map(|s| s.channel).collect());
    if channels.contains(&Channel::Voice) {
        check_voice(&job, app)?;
    }
    // What each channel says: a call its voice template, a message the message template.
    let message = if channels.iter().any(|c| *c != Channel::Voice) {
        Some(choose_template(&job, app).ok_or(Rejection::NoTemplate)?)
    } else {
        None
    };
    let voice = channels
        .contains(&Channel::Voice)
        .then(|| choose_voice_template(&job, app));
    let said_on = |channel: Channel| match channel {
        Channel::Voice => voice.clone().expect("chosen when a voice step exists"),
        _ => message.clone().expect("chosen when a message step exists"),
    };
    let (locale, template) = said_on(channel);
    let sender = job
        .from
        .as_ref()
        .or(app.default_from.as_ref())
        .map(|s| s.as_str().to_string());
    let ttl = job.ttl.or(app.default_ttl).unwrap_or(Ttl::DEFAULT);
    let workflow = match workflow {
        None => None,
        Some(workflow) => {
            if !workflow.fits(ttl.seconds()) {
                return Err(Rejection::Job(JobError::Invalid {
                    field: "workflow".into(),
                    reason: format!(
                        "the timeouts before its last step add up to {} s; every step must start within 90% of the OTP's TTL ({} s)",
                        workflow.total_timeout_seconds(),
                        ttl.seconds()
                    ),
                }));
            }
            let steps = workflow
                .steps()
                .iter()
                .map(|step| {
                    let (locale, template) = said_on(step.channel);
                    Ok(serde_json::json!({
                        "channel": step.channel,
                        "timeoutSeconds": step.timeout_seconds,
                        "provider": route(step.channel)?,
                        "template": template.source(),
                        "locale": locale.as_str(),
                    }))
                })
                .collect::<Result<Vec<Value>, Rejection>>()?;
            Some(Value::Array(steps))
        }
    };
    let shape = template.render_shape(
        job.pin_length.get(),
        ttl.seconds() / 60,
        sender.as_deref().unwrap_or(""),
    );
    let (_, parts) = segments::count(&shape);
    let callback_url = job
        .callback_url
        .as_ref()
        .map(|u| u.as_str().to_string())
        .or_else(|| app.callback_url.clone());
    Ok(NewOtp {
        id: otp_id(&job, app),
        sender,
        locale,
        template,
        parts,
        provider,
        ttl,
        callback_url,
        workflow,
        fraud_modes: app.fraud_modes.clone(),
        job: SendJob { channel, ..job },
    })
}

/// The id of a job's OTP, chosen here for every source: derived from the app and the
/// request id the producer gave, so every send of one request names one OTP, and no app can
/// take an id another app's request will get; random for a key derived from the body, which
/// names a new OTP each time the last one settles.
fn otp_id(job: &SendJob, app: &App) -> OtpId {
    if job.request_id.is_derived() {
        OtpId::new()
    } else {
        OtpId::for_request(app.id.as_str(), job.request_id.as_str())
    }
}

/// DESIGN, "Locale choice": `language` → its best `template_<lang>` → the phone country's
/// language → `template` → the app's templates, by the same rules.
fn choose_template(job: &SendJob, app: &App) -> Option<(Locale, Template)> {
    choose(job, app, &job.templates, &app.templates)
}

/// The built-in voice templates, parsed once.
static BUILT_IN_VOICE: std::sync::LazyLock<TemplateSet> = std::sync::LazyLock::new(|| TemplateSet {
    default: None,
    localized: crate::message::template::VOICE_DEFAULTS
        .iter()
        .filter_map(|(tag, text)| Some((Locale::parse(tag).ok()?, Template::parse(text).ok()?)))
        .collect(),
});

/// What a call says: the job's `template_voice…` or the app's voice templates, by the
/// locale rules of messages; else the built-in voice template of the language (English
/// when none is built in for it).
fn choose_voice_template(job: &SendJob, app: &App) -> (Locale, Template) {
    let built_in = &*BUILT_IN_VOICE;
    choose(job, app, &job.voice_templates, &app.voice_templates)
        .or_else(|| choose(job, app, &TemplateSet::default(), built_in))
        .or_else(|| best_match(&app.default_locale, &built_in.localized).map(|(l, t)| (l.clone(), t.clone())))
        .unwrap_or_else(|| {
            let english = Locale::parse("en").expect("en is a locale");
            let template = built_in
                .localized
                .get(&english)
                .cloned()
                .expect("an English voice template is built in");
            (english, template)
        })
}

/// The locale rules over a job's set of templates, then its app's.
fn choose(job: &SendJob, app: &App, from_job: &TemplateSet, from_app: &TemplateSet) -> Option<(Locale, Template)> {
    let country = job.phone.region().and_then(language_of_region);
    let wanted: Vec<&Locale> = job.language.iter().chain(country.iter()).collect();
    let localized = |set: &std::collections::BTreeMap<Locale, Template>| {
        wanted
            .iter()
            .find_map(|w| best_match(w, set))
            .map(|(l, t)| (l.clone(), t.clone()))
    };
    localized(&from_job.localized)
        .or_else(|| from_job.default.clone().map(|t| (app.default_locale.clone(), t)))
        .or_else(|| localized(&from_app.localized))
        .or_else(|| from_app.default.clone().map(|t| (app.default_locale.clone(), t)))
}

/// A call reads digits, and goes only where the app sends calls.
fn check_voice(job: &SendJob, app: &App) -> Result<(), Rejection> {
    if job.pin_type != crate::message::pin::PinType::Numbers {
        return Err(Rejection::Job(JobError::Invalid {
            field: "pinType".into(),
            reason: "a call (or a workflow with a voice step) reads digits: it needs pinType numbers".into(),
        }));
    }
    if let Some(allowed) = app.voice_country_allowlist.as_ref().or(app.country_allowlist.as_ref()) {
        let region = job.phone.region().unwrap_or("unknown");
        if !allowed.iter().any(|r| r == region) {
            return Err(Rejection::CountryNotAllowed(format!("{region} by voice")));
        }
    }
    Ok(())
}

/// What a job's send is counted against.
pub fn send_key(job: &SendJob) -> SendKey {
    SendKey {
        app: job.app_id.to_string(),
        phone: job.phone.as_str().to_string(),
        region: job.phone.region().map(str::to_string),
    }
}

/// Writes new OTPs, each already claimed for delivery by this process so the common path
/// needs no second round trip, and counts each inserted OTP's send against the send limits
/// in the same transaction: a send is counted once its OTP exists, and never twice (a
/// duplicate or a redelivery inserts nothing and counts nothing). One batch writer: one
/// transaction for all the jobs in flight. Cheap to clone.
#[derive(Clone)]
pub struct Inserter {
    batch: Batcher<Inserts>,
}

/// What every inserted OTP is claimed with (the PIN key it will be derived with, the
/// delivery lease) and counted against.
struct Terms {
    pin_key_id: String,
    lease: Duration,
    limits: LimitsConfig,
    fraud: FraudConfig,
}

/// A new OTP: claimed for delivery, or, when `over_limit` names the send limit it
/// exceeded or `fraud` the guard's finding, already `rejected` (reason `rate_limited` or
/// `fraud_suspected`, with its `otp.rejected` event) in the transaction that inserted it,
/// so nothing may send it.
#[derive(Debug)]
pub struct Inserted {
    pub claim: Claim,
    pub over_limit: Option<&'static str>,
    pub fraud: Option<fraud::Finding>,
}

impl Inserted {
    /// Whether the OTP may be sent.
    pub fn refused(&self) -> bool {
        self.over_limit.is_some() || self.fraud.is_some()
    }
}

impl Inserter {
    /// Starts the batch writer on `batch_pool` (see `db::batch_pool`).
    pub fn spawn(batch_pool: PgPool, pin_key_id: &str, lease: Duration, config: &Config) -> Self {
        let inserts = Inserts {
            pool: batch_pool,
            terms: Terms {
                pin_key_id: pin_key_id.to_string(),
                lease,
                limits: config.limits.clone(),
                fraud: config.fraud.clone(),
            },
        };
        let (batch, _) = Batcher::spawn(inserts);
        Self { batch }
    }

    /// Inserts the OTP and counts its send; `None` when the request id names an OTP that
    /// exists already.
    #[tracing::instrument(skip_all, fields(otp_id = %otp.id, app_id = %otp.job.app_id, request_id = otp.job.request_id.as_str()))]
    pub async fn insert(&self, otp: NewOtp) -> Result<Option<Inserted>, BatchError> {
        let inserted = self.batch.submit(otp).await?;
        if let Some(limit) = inserted.as_ref().and_then(|i| i.over_limit) {
            metrics::counter!(crate::platform::observability::RATE_LIMITED, "limit" => limit).increment(1);
        }
        Ok(inserted)
    }
}

/// The batched insert behind [`Inserter`].
struct Inserts {
    pool: PgPool,
    terms: Terms,
}

impl Batch for Inserts {
    type Item = NewOtp;
    type Output = Option<Inserted>;

    async fn run(&self, otps: &[NewOtp]) -> Result<Vec<Option<Inserted>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        expire_stale(&mut tx, otps).await?;
        let inserted = insert_and_count(&mut tx, otps, &self.terms).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

/// A request id derived from the body deduplicates only while its OTP is pending. One whose
/// OTP ran out unnoticed (the sweeper has not passed yet) must not swallow a new request:
/// expire those first, with their events, in the inserting transaction. Rows are locked in
/// id order, so two batches expiring the same rows cannot deadlock.
async fn expire_stale(conn: &mut sqlx::PgConnection, otps: &[NewOtp]) -> Result<(), sqlx::Error> {
    let (apps, requests): (Vec<String>, Vec<String>) = otps
        .iter()
        .filter(|o| o.job.request_id.is_derived())
        .map(|o| (o.job.app_id.to_string(), o.job.request_id.as_str().to_string()))
        .unzip();
    if apps.is_empty() {
        return Ok(());
    }
    let stale = sqlx::query_as!(
        crate::callbacks::outbox::OtpRow,
        "with stale as (
             select o.id from otps o
             join unnest($1::text[], $2::text[]) as t(app_id, request_id)
               on o.app_id = t.app_id and o.request_id = t.request_id
             where o.request_id_derived and o.status = 'pending' and o.expires_at <= now()
             order by o.id
             for update of o
         )
         update otps set status = 'expired', status_changed_at = now(), updated_at = now()
         from stale where otps.id = stale.id
         returning otps.id, otps.app_id, otps.request_id, otps.phone_number, otps.channel, otps.status,
                   otps.delivery, otps.locale, otps.parts, otps.attempts, otps.max_attempts,
                   otps.expires_at, otps.metadata, otps.callback_url, otps.workflow_step",
        &apps,
        &requests,
    )
    .fetch_all(&mut *conn)
    .await?;
    crate::callbacks::outbox::record_rows(conn, crate::callbacks::outbox::EventType::Expired, stale, None).await?;
    Ok(())
}

/// Inserts the OTPs and counts the sends of those inserted, in the caller's transaction.
async fn insert_and_count(
    conn: &mut sqlx::PgConnection,
    otps: &[NewOtp],
    terms: &Terms,
) -> Result<Vec<Option<Inserted>>, sqlx::Error> {
    let claims = insert_rows(&mut *conn, otps, terms).await?;
    let sends: Vec<SendKey> = otps
        .iter()
        .zip(&claims)
        .filter(|(_, claim)| claim.is_some())
        .map(|(otp, _)| send_key(&otp.job))
        .collect();
    let mut verdicts = ratelimit::count_sends(&mut *conn, &terms.limits, &sends)
        .await?
        .into_iter();
    let mut inserted: Vec<Option<Inserted>> = claims
        .into_iter()
        .map(|claim| {
            // One verdict per inserted OTP, in order.
            Some(Inserted {
                claim: claim?,
                over_limit: verdicts.next().and_then(|verdict| verdict.err()).map(|(name, _)| name),
                fraud: None,
            })
        })
        .collect();
    screen(&mut *conn, otps, &mut inserted, &terms.fraud).await;
    let limited: Vec<Uuid> = inserted
        .iter()
        .flatten()
        .filter(|i| i.over_limit.is_some())
        .map(|i| i.claim.id)
        .collect();
    let error = serde_json::json!({"reason": "rate_limited", "message": "rate_limited: a send limit is used up"});
    reject(conn, &limited, "rate_limited", &error).await?;
    // One update per distinct finding (a rule and its target): a batch has few.
    let mut found: BTreeMap<String, (Value, Vec<Uuid>)> = BTreeMap::new();
    for i in inserted.iter().flatten() {
        if let Some(finding) = &i.fraud {
            let error = finding.error();
            found
                .entry(error.to_string())
                .or_insert((error, Vec::new()))
                .1
                .push(i.claim.id);
        }
    }
    for (error, ids) in found.values() {
        reject(conn, ids, "fraud_suspected", error).await?;
    }
    Ok(inserted)
}

/// Puts the OTPs every send limit allowed before the fraud guard, in the caller's
/// transaction, and notes each refusal on its OTP.
async fn screen(
    conn: &mut sqlx::PgConnection,
    otps: &[NewOtp],
    inserted: &mut [Option<Inserted>],
    config: &FraudConfig,
) {
    let (allowed, sends): (Vec<usize>, Vec<fraud::Send>) = otps
        .iter()
        .zip(inserted.iter())
        .enumerate()
        .filter_map(|(n, (otp, inserted))| {
            let claim = &inserted.as_ref().filter(|i| !i.refused())?.claim;
            Some((
                n,
                fraud::Send {
                    otp_id: claim.id,
                    app_id: otp.job.app_id.as_str(),
                    phone: &otp.job.phone,
                    modes: &otp.fraud_modes,
                },
            ))
        })
        .unzip();
    let findings = fraud::screen(conn, config, &sends).await;
    for (n, finding) in allowed.into_iter().zip(findings) {
        if let Some(inserted) = inserted[n].as_mut() {
            inserted.fraud = finding;
        }
    }
}

/// Turns OTPs whose send a limit or the fraud guard refused into rejections that leave a
/// valid OTP behind: each row ends `rejected` with `reason`, out of the scheduler's reach,
/// with an `otp.rejected` event carrying `error`. In the inserting transaction, so a crash
/// or a lost connection after it cannot leave an OTP that a redelivery or the scheduler
/// would send.
async fn reject(conn: &mut sqlx::PgConnection, ids: &[Uuid], reason: &str, error: &Value) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query_as!(
        crate::callbacks::outbox::OtpRow,
        "update otps set status = 'rejected', rejection_reason = $2, next_attempt_at = null,
                status_changed_at = now(), updated_at = now()
         where id = any($1)
         returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                   attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
        ids,
        reason
    )
    .fetch_all(&mut *conn)
    .await?;
    crate::callbacks::outbox::record_rows(
        conn,
        crate::callbacks::outbox::EventType::Rejected,
        rows,
        Some(error.clone()),
    )
    .await?;
    Ok(())
}

/// Inserts the OTPs in one statement; each answer is its claim, or `None` where the
/// request id (or, from a producer choosing ids, the OTP id) exists already. Of two jobs
/// with one request id in the same statement, the first is inserted. Rows go in in
/// (app, request id) order, so two batches holding the same keys (a redelivery racing its
/// original in another process) wait for each other's keys in one order and cannot deadlock.
async fn insert_rows(
    conn: &mut sqlx::PgConnection,
    otps: &[NewOtp],
    terms: &Terms,
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let answer_order: Vec<Uuid> = otps.iter().map(|o| o.id.as_uuid()).collect();
    let mut sorted: Vec<&NewOtp> = otps.iter().collect();
    // Stable: of two jobs with one key, the first still goes in first.
    sorted.sort_by(|a, b| {
        (a.job.app_id.as_str(), a.job.request_id.as_str()).cmp(&(b.job.app_id.as_str(), b.job.request_id.as_str()))
    });
    let otps = sorted;
    let now = OffsetDateTime::now_utc();
    let column = |f: fn(&NewOtp) -> String| otps.iter().map(|o| f(o)).collect::<Vec<_>>();
    let ids: Vec<Uuid> = otps.iter().map(|o| o.id.as_uuid()).collect();
    let derived: Vec<bool> = otps.iter().map(|o| o.job.request_id.is_derived()).collect();
    let senders: Vec<Option<String>> = otps.iter().map(|o| o.sender.clone()).collect();
    let parts: Vec<i32> = otps.iter().map(|o| o.parts as i32).collect();
    let pin_lengths: Vec<i16> = otps.iter().map(|o| i16::from(o.job.pin_length.get())).collect();
    let max_attempts: Vec<i16> = otps.iter().map(|o| i16::from(o.job.max_attempts.get())).collect();
    let ttls: Vec<i32> = otps.iter().map(|o| o.ttl.seconds() as i32).collect();
    let expires: Vec<OffsetDateTime> = otps.iter().map(|o| now + o.ttl.duration()).collect();
    let callbacks: Vec<Option<String>> = otps.iter().map(|o| o.callback_url.clone()).collect();
    let metadata: Vec<Option<Value>> = otps
        .iter()
        .map(|o| o.job.metadata.clone().map(|m| m.into_value()))
        .collect();
    let workflows: Vec<Option<Value>> = otps.iter().map(|o| o.workflow.clone()).collect();
    let countries: Vec<Option<String>> = otps.iter().map(|o| o.job.phone.region().map(str::to_string)).collect();
    let claims = sqlx::query_as!(
        Claim,
        r#"insert into otps (id, app_id, request_id, request_id_derived, phone_number, channel, sender, locale,
                             template, parts, provider, pin_type, pin_length, pin_key_id, max_attempts,
                             ttl_seconds, expires_at, callback_url, metadata, delivery, delivery_claims,
                             next_attempt_at, pin_salt, workflow, workflow_step, step_due_at, country)
           select t.id, t.app_id, t.request_id, t.derived, t.phone, t.channel, t.sender, t.locale, t.template,
                  t.parts, t.provider, t.pin_type, t.pin_length, $14, t.max_attempts, t.ttl, t.expires_at,
                  t.callback_url, t.metadata, 'sending', 1, now() + make_interval(secs => $20),
                  -- 16 random bytes per OTP, part of its PIN input (message::pin).
                  uuid_send(gen_random_uuid()),
                  t.workflow, case when t.workflow is not null then 0 end,
                  -- The first step's timeout, when a step follows it.
                  case when jsonb_array_length(t.workflow) > 1
                       then now() + make_interval(secs => (t.workflow->0->>'timeoutSeconds')::float8) end,
                  t.country
           from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::text[], $10::int[], $11::text[], $12::text[], $13::smallint[],
                       $15::smallint[], $16::int[], $17::timestamptz[], $18::text[], $19::jsonb[], $21::jsonb[],
                       $22::text[])
                as t(id, app_id, request_id, derived, phone, channel, sender, locale, template, parts, provider,
                     pin_type, pin_length, max_attempts, ttl, expires_at, callback_url, metadata, workflow, country)
           on conflict do nothing
           returning id, delivery_claims as claim, claims_base, app_id, request_id, phone_number, channel, sender, locale,
                     template, provider, pin_type, pin_length, pin_key_id, pin_salt, generation, ttl_seconds, expires_at"#,
        &ids,
        &column(|o| o.job.app_id.to_string()),
        &column(|o| o.job.request_id.as_str().to_string()),
        &derived,
        &column(|o| o.job.phone.as_str().to_string()),
        &column(|o| o.job.channel.as_str().to_string()),
        &senders as &[Option<String>],
        &column(|o| o.locale.as_str().to_string()),
        &column(|o| o.template.source().to_string()),
        &parts,
        &column(|o| o.provider.clone()),
        &column(|o| o.job.pin_type.as_str().to_string()),
        &pin_lengths,
        terms.pin_key_id,
        &max_attempts,
        &ttls,
        &expires,
        &callbacks as &[Option<String>],
        &metadata as &[Option<Value>],
        terms.lease.as_secs_f64(),
        &workflows as &[Option<Value>],
        &countries as &[Option<String>],
    )
    .fetch_all(conn)
    .await?;
    let mut inserted: HashMap<Uuid, Claim> = claims.into_iter().map(|c| (c.id, c)).collect();
    Ok(answer_order.iter().map(|id| inserted.remove(id)).collect())
}
