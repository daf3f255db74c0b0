//! Any provider with a JSON API: a configured URL, headers and body template whose string
//! values may hold placeholders. Values are substituted into parsed JSON strings, so a
//! message can never break out of its field.

mod receipt;

use serde_json::Value;

use super::receipt::{Answer, Inbound, Refused};
use super::{json_str, Accepted, CodeShape, Http, Message, SendError};
use crate::platform::config::HttpJsonConfig;

#[derive(Debug)]
pub struct HttpJson {
    config: HttpJsonConfig,
    http: Http,
}

impl HttpJson {
    pub(super) fn new(config: HttpJsonConfig, http: Http) -> Self {
        Self { config, http }
    }

    pub(super) fn read_receipt(&self, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
        let config = self
            .config
            .receipt
            .as_ref()
            .ok_or(Refused::NotConfigured("no [receipt] is configured"))?;
        receipt::read(config, inbound)
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        let otp_id = message.otp_id.to_string();
        let values = [
            ("{{to}}", message.to),
            ("{{message}}", message.text),
            ("{{from}}", message.from.unwrap_or_default()),
            ("{{channel}}", message.channel.as_str()),
            ("{{locale}}", message.locale),
            ("{{otp_id}}", otp_id.as_str()),
            ("{{pin}}", message.pin.expose()),
        ];
        let body = fill(&self.config.body, &values);
        let mut request = self.http.client.post(&self.config.url).json(&body);
        for (name, value) in &self.config.headers {
            request = request.header(name, value.expose());
        }
        let answer = self.http.execute(request, message.pin, CodeShape::None).await?;
        let message_id = self
            .config
            .message_id_pointer
            .as_deref()
            .and_then(|p| json_str(&answer, p));
        Ok(Accepted { message_id })
    }
}

fn fill(template: &Value, values: &[(&str, &str)]) -> Value {
    match template {
        // Each placeholder in turn, as before, but a string is copied only where one occurs
        // (a `replace` that finds nothing still allocates its copy).
        Value::String(s) => {
            Value::String(values.iter().fold(
                s.clone(),
                |acc, (k, v)| {
                    if acc.contains(k) {
                        acc.replace(k, v)
                    } else {
                        acc
                    }
                },
            ))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, values)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, values))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_filled_inside_strings_only() {
        let template = json!({"to": "{{to}}", "text": "{{message}}", "n": 1, "list": ["{{from}}"]});
        let filled = fill(
            &template,
            &[
                ("{{to}}", "+33612345678"),
                ("{{message}}", "a \"quoted\" }"),
                ("{{from}}", "Acme"),
            ],
        );
        assert_eq!(
            filled,
            json!({"to": "+33612345678", "text": "a \"quoted\" }", "n": 1, "list": ["Acme"]})
        );
    }
}
