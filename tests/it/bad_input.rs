//! Hostile input at both edges: each message or request gets a clear refusal with a reason,
//! and the service goes on serving the next one.

use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::Api;
use crate::harness::{text_header, wait_until, Harness};

fn job(request_id: &str) -> Vec<u8> {
    json!({"appId": "shop", "phoneNumber": "+14155550123", "requestId": request_id})
        .to_string()
        .into_bytes()
}

#[sqlx::test]
async fn hostile_amqp_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();

    // Not UTF-8 at all.
    harness.publish(b"\xff\xfe\x00{\"appId\": \"shop\"}\x80").await;
    // Valid UTF-8 and under the size limit, nested 20,000 deep inside `metadata`.
    let nested = format!(
        r#"{{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "deep", "metadata": {}1{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    harness.publish(nested.as_bytes()).await;
    // A valid job under 40 KiB of headers (the limit is 16 KiB).
    let mut padding = FieldTable::default();
    for i in 0..40 {
        padding.insert(
            format!("x-pad-{i}").into(),
            AMQPValue::LongString("x".repeat(1024).into()),
        );
    }
    harness
        .publish_with(&job("padded"), BasicProperties::default().with_headers(padding))
        .await;
    // A valid job whose headers nest tables, each small, 40 KiB in all.
    let mut nest = FieldTable::default();
    for i in 0..40 {
        let mut inner = FieldTable::default();
        inner.insert("v".into(), AMQPValue::LongString("y".repeat(1024).into()));
        nest.insert(format!("t{i}").into(), AMQPValue::FieldTable(inner));
    }
    let mut nested_headers = FieldTable::default();
    nested_headers.insert("x-nest".into(), AMQPValue::FieldTable(nest));
    harness
        .publish_with(
            &job("nested-headers"),
            BasicProperties::default().with_headers(nested_headers),
        )
        .await;
    harness.publish(&job("after-the-bad-ones")).await;

    wait_until(
        "the valid job after the bad ones is sent",
        Duration::from_secs(10),
        || async { harness.provider_requests().await.len() == 1 },
    )
    .await;
    let dlq = harness.dlq.clone();
    wait_until("every bad message dead-lettered", Duration::from_secs(10), || async {
        harness.ready(&dlq).await == 4
    })
    .await;
    let dead = harness.drain_dlq().await;
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|(_, p)| text_header(p, "x-otp-rejection-reason").expect("a reason"))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "headers_too_large",
            "headers_too_large",
            "malformed_json",
            "malformed_json"
        ]
    );
    for (body, properties) in &dead {
        let detail = text_header(properties, "x-otp-rejection-detail").expect("a detail");
        if text_header(properties, "x-otp-rejection-reason").as_deref() == Some("headers_too_large") {
            assert!(detail.contains("amqp.max_header_bytes"), "{detail}");
            let names: Vec<String> = properties
                .headers()
                .as_ref()
                .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            assert!(
                names.iter().all(|n| n.starts_with("x-otp-")),
                "the oversized headers are dropped: {names:?}"
            );
            assert!(body.starts_with(b"{\"appId\""), "the body is kept");
        } else {
            assert!(!detail.is_empty());
        }
    }
    assert_eq!(harness.otp_rows().await.len(), 1, "only the valid job made an OTP");
    assert_eq!(harness.ready(&harness.queue).await, 0, "nothing was requeued");
    harness.finish().await;
}

/// Sends `head` and part of its body, then stops; returns the server's whole answer, or what
/// had arrived after `limit`.
async fn trickle(address: &str, head: &str, limit: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(br#"{"phoneNumber": "+1415"#)
        .await
        .expect("part of the body");
    let deadline = Instant::now() + limit;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !is_complete(&answer) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// An HTTP/1.1 answer whose head has arrived, and as much body as its content-length says.
fn is_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= end + 4 + length
}

#[sqlx::test]
async fn hostile_http_requests_get_problems_and_the_api_keeps_serving(pool: PgPool) {
    let api = Api::start_with(pool, |h| h.set("api.request_timeout_seconds", json!(1))).await;
    let url = format!("{}/v1/otp/send", api.base);
    let problem = |response: reqwest::Response| async move {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(content_type, "application/problem+json");
        (
            response.status(),
            response.json::<Value>().await.expect("a problem body"),
        )
    };

    // Not UTF-8, under a JSON content type.
    let response = api
        .as_app(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body(&b"{\"appId\": \"shop\xff\xfe\"}"[..]),
        )
        .send()
        .await
        .expect("send");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");

    // Nested far deeper than the parser goes.
    let nested = format!(
        r#"{{"phoneNumber": "+14155550123", "metadata": {}}}"#,
        "[".repeat(30_000)
    );
    let response = api
        .as_app(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body(nested),
        )
        .send()
        .await
        .expect("send");
    let (status, body) = problem(response).await;
    assert!(status.is_client_error(), "{status} {body}");

    // Over the body limit, with the length announced.
    let response = api
        .as_app(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 70_000]),
        )
        .send()
        .await
        .expect("send");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // A body that never finishes arriving: 408 after the request timeout, while the API goes
    // on answering others.
    let address = api.base.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /v1/otp/send HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: 400\r\nx-api-key: {}\r\nx-api-secret: {}\r\n\r\n",
        api.key.0, api.key.1
    );
    let slow = tokio::spawn(async move { trickle(&address, &head, Duration::from_secs(10)).await });
    let health = api
        .http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK, "served while a body trickles in");
    let answer = slow.await.expect("trickle task");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");

    // And a good request still goes through.
    let (status, accepted) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "requestId": "after"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert!(
        api.harness.provider_requests().await.len() <= 1,
        "none of the bad requests was sent"
    );
    api.finish().await;
}
