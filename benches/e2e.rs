//! End to end against the machine's own ceilings, in one run: `cargo bench --bench e2e`.
//!
//! 1. RabbitMQ ceiling: persistent publishes with confirms of a real job's bytes, then a
//!    consumer acking each one (the worker's prefetch), on a scratch queue;
//!    `BENCH_ACK_EVERY=16` acks every 16th with `multiple` instead.
//! 2. PostgreSQL ceiling: one transaction of an insert into an otp-like table and one into
//!    an outbox-like table, at the client count (of 8, 16, 32, 64) that gives the most.
//! 3. otp-courier: the real binary (`otp-courier serve`: worker, dispatcher, API, sweeper),
//!    fed jobs through RabbitMQ. A fake provider on loopback answers 200 at once; a receiver
//!    on loopback checks every callback's Standard Webhooks signature. An OTP counts once
//!    the provider has its request and the receiver its signed `otp.sent`. First all jobs as
//!    fast as the publishers go (the maximum rate), then paced runs at 25%, 50% and 100% of
//!    it for latency from publish to provider request and from publish to callback.
//!
//! For the maximum-rate run it also reports where the work went: CPU time per OTP of
//! otp-courier, PostgreSQL, RabbitMQ and the bench itself (from `/proc`), commits per OTP,
//! and, where the server loads `pg_stat_statements`, statements per OTP and the costliest.
//! The ceilings report the same per message and per transaction, so the end to end figure
//! can be set against what the machine spends on the ceilings' work alone.
//! `BENCH_SETUP_SQL` runs SQL on the bench's database after the migrations (an index or a
//! constraint dropped), for an A/B of a schema change without a migration.
//! `BENCH_PACE_RATE` (jobs/s) replaces the maximum rate as the paced runs' and the soak's
//! 100%, so two versions or settings can be compared at the same load. `BENCH_BIN` runs
//! another build of otp-courier (a copy kept from an earlier commit, or a script that
//! `exec`s one under `valgrind`) instead of the one cargo built.
//!
//! `BENCH_SOAK_SECONDS=1800` adds a soak at 50% that samples RSS, queue depth, outbox
//! backlog and database size every 10 s. The fake provider posts a signed `delivered`
//! receipt for each of its messages a second after taking it, and the jobs expire after
//! 60 s, so the soak runs in the steady state of three callbacks per OTP (`otp.sent`,
//! `otp.delivered`, `otp.expired`); it reports the slope of RSS over its last four fifths. Results go
//! to target/bench/e2e.json. The publishers, the fake provider, the receiver, RabbitMQ and
//! PostgreSQL all share the machine's cores.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use common::{drive, env_or, Run};

const DATABASE: &str = "otp_courier_bench_e2e";
const CEILING_DATABASE: &str = "otp_courier_bench_ceiling";
const PIN_KEY: &str = "62656e63682d6b65792d62656e63682d6b65792d62656e63682d6b65792d3332";
/// Jobs go to +1 415 2xx xxxx, one number each, so no per-phone limit is reached and the
/// provider's `to` names the job.
const FIRST_NUMBER: u64 = 14_152_000_000;
/// Publishes in flight (each waits for its confirm), for the ceiling and for our jobs alike.
const PUBLISHERS: usize = 64;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The TTL of the jobs of the burst and the paced runs: none of them expires before the
/// paced runs end, so each of their OTPs costs one callback (`otp.sent`).
const TTL: u32 = 300;
/// The TTL of the soak's jobs: from its first minute on, each OTP also expires (the bench
/// never verifies), so the soak runs in the steady state of two callbacks per OTP.
const SOAK_TTL: u32 = 60;

/// A send job as producers write it; `n` picks its phone number.
fn job(n: u64, ttl: u32) -> Vec<u8> {
    json!({"appId": "bench", "phoneNumber": format!("+{}", FIRST_NUMBER + n), "requestId": format!("bench-{n}"),
           "pinLength": 6, "ttl": ttl, "metadata": {"userId": format!("u-{n}"), "flow": "login"}})
    .to_string()
    .into_bytes()
}

/// Where each job's milestones were seen, by job number, as time since the bench began.
#[derive(Default)]
struct Tracker {
    published: Mutex<HashMap<u64, Duration>>,
    provider: Mutex<HashMap<u64, Duration>>,
    callback: Mutex<HashMap<u64, Duration>>,
    provider_requests: AtomicUsize,
    sent_callbacks: AtomicUsize,
    bad_signatures: AtomicUsize,
    /// Receipts the fake provider posted, those the API refused, and the `otp.delivered`
    /// callbacks they led to.
    receipts_posted: AtomicUsize,
    /// Answered 503 (`receipts.max_in_flight` were in progress).
    receipts_deferred: AtomicUsize,
    /// Any other answer than 2xx, or none.
    receipts_refused: AtomicUsize,
    delivered_callbacks: AtomicUsize,
}

struct Shared {
    tracker: Tracker,
    epoch: Instant,
    webhook: standardwebhooks::Webhook,
    /// The TTL of the jobs published from now on.
    ttl: AtomicU32,
    /// Where the fake provider posts a signed `delivered` receipt for each message, a second
    /// after taking it, while `receipts_on` is set (the soak).
    receipt_url: String,
    receipts_on: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
}

/// The fake provider's receipt secret (hex HMAC-SHA256 of the body in `x-signature`).
const RECEIPT_SECRET: &str = "bench-receipt-secret";
/// How long after taking a message the fake provider reports it delivered.
const RECEIPT_DELAY: Duration = Duration::from_secs(1);

/// Posts a signed `delivered` receipt for `message_id`, as a provider would.
async fn post_receipt(shared: Arc<Shared>, message_id: String) {
    use hmac::Mac as _;
    tokio::time::sleep(RECEIPT_DELAY).await;
    let body = json!({"data": {"id": message_id, "state": "DELIVRD"}}).to_string();
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(RECEIPT_SECRET.as_bytes()) else {
        return;
    };
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    shared.tracker.receipts_posted.fetch_add(1, Ordering::Relaxed);
    let answer = shared
        .http
        .post(&shared.receipt_url)
        .header("content-type", "application/json")
        .header("x-signature", signature)
        .body(body)
        .send()
        .await;
    match answer.map(|a| a.status()) {
        Ok(status) if status.is_success() => {}
        Ok(reqwest::StatusCode::SERVICE_UNAVAILABLE) => {
            shared.tracker.receipts_deferred.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            shared.tracker.receipts_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn job_number(phone: &str) -> Option<u64> {
    phone
        .trim_start_matches('+')
        .parse::<u64>()
        .ok()?
        .checked_sub(FIRST_NUMBER)
}

async fn provider(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> (StatusCode, String) {
    let at = shared.epoch.elapsed();
    shared.tracker.provider_requests.fetch_add(1, Ordering::Relaxed);
    let to = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["to"].as_str().and_then(job_number));
    if let Some(n) = to {
        shared.tracker.provider.lock().expect("lock").entry(n).or_insert(at);
    }
    // Each message its own id, so its receipt names it.
    let id = format!("bench-{}", to.unwrap_or_default());
    if shared.receipts_on.load(Ordering::Relaxed) && to.is_some() {
        tokio::spawn(post_receipt(shared.clone(), id.clone()));
    }
    (StatusCode::OK, json!({"id": id}).to_string())
}

async fn receiver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let at = shared.epoch.elapsed();
    if shared.webhook.verify(&body, &headers).is_err() {
        shared.tracker.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if event["type"] == "otp.delivered" {
        shared.tracker.delivered_callbacks.fetch_add(1, Ordering::Relaxed);
    }
    if event["type"] == "otp.sent" {
        shared.tracker.sent_callbacks.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = event["data"]["phoneNumber"].as_str().and_then(job_number) {
            shared.tracker.callback.lock().expect("lock").entry(n).or_insert(at);
        }
    }
    StatusCode::NO_CONTENT
}

async fn serve(router: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{address}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_or("BENCH_JOBS", 20_000);
    let seconds = env_or("BENCH_SECONDS", 20);
    let soak_seconds = env_or("BENCH_SOAK_SECONDS", 0);
    let ceiling_seconds = env_or("BENCH_CEILING_SECONDS", 5);
    // The 100% of the paced runs and the soak, in jobs/s; 0: the maximum rate just measured.
    // A fixed rate compares two versions at the same load, which a share of each one's own
    // maximum does not.
    let pace_rate = env_or("BENCH_PACE_RATE", 0);
    anyhow::ensure!(
        otp_courier::domain::PhoneNumber::parse(&format!("+{FIRST_NUMBER}")).is_ok()
            && otp_courier::domain::PhoneNumber::parse(&format!("+{}", FIRST_NUMBER + 7_000_000)).is_ok(),
        "the bench's phone numbers must be valid"
    );
    let amqp = Connection::connect(&amqp_url(), Default::default()).await?;

    println!(
        "RabbitMQ ceiling: {jobs} persistent publishes with confirms ({PUBLISHERS} in flight), then consume + ack"
    );
    let (publish_ceiling, consume_ceiling, amqp_cpu) = amqp_ceiling(&amqp, jobs).await?;
    println!(
        "  publish {:.0}/s, consume + ack {:.0}/s",
        publish_ceiling, consume_ceiling
    );

    println!("PostgreSQL ceiling: otp insert + outbox insert per transaction, {ceiling_seconds} s per client count");
    let (database_ceiling, best_clients, database_cpu) = database_ceiling(Duration::from_secs(ceiling_seconds)).await?;
    println!("  {database_ceiling:.0}/s with {best_clients} clients");

    let (admin, url, pool) = common::scratch_database(DATABASE, 4).await?;
    // An experiment's change to the schema (an index dropped, a table option), run after the
    // migrations, so an A/B of the database's work needs no new migration.
    if let Ok(sql) = std::env::var("BENCH_SETUP_SQL") {
        sqlx::raw_sql(&sql).execute(&pool).await?;
        println!("schema changed for this run: {sql}");
    }
    otp_courier::tenancy::apps::create(
        &pool,
        &otp_courier::tenancy::apps::NewApp {
            id: "bench".into(),
            name: "bench".into(),
            templates: [(
                String::new(),
                "Your code is {{pin}}. It expires in 5 minutes.".to_string(),
            )]
            .into(),
            ..Default::default()
        },
    )
    .await?;
    let app = otp_courier::domain::AppId::parse("bench").map_err(anyhow::Error::msg)?;
    // The bench's configuration names no sealing key: secrets are stored in clear.
    let sealer = otp_courier::tenancy::sealing::Sealer::default();
    let secret =
        otp_courier::tenancy::keys::rotate_webhook_secret(&mut *pool.acquire().await?, &sealer, &app, None).await?;
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let shared = Arc::new(Shared {
        tracker: Tracker::default(),
        epoch: Instant::now(),
        webhook: standardwebhooks::Webhook::new(&secret)?,
        ttl: AtomicU32::new(TTL),
        receipt_url: format!("http://{api}/v1/receipts/fake"),
        receipts_on: Default::default(),
        http: reqwest::Client::new(),
    });
    let provider_url = serve(
        axum::Router::new()
            .route("/sms", post(provider))
            .with_state(shared.clone()),
    )
    .await?;
    let receiver_url = serve(
        axum::Router::new()
            .route("/hook", post(receiver))
            .with_state(shared.clone()),
    )
    .await?;
    sqlx::query("update apps set callback_url = $1 where id = 'bench'")
        .bind(format!("{receiver_url}/hook"))
        .execute(&pool)
        .await?;

    let suffix = Uuid::now_v7().simple().to_string();
    let queue = format!("bench.otp.send.{suffix}");
    let dlq = format!("bench.otp.send.dlq.{suffix}");
    let dir = tempfile::tempdir()?;
    let mut child = common::spawn_serve(dir.path(), &config_file(&url, &queue, &dlq, &provider_url, api)?)?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("otp-courier exited at once"))?;
    let channel = amqp.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let started = Instant::now();
    while channel.status().connected() && queue_depth(&amqp, &queue).await.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "otp-courier did not declare its queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut next = 0u64;
    let warm = run_paced(&shared, &channel, &queue, &mut next, 200.0, Duration::from_secs(2)).await?;
    println!(
        "otp-courier warmed up: {} OTPs, RSS {:.0} MiB",
        warm.count,
        rss_mib(pid, "VmRSS")
    );

    println!("otp-courier maximum rate: {jobs} jobs published as fast as {PUBLISHERS} publishers go");
    let work = DatabaseWork::start(&pool).await;
    let cpu = cpu_seconds(pid);
    let max = run_burst(&shared, &channel, &queue, &mut next, jobs).await?;
    let peak_rss_at_max = rss_mib(pid, "VmHWM");
    println!(
        "  {:.0} OTPs/s (sent and called back) over {:.1} s; peak RSS {peak_rss_at_max:.0} MiB",
        max.rate, max.seconds
    );
    let cpu = cpu_report("CPU per OTP", cpu, cpu_seconds(pid), jobs);
    let work = work.since(&pool).await.report(jobs);

    let full = if pace_rate > 0 {
        println!("paced runs at shares of BENCH_PACE_RATE = {pace_rate} jobs/s, not of the maximum rate");
        pace_rate as f64
    } else {
        max.rate
    };
    let mut paced = Vec::new();
    for share in [0.25, 0.5, 1.0] {
        let rate = full * share;
        println!(
            "otp-courier at {:.0}% ({rate:.0} jobs/s) for {seconds} s",
            share * 100.0
        );
        let run = run_paced(&shared, &channel, &queue, &mut next, rate, Duration::from_secs(seconds)).await?;
        println!(
            "  {:.0} OTPs/s; publish -> provider p50 {:.1} / p95 {:.1} / p99 {:.1} ms; publish -> callback p50 {:.1} / p95 {:.1} / p99 {:.1} ms",
            run.rate, run.provider[0], run.provider[1], run.provider[2], run.callback[0], run.callback[1], run.callback[2]
        );
        paced.push((share, rate, run));
    }
    let peak_rss = rss_mib(pid, "VmHWM");

    let soak = if soak_seconds > 0 {
        Some(
            soak(
                &shared,
                &channel,
                &queue,
                &pool,
                pid,
                &mut next,
                full * 0.5,
                Duration::from_secs(soak_seconds),
            )
            .await?,
        )
    } else {
        None
    };
    let peak_rss_with_soak = soak.as_ref().map(|_| rss_mib(pid, "VmHWM"));

    let tracker = &shared.tracker;
    let provider_requests = tracker.provider_requests.load(Ordering::Relaxed);
    let sent_callbacks = tracker.sent_callbacks.load(Ordering::Relaxed);
    let bad_signatures = tracker.bad_signatures.load(Ordering::Relaxed);
    child.kill().await?;
    anyhow::ensure!(bad_signatures == 0, "{bad_signatures} callbacks had a bad signature");

    let ceiling = consume_ceiling.min(database_ceiling);
    let ratio = max.rate / ceiling;
    println!();
    println!("| measure | per second |");
    println!("|---|---|");
    println!("| RabbitMQ publish with confirm | {publish_ceiling:.0} |");
    println!("| RabbitMQ consume + ack | {consume_ceiling:.0} |");
    println!("| PostgreSQL otp + outbox transaction ({best_clients} clients) | {database_ceiling:.0} |");
    println!(
        "| otp-courier end to end (sent + signed callback received) | {:.0} |",
        max.rate
    );
    println!();
    println!("| load | jobs/s | OTPs/s | provider p50 / p95 / p99 ms | callback p50 / p95 / p99 ms |");
    println!("|---|---|---|---|---|");
    for (share, rate, run) in &paced {
        println!(
            "| {:.0}% | {rate:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
            share * 100.0,
            run.rate,
            run.provider[0],
            run.provider[1],
            run.provider[2],
            run.callback[0],
            run.callback[1],
            run.callback[2]
        );
    }
    println!();
    println!(
        "ratio end to end / min(consume + ack, PostgreSQL) = {:.0} / {ceiling:.0} = {ratio:.2}",
        max.rate
    );
    println!("peak RSS of otp-courier: {peak_rss:.0} MiB (after the maximum-rate run: {peak_rss_at_max:.0} MiB)");
    if let Some(with_soak) = peak_rss_with_soak {
        println!("peak RSS of otp-courier including the soak: {with_soak:.0} MiB");
    }
    println!(
        "provider requests {provider_requests} for {next} jobs; otp.sent callbacks {sent_callbacks}; bad signatures {bad_signatures}"
    );

    let result = json!({
        "jobs": jobs, "paced_seconds": seconds,
        "amqp_publish_per_second": publish_ceiling, "amqp_consume_ack_per_second": consume_ceiling,
        "postgres_transactions_per_second": database_ceiling, "postgres_clients": best_clients,
        // The machine's CPU per message or transaction in each ceiling, to compare with the
        // CPU per OTP end to end.
        "cpu_us_per_ceiling_transaction": database_cpu, "cpu_us_per_ceiling_message": amqp_cpu,
        "end_to_end_per_second": max.rate, "ratio": ratio, "database_work_in_burst": work,
        "cpu_us_per_otp_in_burst": cpu,
        // What the paced runs' shares are of: the maximum rate, or BENCH_PACE_RATE.
        "paced_full_rate": full, "paced_at_bench_pace_rate": pace_rate > 0,
        "paced": paced.iter().map(|(share, rate, run)| json!({
            "share": share, "jobs_per_second": rate, "otps_per_second": run.rate,
            "publish_to_provider_ms": {"p50": run.provider[0], "p95": run.provider[1], "p99": run.provider[2]},
            "publish_to_callback_ms": {"p50": run.callback[0], "p95": run.callback[1], "p99": run.callback[2]},
        })).collect::<Vec<_>>(),
        "peak_rss_mib": peak_rss, "peak_rss_mib_after_max": peak_rss_at_max,
        "peak_rss_mib_with_soak": peak_rss_with_soak,
        "provider_requests": provider_requests, "jobs_published": next, "sent_callbacks": sent_callbacks,
        "bad_signatures": bad_signatures, "soak": soak,
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/e2e.json", serde_json::to_vec_pretty(&result)?)?;
    println!("written to target/bench/e2e.json");
    for name in [&queue, &dlq] {
        channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    common::drop_database(&admin, pool, DATABASE).await
}

fn config_file(
    url: &url::Url,
    queue: &str,
    dlq: &str,
    provider_url: &str,
    api: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let config = json!({
        "database": {"url": url.as_str()},
        "amqp": {"url": amqp_url(), "send_queue": queue, "dead_letter_queue": dlq},
        "api": {"listen": api.to_string()},
        "pin": {"active_key": "bench", "keys": {"bench": PIN_KEY}},
        "callbacks": {"allow_http": true, "allow_networks": ["127.0.0.1/32"]},
        "limits": {
            "send_per_app": {"max": 1_000_000, "window_seconds": 1},
            "send_per_country": {"max": 1_000_000, "window_seconds": 1},
        },
        // Sequential numbers, never verified: the fraud guard counts every send (its cost is
        // in the measured path) with thresholds the bench cannot reach.
        "fraud": {"prefix_velocity": {"max": 1_000_000},
                  "conversion": {"min_sends": 1_000_000, "country_min_sends": 1_000_000}},
        "log": {"format": "json", "filter": "warn"},
        "routing": {"sms": "fake", "whatsapp": "fake"},
        "providers": {"fake": {"kind": "http-json", "url": format!("{provider_url}/sms"),
            "message_id_pointer": "/id", "body": {"to": "{{to}}", "text": "{{message}}"},
            "receipt": {"message_id_pointer": "/data/id", "status_pointer": "/data/state",
                        "statuses": {"DELIVRD": "delivered"}, "signature_header": "x-signature",
                        "secret": RECEIPT_SECRET}}},
    });
    Ok(toml::to_string(&config)?)
}

/// `VmRSS` (now) or `VmHWM` (peak) of a process, in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Messages ready in `queue`, looked at on a channel of its own (a refusal closes it).
async fn queue_depth(amqp: &Connection, queue: &str) -> Option<u32> {
    let channel = amqp.create_channel().await.ok()?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let depth = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = channel.close(200, "done".into()).await;
    depth
}

async fn publish(channel: &Channel, queue: &str, n: u64, ttl: u32) -> anyhow::Result<()> {
    let properties = BasicProperties::default().with_content_type("application/json".into());
    otp_courier::platform::amqp::publish_confirmed(channel, queue, &job(n, ttl), properties).await?;
    Ok(())
}

/// Publish and consume + ack rates, and the CPU each phase took per message.
async fn amqp_ceiling(amqp: &Connection, jobs: u64) -> anyhow::Result<(f64, f64, Value)> {
    let queue = format!("bench.ceiling.{}", Uuid::now_v7().simple());
    let channel = amqp.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    let cpu = cpu_seconds(0);
    let started = Instant::now();
    let cursor = Arc::new(AtomicU64::new(0));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS {
        let (channel, queue, cursor) = (channel.clone(), queue.clone(), cursor.clone());
        publishers.spawn(async move {
            while cursor.fetch_add(1, Ordering::Relaxed) < jobs {
                publish(&channel, &queue, 0, TTL).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let publish_rate = jobs as f64 / started.elapsed().as_secs_f64();
    let publish_cpu = cpu_report("CPU per publish", cpu, cpu_seconds(0), jobs);

    let consumer_channel = amqp.create_channel().await?;
    // The worker's default prefetch.
    let defaults: toml::Value = toml::from_str(otp_courier::platform::config::DEFAULTS)?;
    let prefetch = defaults["amqp"]["prefetch"].as_integer().unwrap_or(64) as u16;
    consumer_channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // BENCH_ACK_EVERY=16: one ack with `multiple` per 16 messages, what coalesced acks
    // save the broker and the client.
    let ack_every = env_or("BENCH_ACK_EVERY", 1).max(1);
    let cpu = cpu_seconds(0);
    let started = Instant::now();
    let mut consumed = 0;
    while consumed < jobs {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        consumed += 1;
        if consumed % ack_every == 0 || consumed == jobs {
            delivery
                .ack(BasicAckOptions {
                    multiple: ack_every > 1,
                })
                .await?;
        }
    }
    let consume = consumed as f64 / started.elapsed().as_secs_f64();
    let consume_cpu = cpu_report("CPU per consume + ack", cpu, cpu_seconds(0), jobs);
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok((
        publish_rate,
        consume,
        json!({"publish": publish_cpu, "consume_ack": consume_cpu}),
    ))
}

/// The most transactions per second of the client counts tried, that count, and the CPU its
/// run took per transaction.
async fn database_ceiling(each: Duration) -> anyhow::Result<(f64, usize, Value)> {
    let (admin, _, pool) = common::scratch_database(CEILING_DATABASE, 64).await?;
    sqlx::raw_sql(
        "create table raw_otps (
             id uuid primary key, app_id text not null, request_id text not null, phone_number text not null,
             channel text not null, locale text not null, template text not null, provider text not null,
             pin_type text not null, pin_length smallint not null, pin_key_id text not null,
             max_attempts smallint not null, ttl_seconds int not null, expires_at timestamptz not null,
             callback_url text, metadata jsonb, status text not null default 'pending',
             created_at timestamptz not null default now(), unique (app_id, request_id));
         create table raw_outbox (
             id uuid primary key, otp_id uuid not null, app_id text not null, event_type text not null,
             callback_url text, payload jsonb not null, created_at timestamptz not null default now());",
    )
    .execute(&pool)
    .await?;
    let payload = json!({"type": "otp.sent", "timestamp": "2026-11-22T10:00:00Z", "data": {
        "otpId": "otp_0193b1c4a5e67f0a8b9c0d1e2f3a4b5c", "appId": "bench", "requestId": "bench-1",
        "phoneNumber": "+14152000001", "channel": "sms", "status": "pending", "delivery": "sent",
        "locale": "en", "parts": 1, "attempts": 0, "maxAttempts": 5, "expiresAt": "2026-11-22T10:05:00Z",
        "metadata": {"userId": "u-1", "flow": "login"}}});
    let mut best = (0.0, 0, Value::Null);
    for clients in [8, 16, 32, 64] {
        let (pool, payload) = (pool.clone(), payload.clone());
        let cpu = cpu_seconds(0);
        let run = drive(clients, each, usize::MAX, move |_| {
            let (pool, payload) = (pool.clone(), payload.clone());
            async move { raw_transaction(&pool, &payload).await }
        })
        .await?;
        println!("  {clients} clients: {:.0}/s", run.rate());
        let cpu = cpu_report("CPU per transaction", cpu, cpu_seconds(0), run.completed as u64);
        if run.rate() > best.0 {
            best = (run.rate(), clients, cpu);
        }
    }
    common::drop_database(&admin, pool, CEILING_DATABASE).await?;
    Ok(best)
}

async fn raw_transaction(pool: &PgPool, payload: &Value) -> anyhow::Result<()> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into raw_otps (id, app_id, request_id, phone_number, channel, locale, template, provider, pin_type,
                               pin_length, pin_key_id, max_attempts, ttl_seconds, expires_at, callback_url, metadata)
         values ($1, 'bench', $2, '+14152000001', 'sms', 'en', 'Your code is {{pin}}.', 'fake', 'numeric',
                 6, 'bench', 5, 300, now() + interval '5 minutes', 'http://127.0.0.1:9/hook', '{\"flow\": \"login\"}')",
    )
    .bind(id)
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into raw_outbox (id, otp_id, app_id, event_type, callback_url, payload)
         values ($1, $2, 'bench', 'otp.sent', 'http://127.0.0.1:9/hook', $3)",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .bind(payload)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What one run of jobs `first..first + count` gave.
struct Outcome {
    count: u64,
    seconds: f64,
    /// OTPs per second: from the first publish to the last callback.
    rate: f64,
    /// p50, p95, p99 in ms.
    provider: [f64; 3],
    callback: [f64; 3],
}

/// Publishes `count` jobs from `PUBLISHERS` concurrent publishers, as fast as they go.
async fn run_burst(
    shared: &Arc<Shared>,
    channel: &Channel,
    queue: &str,
    next: &mut u64,
    count: u64,
) -> anyhow::Result<Outcome> {
    let first = *next;
    *next += count;
    let cursor = Arc::new(AtomicU64::new(first));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS {
        let (shared, channel, queue, cursor) = (shared.clone(), channel.clone(), queue.to_string(), cursor.clone());
        publishers.spawn(async move {
            loop {
                let n = cursor.fetch_add(1, Ordering::Relaxed);
                if n >= first + count {
                    return anyhow::Ok(());
                }
                let at = shared.epoch.elapsed();
                shared.tracker.published.lock().expect("lock").insert(n, at);
                publish(&channel, &queue, n, shared.ttl.load(Ordering::Relaxed)).await?;
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    settle(shared, first, count).await
}

/// Publishes jobs at `rate` per second for `duration`, each on time whatever the ones before
/// it are waiting for (an open loop, as independent producers behave).
async fn run_paced(
    shared: &Arc<Shared>,
    channel: &Channel,
    queue: &str,
    next: &mut u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let first = *next;
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    *next += count;
    let start = tokio::time::Instant::now();
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let n = first + i;
        let (shared, channel, queue) = (shared.clone(), channel.clone(), queue.to_string());
        publishes.spawn(async move {
            let at = shared.epoch.elapsed();
            shared.tracker.published.lock().expect("lock").insert(n, at);
            publish(&channel, &queue, n, shared.ttl.load(Ordering::Relaxed)).await
        });
        while let Some(done) = publishes.try_join_next() {
            done??;
        }
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    settle(shared, first, count).await
}

/// Waits until every job of the run has reached the provider and been called back, then
/// measures it.
async fn settle(shared: &Arc<Shared>, first: u64, count: u64) -> anyhow::Result<Outcome> {
    let tracker = &shared.tracker;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = |map: &Mutex<HashMap<u64, Duration>>| {
        let map = map.lock().expect("lock");
        (first..first + count).filter(|n| map.contains_key(n)).count() as u64
    };
    let mut report = Instant::now() + Duration::from_secs(5);
    loop {
        let (sent, called) = (done(&tracker.provider), done(&tracker.callback));
        if sent == count && called == count {
            break;
        }
        if Instant::now() >= report {
            println!("  ... {sent} sent, {called} called back of {count}");
            report += Duration::from_secs(5);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after 10 minutes {sent} of {count} jobs reached the provider and {called} were called back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = tracker.published.lock().expect("lock");
    let latencies = |map: &Mutex<HashMap<u64, Duration>>| {
        let map = map.lock().expect("lock");
        Run {
            completed: 0,
            seconds: 0.0,
            latencies: (first..first + count)
                .map(|n| map[&n].saturating_sub(published[&n]))
                .collect(),
        }
    };
    let (provider, callback) = (latencies(&tracker.provider), latencies(&tracker.callback));
    let begun = (first..first + count).map(|n| published[&n]).min().unwrap_or_default();
    let ended = {
        let map = tracker.callback.lock().expect("lock");
        (first..first + count).map(|n| map[&n]).max().unwrap_or_default()
    };
    let seconds = (ended - begun).as_secs_f64();
    let percentiles = |run: &Run| [run.percentile(0.50), run.percentile(0.95), run.percentile(0.99)];
    Ok(Outcome {
        count,
        seconds,
        rate: count as f64 / seconds,
        provider: percentiles(&provider),
        callback: percentiles(&callback),
    })
}

/// Runs at `rate` for `duration` in 10 s slices, sampling what should stay flat.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn soak(
    shared: &Arc<Shared>,
    channel: &Channel,
    queue: &str,
    pool: &PgPool,
    pid: u32,
    next: &mut u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Value> {
    let slice = Duration::from_secs(10);
    let slices = (duration.as_secs() / slice.as_secs()).max(1);
    shared.ttl.store(SOAK_TTL, Ordering::Relaxed);
    shared.receipts_on.store(true, Ordering::Relaxed);
    println!(
        "soak at {rate:.0} jobs/s for {} s, jobs with a {SOAK_TTL} s TTL, a delivered receipt for each message",
        slices * slice.as_secs()
    );
    println!("| t (s) | RSS MiB | queue depth | outbox pending | OTPs/s | provider p99 ms | receipts/s | otp.delivered/s | database MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let tracker = &shared.tracker;
    let (mut receipts_before, mut delivered_before) = (0, 0);
    let mut samples = Vec::new();
    // (t, RSS) of the samples past the first fifth, for the slope.
    let mut settled: Vec<(f64, f64)> = Vec::new();
    for i in 1..=slices {
        let run = run_paced(shared, channel, queue, next, rate, slice).await?;
        let amqp = Connection::connect(&amqp_url(), Default::default()).await?;
        let depth = queue_depth(&amqp, queue).await.unwrap_or(0);
        let _ = amqp.close(200, "done".into()).await;
        let pending: i64 = sqlx::query_scalar("select count(*) from outbox where state = 'pending'")
            .fetch_one(pool)
            .await?;
        let rss = rss_mib(pid, "VmRSS");
        let database: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
            .fetch_one(pool)
            .await?;
        let database = database as f64 / 1_048_576.0;
        let (receipts, delivered) = (
            tracker.receipts_posted.load(Ordering::Relaxed),
            tracker.delivered_callbacks.load(Ordering::Relaxed),
        );
        let per_second = |now: usize, before: usize| (now - before) as f64 / slice.as_secs_f64();
        let (receipt_rate, delivered_rate) = (
            per_second(receipts, receipts_before),
            per_second(delivered, delivered_before),
        );
        (receipts_before, delivered_before) = (receipts, delivered);
        println!(
            "| {} | {rss:.1} | {depth} | {pending} | {:.0} | {:.1} | {receipt_rate:.0} | {delivered_rate:.0} | {database:.0} |",
            i * slice.as_secs(),
            run.rate,
            run.provider[2]
        );
        std::io::stdout().flush()?;
        if i * 5 > slices {
            settled.push(((i * slice.as_secs()) as f64, rss));
        }
        samples.push(json!({"t": i * slice.as_secs(), "rss_mib": rss, "queue_depth": depth,
            "outbox_pending": pending, "otps_per_second": run.rate, "provider_p99_ms": run.provider[2],
            "receipts_per_second": receipt_rate, "delivered_callbacks_per_second": delivered_rate,
            "database_mib": database}));
        // Forget what was measured, so the bench's own memory stays flat too.
        for map in [
            &shared.tracker.published,
            &shared.tracker.provider,
            &shared.tracker.callback,
        ] {
            map.lock().expect("lock").clear();
        }
    }
    shared.receipts_on.store(false, Ordering::Relaxed);
    let slope = slope_per_minute(&settled);
    println!(
        "  RSS over the last four fifths: {:.1} -> {:.1} MiB, slope {slope:.3} MiB/min",
        settled.first().map_or(0.0, |s| s.1),
        settled.last().map_or(0.0, |s| s.1),
    );
    let refused = tracker.receipts_refused.load(Ordering::Relaxed);
    let deferred = tracker.receipts_deferred.load(Ordering::Relaxed);
    println!(
        "  receipts posted {}, deferred (503) {deferred}, refused or failed {refused}; otp.delivered callbacks {}",
        tracker.receipts_posted.load(Ordering::Relaxed),
        tracker.delivered_callbacks.load(Ordering::Relaxed)
    );
    Ok(
        json!({"jobs_per_second": rate, "job_ttl_seconds": SOAK_TTL, "samples": samples,
              "rss_slope_mib_per_minute": slope, "receipts_posted": tracker.receipts_posted.load(Ordering::Relaxed),
              "receipts_refused": refused, "receipts_deferred": deferred,
              "delivered_callbacks": tracker.delivered_callbacks.load(Ordering::Relaxed)}),
    )
}

/// The least-squares slope of (seconds, MiB) points, in MiB per minute.
fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mean_t, mean_m) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_m)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 60.0
    }
}

/// What the database did for a run: commits and statements per OTP, from PostgreSQL's own
/// counters. The commits come from `pg_stat_database` (always there); the statements from
/// `pg_stat_statements` where the server loads it (`shared_preload_libraries`), else none.
struct DatabaseWork {
    commits: i64,
    statements: Option<Vec<(String, i64, f64)>>,
}

impl DatabaseWork {
    /// Zeroes the statement counters (where they exist) and reads the commit counter.
    /// Backends report their commits to the statistics at most once a second: each reading
    /// waits for that first.
    async fn start(pool: &PgPool) -> Self {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = sqlx::query("create extension if not exists pg_stat_statements")
            .execute(pool)
            .await;
        let statements = match sqlx::query("select pg_stat_statements_reset()").execute(pool).await {
            Ok(_) => Some(Vec::new()),
            Err(_) => None,
        };
        // The statistics collector's snapshot is per transaction: a fresh one each read.
        let _ = sqlx::query("select pg_stat_clear_snapshot()").execute(pool).await;
        Self {
            commits: commits(pool).await,
            statements,
        }
    }

    /// What was done since `start`: commits, and each statement's calls and total time
    /// (top-level statements only, as the clients sent them), most time first.
    async fn since(self, pool: &PgPool) -> Self {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = sqlx::query("select pg_stat_clear_snapshot()").execute(pool).await;
        let commits = commits(pool).await - self.commits;
        let statements = match self.statements {
            None => None,
            Some(_) => sqlx::query_as::<_, (String, i64, f64)>(
                "select regexp_replace(left(query, 160), '\\s+', ' ', 'g'), calls, total_exec_time
                   from pg_stat_statements
                  where dbid = (select oid from pg_database where datname = current_database())
                    and toplevel
                  order by total_exec_time desc",
            )
            .fetch_all(pool)
            .await
            .ok(),
        };
        Self { commits, statements }
    }

    fn report(&self, otps: u64) -> Value {
        let per = |n: i64| n as f64 / otps as f64;
        println!("  database work per OTP: {:.2} commits", per(self.commits));
        let Some(statements) = &self.statements else {
            println!("  (no pg_stat_statements on this server: statements not counted)");
            return json!({"commits_per_otp": per(self.commits)});
        };
        let calls: i64 = statements.iter().map(|s| s.1).sum();
        let time: f64 = statements.iter().map(|s| s.2).sum();
        println!(
            "  {:.2} statements per OTP, {:.3} ms of statement time per OTP; the ones that take most:",
            per(calls),
            time / otps as f64
        );
        for (query, calls, total) in statements.iter().take(15) {
            println!(
                "  {:>6.3} calls/OTP {:>7.1} ms total {:>5.1}%  {query}",
                per(*calls),
                total,
                100.0 * total / time.max(f64::MIN_POSITIVE)
            );
        }
        json!({
            "commits_per_otp": per(self.commits), "statements_per_otp": per(calls),
            "statement_ms_per_otp": time / otps as f64,
            "statements": statements.iter().take(30).map(|(query, calls, total)| json!({
                "query": query, "calls_per_otp": per(*calls), "total_ms": total,
            })).collect::<Vec<_>>(),
        })
    }
}

async fn commits(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>("select xact_commit from pg_stat_database where datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// CPU time (user + system, seconds) used so far by the processes that share the machine in
/// the bench: otp-courier (none with pid 0, as in the ceilings), PostgreSQL (every backend
/// and helper), RabbitMQ (the Erlang VM) and the bench itself (publishers, fake provider, receiver). From `/proc`, with the time
/// of children that ended (`cutime`, `cstime`): a backend that exits hands its time to the
/// postmaster, so the sums only grow.
fn cpu_seconds(otp_courier: u32) -> [(&'static str, f64); 4] {
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let read = |path: std::path::PathBuf| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        // The name is in parentheses and may hold spaces; the fields after it are fixed.
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let time = (11..=14)
            .map(|i| fields.get(i)?.parse::<f64>().ok())
            .sum::<Option<f64>>()?;
        Some((name.to_string(), time / ticks))
    };
    let mut totals = [
        ("otp-courier", 0.0),
        ("PostgreSQL", 0.0),
        ("RabbitMQ", 0.0),
        ("bench", 0.0),
    ];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Some((name, time)) = read(entry.path().join("stat")) else {
            continue;
        };
        let slot = if pid == otp_courier {
            0
        } else if name == "postgres" {
            1
        } else if name == "beam.smp" {
            2
        } else if pid == std::process::id() {
            3
        } else {
            continue;
        };
        totals[slot].1 += time;
    }
    totals
}

/// Where the machine's CPU went between two [`cpu_seconds`] readings, per OTP.
fn cpu_report(what: &str, before: [(&'static str, f64); 4], after: [(&'static str, f64); 4], count: u64) -> Value {
    let per: Vec<(&str, f64)> = before
        .iter()
        .zip(after)
        .map(|((name, a), (_, b))| (*name, (b - a) * 1_000_000.0 / count as f64))
        .collect();
    println!(
        "  {what}: {}",
        per.iter()
            .map(|(name, us)| format!("{name} {us:.0} µs"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    json!(per.into_iter().collect::<std::collections::BTreeMap<_, _>>())
}
