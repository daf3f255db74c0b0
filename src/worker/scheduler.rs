//! The durable half of retries: every poll, start the workflow steps that are due, then
//! claim the deliveries that are due (scheduled rounds, new workflow steps, and leases that
//! lapsed because a process died) and deliver them, bounded by `worker.scheduler_concurrency`.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::otp::delivery::Deliverer;
use crate::platform::config::WorkerConfig;

pub async fn run(deliverer: Deliverer, config: WorkerConfig, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(config.scheduler_concurrency));
    let running = TaskTracker::new();
    while !shutdown.is_cancelled() {
        // Workflow steps that are due start first: they queue deliveries claimed just below.
        if let Err(error) = crate::otp::workflow::advance_due(deliverer.pool(), 100, deliverer.limits()).await {
            tracing::warn!(%error, "could not start due workflow steps");
        }
        let (asked, claimed) = claim_and_spawn(&deliverer, &slots, &running).await;
        // A full batch means more may be due: look again at once.
        if asked == 0 || claimed < asked {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(config.poll_interval()) => {}
            }
        }
    }
    running.close();
    if tokio::time::timeout(config.shutdown_grace(), running.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "scheduled deliveries still running at shutdown; their leases will lapse and they will be retried"
        );
    }
}

/// Claims as many due deliveries as there are free slots; returns (free slots, claimed).
async fn claim_and_spawn(deliverer: &Deliverer, slots: &Arc<Semaphore>, running: &TaskTracker) -> (usize, usize) {
    let free = slots.available_permits();
    if free == 0 {
        return (0, 0);
    }
    let claims = match deliverer.claim_due(free as i64).await {
        Ok(claims) => claims,
        Err(error) => {
            tracing::warn!(%error, "could not claim due deliveries");
            return (free, 0);
        }
    };
    let count = claims.len();
    for claim in claims {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let deliverer = deliverer.clone();
        running.spawn(async move {
            let _slot = slot;
            if let Err(error) = deliverer.deliver(&claim).await {
                tracing::warn!(otp_id = %claim.otp_id(), %error, "could not record a delivery; its lease will lapse and it will be retried");
            }
        });
    }
    (free, count)
}
