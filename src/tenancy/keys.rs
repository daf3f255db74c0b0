//! API credentials and webhook signing secrets.
//!
//! An API key is an id shown in clear (`ak_…`) and a secret (`sk_…`) of 32 random bytes,
//! stored only as its SHA-256: a fast hash suffices for secrets with that much entropy.
//! Secrets are printed once, when issued.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::domain::AppId;
use crate::tenancy::sealing::{SealError, Sealer};

/// Who is calling the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    App(AppId),
    /// An operator, by API key id (recorded with what it does).
    Operator(String),
}

impl Caller {
    /// The app whose OTPs the caller may see; `None` for an operator, who sees all.
    pub fn app_filter(&self) -> Option<&str> {
        match self {
            Caller::App(app) => Some(app.as_str()),
            Caller::Operator(_) => None,
        }
    }

    /// The app a read covers: an app's own, always; for an operator the one it asked for,
    /// or every app (`None`).
    pub fn scope(&self, requested: Option<String>) -> Option<String> {
        match self {
            Caller::App(app) => Some(app.as_str().to_string()),
            Caller::Operator(_) => requested,
        }
    }
}

/// A freshly issued credential; the secret exists nowhere else.
#[derive(Debug)]
pub struct IssuedKey {
    pub key_id: String,
    pub secret: String,
}

fn random(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Issues a key for `app`, or an operator key when `app` is `None`.
pub async fn issue(conn: &mut PgConnection, app: Option<&AppId>) -> Result<IssuedKey, sqlx::Error> {
    let mut id = [0u8; 12];
    rand::rng().fill_bytes(&mut id);
    let key = IssuedKey {
        key_id: format!("ak_{}", hex::encode(id)),
        secret: random("sk_", 32),
    };
    sqlx::query!(
        "insert into api_keys (id, app_id, role, secret_sha256) values ($1, $2, $3, $4)",
        key.key_id,
        app.map(AppId::as_str),
        if app.is_some() { "app" } else { "operator" },
        digest(&key.secret),
    )
    .execute(conn)
    .await?;
    Ok(key)
}

/// Issues a new key for the app and revokes its others once `grace` has passed (at once
/// without one), in one transaction, so callers can move to the new key without a gap.
pub async fn rotate(pool: &PgPool, app: &AppId, grace: Option<time::Duration>) -> Result<IssuedKey, sqlx::Error> {
    let until = OffsetDateTime::now_utc() + grace.unwrap_or(time::Duration::ZERO);
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "update api_keys set revoked_at = $2 where app_id = $1 and (revoked_at is null or revoked_at > $2)",
        app.as_str(),
        until,
    )
    .execute(&mut *tx)
    .await?;
    let key = issue(&mut tx, Some(app)).await?;
    tx.commit().await?;
    Ok(key)
}

/// An operator key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorKey {
    pub key_id: String,
    pub created_at: OffsetDateTime,
    /// When it stops (or stopped) working; `None`: it has not been revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Every operator key, newest first.
pub async fn operator_keys(pool: &PgPool) -> Result<Vec<OperatorKey>, sqlx::Error> {
    sqlx::query_as!(
        OperatorKey,
        "select id as key_id, created_at, revoked_at from api_keys where role = 'operator' order by created_at desc"
    )
    .fetch_all(pool)
    .await
}

/// Revokes an operator key at once; `false` when there is no such operator key still working.
pub async fn revoke_operator_key(pool: &PgPool, key_id: &str) -> Result<bool, sqlx::Error> {
    revoke_operator_key_at(&mut *pool.acquire().await?, key_id, OffsetDateTime::now_utc()).await
}

/// Revokes a working operator key as of `until` (a revocation already due sooner stays);
/// `false` when there is no such key.
async fn revoke_operator_key_at(
    conn: &mut PgConnection,
    key_id: &str,
    until: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query!(
        "update api_keys set revoked_at = least(coalesce(revoked_at, $2), $2)
         where id = $1 and role = 'operator' and (revoked_at is null or revoked_at > now())",
        key_id,
        until,
    )
    .execute(conn)
    .await?;
    Ok(revoked.rows_affected() == 1)
}

/// Issues a new operator key and revokes `key_id` once `grace` has passed; `None` when
/// `key_id` is no operator key still working.
pub async fn rotate_operator_key(
    pool: &PgPool,
    key_id: &str,
    grace: Option<time::Duration>,
) -> Result<Option<IssuedKey>, sqlx::Error> {
    let until = OffsetDateTime::now_utc() + grace.unwrap_or(time::Duration::ZERO);
    let mut tx = pool.begin().await?;
    if !revoke_operator_key_at(&mut tx, key_id, until).await? {
        return Ok(None);
    }
    let key = issue(&mut tx, None).await?;
    tx.commit().await?;
    Ok(Some(key))
}

/// The caller a key id and secret belong to, if they match an active key.
pub async fn authenticate(pool: &PgPool, key_id: &str, secret: &str) -> Result<Option<Caller>, sqlx::Error> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if key_id.len() > 64 || secret.len() > 128 || !printable(key_id) || !printable(secret) {
        return Ok(None);
    }
    let row = sqlx::query!(
        "select app_id, secret_sha256 from api_keys where id = $1 and (revoked_at is null or revoked_at > now())",
        key_id
    )
    .fetch_optional(pool)
    .await?;
    // Hash even when the key is unknown, so timing does not tell which key ids exist.
    let presented = digest(secret);
    let Some(row) = row else { return Ok(None) };
    if !bool::from(presented.ct_eq(&row.secret_sha256)) {
        return Ok(None);
    }
    Ok(Some(match row.app_id {
        Some(app) => Caller::App(AppId::parse(&app).map_err(|e| sqlx::Error::Decode(e.into()))?),
        None => Caller::Operator(key_id.to_string()),
    }))
}

/// A new webhook secret for `app` (Standard Webhooks `whsec_` + base64 of 32 bytes), stored
/// sealed by `sealer`. With a grace period, the app's current secrets keep signing until it
/// ends; without, they stop now. Returns the secret in clear, to be shown once.
pub async fn rotate_webhook_secret(
    conn: &mut PgConnection,
    sealer: &Sealer,
    app: &AppId,
    grace: Option<time::Duration>,
) -> Result<String, sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let until = OffsetDateTime::now_utc() + grace.unwrap_or(time::Duration::ZERO);
    sqlx::query!(
        "update webhook_secrets set expires_at = $2 where app_id = $1 and (expires_at is null or expires_at > $2)",
        app.as_str(),
        until,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "insert into webhook_secrets (app_id, secret) values ($1, $2)",
        app.as_str(),
        sealer.seal(app.as_str(), &secret),
    )
    .execute(&mut *conn)
    .await?;
    Ok(secret)
}

/// Why the secrets of an app cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sealed(#[from] SealError),
}

/// The secrets that sign the app's callbacks now, newest first, opened.
pub async fn webhook_secrets(pool: &PgPool, sealer: &Sealer, app: &str) -> Result<Vec<String>, SecretsError> {
    let stored = sqlx::query_scalar!(
        "select secret from webhook_secrets where app_id = $1 and (expires_at is null or expires_at > now())
         order by id desc",
        app
    )
    .fetch_all(pool)
    .await?;
    Ok(stored.iter().map(|s| sealer.open(app, s)).collect::<Result<_, _>>()?)
}

/// Seals every webhook secret not yet sealed under the active key (those in clear and those
/// under an older key), in one transaction; returns how many it sealed. With no active key
/// it does nothing: it never writes a secret back in clear.
pub async fn reseal_webhook_secrets(pool: &PgPool, sealer: &Sealer) -> Result<u64, SecretsError> {
    if !sealer.is_active() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!("select id, app_id, secret from webhook_secrets order by id for update")
        .fetch_all(&mut *tx)
        .await?;
    let mut sealed = 0;
    for row in rows.iter().filter(|r| !sealer.is_current(&r.secret)) {
        let secret = sealer.open(&row.app_id, &row.secret)?;
        sqlx::query!(
            "update webhook_secrets set secret = $2 where id = $1",
            row.id,
            sealer.seal(&row.app_id, &secret)
        )
        .execute(&mut *tx)
        .await?;
        sealed += 1;
    }
    tx.commit().await?;
    Ok(sealed)
}
