//! Twilio status callbacks: form-encoded POSTs to the `StatusCallback` URL sent with each
//! message, signed in `X-Twilio-Signature`: base64 HMAC, keyed with the auth token, of the
//! full URL followed by every POST parameter's name and value, sorted by name (then value,
//! each pair once). HMAC-SHA1 unless `X-Twilio-Webhooks-Signature-Settings` names
//! `algorithm=HMAC_SHA256`. As Twilio's own validator does, the URL is tried with and
//! without its default port.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::provider::receipt::{Answer, Inbound, Receipt, ReceiptStatus, Refused};

/// The hash a Twilio signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// The algorithm `X-Twilio-Webhooks-Signature-Settings` names (`key=…,algorithm=HMAC_SHA256`);
    /// none named is SHA-1; one we do not know is `None`.
    fn from_settings(settings: Option<&str>) -> Option<Self> {
        let named = settings
            .unwrap_or_default()
            .split(',')
            .filter_map(|part| part.split_once('='))
            .find(|(name, value)| name.trim() == "algorithm" && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_ascii_uppercase());
        match named.as_deref() {
            None | Some("HMAC_SHA1") => Some(Algorithm::Sha1),
            Some("HMAC_SHA256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }
}

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)], algorithm: Algorithm) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut text = url.to_string();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    let digest = match algorithm {
        Algorithm::Sha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha256 => {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// `url` as given, and with its default port written out or left out (Twilio signs one or
/// the other).
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    if let Ok(parsed) = url::Url::parse(url) {
        // The parser leaves a default port out.
        variants.push(parsed.to_string());
        if let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) {
            let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
            variants.push(format!("{}://{host}:{port}{}{query}", parsed.scheme(), parsed.path()));
        }
    }
    variants
}

/// Reads a status callback after checking its signature.
pub(super) fn read(auth_token: &str, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
    if inbound.method != axum::http::Method::POST {
        return Err(Refused::Method);
    }
    let given = inbound.header("x-twilio-signature").ok_or(Refused::MissingSignature)?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(inbound.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let algorithm = Algorithm::from_settings(inbound.header("x-twilio-webhooks-signature-settings"))
        .ok_or(Refused::Unreadable("an unknown signature algorithm"))?;
    let matches = url_variants(inbound.url).iter().any(|url| {
        let expected = signature(auth_token, url, &params, algorithm);
        bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !matches {
        return Err(Refused::BadSignature);
    }
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    // A message's status callback, or a call's.
    let (message_id, provider_status, status) = match param("CallSid") {
        Some(call) => {
            let call_status = param("CallStatus").ok_or(Refused::Unreadable("no CallStatus"))?;
            let status = call_status_of(&call_status);
            (call, call_status, status)
        }
        None => {
            let message_id = param("MessageSid")
                .or_else(|| param("SmsSid"))
                .ok_or(Refused::Unreadable("no MessageSid"))?;
            let provider_status = param("MessageStatus")
                .or_else(|| param("SmsStatus"))
                .ok_or(Refused::Unreadable("no MessageStatus"))?;
            let status = status(&provider_status);
            (message_id, provider_status, status)
        }
    };
    let Some(status) = status else {
        return Ok(Answer::Receipts(Vec::new()));
    };
    // Kept: what says which message and what became of it; never the numbers or a text.
    let raw: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(Answer::Receipts(vec![Receipt {
        message_id,
        status,
        provider_status,
        code: param("ErrorCode").filter(|c| !c.is_empty() && c.len() <= 16),
        raw: Value::Object(raw),
    }]))
}

/// The fields of a status callback a stored receipt keeps.
const KEPT: [&str; 11] = [
    "CallSid",
    "CallStatus",
    "CallDuration",
    "MessageSid",
    "SmsSid",
    "MessageStatus",
    "SmsStatus",
    "ErrorCode",
    "AccountSid",
    "MessagingServiceSid",
    "ApiVersion",
];

/// A call's outcome in ours: answered is delivered; busy, no answer, failed or canceled
/// is undelivered (the next step of a workflow starts).
fn call_status_of(twilio: &str) -> Option<ReceiptStatus> {
    Some(match twilio {
        "queued" | "initiated" | "ringing" => ReceiptStatus::Queued,
        "in-progress" => ReceiptStatus::Sent,
        "completed" => ReceiptStatus::Delivered,
        "busy" | "no-answer" | "failed" | "canceled" => ReceiptStatus::Undelivered,
        _ => return None,
    })
}

/// Twilio's message statuses in ours; statuses of incoming messages are not ours to track.
fn status(twilio: &str) -> Option<ReceiptStatus> {
    Some(match twilio {
        "accepted" | "scheduled" | "queued" | "sending" => ReceiptStatus::Queued,
        "sent" => ReceiptStatus::Sent,
        "delivered" => ReceiptStatus::Delivered,
        "read" => ReceiptStatus::Read,
        "undelivered" => ReceiptStatus::Undelivered,
        "failed" | "canceled" => ReceiptStatus::Failed,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's webhook security documentation.
    #[test]
    fn the_signature_matches_twilios_published_example() {
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params, Algorithm::Sha1),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn the_algorithm_comes_from_the_signature_settings_header() {
        assert_eq!(Algorithm::from_settings(None), Some(Algorithm::Sha1));
        assert_eq!(
            Algorithm::from_settings(Some("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256")),
            Some(Algorithm::Sha256)
        );
        assert_eq!(Algorithm::from_settings(Some("algorithm=HMAC_MD5")), None);
    }

    #[test]
    fn a_url_is_tried_with_and_without_its_default_port() {
        let variants = url_variants("https://otp.example.com/v1/receipts/twilio?x=1");
        assert!(variants.contains(&"https://otp.example.com:443/v1/receipts/twilio?x=1".to_string()));
        let variants = url_variants("https://otp.example.com:443/v1/receipts/twilio");
        assert!(variants.contains(&"https://otp.example.com/v1/receipts/twilio".to_string()));
    }
}
