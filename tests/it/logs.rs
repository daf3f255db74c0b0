//! The JSON logs of a real `otp-courier serve` process name the OTP, its app and its
//! request on every line about it, carry the caller's `X-Request-Id`, and never a PIN.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{wait_until, Harness};

/// The spans (outermost first) of each of our JSON log lines whose spans mention `otp_id`.
/// (A library's line inside a span, such as a query logged before the OTP's app was read,
/// shows the span's fields as they were at that moment.)
fn lines_about(logs: &[Value], otp_id: &str) -> Vec<Vec<Value>> {
    logs.iter()
        .filter(|line| line["target"].as_str().is_some_and(|t| t.starts_with("otp_courier")))
        .filter_map(|line| line.get("spans")?.as_array().cloned())
        .filter(|spans| spans.iter().any(|span| span["otp_id"] == otp_id))
        .collect()
}

#[sqlx::test]
async fn log_lines_name_the_otp_its_app_and_request_and_never_the_pin(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let (key, secret) = harness.create_app_with_key("shop").await;
    harness.webhook_secret("shop", None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let (mut serve, base) = harness.spawn_serve(dir.path(), &log).await;
    let http = reqwest::Client::new();

    let send = http
        .post(format!("{base}/v1/otp/send"))
        .basic_auth(&key, Some(&secret))
        .header("x-request-id", "trace-send-1")
        .json(&json!({"phoneNumber": "+14155550131", "requestId": "signup-77",
                      "otpCallbackUrl": format!("{}/hook", receiver.uri())}))
        .send()
        .await
        .expect("send");
    assert_eq!(send.status(), 202);
    assert_eq!(send.headers()["x-request-id"], "trace-send-1");
    let otp_id = send.json::<Value>().await.expect("json")["otpId"]
        .as_str()
        .expect("otpId")
        .to_string();
    wait_until(
        "the code is sent and its callback received",
        Duration::from_secs(30),
        || async {
            !harness.provider_requests().await.is_empty()
                && receiver.received_requests().await.is_some_and(|r| !r.is_empty())
        },
    )
    .await;
    let pin = harness.otp_rows().await.remove(0).pin();
    let verify = http
        .post(format!("{base}/v1/otp/verify"))
        .basic_auth(&key, Some(&secret))
        .json(&json!({"otpId": otp_id, "code": pin}))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 200);
    let made_up = verify.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert!(made_up.starts_with("req_"), "{made_up}");
    serve.kill().await;

    let text = std::fs::read_to_string(&log).expect("logs");
    assert!(!text.contains(&pin), "the PIN is in the logs");
    let logs: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let about = lines_about(&logs, &otp_id);
    // Every span that names the OTP also names its app, and its request too, except an HTTP
    // request's span that addressed the OTP by id (it knows only what the caller sent).
    for spans in &about {
        for span in spans.iter().filter(|span| span["otp_id"] == otp_id.as_str()) {
            assert_eq!(span["app_id"], "shop", "{span}");
            if span["name"] != "http" || span["route"] == "/v1/otp/send" {
                assert_eq!(span["request_id"], "signup-77", "{span}");
            }
        }
    }
    let span_names = |spans: &Vec<Value>| {
        spans
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let seen = |name: &str| about.iter().any(|spans| span_names(spans).iter().any(|n| n == name));
    for part in ["http", "job", "deliver", "verify"] {
        assert!(seen(part), "no log line about the OTP from the `{part}` span");
    }
    // The dispatcher's lines carry the webhook id and the OTP.
    assert!(
        about
            .iter()
            .flatten()
            .any(|span| span["name"] == "deliver" && span.get("webhook_id").is_some()),
        "no dispatcher line about the OTP"
    );
    // The caller's id and the made-up one each name their request's lines.
    for id in ["trace-send-1", made_up.as_str()] {
        assert!(
            about.iter().flatten().any(|span| span["http_request_id"] == id),
            "no line of request {id}"
        );
    }
    harness.finish().await;
}
