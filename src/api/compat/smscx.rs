//! The sms.cx OTP API under `/smscx`: `POST /otp`, `GET|POST|DELETE /otp/{otpId}` with
//! their request fields, ranges and response objects, their status names and their numeric
//! error codes in their error shape, `{"error": {"type", "code", "message", "uri"}}`.
//! Credentials as their SDKs send them: `X-API-KEY: <key id>.<secret>` or
//! `Authorization: Bearer <key id>.<secret>`.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::otp::{accept, check_code};
use crate::api::AppState;
use crate::callbacks::smscx;
use crate::domain::{OtpId, PhoneError, PhoneNumber};
use crate::otp::intake::NewOtp;
use crate::otp::lifecycle::{self, Cancel};
use crate::otp::ratelimit::Decision;
use crate::tenancy::keys::Caller;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/smscx/otp", post(create))
        .route("/smscx/otp/{otp_id}", post(verify).get(status).delete(cancel))
        // Their clients parse every error body as JSON, a 405 included.
        .method_not_allowed_fallback(|| async {
            SmscxError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_method",
                405,
                "Method not allowed",
            )
        })
}

/// An error in sms.cx's shape. Codes 2001–2031 are theirs; errors their table has no code
/// for carry the HTTP status as the code.
#[derive(Debug)]
pub struct SmscxError {
    status: StatusCode,
    kind: &'static str,
    code: u16,
    message: Cow<'static, str>,
    /// A refused rate: the limit, what is left, seconds until the window resets.
    rate: Option<(u32, u32, i64)>,
}

impl SmscxError {
    fn new(status: StatusCode, kind: &'static str, code: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            rate: None,
        }
    }

    fn invalid(code: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_param", code, message)
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", 2021, "Otp ID not found")
    }

    fn rate_limited(decision: &Decision) -> Self {
        let reset = (decision.reset - OffsetDateTime::now_utc()).whole_seconds().max(1);
        Self {
            rate: Some((decision.limit, decision.remaining, reset)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit", 429, "Too many requests")
        }
    }

    /// A verification refused because the OTP is no longer pending.
    fn not_pending(status: &str) -> Self {
        match status {
            "verified" => Self::new(
                StatusCode::BAD_REQUEST,
                "otp_verified",
                2023,
                "The OTP was already verified",
            ),
            "cancelled" => Self::new(StatusCode::BAD_REQUEST, "otp_cancelled", 2024, "The OTP was canceled"),
            "expired" => Self::new(StatusCode::BAD_REQUEST, "otp_expired", 2025, "The OTP has expired"),
            other => Self::new(
                StatusCode::BAD_REQUEST,
                "otp_failed",
                2026,
                format!("The OTP has failed ({other})"),
            ),
        }
    }

    /// A job the core refused, by its stable reason. `invalid_field` details read
    /// `<field>: <reason>` (`JobError::Invalid`), so the field picks sms.cx's code.
    fn rejected(reason: &str, detail: String) -> Self {
        match reason {
            "invalid_phone_number" => Self::invalid(2020, "The phone number provided is invalid"),
            "missing_field" => Self::invalid(2001, "The parameter 'phoneNumber' is empty or not set"),
            "invalid_template" | "no_template" => Self::invalid(2006, detail),
            "country_not_allowed" | "channel_not_routed" => {
                Self::new(StatusCode::FORBIDDEN, "no_coverage", 403, detail)
            }
            "body_too_large" | "malformed_json" => Self::new(StatusCode::BAD_REQUEST, "invalid_body", 400, detail),
            _ => {
                let code = match detail.split_once(':').map(|(field, _)| field) {
                    Some("from") => 2005,
                    Some("ttl") => 2008,
                    Some("maxAttempts") => 2011,
                    Some("pinType") => 2014,
                    Some("pinLength") => 2016,
                    Some("requestId") => 2018,
                    Some("otpCallbackUrl") => 2019,
                    _ => 400,
                };
                Self::invalid(code, detail)
            }
        }
    }
}

/// Their error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorFields,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorFields {
    /// `invalid_param`, `not_found`, `invalid_pin`, `otp_verified`, `otp_cancelled`,
    /// `otp_expired`, `otp_failed`, `access_denied`, `invalid_api_key`, `rate_limit`, ...
    #[serde(rename = "type")]
    kind: String,
    /// Theirs (2001–2031), else the HTTP status.
    code: u16,
    message: String,
    uri: String,
}

/// The error answers of every sms.cx route, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    #[response(status = 400, description = "Their invalid_param and OTP-state codes")]
    BadRequest(#[to_schema] ErrorBody),
    #[response(status = 401, description = "invalid_api_key")]
    Unauthorized(#[to_schema] ErrorBody),
    #[response(status = 403, description = "access_denied, no_coverage")]
    Forbidden(#[to_schema] ErrorBody),
    #[response(status = 404, description = "not_found (2021)")]
    NotFound(#[to_schema] ErrorBody),
    #[response(status = 413, description = "invalid_body: over api.max_body_bytes")]
    TooLarge(#[to_schema] ErrorBody),
    #[response(status = 429, description = "rate_limit")]
    RateLimited(#[to_schema] ErrorBody),
    #[response(status = 503, description = "server_error: the database or broker is away")]
    Unavailable(#[to_schema] ErrorBody),
}

impl IntoResponse for SmscxError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorFields {
                kind: self.kind.to_string(),
                code: self.code,
                message: self.message.into_owned(),
                uri: format!("urn:otp-courier:smscx:{}", self.code),
            },
        };
        let mut headers = HeaderMap::new();
        if let Some((limit, remaining, reset)) = self.rate {
            for (name, value) in [
                ("x-rate-limit-limit", i64::from(limit)),
                ("x-rate-limit-remaining", i64::from(remaining)),
                ("x-rate-limit-reset", reset),
                ("retry-after", reset),
            ] {
                headers.insert(name, HeaderValue::from(value));
            }
        }
        (self.status, headers, Json(body)).into_response()
    }
}

impl From<ApiError> for SmscxError {
    fn from(error: ApiError) -> Self {
        use ApiError::*;
        match error {
            Unauthorized => Self::new(StatusCode::UNAUTHORIZED, "invalid_api_key", 401, "Invalid API key"),
            NotFound | NoReceiptRoute => Self::not_found(),
            Malformed(_) | TooLarge | UnsupportedMediaType => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_body", 400, error.to_string())
            }
            Invalid { .. } | Timeout(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", 400, error.to_string())
            }
            Rejected { reason, detail } => Self::rejected(reason, detail),
            InvalidCode { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_pin",
                2029,
                "The PIN provided does not verify",
            ),
            Expired => Self::new(StatusCode::BAD_REQUEST, "otp_expired", 2028, "The PIN has expired"),
            AttemptsExhausted => Self::new(StatusCode::BAD_REQUEST, "otp_failed", 2027, "Max attempts reached"),
            NotPending(status) => Self::not_pending(&status),
            RateLimited { decision, .. } | TooManyFailures(decision) => Self::rate_limited(&decision),
            Forbidden | ReceiptRefused(_) | ResendLimit(_) | DeliveryInProgress => {
                Self::new(StatusCode::FORBIDDEN, "access_denied", 403, error.to_string())
            }
            Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", 503, error.to_string()),
            Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    500,
                    "Internal server error",
                )
            }
        }
    }
}

/// An app's credentials; operators have no app to send for here.
pub struct AppCaller(Caller);

impl FromRequestParts<AppState> for AppCaller {
    type Rejection = SmscxError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            caller @ Caller::App(_) => Ok(AppCaller(caller)),
            Caller::Operator(_) => Err(SmscxError::new(
                StatusCode::FORBIDDEN,
                "access_denied",
                403,
                "this API takes an app's key, not an operator's",
            )),
        }
    }
}

/// The body as a JSON object.
fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, SmscxError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        SmscxError::new(status, "invalid_body", status.as_u16(), rejection.body_text())
    })?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(SmscxError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            400,
            "The body must be a JSON object",
        )),
    }
}

/// `POST /otp`: their `NewOtpRequest` checked as they document it, then sent as our job.
#[utoipa::path(post, path = "/smscx/otp", tag = "sms.cx dialect",
    request_body(content = Object, description = "Their NewOtpRequest: phoneNumber, countryIso, from, template, trackId, ttl, maxAttempts, pinType, pinLength, otpCallbackUrl"),
    responses((status = 201, body = DataOtp), Errors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, HeaderMap, Json<DataOtp>), SmscxError> {
    let job = to_job(object(body)?)?;
    let body = serde_json::to_vec(&Value::Object(job)).expect("a JSON object serialises");
    let accepted = accept(&state, &caller, &body).await?;
    let data = match super::settled(&state, &caller, &accepted).await? {
        Some(id) => data_otp(&state, &caller, id).await?.ok_or_else(SmscxError::not_found)?,
        None => match &accepted.otp {
            Some(otp) => queued(accepted.otp_id.as_uuid(), otp),
            // A duplicate names an OTP that exists; it was found above unless it vanished.
            None => return Err(SmscxError::not_found()),
        },
    };
    Ok((StatusCode::CREATED, accepted.headers, Json(data)))
}

/// Their request fields with their error codes, turned into our job's fields: `trackId`
/// becomes the `requestId` (so a repeated trackId names the same OTP), a national number
/// with `countryIso` becomes E.164. Fields of ours they do not have pass through.
fn to_job(mut fields: Map<String, Value>) -> Result<Map<String, Value>, SmscxError> {
    let phone = match fields.remove("phoneNumber") {
        Some(Value::String(phone)) if !phone.trim().is_empty() => phone,
        _ => {
            return Err(SmscxError::invalid(
                2001,
                "The parameter 'phoneNumber' is empty or not set",
            ))
        }
    };
    let country = fields.remove("countryIso");
    let phone = if phone.trim_start().starts_with('+') {
        phone
    } else {
        let country = match country {
            Some(Value::String(country)) if !country.trim().is_empty() => country,
            _ => {
                return Err(SmscxError::invalid(
                    2002,
                    "The parameter 'countryIso' is empty or not set",
                ))
            }
        };
        match PhoneNumber::parse_national(&phone, &country) {
            Ok(phone) => phone.to_string(),
            Err(PhoneError::UnknownCountry) => {
                return Err(SmscxError::invalid(2003, "Country ISO provided is invalid"))
            }
            Err(_) => return Err(SmscxError::invalid(2020, "The phone number provided is invalid")),
        }
    };
    fields.insert("phoneNumber".into(), Value::String(phone));
    match fields.get("from") {
        None | Some(Value::Null) => {}
        Some(Value::String(from)) if from.trim().is_empty() => {
            return Err(SmscxError::invalid(2004, "The parameter 'from' is empty or not set"))
        }
        Some(Value::String(from)) if (3..=15).contains(&from.chars().count()) => {}
        Some(_) => {
            return Err(SmscxError::invalid(
                2005,
                "The parameter 'from' is not valid (min 3, max 15 characters)",
            ))
        }
    }
    match fields.get("template") {
        None | Some(Value::Null) => {}
        Some(Value::String(template)) if !template.trim().is_empty() => {
            if !template.contains("{{pin}}") {
                return Err(SmscxError::invalid(
                    2006,
                    "The parameter 'template' does not contain placeholder {{pin}}",
                ));
            }
        }
        Some(_) => {
            return Err(SmscxError::invalid(
                2006,
                "The parameter 'template' is empty or not set",
            ))
        }
    }
    number(
        &mut fields,
        "ttl",
        (2007, 2008, 2009),
        60..=1800,
        ("60 seconds", "1800 seconds (30 mins)"),
    )?;
    number(&mut fields, "maxAttempts", (2010, 2011, 2012), 1..=10, ("1", "10"))?;
    match fields.get("pinType") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind.is_empty() => {
            return Err(SmscxError::invalid(2013, "The parameter 'pinType' is empty or not set"))
        }
        Some(Value::String(kind)) if ["letters", "numbers", "alphanumeric"].contains(&kind.as_str()) => {}
        Some(_) => {
            return Err(SmscxError::invalid(
                2014,
                "Invalid parameter 'pinType'. Must be one of: letters, numbers, alphanumeric",
            ))
        }
    }
    number(&mut fields, "pinLength", (2015, 2016, 2017), 4..=10, ("4", "10"))?;
    match fields.remove("trackId") {
        None | Some(Value::Null) => {}
        Some(Value::String(track)) if is_uuid_shaped(&track) => {
            fields
                .entry("requestId")
                .or_insert(Value::String(track.to_ascii_lowercase()));
        }
        Some(_) => {
            return Err(SmscxError::invalid(
                2018,
                "Track ID provided (parameter 'trackId') is not a valid UUID (v1-v5)",
            ))
        }
    }
    match fields.get("otpCallbackUrl") {
        None | Some(Value::Null) => {}
        Some(Value::String(url)) if url::Url::parse(url).is_ok_and(|u| u.has_host()) => {}
        Some(_) => {
            return Err(SmscxError::invalid(
                2019,
                "The parameter 'otpCallbackUrl' is not a valid URL",
            ))
        }
    }
    Ok(fields)
}

/// A whole number in `range` (a string of digits counts, as at sms.cx), with the three
/// codes for "not a number", "below" and "above".
fn number(
    fields: &mut Map<String, Value>,
    name: &str,
    (not_number, below, above): (u16, u16, u16),
    range: std::ops::RangeInclusive<i64>,
    (min, max): (&str, &str),
) -> Result<(), SmscxError> {
    let value = match fields.get(name) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    let value =
        value.ok_or_else(|| SmscxError::invalid(not_number, format!("The parameter '{name}' is not a number")))?;
    if value < *range.start() {
        return Err(SmscxError::invalid(below, format!("Min value for '{name}' is {min}")));
    }
    if value > *range.end() {
        return Err(SmscxError::invalid(above, format!("Max value for '{name}' is {max}")));
    }
    fields.insert(name.into(), Value::from(value));
    Ok(())
}

/// 8-4-4-4-12 hex digits. sms.cx's own example trackId has version nibble `f`, so the
/// shape is what is checked, not the version.
fn is_uuid_shaped(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Their `DataOtp` (and `NewOtpResponse`, the same fields).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataOtp {
    /// A UUID: our OTP id without its `otp_` prefix.
    otp_id: String,
    /// The request's `trackId` (our `requestId`); null when it gave none.
    track_id: Option<String>,
    phone_number: String,
    country_iso: Option<String>,
    /// `PENDING`, `VERIFIED`, `EXPIRED`, `CANCELLED` or `FAILED`.
    status: &'static str,
    /// Always 0: otp-courier bills nothing.
    cost: f64,
    parts: i32,
    max_attempts: i32,
    attempts: i32,
    ttl: i32,
    otp_callback_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    date_created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    date_expires: OffsetDateTime,
}

async fn data_otp(state: &AppState, caller: &Caller, id: Uuid) -> Result<Option<DataOtp>, ApiError> {
    let row = sqlx::query!(
        r#"select request_id, request_id_derived, phone_number, country, status, parts, max_attempts,
                  attempts, ttl_seconds, callback_url, created_at, expires_at
           from otps where id = $1 and app_id = $2"#,
        id,
        caller.app_filter()
    )
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|r| DataOtp {
        otp_id: id.hyphenated().to_string(),
        track_id: (!r.request_id_derived).then_some(r.request_id),
        phone_number: r.phone_number,
        country_iso: r.country,
        status: smscx::status(&r.status, r.expires_at <= OffsetDateTime::now_utc()),
        cost: 0.0,
        parts: r.parts,
        max_attempts: r.max_attempts.into(),
        attempts: r.attempts,
        ttl: r.ttl_seconds,
        otp_callback_url: r.callback_url,
        date_created: r.created_at,
        date_expires: r.expires_at,
    }))
}

/// The answer for an OTP the worker has not recorded yet: what it will record.
fn queued(id: Uuid, otp: &NewOtp) -> DataOtp {
    let now = OffsetDateTime::now_utc();
    let ttl = otp.ttl.seconds();
    DataOtp {
        otp_id: id.hyphenated().to_string(),
        track_id: (!otp.job.request_id.is_derived()).then(|| otp.job.request_id.as_str().to_string()),
        phone_number: otp.job.phone.as_str().to_string(),
        country_iso: otp.job.phone.region().map(str::to_string),
        status: "PENDING",
        cost: 0.0,
        parts: i32::try_from(otp.parts).unwrap_or(i32::MAX),
        max_attempts: otp.job.max_attempts.get().into(),
        attempts: 0,
        ttl: i32::try_from(ttl).unwrap_or(i32::MAX),
        otp_callback_url: otp.callback_url.clone(),
        date_created: now,
        date_expires: now + time::Duration::seconds(ttl.into()),
    }
}

/// Their ids are UUIDs; ours (`otp_…`) are taken too. Anything else names no OTP.
fn otp_uuid(text: &str) -> Result<Uuid, SmscxError> {
    Uuid::parse_str(text)
        .or_else(|_| text.parse::<OtpId>().map(|id| id.as_uuid()))
        .map_err(|_| SmscxError::not_found())
}

/// `GET /otp/{otpId}`.
#[utoipa::path(get, path = "/smscx/otp/{otpId}", tag = "sms.cx dialect", params(("otpId" = String, Path, description = "A UUID (or our otp_… id)")),
    responses((status = 200, body = DataOtp), Errors),
    security(("api_key" = [])))]
pub async fn status(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    Path(otp_id): Path<String>,
) -> Result<Json<DataOtp>, SmscxError> {
    let id = otp_uuid(&otp_id)?;
    data_otp(&state, &caller, id)
        .await?
        .map(Json)
        .ok_or_else(SmscxError::not_found)
}

/// `POST /otp/{otpId}` with `{"pin": ...}`.
#[utoipa::path(post, path = "/smscx/otp/{otpId}", tag = "sms.cx dialect", params(("otpId" = String, Path, description = "A UUID (or our otp_… id)")), request_body(content = Object, description = "{\"pin\": \"1544\"}"),
    responses((status = 200, body = Object, description = "{\"status\": \"VERIFIED\"}"), Errors),
    security(("api_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    Path(otp_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, SmscxError> {
    let id = otp_uuid(&otp_id)?;
    let pin = match object(body)?.remove("pin") {
        Some(Value::String(pin)) if !pin.trim().is_empty() => pin,
        Some(Value::Number(pin)) => pin.to_string(),
        _ => return Err(SmscxError::invalid(2022, "The parameter pin is empty or not set")),
    };
    check_code(&state, &caller, id, pin.trim()).await?;
    Ok(Json(json!({"status": "VERIFIED"})))
}

/// `DELETE /otp/{otpId}`.
#[utoipa::path(delete, path = "/smscx/otp/{otpId}", tag = "sms.cx dialect", params(("otpId" = String, Path, description = "A UUID (or our otp_… id)")),
    responses((status = 200, body = Object, description = "{\"info\": {\"id\": otpId}}"), Errors),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    Path(otp_id): Path<String>,
) -> Result<Json<Value>, SmscxError> {
    let id = otp_uuid(&otp_id)?;
    match lifecycle::cancel(&state.pool, id, caller.app_filter())
        .await
        .map_err(ApiError::from)?
        .ok_or_else(SmscxError::not_found)?
    {
        Cancel::Cancelled => Ok(Json(json!({"info": {"id": id.hyphenated().to_string()}}))),
        Cancel::NotPending(status) if status == "cancelled" => Err(SmscxError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            2030,
            "Otp already cancelled",
        )),
        Cancel::NotPending(_) => Err(SmscxError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            2031,
            "You cannot cancel a non-pending Otp",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    fn code(value: Value) -> u16 {
        to_job(fields(value)).expect_err("refused").code
    }

    #[test]
    fn each_documented_create_error_has_its_code() {
        let base = |extra: Value| {
            let mut body = json!({"phoneNumber": "+33612246400"});
            body.as_object_mut().expect("object").extend(fields(extra));
            body
        };
        assert_eq!(code(json!({})), 2001);
        assert_eq!(code(json!({"phoneNumber": "0612246400"})), 2002);
        assert_eq!(code(json!({"phoneNumber": "0612246400", "countryIso": "ZZ"})), 2003);
        assert_eq!(code(base(json!({"from": ""}))), 2004);
        assert_eq!(code(base(json!({"from": "Ab"}))), 2005);
        assert_eq!(code(base(json!({"template": ""}))), 2006);
        assert_eq!(code(base(json!({"template": "no placeholder"}))), 2006);
        assert_eq!(code(base(json!({"ttl": "soon"}))), 2007);
        assert_eq!(code(base(json!({"ttl": 59}))), 2008);
        assert_eq!(code(base(json!({"ttl": 1801}))), 2009);
        assert_eq!(code(base(json!({"maxAttempts": 1.5}))), 2010);
        assert_eq!(code(base(json!({"maxAttempts": 0}))), 2011);
        assert_eq!(code(base(json!({"maxAttempts": 11}))), 2012);
        assert_eq!(code(base(json!({"pinType": ""}))), 2013);
        assert_eq!(code(base(json!({"pinType": "emoji"}))), 2014);
        assert_eq!(code(base(json!({"pinLength": []}))), 2015);
        assert_eq!(code(base(json!({"pinLength": 3}))), 2016);
        assert_eq!(code(base(json!({"pinLength": 11}))), 2017);
        assert_eq!(code(base(json!({"trackId": "not-a-uuid"}))), 2018);
        assert_eq!(code(base(json!({"otpCallbackUrl": "not a url"}))), 2019);
        assert_eq!(code(json!({"phoneNumber": "0012", "countryIso": "FR"})), 2020);
    }

    #[test]
    fn their_example_request_becomes_our_job() {
        let job = to_job(fields(json!({
            "phoneNumber": "06 12 24 64 00", "countryIso": "FR", "from": "InfoText",
            "template": "Your verification code is {{pin}}",
            "trackId": "BF325375-E030-FCCB-A009-17317C574773", "ttl": "180", "maxAttempts": 4,
            "pinType": "numbers", "pinLength": 4, "otpCallbackUrl": "https://webhook/receive-otp-status-updates"
        })))
        .expect("accepted");
        assert_eq!(job["phoneNumber"], "+33612246400");
        assert_eq!(job["requestId"], "bf325375-e030-fccb-a009-17317c574773");
        assert_eq!(job["ttl"], 180);
        assert!(!job.contains_key("countryIso") && !job.contains_key("trackId"));
    }
}
