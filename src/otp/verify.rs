//! Verification (DESIGN, "OTP lifecycle"): the row is locked for the length of one short
//! transaction, so concurrent checks of one OTP run one after another. That makes a code
//! single-use (of 100 concurrent correct checks exactly one succeeds) and the attempt count
//! exact. The PIN is re-derived and compared in constant time; a correct code on the last
//! allowed attempt succeeds. Every outcome writes its event in the same transaction.
//!
//! Attempts are capped per OTP, and wrong codes also per app and phone number across OTPs
//! (`limits.verify_failures_per_phone`), so asking for new OTPs does not buy new guesses: once
//! the count is reached, checks for that number are refused without looking at the code until
//! the window ends. A correct code clears the count.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::callbacks::outbox::{self, EventType, Notifier, OtpRow};
use crate::domain::OtpId;
use crate::message::pin::{self, PinInput, PinKeys, PinLength, PinType};
use crate::otp::fraud;
use crate::otp::ratelimit::{self, Decision};
use crate::platform::config::Config;
use crate::platform::observability;

/// How a verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    InvalidCode {
        remaining: i32,
    },
    /// The last allowed attempt was used (now or before).
    Exhausted,
    Expired,
    /// Verified, cancelled, failed or rejected: nothing to verify.
    NotPending(String),
    /// The phone number has used up its failed verifications; no attempt was counted.
    Locked(Decision),
}

impl Verification {
    fn outcome(&self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::InvalidCode { .. } => "invalid_code",
            Verification::Exhausted => "exhausted",
            Verification::Expired => "expired",
            Verification::NotPending(_) => "not_pending",
            Verification::Locked(_) => "locked",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the OTP was derived with PIN key `{0}`, which is no longer configured")]
    UnknownKey(String),
    #[error("stored OTP is unreadable: {0}")]
    Corrupt(&'static str),
}

/// Codes longer than this are wrong without looking (PINs have at most 10 characters).
const MAX_CODE_LEN: usize = 32;

/// Checks `code` against OTP `otp_id`, visible to `app` (`None`: any app). `Ok(None)`: no such OTP.
#[tracing::instrument(skip_all, fields(otp_id = %OtpId::from_uuid(otp_id), app_id = tracing::field::Empty,
    request_id = tracing::field::Empty))]
pub async fn verify(
    pool: &PgPool,
    keys: &PinKeys,
    notifier: &Notifier,
    otp_id: Uuid,
    app: Option<&str>,
    code: &str,
    config: &Config,
) -> Result<Option<Verification>, VerifyError> {
    let failure_limit = config.limits.verify_failures_per_phone;
    // Verifications commit side by side; the notifier wakes the dispatchers after.
    let mut tx = pool.begin().await?;
    outbox::without_notify(&mut tx).await?;
    let Some(otp) = sqlx::query!(
        "select app_id, request_id, phone_number, status, expires_at, attempts, max_attempts, pin_type, pin_length,
                pin_key_id, pin_salt, generation, country
         from otps where id = $1 and ($2::text is null or app_id = $2)
         for update",
        otp_id,
        app
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let span = tracing::Span::current();
    span.record("app_id", otp.app_id.as_str());
    span.record("request_id", otp.request_id.as_str());
    let expired = OffsetDateTime::now_utc() >= otp.expires_at;
    // Which outcomes write an event: a pending OTP's, unless its attempts were used up or
    // the check was refused unread (`Locked`, below).
    let judged = otp.status == "pending" && (expired || otp.attempts < i32::from(otp.max_attempts));
    let verification = match otp.status.as_str() {
        "pending" if expired => {
            set_status(&mut tx, otp_id, "expired").await?;
            outbox::record_for_otp(&mut tx, otp_id, EventType::Expired, None).await?;
            Verification::Expired
        }
        "pending" if otp.attempts >= i32::from(otp.max_attempts) => Verification::Exhausted,
        "pending" => {
            // Checks of the number's other OTPs wait here, so concurrent wrong codes cannot
            // all pass on the same count.
            let failures = failures_key(&otp.app_id, &otp.phone_number);
            ratelimit::lock(&mut tx, &failures).await?;
            let count = ratelimit::peek(&mut tx, &failures, failure_limit).await?;
            if !count.allowed {
                Verification::Locked(count)
            } else {
                let key = keys
                    .get(&otp.pin_key_id)
                    .ok_or_else(|| VerifyError::UnknownKey(otp.pin_key_id.clone()))?;
                let pin_type = PinType::parse(&otp.pin_type).map_err(VerifyError::Corrupt)?;
                let length = PinLength::parse(otp.pin_length.into()).map_err(VerifyError::Corrupt)?;
                let input = PinInput {
                    app_id: &otp.app_id,
                    salt: &otp.pin_salt,
                    otp: OtpId::from_uuid(otp_id),
                    generation: otp.generation as u32,
                };
                let pin = pin::derive(key, &input, pin_type, length);
                let correct = code.len() <= MAX_CODE_LEN && pin.matches(code);
                let attempts = otp.attempts + 1;
                let remaining = i32::from(otp.max_attempts) - attempts;
                if correct {
                    ratelimit::clear(&mut tx, &failures).await?;
                    let otp = record_attempt(&mut tx, otp_id, attempts, "verified").await?;
                    outbox::record(&mut tx, EventType::Verified, &otp.into_snapshot(None)).await?;
                    Verification::Verified
                } else {
                    ratelimit::hit(&mut tx, &failures, failure_limit).await?;
                    if remaining > 0 {
                        let otp = record_attempt(&mut tx, otp_id, attempts, "pending").await?;
                        outbox::record(&mut tx, EventType::VerificationFailed, &otp.into_snapshot(None)).await?;
                        Verification::InvalidCode { remaining }
                    } else {
                        let otp = record_attempt(&mut tx, otp_id, attempts, "max_attempts_reached")
                            .await?
                            .into_snapshot(None);
                        outbox::record(&mut tx, EventType::VerificationFailed, &otp).await?;
                        outbox::record(&mut tx, EventType::MaxAttemptsReached, &otp).await?;
                        Verification::Exhausted
                    }
                }
            }
        }
        "expired" => Verification::Expired,
        "max_attempts_reached" => Verification::Exhausted,
        other => Verification::NotPending(other.to_string()),
    };
    let writes_event = judged && !matches!(verification, Verification::Locked(_));
    sqlx::query!(
        "insert into verification_attempts (otp_id, outcome) values ($1, $2)",
        otp_id,
        verification.outcome()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if writes_event {
        notifier.poke();
    }
    if verification == Verification::Verified {
        fraud::count_outcome(
            pool,
            &config.fraud,
            "verified",
            &otp.phone_number,
            otp.country.as_deref(),
        );
    }
    tracing::info!(outcome = verification.outcome(), "code checked");
    let app = app.map(str::to_string).unwrap_or_else(|| "operator".into());
    metrics::counter!(observability::VERIFICATIONS, "app" => app, "outcome" => verification.outcome()).increment(1);
    Ok(Some(verification))
}

/// The counter of wrong codes for one phone number of one app.
fn failures_key(app: &str, phone: &str) -> String {
    format!("verify:failures:{app}:{phone}")
}

/// Counts an attempt and sets the status it leads to; returns the row for its event.
async fn record_attempt(
    conn: &mut sqlx::PgConnection,
    otp_id: Uuid,
    attempts: i32,
    status: &str,
) -> sqlx::Result<OtpRow> {
    sqlx::query_as!(
        OtpRow,
        "update otps set attempts = $2, status = $3, updated_at = now(),
                status_changed_at = case when status = $3 then status_changed_at else now() end,
                verified_at = case when $3 = 'verified' then now() else verified_at end
         where id = $1
         returning id, app_id, request_id, phone_number, channel, status, delivery, locale, parts,
                   attempts, max_attempts, expires_at, metadata, callback_url, workflow_step",
        otp_id,
        attempts,
        status
    )
    .fetch_one(conn)
    .await
}

async fn set_status(conn: &mut sqlx::PgConnection, otp_id: Uuid, status: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "update otps set status = $2, status_changed_at = now(), updated_at = now() where id = $1",
        otp_id,
        status
    )
    .execute(conn)
    .await?;
    Ok(())
}
