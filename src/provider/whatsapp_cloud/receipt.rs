//! WhatsApp Cloud API webhooks: the subscription handshake (`GET` with `hub.mode`,
//! `hub.verify_token`, `hub.challenge`) and message status notifications, `POST`s signed
//! in `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app
//! secret>`, whose `entry[].changes[].value.statuses[]` report sent, delivered, read and
//! failed (with `errors[]`).

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::platform::config::Secret;
use crate::provider::receipt::{hex_matches, hmac_sha256, Answer, Inbound, Receipt, ReceiptStatus, Refused};

pub(super) fn read(
    verify_token: Option<&Secret>,
    app_secret: Option<&Secret>,
    inbound: &Inbound<'_>,
) -> Result<Answer, Refused> {
    match *inbound.method {
        axum::http::Method::GET => handshake(verify_token, inbound),
        axum::http::Method::POST => statuses(app_secret, inbound),
        _ => Err(Refused::Method),
    }
}

fn handshake(verify_token: Option<&Secret>, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
    let token = verify_token.ok_or(Refused::NotConfigured("no verify_token is configured"))?;
    if inbound.query_param("hub.mode").as_deref() != Some("subscribe") {
        return Err(Refused::Unreadable("hub.mode is not subscribe"));
    }
    let given = inbound
        .query_param("hub.verify_token")
        .ok_or(Refused::MissingSignature)?;
    if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return Err(Refused::BadSignature);
    }
    let challenge = inbound
        .query_param("hub.challenge")
        .filter(|c| c.len() <= 256)
        .ok_or(Refused::Unreadable("no hub.challenge"))?;
    Ok(Answer::Challenge(challenge))
}

fn statuses(app_secret: Option<&Secret>, inbound: &Inbound<'_>) -> Result<Answer, Refused> {
    let secret = app_secret.ok_or(Refused::NotConfigured("no app_secret is configured"))?;
    let given = inbound.header("x-hub-signature-256").ok_or(Refused::MissingSignature)?;
    let hex = given.strip_prefix("sha256=").ok_or(Refused::BadSignature)?;
    if !hex_matches(hex, &hmac_sha256(secret.expose().as_bytes(), inbound.body)) {
        return Err(Refused::BadSignature);
    }
    let body: Value = serde_json::from_slice(inbound.body).map_err(|_| Refused::Unreadable("not JSON"))?;
    let mut receipts = Vec::new();
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for change in entries.iter().filter_map(|e| e.get("changes")?.as_array()).flatten() {
        let statuses = change
            .pointer("/value/statuses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for item in statuses {
            let (Some(id), Some(meta_status)) = (
                item.get("id").and_then(Value::as_str),
                item.get("status").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Some(status) = status(meta_status) else {
                continue;
            };
            let code = item.pointer("/errors/0/code").and_then(|c| match c {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if s.len() <= 16 => Some(s.clone()),
                _ => None,
            });
            // Kept: the message, its status and errors; never `recipient_id` (a number).
            let raw: serde_json::Map<String, Value> = item
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| matches!(k.as_str(), "id" | "status" | "timestamp" | "errors"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            receipts.push(Receipt {
                message_id: id.to_string(),
                status,
                provider_status: meta_status.to_string(),
                code,
                raw: Value::Object(raw),
            });
        }
    }
    Ok(Answer::Receipts(receipts))
}

/// Meta's message statuses in ours.
fn status(meta: &str) -> Option<ReceiptStatus> {
    Some(match meta {
        "sent" => ReceiptStatus::Sent,
        "delivered" => ReceiptStatus::Delivered,
        "read" => ReceiptStatus::Read,
        "failed" => ReceiptStatus::Failed,
        _ => return None,
    })
}
