//! The SMS-pumping guard: rules judged before any provider call, each in `enforce`,
//! `shadow` or `off` mode (`[fraud]`, overridden per app).
//!
//! - `number_types`: refuses kinds of line from the numbering plan (premium rate, ...).
//! - `prefix_velocity`: caps sends per destination prefix (the number without its last four
//!   digits) in a sliding window, across apps.
//! - `conversion`: blocks a prefix or a country whose codes go unused (few verifications for
//!   many sends), for a while that doubles on repeat; operators list and lift blocks.
//!
//! The worker screens each batch of new OTPs inside the transaction that inserts them
//! ([`screen`]), so a send is counted exactly when its OTP exists, and a refused OTP ends
//! `rejected` (reason `fraud_suspected`) before anything could send it. Counts live in
//! PostgreSQL in short buckets, so they hold across processes and a window slides. The
//! API's send asks the rules that need no counting ([`Guard::precheck`]) to refuse early.
//! A rule that cannot read its counts in time lets the send through with a warning: the
//! send limits still hold, and a guard must not become the outage.

mod blocks;
mod counts;

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::PhoneNumber;
pub use crate::platform::config::{FraudConfig, Mode, Rule};
use crate::platform::observability;

pub use blocks::{lift, list_blocks, list_verdicts, Block, Verdict};
pub use counts::count_outcome;

/// Where a send goes, as the counts and blocks name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The number without its last four digits: `+4477009`.
    pub prefix: String,
    /// ISO 3166-1 alpha-2, when the number has a country.
    pub country: Option<String>,
}

impl Target {
    pub fn of(e164: &str, country: Option<&str>) -> Self {
        let cut = e164.len().saturating_sub(4).max(2);
        Self {
            prefix: e164[..cut.min(e164.len())].to_string(),
            country: country.map(str::to_string),
        }
    }

    /// (scope, target) of each thing a send is counted against.
    fn scopes(&self) -> Vec<(Scope, &str)> {
        let mut scopes = vec![(Scope::Prefix, self.prefix.as_str())];
        scopes.extend(self.country.as_deref().map(|c| (Scope::Country, c)));
        scopes
    }
}

/// What a count or a block is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Prefix,
    Country,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Prefix => "prefix",
            Scope::Country => "country",
        }
    }
}

/// One new OTP as the guard sees it.
#[derive(Debug, Clone)]
pub struct Send<'a> {
    pub otp_id: Uuid,
    pub app_id: &'a str,
    pub phone: &'a PhoneNumber,
    pub modes: &'a BTreeMap<Rule, Mode>,
}

/// Why a rule judged a send risky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// What it is about: a kind of line, a prefix or a country.
    pub target: String,
    pub detail: String,
}

impl Finding {
    /// What refused the send, for people: `fraud_suspected: number_types (premium_rate): ...`.
    pub fn message(&self) -> String {
        format!("fraud_suspected: {} ({}): {}", self.rule, self.target, self.detail)
    }

    /// The `error` of the OTP's `otp.rejected` event.
    pub fn error(&self) -> serde_json::Value {
        serde_json::json!({
            "reason": "fraud_suspected",
            "rule": self.rule.as_str(),
            "message": self.message(),
        })
    }
}

/// The guard's answer for one send: the finding that refuses it, if any.
pub type Screened = Option<Finding>;

/// The rules outside a transaction: the API's early refusal.
#[derive(Debug, Clone)]
pub struct Guard {
    pool: PgPool,
    config: FraudConfig,
}

impl Guard {
    pub fn new(pool: PgPool, config: FraudConfig) -> Self {
        Self { pool, config }
    }

    /// The finding an enforced rule refuses this send for without counting it (its kind of
    /// line, an active block), so the API can answer at once. The worker's [`screen`]
    /// judges again with the counts.
    #[tracing::instrument(skip_all, fields(otp_id = %send.otp_id, app_id = send.app_id))]
    pub async fn precheck(&self, send: &Send<'_>) -> Option<Finding> {
        let config = &self.config;
        let (phone, modes) = (send.phone, send.modes);
        if config.is_safe(phone.as_str()) {
            return None;
        }
        let mut finding = kind_only(config, send);
        if finding.is_none() && config.mode(Rule::Conversion, modes) == Mode::Enforce {
            let target = Target::of(phone.as_str(), phone.region());
            match blocks::active(&self.pool, &target).await {
                Ok(block) => finding = block.map(|b| b.finding()),
                Err(error) => unavailable(&error),
            }
        }
        let finding = finding?;
        // Counted, not recorded row by row: a bot hammering a blocked prefix must not
        // become a write per request. The worker records what it refuses.
        metrics::counter!(observability::FRAUD_FINDINGS, "rule" => finding.rule.as_str(), "mode" => "enforce")
            .increment(1);
        tracing::debug!(
            rule = finding.rule.as_str(),
            target = finding.target.as_str(),
            "send refused by the fraud guard"
        );
        Some(finding)
    }
}

/// The `number_types` finding for `phone`, if its kind of line is refused.
fn number_type(config: &FraudConfig, phone: &PhoneNumber) -> Option<Finding> {
    let kind = phone.kind();
    config.refused_kinds().contains(&kind).then(|| Finding {
        rule: Rule::NumberTypes,
        target: kind.as_str().to_string(),
        detail: format!("{} numbers are refused (fraud.number_types.refuse)", kind.as_str()),
    })
}

/// Judges each send in order, inside the caller's transaction, and counts the sends let
/// through. One answer per send: the enforced finding that refuses it, or `None`. Shadow
/// findings are recorded, not returned. Fails open: when the counts cannot be read or
/// written in `fraud.timeout_ms`, the sends are judged on their kind of line alone.
pub async fn screen(conn: &mut PgConnection, config: &FraudConfig, sends: &[Send<'_>]) -> Vec<Screened> {
    // Sends of apps with both counting rules off are neither counted nor held: they are
    // judged on their kind of line alone, and cost no lock.
    let safe: Vec<bool> = sends.iter().map(|s| config.is_safe(s.phone.as_str())).collect();
    let counted: Vec<bool> = sends
        .iter()
        .zip(&safe)
        .map(|(send, safe)| {
            !safe
                && [Rule::PrefixVelocity, Rule::Conversion]
                    .iter()
                    .any(|rule| config.mode(*rule, send.modes) != Mode::Off)
        })
        .collect();
    let judged: Vec<&Send> = sends
        .iter()
        .zip(&counted)
        .filter(|(_, c)| **c)
        .map(|(s, _)| s)
        .collect();
    let mut outcome = if judged.is_empty() {
        Vec::new()
    } else {
        counts::judge(conn, config, &judged).await.unwrap_or_else(|error| {
            unavailable(&error);
            judged.iter().map(|send| kind_only(config, send)).collect()
        })
    }
    .into_iter();
    sends
        .iter()
        .zip(counted.iter().zip(&safe))
        .map(|(send, (counted, safe))| match (counted, safe) {
            (true, _) => outcome.next().flatten(),
            (false, true) => None,
            (false, false) => kind_only(config, send),
        })
        .collect()
}

/// The `number_types` rule alone, where it enforces.
fn kind_only(config: &FraudConfig, send: &Send) -> Screened {
    let finding = number_type(config, send.phone)?;
    (config.mode(Rule::NumberTypes, send.modes) == Mode::Enforce).then_some(finding)
}

fn unavailable(error: &sqlx::Error) {
    metrics::counter!(observability::FRAUD_UNAVAILABLE).increment(1);
    tracing::warn!(%error, "fraud guard could not read its counts; the send goes on unjudged");
}
