//! Prometheus metrics. The roles count through the `metrics` facade (a no-op until a
//! recorder is installed, as in the library's tests); the binary installs the Prometheus
//! recorder once and the API serves it at `/metrics`. Labels are bounded: app, provider,
//! channel, outcome, reason, limit — never a phone number or an id.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::platform::amqp::Publisher;
use crate::platform::config::AmqpConfig;

pub const JOBS: &str = "otp_courier_jobs_total";
pub const DELIVERIES: &str = "otp_courier_deliveries_total";
pub const PROVIDER_REQUESTS: &str = "otp_courier_provider_request_duration_seconds";
pub const PROVIDER_RETRIES: &str = "otp_courier_provider_retries_total";
pub const VERIFICATIONS: &str = "otp_courier_verifications_total";
pub const EXPIRED: &str = "otp_courier_otps_expired_total";
pub const CALLBACKS: &str = "otp_courier_callback_attempts_total";
pub const CALLBACK_REQUESTS: &str = "otp_courier_callback_request_duration_seconds";
pub const RATE_LIMITED: &str = "otp_courier_rate_limited_total";
pub const FRAUD_FINDINGS: &str = "otp_courier_fraud_findings_total";
pub const FRAUD_BLOCKS: &str = "otp_courier_fraud_blocks_total";
pub const FRAUD_UNAVAILABLE: &str = "otp_courier_fraud_unavailable_total";
pub const OUTBOX_PENDING: &str = "otp_courier_outbox_pending";
pub const OUTBOX_OLDEST: &str = "otp_courier_outbox_oldest_pending_seconds";
pub const DLQ_DEPTH: &str = "otp_courier_dlq_depth";
pub const RECEIPTS: &str = "otp_courier_receipts_total";
pub const FALLBACKS: &str = "otp_courier_workflow_fallbacks_total";
pub const RECEIPT_LATENCY: &str = "otp_courier_receipt_latency_seconds";

/// How often the recorder folds recorded histogram values into their buckets.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder; its handle renders `/metrics`. Needs a
/// Tokio runtime: it starts the recorder's upkeep, without which every histogram value
/// would be kept in memory until the next scrape, and for ever where nobody scrapes.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &buckets)?
        .set_buckets_for_metric(
            Matcher::Full(RECEIPT_LATENCY.into()),
            &[1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0],
        )?
        .install_recorder()?;
    describe();
    let upkept = handle.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            upkept.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    describe_counter!(
        JOBS,
        "Send jobs consumed, by outcome (accepted, duplicate, rejected) and rejection reason."
    );
    describe_counter!(
        DELIVERIES,
        "Delivery rounds by provider, channel and outcome (sent, rescheduled, failed)."
    );
    describe_histogram!(
        PROVIDER_REQUESTS,
        Unit::Seconds,
        "Provider HTTP requests, by provider and outcome."
    );
    describe_counter!(
        PROVIDER_RETRIES,
        "Immediate provider retries within a round, by provider."
    );
    describe_counter!(
        FALLBACKS,
        "Workflow steps started after the one before, by reason (failed, undelivered, timeout)."
    );
    describe_counter!(
        RECEIPTS,
        "Delivery receipts taken (pushed or polled), by provider and status in our terms."
    );
    describe_histogram!(
        RECEIPT_LATENCY,
        Unit::Seconds,
        "From the provider request to the receipt that first said delivered, by provider."
    );
    describe_counter!(VERIFICATIONS, "Verification attempts by app and outcome.");
    describe_counter!(EXPIRED, "Pending OTPs the sweeper expired.");
    describe_counter!(
        CALLBACKS,
        "Callback attempts by outcome (delivered, retrying, gone, dead)."
    );
    describe_histogram!(CALLBACK_REQUESTS, Unit::Seconds, "Callback HTTP requests, by outcome.");
    describe_counter!(
        RATE_LIMITED,
        "Sends, resends, verifications and rejection records refused by a rate limit, by limit."
    );
    describe_counter!(
        FRAUD_FINDINGS,
        "Sends a fraud-guard rule judged risky, by rule and mode (enforce: refused; shadow: sent)."
    );
    describe_counter!(
        FRAUD_BLOCKS,
        "Prefixes and countries the fraud guard blocked for unused codes, by scope."
    );
    describe_counter!(
        FRAUD_UNAVAILABLE,
        "Batches the fraud guard let through unjudged because it could not read its counts."
    );
    describe_gauge!(OUTBOX_PENDING, "Callbacks waiting to be delivered.");
    describe_gauge!(
        OUTBOX_OLDEST,
        Unit::Seconds,
        "Age of the oldest callback waiting to be delivered."
    );
    describe_gauge!(DLQ_DEPTH, "Messages in the dead-letter queue.");
}

/// Samples what no single event tells — the outbox backlog and the dead-letter queue's depth —
/// every `every`, until `shutdown`.
pub async fn sample(pool: PgPool, amqp: AmqpConfig, every: Duration, shutdown: CancellationToken) {
    let dead_letters = amqp.dead_letter_queue.clone();
    let broker = Publisher::new(amqp);
    while !shutdown.is_cancelled() {
        match outbox_backlog(&pool).await {
            Ok((pending, oldest)) => {
                gauge!(OUTBOX_PENDING).set(pending as f64);
                gauge!(OUTBOX_OLDEST).set(oldest);
            }
            Err(error) => tracing::debug!(%error, "could not sample the outbox backlog"),
        }
        match broker.depth(&dead_letters).await {
            Some(depth) => gauge!(DLQ_DEPTH).set(f64::from(depth)),
            None => tracing::debug!("could not sample the dead-letter queue"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn outbox_backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "pending!",
                  coalesce(extract(epoch from now() - min(created_at))::float8, 0) as "oldest!"
           from outbox where state = 'pending'"#
    )
    .fetch_one(pool)
    .await?;
    Ok((row.pending, row.oldest))
}

/// Serves `/metrics` alone, without credentials, on `metrics.listen` (an internal address).
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    let page = move || {
        let body = handle.as_ref().map(PrometheusHandle::render).unwrap_or_default();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
        }
    };
    let router = axum::Router::new().route("/metrics", axum::routing::get(page));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 18] = [
        JOBS,
        DELIVERIES,
        PROVIDER_REQUESTS,
        PROVIDER_RETRIES,
        VERIFICATIONS,
        EXPIRED,
        CALLBACKS,
        CALLBACK_REQUESTS,
        RATE_LIMITED,
        OUTBOX_PENDING,
        OUTBOX_OLDEST,
        DLQ_DEPTH,
        RECEIPTS,
        RECEIPT_LATENCY,
        FALLBACKS,
        FRAUD_FINDINGS,
        FRAUD_BLOCKS,
        FRAUD_UNAVAILABLE,
    ];

    #[test]
    fn the_dashboard_queries_only_metrics_that_exist_and_shows_them_all() {
        let dashboard = include_str!("../../compose/grafana/otp-courier.json");
        let used: Vec<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("otp_courier_"))
            .map(|word| word.trim_end_matches("_bucket"))
            .collect();
        for name in &used {
            assert!(
                ALL.contains(name),
                "the dashboard queries `{name}`, which is not recorded"
            );
        }
        for name in ALL {
            assert!(used.contains(&name), "the dashboard does not show `{name}`");
        }
    }
}
