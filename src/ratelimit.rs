//! Rate limits that hold across every process: fixed windows counted in PostgreSQL with one
//! atomic upsert per hit, so two workers can never both take the last slot.
//!
//! The counters commit without waiting for the WAL flush: a crash may lose the last counts,
//! which loosens a limit for the rest of one window, and in exchange a counted request does
//! not pay a second disk flush besides its own transaction's.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::config::{DatabaseConfig, Limit, LimitsConfig};

/// The answer for one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When the current window ends.
    pub reset: OffsetDateTime,
}

impl Decision {
    pub fn retry_after(&self) -> Duration {
        Duration::try_from(self.reset - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
    }
}

fn window_start(limit: Limit, now: OffsetDateTime) -> OffsetDateTime {
    let window = i64::from(limit.window_seconds);
    let start = now.unix_timestamp().div_euclid(window) * window;
    OffsetDateTime::from_unix_timestamp(start).unwrap_or(now)
}

/// The counters, on their own connections (`db::relaxed_pool`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Counters {
    pool: PgPool,
}

impl Counters {
    pub fn new(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        Ok(Self {
            pool: crate::db::relaxed_pool(config)?,
        })
    }

    /// Counts one hit against `key` and says whether it is within the limit.
    pub async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
        hit(&mut *self.pool.acquire().await?, key, limit).await
    }

    /// The usage of `key` in the current window, without counting a hit.
    pub async fn peek(&self, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
        peek(&mut *self.pool.acquire().await?, key, limit).await
    }

    /// Counts one send against every send limit; see [`check_send`].
    pub async fn hit_send(&self, limits: &LimitsConfig, app: &str, phone: &str, region: Option<&str>) -> SendVerdict {
        check_send(&mut *self.pool.acquire().await?, limits, app, phone, region, true).await
    }

    /// Whether a send would still be within every send limit, without counting it.
    pub async fn peek_send(&self, limits: &LimitsConfig, app: &str, phone: &str, region: Option<&str>) -> SendVerdict {
        check_send(&mut *self.pool.acquire().await?, limits, app, phone, region, false).await
    }
}

/// Counts one hit against `key` and says whether it is within the limit.
async fn hit(conn: &mut PgConnection, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
    let start = window_start(limit, OffsetDateTime::now_utc());
    let hits = sqlx::query_scalar!(
        "insert into rate_limit_windows (key, window_start, hits) values ($1, $2, 1)
         on conflict (key, window_start) do update set hits = rate_limit_windows.hits + 1
         returning hits",
        key,
        start,
    )
    .fetch_one(conn)
    .await?;
    Ok(decision(limit, start, hits))
}

async fn peek(conn: &mut PgConnection, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
    let start = window_start(limit, OffsetDateTime::now_utc());
    let hits = sqlx::query_scalar!(
        "select hits from rate_limit_windows where key = $1 and window_start = $2",
        key,
        start
    )
    .fetch_optional(conn)
    .await?
    .unwrap_or(0);
    Ok(Decision {
        allowed: hits < limit.max as i32,
        ..decision(limit, start, hits)
    })
}

fn decision(limit: Limit, start: OffsetDateTime, hits: i32) -> Decision {
    let hits = u32::try_from(hits).unwrap_or(u32::MAX);
    Decision {
        allowed: hits <= limit.max,
        limit: limit.max,
        remaining: limit.max.saturating_sub(hits),
        reset: start + time::Duration::seconds(limit.window_seconds.into()),
    }
}

/// The counter of an app's sends.
pub fn send_app_key(app: &str) -> String {
    format!("send:app:{app}")
}

/// The counter of an app's verifications.
pub fn verify_app_key(app: &str) -> String {
    format!("verify:app:{app}")
}

/// `Ok(tightest)` when every send limit allows the send (the tightest: fewest hits left);
/// `Err((limit name, decision))` for the first exceeded.
pub type SendVerdict = Result<Result<Option<Decision>, (&'static str, Decision)>, sqlx::Error>;

/// Checks a send against every send limit: per phone number, per app, per app and country;
/// with `count`, the send is counted.
async fn check_send(
    conn: &mut PgConnection,
    limits: &LimitsConfig,
    app: &str,
    phone: &str,
    region: Option<&str>,
    count: bool,
) -> SendVerdict {
    let checks = [
        (
            format!("send:phone:{app}:{phone}"),
            "send_per_phone",
            limits.send_per_phone,
        ),
        (send_app_key(app), "send_per_app", limits.send_per_app),
        (
            format!("send:country:{app}:{}", region.unwrap_or("unknown")),
            "send_per_country",
            limits.send_per_country,
        ),
    ];
    let mut tightest: Option<Decision> = None;
    for (key, name, limit) in checks {
        let decision = if count {
            hit(conn, &key, limit).await?
        } else {
            peek(conn, &key, limit).await?
        };
        if !decision.allowed {
            return Ok(Err((name, decision)));
        }
        if tightest.is_none_or(|t| decision.remaining < t.remaining) {
            tightest = Some(decision);
        }
    }
    Ok(Ok(tightest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_multiples_of_their_length() {
        let limit = Limit {
            max: 5,
            window_seconds: 600,
        };
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_123).expect("time");
        assert_eq!(window_start(limit, now).unix_timestamp(), 1_800_000_000);
        let d = decision(limit, window_start(limit, now), 6);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset.unix_timestamp(), 1_800_000_600);
    }
}
