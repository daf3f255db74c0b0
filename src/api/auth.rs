//! Credentials: `X-API-Key` + `X-API-Secret`, `X-API-Key: <key id>.<secret>` alone (the
//! single-header form sms.cx clients send), HTTP Basic (key id : secret), or
//! `Authorization: Bearer <key id>.<secret>`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;

use super::error::ApiError;
use super::AppState;
use crate::tenancy::keys::{self, Caller};

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (key_id, secret) = credentials(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let caller = keys::authenticate(&state.pool, &key_id, &secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        super::trace::record(caller.app_filter(), None, None);
        Ok(caller)
    }
}

fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let (Some(key), Some(secret)) = (text("x-api-key"), text("x-api-secret")) {
        return Some((key.to_string(), secret.to_string()));
    }
    if let Some((key, secret)) = text("x-api-key").and_then(|v| v.split_once('.')) {
        return Some((key.to_string(), secret.to_string()));
    }
    let authorization = text(header::AUTHORIZATION.as_str())?;
    let (scheme, value) = authorization.split_once(' ')?;
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (key, secret) = decoded.split_once(':')?;
        (key.to_string(), secret.to_string())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let (key, secret) = value.trim().split_once('.')?;
        (key.to_string(), secret.to_string())
    } else {
        return None;
    };
    Some(pair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn every_credential_form_yields_the_key_and_secret() {
        let expected = Some(("ak_1".to_string(), "sk_2".to_string()));
        assert_eq!(
            credentials(&headers(&[("x-api-key", "ak_1"), ("x-api-secret", "sk_2")])),
            expected
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Basic YWtfMTpza18y")])),
            expected
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Bearer ak_1.sk_2")])),
            expected
        );
        assert_eq!(credentials(&headers(&[("authorization", "Digest x")])), None);
        assert_eq!(credentials(&headers(&[("x-api-key", "ak_1.sk_2")])), expected);
        assert_eq!(credentials(&headers(&[("x-api-key", "ak_1")])), None);
    }
}
