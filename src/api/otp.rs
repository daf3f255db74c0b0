//! The OTP commands: send, verify, resend, cancel.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{rate_limit_headers, ApiError, Problem};
use super::{AppState, JsonBody, RawJson};
use crate::domain::{AppId, OtpId, PhoneNumber, RawJob, SendJob};
use crate::otp::fraud;
use crate::otp::intake::{self, Source};
use crate::otp::lifecycle::{self, Cancel, Resend};
use crate::otp::ratelimit;
use crate::otp::ratelimit::SendKey;
use crate::otp::verify::{self, Verification};
use crate::tenancy::apps;
use crate::tenancy::keys::Caller;

/// AMQP header with the OTP id the API answered with, on the jobs it publishes.
pub const OTP_ID_HEADER: &str = "x-otp-id";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendAccepted {
    /// `otp_` + 32 hex digits.
    otp_id: String,
    request_id: String,
    /// True when this request id named an existing OTP: nothing new was sent.
    duplicate: bool,
}

/// Queue a send job. The body is the AMQP job (see README, "Sending a job"); `appId` comes from
/// the credentials. Answers once the broker has confirmed the job.
#[utoipa::path(post, path = "/v1/otp/send", request_body(content = Object, description = "A send job"),
    responses((status = 202, body = SendAccepted), (status = 200, body = SendAccepted, description = "Duplicate request id"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "The body is not JSON (malformed-request)"),
              (status = 422, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    RawJson(body): RawJson,
) -> Result<(StatusCode, HeaderMap, Json<SendAccepted>), ApiError> {
    let accepted = accept(&state, &caller, &body).await?;
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let answer = SendAccepted {
        otp_id: accepted.otp_id.to_string(),
        request_id: accepted.request_id,
        duplicate: accepted.duplicate,
    };
    Ok((status, accepted.headers, Json(answer)))
}

/// A send job the broker has confirmed, or the OTP an earlier request with its id made.
pub struct Accepted {
    pub otp_id: OtpId,
    pub request_id: String,
    /// True when the request id named an existing OTP: nothing new was sent.
    pub duplicate: bool,
    /// The tightest send limit's `RateLimit` headers.
    pub headers: HeaderMap,
    /// The OTP as the worker will make it; `None` for a duplicate.
    pub otp: Option<intake::NewOtp>,
}

/// The one way in for HTTP sends, whichever dialect the body came in: validates the job as
/// the worker will, answers an existing OTP for a known request id, checks the send limits
/// and publishes to `otp.send` with a publisher confirm.
pub async fn accept(state: &AppState, caller: &Caller, body: &[u8]) -> Result<Accepted, ApiError> {
    let config = &state.config;
    let job = SendJob::parse(&RawJob {
        body,
        app_id: caller.app_filter(),
        message_id: None,
        max_body_bytes: config.api.max_body_bytes,
        allow_http_callbacks: config.callbacks.allow_http,
    })?;
    let request_id = job.request_id.as_str().to_string();
    super::trace::record(None, Some(&request_id), None);
    if let Some(existing) = existing_otp(state, job.app_id.as_str(), &request_id).await? {
        let otp_id = OtpId::from_uuid(existing);
        super::trace::record(None, None, Some(&otp_id));
        return Ok(Accepted {
            otp_id,
            request_id,
            duplicate: true,
            headers: HeaderMap::new(),
            otp: None,
        });
    }
    let app = intake::load_app(&state.pool, &job)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))??;
    let send = intake::send_key(&job);
    let otp = intake::resolve(job, &app, Source::Api, config, &state.providers)?;
    let headers = check_send_limits(state, &send).await?;
    let screened = fraud::Send {
        otp_id: otp.id.as_uuid(),
        app_id: app.id.as_str(),
        phone: &otp.job.phone,
        modes: &app.fraud_modes,
    };
    if let Some(finding) = state.guard.precheck(&screened).await {
        return Err(ApiError::Rejected {
            reason: "fraud_suspected",
            detail: finding.message(),
        });
    }
    // The worker derives a given request id's OTP id the same way (`intake::resolve`). A
    // key derived from the body deduplicates only while its OTP is pending, so its OTP gets
    // a fresh id, which travels in a header the worker trusts only from our broker user.
    let derived = otp.job.request_id.is_derived();
    let otp_id = otp.id;
    super::trace::record(None, None, Some(&otp_id));
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_app_id(app.id.as_str().into());
    if derived {
        let mut amqp_headers = FieldTable::default();
        amqp_headers.insert(
            OTP_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(otp_id.to_string())),
        );
        properties = properties.with_headers(amqp_headers);
    } else {
        properties = properties.with_message_id(request_id.as_str().into());
    }
    state.publisher.publish_job(body, properties).await.map_err(|error| {
        tracing::warn!(%error, "could not publish a send job");
        ApiError::Unavailable("the message broker")
    })?;
    Ok(Accepted {
        otp_id,
        request_id,
        duplicate: false,
        headers,
        otp: Some(otp),
    })
}

/// The OTP a request id names: for good when the producer chose the id; for a key derived
/// from the body, only while its OTP is pending and unexpired (the worker marks one past its
/// expiry `expired` when the same body comes again, and makes a new one).
pub(crate) async fn existing_otp(state: &AppState, app: &str, request_id: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        "select id from otps where app_id = $1 and request_id = $2
           and (not request_id_derived or (status = 'pending' and expires_at > now()))",
        app,
        request_id
    )
    .fetch_optional(&state.pool)
    .await?)
}

/// Refuses the send when a send limit is already used up; the tightest limit decides the
/// headers. The worker counts the send when it takes the job, so an app's HTTP and broker
/// sends share one count, and no header of a broker message can skip it.
async fn check_send_limits(state: &AppState, send: &SendKey) -> Result<HeaderMap, ApiError> {
    let tightest = state
        .counters
        .peek_send(&state.config.limits, send)
        .await?
        .map_err(|(name, decision)| ApiError::RateLimited { name, decision })?;
    let mut headers = HeaderMap::new();
    if let Some(tightest) = tightest {
        rate_limit_headers(&mut headers, &tightest);
    }
    Ok(headers)
}

/// Which OTP a request names: `otpId`, or `appId` (operators) + `requestId`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtpRef {
    #[serde(alias = "verification_id")]
    otp_id: Option<String>,
    app_id: Option<String>,
    request_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    #[serde(flatten)]
    otp: OtpRef,
    /// The code the user typed.
    #[serde(alias = "otp_code")]
    code: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    otp_id: String,
    status: &'static str,
}

/// Check a code. Single use; attempts are counted; wrong codes, expiry and exhaustion are
/// distinct problems.
#[utoipa::path(post, path = "/v1/otp/verify", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResult), (status = 422, body = Problem, content_type = "application/problem+json", description = "Wrong code (invalid-code) or invalid request"),
              (status = 410, body = Problem, content_type = "application/problem+json", description = "expired or attempts-exhausted"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<(HeaderMap, Json<VerifyResult>), ApiError> {
    let id = resolve_ref(&state, &caller, &request.otp).await?;
    let decision = check_code(&state, &caller, id, &request.code).await?;
    let mut headers = HeaderMap::new();
    rate_limit_headers(&mut headers, &decision);
    Ok((
        headers,
        Json(VerifyResult {
            otp_id: OtpId::from_uuid(id).to_string(),
            status: "verified",
        }),
    ))
}

/// Checks a code against OTP `id` under the verify limit: `Ok` with the limit's standing
/// for a verified code; every other outcome is the error each dialect renders in its own
/// shape, and no such OTP for this caller a 404.
pub async fn check_code(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    code: &str,
) -> Result<ratelimit::Decision, ApiError> {
    // An app's checks count against its own limit (another app's OTP is not found below);
    // an operator's against the OTP's app.
    let app = match caller {
        Caller::App(app) => app.as_str().to_string(),
        Caller::Operator(_) => owner_app(state, caller, id).await?,
    };
    let decision = state
        .counters
        .hit(&ratelimit::verify_app_key(&app), state.config.limits.verify_per_app)
        .await?;
    if !decision.allowed {
        return Err(ApiError::RateLimited {
            name: "verify_per_app",
            decision,
        });
    }
    let outcome = verify::verify(
        &state.pool,
        &state.keys,
        &state.notifier,
        id,
        caller.app_filter(),
        code,
        &state.config,
    )
    .await
    .map_err(|e| match e {
        verify::VerifyError::Database(e) => ApiError::from(e),
        other => ApiError::Internal(Box::new(other)),
    })?
    .ok_or(ApiError::NotFound)?;
    match outcome {
        Verification::Verified => Ok(decision),
        Verification::InvalidCode { remaining } => Err(ApiError::InvalidCode { remaining }),
        Verification::Exhausted => Err(ApiError::AttemptsExhausted),
        Verification::Expired => Err(ApiError::Expired),
        Verification::NotPending(status) => Err(ApiError::NotPending(status)),
        Verification::Locked(decision) => Err(ApiError::TooManyFailures(decision)),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResendResult {
    otp_id: String,
    /// True when the OTP had expired: a new code goes out with a fresh TTL.
    new_code: bool,
}

/// Send the OTP again: the same code within its TTL, a new code after expiry.
#[utoipa::path(post, path = "/v1/otp/resend", request_body = OtpRef,
    responses((status = 202, body = ResendResult), (status = 422, body = Problem, content_type = "application/problem+json", description = "Refused by the fraud guard (job-rejected, reason fraud_suspected), or an invalid request"), (status = 429, body = Problem, content_type = "application/problem+json", description = "The message would exceed a send limit"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<OtpRef>,
) -> Result<(StatusCode, Json<ResendResult>), ApiError> {
    let id = resolve_ref(&state, &caller, &request).await?;
    screen_resend(&state, &caller, id).await?;
    let config = &state.config;
    match lifecycle::resend(
        &state.pool,
        id,
        caller.app_filter(),
        config.api.max_resends,
        &config.limits,
    )
    .await?
    .ok_or(ApiError::NotFound)?
    {
        Resend::Queued { new_code, .. } => Ok((
            StatusCode::ACCEPTED,
            Json(ResendResult {
                otp_id: OtpId::from_uuid(id).to_string(),
                new_code,
            }),
        )),
        Resend::LimitReached { max } => Err(ApiError::ResendLimit(max)),
        Resend::InProgress => Err(ApiError::DeliveryInProgress),
        Resend::NotResendable(status) => Err(ApiError::NotPending(status)),
        Resend::Superseded => Err(ApiError::NotPending(
            "superseded by a newer OTP for the same request".into(),
        )),
        Resend::RateLimited { name, decision } => Err(ApiError::RateLimited { name, decision }),
    }
}

/// A resend is another message to the number: the fraud guard's early checks (its kind of
/// line, a block in force on its prefix or country) refuse it as they would a send.
async fn screen_resend(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let Some(otp) = sqlx::query!(
        "select app_id, phone_number from otps where id = $1 and ($2::text is null or app_id = $2)",
        id,
        caller.app_filter()
    )
    .fetch_optional(&state.pool)
    .await?
    else {
        // No such OTP for this caller: the resend answers 404.
        return Ok(());
    };
    let (Ok(phone), Ok(app_id)) = (PhoneNumber::parse(&otp.phone_number), AppId::parse(&otp.app_id)) else {
        return Ok(());
    };
    let app = apps::load(&state.pool, &app_id)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let modes = app.map(|a| a.fraud_modes).unwrap_or_default();
    let send = fraud::Send {
        otp_id: id,
        app_id: &otp.app_id,
        phone: &phone,
        modes: &modes,
    };
    match state.guard.precheck(&send).await {
        Some(finding) => Err(ApiError::Rejected {
            reason: "fraud_suspected",
            detail: finding.message(),
        }),
        None => Ok(()),
    }
}

/// Cancel a pending OTP.
#[utoipa::path(delete, path = "/v1/otp/{id}", params(("id" = String, Path, description = "otp_…")),
    responses((status = 204), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    match lifecycle::cancel(&state.pool, id, caller.app_filter())
        .await?
        .ok_or(ApiError::NotFound)?
    {
        Cancel::Cancelled => Ok(StatusCode::NO_CONTENT),
        Cancel::NotPending(status) => Err(ApiError::NotPending(status)),
    }
}

/// An id from a path or body; anything unparseable names no OTP.
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    let id = id.parse::<OtpId>().map_err(|_| ApiError::NotFound)?;
    super::trace::record(None, None, Some(&id));
    Ok(id.as_uuid())
}

async fn resolve_ref(state: &AppState, caller: &Caller, otp: &OtpRef) -> Result<Uuid, ApiError> {
    if let Some(id) = &otp.otp_id {
        return parse_id(id);
    }
    let request_id = otp.request_id.as_deref().ok_or_else(|| ApiError::Invalid {
        field: "otpId".into(),
        reason: "give otpId, or requestId (with appId for operators)".into(),
    })?;
    let app = match (caller, otp.app_id.as_deref()) {
        (Caller::App(app), Some(given)) if given != app.as_str() => return Err(ApiError::NotFound),
        (Caller::App(app), _) => app.as_str().to_string(),
        (Caller::Operator(_), Some(given)) => given.to_string(),
        (Caller::Operator(_), None) => {
            return Err(ApiError::Invalid {
                field: "appId".into(),
                reason: "operators must name the app".into(),
            })
        }
    };
    sqlx::query_scalar!(
        "select id from otps where app_id = $1 and request_id = $2 order by created_at desc limit 1",
        app,
        request_id
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)
    .inspect(|id| super::trace::record(None, Some(request_id), Some(&OtpId::from_uuid(*id))))
}

async fn owner_app(state: &AppState, caller: &Caller, id: Uuid) -> Result<String, ApiError> {
    sqlx::query_scalar!(
        "select app_id from otps where id = $1 and ($2::text is null or app_id = $2)",
        id,
        caller.app_filter()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)
}
