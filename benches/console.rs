//! The ops console's list and timeline pages over a million OTPs: `cargo bench --bench console`.
//!
//! Fills a scratch database with `BENCH_OTPS` OTPs (default 1,000,000) spread over seven
//! days, five apps and three countries, each with a provider request, a callback event and
//! its attempt, and a verification for most; then signs in as an operator and requests each
//! page shape in turn over HTTP on loopback (one client, so each figure is one page's own
//! time), and prints p50/p99 per shape with the plan PostgreSQL chose for its query.

mod common;

use std::sync::Arc;
use std::time::Instant;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use otp_courier::domain::OtpId;
use otp_courier::platform::config::Config;
use serde_json::json;
use uuid::Uuid;

use common::{env_or, Run};

/// The path of a page shape's `i`th request.
type PathOf = Box<dyn Fn(usize) -> String>;

const KEY: &str = "62656e63682d6b65792d62656e63682d6b65792d62656e63682d6b65792d3332";
const DB: &str = "otp_courier_console_bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let otps = env_or("BENCH_OTPS", 1_000_000) as i64;
    let rounds = env_or("BENCH_ROUNDS", 200) as usize;
    let (admin, url, pool) = common::scratch_database(DB, 8).await?;
    let config: Config = Config::from_figment(
        Figment::from(Toml::string(otp_courier::platform::config::DEFAULTS)).merge(Serialized::defaults(json!({
            "database": {"url": url.as_str(), "max_connections": 8},
            "api": {"listen": "127.0.0.1:0"},
            "pin": {"active_key": "b", "keys": {"b": KEY}},
            "log": {"filter": "warn"},
        }))),
    )?;
    for app in ["shop", "bank", "games", "travel", "news"] {
        otp_courier::tenancy::apps::create(
            &pool,
            &otp_courier::tenancy::apps::NewApp {
                id: app.into(),
                name: app.into(),
                ..Default::default()
            },
        )
        .await?;
    }
    let started = Instant::now();
    println!("filling {otps} OTPs with their attempts, events and verifications ...");
    fill(&pool, otps).await?;
    println!("filled in {:.0} s", started.elapsed().as_secs_f64());

    let operator = otp_courier::tenancy::keys::issue(&mut *pool.acquire().await?, None).await?;
    let config = Arc::new(config);
    let state = otp_courier::cli::build_api(config.clone(), &otp_courier::cli::Resources::new(&config)?);
    let (listener, address) = otp_courier::api::bind(&config).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(otp_courier::api::serve(listener, state, shutdown.clone()));
    let base = format!("http://{address}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = http
        .post(format!("{base}/console/sign-in"))
        .form(&[
            ("key_id", operator.key_id.as_str()),
            ("secret", operator.secret.as_str()),
        ])
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_string();

    // Ids to open timelines of, and a deep cursor, from the data itself.
    let sample: Vec<Uuid> = sqlx::query_scalar("select id from otps tablesample system (1) limit $1")
        .bind(rounds as i64)
        .fetch_all(&pool)
        .await?;
    let (deep_at, deep_id): (time::OffsetDateTime, Uuid) =
        sqlx::query_as("select created_at, id from otps order by created_at desc, id desc offset 500000 limit 1")
            .fetch_one(&pool)
            .await?;
    let deep = format!(
        "before={}_{deep_id}",
        deep_at
            .format(&time::format_description::well_known::Rfc3339)?
            .replace('+', "%2B")
    );
    let shapes: Vec<(&str, PathOf)> = vec![
        ("list, no filter", Box::new(|_| "/console/otps".to_string())),
        ("list, one app", Box::new(|_| "/console/otps?app=bank".to_string())),
        (
            "list, status failed",
            Box::new(|_| "/console/otps?status=failed".to_string()),
        ),
        ("list, country DE", Box::new(|_| "/console/otps?country=DE".to_string())),
        (
            "list, last 4 digits",
            Box::new(|i| format!("/console/otps?phone={:04}", (i * 37) % 10_000)),
        ),
        (
            "list, request id",
            Box::new(|i| format!("/console/otps?app=shop&request=req-{}", i * 4999 % 1_000_000)),
        ),
        (
            "list, a day's window",
            Box::new(|_| "/console/otps?since=2026-01-03T00:00&until=2026-01-04T00:00".to_string()),
        ),
        (
            "list, page 10,000 (cursor)",
            Box::new(move |_| format!("/console/otps?{deep}")),
        ),
        (
            "timeline",
            Box::new(move |i| format!("/console/otps/{}", OtpId::from_uuid(sample[i % sample.len()]))),
        ),
    ];
    let mut results = Vec::new();
    println!("\n| page | p50 ms | p99 ms | slowest ms, path |\n|---|---|---|---|");
    for (name, path) in &shapes {
        let mut latencies = Vec::with_capacity(rounds);
        let mut slowest = (std::time::Duration::ZERO, String::new());
        let begun = Instant::now();
        for i in 0..rounds {
            let at = Instant::now();
            let answer = http
                .get(format!("{base}{}", path(i)))
                .header("cookie", &cookie)
                .send()
                .await?;
            anyhow::ensure!(answer.status().is_success(), "{name}: {}", answer.status());
            answer.bytes().await?;
            latencies.push(at.elapsed());
            if at.elapsed() > slowest.0 {
                slowest = (at.elapsed(), path(i));
            }
        }
        let run = Run {
            completed: rounds,
            seconds: begun.elapsed().as_secs_f64(),
            latencies,
        };
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} `{}` |",
            run.percentile(0.5),
            run.percentile(0.99),
            slowest.0.as_secs_f64() * 1000.0,
            slowest.1
        );
        results.push(json!({"page": name, "p50_ms": run.percentile(0.5), "p99_ms": run.percentile(0.99)}));
    }
    shutdown.cancel();
    plans(&pool).await?;
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/console.json",
        serde_json::to_vec_pretty(&json!({"otps": otps, "rounds": rounds, "pages": results}))?,
    )?;
    println!("written to target/bench/console.json");
    if std::env::var_os("BENCH_KEEP").is_none() {
        common::drop_database(&admin, pool, DB).await?;
    } else {
        println!("kept database {DB} (BENCH_KEEP)");
    }
    Ok(())
}

/// OTPs over the week before 2026-01-08 (times fixed, so the window shape is stable), with
/// one provider request, one callback event with one attempt, and a verification for 70 %.
async fn fill(pool: &sqlx::PgPool, otps: i64) -> anyhow::Result<()> {
    let chunk = 100_000;
    let mut from = 0;
    while from < otps {
        let to = (from + chunk).min(otps);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "insert into otps (id, app_id, request_id, request_id_derived, phone_number, country, channel, locale,
                               template, parts, provider, pin_type, pin_length, pin_key_id, max_attempts, ttl_seconds,
                               expires_at, status, delivery, sent_at, verified_at, callback_url, created_at, pin_salt,
                               last_error)
             select id, (array['shop','bank','games','travel','news'])[1 + i % 5], 'req-' || i, false,
                    case i % 3 when 0 then '+33612' || lpad((i % 1000000)::text, 6, '0')
                               when 1 then '+1415555' || lpad((i % 10000)::text, 4, '0')
                               else '+49151' || lpad((i % 100000000)::text, 8, '0') end,
                    (array['FR','US','DE'])[1 + i % 3], 'sms', 'en', 'Code {{pin}}', 1, 'twilio', 'numbers', 6, 'b',
                    5, 300, at + interval '5 minutes',
                    case when i % 20 = 7 then 'failed' when i % 10 < 7 then 'verified' else 'expired' end,
                    case when i % 20 = 7 then 'failed' else 'delivered' end,
                    case when i % 20 = 7 then null else at + interval '200 ms' end,
                    case when i % 10 < 7 and i % 20 <> 7 then at + interval '20 s' end,
                    'https://hooks.example.test/otp', at, uuid_send(id),
                    case when i % 20 = 7 then '{\"class\": \"provider_rejected\"}'::jsonb end
             from (select i, gen_random_uuid() as id,
                          timestamptz '2026-01-08 00:00:00+00' - (i * (604800.0 / $3)) * interval '1 second' as at
                   from generate_series($1::bigint, $2::bigint - 1) as i) g",
        )
        .bind(from)
        .bind(to)
        .bind(otps as f64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into delivery_attempts (otp_id, claim, provider, started_at, latency_ms, outcome, http_status, message_id)
             select id, 1, 'twilio', created_at + interval '50 ms', 140, case when status = 'failed' then 'permanent' else 'accepted' end,
                    case when status = 'failed' then 400 else 201 end, 'SM' || md5(id::text)
             from otps where request_id = any(select 'req-' || i from generate_series($1::bigint, $2::bigint - 1) i)",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "with events as (
                 insert into outbox (id, otp_id, app_id, event_type, callback_url, payload, created_at, state, attempts, delivered_at)
                 select gen_random_uuid(), id, app_id, 'otp.sent', callback_url, '{}', created_at + interval '250 ms', 'delivered', 1,
                        created_at + interval '300 ms'
                 from otps where request_id = any(select 'req-' || i from generate_series($1::bigint, $2::bigint - 1) i)
                 returning id, created_at)
             insert into callback_attempts (event_id, attempt, started_at, latency_ms, http_status)
             select id, 1, created_at + interval '20 ms', 30, 200 from events",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into verification_attempts (otp_id, at, outcome)
             select id, verified_at, 'verified' from otps
             where verified_at is not null
               and request_id = any(select 'req-' || i from generate_series($1::bigint, $2::bigint - 1) i)",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to;
    }
    sqlx::query("vacuum analyze").execute(pool).await?;
    Ok(())
}

/// The plans behind the pages, as docs/BENCHMARKS.md names them.
async fn plans(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let queries = [
        ("no filter", "select id from otps order by created_at desc, id desc limit 51"),
        ("one app", "select id from otps where app_id = 'bank' order by created_at desc, id desc limit 51"),
        ("status failed", "select id from otps where status = 'failed' order by created_at desc, id desc limit 51"),
        ("country DE", "select id from otps where country = 'DE' order by created_at desc, id desc limit 51"),
        (
            "last 4 digits (0000, the commonest ending)",
            "select id from otps where reverse(phone_number) ~>=~ '0000' and reverse(phone_number) ~<~ '0000~'
             order by created_at + interval '0 seconds' desc, id desc limit 51",
        ),
        (
            "cursor",
            "select id from otps where (created_at, id) < (timestamptz '2026-01-04 12:00:00+00', '00000000-0000-0000-0000-000000000000')
             order by created_at desc, id desc limit 51",
        ),
    ];
    println!();
    for (name, query) in queries {
        let plan: Vec<String> = sqlx::query_scalar(&format!("explain (costs off) {query}"))
            .fetch_all(pool)
            .await?;
        println!("plan, {name}:\n  {}", plan.join("\n  "));
    }
    Ok(())
}
