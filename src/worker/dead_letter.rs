//! Refused jobs: recorded in `otp_rejections`, then moved to the dead-letter queue with the
//! reason in headers. They are never requeued, so a bad message cannot loop.
//!
//! Nothing in a refused job is trusted to direct a callback: an `otp.rejected` event goes
//! only to the app's configured callback URL, never to a URL from the job, and only when
//! the job's source may act for the app (not for `broker_user_mismatch` or `unknown_app`).
//! Records and events count against `limits.rejections_per_app` (refusals that cannot be
//! tied to an app share one counter), so a flood of bad jobs can fill neither a receiver
//! nor the tables; beyond it, the dead letter alone carries the reason.
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Retry, Worker};
use crate::callbacks::outbox::{self, EventType, OtpSnapshot};
use crate::domain::{AppId, Metadata};
use crate::otp::intake::{Rejection, Source};
use crate::otp::ratelimit;
use crate::platform::amqp;
use crate::tenancy::apps;

/// Header names on a dead-lettered job.
pub const REASON_HEADER: &str = "x-otp-rejection-reason";
pub const DETAIL_HEADER: &str = "x-otp-rejection-detail";

/// What could be read of a refused job, for the record and the callback.
#[derive(Default)]
struct Salvaged {
    app_id: Option<String>,
    request_id: Option<String>,
    phone_number: Option<String>,
    metadata: Option<Value>,
}

/// The rejection counter of refusals not tied to an app the source may act for.
const UNATTRIBUTED: &str = "reject:unattributed";

#[tracing::instrument(skip_all, fields(reason = rejection.reason()))]
pub(super) async fn reject(
    worker: &Worker,
    publisher: &Channel,
    delivery: &Delivery,
    rejection: &Rejection,
) -> Result<(), Retry> {
    let salvaged = salvage(worker, delivery);
    tracing::warn!(app_id = ?salvaged.app_id, request_id = ?salvaged.request_id, detail = %rejection, "job rejected");
    match record(worker, &salvaged, rejection, delivery).await {
        // The record itself cannot be stored: the dead letter still carries the reason.
        Err(Retry::Database(error)) if crate::platform::db::is_data_error(&error) => {
            tracing::error!(%error, "could not record the rejection; dead-lettering it anyway");
        }
        other => other?,
    }
    let properties = dead_letter_properties(&delivery.properties, rejection, &worker.config.amqp.send_queue);
    amqp::publish_confirmed(
        publisher,
        &worker.config.amqp.dead_letter_queue,
        &delivery.data,
        properties,
    )
    .await?;
    Ok(())
}

async fn record(worker: &Worker, salvaged: &Salvaged, rejection: &Rejection, delivery: &Delivery) -> Result<(), Retry> {
    let pool = worker.deliverer.pool();
    // A redelivery of a job refused before its ack was lost (a worker killed, a broker
    // restarted): the refusal and its callback exist already and are not made twice.
    if delivery.redelivered {
        if let Some(request_id) = &salvaged.request_id {
            let recorded = sqlx::query_scalar!(
                r#"select exists(select 1 from otp_rejections
                                 where app_id is not distinct from $1 and request_id = $2 and reason = $3) as "recorded!""#,
                salvaged.app_id,
                request_id,
                rejection.reason(),
            )
            .fetch_one(pool)
            .await?;
            if recorded {
                tracing::info!("a redelivered job whose rejection is recorded already");
                return Ok(());
            }
        }
    }
    let body_bytes = delivery.data.len();
    // A refusal is the app's only when its source may act for the app. Checked here again,
    // whatever the reason: a job refused as unreadable or invalid never reached the
    // broker-user check, yet names an app all the same. Otherwise nothing is sent on that
    // app's behalf, and the refusal does not use up that app's allowance.
    let user_id = delivery.properties.user_id().as_ref().map(|s| s.as_str());
    let source = Source::of_message(user_id, worker.own_user.as_deref());
    let attributable = !matches!(rejection, Rejection::UnknownApp(_) | Rejection::BrokerUser(_));
    let app = match salvaged.app_id.as_deref().map(AppId::parse) {
        Some(Ok(id)) if attributable => apps::load(pool, &id).await?.filter(|app| source.may_act_for(app)),
        _ => None,
    };
    let counter = app
        .as_ref()
        .map_or_else(|| UNATTRIBUTED.to_string(), |app| format!("reject:app:{}", app.id));
    let mut tx = pool.begin().await?;
    let limit = worker.config.limits.rejections_per_app;
    if !ratelimit::hit(&mut tx, &counter, limit).await?.allowed {
        tx.commit().await?;
        metrics::counter!(crate::platform::observability::RATE_LIMITED, "limit" => "rejections_per_app").increment(1);
        tracing::warn!(
            counter,
            "over limits.rejections_per_app: dead-lettered without a record or callback"
        );
        return Ok(());
    }
    sqlx::query!(
        "insert into otp_rejections (id, app_id, request_id, reason, detail, body_bytes) values ($1, $2, $3, $4, $5, $6)",
        Uuid::now_v7(),
        salvaged.app_id,
        salvaged.request_id,
        rejection.reason(),
        rejection.to_string(),
        i32::try_from(body_bytes).unwrap_or(i32::MAX),
    )
    .execute(&mut *tx)
    .await?;
    if let Some(app) = app {
        let callback_url = app.callback_url;
        if callback_url.is_some() {
            let snapshot = OtpSnapshot {
                otp_id: None,
                app_id: app.id.to_string(),
                request_id: salvaged.request_id.clone(),
                phone_number: salvaged.phone_number.clone(),
                channel: None,
                status: "rejected".into(),
                delivery: None,
                locale: None,
                parts: None,
                attempts: None,
                max_attempts: None,
                expires_at: None,
                error: Some(json!({"reason": rejection.reason(), "message": rejection.to_string()})),
                metadata: salvaged.metadata.clone(),
                callback_url,
                step: None,
                fallback: None,
            };
            outbox::record(&mut tx, EventType::Rejected, &snapshot).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Reads what it can of a job that failed validation; every field is checked again here,
/// since none of it has been validated.
fn salvage(worker: &Worker, delivery: &Delivery) -> Salvaged {
    let properties = &delivery.properties;
    // Nothing here was validated: keep only short text without control characters.
    let bounded = |s: String| (s.len() <= 128 && !s.chars().any(char::is_control)).then_some(s);
    let mut salvaged = Salvaged {
        app_id: properties.app_id().as_ref().map(|s| s.to_string()).and_then(bounded),
        request_id: properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .and_then(bounded),
        ..Salvaged::default()
    };
    if delivery.data.len() > worker.config.amqp.max_body_bytes {
        return salvaged;
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&delivery.data) else {
        return salvaged;
    };
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| fields.get(*n).and_then(Value::as_str))
            .map(str::to_string)
    };
    salvaged.app_id = salvaged.app_id.or_else(|| text(&["appId", "appid"]).and_then(bounded));
    salvaged.request_id = text(&["requestId"]).and_then(bounded).or(salvaged.request_id);
    salvaged.phone_number = text(&["phoneNumber", "recipient"]).and_then(bounded);
    salvaged.metadata = fields
        .get("metadata")
        .cloned()
        .and_then(|m| Metadata::parse(m).ok())
        .map(Metadata::into_value);
    salvaged
}

/// The original properties and headers, plus the reason, detail, time and source queue.
fn dead_letter_properties(original: &BasicProperties, rejection: &Rejection, source_queue: &str) -> BasicProperties {
    // Headers over the limit are what was wrong: the dead letter keeps the body, not them.
    let mut table = match rejection {
        Rejection::HeadersTooLarge { .. } => FieldTable::default(),
        _ => original.headers().clone().unwrap_or_default(),
    };
    let mut put = |name: &str, value: String| {
        table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    };
    put(REASON_HEADER, rejection.reason().to_string());
    put(DETAIL_HEADER, rejection.to_string().chars().take(1000).collect());
    put(
        "x-otp-rejected-at",
        OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
    );
    put("x-otp-source-queue", source_queue.to_string());
    let mut properties = original.clone().with_headers(FieldTable::from(table.inner().clone()));
    if properties.content_type().is_none() {
        properties = properties.with_content_type("application/json".into());
    }
    properties
}
