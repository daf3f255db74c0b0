//! Callback delivery rate to a local receiver, against the machine's two ceilings for the
//! same work, in one run: `cargo bench --bench callbacks`.
//!
//! - HTTP ceiling: plain reqwest clients POSTing the same body to the same receiver, with
//!   nothing stored.
//! - Database ceiling: plain sqlx clients doing the least a delivered callback must write
//!   (mark the event delivered, insert its attempt record: one transaction per event).
//! - otp-courier: the real dispatcher (claim, sign, POST through the SSRF guard, fenced
//!   completion) draining a backlog of pending events, with the default configuration. It
//!   writes outcomes in batches, so it can pass the database ceiling's one-per-event rate.
//!
//! Receiver, load and PostgreSQL share the machine's cores.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use otp_courier::callbacks::dispatcher::Dispatcher;
use otp_courier::domain::AppId;
use otp_courier::platform::config::Config;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::{drive, env_or, Run};

const DATABASE: &str = "otp_courier_bench_callbacks";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let events = env_or("BENCH_EVENTS", 20_000) as usize;
    let (admin, url, pool) = common::scratch_database(DATABASE, 80).await?;
    let config = Config::from_figment(
        Figment::from(Toml::string(otp_courier::platform::config::DEFAULTS)).merge(Serialized::defaults(json!({
            "database": {"url": url.as_str()},
            "callbacks": {"allow_http": true, "allow_networks": ["127.0.0.1/32"]},
            "log": {"filter": "warn"},
        }))),
    )?;
    let clients = config.callbacks.concurrency;
    otp_courier::tenancy::apps::create(
        &pool,
        &otp_courier::tenancy::apps::NewApp {
            id: "bench".into(),
            name: "bench".into(),
            ..Default::default()
        },
    )
    .await?;
    let app = AppId::parse("bench").map_err(anyhow::Error::msg)?;
    let sealer = otp_courier::tenancy::sealing::Sealer::from_config(&config.secrets);
    otp_courier::tenancy::keys::rotate_webhook_secret(&mut *pool.acquire().await?, &sealer, &app, None).await?;
    let (receiver, received) = start_receiver().await?;
    let payload = sample_payload();

    println!("database ceiling: mark delivered + attempt record, {clients} clients, {seconds} s");
    // Enough rows that the time limit, not the supply, ends the run.
    let ids = insert_events(&pool, &receiver, &payload, 200_000, "none").await?;
    let database = raw_completions(&pool, ids, clients, Duration::from_secs(seconds)).await?;

    println!("HTTP ceiling: unsigned POSTs of the same body, {clients} clients, {seconds} s");
    let http = raw_posts(&receiver, &payload, clients, Duration::from_secs(seconds)).await?;

    println!("otp-courier: dispatcher draining {events} pending events (defaults: concurrency {clients}, per destination {})",
        config.callbacks.per_destination);
    insert_events(&pool, &receiver, &payload, events, "pending").await?;
    let before = received.load(Ordering::Relaxed);
    let ours = dispatch(&config, &pool, &received, events).await?;
    let posted = received.load(Ordering::Relaxed) - before;
    anyhow::ensure!(posted >= events, "the receiver saw {posted} of {events} callbacks");

    println!();
    println!("| measure | callbacks/s |");
    println!("|---|---|");
    println!(
        "| database ceiling (1 transaction per event, no HTTP) | {:.0} |",
        database.rate()
    );
    println!("| HTTP ceiling (POST, nothing stored) | {:.0} |", http.rate());
    println!("| otp-courier dispatcher | {ours:.0} |");
    println!(
        "\nratio otp-courier / database ceiling: {:.2}; / HTTP ceiling: {:.3}",
        ours / database.rate(),
        ours / http.rate()
    );
    let result = json!({
        "events": events, "clients": clients, "seconds": seconds,
        "database_ceiling_per_second": database.rate(), "http_ceiling_per_second": http.rate(),
        "dispatcher_per_second": ours, "ratio_to_database": ours / database.rate(),
        "ratio_to_http": ours / http.rate(), "duplicates": posted - events,
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/callbacks.json", serde_json::to_vec_pretty(&result)?)?;
    println!("written to target/bench/callbacks.json");
    common::drop_database(&admin, pool, DATABASE).await
}

/// A callback body of the size a real `otp.sent` has.
fn sample_payload() -> Value {
    json!({"type": "otp.sent", "timestamp": "2026-11-22T10:00:00Z", "data": {
        "otpId": "otp_0193b1c4a5e67f0a8b9c0d1e2f3a4b5c", "appId": "bench", "requestId": "signup-81723",
        "phoneNumber": "+14155550123", "channel": "sms", "status": "pending", "delivery": "sent",
        "locale": "en", "parts": 1, "attempts": 0, "maxAttempts": 5, "expiresAt": "2026-11-22T10:05:00Z",
        "metadata": {"userId": "u-1827", "flow": "login"}}})
}

/// A receiver that answers every POST 204 and counts them; returns (URL, count).
async fn start_receiver() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { StatusCode::NO_CONTENT }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, count))
}

async fn insert_events(
    pool: &PgPool,
    url: &str,
    payload: &Value,
    n: usize,
    state: &str,
) -> anyhow::Result<Arc<Vec<Uuid>>> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(10_000) {
        sqlx::query(
            "insert into outbox (id, app_id, event_type, callback_url, payload, state)
             select id, 'bench', 'otp.sent', $2, $3, $4 from unnest($1::uuid[]) as id",
        )
        .bind(chunk)
        .bind(url)
        .bind(payload)
        .bind(state)
        .execute(pool)
        .await?;
    }
    Ok(Arc::new(ids))
}

async fn raw_completions(pool: &PgPool, ids: Arc<Vec<Uuid>>, clients: usize, limit: Duration) -> anyhow::Result<Run> {
    let pool = pool.clone();
    let total = ids.len();
    drive(clients, limit, total, move |i| {
        let (pool, id) = (pool.clone(), ids[i]);
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query("update outbox set state = 'delivered', attempts = 1, last_status = 204, delivered_at = now() where id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("insert into callback_attempts (event_id, attempt, started_at, http_status, latency_ms) values ($1, 1, now(), 204, 1)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}

async fn raw_posts(url: &str, payload: &Value, clients: usize, limit: Duration) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let (url, body) = (url.to_string(), serde_json::to_vec(payload)?);
    drive(clients, limit, usize::MAX, move |_| {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 204, "receiver answered {}", response.status());
            Ok(())
        }
    })
    .await
}

/// Runs the dispatcher until the receiver has `n` more callbacks and no event is pending;
/// returns events per second. It watches the receiver's count rather than counting rows,
/// so its own polling adds no table scans to the database it measures.
async fn dispatch(config: &Config, pool: &PgPool, received: &AtomicUsize, n: usize) -> anyhow::Result<f64> {
    let target = received.load(Ordering::Relaxed) + n;
    // The pool `serve` gives the dispatcher.
    let dispatcher = Dispatcher::new(
        otp_courier::platform::db::batch_pool(&config.database)?,
        otp_courier::callbacks::webhook::Sender::new(&config.callbacks)?,
        config.callbacks.clone(),
        otp_courier::tenancy::sealing::Sealer::from_config(&config.secrets),
    );
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(dispatcher.run(shutdown.clone(), Duration::from_secs(5)));
    let pending = || async {
        sqlx::query_scalar::<_, bool>("select exists (select 1 from outbox where state = 'pending')")
            .fetch_one(pool)
            .await
    };
    while received.load(Ordering::Relaxed) < target || pending().await? {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not drained in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await?;
    Ok(rate)
}
