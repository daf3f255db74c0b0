//! The HTTP API: every route, every credential form, and isolation between apps.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{wait_until, Harness};

/// A running worker and API with app `shop` and its credentials.
pub struct Api {
    pub harness: Harness,
    pub base: String,
    pub key: (String, String),
    pub http: Client,
}

impl Api {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, |_| {}).await
    }

    pub async fn start_with(pool: PgPool, configure: impl FnOnce(&mut Harness)) -> Self {
        let mut harness = Harness::new(pool).await;
        configure(&mut harness);
        harness.provider_accepts().await;
        let key = harness.create_app_with_key("shop").await;
        harness.start_worker();
        let base = harness.start_api().await;
        Self {
            harness,
            base,
            key,
            http: Client::new(),
        }
    }

    pub fn as_app(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .header("x-api-key", &self.key.0)
            .header("x-api-secret", &self.key.1)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .as_app(self.http.post(format!("{}{path}", self.base)).json(&body))
            .send()
            .await
            .expect("request");
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .as_app(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("request");
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// Sends an OTP through the API and waits until the provider has it; returns (otpId, PIN).
    pub async fn send_delivered(&self, body: Value) -> (String, String) {
        let (status, accepted) = self.post("/v1/otp/send", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let otp_id = accepted["otpId"].as_str().expect("otpId").to_string();
        wait_until("delivered", Duration::from_secs(10), || async {
            self.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
        })
        .await;
        let row = self
            .harness
            .otp_rows()
            .await
            .into_iter()
            .find(|r| otp_id.ends_with(&r.id.simple().to_string()))
            .expect("row");
        (otp_id, row.pin())
    }

    /// The PIN of an OTP, by its `otp_…` id, derived the way the worker does.
    pub async fn pin_of(&self, otp_id: &str) -> String {
        self.harness
            .otp_rows()
            .await
            .into_iter()
            .find(|r| otp_id.ends_with(&r.id.simple().to_string()))
            .expect("row")
            .pin()
    }

    pub async fn finish(self) {
        self.harness.finish().await;
    }
}

#[sqlx::test]
async fn an_otp_sent_through_the_api_is_verified_once_and_shows_its_history(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "requestId": "signup-1"}))
        .await;

    let (status, problem) = api
        .post("/v1/otp/verify", json!({"otpId": otp_id, "code": "000000x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["type"], "urn:otp-courier:problem:invalid-code");
    assert_eq!(problem["remainingAttempts"], 4);
    let (status, body) = api
        .post("/v1/otp/verify", json!({"verification_id": otp_id, "otp_code": pin}))
        .await;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("verified")));
    let (status, problem) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
    assert_eq!(status, StatusCode::CONFLICT, "single use: {problem}");

    let (status, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (view["status"].as_str(), view["attempts"].as_i64()),
        (Some("verified"), Some(2))
    );
    assert!(!view.to_string().contains(&pin), "no PIN in a status answer");
    let (_, events) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    let types: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["otp.sent", "otp.verification_failed", "otp.verified"]);
    let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
    assert_eq!(attempts["deliveries"].as_array().map(Vec::len), Some(1));
    let outcomes: Vec<&str> = attempts["verifications"]
        .as_array()
        .expect("v")
        .iter()
        .filter_map(|v| v["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["invalid_code", "verified", "not_pending"]);

    // The same request id again names the same OTP and sends nothing.
    let (status, again) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "requestId": "signup-1"}),
        )
        .await;
    assert_eq!(
        (status, again["otpId"].as_str(), again["duplicate"].as_bool()),
        (StatusCode::OK, Some(otp_id.as_str()), Some(true))
    );
    // And by request id instead of otp id.
    let (status, _) = api
        .post("/v1/otp/verify", json!({"requestId": "signup-1", "code": pin}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.finish().await;
}

#[sqlx::test]
async fn every_credential_form_is_accepted_and_bad_ones_get_401(pool: PgPool) {
    let api = Api::start(pool).await;
    let url = format!("{}/v1/otp", api.base);
    let (key, secret) = api.key.clone();
    let forms = [
        api.http
            .get(&url)
            .header("x-api-key", &key)
            .header("x-api-secret", &secret),
        api.http.get(&url).basic_auth(&key, Some(&secret)),
        api.http.get(&url).bearer_auth(format!("{key}.{secret}")),
    ];
    for request in forms {
        assert_eq!(request.send().await.expect("request").status(), StatusCode::OK);
    }
    for request in [
        api.http.get(&url),
        api.http.get(&url).basic_auth(&key, Some("sk_wrong")),
        api.http.get(&url).bearer_auth("nonsense"),
    ] {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    api.finish().await;
}

#[sqlx::test]
async fn an_app_cannot_read_verify_resend_or_cancel_another_apps_otp(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let (other_key, other_secret) = api.harness.create_app_with_key("rival").await;
    let as_rival = |r: RequestBuilder| r.header("x-api-key", &other_key).header("x-api-secret", &other_secret);
    let base = &api.base;
    let requests = [
        as_rival(api.http.get(format!("{base}/v1/otp/{otp_id}"))),
        as_rival(api.http.get(format!("{base}/v1/otp/{otp_id}/events"))),
        as_rival(api.http.get(format!("{base}/v1/otp/{otp_id}/attempts"))),
        as_rival(api.http.delete(format!("{base}/v1/otp/{otp_id}"))),
        as_rival(
            api.http
                .post(format!("{base}/v1/otp/verify"))
                .json(&json!({"otpId": otp_id, "code": pin})),
        ),
        as_rival(
            api.http
                .post(format!("{base}/v1/otp/resend"))
                .json(&json!({"otpId": otp_id})),
        ),
    ];
    for request in requests {
        assert_eq!(request.send().await.expect("request").status(), StatusCode::NOT_FOUND);
    }
    let listed: Value = as_rival(api.http.get(format!("{base}/v1/otp")))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"], json!([]));

    let (operator, secret) = api.harness.operator_key().await;
    let seen = api
        .http
        .get(format!("{base}/v1/otp/{otp_id}"))
        .basic_auth(&operator, Some(&secret))
        .send()
        .await
        .expect("get");
    assert_eq!(seen.status(), StatusCode::OK, "operators see every app");
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["status"], "pending", "nothing the rival did changed the OTP");
    api.finish().await;
}

#[sqlx::test]
async fn every_provider_request_keeps_its_message_id_and_a_resend_keeps_the_first(pool: PgPool) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let api = Api::start_with(pool, |h| h.set("providers.fake.message_id_pointer", json!("/id"))).await;
    // The fake provider names each message it takes: msg-0, msg-1, ...
    api.harness.provider.reset().await;
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            wiremock::ResponseTemplate::new(200).set_body_json(json!({"id": format!("msg-{n}")}))
        })
        .mount(&api.harness.provider)
        .await;
    let (otp_id, _) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let (status, _) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let attempts = || async {
        let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
        attempts["deliveries"]
            .as_array()
            .map(|d| d.iter().map(|a| a["messageId"].clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    wait_until("the resend's request is recorded", Duration::from_secs(10), || async {
        attempts().await.len() == 2
    })
    .await;
    assert_eq!(
        attempts().await,
        [json!("msg-0"), json!("msg-1")],
        "the first message's id is kept"
    );
    let indexed: i64 = sqlx::query_scalar(
        "select count(*) from delivery_attempts where provider = 'fake' and message_id in ('msg-0', 'msg-1')",
    )
    .fetch_one(&api.harness.pool)
    .await
    .expect("attempts by message id");
    assert_eq!(indexed, 2);
    api.finish().await;
}

#[sqlx::test]
async fn a_number_the_provider_refuses_fails_at_once_with_the_providers_code(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        let twilio = json!({"kind": "twilio", "account_sid": "AC1", "auth_token": "twilio-auth-token-1",
                            "messaging_service_sid": "MG1", "base_url": h.provider.uri()});
        h.set("providers.fake", twilio);
    })
    .await;
    // The fake provider, as Twilio, refusing the number.
    api.harness.provider.reset().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(400).set_body_json(
            json!({"code": 21614, "message": "'To' number is not a valid mobile number", "status": 400}),
        ))
        .mount(&api.harness.provider)
        .await;
    let (status, accepted) = api.post("/v1/otp/send", json!({"phoneNumber": "+14155550123"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let otp_id = accepted["otpId"].as_str().expect("otpId").to_string();
    wait_until("failed", Duration::from_secs(10), || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "failed"
    })
    .await;
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["lastError"]["providerCode"], "21614", "{view}");
    let message = view["lastError"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("code 21614: the number is not a mobile number"),
        "{view}"
    );
    let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
    let codes: Vec<&Value> = attempts["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|a| &a["providerCode"])
        .collect();
    assert_eq!(codes, [&json!("21614")], "one request: a number-level error is final");
    api.finish().await;
}

#[sqlx::test]
async fn resend_sends_the_same_pin_within_the_ttl_and_a_new_one_after_expiry(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": "wrong"}))
        .await;

    let (status, body) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!((status, body["newCode"].as_bool()), (StatusCode::ACCEPTED, Some(false)));
    wait_until("second request", Duration::from_secs(10), || async {
        api.harness.provider_requests().await.len() == 2
    })
    .await;
    let texts: Vec<Value> = api
        .harness
        .provider_requests()
        .await
        .iter()
        .map(|r| r["text"].clone())
        .collect();
    assert_eq!(texts[1], json!(format!("Code {pin}")));

    sqlx::query("update otps set expires_at = now() - interval '1 second'")
        .execute(&api.harness.pool)
        .await
        .expect("expire");
    let (status, body) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!((status, body["newCode"].as_bool()), (StatusCode::ACCEPTED, Some(true)));
    wait_until("third request", Duration::from_secs(10), || async {
        api.harness.provider_requests().await.len() == 3
    })
    .await;
    let row = api.harness.otp_rows().await.remove(0);
    assert_eq!(row.generation, 2);
    let new_pin = row.pin();
    assert_ne!(new_pin, pin);
    assert_eq!(
        api.harness.provider_requests().await[2]["text"],
        json!(format!("Code {new_pin}"))
    );
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["attempts"], 1, "a resend never resets the failed attempts");
    let (status, _) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the old code no longer works");

    wait_until("delivered", Duration::from_secs(10), || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    let (status, _) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "third resend");
    wait_until("delivered", Duration::from_secs(10), || async {
        api.harness.provider_requests().await.len() == 4
    })
    .await;
    wait_until("recorded", Duration::from_secs(10), || async {
        api.get(&format!("/v1/otp/{otp_id}")).await.1["delivery"] == "sent"
    })
    .await;
    let (status, problem) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("urn:otp-courier:problem:resend-limit-reached")
        )
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_cancelled_otp_cannot_be_verified(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let response = api
        .as_app(api.http.delete(format!("{}/v1/otp/{otp_id}", api.base)))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, problem) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
    assert_eq!(
        (status, problem["otpStatus"].as_str()),
        (StatusCode::CONFLICT, Some("cancelled"))
    );
    let (_, events) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    assert_eq!(events[1]["type"], "otp.cancelled");
    api.finish().await;
}

#[sqlx::test]
async fn the_list_filters_and_pages_with_a_cursor_and_reports_count(pool: PgPool) {
    let api = Api::start(pool).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            api.send_delivered(
                json!({"phoneNumber": "+14155550123", "requestId": format!("r-{n}"), "channel": "whatsapp"}),
            )
            .await,
        );
    }
    api.post("/v1/otp/verify", json!({"otpId": ids[0].0, "code": ids[0].1}))
        .await;

    let (_, page) = api.get("/v1/otp?limit=2").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["items"][0]["otpId"], json!(ids[2].0), "newest first");
    let cursor = page["nextCursor"].as_str().expect("more pages");
    let (_, rest) = api.get(&format!("/v1/otp?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert!(rest["nextCursor"].is_null());
    let (_, verified) = api.get("/v1/otp?status=verified&channel=whatsapp").await;
    assert_eq!(verified["items"].as_array().map(Vec::len), Some(1));
    let (status, problem) = api.get("/v1/otp?cursor=bogus").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor"))
    );

    let (status, report) = api.get("/v1/reports").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["total"], 3);
    assert_eq!(report["byStatus"], json!({"pending": 2, "verified": 1}));
    assert_eq!(report["byChannel"], json!({"whatsapp": 3}));
    assert_eq!(report["byProvider"], json!({"fake": 3}));
    assert!((report["conversionRate"].as_f64().expect("rate") - 1.0 / 3.0).abs() < 1e-9);
    assert!(report["medianSecondsToVerify"].as_f64().expect("median") >= 0.0);
    api.finish().await;
}

#[sqlx::test]
async fn bad_send_requests_are_problems_with_stable_types(pool: PgPool) {
    let api = Api::start(pool).await;
    let (status, problem) = api.post("/v1/otp/send", json!({"phoneNumber": "12345"})).await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_phone_number"))
    );
    let (status, problem) = api
        .post("/v1/otp/send", json!({"appId": "rival", "phoneNumber": "+14155550123"}))
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")),
        "appId must match the credentials"
    );
    let url = format!("{}/v1/otp/send", api.base);
    let text = api
        .as_app(api.http.post(&url).body("phoneNumber=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = api
        .as_app(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 70_000]),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let broken = api
        .as_app(
            api.http
                .post(format!("{}/v1/otp/verify", api.base))
                .header("content-type", "application/json")
                .body("{"),
        )
        .send()
        .await
        .expect("verify");
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/v1/otp/otp_nothex").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v1/nowhere").await.0, StatusCode::NOT_FOUND);
    assert!(api.harness.provider_requests().await.is_empty(), "nothing was sent");
    api.finish().await;
}

#[sqlx::test]
async fn send_limits_answer_429_over_http_and_reject_amqp_jobs(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set("limits.send_per_phone", json!({"max": 2, "window_seconds": 600}))
    })
    .await;
    for n in 0..2 {
        let (status, _) = api
            .post(
                "/v1/otp/send",
                json!({"phoneNumber": "+14155550123", "requestId": format!("h-{n}")}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // The worker counts each send in the transaction that creates its OTP, so two delivered
    // OTPs mean two counted sends; the API refuses once the count is full.
    wait_until("both sends counted", Duration::from_secs(10), || async {
        let rows = api.harness.otp_rows().await;
        rows.len() == 2 && rows.iter().all(|r| r.delivery == "sent")
    })
    .await;
    let response = api
        .as_app(
            api.http
                .post(format!("{}/v1/otp/send", api.base))
                .json(&json!({"phoneNumber": "+14155550123", "requestId": "h-3"})),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["limit"], "send_per_phone");

    for n in 0..3 {
        let job = json!({"appId": "shop", "phoneNumber": "+14155550999", "requestId": format!("a-{n}")});
        api.harness.publish(job.to_string().as_bytes()).await;
    }
    wait_until("the third AMQP job is rejected", Duration::from_secs(10), || async {
        let rejected: Vec<(String, Option<String>)> =
            sqlx::query_as("select request_id, rejection_reason from otps where status = 'rejected'")
                .fetch_all(&api.harness.pool)
                .await
                .expect("rows");
        rejected.len() == 1 && rejected[0].1.as_deref() == Some("rate_limited")
    })
    .await;
    // Its event was written with the rejection, in the transaction that inserted the OTP.
    let events: Vec<Value> = sqlx::query_scalar(
        "select e.payload from outbox e join otps o on o.id = e.otp_id
         where o.status = 'rejected' and e.event_type = 'otp.rejected'",
    )
    .fetch_all(&api.harness.pool)
    .await
    .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["status"], "rejected");
    assert_eq!(events[0]["data"]["error"]["reason"], "rate_limited");
    let (status, limits) = api.get("/v1/rate-limits").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = limits
        .as_array()
        .expect("limits")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["send_per_phone", "send_per_country", "send_per_app", "verify_per_app"]
    );
    api.finish().await;
}

#[sqlx::test]
async fn health_readiness_and_the_openapi_document_are_served(pool: PgPool) {
    let api = Api::start(pool).await;
    let health: Value = api
        .http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let ready = api
        .http
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let doc: Value = api
        .http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in [
        "/v1/otp/send",
        "/v1/otp/verify",
        "/v1/otp/resend",
        "/v1/otp",
        "/v1/otp/{id}",
        "/v1/otp/{id}/events",
        "/v1/otp/{id}/attempts",
        "/v1/reports",
        "/v1/rate-limits",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // Every schema a path refers to is in the document (nested ones included).
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.iter().any(|r| r.ends_with("/StepReport")), "{found:?}");
    for r in found {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r} is defined");
    }
    api.finish().await;
}

#[sqlx::test]
async fn a_rotated_api_secret_replaces_the_old_one_and_webhook_secrets_overlap_for_the_grace(pool: PgPool) {
    let api = Api::start(pool).await;
    let app = otp_courier::domain::AppId::parse("shop").expect("app id");
    let fresh = otp_courier::tenancy::keys::rotate(&api.harness.pool, &app, None)
        .await
        .expect("rotated");
    let url = format!("{}/v1/otp", api.base);
    let old = api
        .http
        .get(&url)
        .basic_auth(&api.key.0, Some(&api.key.1))
        .send()
        .await
        .expect("old");
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "the old key is revoked");
    let new = api
        .http
        .get(&url)
        .basic_auth(&fresh.key_id, Some(&fresh.secret))
        .send()
        .await
        .expect("new");
    assert_eq!(new.status(), StatusCode::OK);

    let sealer = api.harness.sealer();
    let secrets = |pool: PgPool| async move {
        otp_courier::tenancy::keys::webhook_secrets(&pool, &Default::default(), "shop")
            .await
            .expect("secrets")
    };
    let mut tx = api.harness.pool.begin().await.expect("tx");
    let first = otp_courier::tenancy::keys::rotate_webhook_secret(&mut tx, &sealer, &app, None)
        .await
        .expect("first");
    let second =
        otp_courier::tenancy::keys::rotate_webhook_secret(&mut tx, &sealer, &app, Some(time::Duration::hours(1)))
            .await
            .expect("second");
    tx.commit().await.expect("commit");
    assert!(first.starts_with("whsec_") && second.starts_with("whsec_"));
    assert_eq!(
        secrets(api.harness.pool.clone()).await,
        [second.clone(), first],
        "both sign during the grace period"
    );
    let mut tx = api.harness.pool.begin().await.expect("tx");
    let third = otp_courier::tenancy::keys::rotate_webhook_secret(&mut tx, &sealer, &app, None)
        .await
        .expect("third");
    tx.commit().await.expect("commit");
    assert_eq!(
        secrets(api.harness.pool.clone()).await,
        [third],
        "without a grace period the old ones stop at once"
    );
    api.finish().await;
}

#[sqlx::test]
async fn sends_without_a_request_id_deduplicate_only_while_pending_and_share_ids_when_concurrent(pool: PgPool) {
    let api = Api::start(pool).await;
    let body = json!({"phoneNumber": "+14155550123"});
    let (first, pin) = api.send_delivered(body.clone()).await;
    let (status, again) = api.post("/v1/otp/send", body.clone()).await;
    assert_eq!(
        (status, again["otpId"].as_str()),
        (StatusCode::OK, Some(first.as_str())),
        "pending: the same OTP"
    );
    api.post("/v1/otp/verify", json!({"otpId": first, "code": pin})).await;
    let (second, _) = api.send_delivered(body).await;
    assert_ne!(second, first, "once verified, the same body is a new request");

    let answers: Vec<(StatusCode, Value)> = futures_util::future::join_all((0..5).map(|_| {
        api.post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "requestId": "same"}),
        )
    }))
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, a)| a["otpId"].as_str().expect("otpId").to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent sends of one request answer with one id: {answers:?}"
    );
    let id = ids.into_iter().next().expect("id");
    wait_until("that OTP exists", Duration::from_secs(10), || async {
        api.get(&format!("/v1/otp/{id}")).await.0 == StatusCode::OK
    })
    .await;
    api.finish().await;
}

#[sqlx::test]
async fn an_app_bound_to_a_broker_user_can_still_send_over_http(pool: PgPool) {
    let api = Api::start(pool).await;
    sqlx::query("update apps set broker_user = 'shop-producer' where id = 'shop'")
        .execute(&api.harness.pool)
        .await
        .expect("bind");
    api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    api.harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123", "requestId": "direct"}"#)
        .await;
    let dlq = api.harness.dlq.clone();
    wait_until("the unbound broker job is refused", Duration::from_secs(10), || async {
        api.harness.ready(&dlq).await == 1
    })
    .await;
    api.finish().await;
}

#[sqlx::test]
async fn unstorable_characters_in_credentials_or_filters_are_client_errors(pool: PgPool) {
    let api = Api::start(pool).await;
    let url = format!("{}/v1/otp", api.base);
    let nul_key = api
        .http
        .get(&url)
        .basic_auth("ak_\u{0}", Some("sk_x"))
        .send()
        .await
        .expect("request");
    assert_eq!(nul_key.status(), StatusCode::UNAUTHORIZED);
    let (status, problem) = api.get("/v1/otp?phone=%00").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("urn:otp-courier:problem:invalid-request")
        )
    );
    let (status, _) = api
        .get("/v1/otp?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6eA")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an overflowing cursor");
    api.finish().await;
}
