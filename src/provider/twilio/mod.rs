//! Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP Basic with the account SID and auth token. WhatsApp goes through
//! the same API with `whatsapp:`-prefixed addresses. A business-started WhatsApp message
//! must be an approved template: with `content_sid` set, WhatsApp messages carry
//! `ContentSid` and `ContentVariables` `{"1": code}` instead of a `Body`.

mod receipt;

pub use receipt::{signature, Algorithm};

use super::receipt::{Answer, Inbound, Refused};
use super::{json_str, Accepted, CodeShape, Http, Message, SendError};
use crate::domain::Channel;
use crate::platform::config::TwilioConfig;

#[derive(Debug)]
pub struct Twilio {
    config: TwilioConfig,
    http: Http,
    /// Where Twilio posts the messages' status callbacks, when receipts are on.
    receipt_url: Option<String>,
}

impl Twilio {
    pub(super) fn new(config: TwilioConfig, http: Http, receipt_url: Option<String>) -> Self {
        Self {
            config,
            http,
            receipt_url,
        }
    }

    pub(super) fn read_receipt(&self, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
        receipt::read(self.config.auth_token.expose(), inbound)
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        if message.channel == Channel::Voice {
            return self.call(message).await;
        }
        let address = |number: &str| match message.channel {
            Channel::Whatsapp => format!("whatsapp:{number}"),
            _ => number.to_string(),
        };
        let mut form = vec![("To", address(message.to))];
        match (&self.config.content_sid, message.channel) {
            (Some(content), Channel::Whatsapp) => {
                form.push(("ContentSid", content.clone()));
                form.push((
                    "ContentVariables",
                    serde_json::json!({"1": message.pin.expose()}).to_string(),
                ));
            }
            _ => form.push(("Body", message.text.to_string())),
        }
        if let Some(url) = &self.receipt_url {
            form.push(("StatusCallback", url.clone()));
        }
        match (&self.config.messaging_service_sid, message.from) {
            (Some(service), _) => form.push(("MessagingServiceSid", service.clone())),
            (None, Some(from)) => form.push(("From", address(from))),
            (None, None) => {
                return Err(SendError::Config(
                    "twilio needs a sender (from) or messaging_service_sid".into(),
                ))
            }
        }
        self.post("Messages.json", &form, message).await
    }
}

impl Twilio {
    /// A call that says the message: `POST /2010-04-01/Accounts/{sid}/Calls.json` with inline
    /// `Twiml` (`<Say>` in the OTP's language) and the call's outcome as its receipt.
    async fn call(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        let from = message
            .from
            .filter(|f| f.starts_with('+') || f.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| SendError::Config("a twilio call needs a phone number as sender (from)".into()))?;
        let twiml = format!(
            "<Response><Say language=\"{}\">{}</Say></Response>",
            say_language(message.locale),
            xml_escape(message.text)
        );
        let mut form = vec![
            ("To", message.to.to_string()),
            ("From", from.to_string()),
            ("Twiml", twiml),
        ];
        if let Some(url) = &self.receipt_url {
            form.push(("StatusCallback", url.clone()));
        }
        self.post("Calls.json", &form, message).await
    }

    /// Posts `form` to the account's `resource` (`Messages.json`, `Calls.json`); the
    /// answer's `sid` names the message or call.
    async fn post(
        &self,
        resource: &str,
        form: &[(&str, String)],
        message: &Message<'_>,
    ) -> Result<Accepted, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let request = self
            .http
            .client
            .post(url)
            .basic_auth(&self.config.account_sid, Some(self.config.auth_token.expose()))
            .form(form);
        let body = self.http.execute(request, message.pin, CodeShape::Twilio).await?;
        Ok(Accepted {
            message_id: json_str(&body, "/sid"),
        })
    }
}

/// The language `<Say>` speaks for a locale: its own region where it has one (`pt-BR`),
/// else the language's usual one.
fn say_language(locale: &str) -> String {
    let mut parts = locale.split('-');
    let language = parts.next().unwrap_or("en").to_ascii_lowercase();
    if let Some(region) = parts.find(|p| p.len() == 2) {
        return format!("{language}-{}", region.to_ascii_uppercase());
    }
    let region = match language.as_str() {
        "en" => "US",
        "pt" => "PT",
        "ja" => "JP",
        "zh" => "CN",
        "ko" => "KR",
        "da" => "DK",
        "sv" => "SE",
        "nb" | "no" => "NO",
        other => return format!("{other}-{}", other.to_ascii_uppercase()),
    };
    format!("{language}-{region}")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locale_becomes_the_language_say_speaks() {
        assert_eq!(say_language("fr"), "fr-FR");
        assert_eq!(say_language("pt-BR"), "pt-BR");
        assert_eq!(say_language("en"), "en-US");
        assert_eq!(say_language("zh-Hant-TW"), "zh-TW");
        assert_eq!(xml_escape("a < b & \"c\""), "a &lt; b &amp; &quot;c&quot;");
    }
}
