//! Fraud-guard commands: blocks (list, lift), verdicts, and an app's own rule modes.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;

use super::ops::actor;
use crate::domain::AppId;
use crate::otp::fraud::{self, Mode, Rule};
use crate::platform::config::Config;
use crate::platform::db;
use crate::tenancy::apps;

#[derive(Debug, Subcommand)]
pub enum FraudCommand {
    /// List blocks in force (or, with --all, the latest 500 of any state).
    Blocks {
        #[arg(long)]
        all: bool,
    },
    /// Lift a block in force: sends to its prefix or country go again, counted afresh.
    Lift { id: i64 },
    /// List what the rules decided, newest first (refused, or sent in shadow mode).
    Verdicts {
        #[arg(long)]
        app: Option<String>,
        /// enforce or shadow
        #[arg(long)]
        mode: Option<Mode>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// RULE=MODE, as `--fraud-mode conversion=shadow` takes it.
pub fn rule_mode(s: &str) -> Result<(Rule, Mode), String> {
    let (rule, mode) = s
        .split_once('=')
        .ok_or_else(|| format!("expected RULE=MODE, got `{s}`"))?;
    Ok((rule.trim().parse()?, mode.trim().parse()?))
}

pub async fn run(config: &Config, command: FraudCommand) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    match command {
        FraudCommand::Blocks { all } => {
            println!("| id | scope | target | sends | verified | from | until | lifted |");
            println!("|---|---|---|---|---|---|---|---|");
            for block in fraud::list_blocks(&pool, all, None).await? {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    block.id.unwrap_or_default(),
                    block.scope.as_str(),
                    block.target,
                    block.sends,
                    block.verified,
                    block.starts_at,
                    block.ends_at,
                    block
                        .lifted_at
                        .map(|at| format!("{at} by {}", block.lifted_by.unwrap_or_default()))
                        .unwrap_or_default()
                );
            }
        }
        FraudCommand::Lift { id } => {
            let block = fraud::lift(&pool, id, &actor())
                .await?
                .with_context(|| format!("no block {id} in force"))?;
            println!("lifted block {id}: {} {}", block.scope.as_str(), block.target);
        }
        FraudCommand::Verdicts { app, mode, limit } => {
            println!("| at | app | otp | rule | mode | target | detail |");
            println!("|---|---|---|---|---|---|---|");
            for v in fraud::list_verdicts(&pool, app.as_deref(), mode, limit.clamp(1, 1000)).await? {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    v.at,
                    v.app_id,
                    crate::domain::OtpId::from_uuid(v.otp_id),
                    v.rule,
                    v.mode,
                    v.target,
                    v.detail
                );
            }
        }
    }
    Ok(())
}

/// `apps set-fraud-mode`: the app's own mode of each named rule.
pub async fn set_modes(config: &Config, id: &str, modes: Vec<(Rule, Mode)>) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let id = AppId::parse(id).map_err(anyhow::Error::msg)?;
    let modes: BTreeMap<Rule, Mode> = modes.into_iter().collect();
    anyhow::ensure!(!modes.is_empty(), "name at least one RULE=MODE");
    anyhow::ensure!(
        apps::set_fraud_modes(&pool, &id, &modes, &actor()).await?,
        "no app `{id}`"
    );
    for (rule, mode) in modes {
        println!("{id}: {rule} = {}", mode.as_str());
    }
    println!(
        "(workers apply it within worker.app_cache_seconds = {} s)",
        config.worker.app_cache_seconds
    );
    Ok(())
}
