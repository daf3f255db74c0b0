use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::BasicProperties;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::{text_header, wait_until, Harness};

fn header(properties: &BasicProperties, name: &str) -> String {
    text_header(properties, name).unwrap_or_else(|| panic!("header {name} missing or not a string"))
}

#[sqlx::test]
async fn invalid_jobs_are_dead_lettered_with_a_reason_and_the_worker_keeps_consuming(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();

    let huge = format!(
        r#"{{"appId": "shop", "phoneNumber": "+14155550123", "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed_json"),
        (
            br#"{"appId": "shop", "phoneNumber": "+1 555 CALL NOW"}"#.to_vec(),
            "invalid_phone_number",
        ),
        (
            br#"{"appId": "shop", "phoneNumber": "+14155550123", "template": "no code here"}"#.to_vec(),
            "invalid_template",
        ),
        (
            br#"{"appId": "nobody", "phoneNumber": "+14155550123"}"#.to_vec(),
            "unknown_app",
        ),
        (huge.into_bytes(), "body_too_large"),
    ];
    for (body, _) in &cases {
        harness.publish(body).await;
    }
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "after-the-bad-ones"}"#)
        .await;

    wait_until(
        "a valid job after the bad ones is sent",
        Duration::from_secs(10),
        || async { harness.provider_requests().await.len() == 1 },
    )
    .await;
    let dlq = harness.dlq.clone();
    wait_until("every bad job dead-lettered", Duration::from_secs(10), || async {
        harness.ready(&dlq).await as usize == cases.len()
    })
    .await;

    let mut reasons: Vec<String> = harness
        .drain_dlq()
        .await
        .iter()
        .map(|(_, p)| header(p, "x-otp-rejection-reason"))
        .collect();
    let mut expected: Vec<String> = cases.iter().map(|(_, r)| r.to_string()).collect();
    reasons.sort();
    expected.sort();
    assert_eq!(reasons, expected);

    let mut recorded: Vec<String> = sqlx::query_scalar("select reason from otp_rejections")
        .fetch_all(&harness.pool)
        .await
        .expect("rejections");
    recorded.sort();
    assert_eq!(recorded, expected);
    assert_eq!(harness.otp_rows().await.len(), 1, "only the valid job made an OTP");
    assert_eq!(harness.ready(&harness.queue).await, 0, "nothing was requeued");
    harness.finish().await;
}

#[sqlx::test]
async fn a_dead_letter_keeps_the_body_and_says_why(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.start_worker();
    let body = br#"{"appId": "nobody", "phoneNumber": "+14155550123"}"#;
    harness
        .publish_with(body, BasicProperties::default().with_message_id("m-9".into()))
        .await;
    let dlq = harness.dlq.clone();
    wait_until("dead-lettered", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 1
    })
    .await;

    let letters = harness.drain_dlq().await;
    let (data, properties) = &letters[0];
    assert_eq!(data.as_slice(), body.as_slice());
    assert_eq!(properties.message_id().as_ref().map(|m| m.as_str()), Some("m-9"));
    assert_eq!(header(properties, "x-otp-rejection-reason"), "unknown_app");
    assert_eq!(header(properties, "x-otp-source-queue"), harness.queue);
    harness.finish().await;
}

/// Gives app `shop` a configured callback URL, where its rejections are called back.
async fn configure_callback(harness: &Harness) {
    sqlx::query("update apps set callback_url = 'http://127.0.0.1:9/hook' where id = 'shop'")
        .execute(&harness.pool)
        .await
        .expect("configure the callback URL");
}

#[sqlx::test]
async fn a_rejected_job_of_a_known_app_writes_an_otp_rejected_event(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    configure_callback(&harness).await;
    harness.start_worker();
    // The job's own callback URL is not trusted for a refusal: the app's configured one is used.
    let body = json!({"appId": "shop", "phoneNumber": "+14155550123", "ttl": 5,
                      "otpCallbackUrl": "http://127.0.0.1:9/from-the-job", "metadata": {"user": 7}});
    harness.publish(body.to_string().as_bytes()).await;
    wait_until("rejection event", Duration::from_secs(10), || async {
        harness.events().await == ["otp.rejected"]
    })
    .await;

    let (url, payload): (Option<String>, serde_json::Value) =
        sqlx::query_as("select callback_url, payload from outbox")
            .fetch_one(&harness.pool)
            .await
            .expect("event");
    assert_eq!(url.as_deref(), Some("http://127.0.0.1:9/hook"));
    assert_eq!(payload["type"], "otp.rejected");
    assert_eq!(payload["data"]["status"], "rejected");
    assert_eq!(payload["data"]["error"]["reason"], "invalid_field");
    assert_eq!(payload["data"]["metadata"], json!({"user": 7}));
    harness.finish().await;
}

#[sqlx::test]
async fn a_redelivered_rejection_is_dead_lettered_again_but_not_recorded_or_called_back_twice(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    configure_callback(&harness).await;
    let body = json!({"appId": "shop", "phoneNumber": "+1415", "requestId": "bad-1"}).to_string();
    let dlq = harness.dlq.clone();
    harness.start_worker();
    harness.publish(body.as_bytes()).await;
    wait_until("the first rejection", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 1
    })
    .await;
    harness.stop_worker().await;

    // The same message again, as the broker redelivers it when an ack was lost: taken,
    // returned unacknowledged, and so marked redelivered.
    harness.publish(body.as_bytes()).await;
    let taken = harness
        .channel
        .basic_get(harness.queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("get")
        .expect("the message");
    taken
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .expect("returned");
    harness.start_worker();
    wait_until("the redelivery dead-lettered", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 2
    })
    .await;

    let recorded: i64 = sqlx::query_scalar("select count(*) from otp_rejections")
        .fetch_one(&harness.pool)
        .await
        .expect("rejections");
    assert_eq!(recorded, 1, "one rejection record");
    assert_eq!(harness.events().await, ["otp.rejected"], "one callback");
    harness.finish().await;
}

#[sqlx::test]
async fn a_job_with_a_non_json_content_type_is_dead_lettered(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    let properties = BasicProperties::default().with_content_type("text/plain".into());
    harness
        .publish_with(br#"{"appId": "shop", "phoneNumber": "+14155550123"}"#, properties)
        .await;
    let dlq = harness.dlq.clone();
    wait_until("dead-lettered", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 1
    })
    .await;
    let letters = harness.drain_dlq().await;
    assert_eq!(header(&letters[0].1, "x-otp-rejection-reason"), "invalid_field");
    assert!(header(&letters[0].1, "x-otp-rejection-detail").contains("content-type"));
    harness.finish().await;
}

#[sqlx::test]
async fn values_the_database_cannot_store_are_dead_lettered_not_looped(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    let nul_template = json!({"appId": "shop", "phoneNumber": "+14155550123", "template": "Code {{pin}}\u{0}"});
    let nul_metadata = json!({"appId": "shop", "phoneNumber": "+14155550123", "metadata": {"k": "a\u{0}b"}});
    harness.publish(nul_template.to_string().as_bytes()).await;
    harness.publish(nul_metadata.to_string().as_bytes()).await;
    let nul_id = BasicProperties::default()
        .with_message_id("id\u{0}x".into())
        .with_app_id("nobody".into());
    harness
        .publish_with(br#"{"phoneNumber": "+14155550123"}"#, nul_id)
        .await;
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "fine"}"#)
        .await;

    let dlq = harness.dlq.clone();
    wait_until("three dead letters", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 3
    })
    .await;
    wait_until("the valid job is sent", Duration::from_secs(10), || async {
        harness.provider_requests().await.len() == 1
    })
    .await;
    let mut reasons: Vec<String> = harness
        .drain_dlq()
        .await
        .iter()
        .map(|(_, p)| header(p, "x-otp-rejection-reason"))
        .collect();
    reasons.sort();
    // The NUL message-id would be the request id: refused as a field before the app is looked up.
    assert_eq!(reasons, ["invalid_field", "invalid_field", "invalid_template"]);
    let recorded: i64 = sqlx::query_scalar("select count(*) from otp_rejections")
        .fetch_one(&harness.pool)
        .await
        .expect("count");
    assert_eq!(
        recorded, 3,
        "the rejection with a NUL in its message-id was recorded without it"
    );
    assert_eq!(
        harness.ready(&harness.queue).await,
        0,
        "nothing loops back into the queue"
    );
    harness.finish().await;
}
