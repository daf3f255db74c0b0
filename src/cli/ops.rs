//! Operator commands: replays and the dead-letter queue, with progress on stderr and a
//! summary table on stdout.

use std::io::Write;
use std::time::Instant;

use super::{DlqCommand, ReplayCommand};
use crate::ops::dlq::{DeadLetter, Dlq};
use crate::ops::replay::{self, Summary};
use crate::platform::config::Config;
use crate::platform::db;

/// Who ran a command, for the audit record.
pub(super) fn actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    format!("cli:{}", user.unwrap_or_else(|_| "unknown".into()))
}

/// A progress line (count, rate, ETA), rewritten in place.
fn progress(what: &'static str) -> impl FnMut(u64, u64) + Send {
    let started = Instant::now();
    move |done, total| {
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta = total.saturating_sub(done) as f64 / rate.max(0.001);
        eprint!("\r{what}: {done}/{total} ({rate:.0}/s, ETA {eta:.0} s)   ");
        let _ = std::io::stderr().flush();
    }
}

fn print_summary(what: &str, summary: &Summary, started: Instant) {
    eprintln!();
    println!("| {what} | matched | changed | new codes | dry run | seconds |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| | {} | {} | {} | {} | {:.1} |",
        summary.matched,
        summary.replayed,
        summary.new_codes,
        summary.dry_run,
        started.elapsed().as_secs_f64()
    );
}

pub async fn replay(config: &Config, command: ReplayCommand) -> anyhow::Result<()> {
    let pool = db::pool(&config.database)?;
    let started = Instant::now();
    let (what, summary) = match command {
        ReplayCommand::Deliveries(filter) => {
            let mut report = progress("replaying deliveries");
            let summary = replay::deliveries(&pool, &filter, &actor(), &mut report).await?;
            ("deliveries", summary)
        }
        ReplayCommand::Callbacks(filter) => {
            let mut report = progress("replaying callbacks");
            let summary = replay::callbacks(&pool, &filter, &actor(), &mut report).await?;
            ("callbacks", summary)
        }
    };
    print_summary(what, &summary, started);
    Ok(())
}

pub async fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let dlq = Dlq::new(config.amqp.clone());
    let started = Instant::now();
    match command {
        DlqCommand::List { limit } => {
            println!("| # | reason | app | rejected at | bytes | detail |");
            println!("|---|---|---|---|---|---|");
            for letter in dlq.list(limit).await? {
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    letter.position,
                    letter.reason.as_deref().unwrap_or("-"),
                    letter.app_id.as_deref().unwrap_or("-"),
                    letter.rejected_at.as_deref().unwrap_or("-"),
                    letter.body_bytes,
                    letter
                        .detail
                        .as_deref()
                        .unwrap_or("-")
                        .chars()
                        .take(80)
                        .collect::<String>(),
                );
            }
        }
        DlqCommand::Show { position } => {
            let letters = dlq.list(position).await?;
            let letter: &DeadLetter = letters
                .get(position.saturating_sub(1))
                .filter(|_| position >= 1)
                .ok_or_else(|| anyhow::anyhow!("the dead-letter queue has no message at position {position}"))?;
            println!("{}", serde_json::to_string_pretty(letter)?);
        }
        DlqCommand::Requeue(filter) => {
            let pool = db::pool(&config.database)?;
            let mut report = progress("requeueing dead letters (looked at / in queue)");
            let summary = dlq.requeue(&pool, &filter, &actor(), &mut report).await?;
            print_summary("requeued", &summary, started);
        }
        DlqCommand::Purge(filter) => {
            let pool = db::pool(&config.database)?;
            let mut report = progress("purging dead letters (looked at / in queue)");
            let summary = dlq.purge(&pool, &filter, &actor(), &mut report).await?;
            print_summary("purged", &summary, started);
        }
    }
    Ok(())
}
