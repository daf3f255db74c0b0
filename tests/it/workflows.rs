//! Channel workflows: a failed, undelivered or timed-out step starts the next with the same
//! code; a verification, a cancel or the expiry stops it; a worker killed between steps
//! neither skips nor repeats one. The provider is a wiremock fake on loopback that shows
//! each request's channel.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::api::Api;
use crate::harness::{wait_until, RoleProcess, PROVIDER_PATH};

const LONG: Duration = Duration::from_secs(15);
const SECRET: &str = "a-shared-receipt-secret";

/// An API and worker whose provider shows the channel of each message and answers each
/// with the id `m-<otp id>-<channel>`.
async fn start(pool: PgPool) -> Api {
    start_with(pool, |_| {}).await
}

/// As [`start`], with more configuration by `configure`.
async fn start_with(pool: PgPool, configure: impl FnOnce(&mut crate::harness::Harness)) -> Api {
    let api = Api::start_with(pool, |h| {
        configure(h);
        h.set(
            "providers.fake.body",
            json!({"to": "{{to}}", "text": "{{message}}", "otp": "{{otp_id}}", "channel": "{{channel}}"}),
        );
        h.set("providers.fake.message_id_pointer", json!("/id"));
        h.set(
            "providers.fake.receipt",
            json!({"message_id_pointer": "/id", "status_pointer": "/state",
                   "statuses": {"DELIVRD": "delivered", "UNDELIV": "undelivered"},
                   "signature_header": "x-signature", "secret": SECRET}),
        );
    })
    .await;
    Mock::given(method("POST"))
        .and(path(PROVIDER_PATH))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let id = format!(
                "m-{}-{}",
                body["otp"].as_str().unwrap_or_default(),
                body["channel"].as_str().unwrap_or_default()
            );
            ResponseTemplate::new(200).set_body_json(json!({"id": id}))
        })
        .with_priority(2)
        .mount(&api.harness.provider)
        .await;
    api
}

/// The channels of the provider requests for one OTP, in order, with their texts.
async fn sends(api: &Api, otp_id: &str) -> Vec<(String, String)> {
    api.harness
        .provider_requests()
        .await
        .into_iter()
        .filter(|r| r["otp"] == otp_id)
        .map(|r| {
            (
                r["channel"].as_str().unwrap_or_default().to_string(),
                r["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The OTP's events, in order, as (type, channel, step, fallback reason).
async fn events(api: &Api, otp_id: &str) -> Vec<(String, String, Option<i64>, Option<String>)> {
    let (_, events) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    events["events"]
        .as_array()
        .or_else(|| events.as_array())
        .expect("events")
        .iter()
        .map(|e| {
            let data = if e["data"].is_null() {
                &e["payload"]["data"]
            } else {
                &e["data"]
            };
            (
                e["type"]
                    .as_str()
                    .or_else(|| e["eventType"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                data["channel"].as_str().unwrap_or_default().to_string(),
                data["step"].as_i64(),
                data["fallback"]["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

async fn send(api: &Api, body: Value) -> String {
    let (status, accepted) = api.post("/v1/otp/send", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    accepted["otpId"].as_str().expect("otpId").to_string()
}

fn sms_then_whatsapp(timeout: u32) -> Value {
    json!([{"channel": "sms", "timeoutSeconds": timeout}, {"channel": "whatsapp"}])
}

#[sqlx::test]
async fn a_step_that_fails_for_good_starts_the_next_at_once_with_the_same_code(pool: PgPool) {
    let api = start(pool).await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"channel": "sms"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "unreachable"})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let otp_id = send(
        &api,
        json!({"phoneNumber": "+14155550123", "workflow": sms_then_whatsapp(240)}),
    )
    .await;
    wait_until("the WhatsApp step sent", LONG, || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    let pin = api.pin_of(&otp_id).await;
    let sent = sends(&api, &otp_id).await;
    let channels: Vec<&str> = sent.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(channels, ["sms", "whatsapp"], "no waiting for the 240 s timeout");
    assert!(
        sent.iter().all(|(_, text)| text.contains(&pin)),
        "the same code on both: {sent:?}"
    );
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(
        (view["status"].as_str(), view["channel"].as_str()),
        (Some("pending"), Some("whatsapp"))
    );
    assert_eq!(view["workflow"]["step"], 1, "{view}");
    assert_eq!(view["workflow"]["steps"][0]["channel"], "sms");
    assert!(
        view["workflow"]["nextStepAt"].is_null(),
        "the last step has no next: {view}"
    );
    let events = events(&api, &otp_id).await;
    assert_eq!(
        events,
        [
            ("otp.delivery_failed".into(), "sms".into(), Some(0), None),
            ("otp.fallback".into(), "whatsapp".into(), Some(1), Some("failed".into())),
            ("otp.sent".into(), "whatsapp".into(), Some(1), None),
        ]
    );
    // The code works once, on whichever channel it came.
    let (status, _) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, report) = api.get("/v1/reports").await;
    assert_eq!(
        report["workflowSteps"],
        json!([{"step": 1, "channel": "whatsapp", "otps": 1, "verified": 1}]),
        "{report}"
    );
    api.finish().await;
}

fn signed(body: Value) -> (Vec<u8>, String) {
    use hmac::Mac;
    let body = body.to_string().into_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&body);
    (body, hex::encode(mac.finalize().into_bytes()))
}

#[sqlx::test]
async fn an_undelivered_receipt_starts_the_next_step(pool: PgPool) {
    let api = start(pool).await;
    let otp_id = send(
        &api,
        json!({"phoneNumber": "+14155550123", "workflow": sms_then_whatsapp(240)}),
    )
    .await;
    wait_until("the SMS step sent", LONG, || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    let (body, signature) = signed(json!({"id": format!("m-{otp_id}-sms"), "state": "UNDELIV"}));
    let answer = api
        .http
        .post(format!("{}/v1/receipts/fake", api.base))
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .expect("receipt");
    assert_eq!(answer.status(), StatusCode::OK);
    wait_until("the WhatsApp step sent", LONG, || async {
        sends(&api, &otp_id).await.len() == 2
    })
    .await;
    let reasons: Vec<Option<String>> = events(&api, &otp_id)
        .await
        .into_iter()
        .map(|e| e.3)
        .filter(Option::is_some)
        .collect();
    assert_eq!(reasons, [Some("undelivered".to_string())]);
    api.finish().await;
}

#[sqlx::test]
async fn a_step_without_verification_times_out_into_the_next(pool: PgPool) {
    let api = start(pool).await;
    let otp_id = send(
        &api,
        json!({"phoneNumber": "+14155550123", "workflow": sms_then_whatsapp(1)}),
    )
    .await;
    wait_until("the WhatsApp step sent", LONG, || async {
        sends(&api, &otp_id).await.len() == 2
    })
    .await;
    let events = events(&api, &otp_id).await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "otp.fallback" && e.3.as_deref() == Some("timeout")),
        "{events:?}"
    );
    api.finish().await;
}

/// Sends a control OTP with the same workflow after `otp_id` and waits until its second
/// step has started: by then the scheduler has passed `otp_id`'s due time too.
async fn after_a_control_moved_on(api: &Api, timeout: u32) {
    let control = send(
        api,
        json!({"phoneNumber": "+14155550999", "workflow": sms_then_whatsapp(timeout)}),
    )
    .await;
    wait_until("the control OTP's second step", LONG, || async {
        sends(api, &control).await.len() == 2
    })
    .await;
}

#[sqlx::test]
async fn a_verification_a_cancel_or_the_expiry_stops_the_workflow(pool: PgPool) {
    let api = start(pool).await;
    let body = |phone: &str| json!({"phoneNumber": phone, "workflow": sms_then_whatsapp(2)});
    let verified = send(&api, body("+14155550101")).await;
    let cancelled = send(&api, body("+14155550102")).await;
    let expired = send(&api, body("+14155550103")).await;
    for otp in [&verified, &cancelled, &expired] {
        wait_until("the SMS step sent", LONG, || async {
            api.get(&format!("/v1/otp/{otp}")).await.1["delivery"] == "sent"
        })
        .await;
    }
    let pin = api.pin_of(&verified).await;
    let (status, _) = api
        .post("/v1/otp/verify", json!({"otpId": verified, "code": pin}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = api
        .as_app(api.http.delete(format!("{}/v1/otp/{cancelled}", api.base)))
        .send()
        .await
        .expect("cancel");
    assert!(answer.status().is_success(), "{}", answer.status());
    sqlx::query("update otps set expires_at = now() - interval '1 second' where id = $1")
        .bind(uuid::Uuid::parse_str(expired.trim_start_matches("otp_")).expect("uuid"))
        .execute(&api.harness.pool)
        .await
        .expect("expire");

    after_a_control_moved_on(&api, 2).await;
    for otp in [&verified, &cancelled, &expired] {
        let channels: Vec<String> = sends(&api, otp).await.into_iter().map(|(c, _)| c).collect();
        assert_eq!(channels, ["sms"], "{otp}: no step after the workflow stopped");
        assert!(!events(&api, otp).await.iter().any(|e| e.0 == "otp.fallback"));
    }
    api.finish().await;
}

#[sqlx::test]
async fn a_workflow_longer_than_the_ttl_or_with_a_conflicting_channel_is_refused(pool: PgPool) {
    let api = start(pool).await;
    let too_long = json!([{"channel": "sms", "timeoutSeconds": 150}, {"channel": "whatsapp", "timeoutSeconds": 150},
                          {"channel": "sms"}]);
    let (status, problem) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "ttl": 300, "workflow": too_long}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap_or_default().contains("TTL"),
        "{problem}"
    );
    let (status, problem) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "channel": "whatsapp", "workflow": sms_then_whatsapp(10)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "invalid_field", "{problem}");
    api.finish().await;
}

#[sqlx::test]
async fn a_worker_killed_between_steps_runs_the_next_step_exactly_once_after_restart(pool: PgPool) {
    let mut api = start(pool).await;
    // The API's own worker stops; a worker process takes over and is killed.
    api.harness.stop_worker().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = api.harness.config_file(dir.path());
    let log = dir.path().join("worker.log");
    let mut worker = RoleProcess::spawn("worker", &config, &log);
    let otp_id = send(
        &api,
        json!({"phoneNumber": "+14155550123", "workflow": sms_then_whatsapp(2)}),
    )
    .await;
    wait_until("the SMS step sent", LONG, || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    worker.kill().await;
    // The step falls due while no worker runs.
    wait_until("the step is due", LONG, || async {
        sqlx::query_scalar::<_, bool>("select step_due_at < now() from otps")
            .fetch_one(&api.harness.pool)
            .await
            .unwrap_or(false)
    })
    .await;
    assert_eq!(sends(&api, &otp_id).await.len(), 1);
    let mut worker = RoleProcess::spawn("worker", &config, &log);
    wait_until("the WhatsApp step sent", LONG, || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["channel"] == "whatsapp"
            && api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    let channels: Vec<String> = sends(&api, &otp_id).await.into_iter().map(|(c, _)| c).collect();
    assert_eq!(channels, ["sms", "whatsapp"]);
    let fallbacks = events(&api, &otp_id)
        .await
        .iter()
        .filter(|e| e.0 == "otp.fallback")
        .count();
    assert_eq!(fallbacks, 1);
    worker.kill().await;
    api.finish().await;
}

#[sqlx::test]
async fn an_apps_default_workflow_applies_unless_the_job_names_its_channel(pool: PgPool) {
    let api = start(pool).await;
    sqlx::query("update apps set workflow = $1 where id = 'shop'")
        .bind(json!([{"channel": "sms", "timeoutSeconds": 1}, {"channel": "whatsapp"}]))
        .execute(&api.harness.pool)
        .await
        .expect("an app workflow");
    let follows = send(&api, json!({"phoneNumber": "+14155550123"})).await;
    let chosen = send(&api, json!({"phoneNumber": "+14155550124", "channel": "sms"})).await;
    wait_until("the app's workflow moved on", LONG, || async {
        sends(&api, &follows).await.len() == 2
    })
    .await;
    let (_, view) = api.get(&format!("/v1/otp/{chosen}")).await;
    assert!(
        view["workflow"].is_null(),
        "a job that names its channel has no workflow: {view}"
    );
    assert_eq!(sends(&api, &chosen).await.len(), 1);

    // An app's workflow must fit its default TTL.
    let refused = otp_courier::tenancy::apps::create(
        &api.harness.pool,
        &otp_courier::tenancy::apps::NewApp {
            id: "long".into(),
            name: "long".into(),
            default_ttl_seconds: Some(120),
            workflow: Some(json!([{"channel": "sms", "timeoutSeconds": 120}, {"channel": "whatsapp"}])),
            ..Default::default()
        },
    )
    .await
    .expect_err("refused");
    assert!(refused.to_string().contains("workflow"), "{refused}");
    api.finish().await;
}

#[sqlx::test]
async fn a_step_a_send_limit_refuses_ends_the_workflow_and_an_unsent_otp_fails(pool: PgPool) {
    let api = start_with(pool, |h| {
        h.set("limits.send_per_phone", json!({"max": 1, "window_seconds": 600}));
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "unreachable"})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let otp_id = send(
        &api,
        json!({"phoneNumber": "+14155550123", "workflow": sms_then_whatsapp(240)}),
    )
    .await;
    wait_until("the OTP failed", LONG, || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["status"] == "failed"
    })
    .await;
    let events = events(&api, &otp_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "otp.delivery_failed");
    let (_, payload) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    assert_eq!(
        payload[0]["payload"]["data"]["status"], "failed",
        "the event says how it ended: {payload}"
    );
    assert_eq!(sends(&api, &otp_id).await.len(), 1, "no WhatsApp step");
    api.finish().await;
}
