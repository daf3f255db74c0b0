//! The documents producers build against say what the code does: every example send job of
//! docs/asyncapi.json, published to the real queue, is accepted or dead-lettered with the
//! reason its name gives; the document passes the AsyncAPI initiative's own parser; the API
//! serves it, the send job's JSON Schema and the callbacks as OpenAPI webhooks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::BasicProperties;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::api::Api;
use crate::harness::{text_header, wait_until, Harness};

fn asyncapi() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/asyncapi.json")).expect("JSON")
}

async fn create_app(harness: &Harness, id: &str, change: impl FnOnce(&mut otp_courier::tenancy::apps::NewApp)) {
    let mut app = otp_courier::tenancy::apps::NewApp {
        id: id.into(),
        name: id.into(),
        templates: [(String::new(), "Code {{pin}}".to_string())].into(),
        ..Default::default()
    };
    change(&mut app);
    otp_courier::tenancy::apps::create(&harness.pool, &app)
        .await
        .expect("app");
}

#[sqlx::test]
async fn every_example_job_of_the_asyncapi_document_does_what_its_name_says(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    // The apps the examples name.
    create_app(&harness, "shop", |_| {}).await;
    create_app(&harness, "bound", |a| a.broker_user = Some("billing".into())).await;
    create_app(&harness, "fr-only", |a| a.country_allowlist = Some(vec!["FR".into()])).await;
    create_app(&harness, "bare", |a| a.templates.clear()).await;
    harness.start_worker();

    let document = asyncapi();
    let examples = document["components"]["messages"]["sendJob"]["examples"]
        .as_array()
        .expect("examples")
        .clone();
    let mut expected_rejections = BTreeMap::new();
    let mut accepted = 0;
    for example in &examples {
        let name = example["name"].as_str().expect("name").to_string();
        // A string payload is the raw body (it is not JSON on purpose).
        let body = match &example["payload"] {
            Value::String(raw) => raw.as_bytes().to_vec(),
            other => serde_json::to_vec(other).expect("json"),
        };
        harness
            .publish_with(&body, BasicProperties::default().with_message_id(name.as_str().into()))
            .await;
        match name.strip_prefix("rejected-") {
            Some(reason) => {
                expected_rejections.insert(name.clone(), reason.to_string());
            }
            None => accepted += 1,
        }
    }
    // One more the document describes but cannot show: a body over amqp.max_body_bytes.
    let big = json!({"appId": "shop", "phoneNumber": "+33612345678", "metadata": {"pad": "x".repeat(70_000)}});
    harness
        .publish_with(
            &serde_json::to_vec(&big).expect("json"),
            BasicProperties::default().with_message_id("rejected-body_too_large".into()),
        )
        .await;
    expected_rejections.insert("rejected-body_too_large".into(), "body_too_large".into());

    let dlq = harness.dlq.clone();
    wait_until(
        "every refused example is dead-lettered",
        Duration::from_secs(20),
        || async { harness.ready(&dlq).await as usize == expected_rejections.len() },
    )
    .await;
    let pool = harness.pool.clone();
    wait_until("every valid example became an OTP", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from otps")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == accepted
    })
    .await;
    let mut seen = BTreeMap::new();
    for (_, properties) in harness.drain_dlq().await {
        let name = properties.message_id().as_ref().expect("message-id").to_string();
        seen.insert(
            name,
            text_header(&properties, "x-otp-rejection-reason").expect("reason"),
        );
    }
    assert_eq!(seen, expected_rejections);

    // The reasons the dead-letter header may carry: those shown here, and the two that only
    // a failing database or oversized AMQP headers produce (tests/it/bad_input.rs and
    // tests/it/api.rs reach them).
    let documented: BTreeSet<String> = document["components"]["messages"]["deadLetter"]["headers"]["properties"]
        ["x-otp-rejection-reason"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let mut reached: BTreeSet<String> = seen.into_values().collect();
    reached.extend(["unstorable".to_string(), "headers_too_large".to_string()]);
    assert_eq!(documented, reached);
    harness.finish().await;
}

#[sqlx::test]
async fn the_interface_documents_are_served_and_the_asyncapi_parser_accepts_ours(pool: PgPool) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let validator = root.join("target/asyncapi");
    assert!(
        validator.join("node_modules/@asyncapi/parser").exists(),
        "the AsyncAPI parser is missing: run `bash scripts/oracles.sh` (scripts/test.sh does)"
    );
    let script = std::fs::read_to_string(root.join("tests/schemas/asyncapi.mjs")).expect("script");
    let output = std::process::Command::new("node")
        .current_dir(&validator)
        .args(["--input-type=module", "-e", &script])
        .arg(root.join("docs/asyncapi.json"))
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "the AsyncAPI parser refused docs/asyncapi.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let api = Api::start(pool).await;
    let (status, served) = api.get("/asyncapi.json").await;
    assert_eq!((status, served), (StatusCode::OK, asyncapi()));
    let (status, schema) = api.get("/schemas/send-job.schema.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schema["required"], json!(["phoneNumber"]));
    let (_, openapi) = api.get("/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    let events = &openapi["webhooks"]["otpStatus"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ["properties"]["type"]["enum"];
    assert_eq!(events.as_array().map(Vec::len), Some(12), "{events}");
    api.finish().await;
}
