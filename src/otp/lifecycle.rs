//! Operations on an existing OTP besides verification: resend and cancel. Each runs in one
//! short transaction with the row locked, and writes its event there.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType};
use crate::domain::{OtpId, PhoneNumber};
use crate::otp::ratelimit::{self, Decision, SendKey};
use crate::platform::config::LimitsConfig;

/// How a resend request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resend {
    /// Queued for delivery; `generation` changed if the OTP had expired (a new code).
    Queued { generation: i32, new_code: bool },
    /// The per-OTP resend cap is reached.
    LimitReached { max: u32 },
    /// A delivery of this OTP is under way right now.
    InProgress,
    /// Verified, cancelled, exhausted or rejected: nothing to resend.
    NotResendable(String),
    /// A newer pending OTP answers the same (body-derived) request now.
    Superseded,
    /// The message would exceed a send limit (named); nothing changed.
    RateLimited { name: &'static str, decision: Decision },
}

/// Resends an OTP (DESIGN, "PINs are never stored"): within its TTL the same PIN goes out
/// again; after expiry a new generation (a new code) with a fresh TTL. The failed-attempt
/// count is never reset. The retry scheduler picks the queued delivery up. The message a
/// resend makes counts against the send limits like a new send, in the same transaction;
/// a resend over a limit changes nothing.
#[tracing::instrument(skip_all, fields(otp_id = %OtpId::from_uuid(otp_id)))]
pub async fn resend(
    pool: &PgPool,
    otp_id: Uuid,
    app: Option<&str>,
    max_resends: u32,
    limits: &LimitsConfig,
) -> Result<Option<Resend>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(otp) = sqlx::query!(
        "select app_id, phone_number, status, delivery, expires_at, resends, generation from otps
         where id = $1 and ($2::text is null or app_id = $2) for update",
        otp_id,
        app
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    // A pending or failed OTP past its TTL is as good as expired: it gets a new code.
    let expired = otp.status == "expired"
        || (matches!(otp.status.as_str(), "pending" | "failed") && OffsetDateTime::now_utc() >= otp.expires_at);
    let outcome = if !matches!(otp.status.as_str(), "pending" | "expired" | "failed") {
        Resend::NotResendable(otp.status)
    } else if otp.resends >= max_resends as i32 {
        Resend::LimitReached { max: max_resends }
    } else if otp.delivery == "sending" {
        Resend::InProgress
    } else if let Err((name, decision)) = count_resend(&mut tx, limits, otp.app_id, &otp.phone_number).await? {
        // Dropping the transaction takes the count back.
        return Ok(Some(Resend::RateLimited { name, decision }));
    } else {
        let generation = if expired { otp.generation + 1 } else { otp.generation };
        let revived = sqlx::query!(
            "update otps set status = 'pending', delivery = 'queued', next_attempt_at = now(),
                    resends = resends + 1, generation = $2, claims_base = delivery_claims,
                    -- A workflow's current step starts its timer again.
                    step_due_at = case when jsonb_array_length(workflow) > workflow_step + 1
                        then now() + make_interval(secs => (workflow->workflow_step->>'timeoutSeconds')::float8) end,
                    expires_at = case when $3 then now() + make_interval(secs => ttl_seconds) else expires_at end,
                    status_changed_at = case when status = 'pending' then status_changed_at else now() end,
                    updated_at = now()
             where id = $1",
            otp_id,
            generation,
            expired,
        )
        .execute(&mut *tx)
        .await;
        match revived {
            Ok(_) => Resend::Queued {
                generation,
                new_code: expired,
            },
            // A key derived from the body names one pending OTP at a time; a newer one holds it.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Resend::Superseded,
            Err(error) => return Err(error),
        }
    };
    tx.commit().await?;
    Ok(Some(outcome))
}

/// Counts the message a resend makes against the send limits.
async fn count_resend(
    conn: &mut sqlx::PgConnection,
    limits: &LimitsConfig,
    app: String,
    phone: &str,
) -> Result<ratelimit::Verdict, sqlx::Error> {
    let send = SendKey {
        app,
        phone: phone.to_string(),
        region: PhoneNumber::parse(phone)
            .ok()
            .and_then(|p| p.region().map(str::to_string)),
    };
    let mut verdicts = ratelimit::count_sends(conn, limits, std::slice::from_ref(&send)).await?;
    Ok(verdicts.pop().unwrap_or(Ok(None)))
}

/// How a cancel request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    Cancelled,
    NotPending(String),
}

/// Cancels a pending OTP: its code stops working and no further delivery is attempted.
#[tracing::instrument(skip_all, fields(otp_id = %OtpId::from_uuid(otp_id)))]
pub async fn cancel(pool: &PgPool, otp_id: Uuid, app: Option<&str>) -> Result<Option<Cancel>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(status) = sqlx::query_scalar!(
        "select status from otps where id = $1 and ($2::text is null or app_id = $2) for update",
        otp_id,
        app
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    if status != "pending" {
        return Ok(Some(Cancel::NotPending(status)));
    }
    sqlx::query!(
        "update otps set status = 'cancelled', status_changed_at = now(), updated_at = now(),
                next_attempt_at = case when delivery = 'queued' then null else next_attempt_at end
         where id = $1",
        otp_id
    )
    .execute(&mut *tx)
    .await?;
    outbox::record_for_otp(&mut tx, otp_id, EventType::Cancelled, None).await?;
    tx.commit().await?;
    Ok(Some(Cancel::Cancelled))
}
