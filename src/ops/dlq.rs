//! The dead-letter queue, for operators: list what is in it, and requeue or purge the
//! messages that match a filter (say, the jobs of an app that was unknown and now exists).
//!
//! Messages are taken with `basic.get` and held unacknowledged; matches are acked once
//! requeued (publisher-confirmed) or purged, and the rest go back to the queue, in their
//! order, when the channel closes. A pass sees each message at most once.

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::ops::replay::{Audit, Progress, Summary};
use crate::platform::amqp::{self, AmqpError};
use crate::platform::config::AmqpConfig;
use crate::worker::dead_letter::{DETAIL_HEADER, REASON_HEADER};

/// The most messages one pass looks at.
pub const MAX_PASS: usize = 100_000;

/// A dead-lettered job as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Position in the queue when listed (1 = head).
    pub position: usize,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub rejected_at: Option<String>,
    pub app_id: Option<String>,
    pub message_id: Option<String>,
    pub body_bytes: usize,
    /// The body as text, cut at 2,000 characters.
    pub body: String,
}

/// Which dead letters a requeue or purge takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, clap::Args)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlqFilter {
    /// Only jobs of this app (the `app-id` property or the body's `appId`).
    #[arg(long)]
    pub app: Option<String>,
    /// Only jobs rejected for this reason code, e.g. `unknown_app`.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only these messages (their `message-id` property); any, when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long = "message-id")]
    pub message_ids: Vec<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Count what matches; change nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<lapin::Error> for DlqError {
    fn from(error: lapin::Error) -> Self {
        DlqError::Amqp(error.into())
    }
}

fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn describe(position: usize, data: &[u8], properties: &BasicProperties) -> DeadLetter {
    let body_app = serde_json::from_slice::<Value>(data).ok().and_then(|v| {
        ["appId", "appid"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
    });
    DeadLetter {
        position,
        reason: header(properties, REASON_HEADER),
        detail: header(properties, DETAIL_HEADER),
        rejected_at: header(properties, "x-otp-rejected-at"),
        app_id: properties.app_id().as_ref().map(ShortString::to_string).or(body_app),
        message_id: properties.message_id().as_ref().map(ShortString::to_string),
        body_bytes: data.len(),
        body: String::from_utf8_lossy(data).chars().take(2000).collect(),
    }
}

impl DlqFilter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.app.as_ref().is_none_or(|app| letter.app_id.as_ref() == Some(app))
            && self.reason.as_ref().is_none_or(|r| letter.reason.as_ref() == Some(r))
            && (self.message_ids.is_empty()
                || letter
                    .message_id
                    .as_ref()
                    .is_some_and(|id| self.message_ids.contains(id)))
    }
}

/// Operator access to the dead-letter queue over its own connection.
pub struct Dlq {
    config: AmqpConfig,
}

/// What to do with a matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Requeue,
    Purge,
}

impl Dlq {
    pub fn new(config: AmqpConfig) -> Self {
        Self { config }
    }

    async fn channel(&self) -> Result<(lapin::Connection, Channel), DlqError> {
        let connection = amqp::connect(&self.config, "otp-courier dlq").await?;
        let channel = amqp::confirm_channel(&connection).await?;
        amqp::declare_queues(&channel, &self.config).await?;
        Ok((connection, channel))
    }

    /// How many messages the queue holds.
    pub async fn depth(&self) -> Result<u32, DlqError> {
        let connection = amqp::connect(&self.config, "otp-courier dlq").await?;
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                self.config.dead_letter_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = connection.close(200, "counted".into()).await;
        Ok(queue?.message_count())
    }

    /// Up to `limit` messages from the head of the queue, left in place.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
        let (connection, channel) = self.channel().await?;
        let mut letters = Vec::new();
        let mut budget = limit.min(MAX_PASS);
        while letters.len() < budget {
            let Some(message) = self.get(&channel).await? else {
                break;
            };
            if letters.is_empty() {
                budget = budget.min(message.message_count as usize + 1);
            }
            letters.push(describe(
                letters.len() + 1,
                &message.delivery.data,
                &message.delivery.properties,
            ));
        }
        // Closing without acks puts every message back where it was.
        let _ = connection.close(200, "listed".into()).await;
        Ok(letters)
    }

    /// Publishes matching messages back to the send queue (with a confirm), then removes them.
    pub async fn requeue(
        &self,
        pool: &PgPool,
        filter: &DlqFilter,
        actor: &str,
        progress: Progress<'_>,
    ) -> Result<Summary, DlqError> {
        self.act(pool, filter, actor, Action::Requeue, progress).await
    }

    /// Removes matching messages for good.
    pub async fn purge(
        &self,
        pool: &PgPool,
        filter: &DlqFilter,
        actor: &str,
        progress: Progress<'_>,
    ) -> Result<Summary, DlqError> {
        self.act(pool, filter, actor, Action::Purge, progress).await
    }

    /// Requeues or purges the matching messages, as `action` says.
    pub async fn act(
        &self,
        pool: &PgPool,
        filter: &DlqFilter,
        actor: &str,
        action: Action,
        progress: Progress<'_>,
    ) -> Result<Summary, DlqError> {
        let dry_run = filter.dry_run;
        let name = match action {
            Action::Requeue => "dlq-requeue",
            Action::Purge => "dlq-purge",
        };
        let audit = Audit::begin(pool, name, actor, json!(filter), dry_run).await?;
        let (connection, channel) = self.channel().await?;
        let limit = filter.limit.unwrap_or(MAX_PASS).min(MAX_PASS);
        let mut summary = Summary {
            dry_run,
            ..Summary::default()
        };
        // Only the messages there when the pass began: a requeued job that fails again comes
        // back at the tail, and must not be taken twice.
        let mut budget = MAX_PASS;
        let mut seen = 0;
        while seen < budget && (summary.matched as usize) < limit {
            let Some(message) = self.get(&channel).await? else {
                break;
            };
            if seen == 0 {
                budget = budget.min(message.message_count as usize + 1);
            }
            seen += 1;
            let delivery = &message.delivery;
            if !filter.matches(&describe(seen, &delivery.data, &delivery.properties)) {
                continue;
            }
            summary.matched += 1;
            if dry_run {
                continue;
            }
            if action == Action::Requeue {
                amqp::publish_confirmed(
                    &channel,
                    &self.config.send_queue,
                    &delivery.data,
                    requeue_properties(&delivery.properties),
                )
                .await?;
            }
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await?;
            summary.replayed += 1;
            if summary.replayed % 100 == 0 {
                audit.progress(pool, &summary).await?;
            }
            progress(seen as u64, budget as u64);
        }
        let _ = connection.close(200, "done".into()).await;
        audit.finish(pool, &summary).await?;
        Ok(summary)
    }

    async fn get(&self, channel: &Channel) -> Result<Option<lapin::message::BasicGetMessage>, DlqError> {
        Ok(channel
            .basic_get(
                self.config.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?)
    }
}

/// The original properties without the rejection headers and without `user-id`: RabbitMQ
/// only accepts the publishing user's own, and ours would vouch for the job, so a job of an
/// app bound to a broker user is refused again (`broker_user_mismatch`) rather than let in.
fn requeue_properties(original: &BasicProperties) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default().inner().clone();
    headers.retain(|name, _| !name.as_str().starts_with("x-otp-"));
    let mut properties = BasicProperties::default().with_headers(FieldTable::from(headers));
    if let Some(v) = original.content_type() {
        properties = properties.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        properties = properties.with_content_encoding(v.clone());
    }
    if let Some(v) = original.message_id() {
        properties = properties.with_message_id(v.clone());
    }
    if let Some(v) = original.app_id() {
        properties = properties.with_app_id(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        properties = properties.with_correlation_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        properties = properties.with_timestamp(*v);
    }
    properties
}
