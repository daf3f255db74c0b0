//! The dialects of the hosted OTP APIs our users come from, each a thin layer over the same
//! core as `/v1`: the sms.cx OTP API under `/smscx`, the Xoxzo OTP API under `/xoxzo`, and
//! the generic OTP API's `/otp/*` paths. A team moving over changes a base URL, not its code.

pub(super) mod generic;
pub(super) mod smscx;
pub(super) mod xoxzo;

use std::future::Future;
use std::time::Duration;

use axum::Router;

use uuid::Uuid;

use super::error::ApiError;
use super::otp::{existing_otp, Accepted};
use super::AppState;
use crate::tenancy::keys::Caller;

/// How long a dialect whose create call answers with a recorded OTP (sms.cx's object, Xoxzo's
/// one-active-OTP rule) waits for the worker to record it: 5 s, or half the request timeout
/// if that is shorter, so the answer is never the timeout's. Past it the answer is built
/// from the job, which the broker holds.
fn record_wait(state: &AppState) -> Duration {
    Duration::from_secs(5).min(Duration::from_millis(state.config.api.request_timeout_seconds * 500))
}

/// The OTP a send names once the worker has had its say: the one it recorded; or, when an
/// identical request without a request id won the race for the body's key, that one's; or
/// `None` while the worker has not got to it.
async fn settled(state: &AppState, caller: &Caller, accepted: &Accepted) -> Result<Option<Uuid>, ApiError> {
    let id = accepted.otp_id.as_uuid();
    let found = recorded(record_wait(state), || async {
        sqlx::query_scalar!(r#"select id as "id!" from otps where id = $1"#, id)
            .fetch_optional(&state.pool)
            .await
    })
    .await?;
    match found {
        Some(id) => Ok(Some(id)),
        None => existing_otp(state, caller.app_filter().unwrap_or_default(), &accepted.request_id).await,
    }
}

/// Polls `probe` until it finds something or `limit` has passed.
async fn recorded<T, E, F, Fut>(limit: Duration, mut probe: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(found) = probe().await? {
            return Ok(Some(found));
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(smscx::router())
        .merge(xoxzo::router())
        .merge(generic::router())
}
