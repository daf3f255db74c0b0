//! Layered configuration: the documented defaults file compiled into the binary, an
//! optional file, then `OTP_`-prefixed environment variables. Validated once at start.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::Channel;

mod fraud;
pub use fraud::{ConversionConfig, FraudConfig, Mode, NumberTypesConfig, Rule, VelocityConfig};

/// The defaults file, also the reference for every key.
pub const DEFAULTS: &str = include_str!("../../../config/defaults.toml");

/// Why the configuration cannot be used; always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("`{key}` = {value} is out of range: allowed {range}")]
    OutOfRange { key: String, value: String, range: String },
    #[error("`{key}` is invalid: {reason}")]
    Invalid { key: String, reason: String },
}

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub worker: WorkerConfig,
    pub delivery: DeliveryConfig,
    pub pin: PinConfig,
    pub secrets: SecretsConfig,
    pub callbacks: CallbacksConfig,
    pub sweeper: SweeperConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub api: ApiConfig,
    pub receipts: ReceiptsConfig,
    pub console: ConsoleConfig,
    pub fraud: FraudConfig,
    #[serde(default)]
    pub routing: BTreeMap<Channel, String>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpConfig {
    pub url: Secret,
    pub send_queue: String,
    pub dead_letter_queue: String,
    pub prefetch: u16,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub queue_type: QueueType,
}

/// The RabbitMQ queue type otp-courier declares its queues with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A single-node queue: the broker's default.
    Classic,
    /// A replicated Raft queue, for broker clusters.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerConfig {
    pub lease_seconds: u64,
    pub poll_interval_ms: u64,
    pub scheduler_concurrency: usize,
    pub shutdown_grace_seconds: u64,
    pub app_cache_seconds: u64,
}

impl AmqpConfig {
    /// The broker user of `url` (RabbitMQ's default `guest` when it names none). RabbitMQ
    /// accepts a message's `user-id` property only when it equals the publishing user.
    pub fn user(&self) -> Option<String> {
        let url = url::Url::parse(self.url.expose()).ok()?;
        // The URL holds the name percent-encoded (`otp%40svc`); RabbitMQ compares the name itself.
        Some(if url.username().is_empty() {
            "guest".to_string()
        } else {
            percent_encoding::percent_decode_str(url.username())
                .decode_utf8_lossy()
                .into_owned()
        })
    }
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
    pub fn app_cache(&self) -> Duration {
        Duration::from_secs(self.app_cache_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    pub timeout_ms: u64,
    pub quick_retries: usize,
    pub quick_retry_min_delay_ms: u64,
    pub quick_retry_max_delay_ms: u64,
    pub retry_schedule_seconds: Vec<u64>,
    /// The proxy provider requests go through; empty: none. Proxies named in the
    /// environment (`HTTPS_PROXY`, ...) are never used: messages carry codes.
    #[serde(default)]
    pub proxy: Secret,
}

impl DeliveryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PinConfig {
    pub active_key: String,
    /// The shortest `pinLength` a job may ask for (4-6; a job that gives none gets 6).
    pub min_length: u8,
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
}

/// Keys that seal webhook signing secrets at rest (`tenancy::sealing`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SecretsConfig {
    /// Id of the key new secrets are sealed with; empty: stored in clear.
    pub active_key: String,
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitsConfig {
    pub send_per_phone: Limit,
    pub send_per_phone_all_apps: Limit,
    pub send_per_app: Limit,
    pub send_per_country: Limit,
    pub verify_per_app: Limit,
    pub verify_failures_per_phone: Limit,
    pub rejections_per_app: Limit,
}

/// At most `max` hits per window of `window_seconds`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub max_resends: u32,
}

/// The ops console under `/console`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// How long a console session lasts (5-1440 minutes).
    pub session_minutes: u32,
    /// Mark the session cookie `Secure` even when no proxy says `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

/// The delivery states a receipt can report (`provider::receipt::ReceiptStatus`).
pub const RECEIPT_STATUSES: [&str; 6] = ["queued", "sent", "delivered", "read", "undelivered", "failed"];

/// Delivery receipts from providers.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptsConfig {
    /// The public base URL the providers reach the API at (`https://otp.example.com`);
    /// each provider's receipt route is `{public_url}/v1/receipts/{provider name}`. Empty:
    /// no status callback URL is sent with messages.
    pub public_url: String,
    /// Receipt requests handled at once per process; one more is answered 503 with
    /// `Retry-After` at once, so a flood of receipts holds neither memory nor connections.
    pub max_in_flight: usize,
}

impl ReceiptsConfig {
    /// The URL of `provider`'s receipt route, when receipts are on.
    pub fn url_for(&self, provider: &str) -> Option<String> {
        let base = self.public_url.trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/v1/receipts/{provider}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallbacksConfig {
    pub allow_http: bool,
    #[serde(deserialize_with = "networks")]
    pub allow_networks: Vec<IpNet>,
    pub timeout_seconds: u64,
    pub max_response_bytes: usize,
    pub retry_schedule_seconds: Vec<u64>,
    pub concurrency: usize,
    pub per_destination: usize,
    pub per_app: usize,
    pub lease_seconds: u64,
    pub poll_interval_ms: u64,
    pub order_wait_seconds: u64,
}

impl CallbacksConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// Networks as CIDR (`10.1.0.0/16`) or single addresses (`127.0.0.1`).
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an IP network (CIDR) or address")))
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SweeperConfig {
    pub interval_ms: u64,
    pub retention_days: u32,
    pub prune_interval_seconds: u64,
}

impl SweeperConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn prune_interval(&self) -> Duration {
        Duration::from_secs(self.prune_interval_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// One configured provider; `kind` picks the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProviderConfig {
    Twilio(TwilioConfig),
    Xoxzo(XoxzoConfig),
    WhatsappCloud(WhatsappCloudConfig),
    HttpJson(HttpJsonConfig),
    File(FileConfig),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: Secret,
    #[serde(default = "TwilioConfig::default_base_url")]
    pub base_url: String,
    /// Used instead of `From` when set (Twilio picks the sender from the service).
    pub messaging_service_sid: Option<String>,
    /// An approved Content template (`HX…`, of the authentication kind) for WhatsApp
    /// messages, sent with the code as variable `1`. Without it WhatsApp messages go as a
    /// free `Body`, which WhatsApp delivers only inside a 24-hour customer session.
    pub content_sid: Option<String>,
}

impl TwilioConfig {
    fn default_base_url() -> String {
        "https://api.twilio.com".into()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct XoxzoConfig {
    pub sid: String,
    pub auth_token: Secret,
    #[serde(default = "XoxzoConfig::default_base_url")]
    pub base_url: String,
    /// A template registered with Xoxzo: messages go to `POST /sms/templates/{id}/messages/`
    /// with the code as the variable `template_variable`. Without it, free text goes to
    /// `/sms/messages/`, which Xoxzo opens to approved partners only.
    pub template_id: Option<String>,
    #[serde(default = "XoxzoConfig::default_template_variable")]
    pub template_variable: String,
    /// Send `callbackurl` with each message (needs `receipts.public_url`). Xoxzo's notice
    /// carries no signature, so it only makes the status be asked for at once.
    #[serde(default)]
    pub callback: bool,
    /// Delays between status polls of a sent message (seconds; each 1-3600; empty: no
    /// polling). The last delay repeats until the message's status is final or
    /// `poll_deadline_seconds` passed.
    #[serde(default = "XoxzoConfig::default_poll_schedule")]
    pub poll_schedule_seconds: Vec<u64>,
    #[serde(default = "XoxzoConfig::default_poll_deadline")]
    pub poll_deadline_seconds: u64,
}

impl XoxzoConfig {
    fn default_base_url() -> String {
        "https://api.xoxzo.com".into()
    }
    fn default_template_variable() -> String {
        "code".into()
    }
    fn default_poll_schedule() -> Vec<u64> {
        vec![5, 15, 60, 300]
    }
    fn default_poll_deadline() -> u64 {
        3600
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WhatsappCloudConfig {
    pub access_token: Secret,
    pub phone_number_id: String,
    /// An approved template of the AUTHENTICATION category.
    pub template_name: String,
    #[serde(default = "WhatsappCloudConfig::default_base_url")]
    pub base_url: String,
    #[serde(default = "WhatsappCloudConfig::default_api_version")]
    pub api_version: String,
    /// Legacy: every current authentication template has a copy-code (or one-tap) button,
    /// which needs the code again as a button parameter. `false` only for a template made
    /// before buttons were required.
    #[serde(default = "WhatsappCloudConfig::default_copy_code_button")]
    pub copy_code_button: bool,
    /// Our locale -> the template's language code, over the built-in map (`en` -> `en_US`,
    /// `pt-BR` -> `pt_BR`, `zh-Hant-TW` -> `zh_TW`, ...). A locale in neither is sent with
    /// `-` turned into `_`.
    #[serde(default)]
    pub languages: BTreeMap<String, String>,
    /// The token Meta's webhook subscription handshake (`hub.verify_token`) must present.
    pub verify_token: Option<Secret>,
    /// The Meta app's secret, which signs its webhooks (`X-Hub-Signature-256`). Without it
    /// status webhooks are refused.
    pub app_secret: Option<Secret>,
}

impl WhatsappCloudConfig {
    fn default_base_url() -> String {
        "https://graph.facebook.com".into()
    }
    fn default_api_version() -> String {
        "v21.0".into()
    }
    fn default_copy_code_button() -> bool {
        true
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpJsonConfig {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// JSON body; string values may use {{to}}, {{message}}, {{from}}, {{channel}},
    /// {{locale}}, {{otp_id}} and {{pin}}.
    pub body: serde_json::Value,
    /// JSON pointer to the provider's message id in a successful answer (e.g. `/id`).
    pub message_id_pointer: Option<String>,
    /// How the provider's delivery receipts read; without it, receipts are refused.
    pub receipt: Option<HttpJsonReceiptConfig>,
}

/// A generic JSON receipt: where its fields are, what its statuses mean, how it is signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonReceiptConfig {
    /// JSON pointers into the receipt body.
    pub message_id_pointer: String,
    pub status_pointer: String,
    pub error_code_pointer: Option<String>,
    /// The provider's status -> ours (`queued`, `sent`, `delivered`, `read`,
    /// `undelivered`, `failed`). A status not listed is acknowledged and ignored.
    pub statuses: BTreeMap<String, String>,
    /// The header holding the hex HMAC-SHA256 of the raw body (a `sha256=` prefix is allowed).
    pub signature_header: String,
    /// The shared HMAC key (at least 16 bytes).
    pub secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileConfig {
    pub path: std::path::PathBuf,
}

impl Config {
    /// Reads defaults, then `file` if given, then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The layered sources before extraction; tests merge overrides onto it.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed("OTP_").split("__").ignore(&["config"]))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        in_range("database.max_connections", self.database.max_connections, 1..=200)?;
        in_range("amqp.prefetch", self.amqp.prefetch, 1..=10_000)?;
        in_range("amqp.max_body_bytes", self.amqp.max_body_bytes, 1024..=1_048_576)?;
        in_range("amqp.max_header_bytes", self.amqp.max_header_bytes, 1024..=1_048_576)?;
        not_blank("amqp.send_queue", &self.amqp.send_queue)?;
        not_blank("amqp.dead_letter_queue", &self.amqp.dead_letter_queue)?;
        in_range("worker.lease_seconds", self.worker.lease_seconds, 5..=3600)?;
        in_range("worker.poll_interval_ms", self.worker.poll_interval_ms, 50..=60_000)?;
        in_range(
            "worker.scheduler_concurrency",
            self.worker.scheduler_concurrency,
            1..=1000,
        )?;
        in_range(
            "worker.shutdown_grace_seconds",
            self.worker.shutdown_grace_seconds,
            1..=600,
        )?;
        in_range("worker.app_cache_seconds", self.worker.app_cache_seconds, 0..=3600)?;
        self.validate_delivery()?;
        self.validate_callbacks()?;
        in_range("sweeper.interval_ms", self.sweeper.interval_ms, 100..=3_600_000)?;
        in_range("sweeper.retention_days", self.sweeper.retention_days, 1..=3650)?;
        in_range(
            "sweeper.prune_interval_seconds",
            self.sweeper.prune_interval_seconds,
            60..=604_800,
        )?;
        self.validate_limits_and_api()?;
        self.validate_pin_keys()?;
        self.validate_secrets()?;
        self.validate_receipts()?;
        in_range("console.session_minutes", self.console.session_minutes, 5..=1440)?;
        self.fraud.validate()?;
        self.validate_routing()
    }

    fn validate_delivery(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
        in_range("delivery.timeout_ms", d.timeout_ms, 100..=60_000)?;
        in_range("delivery.quick_retries", d.quick_retries, 0..=5)?;
        in_range(
            "delivery.quick_retry_min_delay_ms",
            d.quick_retry_min_delay_ms,
            10..=10_000,
        )?;
        in_range(
            "delivery.quick_retry_max_delay_ms",
            d.quick_retry_max_delay_ms,
            d.quick_retry_min_delay_ms..=10_000,
        )?;
        in_range(
            "delivery.retry_schedule_seconds (entries)",
            d.retry_schedule_seconds.len(),
            1..=20,
        )?;
        for delay in &d.retry_schedule_seconds {
            in_range("delivery.retry_schedule_seconds", *delay, 1..=3600)?;
        }
        // A crashed delivery is taken over after the lease, so the lease has to outlast
        // every request and pause of one round or two processes would send at once.
        // backon's jitter adds up to the pause again, hence twice the longest pause.
        let round_ms =
            (d.quick_retries as u64 + 1) * d.timeout_ms + d.quick_retries as u64 * 2 * d.quick_retry_max_delay_ms;
        if round_ms >= self.worker.lease_seconds * 1000 {
            return Err(invalid(
                "worker.lease_seconds",
                format!("must exceed one delivery round ({round_ms} ms of requests and pauses)"),
            ));
        }
        Ok(())
    }

    fn validate_callbacks(&self) -> Result<(), ConfigError> {
        let c = &self.callbacks;
        in_range("callbacks.timeout_seconds", c.timeout_seconds, 1..=60)?;
        in_range("callbacks.max_response_bytes", c.max_response_bytes, 0..=1_048_576)?;
        in_range(
            "callbacks.retry_schedule_seconds (entries)",
            c.retry_schedule_seconds.len(),
            0..=20,
        )?;
        for delay in &c.retry_schedule_seconds {
            in_range("callbacks.retry_schedule_seconds", *delay, 1..=86_400)?;
        }
        in_range("callbacks.concurrency", c.concurrency, 1..=10_000)?;
        in_range("callbacks.per_destination", c.per_destination, 1..=c.concurrency)?;
        in_range("callbacks.per_app", c.per_app, 1..=10_000)?;
        in_range("callbacks.poll_interval_ms", c.poll_interval_ms, 50..=60_000)?;
        in_range("callbacks.order_wait_seconds", c.order_wait_seconds, 0..=86_400)?;
        // Another dispatcher takes a callback over when its lease lapses, so the lease must
        // outlast the request and the wait for its outcome to be written, or slow receivers
        // would get events twice.
        in_range("callbacks.lease_seconds", c.lease_seconds, c.timeout_seconds + 5..=3600)
    }

    fn validate_limits_and_api(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        for (name, limit) in [
            ("send_per_phone", limits.send_per_phone),
            ("send_per_phone_all_apps", limits.send_per_phone_all_apps),
            ("send_per_app", limits.send_per_app),
            ("send_per_country", limits.send_per_country),
            ("verify_per_app", limits.verify_per_app),
            ("verify_failures_per_phone", limits.verify_failures_per_phone),
            ("rejections_per_app", limits.rejections_per_app),
        ] {
            in_range(&format!("limits.{name}.max"), limit.max, 1..=1_000_000)?;
            in_range(
                &format!("limits.{name}.window_seconds"),
                limit.window_seconds,
                1..=86_400,
            )?;
        }
        self.api
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| invalid("api.listen", format!("must be an address such as 127.0.0.1:8080 ({e})")))?;
        in_range("api.max_body_bytes", self.api.max_body_bytes, 1024..=1_048_576)?;
        in_range("api.request_timeout_seconds", self.api.request_timeout_seconds, 1..=300)?;
        in_range("api.max_resends", self.api.max_resends, 0..=10)?;
        in_range("receipts.max_in_flight", self.receipts.max_in_flight, 1..=10_000)
    }

    fn validate_pin_keys(&self) -> Result<(), ConfigError> {
        in_range("pin.min_length", self.pin.min_length, 4..=6)?;
        for (id, key) in &self.pin.keys {
            decode_pin_key(key.expose()).map_err(|reason| invalid(&format!("pin.keys.{id}"), reason.to_string()))?;
        }
        Ok(())
    }

    fn validate_secrets(&self) -> Result<(), ConfigError> {
        for (id, key) in &self.secrets.keys {
            if decode_sealing_key(key.expose()).is_none() {
                return Err(invalid(
                    &format!("secrets.keys.{id}"),
                    "must be 32 bytes as 64 hex digits".into(),
                ));
            }
            if id.contains(':') || id.is_empty() {
                return Err(invalid(
                    &format!("secrets.keys.{id}"),
                    "a key id may not contain `:`".into(),
                ));
            }
        }
        let active = &self.secrets.active_key;
        if !active.is_empty() && !self.secrets.keys.contains_key(active) {
            return Err(invalid(
                "secrets.active_key",
                format!("names key `{active}`, which is not under [secrets.keys]"),
            ));
        }
        Ok(())
    }

    fn validate_receipts(&self) -> Result<(), ConfigError> {
        let public = &self.receipts.public_url;
        if !public.is_empty() {
            let parsed =
                url::Url::parse(public).map_err(|e| invalid("receipts.public_url", format!("must be a URL ({e})")))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(invalid(
                    "receipts.public_url",
                    "must be an http(s) URL without query or fragment".into(),
                ));
            }
        }
        // A receipt's proof is only as good as its key: an empty one (a variable set but
        // empty) would let anyone sign.
        let key = |field: String, value: &Secret, min: usize| {
            if value.expose().len() < min {
                return Err(invalid(&field, format!("must be at least {min} bytes")));
            }
            Ok(())
        };
        for (name, provider) in &self.providers {
            match provider {
                ProviderConfig::Twilio(t) => key(format!("providers.{name}.auth_token"), &t.auth_token, 16)?,
                ProviderConfig::WhatsappCloud(w) => {
                    if let Some(secret) = &w.app_secret {
                        key(format!("providers.{name}.app_secret"), secret, 16)?;
                    }
                    if let Some(token) = &w.verify_token {
                        key(format!("providers.{name}.verify_token"), token, 8)?;
                    }
                }
                ProviderConfig::Xoxzo(x) => {
                    key(format!("providers.{name}.auth_token"), &x.auth_token, 1)?;
                    in_range(
                        &format!("providers.{name}.poll_schedule_seconds (entries)"),
                        x.poll_schedule_seconds.len(),
                        0..=20,
                    )?;
                    for delay in &x.poll_schedule_seconds {
                        in_range(&format!("providers.{name}.poll_schedule_seconds"), *delay, 1..=3600)?;
                    }
                    in_range(
                        &format!("providers.{name}.poll_deadline_seconds"),
                        x.poll_deadline_seconds,
                        1..=604_800,
                    )?;
                    if x.callback && public.is_empty() {
                        return Err(invalid(
                            &format!("providers.{name}.callback"),
                            "needs receipts.public_url".into(),
                        ));
                    }
                }
                ProviderConfig::HttpJson(h) => {
                    if let Some(r) = &h.receipt {
                        if r.secret.expose().len() < 16 {
                            return Err(invalid(
                                &format!("providers.{name}.receipt.secret"),
                                "must be at least 16 bytes".into(),
                            ));
                        }
                        for (theirs, ours) in &r.statuses {
                            if !RECEIPT_STATUSES.contains(&ours.as_str()) {
                                return Err(invalid(
                                    &format!("providers.{name}.receipt.statuses.{theirs}"),
                                    "must be one of queued, sent, delivered, read, undelivered, failed".into(),
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate_routing(&self) -> Result<(), ConfigError> {
        for (channel, name) in &self.routing {
            if !self.providers.contains_key(name) {
                return Err(invalid(
                    &format!("routing.{channel}"),
                    format!("names provider `{name}`, which is not configured under [providers]"),
                ));
            }
        }
        Ok(())
    }

    /// Checks what only the roles that derive PINs need: an active key that exists.
    pub fn require_pin_key(&self) -> Result<(), ConfigError> {
        if self.pin.active_key.is_empty() {
            return Err(invalid(
                "pin.active_key",
                "is empty: set it and add the key under [pin.keys]".into(),
            ));
        }
        if !self.pin.keys.contains_key(&self.pin.active_key) {
            return Err(invalid(
                "pin.active_key",
                format!("names key `{}`, which is not under [pin.keys]", self.pin.active_key),
            ));
        }
        Ok(())
    }
}

/// Why a `[pin.keys]` entry is not usable key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinKeyError {
    #[error("must be hex")]
    NotHex,
    #[error("must be at least 32 bytes (64 hex digits)")]
    TooShort,
}

/// The bytes of a PIN derivation key given as hex; `message::pin` builds its keys from them.
pub fn decode_pin_key(hex_key: &str) -> Result<Vec<u8>, PinKeyError> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| PinKeyError::NotHex)?;
    if bytes.len() < 32 {
        return Err(PinKeyError::TooShort);
    }
    Ok(bytes)
}

/// The bytes of a sealing key given as hex (`[secrets.keys]`): exactly 32.
pub fn decode_sealing_key(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key.trim()).ok()?.try_into().ok()
}

fn in_range<T: PartialOrd + fmt::Display>(key: &str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        key: key.into(),
        value: value.to_string(),
        range: format!("{} to {}", range.start(), range.end()),
    })
}

fn not_blank(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty".into()));
    }
    Ok(())
}

fn invalid(key: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_user_is_read_decoded_from_the_url() {
        let amqp = |url: &str| AmqpConfig {
            url: Secret::new(url),
            ..Config::load(None).expect("defaults").amqp
        };
        assert_eq!(
            amqp("amqp://otp%40svc:pw@127.0.0.1:5672/%2f").user().as_deref(),
            Some("otp@svc")
        );
        assert_eq!(amqp("amqp://127.0.0.1:5672/%2f").user().as_deref(), Some("guest"));
    }
    use figment::providers::Serialized;

    /// Every key of the defaults file, dotted; an empty table counts as a key of its own.
    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) if !inner.is_empty() => keys(&key, inner, out),
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn the_operations_guide_names_every_configuration_key() {
        let guide = include_str!("../../../docs/OPERATIONS.md");
        let defaults: toml::Table = DEFAULTS.parse().expect("the defaults file is TOML");
        let mut all = Vec::new();
        keys("", &defaults, &mut all);
        assert!(all.len() > 40, "{all:?}");
        let missing: Vec<&String> = all.iter().filter(|k| !guide.contains(&format!("`{k}`"))).collect();
        assert!(missing.is_empty(), "docs/OPERATIONS.md does not describe {missing:?}");
    }

    #[test]
    fn the_compose_configuration_is_valid() {
        let figment = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string(include_str!("../../../compose/otp-courier.toml")))
            // docker-compose.yml sets the key through the environment.
            .merge(Serialized::default("pin.keys.compose", "ab".repeat(32)));
        let config = Config::from_figment(figment).expect("compose/otp-courier.toml is valid");
        assert_eq!(config.api.listen, "0.0.0.0:8080");
    }

    #[test]
    fn the_defaults_file_is_a_valid_configuration() {
        let config = Config::from_figment(Figment::from(Toml::string(DEFAULTS))).expect("defaults load");
        assert_eq!(config.amqp.send_queue, "otp.send");
        assert_eq!(config.amqp.max_body_bytes, 65536);
    }

    #[test]
    fn an_out_of_range_value_names_the_key_and_the_range() {
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Serialized::default("amqp.prefetch", 0));
        let error = Config::from_figment(figment)
            .expect_err("prefetch 0 is refused")
            .to_string();
        assert!(error.contains("amqp.prefetch"), "{error}");
        assert!(error.contains("1 to 10000"), "{error}");
    }

    #[test]
    fn a_route_to_an_unknown_provider_is_refused() {
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Serialized::default("routing.sms", "nowhere"));
        let error = Config::from_figment(figment).expect_err("unknown provider").to_string();
        assert!(error.contains("routing.sms") && error.contains("nowhere"), "{error}");
    }

    #[test]
    fn a_short_pin_key_is_refused() {
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Serialized::default("pin.keys.k1", "abcd"));
        let error = Config::from_figment(figment).expect_err("short key").to_string();
        assert!(error.contains("pin.keys.k1"), "{error}");
    }

    #[test]
    fn a_lease_shorter_than_a_delivery_round_is_refused() {
        let figment = Figment::from(Toml::string(DEFAULTS))
            .merge(Serialized::default("worker.lease_seconds", 10))
            .merge(Serialized::default("delivery.timeout_ms", 9000));
        let error = Config::from_figment(figment).expect_err("lease too short").to_string();
        assert!(error.contains("worker.lease_seconds"), "{error}");
    }
}
