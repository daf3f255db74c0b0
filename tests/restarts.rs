//! The worker rides out a RabbitMQ restart and a PostgreSQL restart without being restarted
//! itself, and `/readyz` says when the broker is away. These tests stop shared services, so `scripts/test.sh` runs them on their own,
//! after the parallel suite, one at a time; they leave both services running.

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use harness::{postgres_version, wait_until, Harness};
use serde_json::json;
use sqlx::PgPool;

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

async fn harness(pool: PgPool) -> Harness {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    harness
}

async fn send_and_wait(harness: &Harness, n: usize) {
    let job = json!({"appId": "shop", "phoneNumber": "+14155550123", "requestId": format!("job-{n}")});
    harness.publish(job.to_string().as_bytes()).await;
    // The test's own pool meets the restart too: an error just means "not yet".
    wait_until(&format!("job {n} sent"), Duration::from_secs(90), || async {
        let sent: Result<i64, _> = sqlx::query_scalar("select count(*) from otps where delivery = 'sent'")
            .fetch_one(&harness.pool)
            .await;
        sent.is_ok_and(|sent| sent == n as i64)
    })
    .await;
}

#[sqlx::test]
async fn the_worker_survives_a_broker_restart_and_a_database_restart_and_readyz_tells(pool: PgPool) {
    let mut harness = harness(pool).await;
    let readyz = format!("{}/readyz", harness.start_api().await);
    let ready = |expected: u16| {
        let readyz = readyz.clone();
        async move {
            let status = reqwest::get(&readyz).await.map(|r| r.status().as_u16());
            status.is_ok_and(|status| status == expected)
        }
    };
    wait_until("ready", Duration::from_secs(30), || ready(200)).await;
    send_and_wait(&harness, 1).await;

    run("rabbitmqctl", &["-q", "stop_app"]);
    wait_until("/readyz 503 while the broker is down", Duration::from_secs(30), || {
        ready(503)
    })
    .await;
    run("rabbitmqctl", &["-q", "start_app"]);
    run("rabbitmqctl", &["-q", "await_startup"]);
    wait_until("/readyz 200 once it is back", Duration::from_secs(60), || ready(200)).await;
    harness.reconnect().await;
    send_and_wait(&harness, 2).await;

    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &postgres_version(), "main", "restart"],
    );
    send_and_wait(&harness, 3).await;

    assert_eq!(harness.provider_requests().await.len(), 3);
    harness.finish().await;
}
