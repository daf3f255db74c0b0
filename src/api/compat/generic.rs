//! The generic OTP API's paths, `/otp/*`, as aliases of the `/v1` routes. Its field names
//! (`appid`, `recipient`, `otp_code`, `verification_id`) are accepted by the core as aliases,
//! so each path only maps where `/v1` takes an id from the path to a query parameter.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::error::{ApiError, Problem};
use crate::api::logs::{self, LogFilter, LogPage};
use crate::api::otp::{self, OtpRef, ResendResult, SendAccepted, VerifyRequest, VerifyResult};
use crate::api::query::{self, Attempts, ListFilter, OtpPage, OtpView};
use crate::api::reports::{self, LimitUsage, Report, ReportFilter};
use crate::api::{AppState, JsonBody, QueryParams, RawJson};
use crate::tenancy::keys::Caller;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/otp/send", post(send))
        .route("/otp/verify", post(verify))
        .route("/otp/resend", post(resend))
        .route("/otp/status", get(status))
        .route("/otp/list", get(list))
        .route("/otp/logs", get(activity))
        .route("/otp/rate-limits", get(rate_limits))
        .route("/otp/attempts", get(attempts))
        .route("/otp/reports", get(report))
}

/// Which OTP a query names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ById {
    /// `otp_…`; also taken as `otpId` or `id`.
    #[serde(alias = "otpId", alias = "id")]
    verification_id: String,
}

/// `POST /v1/otp/send` under the generic API's path.
#[utoipa::path(post, path = "/otp/send", request_body(content = Object, description = "A send job (`appid`, `recipient`, ...)"),
    responses((status = 202, body = SendAccepted), (status = 200, body = SendAccepted, description = "Duplicate request id"),
              (status = 400, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn send(
    state: State<AppState>,
    caller: Caller,
    body: RawJson,
) -> Result<(StatusCode, HeaderMap, Json<SendAccepted>), ApiError> {
    otp::send(state, caller, body).await
}

/// `POST /v1/otp/verify` under the generic API's path (`verification_id`, `otp_code`).
#[utoipa::path(post, path = "/otp/verify", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResult), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 410, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn verify(
    state: State<AppState>,
    caller: Caller,
    body: JsonBody<VerifyRequest>,
) -> Result<(HeaderMap, Json<VerifyResult>), ApiError> {
    otp::verify(state, caller, body).await
}

/// `POST /v1/otp/resend` under the generic API's path.
#[utoipa::path(post, path = "/otp/resend", request_body = OtpRef,
    responses((status = 202, body = ResendResult), (status = 429, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn resend(
    state: State<AppState>,
    caller: Caller,
    body: JsonBody<OtpRef>,
) -> Result<(StatusCode, Json<ResendResult>), ApiError> {
    otp::resend(state, caller, body).await
}

/// `GET /v1/otp/{id}` with the id as `verification_id`.
#[utoipa::path(get, path = "/otp/status", params(ById),
    responses((status = 200, body = OtpView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn status(
    state: State<AppState>,
    caller: Caller,
    QueryParams(by): QueryParams<ById>,
) -> Result<Json<OtpView>, ApiError> {
    query::status(state, caller, Path(by.verification_id)).await
}

/// `GET /v1/otp/{id}/attempts` with the id as `verification_id`.
#[utoipa::path(get, path = "/otp/attempts", params(ById),
    responses((status = 200, body = Attempts), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn attempts(
    state: State<AppState>,
    caller: Caller,
    QueryParams(by): QueryParams<ById>,
) -> Result<Json<Attempts>, ApiError> {
    query::attempts(state, caller, Path(by.verification_id)).await
}

/// `GET /v1/otp` under the generic API's path.
#[utoipa::path(get, path = "/otp/list", params(ListFilter),
    responses((status = 200, body = OtpPage), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    state: State<AppState>,
    caller: Caller,
    filter: QueryParams<ListFilter>,
) -> Result<Json<OtpPage>, ApiError> {
    query::list(state, caller, filter).await
}

/// `GET /v1/logs` under the generic API's path.
#[utoipa::path(get, path = "/otp/logs", params(LogFilter),
    responses((status = 200, body = LogPage), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn activity(
    state: State<AppState>,
    caller: Caller,
    filter: QueryParams<LogFilter>,
) -> Result<Json<LogPage>, ApiError> {
    logs::logs(state, caller, filter).await
}

/// `GET /v1/rate-limits` under the generic API's path.
#[utoipa::path(get, path = "/otp/rate-limits",
    responses((status = 200, body = [LimitUsage]), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rate_limits(state: State<AppState>, caller: Caller) -> Result<Json<Vec<LimitUsage>>, ApiError> {
    reports::rate_limits(state, caller).await
}

/// `GET /v1/reports` under the generic API's path.
#[utoipa::path(get, path = "/otp/reports", params(ReportFilter),
    responses((status = 200, body = Report), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn report(
    state: State<AppState>,
    caller: Caller,
    filter: QueryParams<ReportFilter>,
) -> Result<Json<Report>, ApiError> {
    reports::reports(state, caller, filter).await
}
