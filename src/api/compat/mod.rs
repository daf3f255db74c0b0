//! The dialects of the hosted OTP APIs our users come from, each a thin layer over the same
//! core as `/v1`: the sms.cx OTP API under `/smscx`, the Xoxzo OTP API under `/xoxzo`, and
//! the generic OTP API's `/otp/*` paths. A team moving over changes a base URL, not its code.

pub(super) mod generic;
pub(super) mod smscx;
pub(super) mod xoxzo;

use std::future::Future;
use std::time::Duration;

use axum::Router;

use super::AppState;

/// How long a dialect whose create call answers with a recorded OTP (sms.cx's object, Xoxzo's
/// one-active-OTP rule) waits for the worker to record it. Past it the answer is built from
/// the job, which the broker holds.
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Polls `probe` until it finds something or `RECORD_WAIT` has passed.
async fn recorded<T, E, F, Fut>(mut probe: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
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
