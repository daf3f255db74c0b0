//! Xoxzo SMS API: `POST /sms/messages/`, form-encoded `recipient`, `sender`, `message`,
//! HTTP Basic with the SID and auth token. SMS only.

use super::twilio::json_str;
use super::{Accepted, CodeShape, Http, Message, SendError};
use crate::domain::Channel;
use crate::platform::config::XoxzoConfig;

#[derive(Debug)]
pub struct Xoxzo {
    config: XoxzoConfig,
    http: Http,
}

impl Xoxzo {
    pub(super) fn new(config: XoxzoConfig, http: Http) -> Self {
        Self { config, http }
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        if message.channel != Channel::Sms {
            return Err(SendError::Config(
                "xoxzo sends SMS only; route whatsapp elsewhere".into(),
            ));
        }
        let sender = message
            .from
            .ok_or_else(|| SendError::Config("xoxzo needs a sender (from)".into()))?;
        let form = [("recipient", message.to), ("sender", sender), ("message", message.text)];
        let url = format!("{}/sms/messages/", self.config.base_url.trim_end_matches('/'));
        let request = self
            .http
            .client
            .post(url)
            .basic_auth(&self.config.sid, Some(self.config.auth_token.expose()))
            .form(&form);
        let body = self.http.execute(request, message.pin, CodeShape::Xoxzo).await?;
        Ok(Accepted {
            message_id: json_str(&body, "/0/msgid"),
        })
    }
}
