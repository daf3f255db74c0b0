//! The Xoxzo OTP API under `/xoxzo`: `POST /otp/register-website/`, `POST /otp/request/`
//! (`website`, `phone_number` → 201 `{"msgid"}`) and `POST /otp/verify/` (`otp_id`, `code`),
//! with HTTP Basic auth by the app's key id and secret, parameters as JSON or as a form, and
//! errors as Xoxzo's API gives them: `{"<field>": ["<message>"]}` for a bad parameter,
//! `{"detail": "<message>"}` otherwise. A website is bound to one app
//! (`apps create --website`, or register-website); the `msgid` is our OTP id. Xoxzo documents
//! no verify answers, so the ones here follow the same shapes (see README).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::otp::{accept, check_code};
use crate::api::AppState;
use crate::domain::{OtpId, PhoneNumber};
use crate::tenancy::apps::normalise_website;
use crate::tenancy::keys::Caller;

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    // Their paths end in `/`; clients that drop it land on the same handler.
    for (path, handler) in [
        ("/xoxzo/otp/register-website", post(register_website)),
        ("/xoxzo/otp/request", post(request)),
        ("/xoxzo/otp/verify", post(verify)),
    ] {
        router = router.route(path, handler.clone()).route(&format!("{path}/"), handler);
    }
    router.method_not_allowed_fallback(|| async {
        XoxzoError::detail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
    })
}

/// An error in Xoxzo's shape.
#[derive(Debug)]
pub struct XoxzoError {
    status: StatusCode,
    body: Value,
}

impl XoxzoError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ field: [message.into()] }),
        }
    }

    fn detail(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"detail": message.into()}),
        }
    }
}

/// The error answers of every Xoxzo route, for the OpenAPI document: `{"<parameter>":
/// ["<message>"]}` for a bad parameter, `{"detail": "<message>"}` otherwise.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    #[response(status = 400, description = "a bad parameter, or a code that does not verify")]
    BadRequest(#[to_schema] Value),
    #[response(status = 401, description = "wrong credentials")]
    Unauthorized(#[to_schema] Value),
    #[response(status = 403, description = "an operator's key")]
    Forbidden(#[to_schema] Value),
    #[response(status = 404, description = "no such OTP")]
    NotFound(#[to_schema] Value),
    #[response(status = 413, description = "over api.max_body_bytes")]
    TooLarge(#[to_schema] Value),
    #[response(status = 429, description = "a limit is used up")]
    RateLimited(#[to_schema] Value),
    #[response(status = 503, description = "the database or broker is away")]
    Unavailable(#[to_schema] Value),
}

impl IntoResponse for XoxzoError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ApiError> for XoxzoError {
    fn from(error: ApiError) -> Self {
        use ApiError::*;
        match error {
            Unauthorized => Self::detail(StatusCode::UNAUTHORIZED, "Invalid username/password."),
            NotFound | NoReceiptRoute => Self::detail(StatusCode::NOT_FOUND, "Not found."),
            Rejected { reason, detail } => match reason {
                "invalid_phone_number" | "missing_field" => Self::field("phone_number", detail),
                _ => Self::detail(StatusCode::BAD_REQUEST, detail),
            },
            InvalidCode { remaining } => Self {
                status: StatusCode::BAD_REQUEST,
                body: json!({"code": ["The code is not correct."], "remaining_attempts": remaining}),
            },
            Expired => Self::field("otp_id", "The OTP has expired."),
            AttemptsExhausted => Self::field("otp_id", "No verification attempts are left."),
            NotPending(status) => Self::field("otp_id", format!("The OTP is {status}.")),
            RateLimited { .. } | TooManyFailures(_) => Self::detail(StatusCode::TOO_MANY_REQUESTS, error.to_string()),
            Unavailable(_) => Self::detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.")
            }
            Forbidden | ReceiptRefused(_) | ResendLimit(_) | DeliveryInProgress => {
                Self::detail(StatusCode::FORBIDDEN, error.to_string())
            }
            Malformed(_) | TooLarge | UnsupportedMediaType | Invalid { .. } | Timeout(_) => {
                Self::detail(StatusCode::BAD_REQUEST, error.to_string())
            }
        }
    }
}

/// An app's credentials (their SDKs send HTTP Basic: SID and token = key id and secret).
pub struct AppCaller(Caller);

impl FromRequestParts<AppState> for AppCaller {
    type Rejection = XoxzoError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            caller @ Caller::App(_) => Ok(AppCaller(caller)),
            Caller::Operator(_) => Err(XoxzoError::detail(
                StatusCode::FORBIDDEN,
                "This API takes an app's key, not an operator's.",
            )),
        }
    }
}

/// The parameters, from a JSON object or a form body.
fn params(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, XoxzoError> {
    let body = body.map_err(|rejection| XoxzoError::detail(rejection.status(), rejection.body_text()))?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/x-www-form-urlencoded"));
    if form {
        return Ok(url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice(&body) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(XoxzoError::detail(
            StatusCode::BAD_REQUEST,
            "JSON parse error: the body must be a JSON object or a form.",
        )),
    }
}

/// A website as the app binding stores it, or the parameter error.
fn parse_website(given: &str) -> Result<String, XoxzoError> {
    normalise_website(given).map_err(|e| XoxzoError::field("website", format!("Enter a valid URL: it {e}.")))
}

fn required(fields: &Map<String, Value>, name: &str) -> Result<String, XoxzoError> {
    match fields.get(name) {
        Some(Value::String(value)) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Some(Value::Number(value)) => Ok(value.to_string()),
        Some(Value::String(_)) => Err(XoxzoError::field(name, "This field may not be blank.")),
        _ => Err(XoxzoError::field(name, "This field is required.")),
    }
}

/// The app's website; a request naming another is refused.
async fn check_website(state: &AppState, caller: &Caller, given: &str) -> Result<(), XoxzoError> {
    let given = parse_website(given)?;
    let bound = sqlx::query_scalar!("select website from apps where id = $1", caller.app_filter())
        .fetch_optional(&state.pool)
        .await
        .map_err(ApiError::from)?
        .flatten();
    if bound.as_deref() == Some(given.as_str()) {
        Ok(())
    } else {
        Err(XoxzoError::field(
            "website",
            "This website is not registered for these credentials.",
        ))
    }
}

/// `POST /otp/register-website/`: binds a website to the calling app, once.
#[utoipa::path(post, path = "/xoxzo/otp/register-website/", tag = "Xoxzo dialect", request_body(content = Object, description = "{\"website\": \"https://example.com\"} (or a form)"),
    responses((status = 201, body = Object, description = "{\"message\": \"Website registered successfully.\"}"), Errors),
    security(("api_key" = [])))]
pub async fn register_website(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), XoxzoError> {
    let fields = params(&headers, body)?;
    let website = required(&fields, "website")?;
    let website = parse_website(&website)?;
    let exists = || XoxzoError::field("website", "website info with this website already exists.");
    let bound = sqlx::query!(
        "update apps set website = $2 where id = $1 and website is null",
        caller.app_filter(),
        website
    )
    .execute(&state.pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => exists(),
        _ => ApiError::from(e).into(),
    })?;
    if bound.rows_affected() == 0 {
        return Err(exists());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Website registered successfully."})),
    ))
}

/// `POST /otp/request/`: sends the app's template with a new code. One active OTP per number
/// and website: while one is pending, another request for the number is refused.
#[utoipa::path(post, path = "/xoxzo/otp/request/", tag = "Xoxzo dialect", request_body(content = Object, description = "{\"website\": \"https://example.com\", \"phone_number\": \"+818012345678\"} (or a form)"),
    responses((status = 201, body = Object, description = "{\"msgid\": \"otp_…\"}"), Errors),
    security(("api_key" = [])))]
pub async fn request(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), XoxzoError> {
    let fields = params(&headers, body)?;
    let website = required(&fields, "website")?;
    let phone = required(&fields, "phone_number")?;
    check_website(&state, &caller, &website).await?;
    // Normalised first, so that every spelling of a number is one number below.
    let phone = PhoneNumber::parse(&phone).map_err(|e| XoxzoError::field("phone_number", e.to_string()))?;
    // No request id: the key derived from this body names the number's pending OTP, if any.
    let job = serde_json::to_vec(&json!({"phoneNumber": phone.as_str()})).expect("JSON serialises");
    let accepted = accept(&state, &caller, &job).await?;
    // Answer once the OTP is recorded, so that the next request for the number finds it; an
    // identical request that won the race names the active OTP.
    let active = match accepted.duplicate {
        true => Some(accepted.otp_id.as_uuid()),
        false => super::settled(&state, &caller, &accepted)
            .await?
            .filter(|id| *id != accepted.otp_id.as_uuid()),
    };
    if let Some(active) = active {
        return Err(XoxzoError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "phone_number": ["An OTP for this phone number is still active."],
                "msgid": OtpId::from_uuid(active).to_string(),
            }),
        });
    }
    Ok((StatusCode::CREATED, Json(json!({"msgid": accepted.otp_id.to_string()}))))
}

/// `POST /otp/verify/`: `otp_id` (the `msgid` of the request) and `code`; `website`, if
/// given, must be the app's.
#[utoipa::path(post, path = "/xoxzo/otp/verify/", tag = "Xoxzo dialect", request_body(content = Object, description = "{\"otp_id\": \"otp_…\", \"code\": \"123456\"} (or a form)"),
    responses((status = 200, body = Object, description = "{\"msgid\": \"otp_…\", \"status\": \"verified\"}"), Errors),
    security(("api_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    AppCaller(caller): AppCaller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, XoxzoError> {
    let fields = params(&headers, body)?;
    let otp_id = required(&fields, "otp_id")?;
    let code = required(&fields, "code")?;
    if let Some(website) = fields.get("website").and_then(Value::as_str) {
        check_website(&state, &caller, website).await?;
    }
    let id = otp_id
        .parse::<OtpId>()
        .map_err(|_| XoxzoError::detail(StatusCode::NOT_FOUND, "Not found."))?;
    check_code(&state, &caller, id.as_uuid(), &code).await?;
    Ok(Json(json!({"msgid": otp_id, "status": "verified"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_website_is_one_whatever_its_spelling() {
        for spelling in [
            "https://Example.com",
            "https://example.com/",
            "example.com",
            " https://example.com/login ",
        ] {
            assert_eq!(
                normalise_website(spelling).as_deref(),
                Ok("https://example.com"),
                "{spelling}"
            );
        }
        assert_eq!(
            normalise_website("http://localhost:8080/x").as_deref(),
            Ok("http://localhost:8080")
        );
        assert!(normalise_website("ftp://example.com").is_err());
        assert!(normalise_website("https://").is_err());
    }
}
