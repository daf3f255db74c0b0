//! Xoxzo SMS API, HTTP Basic with the SID and auth token. SMS only. With `template_id`,
//! a registered template: `POST /sms/templates/{id}/messages/` (JSON `sender`,
//! `recipient`, `variables`); without, free text: `POST /sms/messages/` (form `recipient`,
//! `sender`, `message`), which Xoxzo opens to approved partners only. Delivery status is
//! asked for with `GET /sms/messages/{msgid}/` (see `receipt`). Voice is a text-to-speech
//! call, `POST /voice/simple/playbacks/`, whose outcome is asked for at `GET /voice/calls/{callid}/`.

mod receipt;

use serde_json::json;

use super::receipt::{Answer, Inbound, Receipt, Refused};
use super::{json_str, Accepted, CodeShape, Http, Message, SendError};
use crate::domain::Channel;
use crate::platform::config::XoxzoConfig;

#[derive(Debug)]
pub struct Xoxzo {
    config: XoxzoConfig,
    http: Http,
    /// The `callbackurl` sent with each message, token included, when callbacks are on.
    callback_url: Option<String>,
}

impl Xoxzo {
    pub(super) fn new(config: XoxzoConfig, http: Http, receipt_url: Option<String>) -> Self {
        let callback_url = receipt_url
            .filter(|_| config.callback)
            .map(|url| format!("{url}?token={}", receipt::callback_token(config.auth_token.expose())));
        Self {
            config,
            http,
            callback_url,
        }
    }

    pub(super) fn read_receipt(&self, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
        if !self.config.callback {
            return Err(Refused::NotConfigured("callback is off"));
        }
        receipt::read_notice(self.config.auth_token.expose(), inbound)
    }

    /// When to ask for a sent message's status: the configured delays, until the deadline.
    pub(super) fn poll_plan(&self) -> Option<super::PollPlan> {
        let first = *self.config.poll_schedule_seconds.first()?;
        Some(super::PollPlan {
            first_seconds: first,
            deadline_seconds: self.config.poll_deadline_seconds,
        })
    }

    /// The delay before poll number `polls + 1`.
    pub(super) fn poll_delay(&self, polls: usize) -> u64 {
        let schedule = &self.config.poll_schedule_seconds;
        schedule.get(polls).or(schedule.last()).copied().unwrap_or(60)
    }

    /// A call that reads the message: `POST /voice/simple/playbacks/` with `caller`,
    /// `recipient`, `tts_message` and `tts_lang`; its status is polled like a message's.
    async fn call(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        let caller = message
            .from
            .ok_or_else(|| SendError::Config("a xoxzo call needs a caller number (from)".into()))?;
        let language = message.locale.split('-').next().unwrap_or("en").to_ascii_lowercase();
        let mut form = vec![
            ("caller", caller),
            ("recipient", message.to),
            ("tts_message", message.text),
            ("tts_lang", language.as_str()),
        ];
        if let Some(callback) = &self.callback_url {
            form.push(("callbackurl", callback));
        }
        let url = format!("{}/voice/simple/playbacks/", self.config.base_url.trim_end_matches('/'));
        let request = self
            .http
            .client
            .post(url)
            .basic_auth(&self.config.sid, Some(self.config.auth_token.expose()))
            .form(&form);
        let body = self.http.execute(request, message.pin, CodeShape::Xoxzo).await?;
        Ok(Accepted {
            message_id: json_str(&body, "/0/callid").or_else(|| json_str(&body, "/callid")),
        })
    }

    /// Asks Xoxzo for a message's (or a call's) status.
    pub(super) async fn poll(&self, message_id: &str, channel: Channel) -> Result<Option<Receipt>, SendError> {
        let path = match channel {
            Channel::Voice => "voice/calls",
            _ => "sms/messages",
        };
        let url = format!(
            "{}/{path}/{}/",
            self.config.base_url.trim_end_matches('/'),
            url::form_urlencoded::byte_serialize(message_id.as_bytes()).collect::<String>()
        );
        let request = self
            .http
            .client
            .get(url)
            .basic_auth(&self.config.sid, Some(self.config.auth_token.expose()));
        let body = self.http.fetch(request).await?;
        Ok(match channel {
            Channel::Voice => receipt::read_call_status(message_id, &body),
            _ => receipt::read_status(message_id, &body),
        })
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        match message.channel {
            Channel::Sms => {}
            Channel::Voice => return self.call(message).await,
            Channel::Whatsapp => {
                return Err(SendError::Config(
                    "xoxzo sends SMS and calls only; route whatsapp elsewhere".into(),
                ))
            }
        }
        let sender = message
            .from
            .ok_or_else(|| SendError::Config("xoxzo needs a sender (from)".into()))?;
        let base = self.config.base_url.trim_end_matches('/');
        let request = match &self.config.template_id {
            Some(template) => {
                let mut body = json!({
                    "sender": sender,
                    "recipient": message.to,
                    "variables": {self.config.template_variable.as_str(): message.pin.expose()},
                });
                if let Some(callback) = &self.callback_url {
                    body["callbackurl"] = json!(callback);
                }
                let id = url::form_urlencoded::byte_serialize(template.as_bytes()).collect::<String>();
                self.http
                    .client
                    .post(format!("{base}/sms/templates/{id}/messages/"))
                    .json(&body)
            }
            None => {
                let mut form = vec![("recipient", message.to), ("sender", sender), ("message", message.text)];
                if let Some(callback) = &self.callback_url {
                    form.push(("callbackurl", callback));
                }
                self.http.client.post(format!("{base}/sms/messages/")).form(&form)
            }
        };
        let request = request.basic_auth(&self.config.sid, Some(self.config.auth_token.expose()));
        let body = self.http.execute(request, message.pin, CodeShape::Xoxzo).await?;
        Ok(Accepted {
            message_id: json_str(&body, "/0/msgid").or_else(|| json_str(&body, "/msgid")),
        })
    }
}
