//! The operator API under `/v1/ops`: the replays and dead-letter tools of the command line,
//! each with `dryRun`. App credentials get 403.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, Problem};
use super::{AppState, JsonBody, QueryParams};
use crate::ops::dlq::{DeadLetter, Dlq, DlqError, DlqFilter};
use crate::ops::replay::{self, CallbackFilter, DeliveryFilter, ReplayError, Summary};
use crate::tenancy::keys::Caller;

/// An operator caller, by its audit name (`api:<key id>`). App credentials get 403 before
/// the body is read.
pub struct Operator(pub String);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Operator(key) => Ok(Operator(format!("api:{key}"))),
            Caller::App(_) => Err(ApiError::Forbidden),
        }
    }
}

/// Dead-letter actions over HTTP take at most this many messages (the command line has no
/// such bound): each must finish within the request timeout.
const HTTP_DLQ_LIMIT: usize = 10_000;

fn bounded(mut filter: DlqFilter) -> Result<DlqFilter, ApiError> {
    if filter.message_ids.len() > HTTP_DLQ_LIMIT || filter.message_ids.iter().any(|id| id.len() > 255) {
        return Err(ApiError::Invalid {
            field: "messageIds".into(),
            reason: format!("at most {HTTP_DLQ_LIMIT} ids of at most 255 characters"),
        });
    }
    match filter.limit {
        Some(n) if !(1..=HTTP_DLQ_LIMIT).contains(&n) => Err(ApiError::Invalid {
            field: "limit".into(),
            reason: format!("must be 1 to {HTTP_DLQ_LIMIT}"),
        }),
        _ => {
            filter.limit = Some(filter.limit.unwrap_or(1000));
            Ok(filter)
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::Invalid(invalid) => ApiError::Invalid {
                field: invalid.field.into(),
                reason: invalid.reason,
            },
            ReplayError::Database(error) => error.into(),
        }
    }
}

impl From<DlqError> for ApiError {
    fn from(error: DlqError) -> Self {
        match error {
            DlqError::Amqp(_) => ApiError::Unavailable("the broker"),
            DlqError::Database(error) => error.into(),
        }
    }
}

/// Sends failed OTPs again (same code within the TTL, a new code and TTL after it).
#[utoipa::path(post, path = "/v1/ops/replay/deliveries", request_body = DeliveryFilter,
    responses((status = 200, body = Summary), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn replay_deliveries(
    State(state): State<AppState>,
    Operator(actor): Operator,
    JsonBody(filter): JsonBody<DeliveryFilter>,
) -> Result<Json<Summary>, ApiError> {
    Ok(Json(
        replay::deliveries(&state.pool, &filter, &actor, &mut |_, _| {}).await?,
    ))
}

/// Sends dead (or gone) callbacks again with their original event ids.
#[utoipa::path(post, path = "/v1/ops/replay/callbacks", request_body = CallbackFilter,
    responses((status = 200, body = Summary), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn replay_callbacks(
    State(state): State<AppState>,
    Operator(actor): Operator,
    JsonBody(filter): JsonBody<CallbackFilter>,
) -> Result<Json<Summary>, ApiError> {
    Ok(Json(
        replay::callbacks(&state.pool, &filter, &actor, &mut |_, _| {}).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqListParams {
    /// 1-1000, default 20.
    limit: Option<i64>,
}

/// The messages at the head of the dead-letter queue, left in place.
#[utoipa::path(get, path = "/v1/ops/dlq", params(DlqListParams),
    responses((status = 200, body = [DeadLetter]), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn dlq_list(
    State(state): State<AppState>,
    _operator: Operator,
    QueryParams(params): QueryParams<DlqListParams>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid {
            field: "limit".into(),
            reason: "must be 1 to 1000".into(),
        });
    }
    Ok(Json(Dlq::new(state.config.amqp.clone()).list(limit as usize).await?))
}

/// Publishes matching dead-lettered jobs to the send queue again.
#[utoipa::path(post, path = "/v1/ops/dlq/requeue", request_body = DlqFilter,
    responses((status = 200, body = Summary), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn dlq_requeue(
    State(state): State<AppState>,
    Operator(actor): Operator,
    JsonBody(filter): JsonBody<DlqFilter>,
) -> Result<Json<Summary>, ApiError> {
    let filter = bounded(filter)?;
    let dlq = Dlq::new(state.config.amqp.clone());
    Ok(Json(dlq.requeue(&state.pool, &filter, &actor, &mut |_, _| {}).await?))
}

/// Deletes matching dead-lettered jobs for good.
#[utoipa::path(post, path = "/v1/ops/dlq/purge", request_body = DlqFilter,
    responses((status = 200, body = Summary), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn dlq_purge(
    State(state): State<AppState>,
    Operator(actor): Operator,
    JsonBody(filter): JsonBody<DlqFilter>,
) -> Result<Json<Summary>, ApiError> {
    let filter = bounded(filter)?;
    let dlq = Dlq::new(state.config.amqp.clone());
    Ok(Json(dlq.purge(&state.pool, &filter, &actor, &mut |_, _| {}).await?))
}
