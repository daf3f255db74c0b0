//! Rate limits that hold across every process: fixed windows counted in PostgreSQL with
//! atomic upserts, so two workers can never both take the last slot.
//!
//! A send is counted in the transaction that inserts its OTP ([`count_sends`], called by
//! [`crate::otp::intake`]), so a send is counted exactly when its OTP exists. The verification
//! counters commit without waiting for the WAL flush: a crash may lose the last counts,
//! which loosens a limit for the rest of one window, and in exchange a counted request does
//! not pay a second disk flush besides its own transaction's.

use std::time::Duration;

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::platform::config::{DatabaseConfig, Limit, LimitsConfig};

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
            pool: crate::platform::db::relaxed_pool(config)?,
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

    /// Whether a send would still be within every send limit, without counting it.
    pub async fn peek_send(&self, limits: &LimitsConfig, send: &SendKey) -> Result<Verdict, sqlx::Error> {
        let conn = &mut *self.pool.acquire().await?;
        let mut decisions = Vec::new();
        for ((name, limit), key) in send_limits(limits).into_iter().zip(send.keys()) {
            let decision = peek(conn, &key, limit).await?;
            decisions.push((name, decision));
            if !decision.allowed {
                break;
            }
        }
        Ok(verdict(&decisions))
    }
}

/// What a send is counted against.
#[derive(Debug, Clone)]
pub struct SendKey {
    pub app: String,
    pub phone: String,
    pub region: Option<String>,
}

impl SendKey {
    /// The counter key of each send limit, in the order of [`send_limits`].
    fn keys(&self) -> [String; 4] {
        let (app, region) = (&self.app, self.region.as_deref().unwrap_or("unknown"));
        [
            format!("send:phone:{app}:{}", self.phone),
            format!("send:phone:{}", self.phone),
            send_app_key(app),
            format!("send:country:{app}:{region}"),
        ]
    }
}

/// (name, limit) of each send limit, in the order they are counted.
fn send_limits(limits: &LimitsConfig) -> [(&'static str, Limit); 4] {
    [
        ("send_per_phone", limits.send_per_phone),
        ("send_per_phone_all_apps", limits.send_per_phone_all_apps),
        ("send_per_app", limits.send_per_app),
        ("send_per_country", limits.send_per_country),
    ]
}

/// `Ok(tightest)` when every send limit allows the send (the tightest: fewest hits left);
/// `Err((limit name, decision))` for the first exceeded.
pub type Verdict = Result<Option<Decision>, (&'static str, Decision)>;

fn verdict(decisions: &[(&'static str, Decision)]) -> Verdict {
    if let Some((name, refused)) = decisions.iter().find(|(_, d)| !d.allowed) {
        return Err((name, *refused));
    }
    Ok(decisions.iter().map(|(_, d)| *d).min_by_key(|d| d.remaining))
}

/// Counts each send against every send limit inside the caller's transaction: per app and
/// phone number first, then per phone number across apps, then per app, then per app and
/// country, each only while the ones before
/// allow it, so a send refused for its phone number does not use up the app's allowance.
/// One statement per limit over the sends the limits before it allowed, so a batch counts
/// exactly what one-by-one counting in slice order would. Each statement takes its
/// counters' locks in key order, and every batch takes the phone counters before the app's
/// and the app's before the country's, so the counting of several processes cannot
/// deadlock. The counters stay locked until the caller commits.
pub async fn count_sends(
    conn: &mut PgConnection,
    limits: &LimitsConfig,
    sends: &[SendKey],
) -> Result<Vec<Verdict>, sqlx::Error> {
    let keys: Vec<[String; 4]> = sends.iter().map(SendKey::keys).collect();
    let mut decisions: Vec<Vec<(&'static str, Decision)>> = vec![Vec::new(); sends.len()];
    for (stage, (name, limit)) in send_limits(limits).into_iter().enumerate() {
        // Only the sends every earlier limit allowed are counted against this one.
        let open: Vec<usize> = (0..sends.len())
            .filter(|&i| decisions[i].last().is_none_or(|(_, d)| d.allowed))
            .collect();
        if open.is_empty() {
            break;
        }
        let stage_keys: Vec<&str> = open.iter().map(|&i| keys[i][stage].as_str()).collect();
        for (&i, decision) in open.iter().zip(hit_many(conn, &stage_keys, limit).await?) {
            decisions[i].push((name, decision));
        }
    }
    Ok(decisions.iter().map(|d| verdict(d)).collect())
}

/// Counts one hit per entry of `keys` (a key may repeat) in one upsert, and gives each hit
/// the decision it would have had counted alone, in order.
async fn hit_many(conn: &mut PgConnection, keys: &[&str], limit: Limit) -> Result<Vec<Decision>, sqlx::Error> {
    let start = window_start(limit, OffsetDateTime::now_utc());
    // Sorted, so concurrent batches lock shared counters in the same order.
    let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    let (names, adds): (Vec<String>, Vec<i32>) = counts.iter().map(|(k, n)| (k.to_string(), *n)).unzip();
    let totals = sqlx::query!(
        "insert into rate_limit_windows (key, window_start, hits)
         select t.key, $2, t.n from unnest($1::text[], $3::int[]) as t(key, n)
         on conflict (key, window_start) do update set hits = rate_limit_windows.hits + excluded.hits
         returning key, hits",
        &names,
        start,
        &adds,
    )
    .fetch_all(conn)
    .await?;
    // Hits before this batch, per key; each hit then takes the next number.
    let mut counted: HashMap<String, i32> = totals
        .into_iter()
        .map(|row| {
            let before = row.hits - counts.get(row.key.as_str()).copied().unwrap_or(0);
            (row.key, before)
        })
        .collect();
    Ok(keys
        .iter()
        .map(|key| {
            let hits = counted.entry(key.to_string()).or_default();
            *hits += 1;
            decision(limit, start, *hits)
        })
        .collect())
}

/// Counts one hit against `key` on the caller's connection (inside its transaction, where
/// the counted thing is written) and says whether it is within the limit.
pub async fn hit(conn: &mut PgConnection, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
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

/// Holds `key` for the rest of the caller's transaction (an advisory lock), so a
/// [`peek`] followed by a [`hit`] or [`clear`] decides on a count nobody else changes
/// meanwhile.
pub async fn lock(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets every window of `key`, inside the caller's transaction.
pub async fn clear(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from rate_limit_windows where key = $1", key)
        .execute(conn)
        .await?;
    Ok(())
}

/// The usage of `key` in the current window, without counting a hit, on the caller's
/// connection.
pub async fn peek(conn: &mut PgConnection, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
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
