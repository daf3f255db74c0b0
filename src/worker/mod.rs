//! The worker role: consumes send jobs from RabbitMQ, turns each into an OTP row and a
//! provider request, and runs the scheduler that retries deliveries durably.
//!
//! A message is acked only once PostgreSQL holds what it asked for: the OTP row (with its
//! delivery outcome or a scheduled retry) or a rejection record and its dead letter. From
//! then on the database, not the broker, guarantees the OTP is finished, so a redelivered
//! message finds its OTP and is acked without sending anything.

mod acks;
pub mod dead_letter;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::OTP_ID_HEADER;
use crate::domain::{RawJob, SendJob};
use crate::otp::delivery::Deliverer;
use crate::otp::intake::{self, Inserted, Inserter, Rejection, Source};
use crate::platform::amqp;
use crate::platform::config::Config;
use crate::tenancy::apps;
use acks::{Acks, Settlement};

pub use scheduler::run as run_scheduler;

/// Why a broker session ended (other than shutdown).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    ConsumerCancelled,
    #[error("the task that settles the channel's messages ended")]
    SettlingEnded,
}

/// Why a message could not be settled now; it is returned to the queue and tried again.
#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    App(#[from] crate::tenancy::apps::AppError),
    #[error(transparent)]
    Broker(#[from] amqp::AmqpError),
    #[error(transparent)]
    Batch(#[from] crate::platform::batch::BatchError),
}

impl Retry {
    /// A database error that no retry can cure: a value it cannot store (SQLSTATE class 22)
    /// or a broken constraint (class 23).
    fn is_permanent(&self) -> bool {
        match self {
            Retry::Database(e) | Retry::App(crate::tenancy::apps::AppError::Database(e)) => {
                crate::platform::db::is_data_error(e)
            }
            Retry::App(crate::tenancy::apps::AppError::Corrupt { .. }) => true,
            Retry::Batch(e) => e.is_permanent(),
            _ => false,
        }
    }
}

/// What a processed message came to.
enum Settled {
    Accepted,
    Rejected(Rejection),
}

/// Everything a job handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    config: Arc<Config>,
    deliverer: Deliverer,
    inserter: Inserter,
    apps: apps::Cache,
    /// Our own broker user (`amqp.url`), read once: jobs carrying it come from our API.
    own_user: Option<String>,
}

impl Worker {
    /// Starts the worker's batch writers; needs a Tokio runtime.
    pub fn new(config: Arc<Config>, deliverer: Deliverer) -> Self {
        let inserter = Inserter::spawn(
            deliverer.batch_pool().clone(),
            deliverer.pin_keys().active_id(),
            deliverer.lease(),
            &config,
        );
        let apps = apps::Cache::spawn(deliverer.batch_pool().clone(), config.worker.app_cache());
        Self {
            own_user: config.amqp.user(),
            config,
            deliverer,
            inserter,
            apps,
        }
    }

    /// Consumes until `shutdown`, reconnecting to the broker as long as it takes, and runs
    /// the retry scheduler and the receipt poller beside the consumer.
    pub async fn run(self, shutdown: CancellationToken) {
        let scheduler = tokio::spawn(run_scheduler(
            self.deliverer.clone(),
            self.config.worker.clone(),
            shutdown.clone(),
        ));
        let receipts = tokio::spawn(crate::otp::receipts::run(
            self.deliverer.pool().clone(),
            self.deliverer.shared_providers(),
            self.config.worker.poll_interval(),
            self.config.worker.lease(),
            self.config.limits.clone(),
            shutdown.clone(),
        ));
        let mut pauses = reconnect_backoff();
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::error!(%error, retry_in = ?pause, "broker session ended; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        if let Err(error) = scheduler.await {
            tracing::error!(%error, "the retry scheduler panicked");
        }
        if let Err(error) = receipts.await {
            tracing::error!(%error, "the receipt poller panicked");
        }
        tracing::info!("worker stopped");
    }

    /// One connection's life: declare, consume, hand each delivery to a task; on shutdown
    /// stop consuming and give in-flight jobs the grace period to finish.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let amqp_config = &self.config.amqp;
        let connection = amqp::connect(amqp_config, "otp-courier worker").await?;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, amqp_config).await?;
        channel
            .basic_qos(amqp_config.prefetch, BasicQosOptions::default())
            .await?;
        let publisher = amqp::confirm_channel(&connection).await?;
        let mut consumer = channel
            .basic_consume(
                amqp_config.send_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %amqp_config.send_queue, prefetch = amqp_config.prefetch, "consuming");
        let (acks, mut settling) = Acks::spawn(channel.clone());
        let in_flight = TaskTracker::new();
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                // Without it no message would be settled and the prefetch would fill up.
                () = settling.ended() => break Err(SessionError::SettlingEnded),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let (worker, publisher) = (self.clone(), publisher.clone());
                        let settlement = acks.settlement(delivery.delivery_tag);
                        // Boxed: a job's future is kilobytes (the provider request and the
                        // batch writes nest in it), and a task moves its future several
                        // times on the way in and out; a box is moved instead.
                        in_flight.spawn(Box::pin(async move { worker.handle(delivery, settlement, &publisher).await }));
                    }
                    Some(Err(error)) => break Err(SessionError::Broker(error)),
                    None => break Err(SessionError::ConsumerCancelled),
                },
            }
        };
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        in_flight.close();
        let grace = self.config.worker.shutdown_grace();
        if tokio::time::timeout(grace, in_flight.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "in-flight jobs did not finish in time; the broker will redeliver them"
            );
        }
        // What the finished jobs decided is sent before the connection closes.
        settling.finish().await;
        let _ = connection.close(200, "bye".into()).await;
        ended
    }

    /// Handles one delivery and settles it: ack when the database holds the result,
    /// requeue (after a pause, so a database outage is not a hot loop) otherwise.
    async fn handle(&self, delivery: Delivery, settlement: Settlement, publisher: &Channel) {
        // Filled in once the job is parsed, so every line about it, the rejection included,
        // names it.
        let span = tracing::info_span!(
            "job",
            delivery_tag = delivery.delivery_tag,
            app_id = tracing::field::Empty,
            request_id = tracing::field::Empty,
            otp_id = tracing::field::Empty,
        );
        self.settle(delivery, settlement, publisher).instrument(span).await
    }

    async fn settle(&self, delivery: Delivery, settlement: Settlement, publisher: &Channel) {
        let settled = match self.process(&delivery).await {
            Ok(Settled::Accepted) => Ok(()),
            Ok(Settled::Rejected(rejection)) => {
                count_job("rejected", rejection.reason());
                dead_letter::reject(self, publisher, &delivery, &rejection).await
            }
            // The same statement would fail the same way on every redelivery: dead-letter it.
            Err(error) if error.is_permanent() => {
                let rejection = Rejection::Unstorable(error.to_string());
                count_job("rejected", rejection.reason());
                dead_letter::reject(self, publisher, &delivery, &rejection).await
            }
            Err(error) => Err(error),
        };
        match settled {
            Ok(()) => settlement.ack(),
            Err(error) => {
                tracing::warn!(%error, "job could not be settled; returning it to the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                settlement.requeue();
            }
        }
    }

    async fn process(&self, delivery: &Delivery) -> Result<Settled, Retry> {
        let properties = &delivery.properties;
        let header_bytes = properties.headers().as_ref().map_or(0, table_bytes);
        if header_bytes > self.config.amqp.max_header_bytes {
            return Ok(Settled::Rejected(Rejection::HeadersTooLarge {
                size: header_bytes,
                limit: self.config.amqp.max_header_bytes,
            }));
        }
        if let Some(content_type) = properties.content_type() {
            if !is_json(content_type.as_str()) {
                return Ok(Settled::Rejected(Rejection::Job(crate::domain::JobError::Invalid {
                    field: "content-type".into(),
                    reason: format!("{} is not JSON", truncated(content_type.as_str())),
                })));
            }
        }
        let raw = RawJob {
            body: &delivery.data,
            app_id: properties.app_id().as_ref().map(|s| s.as_str()),
            message_id: properties.message_id().as_ref().map(|s| s.as_str()),
            max_body_bytes: self.config.amqp.max_body_bytes,
            allow_http_callbacks: self.config.callbacks.allow_http,
        };
        let job = match SendJob::parse(&raw) {
            Ok(job) => job,
            Err(error) => return Ok(Settled::Rejected(error.into())),
        };
        let span = tracing::Span::current();
        span.record("app_id", job.app_id.as_str());
        span.record("request_id", job.request_id.as_str());
        let Some(app) = self.apps.get(&job.app_id).await?? else {
            return Ok(Settled::Rejected(Rejection::UnknownApp(job.app_id.to_string())));
        };
        let user_id = properties.user_id().as_ref().map(|s| s.as_str());
        let source = Source::of_message(user_id, self.own_user.as_deref());
        let mut otp = match intake::resolve(job, &app, source, &self.config, self.deliverer.providers()) {
            Ok(otp) => otp,
            Err(rejection) => return Ok(Settled::Rejected(rejection)),
        };
        // `resolve` chose the id. The one exception: a job our HTTP API published for a
        // request without a request id carries the random id the API has already answered
        // with. Only the API's own broker user can publish it, which RabbitMQ checks.
        if matches!(source, Source::Api) && otp.job.request_id.is_derived() {
            if let Some(id) = header_text(properties.headers().as_ref(), OTP_ID_HEADER).and_then(|id| id.parse().ok()) {
                otp.id = id;
            }
        }
        span.record("otp_id", tracing::field::display(&otp.id));
        match self.inserter.insert(otp).await? {
            Some(Inserted {
                claim,
                over_limit,
                fraud,
            }) => {
                count_job("accepted", "");
                if let Some(limit) = over_limit {
                    tracing::warn!(limit, "job over its rate limit; rejected");
                    return Ok(Settled::Accepted);
                }
                if let Some(finding) = fraud {
                    tracing::warn!(rule = finding.rule.as_str(), "job refused by the fraud guard");
                    return Ok(Settled::Accepted);
                }
                let outcome = self.deliverer.deliver(&claim).await?;
                tracing::info!(?outcome, "job processed");
            }
            None => {
                count_job("duplicate", "");
                tracing::info!("duplicate job: its OTP exists already")
            }
        }
        Ok(Settled::Accepted)
    }
}

fn count_job(outcome: &'static str, reason: &'static str) {
    metrics::counter!(crate::platform::observability::JOBS, "outcome" => outcome, "reason" => reason).increment(1);
}

fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The encoded size of an AMQP field table's entries: each name with its length byte, each
/// value with its type byte and length prefix, every scalar counted as 8 bytes (its most).
fn table_bytes(table: &FieldTable) -> usize {
    table
        .inner()
        .iter()
        .map(|(name, value)| 1 + name.as_str().len() + value_bytes(value))
        .sum()
}

fn value_bytes(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldTable(t) => 4 + table_bytes(t),
        AMQPValue::FieldArray(a) => 4 + a.as_slice().iter().map(value_bytes).sum::<usize>(),
        _ => 8,
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reconnection pauses: exponential from 100 ms to 5 s, with jitter, for ever. A reconnect
/// costs the broker little; a user waiting for a code notices every second.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_jitter()
        .build()
}
