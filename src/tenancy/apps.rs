//! Apps (tenants): who may send, and the defaults their jobs fall back on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use crate::domain::{AppId, CallbackUrl, Channel, Sender, TemplateSet, Ttl, Workflow};
use crate::message::locale::Locale;
use crate::message::template::Template;
use crate::platform::batch::{Batch, BatchError, Batcher};
use crate::platform::config::{Mode, Rule};

/// An app as the worker uses it.
#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    pub name: String,
    pub default_from: Option<Sender>,
    pub templates: TemplateSet,
    /// Templates for calls (`{{pin_spoken}}` reads the code digit by digit).
    pub voice_templates: TemplateSet,
    /// Countries calls may go to, within `country_allowlist`; null: that list alone.
    pub voice_country_allowlist: Option<Vec<String>>,
    pub default_locale: Locale,
    pub default_ttl: Option<Ttl>,
    pub callback_url: Option<String>,
    pub routing: BTreeMap<Channel, String>,
    pub broker_user: Option<String>,
    pub country_allowlist: Option<Vec<String>>,
    /// The channel workflow of jobs that bring none.
    pub workflow: Option<Workflow>,
    /// The app's own mode for a fraud-guard rule, over `[fraud]`'s.
    pub fraud_modes: BTreeMap<Rule, Mode>,
}

/// What it takes to create an app. Templates are keyed by BCP-47 tag, `""` for the default.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub id: String,
    pub name: String,
    pub default_from: Option<String>,
    pub templates: BTreeMap<String, String>,
    pub default_locale: Option<String>,
    pub default_ttl_seconds: Option<i64>,
    pub callback_url: Option<String>,
    pub routing: BTreeMap<String, String>,
    pub broker_user: Option<String>,
    pub country_allowlist: Option<Vec<String>>,
    /// Countries calls may go to, within `country_allowlist` (voice pumping costs more than
    /// SMS); null: that list alone.
    pub voice_country_allowlist: Option<Vec<String>>,
    /// A default channel workflow, as a job gives it (`[{"channel": "sms", "timeoutSeconds": 60}, ...]`).
    pub workflow: Option<Value>,
    /// The website Xoxzo-dialect requests name (`https://example.com`).
    pub website: Option<String>,
    /// `standard` (the default) or `smscx`: the body shape of status callbacks.
    pub callback_format: Option<String>,
    /// The app's own mode for a fraud-guard rule, over `[fraud]`'s.
    pub fraud_modes: BTreeMap<Rule, Mode>,
}

/// A website as the Xoxzo dialect names it, reduced to `scheme://host[:port]` in lower case:
/// `https://Example.com/` and `https://example.com` are one website. A bare domain is https.
pub fn normalise_website(website: &str) -> Result<String, &'static str> {
    let website = website.trim();
    let with_scheme = if website.contains("://") {
        website.to_string()
    } else {
        format!("https://{website}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| "must be a URL or a domain name")?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("must name a host")?;
    if !matches!(url.scheme(), "http" | "https") || website.len() > 253 {
        return Err("must be an http(s) URL or a domain name of at most 253 characters");
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
    .to_ascii_lowercase())
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("app `{0}` exists already")]
    Exists(String),
    #[error("stored app `{id}` is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(field: &str, reason: impl ToString) -> AppError {
    AppError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Validates and inserts an app.
#[tracing::instrument(skip_all, fields(app_id = %new.id))]
pub async fn create(pool: &PgPool, new: &NewApp) -> Result<(), AppError> {
    AppId::parse(&new.id).map_err(|e| invalid("id", e))?;
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(invalid("name", "must be 1-200 characters"));
    }
    if let Some(from) = &new.default_from {
        Sender::parse(from).map_err(|e| invalid("default_from", e))?;
    }
    template_sets(&new.templates).map_err(|(key, reason)| invalid(&format!("templates[{key}]"), reason))?;
    let default_locale =
        Locale::parse(new.default_locale.as_deref().unwrap_or("en")).map_err(|e| invalid("default_locale", e))?;
    if let Some(ttl) = new.default_ttl_seconds {
        Ttl::parse(ttl).map_err(|e| invalid("default_ttl_seconds", e))?;
    }
    if let Some(url) = &new.callback_url {
        // Shape only; whether plain http is allowed is decided per job from the configuration.
        CallbackUrl::parse(url, true).map_err(|e| invalid("callback_url", e))?;
    }
    for channel in new.routing.keys() {
        Channel::parse(channel).map_err(|e| invalid("routing", e))?;
    }
    let regions = |field: &str, list: &Option<Vec<String>>| {
        let regions = list
            .as_ref()
            .map(|list| list.iter().map(|r| r.to_ascii_uppercase()).collect::<Vec<_>>());
        if regions
            .iter()
            .flatten()
            .any(|r| r.len() != 2 || !r.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(invalid(field, "entries must be ISO 3166-1 alpha-2 codes such as FR"));
        }
        Ok(regions)
    };
    let voice_regions = regions("voice_country_allowlist", &new.voice_country_allowlist)?;
    let regions = regions("country_allowlist", &new.country_allowlist)?;
    if let Some(workflow) = &new.workflow {
        let workflow = Workflow::parse(workflow).map_err(|e| invalid("workflow", e))?;
        let ttl = new.default_ttl_seconds.unwrap_or(Ttl::DEFAULT.seconds().into());
        if !workflow.fits(u32::try_from(ttl).unwrap_or(0)) {
            return Err(invalid(
                "workflow",
                format!("every step must start within 90% of the default TTL ({ttl} s)"),
            ));
        }
    }
    let website = new
        .website
        .as_deref()
        .map(normalise_website)
        .transpose()
        .map_err(|e| invalid("website", e))?;
    let callback_format = new.callback_format.as_deref().unwrap_or("standard");
    if !["standard", "smscx"].contains(&callback_format) {
        return Err(invalid("callback_format", "must be `standard` or `smscx`"));
    }
    sqlx::query!(
        "insert into apps (id, name, default_from, templates, default_locale, default_ttl_seconds,
                           callback_url, routing, broker_user, country_allowlist, workflow,
                           voice_country_allowlist, website, callback_format, fraud_modes)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        new.id,
        new.name,
        new.default_from,
        serde_json::to_value(&new.templates).unwrap_or_default(),
        default_locale.as_str(),
        new.default_ttl_seconds.map(|t| t as i32),
        new.callback_url,
        serde_json::to_value(&new.routing).unwrap_or_default(),
        new.broker_user,
        regions.as_deref(),
        new.workflow,
        voice_regions.as_deref(),
        website,
        callback_format,
        modes_json(&new.fraud_modes),
    )
    .execute(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("apps_website") => {
            invalid("website", "another app has this website")
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => AppError::Exists(new.id.clone()),
        _ => AppError::Database(e),
    })?;
    Ok(())
}

/// Sets the app's own modes of fraud-guard rules (the others keep theirs), recorded in the
/// operators' audit log as `by`; `false` when there is no such app. Workers see the change
/// within `worker.app_cache_seconds`.
#[tracing::instrument(skip_all, fields(app_id = %id))]
pub async fn set_fraud_modes(
    pool: &PgPool,
    id: &AppId,
    modes: &BTreeMap<Rule, Mode>,
    by: &str,
) -> Result<bool, AppError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query!(
        "update apps set fraud_modes = fraud_modes || $2 where id = $1",
        id.as_str(),
        modes_json(modes)
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query!(
        "insert into operator_actions (action, actor, filters, dry_run, matched, changed, finished_at)
         values ('set-fraud-mode', $1, $2, false, 1, 1, now())",
        by,
        serde_json::json!({"app": id.as_str(), "modes": modes_json(modes)}),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

fn modes_json(modes: &BTreeMap<Rule, Mode>) -> Value {
    Value::Object(
        modes
            .iter()
            .map(|(rule, mode)| (rule.as_str().to_string(), Value::from(mode.as_str())))
            .collect(),
    )
}

/// Loads an app; `None` when there is no such app.
#[tracing::instrument(skip_all, fields(app_id = %id))]
pub async fn load(pool: &PgPool, id: &AppId) -> Result<Option<App>, AppError> {
    let rows = fetch(pool, &[id.as_str().to_string()]).await?;
    rows.into_iter().next().map(AppRow::into_app).transpose()
}

/// Loads the apps of the jobs in flight, one query for many (see [`crate::platform::batch`]). Each
/// answer is the app, `None` where there is no such app, or why the stored app is unreadable.
struct Loads {
    pool: PgPool,
}

impl Batch for Loads {
    type Item = AppId;
    type Output = Result<Option<App>, AppError>;

    async fn run(&self, ids: &[AppId]) -> Result<Vec<Self::Output>, sqlx::Error> {
        let distinct: BTreeSet<String> = ids.iter().map(|id| id.as_str().to_string()).collect();
        let rows = fetch(&self.pool, &distinct.into_iter().collect::<Vec<_>>()).await?;
        let apps: HashMap<String, Result<App, String>> = rows
            .into_iter()
            .map(|row| (row.id.clone(), row.into_app().map_err(|e| e.to_string())))
            .collect();
        Ok(ids
            .iter()
            .map(|id| match apps.get(id.as_str()) {
                None => Ok(None),
                Some(Ok(app)) => Ok(Some(app.clone())),
                Some(Err(reason)) => Err(AppError::Corrupt {
                    id: id.to_string(),
                    reason: reason.clone(),
                }),
            })
            .collect())
    }
}

/// The apps a worker's jobs name: loaded per batch (one query for the jobs in flight), then kept for `ttl`, so a
/// busy app costs one query per `ttl` instead of one per batch. Of an app, otp-courier only
/// ever changes its fraud modes; that, or an edit made in the database directly, reaches
/// each worker within `ttl`.
/// An unknown app is not kept, so a job for an app created a moment later is accepted (as
/// are dead letters requeued once the app exists). Holds at most the apps that exist: one
/// that is gone, or unreadable, is dropped when next looked up.
/// Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    loads: Batcher<Loads>,
    ttl: Duration,
    kept: Arc<Mutex<HashMap<AppId, Kept>>>,
}

/// An app and when it was loaded.
type Kept = (Instant, Arc<App>);

impl Cache {
    /// Starts the batch loader on `pool`; `ttl` zero loads every time. Needs a Tokio runtime.
    pub fn spawn(pool: PgPool, ttl: Duration) -> Self {
        Self {
            loads: Batcher::spawn(Loads { pool }).0,
            ttl,
            kept: Arc::default(),
        }
    }

    /// The app, `None` when there is no such app, or why the stored app is unreadable.
    pub async fn get(&self, id: &AppId) -> Result<Result<Option<Arc<App>>, AppError>, BatchError> {
        if let Some((loaded, app)) = self.kept.lock().expect("app cache lock").get(id) {
            if loaded.elapsed() < self.ttl {
                return Ok(Ok(Some(app.clone())));
            }
        }
        let loaded = Instant::now();
        let app = match self.loads.submit(id.clone()).await? {
            Ok(Some(app)) => Arc::new(app),
            other => {
                self.kept.lock().expect("app cache lock").remove(id);
                return Ok(other.map(|none| none.map(Arc::new)));
            }
        };
        if !self.ttl.is_zero() {
            let mut kept = self.kept.lock().expect("app cache lock");
            kept.insert(id.clone(), (loaded, app.clone()));
        }
        Ok(Ok(Some(app)))
    }
}

/// An `apps` row as stored.
struct AppRow {
    id: String,
    name: String,
    default_from: Option<String>,
    templates: Value,
    default_locale: String,
    default_ttl_seconds: Option<i32>,
    callback_url: Option<String>,
    routing: Value,
    broker_user: Option<String>,
    country_allowlist: Option<Vec<String>>,
    workflow: Option<Value>,
    voice_country_allowlist: Option<Vec<String>>,
    fraud_modes: Value,
}

async fn fetch(pool: &PgPool, ids: &[String]) -> Result<Vec<AppRow>, sqlx::Error> {
    sqlx::query_as!(
        AppRow,
        "select id, name, default_from, templates, default_locale, default_ttl_seconds, callback_url,
                routing, broker_user, country_allowlist, workflow, voice_country_allowlist, fraud_modes
         from apps where id = any($1)",
        ids
    )
    .fetch_all(pool)
    .await
}

impl AppRow {
    fn into_app(self) -> Result<App, AppError> {
        let corrupt = |reason: String| AppError::Corrupt {
            id: self.id.clone(),
            reason,
        };
        let templates: BTreeMap<String, String> =
            serde_json::from_value(self.templates.clone()).map_err(|e| corrupt(e.to_string()))?;
        let routing: BTreeMap<Channel, String> =
            serde_json::from_value(self.routing.clone()).map_err(|e| corrupt(e.to_string()))?;
        let sets = template_sets(&templates).map_err(|(key, reason)| corrupt(format!("template {key}: {reason}")))?;
        Ok(App {
            id: AppId::parse(&self.id).map_err(|e| corrupt(e.into()))?,
            name: self.name.clone(),
            default_from: self
                .default_from
                .as_deref()
                .map(Sender::parse)
                .transpose()
                .map_err(|e| corrupt(e.into()))?,
            templates: sets.0,
            voice_templates: sets.1,
            default_locale: Locale::parse(&self.default_locale).map_err(|e| corrupt(e.into()))?,
            default_ttl: self
                .default_ttl_seconds
                .map(|t| Ttl::parse(t.into()))
                .transpose()
                .map_err(|e| corrupt(e.into()))?,
            callback_url: self.callback_url.clone(),
            routing,
            broker_user: self.broker_user.clone(),
            country_allowlist: self.country_allowlist.clone(),
            voice_country_allowlist: self.voice_country_allowlist.clone(),
            workflow: self
                .workflow
                .as_ref()
                .map(Workflow::parse)
                .transpose()
                .map_err(|e| corrupt(format!("workflow: {e}")))?,
            fraud_modes: serde_json::from_value(self.fraud_modes.clone())
                .map_err(|e| corrupt(format!("fraud_modes: {e}")))?,
        })
    }
}

/// Summaries of every app, for `apps list`.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, String, Value)>, AppError> {
    let rows = sqlx::query!("select id, name, routing from apps order by id")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.name, r.routing)).collect())
}

/// The app's message templates and its voice templates: keys `""` and a BCP-47 tag for
/// messages, `voice` and `voice_<tag>` for calls.
fn template_sets(templates: &BTreeMap<String, String>) -> Result<(TemplateSet, TemplateSet), (String, String)> {
    let (mut messages, mut voice) = (TemplateSet::default(), TemplateSet::default());
    for (key, source) in templates {
        let template = Template::parse(source).map_err(|e| (key.clone(), e.to_string()))?;
        let (set, tag) = match key.strip_prefix("voice") {
            Some(rest) if rest.is_empty() || rest.starts_with('_') => (&mut voice, rest.trim_start_matches('_')),
            _ => (&mut messages, key.as_str()),
        };
        if tag.is_empty() {
            set.default = Some(template);
        } else {
            let locale = Locale::parse(tag).map_err(|e| (key.clone(), e.to_string()))?;
            set.localized.insert(locale, template);
        }
    }
    Ok((messages, voice))
}
