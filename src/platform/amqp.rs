//! RabbitMQ plumbing shared by the roles: connecting, declaring the
//! queues, and publishing with a publisher confirm.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::platform::config::{AmqpConfig, QueueType};

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (publisher confirm was a nack)")]
    Nacked,
    #[error("no queue `{0}` to route the message to")]
    Unroutable(String),
    #[error("the channel is not in confirm mode")]
    NotConfirming,
}

/// Connects, without lapin's automatic recovery: every user of a connection rebuilds it
/// when it breaks. (In the chaos run, lapin's recovery once left a consumer silent after a
/// broker restart, with no error to act on.)
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.to_string().into());
    Connection::connect(config.url.expose(), properties).await
}

/// Declares the send queue and its dead-letter queue, both durable, of the configured type.
pub async fn declare_queues(channel: &Channel, config: &AmqpConfig) -> Result<(), lapin::Error> {
    // Classic queues are declared without the argument, as before it existed, so queues made
    // by earlier versions (or by hand) stay equivalent.
    let mut arguments = FieldTable::default();
    if config.queue_type != QueueType::Classic {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(config.queue_type.as_str().into()),
        );
    }
    for queue in [&config.send_queue, &config.dead_letter_queue] {
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), arguments.clone())
            .await?;
    }
    Ok(())
}

/// A channel in confirm mode, for publishing.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publishes persistently to a queue through the default exchange and waits for the
/// broker's confirm, so a returned `Ok` means the broker has the message.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties.with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        // `mandatory` made the broker return it: no queue of that name.
        Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(queue.to_string())),
        Confirmation::Nack(_) => Err(AmqpError::Nacked),
        Confirmation::NotRequested => Err(AmqpError::NotConfirming),
    }
}

/// A broker connection slot; reconnects on the first use after the connection was lost.
type Slot = tokio::sync::Mutex<Option<(Connection, Channel)>>;

/// A broker channel shared by request handlers, and a second one for readiness and the
/// metrics sampler, so a probe never waits behind a send (or a send behind a probe that
/// is reconnecting).
pub struct Publisher {
    config: AmqpConfig,
    channel: Slot,
    probe: Slot,
}

impl Publisher {
    pub fn new(config: AmqpConfig) -> Self {
        Self {
            config,
            channel: tokio::sync::Mutex::new(None),
            probe: tokio::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.open(&self.channel).await
    }

    async fn open(&self, slot: &Slot) -> Result<Channel, lapin::Error> {
        let mut slot = slot.lock().await;
        if let Some((connection, channel)) = slot.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let connection = connect(&self.config, "otp-courier").await?;
        let channel = confirm_channel(&connection).await?;
        declare_queues(&channel, &self.config).await?;
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Publishes to the send queue with a confirm, as our own broker user (the worker trusts
    /// that user's jobs for any app); one reconnect is tried on failure.
    pub async fn publish_job(&self, body: &[u8], mut properties: BasicProperties) -> Result<(), AmqpError> {
        if let Some(user) = self.config.user() {
            properties = properties.with_user_id(user.into());
        }
        let queue = &self.config.send_queue;
        match publish_confirmed(&self.channel().await?, queue, body, properties.clone()).await {
            Err(AmqpError::Broker(_)) => {
                self.channel.lock().await.take();
                publish_confirmed(&self.channel().await?, queue, body, properties).await
            }
            other => other,
        }
    }

    /// Whether the broker answers now, for readiness checks.
    pub async fn ready(&self) -> bool {
        self.depth(&self.config.send_queue).await.is_some()
    }

    /// The messages ready in `queue`, asked with a passive declare within two seconds; `None`
    /// when the broker does not answer. (A connection's status alone can read "connected"
    /// while it is recovering from a broker that went away.) The channel is dropped on
    /// failure, so the next call reconnects.
    pub async fn depth(&self, queue: &str) -> Option<u32> {
        let probe = async {
            let channel = self.open(&self.probe).await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), probe).await;
        match answer {
            Ok(Ok(declared)) => Some(declared.message_count()),
            _ => {
                self.probe.lock().await.take();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::{Config, Secret};

    /// Needs the RabbitMQ of the tests (`AMQP_URL`, default guest on 127.0.0.1).
    #[tokio::test]
    async fn readiness_does_not_wait_behind_the_publishing_channel() {
        let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let config = AmqpConfig {
            url: Secret::new(url),
            send_queue: format!("test.readiness.{suffix}"),
            dead_letter_queue: format!("test.readiness.dlq.{suffix}"),
            ..Config::load(None).expect("defaults").amqp
        };
        let publisher = Publisher::new(config.clone());
        // A send holding the publishing channel (reconnecting, say) for longer than a probe waits.
        let held = publisher.channel.lock().await;
        let ready = tokio::time::timeout(Duration::from_secs(5), publisher.ready()).await;
        drop(held);
        assert_eq!(ready, Ok(true), "the probe answered on its own channel");
        let channel = publisher.open(&publisher.probe).await.expect("channel");
        for queue in [&config.send_queue, &config.dead_letter_queue] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
                .expect("delete the test's queue");
        }
    }
}
