//! Verify throughput over HTTP on loopback, against the database's ceiling for the same
//! transaction, in one run on one machine: `cargo bench --bench verify`.
//!
//! Ceiling: plain sqlx clients running the verification transaction (lock the OTP row,
//! count the attempt, write the status, the attempt record and the outbox event) as fast as
//! the database takes it; like ours, its transaction does not notify the dispatchers (see
//! `outbox::without_notify`). Every OTP has a callback URL, so every event is pending
//! for the dispatcher, as in a service whose apps take callbacks (none runs here). Ours: `POST /v1/otp/verify` with correct codes against the real API
//! (credentials, rate limit, verification), each request a different OTP. The load generator
//! runs in the same process as the server, so both share the machine's cores.

mod common;

use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use otp_courier::domain::{AppId, OtpId};
use otp_courier::message::pin::{self, PinKey, PinLength, PinType};
use otp_courier::platform::config::Config;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use common::{drive, env_or, Run};

const KEY: &str = "62656e63682d6b65792d62656e63682d6b65792d62656e63682d6b65792d3332";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let clients = env_or("BENCH_CLIENTS", 32) as usize;
    let (admin, url, pool) = common::scratch_database("otp_courier_bench", clients as u32 + 4).await?;

    let config: Config = Config::from_figment(
        Figment::from(Toml::string(otp_courier::platform::config::DEFAULTS)).merge(Serialized::defaults(json!({
            "database": {"url": url.as_str(), "max_connections": clients + 4},
            "api": {"listen": "127.0.0.1:0"},
            "limits": {"verify_per_app": {"max": 1_000_000, "window_seconds": 1}},
            "pin": {"active_key": "b", "keys": {"b": KEY}},
            "log": {"filter": "warn"},
        }))),
    )?;
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
    let key = otp_courier::tenancy::keys::issue(&mut *pool.acquire().await?, Some(&app)).await?;

    let needed = 400_000;
    println!("preparing {needed} OTPs ...");
    let ceiling_ids = insert_otps(&pool, needed / 2).await?;
    let api_ids = insert_otps(&pool, needed / 2).await?;

    println!("ceiling: the verification transaction straight on PostgreSQL, {clients} clients, {seconds} s");
    let ceiling = raw_transactions(&pool, ceiling_ids, clients, Duration::from_secs(seconds)).await?;

    let config = Arc::new(config);
    let state = otp_courier::cli::build_api(config.clone(), &otp_courier::cli::Resources::new(&config)?);
    let (listener, address) = otp_courier::api::bind(&config).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(otp_courier::api::serve(listener, state, shutdown.clone()));
    println!("otp-courier: POST /v1/otp/verify on {address}, {clients} clients, {seconds} s");
    let ours = http_verifications(
        &format!("http://{address}"),
        &key.key_id,
        &key.secret,
        api_ids,
        clients,
        Duration::from_secs(seconds),
    )
    .await?;
    shutdown.cancel();

    let ratio = ours.rate() / ceiling.rate();
    println!();
    println!("| measure | verifications/s | p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, run) in [
        ("PostgreSQL ceiling (same transaction, no HTTP)", &ceiling),
        ("otp-courier HTTP verify", &ours),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} |",
            run.rate(),
            run.percentile(0.5),
            run.percentile(0.95),
            run.percentile(0.99)
        );
    }
    println!("\nratio otp-courier / ceiling: {ratio:.2}");
    let result = json!({
        "clients": clients, "seconds": seconds,
        "ceiling_per_second": ceiling.rate(), "verify_per_second": ours.rate(), "ratio": ratio,
        "verify_latency_ms": {"p50": ours.percentile(0.5), "p95": ours.percentile(0.95), "p99": ours.percentile(0.99)},
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/verify.json", serde_json::to_vec_pretty(&result)?)?;
    println!("written to target/bench/verify.json");
    common::drop_database(&admin, pool, "otp_courier_bench").await?;
    Ok(())
}

/// Where the OTPs' events would be called back: loopback's discard port (no dispatcher runs).
const CALLBACK_URL: &str = "http://127.0.0.1:9/hook";

/// Pending, sent OTPs with known ids; returns (id, PIN) pairs.
async fn insert_otps(pool: &PgPool, n: usize) -> anyhow::Result<Arc<Vec<(Uuid, String)>>> {
    let key = PinKey::parse(KEY)?;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(20_000) {
        sqlx::query(
            "insert into otps (id, app_id, request_id, request_id_derived, phone_number, channel, locale, template,
                               parts, provider, pin_type, pin_length, pin_key_id, max_attempts, ttl_seconds,
                               expires_at, delivery, sent_at, callback_url, pin_salt)
             select id, 'bench', id::text, false, '+1415555' || lpad((abs(hashtext(id::text)) % 10000)::text, 4, '0'),
                    'sms', 'en', 'Code {{pin}}', 1, 'file',
                    'numbers', 6, 'b', 5, 1800, now() + interval '30 minutes', 'sent', now(), $2, uuid_send(id)
             from unnest($1::uuid[]) as id",
        )
        .bind(chunk)
        .bind(CALLBACK_URL)
        .execute(pool)
        .await?;
    }
    Ok(Arc::new(
        ids.into_iter()
            .map(|id| {
                (
                    id,
                    // Each OTP's salt is its id's bytes (see the insert).
                    pin::derive(
                        &key,
                        &pin::PinInput {
                            app_id: "bench",
                            salt: id.as_bytes(),
                            otp: OtpId::from_uuid(id),
                            generation: 1,
                        },
                        PinType::Numbers,
                        PinLength::DEFAULT,
                    )
                    .expose()
                    .to_string(),
                )
            })
            .collect(),
    ))
}

async fn raw_transactions(
    pool: &PgPool,
    otps: Arc<Vec<(Uuid, String)>>,
    clients: usize,
    limit: Duration,
) -> anyhow::Result<Run> {
    let pool = pool.clone();
    let total = otps.len();
    drive(clients, limit, total, move |i| {
        let (pool, id) = (pool.clone(), otps[i].0);
        async move {
            let mut tx = pool.begin().await?;
            otp_courier::callbacks::outbox::without_notify(&mut tx).await?;
            let phone: String = sqlx::query_scalar("select phone_number from otps where id = $1 for update")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            // The number's count of wrong codes: held, read, and cleared by the correct code.
            let failures = format!("verify:failures:bench:{phone}");
            sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&failures)
                .execute(&mut *tx)
                .await?;
            sqlx::query("select hits from rate_limit_windows where key = $1 and window_start = $2")
                .bind(&failures)
                .bind(time::OffsetDateTime::UNIX_EPOCH)
                .fetch_optional(&mut *tx)
                .await?;
            sqlx::query("delete from rate_limit_windows where key = $1")
                .bind(&failures)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "update otps set attempts = attempts + 1, status = 'verified', verified_at = now() where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "insert into outbox (id, otp_id, app_id, event_type, callback_url, payload, state)
                 values ($1, $2, 'bench', 'otp.verified', $3, '{}', 'pending')",
            )
            .bind(Uuid::now_v7())
            .bind(id)
            .bind(CALLBACK_URL)
            .execute(&mut *tx)
            .await?;
            sqlx::query("insert into verification_attempts (otp_id, outcome) values ($1, 'verified')")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}

async fn http_verifications(
    base: &str,
    key: &str,
    secret: &str,
    otps: Arc<Vec<(Uuid, String)>>,
    clients: usize,
    limit: Duration,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let url = format!("{base}/v1/otp/verify");
    let auth = (key.to_string(), secret.to_string());
    let total = otps.len();
    drive(clients, limit, total, move |i| {
        let (http, url, auth, otps) = (http.clone(), url.clone(), auth.clone(), otps.clone());
        async move {
            let (id, pin) = &otps[i];
            let response = http
                .post(&url)
                .basic_auth(&auth.0, Some(&auth.1))
                .json(&json!({"otpId": OtpId::from_uuid(*id).to_string(), "code": pin}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "verify answered {}", response.status());
            Ok(())
        }
    })
    .await
}
