//! PostgreSQL pool and migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::platform::config::DatabaseConfig;

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A lazily connecting pool: a process starts while the database is down and recovers
/// when it comes back, instead of failing at start.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    lazy_pool(
        config,
        PgPoolOptions::new().max_connections(config.max_connections),
        |options| options.application_name("otp-courier"),
    )
}

/// A pool whose commits do not wait for the WAL flush (`synchronous_commit = off`), for
/// data a crash may lose without harm. Never for OTP state. Its statements are single short
/// upserts, so a quarter of `database.max_connections` serves it.
pub fn relaxed_pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections((config.max_connections / 4).max(1));
    lazy_pool(config, pool, |options| {
        options
            .application_name("otp-courier counters")
            .options([("synchronous_commit", "off")])
    })
}

/// The pool of the batch writers (`crate::platform::batch`) and the dispatcher's claims: statements
/// whose best plan depends on how many rows are in play right now.
///
/// - `plan_cache_mode = force_custom_plan` makes PostgreSQL plan each execution for the
///   table as it stands. A cached generic plan, made while a table was small or its
///   statistics old, reached the rows of a batch through a partial index of every pending
///   event (or every OTP being sent), so each batch cost as much as the whole backlog;
///   planning afresh costs a fraction of a millisecond per batch instead.
/// - No ping before each use: a writer takes a connection per batch, and the round trip
///   cost more than a statement. A connection found dead fails its batch, which the
///   callers retry (a job goes back to the queue, an outcome is recorded again).
///
/// Each writer holds one connection at a time: half of `database.max_connections`, at
/// least 6, serves them.
pub fn batch_pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections((config.max_connections / 2).max(6))
        .test_before_acquire(false);
    lazy_pool(config, pool, |options| {
        options
            .application_name("otp-courier batches")
            .options([("plan_cache_mode", "force_custom_plan")])
    })
}

/// Every pool turns PostgreSQL's JIT compiler off. It compiles a statement whose estimated
/// cost passes `jit_above_cost` afresh on every execution; with a large callback backlog
/// the claim passed it, and compiling took 41% of the machine's CPU (`perf`, 80,000 pending
/// events) for statements that run in a millisecond. Nothing here scans enough rows to gain.
fn lazy_pool(
    config: &DatabaseConfig,
    pool: PgPoolOptions,
    adjust: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.expose().parse()?;
    Ok(pool
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(adjust(options).options([("jit", "off")])))
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database refused a statement for the data it was given: SQLSTATE class 22
/// (data exception) or 23 (integrity constraint violation). The same statement would fail
/// the same way again, so retrying it is pointless.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

/// Whether the database gave the transaction up because its locks met another's: a
/// deadlock (40P01) or a serialization failure (40001). The same work may pass if tried
/// again.
pub fn is_lock_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}
