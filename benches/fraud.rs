//! A simulated SMS-pumping attack against the fraud guard, in one run: `cargo bench --bench fraud`.
//!
//! The real binary (`otp-courier serve`) with the default guard, except that blocks last
//! `BLOCK_SECONDS` (so one ends within the run), conversion is judged over ten minutes, and
//! sends count against it at once (`settle_seconds = 0`, so a burst is judged as it comes). Normal traffic: clients that
//! send an OTP through the API to numbers in the US and France spread over many prefixes,
//! wait for the fake provider to receive it, and verify the code it carried. The attack: a
//! bot sending 500 requests over about five seconds to 50 numbers of one Cameroonian mobile
//! prefix, verifying none. Phases: normal traffic alone, during the attack, alone again;
//! once the block has ended, alone, during the attack again (on 50 other numbers of the
//! prefix), alone. The four quiet phases' spread of p99 is the run's noise; an attack phase
//! whose p99 is above all of them shows the attack's cost. Results go to target/bench/fraud.json.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use common::{env_or, Run};

const DATABASE: &str = "otp_courier_bench_fraud";
const PIN_KEY: &str = "62656e63682d6b65792d62656e63682d6b65792d62656e63682d6b65792d3332";
/// The attacked prefix: the numbers differ in their last four digits only.
const ATTACK_PREFIX: &str = "+23765000";
const ATTACK_REQUESTS: usize = 500;
const ATTACK_NUMBERS: usize = 50;
/// Longer than the attack and the quiet phase after it, so the block is seen in force.
const BLOCK_SECONDS: u64 = 30;
const MIN_SENDS: usize = 30;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// What the fake provider saw.
#[derive(Default)]
struct Provider {
    /// Clients waiting for their number's message.
    waiting: Mutex<HashMap<String, oneshot::Sender<String>>>,
    attack_requests: AtomicUsize,
}

async fn fake_provider(State(shared): State<Arc<Provider>>, body: axum::body::Bytes) -> (StatusCode, &'static str) {
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = message["to"].as_str().unwrap_or_default();
    if to.starts_with(ATTACK_PREFIX) {
        shared.attack_requests.fetch_add(1, Ordering::Relaxed);
    } else if let Some(waiter) = shared.waiting.lock().expect("lock").remove(to) {
        let _ = waiter.send(message["text"].as_str().unwrap_or_default().to_string());
    }
    (StatusCode::OK, r#"{"id":"bench-message"}"#)
}

/// The n-th number of normal traffic: the US and France in turn, over thousands of prefixes.
fn normal_number(n: usize) -> String {
    if n % 2 == 0 {
        // Exchanges 202, 212, ... 892: never an N11 service code.
        format!("+1415{}{:04}", 202 + ((n / 2) % 70) * 10, (n / 140) % 10_000)
    } else {
        // 61x: mobile for every x (not all of 6xx is).
        format!("+3361{:03}{:04}", (n / 2) % 1000, (n / 2000) % 10_000)
    }
}

fn attack_number(k: usize) -> String {
    format!("{ATTACK_PREFIX}{k:04}")
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: (String, String),
    operator: (String, String),
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key.0)
            .header("x-api-secret", &self.key.1)
            .json(&body)
            .send()
            .await?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn blocks(&self, all: bool) -> anyhow::Result<Vec<Value>> {
        let blocks: Value = self
            .http
            .get(format!("{}/v1/fraud/blocks?all={all}", self.base))
            .header("x-api-key", &self.operator.0)
            .header("x-api-secret", &self.operator.1)
            .send()
            .await?
            .json()
            .await?;
        Ok(blocks.as_array().cloned().unwrap_or_default())
    }
}

/// One normal user: send, receive the message, verify its code. Latency: send to provider.
async fn normal_user(client: &Client, provider: &Provider, n: usize) -> anyhow::Result<Duration> {
    let phone = normal_number(n);
    let (tx, rx) = oneshot::channel();
    provider.waiting.lock().expect("lock").insert(phone.clone(), tx);
    let begun = Instant::now();
    let (status, accepted) = client
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": phone, "requestId": format!("user-{n}")}),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::ACCEPTED,
        "normal send {n} refused: {status} {accepted}"
    );
    let text = tokio::time::timeout(Duration::from_secs(15), rx).await??;
    let latency = begun.elapsed();
    let code: String = text.chars().filter(char::is_ascii_digit).collect();
    let (status, verified) = client
        .post("/v1/otp/verify", json!({"otpId": accepted["otpId"], "code": code}))
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "normal verify {n} failed: {status} {verified}"
    );
    Ok(latency)
}

/// Normal traffic from `clients` users at a time for `seconds`; numbers from `*next` on.
async fn normal_traffic(
    client: &Arc<Client>,
    provider: &Arc<Provider>,
    clients: usize,
    seconds: u64,
    next: &Arc<AtomicUsize>,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let limit = Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, provider, next) = (client.clone(), provider.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < limit {
                let n = next.fetch_add(1, Ordering::Relaxed);
                latencies.push(normal_user(&client, &provider, n).await?);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    Ok(Run {
        completed: latencies.len(),
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    })
}

/// The bot: `ATTACK_REQUESTS` sends over about five seconds to `ATTACK_NUMBERS` numbers
/// from `first` on. Returns the answers' statuses, counted.
async fn attack(client: Arc<Client>, first: usize) -> anyhow::Result<HashMap<u16, usize>> {
    let bots = 10;
    let pause = Duration::from_millis(5000 * bots as u64 / ATTACK_REQUESTS as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for bot in 0..bots {
        let client = client.clone();
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for i in (bot..ATTACK_REQUESTS).step_by(bots) {
                let phone = attack_number(first + i % ATTACK_NUMBERS);
                let (status, _) = client
                    .post(
                        "/v1/otp/send",
                        json!({"phoneNumber": phone, "requestId": Uuid::now_v7().to_string()}),
                    )
                    .await?;
                statuses.push(status.as_u16());
                tokio::time::sleep(pause).await;
            }
            anyhow::Ok(statuses)
        });
    }
    let mut counted = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for status in done?? {
            *counted.entry(status).or_default() += 1;
        }
    }
    Ok(counted)
}

fn config_file(url: &url::Url, api: &str, provider_url: &str) -> anyhow::Result<String> {
    let suffix = Uuid::now_v7().simple().to_string();
    let config = json!({
        "database": {"url": url.as_str()},
        "amqp": {"url": amqp_url(), "send_queue": format!("bench.fraud.{suffix}"),
                 "dead_letter_queue": format!("bench.fraud.dlq.{suffix}")},
        "api": {"listen": api},
        "pin": {"active_key": "bench", "keys": {"bench": PIN_KEY}},
        "limits": {
            "send_per_app": {"max": 1_000_000, "window_seconds": 1},
            "send_per_country": {"max": 1_000_000, "window_seconds": 1},
            "verify_per_app": {"max": 1_000_000, "window_seconds": 1},
        },
        // A ten-minute conversion window: 10 s buckets, so a block of BLOCK_SECONDS spans several.
        "fraud": {"conversion": {"settle_seconds": 0, "block_seconds": BLOCK_SECONDS, "min_sends": MIN_SENDS,
                                 "window_seconds": 600}},
        "log": {"format": "json", "filter": "warn"},
        "routing": {"sms": "fake"},
        "providers": {"fake": {"kind": "http-json", "url": format!("{provider_url}/sms"),
            "message_id_pointer": "/id", "body": {"to": "{{to}}", "text": "{{message}}"}}},
    });
    Ok(toml::to_string(&config)?)
}

fn block_seconds(block: &Value) -> i64 {
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            block[field].as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .unwrap_or_default()
    };
    at("endsAt") - at("startsAt")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let clients = env_or("BENCH_CLIENTS", 8) as usize;
    let victim = otp_courier::domain::PhoneNumber::parse(&attack_number(0)).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        victim.kind() == otp_courier::domain::NumberKind::Mobile,
        "the attacked numbers must be ordinary mobile numbers, which only the counts can catch"
    );
    let (admin, url, pool) = common::scratch_database(DATABASE, 4).await?;
    otp_courier::tenancy::apps::create(
        &pool,
        &otp_courier::tenancy::apps::NewApp {
            id: "shop".into(),
            name: "shop".into(),
            templates: [(String::new(), "Your code is {{pin}}.".to_string())].into(),
            ..Default::default()
        },
    )
    .await?;
    let app = otp_courier::domain::AppId::parse("shop").map_err(anyhow::Error::msg)?;
    let key = otp_courier::tenancy::keys::issue(&mut *pool.acquire().await?, Some(&app)).await?;
    let operator = otp_courier::tenancy::keys::issue(&mut *pool.acquire().await?, None).await?;
    let provider = Arc::new(Provider::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let provider_url = format!("http://{}", listener.local_addr()?);
    let router = axum::Router::new()
        .route("/sms", post(fake_provider))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();

    let dir = tempfile::tempdir()?;
    let mut child = common::spawn_serve(dir.path(), &config_file(&url, &api, &provider_url)?)?;
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        base: format!("http://{api}"),
        key: (key.key_id, key.secret),
        operator: (operator.key_id, operator.secret),
    });
    let started = Instant::now();
    while client
        .http
        .get(format!("{}/readyz", client.base))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "otp-courier did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    normal_traffic(&client, &provider, clients, 5, &next).await?;

    // Quiet phases around each attack phase: their spread is the run's noise.
    let mut quiet = Vec::new();
    let mut attacked = Vec::new();
    println!("normal traffic alone: {clients} users at a time for {seconds} s");
    quiet.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    report("  ", &quiet[0]);

    println!(
        "normal traffic during the attack ({ATTACK_REQUESTS} requests to {ATTACK_NUMBERS} numbers of {ATTACK_PREFIX}…)"
    );
    let bot = tokio::spawn(attack(client.clone(), 0));
    attacked.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    let first_answers = bot.await??;
    let first_sent = provider.attack_requests.load(Ordering::Relaxed);
    report("  ", &attacked[0]);
    println!("  attack: answers {first_answers:?}; the provider saw {first_sent} of its requests");

    println!("normal traffic alone again");
    quiet.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    report("  ", &quiet[1]);

    let blocks = client.blocks(false).await?;
    anyhow::ensure!(blocks.len() == 1, "one block in force after the attack: {blocks:?}");
    let waited = Instant::now();
    while !client.blocks(false).await?.is_empty() {
        anyhow::ensure!(waited.elapsed() < Duration::from_secs(60), "the block did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "the block ended after {:.1} s more; normal traffic alone",
        waited.elapsed().as_secs_f64()
    );
    quiet.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    report("  ", &quiet[2]);
    println!("normal traffic during the attack again, on 50 other numbers of the prefix");
    let bot = tokio::spawn(attack(client.clone(), ATTACK_NUMBERS));
    attacked.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    let second_answers = bot.await??;
    let second_sent = provider.attack_requests.load(Ordering::Relaxed) - first_sent;
    report("  ", &attacked[1]);
    let all = client.blocks(true).await?;
    let lengths: Vec<i64> = all.iter().rev().map(block_seconds).collect();
    println!("  attack: answers {second_answers:?}; the provider saw {second_sent}; block lengths {lengths:?} s");
    println!("normal traffic alone, last");
    quiet.push(normal_traffic(&client, &provider, clients, seconds, &next).await?);
    report("  ", &quiet[3]);

    let p99s = |runs: &[Run]| runs.iter().map(|r| r.percentile(0.99)).collect::<Vec<_>>();
    let (quiet_p99, attacked_p99) = (p99s(&quiet), p99s(&attacked));
    let low = quiet_p99.iter().copied().fold(f64::INFINITY, f64::min);
    let high = quiet_p99.iter().copied().fold(0.0, f64::max);
    // Slower than every quiet phase is what would show the attack's cost; faster is noise.
    let within = attacked_p99.iter().all(|p| *p <= high);
    println!(
        "normal p99: quiet phases {quiet_p99:.1?} ms (spread {low:.1}-{high:.1}), attack phases {attacked_p99:.1?} ms: {}",
        if within { "none above the quiet phases" } else { "above every quiet phase" }
    );
    let result = json!({
        "clients": clients, "seconds": seconds, "min_sends": MIN_SENDS,
        "quiet": quiet.iter().map(summary).collect::<Vec<_>>(),
        "during_attack": attacked.iter().map(summary).collect::<Vec<_>>(),
        "p99_no_higher_than_quiet": within,
        "attack": {"requests": ATTACK_REQUESTS, "numbers": ATTACK_NUMBERS, "answers": first_answers, "provider_saw": first_sent},
        "repeat": {"answers": second_answers, "provider_saw": second_sent},
        "block_lengths_seconds": lengths,
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/fraud.json", serde_json::to_string_pretty(&result)?)?;
    anyhow::ensure!(
        first_sent <= MIN_SENDS && second_sent <= MIN_SENDS,
        "the provider saw more of the attack than the configured volume"
    );
    anyhow::ensure!(
        lengths == [BLOCK_SECONDS as i64, 2 * BLOCK_SECONDS as i64],
        "a repeat doubles the block: {lengths:?}"
    );
    child.kill().await?;
    common::drop_database(&admin, pool, DATABASE).await
}

fn summary(run: &Run) -> Value {
    json!({"otps": run.completed, "per_second": run.rate(),
           "p50_ms": run.percentile(0.5), "p99_ms": run.percentile(0.99)})
}

fn report(indent: &str, run: &Run) {
    println!(
        "{indent}{} OTPs sent and verified ({:.0}/s), none lost; send -> provider p50 {:.1} / p99 {:.1} ms",
        run.completed,
        run.rate(),
        run.percentile(0.5),
        run.percentile(0.99)
    );
}
