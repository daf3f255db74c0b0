//! The `otp-courier` command line: one binary, a subcommand per role or task.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use clap::{Parser, Subcommand};
use lapin::BasicProperties;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::callbacks::dispatcher::Dispatcher;
use crate::callbacks::webhook;
use crate::domain::AppId;
use crate::message::pin::PinKeys;
use crate::ops::{dlq, replay};
use crate::otp::delivery::Deliverer;
use crate::otp::ratelimit::Counters;
use crate::otp::sweeper::Sweeper;
use crate::platform::config::Config;
use crate::platform::{amqp, db, observability, telemetry};
use crate::provider::Providers;
use crate::tenancy::apps::{self, NewApp};
use crate::tenancy::keys;
use crate::tenancy::sealing::Sealer;
use crate::{api, Worker};

mod fraud;
mod ops;

#[derive(Debug, Parser)]
#[command(name = "otp-courier", version, about = "One-time passwords by SMS and WhatsApp")]
pub struct Cli {
    /// Configuration file, layered over the built-in defaults (env vars win over both).
    #[arg(long, env = "OTP_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then run every role in this process.
    Serve,
    /// Run the worker role: consume send jobs and deliver OTPs.
    Worker,
    /// Run the HTTP API role.
    Api,
    /// Run the dispatcher role: send the outbox's status callbacks.
    Dispatcher,
    /// Run the sweeper role: expire pending OTPs past their TTL, prune rows past retention.
    Sweeper,
    /// Replay what failed: OTP deliveries, or callbacks.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// Inspect the dead-letter queue; requeue or purge what matches.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage apps (tenants).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Publish a send job to the send queue (with a publisher confirm), as a producer would.
    Enqueue(EnqueueArgs),
    /// Operator credentials (cross-app reads, reports, replay).
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// Webhook signing secrets at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The fraud guard: blocks and verdicts.
    #[command(subcommand)]
    Fraud(fraud::FraudCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal every webhook secret under `secrets.active_key`: those in clear and those sealed
    /// under an older key (then that key can be removed).
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Send failed OTPs again: the same code within the TTL, a new code and TTL after it.
    Deliveries(replay::DeliveryFilter),
    /// Send dead callbacks again, with their original event ids.
    Callbacks(replay::CallbackFilter),
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The messages at the head of the queue, left in place.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One message in full, by its position in `list`.
    Show { position: usize },
    /// Publish matching jobs to the send queue again (e.g. after creating a missing app).
    Requeue(dlq::DlqFilter),
    /// Delete matching jobs for good.
    Purge(dlq::DlqFilter),
}

#[derive(Debug, Subcommand)]
pub enum OperatorsCommand {
    /// Issue an operator API key; the secret is printed once.
    CreateKey,
    /// List operator keys: id, created, and when each was or will be revoked (never secrets).
    ListKeys,
    /// Revoke an operator key at once.
    RevokeKey { key_id: String },
    /// Issue a new operator key; the old one keeps working for --grace-hours, then is revoked.
    RotateKey {
        key_id: String,
        #[arg(long, default_value_t = 0)]
        grace_hours: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints its API key, API secret and webhook secret once.
    Create(Box<CreateAppArgs>),
    /// List apps.
    List,
    /// Show an app's settings and key ids (never secrets).
    Show { id: String },
    /// Issue a new API key; the app's others are revoked after --grace-hours (at once by
    /// default). The secret is printed once.
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = 0)]
        grace_hours: i64,
    },
    /// Issue a new webhook signing secret; old ones keep signing for --grace-hours.
    RotateWebhookSecret {
        id: String,
        #[arg(long, default_value_t = 24)]
        grace_hours: i64,
    },
    /// Set the app's own mode of fraud-guard rules: RULE=MODE ... (number_types,
    /// prefix_velocity, conversion; enforce, shadow, off).
    SetFraudMode {
        id: String,
        #[arg(value_parser = fraud::rule_mode, required = true)]
        modes: Vec<(crate::otp::fraud::Rule, crate::otp::fraud::Mode)>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateAppArgs {
    /// App id: 1-64 of A-Z a-z 0-9 _ . -
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Default sender id.
    #[arg(long)]
    pub from: Option<String>,
    /// Default template; must contain {{pin}}.
    #[arg(long)]
    pub template: Option<String>,
    /// A localized template, LANG=TEXT (repeatable): --localized 'fr=Votre code : {{pin}}'
    #[arg(long = "localized", value_parser = key_value)]
    pub localized: Vec<(String, String)>,
    /// Locale recorded when the default template is used.
    #[arg(long)]
    pub locale: Option<String>,
    /// Default OTP lifetime in seconds (60-1800).
    #[arg(long)]
    pub ttl: Option<i64>,
    #[arg(long)]
    pub callback_url: Option<String>,
    /// CHANNEL=PROVIDER (repeatable): --route sms=twilio
    #[arg(long = "route", value_parser = key_value)]
    pub routes: Vec<(String, String)>,
    /// Accept AMQP jobs only with this RabbitMQ user-id property.
    #[arg(long)]
    pub broker_user: Option<String>,
    /// Countries the app may send to, comma-separated ISO codes (FR,BE); default all.
    #[arg(long, value_delimiter = ',')]
    pub countries: Option<Vec<String>>,
    /// Countries calls may go to, comma-separated ISO codes, within --countries; default: --countries.
    #[arg(long, value_delimiter = ',')]
    pub voice_countries: Option<Vec<String>>,
    /// A voice template, LANG=TEXT or just TEXT for the default (repeatable):
    /// --voice 'fr=Votre code est {{pin_spoken}}. Je répète : {{pin_spoken}}.'
    #[arg(long = "voice")]
    pub voice: Vec<String>,
    /// Default channel workflow, as JSON:
    /// '[{"channel":"sms","timeoutSeconds":60},{"channel":"whatsapp"}]'
    #[arg(long)]
    pub workflow: Option<String>,
    /// The website the app's Xoxzo-dialect requests name (https://example.com); one app each.
    #[arg(long)]
    pub website: Option<String>,
    /// Body shape of status callbacks: `standard` or `smscx` (sms.cx's `otp_update`).
    #[arg(long)]
    pub callback_format: Option<String>,
    /// The app's own mode of a fraud-guard rule, RULE=MODE (repeatable): --fraud-mode conversion=shadow
    #[arg(long = "fraud-mode", value_parser = fraud::rule_mode)]
    pub fraud_modes: Vec<(crate::otp::fraud::Rule, crate::otp::fraud::Mode)>,
}

#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub phone: String,
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long)]
    pub language: Option<String>,
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    /// Further job fields as a JSON object, merged into the body.
    #[arg(long)]
    pub extra: Option<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    telemetry::init(&config.log);
    match cli.command {
        Command::Serve => {
            migrate(&config).await?;
            run_roles(config, &Role::ALL).await
        }
        Command::Worker => run_roles(config, &[Role::Worker]).await,
        Command::Api => run_roles(config, &[Role::Api]).await,
        Command::Dispatcher => run_roles(config, &[Role::Dispatcher]).await,
        Command::Sweeper => run_roles(config, &[Role::Sweeper]).await,
        Command::Replay(command) => ops::replay(&config, command).await,
        Command::Dlq(command) => ops::dlq(&config, command).await,
        Command::Migrate => migrate(&config).await,
        Command::Apps(AppsCommand::Create(args)) => create_app(&config, *args).await,
        Command::Apps(AppsCommand::List) => list_apps(&config).await,
        Command::Apps(AppsCommand::Show { id }) => show_app(&config, &id).await,
        Command::Apps(AppsCommand::RotateSecret { id, grace_hours }) => rotate_secret(&config, &id, grace_hours).await,
        Command::Apps(AppsCommand::RotateWebhookSecret { id, grace_hours }) => {
            rotate_webhook_secret(&config, &id, grace_hours).await
        }
        Command::Operators(OperatorsCommand::CreateKey) => create_operator_key(&config).await,
        Command::Operators(OperatorsCommand::ListKeys) => list_operator_keys(&config).await,
        Command::Operators(OperatorsCommand::RevokeKey { key_id }) => revoke_operator_key(&config, &key_id).await,
        Command::Operators(OperatorsCommand::RotateKey { key_id, grace_hours }) => {
            rotate_operator_key(&config, &key_id, grace_hours).await
        }
        Command::Enqueue(args) => enqueue(&config, args).await,
        Command::Secrets(SecretsCommand::Reseal) => reseal(&config).await,
        Command::Fraud(command) => fraud::run(&config, command).await,
        Command::Apps(AppsCommand::SetFraudMode { id, modes }) => fraud::set_modes(&config, &id, modes).await,
    }
}

/// Applies migrations, waiting up to about half a minute for the database to accept connections.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let attempt = || async { db::migrate(&pool).await };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(8),
        )
        .notify(|error, pause| tracing::warn!(%error, retry_in = ?pause, "database not ready for migrations"))
        .await
        .context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// What the roles of one process share, built once: the pools are sized per process (see
/// `db`), not per role.
#[derive(Clone)]
pub struct Resources {
    pool: sqlx::PgPool,
    /// For batch writes and claims (`db::batch_pool`).
    batch_pool: sqlx::PgPool,
    counters: Counters,
    providers: Arc<Providers>,
    keys: PinKeys,
    /// Renders `/metrics`, once the process has installed the Prometheus recorder.
    metrics: Option<PrometheusHandle>,
}

impl Resources {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        config.require_pin_key()?;
        Ok(Self {
            pool: db::pool(&config.database)?,
            batch_pool: db::batch_pool(&config.database)?,
            counters: Counters::new(&config.database)?,
            providers: Arc::new(Providers::from_config(
                &config.providers,
                config.delivery.timeout(),
                Some(config.delivery.proxy.expose()).filter(|p| !p.is_empty()),
                &config.receipts,
            )?),
            keys: PinKeys::from_config(&config.pin)?,
            metrics: None,
        })
    }
}

/// Builds the worker.
pub fn build_worker(config: Arc<Config>, shared: &Resources) -> Worker {
    let deliverer = Deliverer::new(
        shared.pool.clone(),
        shared.batch_pool.clone(),
        shared.providers.clone(),
        shared.keys.clone(),
        &config,
    );
    Worker::new(config, deliverer)
}

/// Builds the HTTP API's state.
pub fn build_api(config: Arc<Config>, shared: &Resources) -> api::AppState {
    let Resources {
        pool,
        counters,
        providers,
        keys,
        metrics,
        ..
    } = shared.clone();
    api::AppState::new(pool, counters, config, keys, providers, metrics)
}

/// Builds the dispatcher.
pub fn build_dispatcher(config: &Config, shared: &Resources) -> anyhow::Result<Dispatcher> {
    let sender = webhook::Sender::new(&config.callbacks).context("building the callback HTTP client")?;
    Ok(Dispatcher::new(
        shared.batch_pool.clone(),
        sender,
        config.callbacks.clone(),
        Sealer::from_config(&config.secrets),
    ))
}

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Worker,
    Api,
    Dispatcher,
    Sweeper,
}

impl Role {
    const ALL: [Role; 4] = [Role::Worker, Role::Api, Role::Dispatcher, Role::Sweeper];
}

/// Runs the chosen roles until SIGTERM or ctrl-c, then lets each drain.
async fn run_roles(config: Arc<Config>, run: &[Role]) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut roles = tokio::task::JoinSet::new();
    let mut shared = Resources::new(&config)?;
    shared.metrics = Some(observability::install().context("installing the metrics recorder")?);
    roles.spawn(observability_sampler(&config, &shared, shutdown.clone()));
    if run.contains(&Role::Worker) {
        let worker = build_worker(config.clone(), &shared);
        let shutdown = shutdown.clone();
        roles.spawn(async move {
            worker.run(shutdown).await;
            Ok(())
        });
    }
    if run.contains(&Role::Dispatcher) {
        let dispatcher = build_dispatcher(&config, &shared)?;
        let (shutdown, grace) = (shutdown.clone(), config.worker.shutdown_grace());
        roles.spawn(async move {
            dispatcher.run(shutdown, grace).await;
            Ok(())
        });
    }
    if run.contains(&Role::Sweeper) {
        let sweeper = Sweeper::new(shared.pool.clone(), config.sweeper.clone());
        let shutdown = shutdown.clone();
        roles.spawn(async move {
            sweeper.run(shutdown).await;
            Ok(())
        });
    }
    if !config.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("binding metrics.listen {}", config.metrics.listen))?;
        let handle = shared.metrics.clone();
        let shutdown = shutdown.clone();
        roles.spawn(async move {
            observability::serve(listener, handle, shutdown)
                .await
                .context("metrics")
        });
    }
    if run.contains(&Role::Api) {
        let state = build_api(config.clone(), &shared);
        let (listener, _) = api::bind(&config)
            .await
            .with_context(|| format!("binding {}", config.api.listen))?;
        let shutdown = shutdown.clone();
        roles.spawn(async move { api::serve(listener, state, shutdown).await.context("HTTP API") });
    }
    while let Some(role) = roles.join_next().await {
        if let Err(error) = role? {
            shutdown.cancel();
            return Err(error);
        }
    }
    Ok(())
}

/// Samples the outbox backlog and the dead-letter queue for `/metrics`.
fn observability_sampler(
    config: &Config,
    shared: &Resources,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = anyhow::Result<()>> {
    let sample = observability::sample(
        shared.pool.clone(),
        config.amqp.clone(),
        Duration::from_secs(15),
        shutdown,
    );
    async move {
        sample.await;
        Ok(())
    }
}

/// Cancels `token` on ctrl-c or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

async fn create_app(config: &Config, args: CreateAppArgs) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let mut templates: BTreeMap<String, String> = args.localized.into_iter().collect();
    if let Some(default) = args.template {
        templates.insert(String::new(), default);
    }
    for voice in args.voice {
        match voice
            .split_once('=')
            .filter(|(tag, _)| !tag.is_empty() && !tag.contains(' '))
        {
            Some((tag, text)) => templates.insert(format!("voice_{tag}"), text.to_string()),
            None => templates.insert("voice".to_string(), voice),
        };
    }
    let app = NewApp {
        name: args.name.unwrap_or_else(|| args.id.clone()),
        id: args.id,
        default_from: args.from,
        templates,
        default_locale: args.locale,
        default_ttl_seconds: args.ttl,
        callback_url: args.callback_url,
        routing: args.routes.into_iter().collect(),
        broker_user: args.broker_user,
        country_allowlist: args.countries,
        voice_country_allowlist: args.voice_countries,
        workflow: args
            .workflow
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .context("--workflow must be JSON")?,
        website: args.website,
        callback_format: args.callback_format,
        fraud_modes: args.fraud_modes.into_iter().collect(),
    };
    apps::create(&pool, &app).await?;
    let id = AppId::parse(&app.id).map_err(anyhow::Error::msg)?;
    let mut tx = pool.begin().await?;
    let key = keys::issue(&mut tx, Some(&id)).await?;
    let webhook = keys::rotate_webhook_secret(&mut tx, &Sealer::from_config(&config.secrets), &id, None).await?;
    tx.commit().await?;
    println!("app            {id}");
    println!("api key        {}", key.key_id);
    println!("api secret     {}", key.secret);
    println!("webhook secret {webhook}");
    println!("(secrets are shown only now)");
    Ok(())
}

async fn show_app(config: &Config, id: &str) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let id = AppId::parse(id).map_err(anyhow::Error::msg)?;
    let app = apps::load(&pool, &id)
        .await?
        .with_context(|| format!("no app `{id}`"))?;
    println!("{app:#?}");
    let keys: Vec<String> =
        sqlx::query_scalar("select id from api_keys where app_id = $1 and (revoked_at is null or revoked_at > now())")
            .bind(id.as_str())
            .fetch_all(&pool)
            .await?;
    println!("active api keys: {}", keys.join(", "));
    println!(
        "signing webhook secrets: {}",
        keys::webhook_secrets(&pool, &Sealer::from_config(&config.secrets), id.as_str())
            .await?
            .len()
    );
    Ok(())
}

/// `--grace-hours` as a duration: 0 to 720 hours.
fn grace(hours: i64) -> anyhow::Result<time::Duration> {
    anyhow::ensure!((0..=720).contains(&hours), "--grace-hours must be between 0 and 720");
    Ok(time::Duration::hours(hours))
}

async fn rotate_secret(config: &Config, id: &str, grace_hours: i64) -> anyhow::Result<()> {
    let grace = grace(grace_hours)?;
    let pool = db::pool(&config.database)?;
    let id = AppId::parse(id).map_err(anyhow::Error::msg)?;
    apps::load(&pool, &id)
        .await?
        .with_context(|| format!("no app `{id}`"))?;
    let key = keys::rotate(&pool, &id, Some(grace)).await?;
    println!(
        "api key    {}\napi secret {}\n(the app's previous keys work for {grace_hours} h more)",
        key.key_id, key.secret
    );
    Ok(())
}

async fn list_operator_keys(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let now = time::OffsetDateTime::now_utc();
    for key in keys::operator_keys(&pool).await? {
        let state = match key.revoked_at {
            None => "active".to_string(),
            Some(at) if at > now => format!("active until {at}"),
            Some(at) => format!("revoked {at}"),
        };
        println!("{}\tcreated {}\t{state}", key.key_id, key.created_at);
    }
    Ok(())
}

async fn revoke_operator_key(config: &Config, key_id: &str) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    anyhow::ensure!(
        keys::revoke_operator_key(&pool, key_id).await?,
        "no working operator key `{key_id}`"
    );
    println!("operator key {key_id} revoked");
    Ok(())
}

async fn rotate_operator_key(config: &Config, key_id: &str, grace_hours: i64) -> anyhow::Result<()> {
    let grace = grace(grace_hours)?;
    let pool = db::pool(&config.database)?;
    let key = keys::rotate_operator_key(&pool, key_id, Some(grace))
        .await?
        .with_context(|| format!("no working operator key `{key_id}`"))?;
    println!(
        "operator key    {}\noperator secret {}\n({key_id} works for {grace_hours} h more; the secret is shown only now)",
        key.key_id, key.secret
    );
    Ok(())
}

async fn rotate_webhook_secret(config: &Config, id: &str, grace_hours: i64) -> anyhow::Result<()> {
    let grace = grace(grace_hours)?;
    let pool = db::pool(&config.database)?;
    let id = AppId::parse(id).map_err(anyhow::Error::msg)?;
    apps::load(&pool, &id)
        .await?
        .with_context(|| format!("no app `{id}`"))?;
    let mut tx = pool.begin().await?;
    let secret = keys::rotate_webhook_secret(&mut tx, &Sealer::from_config(&config.secrets), &id, Some(grace)).await?;
    tx.commit().await?;
    println!("webhook secret {secret}\n(previous secrets keep signing for {grace_hours} h)");
    Ok(())
}

async fn create_operator_key(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let key = keys::issue(&mut *pool.acquire().await?, None).await?;
    println!(
        "operator key    {}\noperator secret {}\n(the secret is shown only now)",
        key.key_id, key.secret
    );
    Ok(())
}

async fn reseal(config: &Config) -> anyhow::Result<()> {
    let sealer = Sealer::from_config(&config.secrets);
    anyhow::ensure!(
        sealer.is_active(),
        "secrets.active_key is empty: configure a key under [secrets.keys] and name it first"
    );
    let pool = db::pool(&config.database)?;
    let sealed = keys::reseal_webhook_secrets(&pool, &sealer).await?;
    println!(
        "{sealed} webhook secrets sealed under key `{}`",
        config.secrets.active_key
    );
    Ok(())
}

async fn list_apps(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    for (id, name, routing) in apps::list(&pool).await? {
        println!("{id}\t{name}\t{routing}");
    }
    Ok(())
}

async fn enqueue(config: &Config, args: EnqueueArgs) -> anyhow::Result<()> {
    let mut body = json!({"appId": args.app, "phoneNumber": args.phone});
    let fields = [
        ("requestId", args.request_id),
        ("language", args.language),
        ("template", args.template),
        ("channel", args.channel),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = Value::String(value);
        }
    }
    if let Some(extra) = args.extra {
        let Value::Object(extra) = serde_json::from_str(&extra).context("--extra must be a JSON object")? else {
            anyhow::bail!("--extra must be a JSON object");
        };
        body.as_object_mut().context("body is an object")?.extend(extra);
    }
    let connection = amqp::connect(&config.amqp, "otp-courier enqueue").await?;
    let channel = amqp::confirm_channel(&connection).await?;
    amqp::declare_queues(&channel, &config.amqp).await?;
    let properties = BasicProperties::default().with_content_type("application/json".into());
    amqp::publish_confirmed(
        &channel,
        &config.amqp.send_queue,
        &serde_json::to_vec(&body)?,
        properties,
    )
    .await?;
    connection.close(200, "bye".into()).await?;
    println!("{body}");
    Ok(())
}
