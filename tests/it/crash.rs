use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use wiremock::ResponseTemplate;

use crate::harness::{wait_until, Harness, RoleProcess};

#[sqlx::test]
async fn a_worker_killed_between_provider_call_and_ack_sends_the_same_pin_at_most_once_more(pool: PgPool) {
    let harness = Harness::new(pool).await;
    // The first request is answered slowly, so the worker is killed while it waits.
    harness
        .provider_answers_then_accepts(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)), 1)
        .await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = harness.config_file(dir.path());
    let log = dir.path().join("worker.log");

    let mut worker = RoleProcess::spawn("worker", &config, &log);
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "r-1"}"#)
        .await;
    wait_until("the provider is called", Duration::from_secs(20), || async {
        !harness.provider_requests().await.is_empty()
    })
    .await;
    worker.kill().await;
    let otp = &harness.otp_rows().await[0];
    assert_eq!(otp.delivery, "sending", "killed before the outcome was recorded");

    let mut worker = RoleProcess::spawn("worker", &config, &log);
    wait_until("delivered after restart", Duration::from_secs(30), || async {
        harness.otp_rows().await[0].delivery == "sent"
    })
    .await;
    let queue = harness.queue.clone();
    wait_until("the redelivered message is acked", Duration::from_secs(10), || async {
        harness.ready(&queue).await == 0
    })
    .await;
    worker.kill().await;

    let requests = harness.provider_requests().await;
    assert!(requests.len() <= 2, "at most once more: {} requests", requests.len());
    let pin = harness.otp_rows().await[0].pin();
    assert!(
        requests.iter().all(|r| r["text"] == format!("Code {pin}")),
        "every request carries the same PIN"
    );
    let rows = harness.otp_rows().await;
    assert_eq!(rows.len(), 1, "the redelivery made no second OTP");
    assert_eq!(
        (rows[0].status.as_str(), rows[0].delivery.as_str()),
        ("pending", "sent")
    );
    assert_eq!(harness.events().await, ["otp.sent"], "one sent event");
    harness.finish().await;
}

#[sqlx::test]
async fn proxies_named_in_the_environment_are_not_used_for_provider_requests(pool: PgPool) {
    let harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    // A proxy that would see the message: it answers, so a request through it would succeed.
    let proxy = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&proxy)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = harness.config_file(dir.path());
    let log = dir.path().join("worker.log");
    let url = proxy.uri();
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, url.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let mut worker = RoleProcess::spawn_with_env("worker", &config, &log, &env);
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "r-1"}"#)
        .await;
    wait_until("sent", Duration::from_secs(20), || async {
        harness.otp_rows().await.first().is_some_and(|o| o.delivery == "sent")
    })
    .await;
    worker.kill().await;
    assert_eq!(
        harness.provider_requests().await.len(),
        1,
        "the provider was called directly"
    );
    assert!(
        proxy.received_requests().await.unwrap_or_default().is_empty(),
        "the environment's proxy saw nothing"
    );
    harness.finish().await;
}
