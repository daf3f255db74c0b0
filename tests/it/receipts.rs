//! Delivery receipts: each provider's receipt route checks the provider's own proof, and
//! receipts move deliveries forward only. Providers are wiremock fakes on loopback; Twilio's
//! signatures and request shapes are checked against Twilio's own Python library.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use standardwebhooks::Webhook;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::api::Api;
use crate::harness::{form_fields as form, free_port, wait_until};

const SID: &str = "AC0123";
const TOKEN: &str = "twilio-auth-token";
const META_SECRET: &str = "meta-app-secret-0123";
const JSON_SECRET: &str = "a-shared-receipt-secret";
const LONG: Duration = Duration::from_secs(15);

/// A provider that answers each message with a new id, `{prefix}{n}`, in `shape`.
struct NewIds {
    prefix: &'static str,
    shape: fn(&str) -> Value,
    count: AtomicUsize,
}

impl NewIds {
    fn new(prefix: &'static str, shape: fn(&str) -> Value) -> Self {
        Self {
            prefix,
            shape,
            count: AtomicUsize::new(0),
        }
    }
}

impl Respond for NewIds {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(201).set_body_json((self.shape)(&format!("{}{n}", self.prefix)))
    }
}

/// An API and worker that send every channel through the provider `name` (its config made
/// by `config` from the fake provider's base URL), with `receipts.public_url` set to the API.
pub async fn start(pool: PgPool, name: &str, config: impl FnOnce(&str) -> Value) -> Api {
    start_with(pool, name, config, &[]).await
}

/// As [`start`], with more configuration values (`path`, value).
async fn start_with(pool: PgPool, name: &str, config: impl FnOnce(&str) -> Value, extra: &[(&str, Value)]) -> Api {
    let port = free_port();
    let name = name.to_string();
    Api::start_with(pool, |h| {
        for (path, value) in extra {
            h.set(path, value.clone());
        }
        let provider = config(&h.provider.uri());
        h.set("api.listen", json!(format!("127.0.0.1:{port}")));
        h.set("receipts.public_url", json!(format!("http://127.0.0.1:{port}")));
        h.set("providers", json!({ name.clone(): provider }));
        h.set("routing", json!({"sms": name, "whatsapp": name, "voice": name}));
    })
    .await
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

/// Twilio's signature, written here from its documentation (not the product's code).
pub fn twilio_sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let text: String = std::iter::once(url.to_string())
        .chain(sorted.iter().map(|(k, v)| format!("{k}{v}")))
        .collect();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("key");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The Python of the oracle virtualenv (`scripts/oracles.sh`).
fn oracle(args: &[&str]) -> String {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oracle-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/oracles.sh` (scripts/test.sh does)",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracles/twilio_oracle.py");
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Api {
    async fn post_receipt(&self, provider: &str, body: Vec<u8>, headers: &[(&str, String)]) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/receipts/{provider}", self.base))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn post_twilio(&self, params: &[(&str, &str)], signature: &str) -> StatusCode {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let headers = [
            ("x-twilio-signature", signature.to_string()),
            ("content-type", "application/x-www-form-urlencoded".to_string()),
        ];
        self.post_receipt("tw", body.into_bytes(), &headers).await.0
    }

    /// The OTP's delivery state; `"not made yet"` while the API answers 404 (it answers
    /// 202 to a send once the broker has the job; the worker makes the OTP after that).
    async fn delivery(&self, otp_id: &str) -> String {
        let (status, view) = self.get(&format!("/v1/otp/{otp_id}")).await;
        if status == StatusCode::NOT_FOUND {
            return "not made yet".to_string();
        }
        match view["delivery"].as_str() {
            Some(delivery) => delivery.to_string(),
            None => panic!("the status answered {status}: {view}"),
        }
    }

    async fn receipts_stored(&self) -> i64 {
        sqlx::query_scalar("select count(*) from delivery_receipts")
            .fetch_one(&self.harness.pool)
            .await
            .expect("count")
    }

    /// Stored raw receipts whose text holds `needle`.
    async fn raw_receipts_holding(&self, needle: &str) -> i64 {
        sqlx::query_scalar("select count(*) from delivery_receipts where raw::text like '%' || $1 || '%'")
            .bind(needle)
            .fetch_one(&self.harness.pool)
            .await
            .expect("count")
    }

    async fn event_count(&self, event: &str) -> usize {
        self.harness.events().await.iter().filter(|e| *e == event).count()
    }
}

async fn twilio(pool: PgPool) -> Api {
    let api = start(pool, "tw", |base| {
        json!({"kind": "twilio", "account_sid": SID, "auth_token": TOKEN, "base_url": base,
               "messaging_service_sid": "MG1"})
    })
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .respond_with(NewIds::new("SM", |id| json!({"sid": id, "status": "queued"})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    api
}

#[sqlx::test]
async fn a_twilio_receipt_signed_as_twilio_signs_moves_the_otp_and_a_forged_one_changes_nothing(pool: PgPool) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut api = twilio(pool).await;
    let secret = api.harness.webhook_secret("shop", None).await;
    api.harness.start_dispatcher();
    let callback = format!("{}/hooks", receiver.uri());
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "otpCallbackUrl": callback}))
        .await;
    let url = format!("{}/v1/receipts/tw", api.base);
    let sent = api.harness.provider.received_requests().await.expect("requests");
    assert_eq!(field(&form(&sent[0]), "StatusCallback"), Some(url.as_str()));
    let delivered = [
        ("AccountSid", SID),
        ("MessageSid", "SM0"),
        ("MessageStatus", "delivered"),
        ("ApiVersion", "2010-04-01"),
        ("To", "+14155550123"),
        ("From", "+14155550100"),
    ];

    // Forged: another key; replayed with a changed body; no signature at all.
    assert_eq!(
        api.post_twilio(&delivered, &twilio_sign("not-the-token", &url, &delivered))
            .await,
        StatusCode::FORBIDDEN
    );
    let undelivered = [("MessageSid", "SM0"), ("MessageStatus", "undelivered")];
    assert_eq!(
        api.post_twilio(
            &undelivered,
            &twilio_sign(TOKEN, &url, &[("MessageSid", "SM0"), ("MessageStatus", "sent")])
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let (status, problem) = api
        .post_receipt("tw", b"MessageSid=SM0&MessageStatus=delivered".to_vec(), &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["type"], "urn:otp-courier:problem:receipt-refused");
    assert_eq!(
        (api.delivery(&otp_id).await, api.receipts_stored().await),
        ("sent".into(), 0)
    );

    // Signed by Twilio's own library.
    let params: Value = delivered
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let signature = oracle(&["sign", TOKEN, &url, "HMAC_SHA1", &params.to_string()]);
    assert_eq!(
        signature,
        twilio_sign(TOKEN, &url, &delivered),
        "the test's signer agrees with Twilio's"
    );
    assert_eq!(api.post_twilio(&delivered, &signature).await, StatusCode::OK);
    assert_eq!(api.delivery(&otp_id).await, "delivered");

    // A late `sent` and a duplicate `delivered` change nothing.
    let late = [("MessageSid", "SM0"), ("MessageStatus", "sent")];
    assert_eq!(
        api.post_twilio(&late, &twilio_sign(TOKEN, &url, &late)).await,
        StatusCode::OK
    );
    assert_eq!(api.post_twilio(&delivered, &signature).await, StatusCode::OK);
    assert_eq!(api.delivery(&otp_id).await, "delivered");
    assert_eq!(api.event_count("otp.delivered").await, 1);
    let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
    assert_eq!(attempts["deliveries"][0]["receiptStatus"], "delivered", "{attempts}");
    let seen: Vec<&str> = attempts["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| r["providerStatus"].as_str().expect("providerStatus"))
        .collect();
    assert_eq!(seen, ["delivered", "sent", "delivered"]);
    assert_eq!(api.raw_receipts_holding("+1415555").await, 0, "no number is kept");

    // The otp.delivered callback goes out signed.
    wait_until("the otp.delivered callback", LONG, || async {
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .any(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["type"] == "otp.delivered"))
    })
    .await;
    let requests = receiver.received_requests().await.expect("requests");
    let request = requests
        .iter()
        .find(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["type"] == "otp.delivered"))
        .expect("otp.delivered");
    Webhook::new(&secret)
        .expect("secret")
        .verify(&request.body, &request.headers)
        .expect("standardwebhooks verifies the otp.delivered callback");
    let body: Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(body["data"]["delivery"], "delivered");
    api.finish().await;
}

#[sqlx::test]
async fn an_undelivered_twilio_receipt_is_final_and_carries_twilios_error_code(pool: PgPool) {
    let api = twilio(pool).await;
    let (otp_id, _) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let url = format!("{}/v1/receipts/tw", api.base);
    let undelivered = [
        ("MessageSid", "SM0"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    // The SHA-256 variant, as named by the signature-settings header.
    let params: Value = undelivered
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let signature = oracle(&["sign", TOKEN, &url, "HMAC_SHA256", &params.to_string()]);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(undelivered)
        .finish();
    let headers = [
        ("x-twilio-signature", signature.clone()),
        (
            "x-twilio-webhooks-signature-settings",
            "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256".to_string(),
        ),
    ];
    assert_eq!(
        api.post_receipt("tw", body.clone().into_bytes(), &headers).await.0,
        StatusCode::OK
    );
    // The same signature read as SHA-1 does not pass.
    assert_eq!(api.post_twilio(&undelivered, &signature).await, StatusCode::FORBIDDEN);
    assert_eq!(api.delivery(&otp_id).await, "undelivered");
    let row: (Value,) = sqlx::query_as("select payload from outbox where event_type = 'otp.undelivered'")
        .fetch_one(&api.harness.pool)
        .await
        .expect("an otp.undelivered event");
    assert_eq!(row.0["data"]["error"]["providerCode"], "30003", "{}", row.0);
    let delivered = [("MessageSid", "SM0"), ("MessageStatus", "delivered")];
    assert_eq!(
        api.post_twilio(&delivered, &twilio_sign(TOKEN, &url, &delivered)).await,
        StatusCode::OK
    );
    assert_eq!(
        api.delivery(&otp_id).await,
        "undelivered",
        "undelivered is final for the message"
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_twilio_whatsapp_message_with_a_content_sid_is_what_twilios_client_sends(pool: PgPool) {
    let api = start(pool, "tw", |base| {
        json!({"kind": "twilio", "account_sid": SID, "auth_token": TOKEN, "base_url": base,
               "content_sid": "HX0123456789abcdef"})
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(NewIds::new("SM", |id| json!({"sid": id})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let (_, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "channel": "whatsapp", "from": "+14155550100"}))
        .await;
    let sent = api.harness.provider.received_requests().await.expect("requests");
    let ours = form(&sent[0]);
    assert!(field(&ours, "Body").is_none(), "no free text with a template: {ours:?}");
    let variables: Value =
        serde_json::from_str(field(&ours, "ContentVariables").expect("ContentVariables")).expect("json");
    assert_eq!(variables, json!({"1": pin}));

    let theirs: Value = serde_json::from_str(&oracle(&[
        "message",
        &json!({
            "to": "whatsapp:+14155550123", "from_": "whatsapp:+14155550100",
            "content_sid": "HX0123456789abcdef",
            "content_variables": field(&ours, "ContentVariables").expect("ContentVariables"),
            "status_callback": field(&ours, "StatusCallback").expect("StatusCallback"),
        })
        .to_string(),
    ]))
    .expect("json");
    // Every pair as sent, repeats included.
    let mut ours_sorted: Vec<(String, String)> = url::form_urlencoded::parse(&sent[0].body).into_owned().collect();
    ours_sorted.sort();
    let mut theirs_sorted: Vec<(String, String)> = theirs["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
        .collect();
    theirs_sorted.sort();
    assert_eq!(ours_sorted, theirs_sorted, "field for field");
    assert_eq!(
        sent[0].url.path(),
        url::Url::parse(theirs["url"].as_str().expect("url"))
            .expect("a URL")
            .path()
            .replace("AC00000000000000000000000000000000", SID)
    );
    api.finish().await;
}

async fn whatsapp(pool: PgPool) -> Api {
    let api = start(pool, "wa", |base| {
        json!({"kind": "whatsapp-cloud", "access_token": "wa-token", "phone_number_id": "PNID",
               "template_name": "otp_auth", "base_url": base, "verify_token": "the-verify-token",
               "app_secret": META_SECRET})
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(NewIds::new("wamid.", |id| {
            json!({"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}], "messages": [{"id": id}]})
        }))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    api
}

fn meta_statuses(statuses: Value) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "PNID"}, "statuses": statuses}}]}]})
    .to_string()
    .into_bytes()
}

#[sqlx::test]
async fn whatsapp_cloud_receipts_need_metas_handshake_token_and_body_signature(pool: PgPool) {
    let api = whatsapp(pool).await;
    let handshake = |token: &str| {
        format!(
            "{}/v1/receipts/wa?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            api.base
        )
    };
    let answer = api
        .http
        .get(handshake("the-verify-token"))
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.expect("text"), "1158201444");
    let answer = api.http.get(handshake("guess")).send().await.expect("request");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);

    let (first, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "channel": "whatsapp"}))
        .await;
    let (second, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550124", "channel": "whatsapp"}))
        .await;
    let body = meta_statuses(json!([
        {"id": "wamid.0", "status": "delivered", "timestamp": "1700000000", "recipient_id": "14155550123"},
        {"id": "wamid.1", "status": "failed", "timestamp": "1700000000", "recipient_id": "14155550124",
         "errors": [{"code": 131026, "title": "Message undeliverable"}]}
    ]));
    let signed = |body: &[u8]| vec![("x-hub-signature-256", format!("sha256={}", hex_hmac(META_SECRET, body)))];
    let forged = vec![(
        "x-hub-signature-256",
        format!("sha256={}", hex_hmac("another-secret", &body)),
    )];
    assert_eq!(
        api.post_receipt("wa", body.clone(), &forged).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.post_receipt("wa", body.clone(), &[]).await.0, StatusCode::FORBIDDEN);
    let mut changed = body.clone();
    let at = changed.windows(9).position(|w| w == b"delivered").expect("delivered");
    changed[at..at + 9].copy_from_slice(b"xelivered");
    assert_eq!(
        api.post_receipt("wa", changed, &signed(&body)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.receipts_stored().await, 0);

    assert_eq!(
        api.post_receipt("wa", body.clone(), &signed(&body)).await.0,
        StatusCode::OK
    );
    assert_eq!(api.delivery(&first).await, "delivered");
    assert_eq!(api.delivery(&second).await, "undelivered");
    let (_, view) = api.get(&format!("/v1/otp/{second}")).await;
    assert_eq!(view["lastError"]["providerCode"], "131026", "{view}");
    // `read` after `delivered` moves the message, not the OTP (it is delivered already).
    let read = meta_statuses(json!([{"id": "wamid.0", "status": "read", "timestamp": "1700000001"}]));
    assert_eq!(
        api.post_receipt("wa", read.clone(), &signed(&read)).await.0,
        StatusCode::OK
    );
    let (_, attempts) = api.get(&format!("/v1/otp/{first}/attempts")).await;
    assert_eq!(attempts["deliveries"][0]["receiptStatus"], "read");
    assert_eq!(api.event_count("otp.delivered").await, 1);
    assert_eq!(api.event_count("otp.undelivered").await, 1);
    assert_eq!(api.raw_receipts_holding("1415555").await, 0, "no recipient_id is kept");
    api.finish().await;
}

async fn http_json(pool: PgPool) -> Api {
    http_json_with(pool, &[]).await
}

async fn http_json_with(pool: PgPool, extra: &[(&str, Value)]) -> Api {
    // Time enough for a provider that holds its answer.
    let mut slow = vec![
        ("delivery.timeout_ms", json!(3000)),
        ("delivery.quick_retries", json!(0)),
    ];
    slow.extend(extra.iter().cloned());
    start_with(
        pool,
        "gw",
        |base| {
            json!({"kind": "http-json", "url": format!("{base}/send"), "body": {"to": "{{to}}", "text": "{{message}}"},
               "message_id_pointer": "/id",
               "receipt": {"message_id_pointer": "/data/id", "status_pointer": "/data/state",
                           "error_code_pointer": "/data/err",
                           "statuses": {"DELIVRD": "delivered", "UNDELIV": "undelivered", "ACK": "sent"},
                           "signature_header": "x-signature", "secret": JSON_SECRET}})
        },
        &slow,
    )
    .await
}

fn gateway_receipt(id: &str, state: &str) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let body = json!({"data": {"id": id, "state": state, "err": null}})
        .to_string()
        .into_bytes();
    let signature = format!("sha256={}", hex_hmac(JSON_SECRET, &body));
    (body, vec![("x-signature", signature)])
}

/// Sends an OTP through a provider that holds its answer (`id`) for `delay_ms`, and waits
/// until the provider has the request; returns the OTP id.
async fn send_held(api: &Api, id: &str, delay_ms: u64) -> String {
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": id}))
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let (status, accepted) = api.post("/v1/otp/send", json!({"phoneNumber": "+14155550123"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    wait_until("the provider has the message", LONG, || async {
        !api.harness
            .provider
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    accepted["otpId"].as_str().expect("otpId").to_string()
}

#[sqlx::test]
async fn a_receipt_that_comes_before_its_send_is_recorded_is_applied_once_it_is(pool: PgPool) {
    let api = http_json(pool).await;
    // The provider holds its answer a while, and its receipt overtakes it.
    let otp_id = send_held(&api, "m-early", 1500).await;
    let (body, headers) = gateway_receipt("m-early", "DELIVRD");
    assert_eq!(api.post_receipt("gw", body, &headers).await.0, StatusCode::OK);
    let waiting: i64 = sqlx::query_scalar("select count(*) from delivery_receipts where applied_at is null")
        .fetch_one(&api.harness.pool)
        .await
        .expect("count");
    assert_eq!(waiting, 1, "the receipt is kept until its send is recorded");
    assert_eq!(api.delivery(&otp_id).await, "sending");
    wait_until("the early receipt applied", LONG, || async {
        api.delivery(&otp_id).await == "delivered"
    })
    .await;
    assert_eq!(api.event_count("otp.delivered").await, 1);

    // A receipt for a message nobody sent is kept, applies to nothing and changes nothing.
    let (body, headers) = gateway_receipt("m-unknown", "UNDELIV");
    assert_eq!(api.post_receipt("gw", body, &headers).await.0, StatusCode::OK);
    // A status outside the map is acknowledged and ignored; a wrong signature refused.
    let (body, headers) = gateway_receipt("m-early", "ENROUTE");
    assert_eq!(api.post_receipt("gw", body, &headers).await.0, StatusCode::OK);
    let (body, _) = gateway_receipt("m-early", "UNDELIV");
    let forged = vec![("x-signature", hex_hmac("a-guessed-secret-value", &body))];
    assert_eq!(api.post_receipt("gw", body, &forged).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.receipts_stored().await, 2);
    assert_eq!(api.delivery(&otp_id).await, "delivered");
    api.finish().await;
}

#[sqlx::test]
async fn a_receipt_that_waited_is_applied_before_a_later_one_of_its_message(pool: PgPool) {
    // The worker looks for waiting receipts once a minute here: the later receipt arrives
    // after the send is recorded and before the waiting one was applied.
    let api = http_json_with(pool, &[("worker.poll_interval_ms", json!(60_000))]).await;
    let otp_id = send_held(&api, "m-1", 1000).await;
    let (body, headers) = gateway_receipt("m-1", "UNDELIV");
    assert_eq!(api.post_receipt("gw", body, &headers).await.0, StatusCode::OK);
    wait_until("the send recorded", LONG, || async {
        !matches!(api.delivery(&otp_id).await.as_str(), "sending" | "not made yet")
    })
    .await;
    let (body, headers) = gateway_receipt("m-1", "DELIVRD");
    assert_eq!(api.post_receipt("gw", body, &headers).await.0, StatusCode::OK);
    assert_eq!(
        api.delivery(&otp_id).await,
        "undelivered",
        "the provider said undelivered first, which is final"
    );
    api.finish().await;
}

async fn xoxzo(pool: PgPool, extra: Value) -> Api {
    let api = start(pool, "xz", move |base| {
        let mut config = json!({"kind": "xoxzo", "sid": "xsid", "auth_token": "xtoken", "base_url": base});
        config
            .as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        config
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(NewIds::new("x", |id| json!([{"msgid": id}])))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    api
}

async fn polls(api: &Api) -> usize {
    api.harness
        .provider
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count()
}

async fn polls_left(api: &Api) -> i64 {
    sqlx::query_scalar("select count(*) from receipt_polls")
        .fetch_one(&api.harness.pool)
        .await
        .expect("count")
}

#[sqlx::test]
async fn an_xoxzo_message_is_polled_through_delivering_to_delivered(pool: PgPool) {
    let api = xoxzo(pool, json!({"poll_schedule_seconds": [1]})).await;
    Mock::given(method("GET"))
        .and(path("/sms/messages/x0/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"msgid": "x0", "status": "DELIVERING"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/sms/messages/x0/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"msgid": "x0", "status": "DELIVERED",
            "recipient": "+14155550123", "sent_time": "2026-12-02 10:00:00"})),
        )
        .with_priority(2)
        .mount(&api.harness.provider)
        .await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "from": "Shop"}))
        .await;
    wait_until("delivered by poll", LONG, || async {
        api.delivery(&otp_id).await == "delivered"
    })
    .await;
    assert_eq!(polls(&api).await, 2, "DELIVERING, then DELIVERED");
    assert_eq!(polls_left(&api).await, 0, "a final status ends the polling");
    let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
    let seen: Vec<&str> = attempts["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| r["providerStatus"].as_str().expect("providerStatus"))
        .collect();
    assert_eq!(seen, ["DELIVERING", "DELIVERED"]);
    let raw: Value = sqlx::query_scalar("select raw from delivery_receipts order by id desc limit 1")
        .fetch_one(&api.harness.pool)
        .await
        .expect("raw");
    assert!(
        raw.get("recipient").is_none(),
        "the number is not kept in the raw receipt: {raw}"
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_poll_that_never_ends_stops_at_its_deadline_and_is_no_failure(pool: PgPool) {
    let api = xoxzo(pool, json!({"poll_schedule_seconds": [1], "poll_deadline_seconds": 2})).await;
    Mock::given(method("GET"))
        .and(path_regex("^/sms/messages/.+/$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "QUEUED"})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "from": "Shop"}))
        .await;
    wait_until("the poll gives up", LONG, || async { polls_left(&api).await == 0 }).await;
    let asked = polls(&api).await;
    assert!((1..=3).contains(&asked), "polled {asked} times within a 2 s deadline");
    assert_eq!(
        api.delivery(&otp_id).await,
        "sent",
        "a missing receipt is not a failure"
    );
    api.finish().await;
}

#[sqlx::test]
async fn an_xoxzo_callback_with_our_token_makes_the_status_be_asked_at_once(pool: PgPool) {
    let api = xoxzo(pool, json!({"callback": true, "poll_schedule_seconds": [3600]})).await;
    Mock::given(method("GET"))
        .and(path("/sms/messages/x0/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"msgid": "x0", "status": "FAIL"})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "from": "Shop"}))
        .await;
    let sent = api.harness.provider.received_requests().await.expect("requests");
    let callback = field(&form(&sent[0]), "callbackurl").expect("callbackurl").to_string();
    assert!(
        callback.starts_with(&format!("{}/v1/receipts/xz?token=", api.base)),
        "{callback}"
    );

    let wrong = format!("{}/v1/receipts/xz?token=00000000000000000000000000000000", api.base);
    let answer = api
        .http
        .post(&wrong)
        .form(&[("msgid", "x0"), ("status", "DELIVERED")])
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(polls(&api).await, 0);
    // What the notice says is not believed: Xoxzo's API is asked, and says FAIL.
    let answer = api
        .http
        .post(&callback)
        .form(&[("msgid", "x0"), ("status", "DELIVERED")])
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), StatusCode::OK);
    wait_until("asked at once", LONG, || async {
        api.delivery(&otp_id).await == "undelivered"
    })
    .await;
    assert_eq!(polls(&api).await, 1);
    api.finish().await;
}

#[sqlx::test]
async fn a_provider_that_takes_no_receipts_and_an_unknown_provider_are_refused(pool: PgPool) {
    let api = Api::start(pool).await;
    let (status, _) = api.post_receipt("fake", b"{}".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "http-json without [receipt]");
    let (status, problem) = api.post_receipt("nobody", b"{}".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    api.finish().await;
}

#[sqlx::test]
async fn receipts_past_max_in_flight_are_deferred_with_503_and_taken_once_a_place_frees(pool: PgPool) {
    let api = http_json_with(pool, &[("receipts.max_in_flight", json!(1))]).await;
    let otp_id = send_held(&api, "m-1", 0).await;
    wait_until("the send recorded", LONG, || async {
        api.delivery(&otp_id).await == "sent"
    })
    .await;
    // Another transaction holds the OTP's row, so the first receipt waits inside its
    // request, holding the route's one place.
    let mut holder = api.harness.pool.begin().await.expect("begin");
    sqlx::query("select 1 from otps where id = $1::uuid for update")
        .bind(otp_id.trim_start_matches("otp_"))
        .execute(&mut *holder)
        .await
        .expect("lock");
    let first = {
        let (body, headers) = gateway_receipt("m-1", "DELIVRD");
        let request = api
            .http
            .post(format!("{}/v1/receipts/gw", api.base))
            .body(body)
            .header(headers[0].0, headers[0].1.clone());
        tokio::spawn(async move { request.send().await.expect("request").status() })
    };
    wait_until("the first receipt stored and waiting", LONG, || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%for no key update%'",
        )
        .fetch_one(&api.harness.pool)
        .await
        .expect("activity")
            == 1
    })
    .await;
    let (body, headers) = gateway_receipt("m-1", "DELIVRD");
    let response = api
        .http
        .post(format!("{}/v1/receipts/gw", api.base))
        .body(body)
        .header(headers[0].0, headers[0].1.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:otp-courier:problem:unavailable", "{problem}");
    holder.rollback().await.expect("release");
    assert_eq!(first.await.expect("first request"), StatusCode::OK);
    assert_eq!(api.delivery(&otp_id).await, "delivered");
    let (body, headers) = gateway_receipt("m-1", "DELIVRD");
    assert_eq!(
        api.post_receipt("gw", body, &headers).await.0,
        StatusCode::OK,
        "the place is free again"
    );
    assert_eq!(api.receipts_stored().await, 2, "the deferred receipt was not stored");
    api.finish().await;
}

/// Receipts of many messages arriving at once are applied together (a batch per writer):
/// each OTP moves once, with one event, and a message's two receipts in flight at once
/// leave it at the furthest state whatever their order.
#[sqlx::test]
async fn receipts_of_many_messages_at_once_each_move_their_own_otp_once(pool: PgPool) {
    let api = http_json(pool).await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(NewIds::new("many-", |id| json!({"id": id})))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let mut otps = Vec::new();
    for n in 0..8 {
        let (status, accepted) = api
            .post(
                "/v1/otp/send",
                json!({"phoneNumber": format!("+1415555{:04}", 100 + n)}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        otps.push(accepted["otpId"].as_str().expect("otpId").to_string());
    }
    for otp in &otps {
        wait_until("sent", LONG, || async { api.delivery(otp).await == "sent" }).await;
    }
    let ids: Vec<String> = sqlx::query_scalar("select provider_message_id from otps where id = $1::uuid")
        .bind(otps[0].trim_start_matches("otp_"))
        .fetch_all(&api.harness.pool)
        .await
        .expect("id");
    assert!(ids[0].starts_with("many-"), "{ids:?}");
    // Every message delivered, and the first also reported `sent` (ACK), which may land
    // before or after its `delivered`: nine receipts posted at once.
    let mut posts = Vec::new();
    let mut receipts: Vec<(String, &str)> = (0..8).map(|n| (format!("many-{n}"), "DELIVRD")).collect();
    receipts.push(("many-0".into(), "ACK"));
    for (id, state) in receipts {
        let (body, headers) = gateway_receipt(&id, state);
        let request = api
            .http
            .post(format!("{}/v1/receipts/gw", api.base))
            .body(body)
            .header(headers[0].0, headers[0].1.clone());
        posts.push(tokio::spawn(
            async move { request.send().await.expect("request").status() },
        ));
    }
    for post in posts {
        assert_eq!(post.await.expect("post"), StatusCode::OK);
    }
    for otp in &otps {
        assert_eq!(api.delivery(otp).await, "delivered", "{otp}");
    }
    let delivered: i64 = sqlx::query_scalar("select count(*) from outbox where event_type = 'otp.delivered'")
        .fetch_one(&api.harness.pool)
        .await
        .expect("count");
    assert_eq!(delivered, 8, "one otp.delivered per OTP");
    let first: Option<String> =
        sqlx::query_scalar("select receipt_status from delivery_attempts where message_id = 'many-0'")
            .fetch_one(&api.harness.pool)
            .await
            .expect("status");
    assert_eq!(
        first.as_deref(),
        Some("delivered"),
        "sent never takes a delivered message back"
    );
    assert_eq!(api.receipts_stored().await, 9);
    api.finish().await;
}
