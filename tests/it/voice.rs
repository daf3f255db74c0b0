//! The voice channel: a call that reads the code digit by digit, twice, in the OTP's
//! language; Twilio's and Xoxzo's requests as their documentation has them; a call nobody
//! answers moves a workflow on. Providers are wiremock fakes on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::api::Api;
use crate::harness::{form_fields as form, wait_until};
use crate::receipts::{start, twilio_sign};

const SID: &str = "AC0123";
const TOKEN: &str = "twilio-auth-token";
const LONG: Duration = Duration::from_secs(15);

async fn twilio(pool: PgPool) -> Api {
    let api = start(
        pool,
        "p",
        |base| json!({"kind": "twilio", "account_sid": SID, "auth_token": TOKEN, "base_url": base}),
    )
    .await;
    for (endpoint, sid) in [("Calls", "CA0"), ("Messages", "SM0")] {
        Mock::given(method("POST"))
            .and(path(format!("/2010-04-01/Accounts/{SID}/{endpoint}.json")))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": sid})))
            .with_priority(1)
            .mount(&api.harness.provider)
            .await;
    }
    api
}

async fn requests_to(api: &Api, endpoint: &str) -> Vec<BTreeMap<String, String>> {
    api.harness
        .provider
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().ends_with(endpoint))
        .map(form)
        .collect()
}

fn spoken(pin: &str) -> String {
    pin.chars().map(String::from).collect::<Vec<_>>().join(", ")
}

#[sqlx::test]
async fn a_twilio_call_says_the_digits_one_by_one_twice_in_the_otps_language(pool: PgPool) {
    let api = twilio(pool).await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+33612345678", "channel": "voice", "from": "+14155550100"}))
        .await;
    let pin = api.pin_of(&otp_id).await;
    let calls = requests_to(&api, "/Calls.json").await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call["To"], "+33612345678");
    assert_eq!(call["From"], "+14155550100");
    assert_eq!(call["StatusCallback"], format!("{}/v1/receipts/p", api.base));
    let twiml = &call["Twiml"];
    assert!(twiml.starts_with("<Response><Say language=\"fr-FR\">"), "{twiml}");
    assert!(twiml.ends_with("</Say></Response>"), "{twiml}");
    assert_eq!(
        twiml.matches(&spoken(&pin)).count(),
        2,
        "the code said twice, digit by digit: {twiml}"
    );
    assert!(
        twiml.contains("Votre code"),
        "in French, the number's language: {twiml}"
    );
    assert!(!twiml.contains(&pin), "never as one number: {twiml}");
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(
        (view["channel"].as_str(), view["locale"].as_str()),
        (Some("voice"), Some("fr"))
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_call_nobody_answers_moves_the_workflow_to_its_next_step(pool: PgPool) {
    let api = twilio(pool).await;
    let workflow = json!([{"channel": "voice", "timeoutSeconds": 240}, {"channel": "sms"}]);
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "from": "+14155550100", "workflow": workflow}))
        .await;
    assert!(requests_to(&api, "/Messages.json").await.is_empty());
    let url = format!("{}/v1/receipts/p", api.base);
    let params = [("AccountSid", SID), ("CallSid", "CA0"), ("CallStatus", "no-answer")];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let answer = api
        .http
        .post(&url)
        .header("x-twilio-signature", twilio_sign(TOKEN, &url, &params))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("receipt");
    assert_eq!(answer.status(), StatusCode::OK);
    wait_until("the SMS step sent", LONG, || async {
        let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
        view["channel"] == "sms" && view["delivery"] == "sent"
    })
    .await;
    let pin = api.pin_of(&otp_id).await;
    let sms = &requests_to(&api, "/Messages.json").await[0];
    assert!(sms["Body"].contains(&pin), "the same code, as a message: {sms:?}");
    assert!(
        !sms["Body"].contains(&spoken(&pin)),
        "the SMS step says its own template: {sms:?}"
    );
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["workflow"]["step"], 1, "{view}");
    api.finish().await;
}

#[sqlx::test]
async fn a_xoxzo_call_posts_the_documented_text_to_speech_playback(pool: PgPool) {
    let api = start(pool, "p", |base| {
        json!({"kind": "xoxzo", "sid": "xsid", "auth_token": "xtoken", "base_url": base, "poll_schedule_seconds": []})
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/voice/simple/playbacks/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!([{"callid": "call-1"}])))
        .with_priority(1)
        .mount(&api.harness.provider)
        .await;
    let (otp_id, _) = api
        .send_delivered(
            json!({"phoneNumber": "+14155550123", "channel": "voice", "from": "+14155550100",
                                "language": "es"}),
        )
        .await;
    let pin = api.pin_of(&otp_id).await;
    let requests = api.harness.provider.received_requests().await.expect("requests");
    assert_eq!(requests.len(), 1);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("xsid:xtoken")
    );
    assert_eq!(
        requests[0].headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(basic.as_str())
    );
    let fields = form(&requests[0]);
    assert_eq!(
        fields.keys().map(String::as_str).collect::<Vec<_>>(),
        ["caller", "recipient", "tts_lang", "tts_message"]
    );
    assert_eq!(
        (fields["caller"].as_str(), fields["recipient"].as_str()),
        ("+14155550100", "+14155550123")
    );
    assert_eq!(fields["tts_lang"], "es");
    assert_eq!(fields["tts_message"].matches(&spoken(&pin)).count(), 2, "{fields:?}");
    let (_, attempts) = api.get(&format!("/v1/otp/{otp_id}/attempts")).await;
    assert_eq!(attempts["deliveries"][0]["messageId"], "call-1");
    api.finish().await;
}

#[sqlx::test]
async fn a_call_needs_digits_and_a_country_the_app_calls(pool: PgPool) {
    let api = twilio(pool).await;
    let (status, problem) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "from": "+14155550100", "pinType": "letters",
                   "workflow": [{"channel": "sms", "timeoutSeconds": 60}, {"channel": "voice"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "invalid_field", "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("pinType") && detail.contains("digits"), "{problem}");

    sqlx::query("update apps set voice_country_allowlist = '{FR}' where id = 'shop'")
        .execute(&api.harness.pool)
        .await
        .expect("voice only to France");
    let (status, problem) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "channel": "voice", "from": "+14155550100"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "country_not_allowed", "{problem}");
    let (status, _) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "from": "+14155550100"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "SMS to the same number is still allowed");
    let (status, _) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+33612345678", "channel": "voice", "from": "+14155550100"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a call to France is");
    api.finish().await;
}
