//! The documents that describe the interfaces: the OpenAPI document generated from the
//! handlers' annotations, with the status callbacks as OpenAPI 3.1 `webhooks`; the AsyncAPI
//! document of the queues and the JSON Schema of the send job, kept in `docs/` and served
//! as they are there.

use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::compat::{generic, smscx, xoxzo};
use super::{error, fraud, health, logs, ops, otp, query, reports};

#[derive(OpenApi)]
#[openapi(
    info(title = "otp-courier", description = "One-time passwords by SMS and WhatsApp."),
    paths(
        otp::send, otp::verify, otp::resend, otp::cancel,
        query::status, query::list, query::events, query::attempts,
        reports::reports, reports::rate_limits, logs::logs, health::healthz, health::readyz,
        generic::send, generic::verify, generic::resend, generic::status, generic::attempts,
        generic::list, generic::activity, generic::rate_limits, generic::report,
        smscx::create, smscx::status, smscx::verify, smscx::cancel,
        xoxzo::register_website, xoxzo::request, xoxzo::verify,
        ops::replay_deliveries, ops::replay_callbacks, ops::dlq_list, ops::dlq_requeue, ops::dlq_purge,
        fraud::blocks, fraud::lift, fraud::verdicts,
    ),
    components(schemas(error::Problem, smscx::ErrorBody, smscx::ErrorFields)),
    modifiers(&Security),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// The status callbacks, as OpenAPI 3.1 `webhooks`.
const WEBHOOKS: &str = include_str!("../../docs/schemas/webhooks.json");
/// The AMQP interface: the send queue, its messages and the dead-letter queue's headers.
pub const ASYNCAPI: &str = include_str!("../../docs/asyncapi.json");
/// The send job, as producers publish it.
pub const SEND_JOB_SCHEMA: &str = include_str!("../../docs/schemas/send-job.schema.json");

pub async fn openapi() -> Json<serde_json::Value> {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    document["webhooks"] = serde_json::from_str(WEBHOOKS).unwrap_or_default();
    Json(document)
}

fn json(text: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], text)
}

pub async fn asyncapi() -> impl IntoResponse {
    json(ASYNCAPI)
}

pub async fn send_job_schema() -> impl IntoResponse {
    json(SEND_JOB_SCHEMA)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::{RawJob, SendJob};

    fn parse(job: &Value) -> Result<SendJob, crate::domain::JobError> {
        SendJob::parse(&RawJob {
            body: &serde_json::to_vec(job).expect("json"),
            app_id: None,
            message_id: None,
            max_body_bytes: 65536,
            allow_http_callbacks: false,
        })
    }

    #[test]
    fn every_field_the_schema_documents_is_accepted_by_the_parser_with_its_example() {
        let schema: Value = serde_json::from_str(SEND_JOB_SCHEMA).expect("schema");
        let examples = |kind: &str| -> Vec<(String, Value)> {
            let map = schema[kind].as_object().expect("properties");
            map.iter()
                .map(|(name, rule)| (name.clone(), rule["examples"][0].clone()))
                .collect()
        };
        let properties = examples("properties");
        assert_eq!(properties.len(), 17, "{properties:?}");
        let localized = [("template_pt-BR", 0), ("template_voice_fr", 1)];
        let patterns = examples("patternProperties");
        let fields = properties.into_iter().chain(
            localized
                .iter()
                .map(|(name, i)| (name.to_string(), patterns[*i].1.clone())),
        );
        for (name, example) in fields {
            assert!(!example.is_null(), "{name} has an example");
            let mut job =
                serde_json::json!({"appId": "shop", "phoneNumber": "+33612345678", "template": "Code {{pin}}"});
            job[&name] = example.clone();
            if name == "appid" {
                job.as_object_mut().expect("object").remove("appId");
            }
            if name == "recipient" {
                job.as_object_mut().expect("object").remove("phoneNumber");
            }
            let parsed = parse(&job).unwrap_or_else(|e| panic!("{name} = {example}: {e}"));
            // The field took effect rather than being ignored as unknown.
            let shown = format!("{parsed:?}").to_lowercase();
            let needle = match &example {
                // A URL shows parsed: its path is there as given.
                Value::String(text) if text.starts_with("https://") => text["https://example.com".len()..].to_string(),
                Value::String(text) => text.to_lowercase(),
                Value::Array(_) => "whatsapp".into(),
                Value::Object(_) => "userid".into(),
                other => other.to_string(),
            };
            assert!(shown.contains(&needle), "{name}: {needle} not in {shown}");
        }
    }

    #[test]
    fn the_asyncapi_document_carries_the_send_job_schema_and_valid_examples_that_parse() {
        let document: Value = serde_json::from_str(ASYNCAPI).expect("asyncapi");
        let message = &document["components"]["messages"]["sendJob"];
        assert_eq!(message["payload"]["$ref"], "schemas/send-job.schema.json");
        let examples = message["examples"].as_array().expect("examples");
        for example in examples
            .iter()
            .filter(|e| !e["name"].as_str().unwrap_or("").starts_with("rejected-"))
        {
            parse(&example["payload"]).unwrap_or_else(|e| panic!("{}: {e}", example["name"]));
        }
    }
}
