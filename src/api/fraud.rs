//! The fraud guard over HTTP: blocks (operators list and lift them) and verdicts (an app
//! reads its own, operators every app's).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::ops::Operator;
use super::{AppState, QueryParams};
use crate::domain::OtpId;
use crate::otp::fraud::{self, Block, Mode, Verdict};
use crate::tenancy::keys::Caller;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockView {
    id: i64,
    /// The rule that blocked: `conversion`.
    rule: String,
    /// `prefix` (the number without its last four digits) or `country`.
    scope: &'static str,
    /// `+4477009` or `GB`.
    target: String,
    /// Sends and verified codes the block was decided on.
    sends: i64,
    verified: i64,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    lifted_at: Option<OffsetDateTime>,
    lifted_by: Option<String>,
    /// Whether sends to the target are refused now.
    in_force: bool,
}

impl From<Block> for BlockView {
    fn from(block: Block) -> Self {
        BlockView {
            in_force: block.in_force(OffsetDateTime::now_utc()),
            id: block.id.unwrap_or_default(),
            rule: block.rule,
            scope: block.scope.as_str(),
            target: block.target,
            sends: block.sends,
            verified: block.verified,
            starts_at: block.starts_at,
            ends_at: block.ends_at,
            lifted_at: block.lifted_at,
            lifted_by: block.lifted_by,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BlockFilter {
    /// Also blocks that ended or were lifted (the latest 500).
    #[serde(default)]
    all: bool,
}

/// Blocks in force, newest first (operators).
#[utoipa::path(get, path = "/v1/fraud/blocks", params(BlockFilter),
    responses((status = 200, body = Vec<BlockView>), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn blocks(
    State(state): State<AppState>,
    _operator: Operator,
    QueryParams(filter): QueryParams<BlockFilter>,
) -> Result<Json<Vec<BlockView>>, ApiError> {
    let blocks = fraud::list_blocks(&state.pool, filter.all, None).await?;
    Ok(Json(blocks.into_iter().map(BlockView::from).collect()))
}

/// Lift a block in force (operators): sends to its prefix or country go again, counted
/// afresh. Recorded in the audit log.
#[utoipa::path(post, path = "/v1/fraud/blocks/{id}/lift", params(("id" = i64, Path, description = "The block's id")),
    responses((status = 200, body = BlockView), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such block in force"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn lift(
    State(state): State<AppState>,
    Operator(actor): Operator,
    Path(id): Path<String>,
) -> Result<Json<BlockView>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let block = fraud::lift(&state.pool, id, &actor).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(block.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct VerdictFilter {
    /// Operators: one app's verdicts.
    #[serde(alias = "appid")]
    app_id: Option<String>,
    /// `enforce` (refused) or `shadow` (sent, would have been refused).
    mode: Option<String>,
    /// 1–500, default 50.
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerdictView {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    app_id: String,
    otp_id: String,
    rule: String,
    mode: String,
    target: String,
    detail: String,
}

impl From<Verdict> for VerdictView {
    fn from(v: Verdict) -> Self {
        VerdictView {
            at: v.at,
            app_id: v.app_id,
            otp_id: OtpId::from_uuid(v.otp_id).to_string(),
            rule: v.rule,
            mode: v.mode,
            target: v.target,
            detail: v.detail,
        }
    }
}

/// What the fraud guard's rules decided, newest first: sends refused (`enforce`) and sends
/// that went out but would have been refused (`shadow`).
#[utoipa::path(get, path = "/v1/fraud/verdicts", params(VerdictFilter),
    responses((status = 200, body = Vec<VerdictView>), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn verdicts(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<VerdictFilter>,
) -> Result<Json<Vec<VerdictView>>, ApiError> {
    let mode = match filter.mode.as_deref() {
        None => None,
        Some(mode @ ("enforce" | "shadow")) => mode.parse::<Mode>().ok(),
        Some(_) => {
            return Err(ApiError::Invalid {
                field: "mode".into(),
                reason: "must be `enforce` or `shadow`".into(),
            })
        }
    };
    let limit = filter.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid {
            field: "limit".into(),
            reason: "must be 1 to 500".into(),
        });
    }
    let app = caller.app_filter().or(filter.app_id.as_deref());
    let verdicts = fraud::list_verdicts(&state.pool, app, mode, limit).await?;
    Ok(Json(verdicts.into_iter().map(VerdictView::from).collect()))
}
