//! What every integration test stands on: its own database (from `#[sqlx::test]`), its own
//! queues, a fake provider on loopback, and a worker running in-process or as a process.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use otp_courier::domain::OtpId;
use otp_courier::message::pin::{self, PinKey, PinLength, PinType};
use otp_courier::platform::config::Config;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const PIN_KEY: &str = "6f74702d636f75726965722d746573742d6b65792d6f662d33322d6279746573";
pub const PROVIDER_PATH: &str = "/send";

/// Waits for `condition` to hold, checking every 20 ms, failing after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Harness {
    pub pool: PgPool,
    pub provider: MockServer,
    pub queue: String,
    pub dlq: String,
    pub channel: Channel,
    connection: Connection,
    pub overrides: Value,
    worker: Option<(CancellationToken, JoinHandle<()>)>,
    dispatcher: Option<(CancellationToken, JoinHandle<()>)>,
    api: Option<CancellationToken>,
}

impl Harness {
    /// A harness whose `fake` provider (http-json) is a wiremock server; nothing runs yet.
    pub async fn new(pool: PgPool) -> Self {
        let provider = MockServer::start().await;
        let suffix = Uuid::now_v7().simple().to_string();
        let queue = format!("test.otp.send.{suffix}");
        let dlq = format!("test.otp.send.dlq.{suffix}");
        let overrides = json!({
            "database": {"url": database_url(&pool), "max_connections": 5},
            "amqp": {"url": amqp_url(), "send_queue": queue, "dead_letter_queue": dlq, "prefetch": 16},
            "worker": {"lease_seconds": 5, "poll_interval_ms": 100, "shutdown_grace_seconds": 5},
            "delivery": {"timeout_ms": 500, "quick_retries": 2, "quick_retry_min_delay_ms": 10,
                         "quick_retry_max_delay_ms": 50, "retry_schedule_seconds": [1]},
            "pin": {"active_key": "k1", "keys": {"k1": PIN_KEY}},
            "callbacks": {"allow_http": true, "allow_networks": ["127.0.0.1/32"], "timeout_seconds": 2,
                          "lease_seconds": 7, "poll_interval_ms": 100, "retry_schedule_seconds": [1, 1, 1]},
            "log": {"format": "json", "filter": "otp_courier=debug,info"},
            "api": {"listen": "127.0.0.1:0"},
            "routing": {"sms": "fake", "whatsapp": "fake"},
            "providers": {"fake": {
                "kind": "http-json",
                "url": format!("{}{PROVIDER_PATH}", provider.uri()),
                "body": {"to": "{{to}}", "text": "{{message}}", "otp": "{{otp_id}}"}
            }},
        });
        let connection = Connection::connect(&amqp_url(), Default::default())
            .await
            .expect("RabbitMQ is reachable");
        let channel = connection.create_channel().await.expect("channel");
        // Declared up front: a passive look at a queue that does not exist yet would close the channel.
        for name in [&queue, &dlq] {
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await
                .expect("declare");
        }
        Self {
            pool,
            provider,
            queue,
            dlq,
            channel,
            connection,
            overrides,
            worker: None,
            dispatcher: None,
            api: None,
        }
    }

    /// Opens a new broker connection for the test itself (after a broker restart).
    #[allow(dead_code, reason = "used by tests/restarts.rs, which shares this file")]
    pub async fn reconnect(&mut self) {
        self.connection = Connection::connect(&amqp_url(), Default::default())
            .await
            .expect("RabbitMQ is reachable");
        self.channel = self.connection.create_channel().await.expect("channel");
    }

    /// Changes one configuration value, e.g. `set("delivery.retry_schedule_seconds", json!([120]))`.
    pub fn set(&mut self, path: &str, value: Value) {
        let mut node = &mut self.overrides;
        for key in path.split('.') {
            node = &mut node[key];
        }
        *node = value;
    }

    pub fn config(&self) -> Config {
        let figment = Figment::from(Toml::string(otp_courier::platform::config::DEFAULTS))
            .merge(Serialized::defaults(&self.overrides));
        Config::from_figment(figment).expect("test configuration is valid")
    }

    /// The configuration as a TOML file, for a worker run as a separate process.
    pub fn config_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, toml::to_string(&self.overrides).expect("toml")).expect("write config");
        path
    }

    /// Runs `otp-courier serve` as its own process, its API on a free loopback port and its
    /// output in `log`; returns it, once the API answers, with the API's base URL.
    pub async fn spawn_serve(&mut self, dir: &std::path::Path, log: &std::path::Path) -> (RoleProcess, String) {
        let port = free_port();
        self.set("api.listen", json!(format!("127.0.0.1:{port}")));
        let serve = RoleProcess::spawn("serve", &self.config_file(dir), log);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until("the API answers", Duration::from_secs(30), || async {
            http.get(format!("{base}/healthz")).send().await.is_ok()
        })
        .await;
        (serve, base)
    }

    /// The fake provider accepts every request.
    pub async fn provider_accepts(&self) {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&self.provider)
            .await;
    }

    /// The fake provider answers `first` to the first `times` requests, then accepts.
    pub async fn provider_answers_then_accepts(&self, first: impl wiremock::Respond + 'static, times: u64) {
        Mock::given(method("POST"))
            .respond_with(first)
            .up_to_n_times(times)
            .mount(&self.provider)
            .await;
        self.provider_accepts().await;
    }

    /// Starts a worker in this process.
    pub fn start_worker(&mut self) {
        let worker = {
            let config = Arc::new(self.config());
            let shared = otp_courier::cli::Resources::new(&config).expect("resources");
            otp_courier::cli::build_worker(config, &shared)
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(shutdown.clone()));
        self.worker = Some((shutdown, task));
    }

    /// Starts a dispatcher in this process.
    pub fn start_dispatcher(&mut self) {
        let sender = otp_courier::callbacks::webhook::Sender::new(&self.config().callbacks).expect("callback client");
        self.start_dispatcher_with(sender);
    }

    /// Starts a dispatcher in this process that sends through `sender`.
    pub fn start_dispatcher_with(&mut self, sender: otp_courier::callbacks::webhook::Sender) {
        self.dispatcher = Some(self.spawn_dispatcher(sender));
    }

    /// Runs a dispatcher in this process that sends through `sender`, until the token is
    /// cancelled; the harness does not stop it.
    pub fn spawn_dispatcher(
        &self,
        sender: otp_courier::callbacks::webhook::Sender,
    ) -> (CancellationToken, JoinHandle<()>) {
        let config = self.config();
        let dispatcher = otp_courier::callbacks::dispatcher::Dispatcher::new(
            self.pool.clone(),
            sender,
            config.callbacks,
            self.sealer(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(shutdown.clone(), Duration::from_secs(5)));
        (shutdown, task)
    }

    /// Issues the app's webhook signing secret; earlier ones keep signing for `grace`.
    pub async fn webhook_secret(&self, app: &str, grace: Option<time::Duration>) -> String {
        let app = otp_courier::domain::AppId::parse(app).expect("app id");
        let mut conn = self.pool.acquire().await.expect("conn");
        otp_courier::tenancy::keys::rotate_webhook_secret(&mut conn, &self.sealer(), &app, grace)
            .await
            .expect("webhook secret")
    }

    /// The sealer of this harness's configuration (`[secrets]`).
    pub fn sealer(&self) -> otp_courier::tenancy::sealing::Sealer {
        otp_courier::tenancy::sealing::Sealer::from_config(&self.config().secrets)
    }

    /// Writes an `otp.rejected` event for `app` to `url` straight into the outbox, as the
    /// worker does for a job it cannot accept; returns its `webhook-id`.
    pub async fn record_event(&self, app: &str, url: &str) -> String {
        let snapshot = otp_courier::callbacks::outbox::OtpSnapshot {
            otp_id: None,
            app_id: app.into(),
            request_id: Some(format!("req-{}", Uuid::now_v7().simple())),
            phone_number: Some("+14155550123".into()),
            channel: None,
            status: "rejected".into(),
            delivery: None,
            locale: None,
            parts: None,
            attempts: None,
            max_attempts: None,
            expires_at: None,
            error: Some(json!({"reason": "rate_limited"})),
            metadata: Some(json!({"order": 42})),
            callback_url: Some(url.into()),
            step: None,
            fallback: None,
        };
        let mut conn = self.pool.acquire().await.expect("conn");
        otp_courier::callbacks::outbox::record(
            &mut conn,
            otp_courier::callbacks::outbox::EventType::Rejected,
            &snapshot,
        )
        .await
        .expect("event recorded")
        .to_string()
    }

    /// The callback state of every event, oldest first: (event type, state, attempts).
    pub async fn callbacks(&self) -> Vec<(String, String, i32)> {
        sqlx::query_as("select event_type, state, attempts from outbox order by seq")
            .fetch_all(&self.pool)
            .await
            .expect("outbox")
    }

    /// Starts the HTTP API in this process on a free loopback port; returns its base URL.
    pub async fn start_api(&mut self) -> String {
        let config = Arc::new(self.config());
        let state = otp_courier::cli::build_api(
            config.clone(),
            &otp_courier::cli::Resources::new(&config).expect("resources"),
        );
        let (listener, address) = otp_courier::api::bind(&config).await.expect("bind");
        let shutdown = CancellationToken::new();
        tokio::spawn(otp_courier::api::serve(listener, state, shutdown.clone()));
        self.api = Some(shutdown);
        format!("http://{address}")
    }

    /// Creates an app with a template and an API key; returns (key id, secret).
    pub async fn create_app_with_key(&self, id: &str) -> (String, String) {
        self.create_app(id, json!({"": "Code {{pin}}"})).await;
        let app = otp_courier::domain::AppId::parse(id).expect("app id");
        let mut conn = self.pool.acquire().await.expect("conn");
        let key = otp_courier::tenancy::keys::issue(&mut conn, Some(&app))
            .await
            .expect("key");
        (key.key_id, key.secret)
    }

    /// An operator key; returns (key id, secret).
    pub async fn operator_key(&self) -> (String, String) {
        let mut conn = self.pool.acquire().await.expect("conn");
        let key = otp_courier::tenancy::keys::issue(&mut conn, None).await.expect("key");
        (key.key_id, key.secret)
    }

    /// Stops the in-process worker the way SIGTERM does, waiting for in-flight jobs.
    pub async fn stop_worker(&mut self) {
        if let Some((shutdown, task)) = self.worker.take() {
            shutdown.cancel();
            task.await.expect("worker task ends cleanly");
        }
    }

    pub async fn create_app(&self, id: &str, templates: Value) {
        let templates = serde_json::from_value(templates).expect("templates map");
        otp_courier::tenancy::apps::create(
            &self.pool,
            &otp_courier::tenancy::apps::NewApp {
                id: id.into(),
                name: id.into(),
                templates,
                ..Default::default()
            },
        )
        .await
        .expect("app created");
    }

    /// Publishes a job as any producer would: a plain AMQP message, no special properties.
    pub async fn publish(&self, body: &[u8]) {
        self.publish_with(body, BasicProperties::default()).await;
    }

    pub async fn publish_with(&self, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                Default::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("published");
    }

    /// Messages waiting in a queue (not counting those delivered and unacked).
    pub async fn ready(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match self
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
        {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        }
    }

    /// Takes every message in the dead-letter queue.
    pub async fn drain_dlq(&self) -> Vec<(Vec<u8>, BasicProperties)> {
        let mut out = Vec::new();
        while let Ok(Some(message)) = self
            .channel
            .basic_get(self.dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
        {
            out.push((message.delivery.data.clone(), message.delivery.properties.clone()));
        }
        out
    }

    /// Requests the fake provider received.
    pub async fn provider_requests(&self) -> Vec<Value> {
        self.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    pub async fn otp_rows(&self) -> Vec<OtpRow> {
        sqlx::query_as::<_, OtpRow>(
            "select id, app_id, pin_salt, status, delivery, locale, parts, delivery_claims, generation, pin_type,
                    pin_length, last_error
             from otps order by created_at",
        )
        .fetch_all(&self.pool)
        .await
        .expect("otps")
    }

    pub async fn events(&self) -> Vec<String> {
        sqlx::query_scalar("select event_type from outbox order by created_at, event_type")
            .fetch_all(&self.pool)
            .await
            .expect("outbox")
    }

    /// Every row of the send path still has the row it belongs to. No foreign key holds
    /// these links (migration `send_path_foreign_keys`): the writers and the sweeper do, and
    /// every test that finishes its harness checks them.
    pub async fn assert_no_orphans(&self) {
        let orphans: Vec<(String, i64)> = sqlx::query_as(
            "select 'otps without their app', count(*) from otps o
                 where not exists (select 1 from apps a where a.id = o.app_id)
             union all
             select 'events without their OTP', count(*) from outbox e
                 where e.otp_id is not null and not exists (select 1 from otps o where o.id = e.otp_id)
             union all
             select 'provider requests without their OTP', count(*) from delivery_attempts d
                 where not exists (select 1 from otps o where o.id = d.otp_id)
             union all
             select 'callback attempts without their event', count(*) from callback_attempts c
                 where not exists (select 1 from outbox e where e.id = c.event_id)",
        )
        .fetch_all(&self.pool)
        .await
        .expect("orphans");
        let found: Vec<_> = orphans.into_iter().filter(|(_, n)| *n > 0).collect();
        assert!(found.is_empty(), "rows that lost their parent: {found:?}");
    }

    /// Stops the worker and deletes this test's queues, then checks that no row of the send
    /// path lost its parent.
    pub async fn finish(mut self) {
        self.stop_worker().await;
        if let Some((shutdown, task)) = self.dispatcher.take() {
            shutdown.cancel();
            task.await.expect("dispatcher task ends cleanly");
        }
        if let Some(api) = self.api.take() {
            api.cancel();
        }
        for queue in [&self.queue, &self.dlq] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "bye".into()).await;
        self.assert_no_orphans().await;
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct OtpRow {
    pub id: Uuid,
    pub app_id: String,
    pub pin_salt: Vec<u8>,
    pub status: String,
    pub delivery: String,
    pub locale: String,
    pub parts: i32,
    pub delivery_claims: i32,
    pub generation: i32,
    pub pin_type: String,
    pub pin_length: i16,
    pub last_error: Option<Value>,
}

impl OtpRow {
    /// The PIN this OTP's user holds, derived the way the worker does.
    pub fn pin(&self) -> String {
        let key = PinKey::parse(PIN_KEY).expect("key");
        let pin_type = PinType::parse(&self.pin_type).expect("type");
        let length = PinLength::parse(self.pin_length.into()).expect("length");
        pin::derive(
            &key,
            &pin::PinInput {
                app_id: &self.app_id,
                salt: &self.pin_salt,
                otp: OtpId::from_uuid(self.id),
                generation: self.generation as u32,
            },
            pin_type,
            length,
        )
        .expose()
        .to_string()
    }
}

/// A loopback port free at this moment, for a server whose address must be known before it
/// starts (the API's own, in configuration that names it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The fields of a form-encoded request a fake received, by name.
pub fn form_fields(request: &wiremock::Request) -> std::collections::BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

/// The URL of the per-test database `#[sqlx::test]` created.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(pool.connect_options().get_database().expect("test database name"));
    url.to_string()
}

/// A text header of a message, as the worker writes them on a dead letter.
pub fn text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// The version of the Debian PostgreSQL cluster, for `pg_ctlcluster`.
#[allow(
    dead_code,
    reason = "used by tests/restarts.rs and tests/chaos.rs, which share this file"
)]
pub fn postgres_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions.pop().expect("a cluster version")
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// An `otp-courier` role (`worker`, `dispatcher`) run as its own process, output captured to a file.
pub struct RoleProcess {
    child: tokio::process::Child,
}

impl RoleProcess {
    pub fn spawn(role: &str, config: &std::path::Path, log: &std::path::Path) -> Self {
        Self::spawn_logging(role, config, log, "debug")
    }

    /// As `spawn`, logging what `rust_log` (a `RUST_LOG` filter) lets through.
    pub fn spawn_logging(role: &str, config: &std::path::Path, log: &std::path::Path, rust_log: &str) -> Self {
        Self::spawn_with_env(role, config, log, &[("RUST_LOG", rust_log)])
    }

    /// As `spawn`, with these environment variables set.
    pub fn spawn_with_env(role: &str, config: &std::path::Path, log: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_otp-courier"))
            .arg("--config")
            .arg(config)
            .arg(role)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("otp-courier binary starts");
        Self { child }
    }

    /// SIGKILL: no cleanup, no acks, no chance to record anything.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("killed");
    }
}
