//! Verification under contention and at its limits.

use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::api::Api;

async fn verify_status(api: &Api, otp_id: &str, code: &str) -> StatusCode {
    api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": code}))
        .await
        .0
}

#[sqlx::test]
async fn a_hundred_concurrent_correct_verifications_yield_exactly_one_success(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let statuses: Vec<StatusCode> = stream::iter(0..100)
        .map(|_| verify_status(&api, &otp_id, &pin))
        .buffer_unordered(100)
        .collect()
        .await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let verified: i64 = sqlx::query_scalar("select count(*) from outbox where event_type = 'otp.verified'")
        .fetch_one(&api.harness.pool)
        .await
        .expect("count");
    assert_eq!(verified, 1, "one otp.verified event");
    api.finish().await;
}

#[sqlx::test]
async fn ten_thousand_wrong_codes_never_succeed_and_count_at_most_max_attempts(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set("limits.verify_per_app", json!({"max": 1_000_000, "window_seconds": 1}))
    })
    .await;
    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let wrong: Vec<String> = (0..10_000)
        .map(|n| format!("{n:06}"))
        .filter(|code| *code != pin)
        .take(10_000)
        .collect();
    let statuses: Vec<StatusCode> = stream::iter(wrong.iter())
        .map(|code| verify_status(&api, &otp_id, code))
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(statuses.len(), wrong.len());
    assert!(!statuses.contains(&StatusCode::OK), "a wrong code never verifies");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
            .count(),
        4
    );
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(
        (view["attempts"].as_i64(), view["status"].as_str()),
        (Some(5), Some("max_attempts_reached"))
    );
    assert_eq!(
        verify_status(&api, &otp_id, &pin).await,
        StatusCode::GONE,
        "even the right code is refused now"
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_correct_code_on_the_last_allowed_attempt_succeeds(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "maxAttempts": 3}))
        .await;
    assert_eq!(
        verify_status(&api, &otp_id, "wrong1").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        verify_status(&api, &otp_id, "wrong2").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(verify_status(&api, &otp_id, &pin).await, StatusCode::OK);
    api.finish().await;
}

#[sqlx::test]
async fn expired_and_exhausted_otps_answer_with_distinct_problem_types(pool: PgPool) {
    let api = Api::start(pool).await;
    let (exhausted, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "maxAttempts": 1, "requestId": "a"}))
        .await;
    let (status, problem) = api
        .post("/v1/otp/verify", json!({"otpId": exhausted, "code": "nope"}))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::GONE, Some("urn:otp-courier:problem:attempts-exhausted"))
    );
    assert_eq!(verify_status(&api, &exhausted, &pin).await, StatusCode::GONE);

    let (expired, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "requestId": "b"}))
        .await;
    sqlx::query("update otps set expires_at = now() - interval '1 second' where request_id = 'b'")
        .execute(&api.harness.pool)
        .await
        .expect("expire");
    let (status, problem) = api.post("/v1/otp/verify", json!({"otpId": expired, "code": pin})).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::GONE, Some("urn:otp-courier:problem:expired"))
    );
    let (_, events) = api.get(&format!("/v1/otp/{expired}/events")).await;
    assert_eq!(events[1]["type"], "otp.expired");
    api.finish().await;
}
