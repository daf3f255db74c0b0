//! The ops console in a real browser: Debian's Chromium, driven by Playwright for Python
//! (`tests/browser/console.py`), against a running API, worker and dispatcher, a fake
//! provider and a callback receiver on loopback. The script signs in, finds an OTP by its
//! last four digits, reads its timeline, replays one failed delivery and then 50 more after
//! a dry run, requeues a dead letter of an app created since, and signs out; a screenshot
//! of each page lands in `target/console-screenshots/`. This test then checks the database.

use std::process::Command;
use std::time::Duration;

use lapin::BasicProperties;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::api::Api;
use crate::harness::wait_until;

const FAILED: usize = 51;

fn browser_python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oracle-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/oracles.sh` (scripts/test.sh does)",
        python.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: run `bash scripts/oracles.sh` (scripts/test.sh does)"
    );
    python
}

#[sqlx::test]
async fn an_operator_works_the_console_in_chromium(pool: PgPool) {
    let python = browser_python();
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let mut api = Api::start_with(pool, |h| {
        h.set("limits.send_per_app", json!({"max": 1000, "window_seconds": 1}));
    })
    .await;
    let operator = api.harness.operator_key().await;
    // The provider refuses the first 51 requests for good (a 400), then accepts.
    api.harness.provider.reset().await;
    api.harness
        .provider_answers_then_accepts(
            ResponseTemplate::new(400).set_body_string("invalid number"),
            FAILED as u64,
        )
        .await;
    let mut failed_ids = Vec::new();
    for i in 0..FAILED {
        let (status, body) = api
            .post(
                "/v1/otp/send",
                json!({"phoneNumber": format!("+1415555{:04}", 2000 + i), "requestId": format!("bulk-{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        failed_ids.push(body["otpId"].as_str().expect("otpId").to_string());
    }
    let pool = api.harness.pool.clone();
    wait_until("51 deliveries failed", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from otps where status = 'failed'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == FAILED as i64
    })
    .await;

    // A fraud block in force, for the failures page.
    sqlx::query(
        "insert into fraud_blocks (rule, scope, target, sends, verified, ends_at)
         values ('conversion', 'prefix', '+2376500', 31, 1, now() + interval '12 hours')",
    )
    .execute(&pool)
    .await
    .expect("a block");

    // One OTP delivered, verified, and called back, to be found by its last four digits.
    let callback = format!("{}/hooks/otp", receiver.uri());
    let (found, pin) = api
        .send_delivered(json!({"phoneNumber": "+33612348123", "requestId": "login-8123", "otpCallbackUrl": callback}))
        .await;
    let (status, verified) = api.post("/v1/otp/verify", json!({"otpId": found, "code": pin})).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    api.harness.webhook_secret("shop", None).await;
    api.harness.start_dispatcher();
    wait_until("its callbacks were delivered", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from outbox where state = 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            >= 2
    })
    .await;

    // A job for an app that does not exist yet is dead-lettered; then the app is created.
    api.harness
        .publish_with(
            &serde_json::to_vec(&json!({"appId": "late", "phoneNumber": "+14155559876", "requestId": "late-1"}))
                .expect("json"),
            BasicProperties::default().with_message_id("late-job-1".into()),
        )
        .await;
    let dlq = api.harness.dlq.clone();
    wait_until("the job is dead-lettered", Duration::from_secs(10), || async {
        api.harness.ready(&dlq).await == 1
    })
    .await;
    api.harness
        .create_app("late", json!({"": "Your code is {{pin}}"}))
        .await;

    let screenshots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot folder");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let base = api.base.clone();
    let (key_id, secret) = operator.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("CONSOLE_BASE", base)
            .env("OPERATOR_KEY_ID", key_id)
            .env("OPERATOR_SECRET", secret)
            .env("FIND_LAST4", "8123")
            .env("REPLAY_LAST4", "2050")
            .env("DEAD_LETTER_NUMBER", "+14155559876")
            .env("BULK_COUNT", (FAILED - 1).to_string())
            .env("SCREENSHOTS", screenshots)
            .output()
            .expect("python runs")
    })
    .await
    .expect("the browser run ends");
    assert!(
        output.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // What the browser did, as the database tells it.
    let sent: i64 = sqlx::query_scalar("select count(*) from otps where id = any($1) and delivery = 'sent'")
        .bind(
            failed_ids
                .iter()
                .map(|id| id.parse::<otp_courier::domain::OtpId>().expect("id").as_uuid())
                .collect::<Vec<_>>(),
        )
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(sent, FAILED as i64, "every failed OTP was replayed and sent");
    let late: i64 = sqlx::query_scalar("select count(*) from otps where app_id = 'late'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(late, 1, "the requeued job became an OTP of the new app");
    let actions: Vec<(String, bool, i32)> = sqlx::query_as(
        "select action, dry_run, changed from operator_actions where actor = $1 and finished_at is not null order by id",
    )
    .bind(format!("console:{}", operator.0))
    .fetch_all(&pool)
    .await
    .expect("actions");
    let actions: Vec<(&str, bool, i32)> = actions.iter().map(|(a, d, c)| (a.as_str(), *d, *c)).collect();
    assert_eq!(
        actions,
        vec![
            ("replay-deliveries", false, 1),
            ("lift-fraud-block", false, 1),
            ("replay-deliveries", true, 0),
            ("replay-deliveries", false, (FAILED - 1) as i32),
            ("dlq-requeue", true, 0),
            ("dlq-requeue", false, 1),
        ]
    );
    let sessions: i64 = sqlx::query_scalar("select count(*) from console_sessions where ended_at is null")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(sessions, 0, "the browser signed out");
    api.finish().await;
}
