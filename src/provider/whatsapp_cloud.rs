//! WhatsApp Cloud API (Meta Graph): `POST /{version}/{phone_number_id}/messages` with a
//! Bearer token, sending an approved AUTHENTICATION template whose body parameter is the code.

use serde_json::json;

use super::twilio::json_str;
use super::{Accepted, CodeShape, Http, Message, SendError};
use crate::domain::Channel;
use crate::platform::config::WhatsappCloudConfig;

#[derive(Debug)]
pub struct WhatsappCloud {
    config: WhatsappCloudConfig,
    http: Http,
}

impl WhatsappCloud {
    pub(super) fn new(config: WhatsappCloudConfig, http: Http) -> Self {
        Self { config, http }
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        if message.channel != Channel::Whatsapp {
            return Err(SendError::Config(
                "whatsapp-cloud sends WhatsApp only; route sms elsewhere".into(),
            ));
        }
        let code = message.pin.expose();
        let mut components = vec![json!({"type": "body", "parameters": [{"type": "text", "text": code}]})];
        if self.config.copy_code_button {
            components.push(json!({
                "type": "button", "sub_type": "url", "index": "0",
                "parameters": [{"type": "text", "text": code}]
            }));
        }
        let body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.trim_start_matches('+'),
            "type": "template",
            "template": {
                "name": self.config.template_name,
                // Meta names languages with underscores: pt_BR.
                "language": {"code": message.locale.replace('-', "_")},
                "components": components,
            }
        });
        let url = format!(
            "{}/{}/{}/messages",
            self.config.base_url.trim_end_matches('/'),
            self.config.api_version,
            self.config.phone_number_id
        );
        let request = self
            .http
            .client
            .post(url)
            .bearer_auth(self.config.access_token.expose())
            .json(&body);
        let answer = self.http.execute(request, message.pin, CodeShape::Meta).await?;
        Ok(Accepted {
            message_id: json_str(&answer, "/messages/0/id"),
        })
    }
}
