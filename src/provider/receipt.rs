//! Delivery receipts as providers send them: each provider module reads its own inbound
//! request (checking the provider's proof first) into [`Receipt`]s in our terms. What a
//! receipt does to an OTP is `otp::receipts`' business.

use axum::http::{HeaderMap, Method};
use hmac::{Hmac, Mac};
use serde_json::Value;
use subtle::ConstantTimeEq;

/// What a receipt says of one message, ranked: `queued < sent < delivered < read`;
/// `undelivered` and `failed` are final for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Queued => "queued",
            ReceiptStatus::Sent => "sent",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Read => "read",
            ReceiptStatus::Undelivered => "undelivered",
            ReceiptStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => ReceiptStatus::Queued,
            "sent" => ReceiptStatus::Sent,
            "delivered" => ReceiptStatus::Delivered,
            "read" => ReceiptStatus::Read,
            "undelivered" => ReceiptStatus::Undelivered,
            "failed" => ReceiptStatus::Failed,
            _ => return None,
        })
    }

    /// Whether nothing said later can change the message's state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReceiptStatus::Read | ReceiptStatus::Undelivered | ReceiptStatus::Failed
        )
    }

    /// Whether a message that stands at `current` moves to `self`: forward only, and never
    /// from a final state. A failure after `delivered` is not believed: the handset had it.
    pub fn advances(self, current: Option<ReceiptStatus>) -> bool {
        let Some(current) = current else {
            return true;
        };
        if current.is_final() {
            return false;
        }
        let rank = |status: ReceiptStatus| match status {
            ReceiptStatus::Queued => 0,
            ReceiptStatus::Sent => 1,
            ReceiptStatus::Undelivered | ReceiptStatus::Failed => 2,
            ReceiptStatus::Delivered => 3,
            ReceiptStatus::Read => 4,
        };
        match self {
            ReceiptStatus::Undelivered | ReceiptStatus::Failed => rank(current) < 2,
            _ => rank(self) > rank(current),
        }
    }
}

/// One provider's word about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub message_id: String,
    pub status: ReceiptStatus,
    /// The provider's own status name.
    pub provider_status: String,
    /// The provider's error code, where the receipt gives one.
    pub code: Option<String>,
    /// The receipt as sent, without fields that can carry message text.
    pub raw: Value,
}

/// An inbound request on a provider's receipt route, as it arrived.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub method: &'a Method,
    /// The URL the provider called: `receipts.public_url`, the route's path and the query.
    pub url: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Inbound<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// A query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// What a receipt route answers.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Receipts to store and apply (possibly none: a status we do not track).
    Receipts(Vec<Receipt>),
    /// A subscription handshake: answer 200 with this text.
    Challenge(String),
    /// Messages whose status is to be asked for now (a notice that carries no proof of
    /// its own content: the provider's API is asked instead).
    PollNow(Vec<String>),
}

/// Why a receipt was refused (403, nothing changed). Never echoes what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature is missing")]
    MissingSignature,
    #[error("the signature does not match")]
    BadSignature,
    #[error("this provider takes no receipts: {0}")]
    NotConfigured(&'static str),
    #[error("the receipt cannot be read: {0}")]
    Unreadable(&'static str),
    #[error("the method is not allowed here")]
    Method,
}

/// HMAC-SHA256 of `body` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Compares a signature given in hex (any case) with the expected bytes, in constant time.
pub(crate) fn hex_matches(given: &str, expected: &[u8]) -> bool {
    match hex::decode(given.trim()) {
        Ok(given) => given.ct_eq(expected).into(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::ReceiptStatus::*;

    #[test]
    fn receipts_move_a_message_forward_only() {
        assert!(Sent.advances(None));
        assert!(Delivered.advances(Some(Sent)));
        assert!(Read.advances(Some(Delivered)));
        assert!(
            !Sent.advances(Some(Delivered)),
            "a late `sent` never undoes `delivered`"
        );
        assert!(!Delivered.advances(Some(Delivered)), "a duplicate changes nothing");
        assert!(Undelivered.advances(Some(Sent)));
        assert!(!Undelivered.advances(Some(Delivered)));
        assert!(!Delivered.advances(Some(Undelivered)), "undelivered is final");
        assert!(!Failed.advances(Some(Undelivered)));
        assert!(Queued.advances(None));
        assert!(!Queued.advances(Some(Sent)));
    }
}
