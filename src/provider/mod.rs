//! SMS, WhatsApp and voice providers. Each turns a rendered message into one HTTP request (or a
//! line in a file) and classifies what went wrong where it happened: timeouts, connection
//! errors, 5xx and 429 are worth retrying; any other answer is final.

mod file;
mod http_json;
pub mod receipt;
mod twilio;
mod whatsapp_cloud;
mod xoxzo;

pub use twilio::{signature as twilio_signature, Algorithm as TwilioAlgorithm};

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};

use crate::domain::{Channel, OtpId};
use crate::message::pin::Pin;
use crate::platform::config::{ProviderConfig, ReceiptsConfig};

/// One message to hand to a provider. Its `Debug` leaves out the text, which holds the PIN.
pub struct Message<'a> {
    pub otp_id: OtpId,
    /// E.164.
    pub to: &'a str,
    pub channel: Channel,
    pub from: Option<&'a str>,
    /// The rendered text; it contains the PIN.
    pub text: &'a str,
    /// For providers that take the code as a separate parameter (WhatsApp templates).
    pub pin: &'a Pin,
    pub locale: &'a str,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("otp_id", &self.otp_id)
            .field("to", &self.to)
            .field("channel", &self.channel)
            .field("from", &self.from)
            .field(
                "text",
                &format_args!("[{} characters, redacted]", self.text.chars().count()),
            )
            .field("pin", self.pin)
            .field("locale", &self.locale)
            .finish()
    }
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: Option<String>,
}

/// A failed provider request. Texts never contain the PIN: provider answers are
/// redacted before they are kept.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("provider answered {status}{}: {detail}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
        /// The provider's own error code, where its answer carries one.
        code: Option<ProviderCode>,
    },
    #[error("could not write the message file: {0}")]
    File(#[from] std::io::Error),
    #[error("provider misconfigured: {0}")]
    Config(String),
}

/// A provider's own error code, and what it says about retrying where the HTTP status
/// misleads (Meta answers throttling with 400; Twilio's 20429 is a rate limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCode {
    pub code: String,
    /// `Some(true)`: retry whatever the status; `Some(false)`: never; `None`: the status decides.
    pub retry: Option<bool>,
    /// What the code means, for codes that name a problem with the number.
    pub meaning: Option<&'static str>,
}

impl ProviderCode {
    fn new(code: String, known: &[(&str, Option<bool>, Option<&'static str>)]) -> Self {
        let (retry, meaning) = known
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or((None, None), |(_, retry, meaning)| (*retry, *meaning));
        Self { code, retry, meaning }
    }
}

impl std::fmt::Display for ProviderCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}", self.code)?;
        if let Some(meaning) = self.meaning {
            write!(f, ": {meaning}")?;
        }
        Ok(())
    }
}

/// How a provider's error answer names its code.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CodeShape {
    /// None is read (`http-json`).
    None,
    /// Twilio: `{"code": 21211, "message": ...}`.
    Twilio,
    /// Meta Graph API: `{"error": {"code": 131026, ...}}`.
    Meta,
    /// Xoxzo: field errors, `{"recipient": ["..."]}`: the first field named.
    Xoxzo,
}

/// Twilio codes whose meaning changes what to do: 20429 is its rate limit; the others are
/// about the number and final.
const TWILIO_CODES: &[(&str, Option<bool>, Option<&str>)] = &[
    ("20429", Some(true), Some("too many requests")),
    ("21211", Some(false), Some("the number is not a valid phone number")),
    ("21610", Some(false), Some("the recipient has opted out (STOP)")),
    ("21614", Some(false), Some("the number is not a mobile number")),
];

/// Meta throttling codes (transient whatever the HTTP status) and number-level errors.
const META_CODES: &[(&str, Option<bool>, Option<&str>)] = &[
    ("4", Some(true), Some("application request limit reached")),
    (
        "80007",
        Some(true),
        Some("WhatsApp Business Account rate limit reached"),
    ),
    ("130429", Some(true), Some("Cloud API throughput reached")),
    (
        "131056",
        Some(true),
        Some("too many messages to this number in a short time"),
    ),
    (
        "131026",
        Some(false),
        Some("the message is undeliverable to this number"),
    ),
];

impl CodeShape {
    /// The code in an error answer, if any. Never a code that holds the PIN.
    fn read(self, body: &str, pin: &Pin) -> Option<ProviderCode> {
        let (code, known) = match self {
            CodeShape::None => return None,
            CodeShape::Twilio => (json_str(body, "/code")?, TWILIO_CODES),
            CodeShape::Meta => (json_str(body, "/error/code")?, META_CODES),
            CodeShape::Xoxzo => {
                let value: serde_json::Value = serde_json::from_str(body).ok()?;
                let field = value.as_object()?.iter().find(|(_, v)| v.is_array())?.0.clone();
                (field, &[][..])
            }
        };
        // A code is a short constant of the provider's, never a PIN.
        if code.len() > 64 || redact(&code, pin) != code {
            return None;
        }
        Some(ProviderCode::new(code, known))
    }
}

impl SendError {
    /// Whether another try may succeed: the provider's code where it says, else the status.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Timeout(_) | SendError::Connect(_) => true,
            SendError::Status {
                code: Some(ProviderCode { retry: Some(retry), .. }),
                ..
            } => *retry,
            SendError::Status { status, .. } => *status >= 500 || *status == 429,
            SendError::File(_) | SendError::Config(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider's own error code, where its answer carried one.
    pub fn provider_code(&self) -> Option<&str> {
        match self {
            SendError::Status { code: Some(code), .. } => Some(&code.code),
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            SendError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short stable name for reports and filters.
    pub fn class(&self) -> &'static str {
        match self {
            SendError::Timeout(_) => "timeout",
            SendError::Connect(_) => "connect",
            SendError::Status { status: 429, .. } => "rate_limited",
            SendError::Status {
                code: Some(ProviderCode { retry: Some(true), .. }),
                ..
            } => "rate_limited",
            SendError::Status { status, .. } if *status >= 500 => "provider_unavailable",
            SendError::Status { .. } => "provider_rejected",
            SendError::File(_) => "file",
            SendError::Config(_) => "config",
        }
    }

    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() {
            SendError::Timeout(timeout)
        } else {
            // The URL is the provider's configured endpoint; it holds no message data.
            SendError::Connect(error.to_string())
        }
    }
}

/// A configured provider.
#[derive(Debug)]
pub enum Provider {
    Twilio(twilio::Twilio),
    Xoxzo(xoxzo::Xoxzo),
    WhatsappCloud(whatsapp_cloud::WhatsappCloud),
    HttpJson(http_json::HttpJson),
    File(file::FileSink),
}

/// When to ask a provider that must be asked (Xoxzo) for a sent message's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPlan {
    pub first_seconds: u64,
    pub deadline_seconds: u64,
}

impl Provider {
    /// Reads an inbound request on this provider's receipt route, its proof checked first.
    pub fn read_receipt(&self, inbound: &receipt::Inbound<'_>) -> Result<receipt::Answer, receipt::Refused> {
        match self {
            Provider::Twilio(p) => p.read_receipt(inbound),
            Provider::Xoxzo(p) => p.read_receipt(inbound),
            Provider::WhatsappCloud(p) => p.read_receipt(inbound),
            Provider::HttpJson(p) => p.read_receipt(inbound),
            Provider::File(_) => Err(receipt::Refused::NotConfigured("the file provider sends no receipts")),
        }
    }

    /// Whether (and when) sent messages' status is to be polled.
    pub fn poll_plan(&self) -> Option<PollPlan> {
        match self {
            Provider::Xoxzo(p) => p.poll_plan(),
            _ => None,
        }
    }

    /// The delay before the next poll, after `polls` polls.
    pub fn poll_delay(&self, polls: usize) -> u64 {
        match self {
            Provider::Xoxzo(p) => p.poll_delay(polls),
            _ => 60,
        }
    }

    /// Asks the provider for a message's (or call's) status; `None`: no status we know yet.
    pub async fn poll(&self, message_id: &str, channel: Channel) -> Result<Option<receipt::Receipt>, SendError> {
        match self {
            Provider::Xoxzo(p) => p.poll(message_id, channel).await,
            _ => Err(SendError::Config("this provider is not polled".into())),
        }
    }

    pub async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        match self {
            Provider::Twilio(p) => p.send(message).await,
            Provider::Xoxzo(p) => p.send(message).await,
            Provider::WhatsappCloud(p) => p.send(message).await,
            Provider::HttpJson(p) => p.send(message).await,
            Provider::File(p) => p.send(message).await,
        }
    }
}

/// The providers of the configuration, by name.
#[derive(Debug, Default)]
pub struct Providers(HashMap<String, Provider>);

impl Providers {
    /// `proxy`: the one proxy requests go through (`delivery.proxy`); the environment's
    /// proxy variables are never read. `receipts`: where providers send delivery receipts.
    pub fn from_config<'a>(
        configs: impl IntoIterator<Item = (&'a String, &'a ProviderConfig)>,
        timeout: Duration,
        proxy: Option<&str>,
        receipts: &ReceiptsConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = Http::new(timeout, proxy)?;
        let providers = configs
            .into_iter()
            .map(|(name, config)| {
                let receipt_url = receipts.url_for(name);
                let provider = match config.clone() {
                    ProviderConfig::Twilio(c) => Provider::Twilio(twilio::Twilio::new(c, http.clone(), receipt_url)),
                    ProviderConfig::Xoxzo(c) => Provider::Xoxzo(xoxzo::Xoxzo::new(c, http.clone(), receipt_url)),
                    ProviderConfig::WhatsappCloud(c) => {
                        Provider::WhatsappCloud(whatsapp_cloud::WhatsappCloud::new(c, http.clone()))
                    }
                    ProviderConfig::HttpJson(c) => Provider::HttpJson(http_json::HttpJson::new(c, http.clone())),
                    ProviderConfig::File(c) => Provider::File(file::FileSink::new(c)),
                };
                (name.clone(), provider)
            })
            .collect();
        Ok(Self(providers))
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.0.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The HTTP client providers share: bounded time, no redirects (a provider that
/// redirects a POST is misconfigured, and following it could resend the message), and no
/// proxy but the configured one.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    fn new(timeout: Duration, proxy: Option<&str>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("otp-courier/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(proxy) = proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy)?);
        }
        let client = builder.build()?;
        Ok(Self { client, timeout })
    }

    /// Sends the request and reads the answer; anything but a 2xx becomes a `SendError`,
    /// with the provider's own error code read the way `shape` says. An answer that holds
    /// the PIN is never kept.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        pin: &Pin,
        shape: CodeShape,
    ) -> Result<String, SendError> {
        self.answer(request, |status, body| {
            (excerpt(body, pin, status), shape.read(body, pin))
        })
        .await
    }

    /// A GET of the provider's API that carries no message: its answer, or the error.
    /// An error keeps only the status's reason: the answer is about a message that held a
    /// code, and no PIN is at hand here to check it against.
    async fn fetch(&self, request: reqwest::RequestBuilder) -> Result<String, SendError> {
        self.answer(request, |status, _| {
            (status.canonical_reason().unwrap_or("no reason given").to_string(), None)
        })
        .await
    }

    /// The body of a 2xx answer; else a `SendError` whose detail and code `read` takes from
    /// the answer.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        read: impl FnOnce(StatusCode, &str) -> (String, Option<ProviderCode>),
    ) -> Result<String, SendError> {
        let response = request
            .send()
            .await
            .map_err(|e| SendError::from_reqwest(e, self.timeout))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = read_limited(response, 16 * 1024)
            .await
            .map_err(|e| SendError::from_reqwest(e, self.timeout))?;
        if status.is_success() {
            return Ok(body);
        }
        let (detail, code) = read(status, &body);
        Err(SendError::Status {
            status: status.as_u16(),
            retry_after,
            detail,
            code,
        })
    }
}

/// The text or number at `pointer` in a JSON answer.
pub(crate) fn json_str(body: &str, pointer: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    match value.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The start of a response body, at most `limit` bytes of it; the rest is never read.
pub(crate) async fn read_limited(mut response: Response, limit: usize) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = date - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// The start of a provider's answer, or a fixed text when it held the PIN. Redaction comes
/// first, so a cut can never leave part of a PIN behind.
fn excerpt(body: &str, pin: &Pin, status: StatusCode) -> String {
    let text: String = redact(body, pin).chars().take(300).collect();
    if text.trim().is_empty() {
        return status.canonical_reason().unwrap_or("no reason given").to_string();
    }
    text
}

/// What is kept of a text that held the PIN. Not an excerpt with the PIN cut out: the
/// characters around the cut (`+33[redacted]78`) can tell the code.
pub const WITHHELD: &str = "[withheld: the text contained the code]";

/// A text about to be logged or stored, as it is, or [`WITHHELD`] when it holds the PIN in
/// either case, or spelled out with other characters between its own.
pub fn redact(text: &str, pin: &Pin) -> String {
    let code = pin.expose().to_ascii_uppercase();
    // Also the code spelled out, as a call's text says it (`4, 8, 1, 5`): letters and digits
    // alone, the rest taken out.
    let bare: String = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if text.to_ascii_uppercase().contains(&code) || bare.contains(&code) {
        return WITHHELD.to_string();
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_redacted_before_the_answer_is_cut_and_in_either_case() {
        let key = crate::message::pin::PinKey::parse(&"ab".repeat(32)).expect("key");
        let length = crate::message::pin::PinLength::parse(10).expect("length");
        let input = crate::message::pin::PinInput {
            app_id: "shop",
            salt: &[1; 16],
            otp: crate::domain::OtpId::new(),
            generation: 1,
        };
        let pin = crate::message::pin::derive(&key, &input, crate::message::pin::PinType::Alphanumeric, length);
        let body = format!("{}{}", "x".repeat(295), pin.expose());
        let kept = excerpt(&body, &pin, StatusCode::BAD_REQUEST);
        assert!(
            !kept.contains(&pin.expose()[..5]),
            "no prefix of the PIN survives the cut: {kept}"
        );
        let lower = redact(&format!("code={}", pin.expose().to_ascii_lowercase()), &pin);
        assert_eq!(lower, WITHHELD);
    }

    #[test]
    fn an_answer_that_holds_the_pin_is_withheld_whole_not_cut_around_it() {
        let pin = Pin::from_digits_for_tests("481516");
        let answer = r#"{"error": "invalid destination +33481516 78", "code": 21211}"#;
        let kept = excerpt(answer, &pin, StatusCode::BAD_REQUEST);
        assert_eq!(kept, WITHHELD);
        assert!(!kept.contains("+33") && !kept.contains("78"), "{kept}");
        let spoken = excerpt(
            r#"{"tts_message": "Your code is 4, 8, 1, 5, 1, 6."}"#,
            &pin,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(spoken, WITHHELD, "a call's text spells the code out");
        let clean = excerpt(r#"{"error": "unknown sender"}"#, &pin, StatusCode::BAD_REQUEST);
        assert_eq!(clean, r#"{"error": "unknown sender"}"#);
    }

    #[test]
    fn a_messages_debug_output_holds_neither_the_text_nor_the_pin() {
        let pin = Pin::from_digits_for_tests("481516");
        let message = Message {
            otp_id: crate::domain::OtpId::new(),
            to: "+14155550123",
            channel: Channel::Sms,
            from: None,
            text: "Your code is 481516",
            pin: &pin,
            locale: "en",
        };
        let shown = format!("{message:?}");
        assert!(!shown.contains("481516"), "{shown}");
        assert!(shown.contains("+14155550123") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        let status = |status| SendError::Status {
            status,
            retry_after: None,
            detail: String::new(),
            code: None,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(401).is_transient());
        assert!(SendError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!SendError::Config("x".into()).is_transient());
    }
}
