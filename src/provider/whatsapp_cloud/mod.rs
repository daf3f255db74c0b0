//! WhatsApp Cloud API (Meta Graph): `POST /{version}/{phone_number_id}/messages` with a
//! Bearer token, sending an approved AUTHENTICATION template whose body parameter is the code.

mod receipt;

use serde_json::json;

use super::receipt::{Answer, Inbound, Refused};
use super::{json_str, Accepted, CodeShape, Http, Message, SendError};
use crate::domain::Channel;
use crate::platform::config::WhatsappCloudConfig;

/// Our locales in the language codes of Meta's templates, where `-` -> `_` is not it.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", "en_US"),
    ("pt-BR", "pt_BR"),
    ("pt-PT", "pt_PT"),
    ("zh-Hans", "zh_CN"),
    ("zh-Hans-CN", "zh_CN"),
    ("zh-Hant-TW", "zh_TW"),
    ("zh-Hant-HK", "zh_HK"),
    ("zh-TW", "zh_TW"),
    ("zh-HK", "zh_HK"),
];

#[derive(Debug)]
pub struct WhatsappCloud {
    config: WhatsappCloudConfig,
    http: Http,
}

impl WhatsappCloud {
    pub(super) fn new(config: WhatsappCloudConfig, http: Http) -> Self {
        Self { config, http }
    }

    pub(super) fn read_receipt(&self, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
        receipt::read(
            self.config.verify_token.as_ref(),
            self.config.app_secret.as_ref(),
            inbound,
        )
    }

    /// The template language code for `locale`: the configured map, the built-in one, or
    /// the locale with `_` for `-`.
    fn language(&self, locale: &str) -> String {
        if let Some(code) = self.config.languages.get(locale) {
            return code.clone();
        }
        LANGUAGES
            .iter()
            .find(|(ours, _)| ours.eq_ignore_ascii_case(locale))
            .map_or_else(|| locale.replace('-', "_"), |(_, theirs)| theirs.to_string())
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
                "language": {"code": self.language(message.locale)},
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(languages: &[(&str, &str)]) -> WhatsappCloud {
        let config: WhatsappCloudConfig = serde_json::from_value(json!({
            "access_token": "t", "phone_number_id": "1", "template_name": "otp",
            "languages": languages.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }))
        .expect("config");
        WhatsappCloud::new(
            config,
            super::super::Http::new(std::time::Duration::from_secs(1), None).expect("http"),
        )
    }

    #[test]
    fn locales_become_the_templates_language_codes() {
        let p = provider(&[("fr", "fr_CA")]);
        assert_eq!(p.language("en"), "en_US");
        assert_eq!(p.language("pt-BR"), "pt_BR");
        assert_eq!(p.language("zh-Hant-TW"), "zh_TW");
        assert_eq!(p.language("fr"), "fr_CA", "the configured map wins");
        assert_eq!(p.language("de"), "de");
        assert_eq!(p.language("es-MX"), "es_MX");
    }
}
