//! The `otp-courier` command line: one binary, a subcommand per role or task.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use clap::{Parser, Subcommand};
use lapin::BasicProperties;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::apps::{self, NewApp};
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::pin::PinKeys;
use crate::provider::Providers;
use crate::{amqp, db, telemetry, Worker};

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
    /// Apply database migrations and exit.
    Migrate,
    /// Manage apps (tenants).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Publish a send job to the send queue (with a publisher confirm), as a producer would.
    Enqueue(EnqueueArgs),
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app.
    Create(Box<CreateAppArgs>),
    /// List apps.
    List,
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
            run_worker(config).await
        }
        Command::Worker => run_worker(config).await,
        Command::Migrate => migrate(&config).await,
        Command::Apps(AppsCommand::Create(args)) => create_app(&config, *args).await,
        Command::Apps(AppsCommand::List) => list_apps(&config).await,
        Command::Enqueue(args) => enqueue(&config, args).await,
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

/// Builds the worker from the configuration.
pub fn build_worker(config: Arc<Config>) -> anyhow::Result<Worker> {
    config.require_pin_key()?;
    let pool = db::pool(&config.database)?;
    let providers = Providers::from_config(&config.providers, config.delivery.timeout())?;
    let keys = PinKeys::from_config(&config.pin)?;
    let deliverer = Deliverer::new(pool, providers, keys, config.delivery.clone(), config.worker.lease());
    Ok(Worker::new(config, deliverer))
}

async fn run_worker(config: Arc<Config>) -> anyhow::Result<()> {
    let worker = build_worker(config)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    worker.run(shutdown).await;
    Ok(())
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
    };
    apps::create(&pool, &app).await?;
    println!("created app {}", app.id);
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
