use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::harness::{wait_until, Harness};

async fn send_one(harness: &mut Harness) {
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123"}"#)
        .await;
}

async fn wait_for_delivery(harness: &Harness, state: &str) {
    wait_until(&format!("delivery {state}"), Duration::from_secs(15), || async {
        harness
            .otp_rows()
            .await
            .first()
            .is_some_and(|otp| otp.delivery == state)
    })
    .await;
}

async fn attempt_outcomes(harness: &Harness) -> Vec<(String, Option<i32>)> {
    sqlx::query_as("select outcome, http_status from delivery_attempts order by id")
        .fetch_all(&harness.pool)
        .await
        .expect("attempts")
}

#[sqlx::test]
async fn a_provider_answering_503_twice_then_200_is_retried_and_the_otp_ends_sent(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness
        .provider_answers_then_accepts(ResponseTemplate::new(503), 2)
        .await;
    send_one(&mut harness).await;
    wait_for_delivery(&harness, "sent").await;

    let requests = harness.provider_requests().await;
    assert_eq!(requests.len(), 3);
    assert!(
        requests.windows(2).all(|w| w[0]["text"] == w[1]["text"]),
        "every try carries the same PIN"
    );
    let outcomes = attempt_outcomes(&harness).await;
    let expected = [("transient", Some(503)), ("transient", Some(503)), ("accepted", None)];
    assert_eq!(outcomes, expected.map(|(o, s)| (o.to_string(), s)));
    assert_eq!(harness.events().await, ["otp.sent"]);
    harness.finish().await;
}

#[sqlx::test]
async fn a_provider_answering_400_is_not_retried_and_the_otp_ends_failed(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid destination"})))
        .mount(&harness.provider)
        .await;
    send_one(&mut harness).await;
    wait_for_delivery(&harness, "failed").await;

    let otp = &harness.otp_rows().await[0];
    assert_eq!(otp.status, "failed");
    let error = otp.last_error.clone().expect("error recorded");
    assert_eq!(error["class"], "provider_rejected");
    assert_eq!(error["httpStatus"], 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid destination"),
        "{error}"
    );
    assert_eq!(harness.provider_requests().await.len(), 1);
    assert_eq!(harness.events().await, ["otp.delivery_failed"]);
    harness.finish().await;
}

#[sqlx::test]
async fn a_provider_that_hangs_is_cut_off_by_the_timeout_and_retried(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness
        .provider_answers_then_accepts(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)), 1)
        .await;
    send_one(&mut harness).await;
    wait_for_delivery(&harness, "sent").await;

    let outcomes = attempt_outcomes(&harness).await;
    assert_eq!(
        outcomes,
        [("transient".to_string(), None), ("accepted".to_string(), None)]
    );
    let timeout: String = sqlx::query_scalar("select error from delivery_attempts order by id limit 1")
        .fetch_one(&harness.pool)
        .await
        .expect("first attempt");
    assert!(timeout.contains("no answer within"), "{timeout}");
    harness.finish().await;
}

#[sqlx::test]
async fn a_round_of_transient_failures_is_rescheduled_durably_and_then_delivered(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    // quick_retries = 2: the first round makes three requests, all refused.
    harness
        .provider_answers_then_accepts(ResponseTemplate::new(502), 3)
        .await;
    send_one(&mut harness).await;
    wait_for_delivery(&harness, "sent").await;

    let otp = &harness.otp_rows().await[0];
    assert_eq!(otp.delivery_claims, 2, "a second, scheduled round delivered it");
    assert_eq!(harness.provider_requests().await.len(), 4);
    harness.finish().await;
}

#[sqlx::test]
async fn retry_after_from_the_provider_postpones_the_next_round(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness
        .provider_answers_then_accepts(ResponseTemplate::new(429).insert_header("Retry-After", "2"), 1)
        .await;
    send_one(&mut harness).await;
    wait_for_delivery(&harness, "sent").await;

    let started: Vec<time::OffsetDateTime> = sqlx::query_scalar("select started_at from delivery_attempts order by id")
        .fetch_all(&harness.pool)
        .await
        .expect("attempts");
    assert_eq!(started.len(), 2, "a long Retry-After ends the quick retries");
    assert!(
        started[1] - started[0] >= time::Duration::seconds(2),
        "waited {:?}",
        started[1] - started[0]
    );
    harness.finish().await;
}

#[sqlx::test]
async fn retries_stop_when_the_next_round_would_come_after_expiry(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set("delivery.retry_schedule_seconds", json!([120]));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&harness.provider)
        .await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "ttl": 60}"#)
        .await;
    wait_for_delivery(&harness, "failed").await;

    assert_eq!(harness.provider_requests().await.len(), 3, "one round only");
    assert_eq!(
        harness.otp_rows().await[0]
            .last_error
            .as_ref()
            .map(|e| e["class"].clone()),
        Some(json!("provider_unavailable"))
    );
    harness.finish().await;
}
