//! Blocks (a prefix or country refused for a while) and verdicts (what a rule decided about
//! a send): written by the judging, read and lifted by operators.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Finding, Scope, Target};
use crate::platform::config::{FraudConfig, Mode, Rule};

/// A prefix or country refused by the `conversion` rule until `ends_at`, unless lifted.
#[derive(Debug, Clone)]
pub struct Block {
    /// `None` until stored.
    pub id: Option<i64>,
    pub rule: String,
    pub scope: Scope,
    pub target: String,
    /// The counts that called for it.
    pub sends: i64,
    pub verified: i64,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub lifted_at: Option<OffsetDateTime>,
    pub lifted_by: Option<String>,
}

impl Block {
    /// A new block of `target`: `block_seconds` long, or twice the last one when that
    /// ended less than `max_block_seconds` ago and was not lifted, up to `max_block_seconds`.
    pub(super) fn escalated(
        config: &FraudConfig,
        scope: Scope,
        target: &str,
        (sends, verified): (i64, i64),
        last: Option<&Block>,
        now: OffsetDateTime,
    ) -> Self {
        let config = &config.conversion;
        let max = time::Duration::seconds(config.max_block_seconds.into());
        let base = time::Duration::seconds(config.block_seconds.into());
        let length = match last {
            // Never shorter than a first block, should `block_seconds` have grown since.
            Some(last) if last.lifted_at.is_none() && now - last.ends_at < max => {
                std::cmp::min((last.ends_at - last.starts_at) * 2, max).max(base)
            }
            _ => base,
        };
        Self {
            id: None,
            rule: Rule::Conversion.as_str().to_string(),
            scope,
            target: target.to_string(),
            sends,
            verified,
            starts_at: now,
            ends_at: now + length,
            lifted_at: None,
            lifted_by: None,
        }
    }

    pub fn in_force(&self, now: OffsetDateTime) -> bool {
        self.lifted_at.is_none() && self.ends_at > now
    }

    /// What apps are told: neither the counts (they sum every app's traffic) nor the end
    /// (a bot would wait for it); operators read both from the block.
    pub(super) fn finding(&self) -> Finding {
        Finding {
            rule: Rule::Conversion,
            target: self.target.clone(),
            detail: format!(
                "{} {} is blocked: too few of its codes are used (fraud.conversion)",
                self.scope.as_str(),
                self.target,
            ),
        }
    }
}

pub(super) async fn insert(conn: &mut PgConnection, block: &Block) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into fraud_blocks (rule, scope, target, sends, verified, starts_at, ends_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
        block.rule,
        block.scope.as_str(),
        block.target,
        i32::try_from(block.sends).unwrap_or(i32::MAX),
        i32::try_from(block.verified).unwrap_or(i32::MAX),
        block.starts_at,
        block.ends_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The block in force on the number's prefix or country, if any.
pub(super) async fn active(pool: &PgPool, target: &Target) -> Result<Option<Block>, sqlx::Error> {
    let blocks = list_blocks(pool, false, Some(target)).await?;
    Ok(blocks.into_iter().next())
}

struct BlockRow {
    id: i64,
    rule: String,
    scope: String,
    target: String,
    sends: i32,
    verified: i32,
    starts_at: OffsetDateTime,
    ends_at: OffsetDateTime,
    lifted_at: Option<OffsetDateTime>,
    lifted_by: Option<String>,
}

impl From<BlockRow> for Block {
    fn from(row: BlockRow) -> Self {
        Block {
            id: Some(row.id),
            rule: row.rule,
            scope: if row.scope == "country" {
                Scope::Country
            } else {
                Scope::Prefix
            },
            target: row.target,
            sends: row.sends.into(),
            verified: row.verified.into(),
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            lifted_at: row.lifted_at,
            lifted_by: row.lifted_by,
        }
    }
}

/// Blocks, newest first: those in force, or (`all`) the last 500 of every kind; only those
/// on `target`'s prefix or country when given.
pub async fn list_blocks(pool: &PgPool, all: bool, target: Option<&Target>) -> Result<Vec<Block>, sqlx::Error> {
    let rows = sqlx::query_as!(
        BlockRow,
        "select id, rule, scope, target, sends, verified, starts_at, ends_at, lifted_at, lifted_by
         from fraud_blocks
         where ($1 or (lifted_at is null and ends_at > now()))
           and ($2::text is null or (scope = 'prefix' and target = $2) or (scope = 'country' and target = $3))
         order by starts_at desc, id desc
         limit 500",
        all,
        target.map(|t| t.prefix.as_str()),
        target.and_then(|t| t.country.as_deref()),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Block::from).collect())
}

/// Lifts a block in force, recorded in the operators' audit log: sends to its target go
/// again, and its counts start afresh (the judging reads only sends after the block
/// began). `None`: no such block in force.
#[tracing::instrument(skip_all, fields(block_id = id))]
pub async fn lift(pool: &PgPool, id: i64, by: &str) -> Result<Option<Block>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        BlockRow,
        "update fraud_blocks set lifted_at = now(), lifted_by = $2
         where id = $1 and lifted_at is null and ends_at > now()
         returning id, rule, scope, target, sends, verified, starts_at, ends_at, lifted_at, lifted_by",
        id,
        by
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    sqlx::query!(
        "insert into operator_actions (action, actor, filters, dry_run, matched, changed, finished_at)
         values ('lift-fraud-block', $1, $2, false, 1, 1, now())",
        by,
        serde_json::json!({"block": id, "scope": row.scope, "target": row.target}),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(scope = row.scope, target = row.target, by, "fraud block lifted");
    Ok(Some(Block::from(row)))
}

/// A finding about one send, to record.
#[derive(Debug, Clone)]
pub(super) struct NewVerdict {
    pub app_id: String,
    pub otp_id: Uuid,
    pub rule: Rule,
    pub mode: Mode,
    pub target: String,
    pub detail: String,
}

impl NewVerdict {
    pub(super) fn of(send: &super::Send<'_>, finding: &Finding, mode: Mode) -> Self {
        Self {
            app_id: send.app_id.to_string(),
            otp_id: send.otp_id,
            rule: finding.rule,
            mode,
            target: finding.target.clone(),
            detail: finding.detail.clone(),
        }
    }
}

pub(super) async fn record_verdicts(conn: &mut PgConnection, verdicts: &[NewVerdict]) -> Result<(), sqlx::Error> {
    if verdicts.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewVerdict) -> String| verdicts.iter().map(f).collect::<Vec<_>>();
    let otps: Vec<Uuid> = verdicts.iter().map(|v| v.otp_id).collect();
    sqlx::query!(
        "insert into fraud_verdicts (app_id, otp_id, rule, mode, target, detail)
         select * from unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])",
        &column(|v| v.app_id.clone()),
        &otps,
        &column(|v| v.rule.as_str().to_string()),
        &column(|v| v.mode.as_str().to_string()),
        &column(|v| v.target.clone()),
        &column(|v| v.detail.clone()),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a rule decided about one send.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub id: i64,
    pub at: OffsetDateTime,
    pub app_id: String,
    pub otp_id: Uuid,
    pub rule: String,
    /// `enforce`: refused; `shadow`: sent, would have been refused.
    pub mode: String,
    pub target: String,
    pub detail: String,
}

/// Verdicts newest first, at most `limit`, optionally of one app or one mode.
pub async fn list_verdicts(
    pool: &PgPool,
    app: Option<&str>,
    mode: Option<Mode>,
    limit: i64,
) -> Result<Vec<Verdict>, sqlx::Error> {
    sqlx::query_as!(
        Verdict,
        "select id, at, app_id, otp_id, rule, mode, target, detail from fraud_verdicts
         where ($1::text is null or app_id = $1) and ($2::text is null or mode = $2)
         order by at desc, id desc limit $3",
        app,
        mode.map(|m| m.as_str()),
        limit
    )
    .fetch_all(pool)
    .await
}
