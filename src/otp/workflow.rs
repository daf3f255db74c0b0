//! Channel workflows: when an OTP's current step fails to deliver, is reported
//! undelivered, or runs out its timeout without a verification, the next step starts: the
//! OTP row takes the step's channel and provider and is queued for delivery with the same
//! code (same generation). One transaction moves it, fenced on the step it left and on the
//! OTP being pending, so a verification, a cancel or the expiry stops the workflow at once,
//! and a crash or a second process can neither skip nor repeat a step. Each start counts
//! against the send limits like a resend.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType, OtpRow};
use crate::domain::PhoneNumber;
use crate::otp::ratelimit::{self, SendKey};
use crate::platform::config::LimitsConfig;
use crate::platform::observability;

/// Why a workflow moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The step's delivery failed for good.
    Failed,
    /// The provider reported the step's message undelivered.
    Undelivered,
    /// The step's timeout passed without a verification.
    Timeout,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Failed => "failed",
            Why::Undelivered => "undelivered",
            Why::Timeout => "timeout",
        }
    }
}

/// The step after `from_step`, ready to start: the OTP is pending, unexpired, still on
/// that step (its row now locked), it has a next step, and the next message was counted
/// against the send limits.
#[derive(Debug)]
pub struct NextStep {
    otp_id: Uuid,
    from_step: i16,
    from_channel: String,
}

/// Checks that the step after `from_step` may start and counts its message, in the
/// caller's transaction; `None`: it may not (verified, cancelled, expired, moved on
/// already, last step, or a send limit refused the message: then the workflow ends).
pub async fn next_step(
    conn: &mut PgConnection,
    otp_id: Uuid,
    from_step: i16,
    limits: &LimitsConfig,
) -> sqlx::Result<Option<NextStep>> {
    let Some(current) = sqlx::query!(
        "select app_id, phone_number, channel, jsonb_array_length(workflow) as steps
         from otps
         where id = $1 and status = 'pending' and workflow_step = $2 and expires_at > now()
         for no key update",
        otp_id,
        from_step
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    if current.steps.unwrap_or(0) <= i32::from(from_step) + 1 {
        return Ok(None);
    }
    // The next message counts against the send limits, as a resend does.
    let send = SendKey {
        app: current.app_id.clone(),
        phone: current.phone_number.clone(),
        region: PhoneNumber::parse(&current.phone_number)
            .ok()
            .and_then(|p| p.region().map(str::to_string)),
    };
    let verdict = ratelimit::count_sends(&mut *conn, limits, std::slice::from_ref(&send))
        .await?
        .pop()
        .unwrap_or(Ok(None));
    if let Err((name, _)) = verdict {
        metrics::counter!(observability::RATE_LIMITED, "limit" => name).increment(1);
        tracing::warn!(otp_id = %crate::domain::OtpId::from_uuid(otp_id), limit = name,
            "the workflow's next step is refused by a send limit; the workflow ends here");
        sqlx::query!("update otps set step_due_at = null where id = $1", otp_id)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    }
    Ok(Some(NextStep {
        otp_id,
        from_step,
        from_channel: current.channel,
    }))
}

/// Starts a checked next step: the OTP takes its channel, provider, template and locale
/// and is queued for delivery with the same code; `otp.fallback` says why.
pub async fn start(conn: &mut PgConnection, next: NextStep, why: Why) -> sqlx::Result<OtpRow> {
    let row = sqlx::query_as!(
        OtpRow,
        r#"update otps o
           set workflow_step = o.workflow_step + 1,
               channel = o.workflow->(o.workflow_step + 1)->>'channel',
               provider = o.workflow->(o.workflow_step + 1)->>'provider',
               -- What the step's channel says (a call its voice template), in its locale.
               template = coalesce(o.workflow->(o.workflow_step + 1)->>'template', o.template),
               locale = coalesce(o.workflow->(o.workflow_step + 1)->>'locale', o.locale),
               delivery = 'queued', next_attempt_at = now(),
               -- A round of the step left that is still running can no longer record.
               delivery_claims = o.delivery_claims + 1, claims_base = o.delivery_claims + 1,
               step_due_at = case when jsonb_array_length(o.workflow) > o.workflow_step + 2
                   then now() + make_interval(secs => (o.workflow->(o.workflow_step + 1)->>'timeoutSeconds')::float8) end,
               updated_at = now()
           where o.id = $1
           returning o.id, o.app_id, o.request_id, o.phone_number, o.channel, o.status, o.delivery, o.locale,
                     o.parts, o.attempts, o.max_attempts, o.expires_at, o.metadata, o.callback_url, o.workflow_step"#,
        next.otp_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut snapshot = row.clone().into_snapshot(None);
    snapshot.fallback = Some(json!({
        "reason": why.as_str(),
        "fromStep": next.from_step,
        "fromChannel": next.from_channel,
    }));
    outbox::record(conn, EventType::Fallback, &snapshot).await?;
    metrics::counter!(observability::FALLBACKS, "reason" => why.as_str()).increment(1);
    tracing::info!(otp_id = %crate::domain::OtpId::from_uuid(next.otp_id), reason = why.as_str(),
        from_step = next.from_step, to_channel = %row.channel, "workflow moved to its next step");
    Ok(row)
}

/// [`next_step`] then [`start`]: the step after `from_step` starts if it may.
pub async fn advance(
    conn: &mut PgConnection,
    otp_id: Uuid,
    from_step: i16,
    why: Why,
    limits: &LimitsConfig,
) -> sqlx::Result<Option<OtpRow>> {
    match next_step(conn, otp_id, from_step, limits).await? {
        Some(next) => Ok(Some(start(conn, next, why).await?)),
        None => Ok(None),
    }
}

/// Starts the next step of up to `limit` pending, unexpired OTPs whose step timed out,
/// each in its own transaction (its send is counted alone, so no two OTPs' counters are
/// held at once). Answers how many moved.
pub async fn advance_due(pool: &PgPool, limit: i64, limits: &LimitsConfig) -> sqlx::Result<usize> {
    let due = sqlx::query!(
        r#"select id, workflow_step as "step!" from otps
           where step_due_at <= now() and step_due_at is not null and status = 'pending' and expires_at > now()
           order by step_due_at limit $1"#,
        limit
    )
    .fetch_all(pool)
    .await?;
    let mut moved = 0;
    for otp in &due {
        // Another process may take it meanwhile: the step fence makes that a no-op here.
        let mut tx = pool.begin().await?;
        moved += usize::from(
            advance(&mut tx, otp.id, otp.step, Why::Timeout, limits)
                .await?
                .is_some(),
        );
        tx.commit().await?;
    }
    Ok(moved)
}
