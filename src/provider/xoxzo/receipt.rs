//! Xoxzo's delivery status. Xoxzo signs nothing it sends, so its callback (to the
//! `callbackurl` given with a message, which carries a token of ours) is taken only as a
//! notice to ask now; the status itself always comes from Xoxzo's API, asked with our
//! credentials: `GET /sms/messages/{msgid}/` answers `QUEUED`, `DELIVERING`, `DELIVERED`
//! or `FAIL`.

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::provider::receipt::{hmac_sha256, Answer, Inbound, Receipt, ReceiptStatus, Refused};

/// The token in our callback URL: derived from the auth token, so it needs no setting of
/// its own and changes when the credentials do.
pub(super) fn callback_token(auth_token: &str) -> String {
    hex::encode(&hmac_sha256(auth_token.as_bytes(), b"otp-courier/xoxzo-callback")[..16])
}

/// A callback: the message ids to poll now, once its token is right.
pub(super) fn read_notice(auth_token: &str, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
    if inbound.method != axum::http::Method::POST {
        return Err(Refused::Method);
    }
    let given = inbound.query_param("token").ok_or(Refused::MissingSignature)?;
    if !bool::from(given.as_bytes().ct_eq(callback_token(auth_token).as_bytes())) {
        return Err(Refused::BadSignature);
    }
    let from_json = serde_json::from_slice::<Value>(inbound.body)
        .ok()
        .and_then(|v| v.get("msgid").and_then(Value::as_str).map(str::to_string));
    let msgid = from_json
        .or_else(|| {
            url::form_urlencoded::parse(inbound.body)
                .find(|(k, _)| k == "msgid")
                .map(|(_, v)| v.into_owned())
        })
        .or_else(|| inbound.query_param("msgid"))
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .ok_or(Refused::Unreadable("no msgid"))?;
    Ok(Answer::PollNow(vec![msgid]))
}

/// A message's status answer in our terms; `None` when it names no status we know.
pub(super) fn read_status(message_id: &str, body: &str) -> Option<Receipt> {
    read(
        message_id,
        body,
        &["msgid", "status", "sent_time", "cost", "url"],
        |status| {
            Some(match status {
                "QUEUED" => ReceiptStatus::Queued,
                "DELIVERING" => ReceiptStatus::Sent,
                "DELIVERED" => ReceiptStatus::Delivered,
                "FAIL" | "FAILED" => ReceiptStatus::Failed,
                _ => return None,
            })
        },
    )
}

/// A call's status answer in our terms: answered is delivered; no answer, busy or failed is
/// undelivered; ringing or in progress is not final yet.
pub(super) fn read_call_status(call_id: &str, body: &str) -> Option<Receipt> {
    read(
        call_id,
        body,
        &["callid", "status", "duration", "cost", "url"],
        |status| {
            Some(match status.to_ascii_uppercase().replace(['_', '-'], " ").as_str() {
                "ANSWERED" | "COMPLETED" | "DELIVERED" => ReceiptStatus::Delivered,
                "NO ANSWER" | "NOANSWER" | "BUSY" | "FAILED" | "FAIL" | "CANCELLED" | "CANCELED" | "REJECTED" => {
                    ReceiptStatus::Undelivered
                }
                "QUEUED" | "DIALING" | "RINGING" => ReceiptStatus::Queued,
                "IN PROGRESS" | "INPROGRESS" | "CALLING" => ReceiptStatus::Sent,
                _ => return None,
            })
        },
    )
}

/// A status answer's `status`, in our terms by `ours`, keeping only the fields in `keep`
/// (the answers name the number; a receipt keeps none).
fn read(id: &str, body: &str, keep: &[&str], ours: impl FnOnce(&str) -> Option<ReceiptStatus>) -> Option<Receipt> {
    let value: Value = serde_json::from_str(body).ok()?;
    let provider_status = value.get("status")?.as_str()?.to_string();
    let status = ours(&provider_status)?;
    let raw = value
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Some(Receipt {
        message_id: id.to_string(),
        status,
        provider_status,
        code: None,
        raw: Value::Object(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_as_xoxzo_documents_it_reads() {
        let body = r#"{"status": "DELIVERED", "sent_time": "2015-08-27 09:22:32", "cost": 10,
            "sender": "your_number", "recipient": "+8190123456789",
            "url": "https://api.xoxzo.com/sms/messages/tHi5i5y0urMsGIdt3xT/", "msgid": "tHi5i5y0urMsGIdt3xT"}"#;
        let receipt = read_status("tHi5i5y0urMsGIdt3xT", body).expect("a status");
        assert_eq!(receipt.status, ReceiptStatus::Delivered);
        assert!(
            receipt.raw.get("recipient").is_none(),
            "the number is not kept: {}",
            receipt.raw
        );
        assert_eq!(
            read_status("x", r#"{"status": "DELIVERING"}"#).map(|r| r.status),
            Some(ReceiptStatus::Sent)
        );
        assert_eq!(
            read_status("x", r#"{"status": "FAIL"}"#).map(|r| r.status),
            Some(ReceiptStatus::Failed)
        );
        assert!(read_status("x", r#"{"status": "SOMETHING"}"#).is_none());
    }
}
