//! Status callbacks in sms.cx's `otp_update` shape, for apps that moved from sms.cx
//! (`callback_format = "smscx"`): `{"event": "otp_update", "data": [<their DataOtp>]}`.
//! They are signed like every callback (Standard Webhooks headers); only the body differs.

use serde_json::{json, Value};

/// sms.cx's name for an OTP status: theirs has no `max_attempts_reached` or `rejected`
/// (both FAILED), and a pending OTP past its expiry is EXPIRED before the sweeper runs.
pub fn status(ours: &str, past_expiry: bool) -> &'static str {
    match ours {
        "pending" if past_expiry => "EXPIRED",
        "pending" => "PENDING",
        "verified" => "VERIFIED",
        "expired" => "EXPIRED",
        "cancelled" => "CANCELLED",
        _ => "FAILED",
    }
}

/// What their object has that our event's `data` does not, read from the OTP's row.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpFacts {
    pub created_at: Option<String>,
    pub ttl: Option<i32>,
    pub country: Option<String>,
    pub request_id_derived: Option<bool>,
}

/// The `otp_update` body for one of our events (`payload` as the outbox holds it).
pub fn otp_update(payload: &Value, callback_url: &str, facts: &OtpFacts) -> Value {
    let data = &payload["data"];
    let otp_id = data["otpId"]
        .as_str()
        .and_then(|id| id.strip_prefix("otp_"))
        .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
        .map(|id| id.hyphenated().to_string());
    let track_id = match facts.request_id_derived {
        Some(false) => data["requestId"].clone(),
        _ => Value::Null,
    };
    json!({
        "event": "otp_update",
        "data": [{
            "otpId": otp_id,
            "trackId": track_id,
            "phoneNumber": data["phoneNumber"],
            "countryIso": facts.country,
            "status": status(data["status"].as_str().unwrap_or_default(), false),
            "cost": 0.0,
            "parts": data["parts"],
            "maxAttempts": data["maxAttempts"],
            "attempts": data["attempts"],
            "ttl": facts.ttl,
            "otpCallbackUrl": callback_url,
            "dateCreated": facts.created_at,
            "dateExpires": data["expiresAt"],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_event_becomes_their_otp_update() {
        let payload = json!({"type": "otp.max_attempts_reached", "timestamp": "2026-12-03T10:00:05Z", "data": {
            "otpId": "otp_a17fb13df4ac4d939439ef41ab8de390", "appId": "shop", "requestId": "bf325375-e030-fccb-a009-17317c574773",
            "phoneNumber": "+33612246400", "status": "max_attempts_reached", "parts": 1, "attempts": 4,
            "maxAttempts": 4, "expiresAt": "2026-12-03T10:03:00Z"}});
        let facts = OtpFacts {
            created_at: Some("2026-12-03T10:00:00Z".into()),
            ttl: Some(180),
            country: Some("FR".into()),
            request_id_derived: Some(false),
        };
        assert_eq!(
            otp_update(&payload, "https://example.com/hook", &facts),
            json!({"event": "otp_update", "data": [{
                "otpId": "a17fb13d-f4ac-4d93-9439-ef41ab8de390", "trackId": "bf325375-e030-fccb-a009-17317c574773",
                "phoneNumber": "+33612246400", "countryIso": "FR", "status": "FAILED", "cost": 0.0, "parts": 1,
                "maxAttempts": 4, "attempts": 4, "ttl": 180, "otpCallbackUrl": "https://example.com/hook",
                "dateCreated": "2026-12-03T10:00:00Z", "dateExpires": "2026-12-03T10:03:00Z"}]})
        );
    }
}
