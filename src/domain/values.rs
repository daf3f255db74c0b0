use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An app (tenant) id: 1-64 of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let ok = (1..=64).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err("appId must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'");
        }
        Ok(Self(input.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The producer's idempotency key, or one derived from the job when none was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    value: String,
    derived: bool,
}

impl RequestId {
    pub const MAX_LEN: usize = 128;

    /// A key the producer chose: 1-128 printable ASCII characters.
    pub fn given(input: &str) -> Result<Self, &'static str> {
        let ok = (1..=Self::MAX_LEN).contains(&input.len()) && input.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err("requestId must be 1-128 printable ASCII characters without spaces");
        }
        Ok(Self {
            value: input.to_string(),
            derived: false,
        })
    }

    /// A key derived from the app and the exact body, for producers that send none.
    pub fn derived(app: &AppId, body: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(app.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(body);
        Self {
            value: format!("sha256:{}", hex::encode(hasher.finalize())),
            derived: true,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
    /// Derived keys deduplicate only while their OTP is pending (DESIGN, "The send job").
    pub fn is_derived(&self) -> bool {
        self.derived
    }
}

/// Delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Sms,
    Whatsapp,
    /// A phone call that reads the code (numbers only).
    Voice,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Voice => "voice",
        }
    }
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        match input {
            "sms" => Ok(Channel::Sms),
            "whatsapp" => Ok(Channel::Whatsapp),
            "voice" => Ok(Channel::Voice),
            _ => Err("channel must be \"sms\", \"whatsapp\" or \"voice\""),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sender id: alphanumeric up to 11 characters, or a number of up to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender(String);

impl Sender {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let digits = input.strip_prefix('+').unwrap_or(input);
        let numeric = (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        let alphanumeric = (1..=11).contains(&input.len())
            && input.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
            && input.bytes().any(|b| b.is_ascii_alphabetic());
        if !(numeric || alphanumeric) {
            return Err("from must be up to 11 letters, digits and spaces, or a number of 3-15 digits");
        }
        Ok(Self(input.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where status callbacks go. Only the shape is checked here; the address is checked
/// on every connection by the SSRF guard, because DNS answers change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(url::Url);

impl CallbackUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(input: &str, allow_http: bool) -> Result<Self, &'static str> {
        if input.len() > Self::MAX_LEN {
            return Err("otpCallbackUrl is longer than 2048 characters");
        }
        let url = url::Url::parse(input).map_err(|_| "otpCallbackUrl is not a valid URL")?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err("otpCallbackUrl must use https"),
            _ => return Err("otpCallbackUrl must be an https URL"),
        }
        if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
            return Err("otpCallbackUrl must have a host and no credentials");
        }
        Ok(Self(url))
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// OTP lifetime: 60 to 1800 seconds, default 300.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(u32);

impl Ttl {
    pub const DEFAULT: Ttl = Ttl(300);
    pub fn parse(seconds: i64) -> Result<Self, &'static str> {
        match u32::try_from(seconds) {
            Ok(s) if (60..=1800).contains(&s) => Ok(Self(s)),
            _ => Err("ttl must be between 60 and 1800 seconds"),
        }
    }
    pub fn seconds(&self) -> u32 {
        self.0
    }
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.0.into())
    }
}

/// Verification attempts allowed: 1 to 10, default 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAttempts(u8);

impl MaxAttempts {
    pub const DEFAULT: MaxAttempts = MaxAttempts(5);
    pub fn parse(value: i64) -> Result<Self, &'static str> {
        match u8::try_from(value) {
            Ok(v) if (1..=10).contains(&v) => Ok(Self(v)),
            _ => Err("maxAttempts must be between 1 and 10"),
        }
    }
    pub fn get(&self) -> u8 {
        self.0
    }
}

/// The producer's metadata: a JSON object of at most 4 KiB, echoed in every callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

impl Metadata {
    pub const MAX_BYTES: usize = 4096;
    pub fn parse(value: serde_json::Value) -> Result<Self, &'static str> {
        let serde_json::Value::Object(map) = value else {
            return Err("metadata must be a JSON object");
        };
        let text = serde_json::to_string(&map).unwrap_or_default();
        if text.len() > Self::MAX_BYTES {
            return Err("metadata is larger than 4 KiB");
        }
        // PostgreSQL's jsonb cannot store a NUL character.
        if text.contains("\\u0000") {
            return Err("metadata must not contain NUL characters");
        }
        Ok(Self(map))
    }
    pub fn into_value(self) -> serde_json::Value {
        serde_json::Value::Object(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_short_names_or_numbers() {
        assert!(Sender::parse("Acme").is_ok());
        assert!(Sender::parse("+14155550100").is_ok());
        assert!(Sender::parse("Acme Bank Ltd").is_err(), "12 characters");
        assert!(Sender::parse("Acme!").is_err());
        assert!(Sender::parse("").is_err());
    }

    #[test]
    fn callback_urls_must_be_https_unless_http_is_allowed() {
        assert!(CallbackUrl::parse("https://example.com/hook", false).is_ok());
        assert!(CallbackUrl::parse("http://example.com/hook", false).is_err());
        assert!(CallbackUrl::parse("http://example.com/hook", true).is_ok());
        assert!(CallbackUrl::parse("ftp://example.com/hook", true).is_err());
        assert!(CallbackUrl::parse("https://user:pw@example.com/", false).is_err());
    }

    #[test]
    fn ranges_follow_the_job_contract() {
        assert!(Ttl::parse(59).is_err() && Ttl::parse(1801).is_err() && Ttl::parse(60).is_ok());
        assert!(MaxAttempts::parse(0).is_err() && MaxAttempts::parse(11).is_err() && MaxAttempts::parse(10).is_ok());
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(Metadata::parse(serde_json::json!({"user": 42})).is_ok());
        assert!(Metadata::parse(serde_json::json!([1, 2])).is_err());
        assert!(Metadata::parse(serde_json::json!({"blob": "x".repeat(5000)})).is_err());
        assert!(Metadata::parse(serde_json::json!({"nul": "a\u{0}b"})).is_err());
    }

    #[test]
    fn a_derived_request_id_depends_on_app_and_body() {
        let app = AppId::parse("shop").expect("valid");
        let other = AppId::parse("bank").expect("valid");
        let a = RequestId::derived(&app, b"{}");
        assert!(a.is_derived());
        assert_eq!(a, RequestId::derived(&app, b"{}"));
        assert_ne!(a, RequestId::derived(&other, b"{}"));
        assert_ne!(a, RequestId::derived(&app, b"{ }"));
    }
}
