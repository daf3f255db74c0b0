//! Signing in to the console: an operator key (an app's key cannot) buys a session cookie
//! (HttpOnly, SameSite=Strict, `Path=/console`, Secure behind https, expiring); only its
//! SHA-256 is stored, beside the CSRF token every form of the session carries.

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page;
use crate::api::AppState;
use crate::tenancy::keys::{self, Caller};

pub const COOKIE: &str = "otp_console";

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Operator {
    pub key_id: String,
    csrf: String,
}

impl Operator {
    /// The actor recorded with what the operator does here.
    pub fn actor(&self) -> String {
        format!("console:{}", self.key_id)
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The refusal of a form whose token is not this session's (compared in constant time).
    pub fn csrf_refusal(&self, given: &str) -> Option<Response> {
        if bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return None;
        }
        Some(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong; reload the page",
            )
                .into_response(),
        )
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() <= 64)
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to("/console/sign-in").into_response();
        let Some(token) = session_token(&parts.headers) else {
            return Err(to_sign_in());
        };
        let session = sqlx::query!(
            "select s.key_id, s.csrf from console_sessions s join api_keys k on k.id = s.key_id
             where s.token_sha256 = $1 and s.ended_at is null and s.expires_at > now()
               and k.role = 'operator' and (k.revoked_at is null or k.revoked_at > now())",
            digest(token)
        )
        .fetch_optional(&state.pool)
        .await
        .map_err(page::unavailable)?;
        match session {
            Some(s) => Ok(Operator {
                key_id: s.key_id,
                csrf: s.csrf,
            }),
            None => Err(to_sign_in()),
        }
    }
}

pub async fn form() -> Response {
    sign_in_page(None, StatusCode::OK)
}

fn sign_in_page(error: Option<&str>, status: StatusCode) -> Response {
    let body = maud::html! {
        form.signin method="post" action="/console/sign-in" {
            h1 { "otp-courier console" }
            @if let Some(error) = error { p.error { (error) } }
            label { "Operator key id" input name="key_id" autocomplete="username" required; }
            label { "Secret" input name="secret" type="password" autocomplete="current-password" required; }
            p { button type="submit" { "Sign in" } }
        }
    };
    (status, page::bare("Sign in", body)).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    key_id: String,
    secret: String,
}

pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    let caller = match keys::authenticate(&state.pool, form.key_id.trim(), form.secret.trim()).await {
        Ok(caller) => caller,
        Err(error) => return page::unavailable(error),
    };
    let Some(Caller::Operator(key_id)) = caller else {
        // An app's key is refused like a wrong one: the console is for operators.
        tracing::info!("console sign-in refused");
        return sign_in_page(Some("Unknown operator key or wrong secret."), StatusCode::UNAUTHORIZED);
    };
    let token = random_token();
    let minutes = state.config.console.session_minutes;
    let stored = sqlx::query!(
        "insert into console_sessions (token_sha256, key_id, csrf, expires_at)
         values ($1, $2, $3, now() + make_interval(mins => $4))",
        digest(&token),
        key_id,
        random_token(),
        minutes as i32
    )
    .execute(&state.pool)
    .await;
    if let Err(error) = stored {
        return page::unavailable(error);
    }
    tracing::info!(key_id = %key_id, "console sign-in");
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || state.config.console.secure_cookie;
    let cookie = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        minutes * 60,
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/console/overview").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A form that only carries the CSRF token; a missing token is refused like a wrong one.
#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    if let Some(refused) = operator.csrf_refusal(&form.csrf) {
        return refused;
    }
    if let Some(token) = session_token(&headers) {
        let _ = sqlx::query!(
            "update console_sessions set ended_at = now() where token_sha256 = $1",
            digest(token)
        )
        .execute(&state.pool)
        .await;
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    let expired = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
