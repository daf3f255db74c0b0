//! Receipts of a provider with a JSON API: a POST whose body is signed with a shared
//! secret (hex HMAC-SHA256 of the raw body in the configured header, `sha256=` prefix
//! allowed), read through the configured JSON pointers and status map. Only the fields
//! read are kept: the rest of such a body may hold the message text.

use serde_json::{json, Value};

use crate::platform::config::HttpJsonReceiptConfig;
use crate::provider::receipt::{hex_matches, hmac_sha256, Answer, Inbound, Receipt, ReceiptStatus, Refused};

pub(super) fn read(config: &HttpJsonReceiptConfig, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
    if inbound.method != axum::http::Method::POST {
        return Err(Refused::Method);
    }
    let given = inbound
        .header(&config.signature_header)
        .ok_or(Refused::MissingSignature)?;
    let hex = given.strip_prefix("sha256=").unwrap_or(given);
    if !hex_matches(hex, &hmac_sha256(config.secret.expose().as_bytes(), inbound.body)) {
        return Err(Refused::BadSignature);
    }
    let body: Value = serde_json::from_slice(inbound.body).map_err(|_| Refused::Unreadable("not JSON"))?;
    let text = |pointer: &str| match body.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let message_id = text(&config.message_id_pointer)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .ok_or(Refused::Unreadable("no message id at message_id_pointer"))?;
    let provider_status = text(&config.status_pointer).ok_or(Refused::Unreadable("no status at status_pointer"))?;
    let Some(status) = config
        .statuses
        .get(&provider_status)
        .and_then(|ours| ReceiptStatus::parse(ours))
    else {
        return Ok(Answer::Receipts(Vec::new()));
    };
    let code = config
        .error_code_pointer
        .as_deref()
        .and_then(text)
        .filter(|c| c.len() <= 64);
    let raw = json!({"messageId": message_id, "status": provider_status, "code": code});
    Ok(Answer::Receipts(vec![Receipt {
        message_id,
        status,
        provider_status,
        code,
        raw,
    }]))
}
