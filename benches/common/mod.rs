//! What the benchmarks share: a scratch database, a closed-loop load driver, percentiles.

#![allow(dead_code, reason = "each benchmark uses a different part")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

pub struct Run {
    pub completed: usize,
    pub seconds: f64,
    pub latencies: Vec<Duration>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds
    }
    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A freshly created, migrated database `name`; returns (admin pool, its URL, a pool on it).
pub async fn scratch_database(name: &str, connections: u32) -> anyhow::Result<(PgPool, url::Url, PgPool)> {
    let server =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let mut url = url::Url::parse(&server)?;
    url.set_path("postgres");
    let admin = PgPool::connect(url.as_str()).await?;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("create database {name}")).execute(&admin).await?;
    url.set_path(name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(url.as_str())
        .await?;
    otp_courier::platform::db::migrate(&pool).await?;
    Ok((admin, url, pool))
}

/// Drops what `scratch_database` made.
pub async fn drop_database(admin: &PgPool, pool: PgPool, name: &str) -> anyhow::Result<()> {
    pool.close().await;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(admin)
        .await?;
    Ok(())
}

/// Starts the real binary, `otp-courier serve`, with `config` (TOML) written to `dir`, its
/// output to `dir/serve.log`; killed when dropped.
pub fn spawn_serve(dir: &std::path::Path, config: &str) -> anyhow::Result<tokio::process::Child> {
    let path = dir.join("otp-courier.toml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    // `BENCH_BIN`: another build of the binary (or a wrapper that execs one), for an A/B
    // of two builds in alternating runs without rebuilding between them.
    let bin = std::env::var_os("BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_otp-courier").into());
    Ok(tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// Runs `work(index)` from `clients` tasks until `limit` passes; counts successes.
pub async fn drive<F, Fut>(clients: usize, limit: Duration, total: usize, work: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (work, next) = (work.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < limit {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let begun = Instant::now();
                work(index).await?;
                latencies.push(begun.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        next.load(Ordering::Relaxed) < total,
        "ran out of prepared items: raise the count or lower BENCH_SECONDS"
    );
    Ok(Run {
        completed: latencies.len(),
        seconds,
        latencies,
    })
}
