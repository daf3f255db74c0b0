//! Each provider against a local fake that checks the exact request it makes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use otp_courier::domain::{Channel, OtpId};
use otp_courier::message::pin::{self, PinKey, PinLength, PinType};
use otp_courier::platform::config::ProviderConfig;
use otp_courier::provider::{Accepted, Message, Providers};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{form_fields as form, PIN_KEY};

fn provider(config: Value) -> Providers {
    let config: ProviderConfig = serde_json::from_value(config).expect("provider config");
    let configs = BTreeMap::from([("p".to_string(), config)]);
    Providers::from_config(&configs, Duration::from_secs(2), None, &no_receipts()).expect("providers")
}

fn no_receipts() -> otp_courier::platform::config::ReceiptsConfig {
    serde_json::from_value(json!({"public_url": "", "max_in_flight": 64})).expect("receipts config")
}

async fn send(
    providers: &Providers,
    channel: Channel,
    from: Option<&str>,
) -> Result<Accepted, otp_courier::provider::SendError> {
    let key = PinKey::parse(PIN_KEY).expect("key");
    let otp_id = OtpId::new();
    let input = pin::PinInput {
        app_id: "shop",
        salt: &[1; 16],
        otp: otp_id,
        generation: 1,
    };
    let pin = pin::derive(&key, &input, PinType::Numbers, PinLength::DEFAULT);
    let text = format!("Code {}", pin.expose());
    let message = Message {
        otp_id,
        to: "+14155550123",
        channel,
        from,
        text: &text,
        pin: &pin,
        locale: "pt-BR",
    };
    providers.get("p").expect("configured").send(&message).await
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

#[tokio::test]
async fn twilio_posts_a_form_with_basic_auth_to_the_messages_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
        .and(header("authorization", basic("AC123", "secret-token").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM1"})))
        .mount(&server)
        .await;
    let providers = provider(
        json!({"kind": "twilio", "account_sid": "AC123", "auth_token": "secret-token", "base_url": server.uri()}),
    );

    let accepted = send(&providers, Channel::Sms, Some("Shop")).await.expect("accepted");
    assert_eq!(accepted.message_id.as_deref(), Some("SM1"));
    let fields = form(&only_request(&server).await);
    assert_eq!(fields["To"], "+14155550123");
    assert_eq!(fields["From"], "Shop");
    assert!(fields["Body"].starts_with("Code "));
}

#[tokio::test]
async fn twilio_sends_whatsapp_with_prefixed_addresses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM2"})))
        .mount(&server)
        .await;
    let providers =
        provider(json!({"kind": "twilio", "account_sid": "AC123", "auth_token": "t", "base_url": server.uri()}));
    send(&providers, Channel::Whatsapp, Some("+14155550100"))
        .await
        .expect("accepted");
    let fields = form(&only_request(&server).await);
    assert_eq!(fields["To"], "whatsapp:+14155550123");
    assert_eq!(fields["From"], "whatsapp:+14155550100");
}

#[tokio::test]
async fn xoxzo_posts_recipient_sender_and_message_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/messages/"))
        .and(header("authorization", basic("sid1", "tok1").as_str()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!([{"msgid": "x-1"}])))
        .mount(&server)
        .await;
    let providers = provider(json!({"kind": "xoxzo", "sid": "sid1", "auth_token": "tok1", "base_url": server.uri()}));

    let accepted = send(&providers, Channel::Sms, Some("Shop")).await.expect("accepted");
    assert_eq!(accepted.message_id.as_deref(), Some("x-1"));
    let fields = form(&only_request(&server).await);
    assert_eq!(fields["recipient"], "+14155550123");
    assert_eq!(fields["sender"], "Shop");
    assert!(fields["message"].starts_with("Code "));
}

/// Xoxzo's documented template call: `POST /sms/templates/<template_id>/messages/`, JSON
/// `sender`, `recipient` and `variables` (placeholder name -> value), HTTP Basic.
#[tokio::test]
async fn xoxzo_with_a_template_id_posts_the_documented_template_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/templates/42/messages/"))
        .and(header("authorization", basic("sid1", "tok1").as_str()))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!([{"msgid": "x-7"}])))
        .mount(&server)
        .await;
    let providers = provider(
        json!({"kind": "xoxzo", "sid": "sid1", "auth_token": "tok1", "base_url": server.uri(),
                                    "template_id": "42", "template_variable": "otp"}),
    );

    let accepted = send(&providers, Channel::Sms, Some("Shop")).await.expect("accepted");
    assert_eq!(accepted.message_id.as_deref(), Some("x-7"));
    let body: Value = serde_json::from_slice(&only_request(&server).await.body).expect("json");
    let code = body["variables"]["otp"]
        .as_str()
        .expect("the code as variable `otp`")
        .to_string();
    assert_eq!(code.len(), 6);
    assert_eq!(
        body,
        json!({"sender": "Shop", "recipient": "+14155550123", "variables": {"otp": code}})
    );
}

#[tokio::test]
async fn whatsapp_cloud_sends_an_authentication_template_with_the_code_as_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v21.0/PNID/messages"))
        .and(header("authorization", "Bearer wa-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"messages": [{"id": "wamid.1"}]})))
        .mount(&server)
        .await;
    let providers = provider(json!({
        "kind": "whatsapp-cloud", "access_token": "wa-token", "phone_number_id": "PNID",
        "template_name": "otp_auth", "base_url": server.uri()
    }));

    let accepted = send(&providers, Channel::Whatsapp, None).await.expect("accepted");
    assert_eq!(accepted.message_id.as_deref(), Some("wamid.1"));
    let body: Value = serde_json::from_slice(&only_request(&server).await.body).expect("json");
    let code = body["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .expect("code")
        .to_string();
    assert_eq!(code.len(), 6);
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "14155550123", "type": "template",
            "template": {"name": "otp_auth", "language": {"code": "pt_BR"}, "components": [
                {"type": "body", "parameters": [{"type": "text", "text": code}]},
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": code}]}
            ]}
        })
    );
}

#[tokio::test]
async fn http_json_fills_the_body_template_and_sends_the_configured_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/sms"))
        .and(header("x-api-key", "k-1"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"data": {"ref": "r-9"}})))
        .mount(&server)
        .await;
    let providers = provider(json!({
        "kind": "http-json", "url": format!("{}/v1/sms", server.uri()), "headers": {"x-api-key": "k-1"},
        "body": {"destination": "{{to}}", "content": "{{message}}", "meta": {"channel": "{{channel}}", "lang": "{{locale}}"}},
        "message_id_pointer": "/data/ref"
    }));

    let accepted = send(&providers, Channel::Sms, None).await.expect("accepted");
    assert_eq!(accepted.message_id.as_deref(), Some("r-9"));
    let body: Value = serde_json::from_slice(&only_request(&server).await.body).expect("json");
    assert_eq!(body["destination"], "+14155550123");
    assert_eq!(body["meta"], json!({"channel": "sms", "lang": "pt-BR"}));
    assert!(body["content"].as_str().expect("content").starts_with("Code "));
}

#[tokio::test]
async fn the_file_provider_appends_one_json_line_per_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("messages.jsonl");
    let providers = provider(json!({"kind": "file", "path": file}));
    send(&providers, Channel::Sms, Some("Shop")).await.expect("written");
    send(&providers, Channel::Sms, Some("Shop")).await.expect("written");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["to"], "+14155550123");
    assert!(lines[0]["text"].as_str().expect("text").starts_with("Code "));
}

#[tokio::test]
async fn provider_errors_are_classified_and_never_echo_the_pin() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "7")
                .set_body_string("busy"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(|request: &wiremock::Request| ResponseTemplate::new(422).set_body_bytes(request.body.clone()))
        .mount(&server)
        .await;
    let providers = provider(json!({"kind": "http-json", "url": server.uri(), "body": {"text": "{{message}}"}}));

    let busy = send(&providers, Channel::Sms, None).await.expect_err("503");
    assert!(busy.is_transient());
    assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
    let refused = send(&providers, Channel::Sms, None).await.expect_err("422");
    assert!(!refused.is_transient());
    let text = refused.to_string();
    assert!(text.contains(otp_courier::provider::WITHHELD), "{text}");
    assert!(
        !text.contains("Code "),
        "nothing of the answer around the code is kept: {text}"
    );
}

#[tokio::test]
async fn a_configured_proxy_carries_provider_requests() {
    let proxy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "via-proxy"})))
        .mount(&proxy)
        .await;
    let config: ProviderConfig = serde_json::from_value(json!({
        "kind": "http-json", "url": "http://127.0.0.1:9/send", "body": {"text": "{{message}}"},
        "message_id_pointer": "/id"
    }))
    .expect("provider config");
    let configs = BTreeMap::from([("p".to_string(), config)]);
    let providers = Providers::from_config(&configs, Duration::from_secs(2), Some(&proxy.uri()), &no_receipts())
        .expect("providers");
    send(&providers, Channel::Sms, None)
        .await
        .expect("sent through the proxy");
    let seen = proxy.received_requests().await.unwrap_or_default();
    assert_eq!(seen.len(), 1, "the proxy carried the request");
    assert_eq!(seen[0].url.path(), "/send");
}

/// A provider of `config` (its `base_url` set to `server`) whose every answer is `status`
/// with `body`; the error the send ends in.
async fn refusal(config: Value, channel: Channel, status: u16, body: Value) -> otp_courier::provider::SendError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    let mut config = config;
    config["base_url"] = json!(server.uri());
    send(&provider(config), channel, Some("+14155550100"))
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn provider_error_codes_are_read_and_decide_where_the_status_misleads() {
    let twilio = json!({"kind": "twilio", "account_sid": "AC1", "auth_token": "t"});
    let meta = json!({"kind": "whatsapp-cloud", "access_token": "a", "phone_number_id": "P", "template_name": "otp"});
    let xoxzo = json!({"kind": "xoxzo", "sid": "s", "auth_token": "t"});

    // Twilio's invalid number: final, its code and meaning kept.
    let invalid = refusal(
        twilio.clone(),
        Channel::Sms,
        400,
        json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
    )
    .await;
    assert!(!invalid.is_transient());
    assert_eq!(invalid.provider_code(), Some("21211"));
    assert!(
        invalid
            .to_string()
            .contains("code 21211: the number is not a valid phone number"),
        "{invalid}"
    );
    // Twilio's rate limit under a 400 is worth retrying.
    let limited = refusal(
        twilio,
        Channel::Sms,
        400,
        json!({"code": 20429, "message": "Too Many Requests"}),
    )
    .await;
    assert!(limited.is_transient());
    assert_eq!(limited.class(), "rate_limited");

    // Meta throttling answers 400; it is transient. A number-level error is final even as 5xx.
    let throttled = refusal(
        meta.clone(),
        Channel::Whatsapp,
        400,
        json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}}),
    )
    .await;
    assert!(throttled.is_transient(), "{throttled}");
    let undeliverable = refusal(
        meta,
        Channel::Whatsapp,
        502,
        json!({"error": {"message": "Message undeliverable", "code": 131026}}),
    )
    .await;
    assert!(!undeliverable.is_transient(), "{undeliverable}");
    assert_eq!(undeliverable.provider_code(), Some("131026"));

    // Xoxzo names the field it refused.
    let field = refusal(xoxzo, Channel::Sms, 400, json!({"recipient": ["invalid phone number"]})).await;
    assert_eq!(field.provider_code(), Some("recipient"));
    assert!(!field.is_transient());
}
