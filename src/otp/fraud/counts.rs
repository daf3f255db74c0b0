//! Counting sends and verifications per prefix and country, and judging a batch on them.
//!
//! Counts are kept in buckets (`FraudConfig::bucket_seconds`) under keys like
//! `sent:prefix:+4477009`; a window is the sum of the buckets that started inside it. A
//! batch takes an advisory lock per prefix and country (in key order, so batches of several
//! processes cannot deadlock), then reads, so two batches to one prefix judge one after the
//! other on counts that include each other's sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{Executor, PgConnection, PgPool};
use time::OffsetDateTime;

use super::blocks::{self, Block, NewVerdict};
use super::{number_type, Finding, Scope, Screened, Send, Target};
use crate::platform::config::{FraudConfig, Mode, Rule};
use crate::platform::observability;

/// What the database says about one prefix or country.
#[derive(Debug, Clone)]
struct Signal {
    /// Sends in the velocity window.
    recent: i64,
    /// Sends old enough to have been verified, since the window start or the last block.
    settled: i64,
    verified: i64,
    /// Sends whose delivery failed for good since the same start: never verifiable, so not
    /// held against the destination (a provider outage is not pumping).
    failed: i64,
    /// The latest block, lifted or not.
    last_block: Option<Block>,
}

/// Judges the sends in order on the counts, records findings, blocks and the counts of the
/// sends let through; returns each send's refusing finding.
pub(super) async fn judge(
    conn: &mut PgConnection,
    config: &FraudConfig,
    sends: &[&Send<'_>],
) -> Result<Vec<Screened>, sqlx::Error> {
    let ms = config.timeout_ms;
    conn.execute(
        format!("savepoint fraud_guard; set local lock_timeout = {ms}; set local statement_timeout = {ms}").as_str(),
    )
    .await?;
    let judged = judge_counted(conn, config, sends).await;
    let end = if judged.is_ok() {
        "release savepoint fraud_guard"
    } else {
        "rollback to savepoint fraud_guard; release savepoint fraud_guard"
    };
    conn.execute(format!("{end}; set local lock_timeout to default; set local statement_timeout to default").as_str())
        .await?;
    // Said only once written: a judging rolled back decided nothing.
    let (answers, verdicts, blocks) = judged?;
    for verdict in &verdicts {
        metrics::counter!(observability::FRAUD_FINDINGS, "rule" => verdict.rule.as_str(), "mode" => verdict.mode.as_str())
            .increment(1);
        tracing::warn!(otp_id = %verdict.otp_id, app_id = verdict.app_id, rule = verdict.rule.as_str(),
            mode = verdict.mode.as_str(), target = verdict.target.as_str(), detail = verdict.detail.as_str(),
            "fraud guard finding");
    }
    for block in &blocks {
        metrics::counter!(observability::FRAUD_BLOCKS, "scope" => block.scope.as_str()).increment(1);
        tracing::warn!(scope = block.scope.as_str(), target = block.target, sends = block.sends,
            verified = block.verified, until = %block.ends_at, "fraud guard blocks a destination: its codes go unused");
    }
    Ok(answers)
}

/// Each send's refusing finding, the verdicts and the new blocks, all written.
type Judged = (Vec<Screened>, Vec<NewVerdict>, Vec<Block>);

async fn judge_counted(
    conn: &mut PgConnection,
    config: &FraudConfig,
    sends: &[&Send<'_>],
) -> Result<Judged, sqlx::Error> {
    let targets: Vec<Target> = sends
        .iter()
        .map(|s| Target::of(s.phone.as_str(), s.phone.region()))
        .collect();
    let keys: BTreeSet<(Scope, String)> = targets
        .iter()
        .flat_map(|t| t.scopes().into_iter().map(|(s, k)| (s, k.to_string())))
        .collect();
    lock(conn, &keys).await?;
    let mut signals = read(conn, config, &keys).await?;
    let now = OffsetDateTime::now_utc();
    let mut state = Batch {
        config,
        now,
        added: HashMap::new(),
        new_blocks: Vec::new(),
        verdicts: Vec::new(),
    };
    let mut answers = Vec::with_capacity(sends.len());
    for (send, target) in sends.iter().zip(&targets) {
        let refused = state.judge_one(send, target, &mut signals);
        if refused.is_none() {
            for (scope, key) in target.scopes() {
                *state.added.entry((scope, key.to_string())).or_default() += 1;
            }
        }
        answers.push(refused);
    }
    for block in &state.new_blocks {
        blocks::insert(conn, block).await?;
    }
    add_sends(conn, config, &state.added).await?;
    blocks::record_verdicts(conn, &state.verdicts).await?;
    Ok((answers, state.verdicts, state.new_blocks))
}

/// The judging of one batch: what it has added and decided so far.
struct Batch<'c> {
    config: &'c FraudConfig,
    now: OffsetDateTime,
    /// Sends let through in this batch, per scope and target.
    added: HashMap<(Scope, String), i64>,
    new_blocks: Vec<Block>,
    verdicts: Vec<NewVerdict>,
}

impl Batch<'_> {
    /// Each rule in turn; the first enforced finding refuses the send, shadow findings are
    /// recorded and the judging goes on.
    fn judge_one(
        &mut self,
        send: &Send<'_>,
        target: &Target,
        signals: &mut HashMap<(Scope, String), Signal>,
    ) -> Screened {
        let config = self.config;
        for rule in [Rule::NumberTypes, Rule::Conversion, Rule::PrefixVelocity] {
            let mode = config.mode(rule, send.modes);
            let finding = match rule {
                _ if mode == Mode::Off => None,
                Rule::NumberTypes => number_type(config, send.phone),
                Rule::Conversion => self.blocked(target, signals),
                Rule::PrefixVelocity => self.velocity(target, signals),
            };
            let Some(finding) = finding else {
                continue;
            };
            self.found(send, &finding, mode);
            if mode == Mode::Enforce {
                return Some(finding);
            }
        }
        None
    }

    fn found(&mut self, send: &Send<'_>, finding: &Finding, mode: Mode) {
        self.verdicts.push(NewVerdict::of(send, finding, mode));
    }

    /// A block in force on the prefix or the country, or one this send's counts call for.
    fn blocked(&mut self, target: &Target, signals: &mut HashMap<(Scope, String), Signal>) -> Option<Finding> {
        let config = &self.config.conversion;
        for (scope, key) in target.scopes() {
            let signal = signals.get_mut(&(scope, key.to_string()))?;
            if let Some(block) = signal.last_block.as_ref().filter(|b| b.in_force(self.now)) {
                return Some(block.finding());
            }
            // Sends of this batch count once settled; with no settling time, at once.
            let added = if config.settle_seconds == 0 {
                self.added.get(&(scope, key.to_string())).copied().unwrap_or(0)
            } else {
                0
            };
            let sends = (signal.settled - signal.failed).max(0) + added;
            let min_sends = match scope {
                Scope::Prefix => config.min_sends,
                Scope::Country => config.country_min_sends,
            };
            if sends < i64::from(min_sends) || signal.verified * 100 >= i64::from(config.min_percent) * sends {
                continue;
            }
            let block = Block::escalated(
                self.config,
                scope,
                key,
                (sends, signal.verified),
                signal.last_block.as_ref(),
                self.now,
            );
            let finding = block.finding();
            signal.last_block = Some(block.clone());
            self.new_blocks.push(block);
            return Some(finding);
        }
        None
    }

    fn velocity(&self, target: &Target, signals: &HashMap<(Scope, String), Signal>) -> Option<Finding> {
        let config = &self.config.prefix_velocity;
        let key = (Scope::Prefix, target.prefix.clone());
        let sends = signals.get(&key).map_or(0, |s| s.recent) + self.added.get(&key).copied().unwrap_or(0);
        (sends >= i64::from(config.max)).then(|| Finding {
            rule: Rule::PrefixVelocity,
            target: target.prefix.clone(),
            // Not the count itself: it sums every app's sends.
            detail: format!(
                "at most {} sends to one prefix in {} s (fraud.prefix_velocity)",
                config.max, config.window_seconds
            ),
        })
    }
}

fn count_key(kind: &str, scope: Scope, target: &str) -> String {
    format!("{kind}:{}:{target}", scope.as_str())
}

/// Holds each prefix and country for the rest of the caller's transaction, in key order.
async fn lock(conn: &mut PgConnection, keys: &BTreeSet<(Scope, String)>) -> Result<(), sqlx::Error> {
    let names: Vec<String> = keys.iter().map(|(s, k)| count_key("fraud", *s, k)).collect();
    sqlx::query!(
        "select count(pg_advisory_xact_lock(hashtextextended(k, 0)))
         from unnest($1::text[]) with ordinality as t(k, n)",
        &names
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

async fn read(
    conn: &mut PgConnection,
    config: &FraudConfig,
    keys: &BTreeSet<(Scope, String)>,
) -> Result<HashMap<(Scope, String), Signal>, sqlx::Error> {
    let (scopes, targets): (Vec<String>, Vec<String>) =
        keys.iter().map(|(s, k)| (s.as_str().to_string(), k.clone())).unzip();
    let conversion = &config.conversion;
    // A send is settled once the bucket it was counted in ended `settle_seconds` ago.
    let unsettled = match conversion.settle_seconds {
        0 => 0.0,
        settle => f64::from(settle + config.bucket_seconds()),
    };
    let rows = sqlx::query!(
        r#"select t.scope as "scope!", t.target as "target!",
                  last.id as "block_id?", last.rule as "block_rule?", last.sends as "block_sends?",
                  last.verified as "block_verified?", last.starts_at as "block_starts?",
                  last.ends_at as "block_ends?", last.lifted_at as "block_lifted?",
                  coalesce(recent.n, 0) as "recent!", coalesce(settled.n, 0) as "settled!",
                  coalesce(verified.n, 0) as "verified!", coalesce(failed.n, 0) as "failed!"
           from unnest($1::text[], $2::text[]) as t(scope, target)
           left join lateral (
               select id, rule, sends, verified, starts_at, ends_at, lifted_at from fraud_blocks b
               where b.scope = t.scope and b.target = t.target order by starts_at desc limit 1
           ) last on true
           left join lateral (
               select sum(n)::int8 as n from fraud_counts
               where key = 'sent:' || t.scope || ':' || t.target and bucket > now() - make_interval(secs => $3)
           ) recent on true
           left join lateral (
               select sum(n)::int8 as n from fraud_counts
               where key = 'sent:' || t.scope || ':' || t.target
                 and bucket > greatest(now() - make_interval(secs => $4), last.starts_at)
                 and bucket <= now() - make_interval(secs => $5)
           ) settled on true
           left join lateral (
               select sum(n)::int8 as n from fraud_counts
               where key = 'verified:' || t.scope || ':' || t.target
                 and bucket > greatest(now() - make_interval(secs => $4), last.starts_at)
           ) verified on true
           left join lateral (
               select sum(n)::int8 as n from fraud_counts
               where key = 'failed:' || t.scope || ':' || t.target
                 and bucket > greatest(now() - make_interval(secs => $4), last.starts_at)
           ) failed on true"#,
        &scopes,
        &targets,
        f64::from(config.prefix_velocity.window_seconds),
        f64::from(conversion.window_seconds),
        unsettled,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let scope = if row.scope == "country" {
                Scope::Country
            } else {
                Scope::Prefix
            };
            let last_block = match (row.block_id, row.block_starts, row.block_ends) {
                (Some(id), Some(starts_at), Some(ends_at)) => Some(Block {
                    id: Some(id),
                    rule: row.block_rule.unwrap_or_default(),
                    scope,
                    target: row.target.clone(),
                    sends: row.block_sends.unwrap_or_default().into(),
                    verified: row.block_verified.unwrap_or_default().into(),
                    starts_at,
                    ends_at,
                    lifted_at: row.block_lifted,
                    lifted_by: None,
                }),
                _ => None,
            };
            let signal = Signal {
                recent: row.recent,
                settled: row.settled,
                verified: row.verified,
                failed: row.failed,
                last_block,
            };
            ((scope, row.target), signal)
        })
        .collect())
}

async fn add_sends(
    conn: &mut PgConnection,
    config: &FraudConfig,
    added: &HashMap<(Scope, String), i64>,
) -> Result<(), sqlx::Error> {
    if added.is_empty() {
        return Ok(());
    }
    let sorted: BTreeMap<String, i32> = added
        .iter()
        .map(|((scope, key), n)| (count_key("sent", *scope, key), i32::try_from(*n).unwrap_or(i32::MAX)))
        .collect();
    add(conn, config, sorted).await
}

async fn add(conn: &mut PgConnection, config: &FraudConfig, counts: BTreeMap<String, i32>) -> Result<(), sqlx::Error> {
    let (keys, ns): (Vec<String>, Vec<i32>) = counts.into_iter().unzip();
    // The bucket by the database's clock, as the windows that read it.
    sqlx::query!(
        "insert into fraud_counts (key, bucket, n)
         select k, to_timestamp(floor(extract(epoch from now())::float8 / $2::float8) * $2::float8), n
         from unnest($1::text[], $3::int[]) as t(k, n)
         on conflict (key, bucket) do update set n = fraud_counts.n + excluded.n",
        &keys,
        f64::from(config.bucket_seconds()),
        &ns,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts an outcome (`verified`, `failed`) for a number's prefix and country, in the
/// background: the caller's request does not wait for it, and it commits without waiting
/// for the WAL flush. A count lost to a crash or a busy database only moves one
/// destination's conversion by one send.
pub fn count_outcome(pool: &PgPool, config: &FraudConfig, outcome: &'static str, e164: &str, country: Option<&str>) {
    if config.is_safe(e164) {
        return;
    }
    let target = Target::of(e164, country);
    let counts: BTreeMap<String, i32> = target
        .scopes()
        .into_iter()
        .map(|(scope, key)| (count_key(outcome, scope, key), 1))
        .collect();
    let (pool, config) = (pool.clone(), config.clone());
    tokio::spawn(async move {
        let counted = async {
            let mut tx = pool.begin().await?;
            let ms = config.timeout_ms;
            tx.execute(format!("set local synchronous_commit = off; set local statement_timeout = {ms}").as_str())
                .await?;
            add(&mut tx, &config, counts).await?;
            tx.commit().await
        };
        if let Err(error) = counted.await {
            tracing::warn!(%error, outcome, "fraud guard could not count an outcome");
        }
    });
}
