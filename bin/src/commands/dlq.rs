//! `dlq list | replay | purge`: the dead-letter queue. Listing is read-only and safe while
//! the reader runs; replay and purge rewrite the dead-letter wal (one pass at a time).
//!
//! The safety rails (probe F26): no command creates a missing queue directory (a mistyped
//! `--queue-dir` is an error, not an empty queue); `purge --all` asks on a terminal and
//! needs `--yes` otherwise; `--dry-run` shows what would change; `replay --all` leaves
//! entries dead-lettered as undecodable where they are unless `--include-undecodable`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::worker::{DeadLetterId, DeadLetterInfo, DeadLetterReason};
use escalation_queue::{DeadLetterQueue, DeadLetterReport, QueueLayout, Selector};

use crate::cli::{DlqCommand, PurgeArgs, ReplayArgs, Selection};
use crate::config::Config;
use crate::exit::{Exit, UsageError};
use crate::render::{count, duration_ms, table};

use super::{existing_queue_dir, now_unix_ms, print_json, subdir_present};

/// Runs a `dlq` subcommand.
pub fn dlq(config: &Config, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list(config, args.json),
        DlqCommand::Replay(args) => replay(config, args),
        DlqCommand::Purge(args) => purge(config, args),
    }
}

fn open(config: &Config, dir: &std::path::Path) -> anyhow::Result<DeadLetterQueue> {
    Ok(DeadLetterQueue::open(dir, config.queue.clone())?
        .with_retention_ms(config.worker.retention_ms))
}

fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let dir = existing_queue_dir(config)?;
    let entries = match subdir_present(&QueueLayout::new(dir).dead_letter_dir())? {
        true => open(config, dir)?
            .list()
            .context("cannot list the dead letters")?,
        false => Vec::new(),
    };
    let infos: Vec<&DeadLetterInfo> = entries.iter().map(|e| &e.info).collect();
    if json {
        print_json(&infos)?;
        return Ok(Exit::Ok.into());
    }
    if infos.is_empty() {
        println!("no dead letters in {}", dir.display());
        return Ok(Exit::Ok.into());
    }
    print!("{}", dead_letter_table(&infos, now_unix_ms()));
    Ok(Exit::Ok.into())
}

/// Dead letters as `dlq list` shows them: one row each, ages as of `now_ms`.
pub fn dead_letter_table(infos: &[&DeadLetterInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.image_query_id.clone().unwrap_or_else(|| "?".into()),
                i.detector_id.clone().unwrap_or_else(|| "?".into()),
                i.cause.to_string(),
                i.attempts_total.to_string(),
                duration_ms(now_ms.saturating_sub(i.dead_lettered_at_unix_ms)),
                first_line(&i.error, 60),
            ]
        })
        .collect();
    let header = [
        "ID",
        "IMAGE QUERY",
        "DETECTOR",
        "CAUSE",
        "ATTEMPTS",
        "SINCE",
        "LAST ERROR",
    ];
    table(&header, &rows)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

/// The dead letters of an existing queue directory (never created here), and whether its
/// dead-letter wal exists at all.
fn current(config: &Config) -> anyhow::Result<(&Path, bool, Vec<DeadLetterInfo>)> {
    let dir = existing_queue_dir(config)?;
    let present = subdir_present(&QueueLayout::new(dir).dead_letter_dir())?;
    let infos = match present {
        true => open(config, dir)?
            .list()
            .context("cannot list the dead letters")?
            .into_iter()
            .map(|e| e.info)
            .collect(),
        false => Vec::new(),
    };
    Ok((dir, present, infos))
}

fn selected<'a>(
    infos: &'a [DeadLetterInfo],
    selection: &Selection,
    include_undecodable: bool,
) -> Vec<&'a DeadLetterInfo> {
    infos
        .iter()
        .filter(|i| match &selection.id {
            Some(id) => i.id.as_str() == id || i.image_query_id.as_deref() == Some(id.as_str()),
            None => include_undecodable || i.cause != DeadLetterReason::Undecodable,
        })
        .collect()
}

fn replay(config: &Config, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let (dir, present, infos) = current(config)?;
    let chosen = selected(&infos, &args.selection, args.include_undecodable);
    let skipped: Vec<&DeadLetterInfo> = match args.selection.all && !args.include_undecodable {
        true => infos
            .iter()
            .filter(|i| i.cause == DeadLetterReason::Undecodable)
            .collect(),
        false => Vec::new(),
    };
    if args.dry_run {
        print_dry_run("replay", dir, &chosen);
    } else if !present {
        nothing_there(&args.selection, Action::Replay)?;
    } else {
        let selector = match (&args.selection.id, args.include_undecodable) {
            (Some(id), _) => Selector::Id(id.clone()),
            (None, true) => Selector::All,
            (None, false) => Selector::AllDecodable,
        };
        rewrite(config, dir, &selector, Action::Replay)?;
    }
    if !skipped.is_empty() {
        println!(
            "left {} dead-lettered as undecodable (replaying would only dead-letter them \
             again): {}; replay one with --id, or all with --include-undecodable",
            count(skipped.len() as u64, "dead letter"),
            skipped
                .iter()
                .map(|i| i.id.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(Exit::Ok.into())
}

fn purge(config: &Config, args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let (dir, present, infos) = current(config)?;
    let chosen = selected(&infos, &args.selection, true);
    if args.dry_run {
        print_dry_run("purge", dir, &chosen);
        return Ok(Exit::Ok.into());
    }
    if !present {
        nothing_there(&args.selection, Action::Purge)?;
        return Ok(Exit::Ok.into());
    }
    if args.selection.all && !args.yes && !chosen.is_empty() && !confirmed(dir, chosen.len())? {
        println!("nothing purged");
        return Ok(Exit::Ok.into());
    }
    let selector = match &args.selection.id {
        Some(id) => Selector::Id(id.clone()),
        None => Selector::All,
    };
    rewrite(config, dir, &selector, Action::Purge).map(|()| Exit::Ok.into())
}

/// Asks on the terminal whether to purge all `n` dead letters; without a terminal to ask
/// on, refuses (a usage error: pass `--yes`).
fn confirmed(dir: &Path, n: usize) -> anyhow::Result<bool> {
    let what = format!("{} in {}", count(n as u64, "dead letter"), dir.display());
    if !std::io::stdin().is_terminal() {
        return Err(UsageError::new(format!(
            "dlq purge --all would delete {what} for good, and stdin is not a terminal to \
             ask on: pass --yes to confirm, or --dry-run to see them first"
        ))
        .into());
    }
    eprint!("delete {what} for good? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn print_dry_run(verb: &str, dir: &Path, chosen: &[&DeadLetterInfo]) {
    if chosen.is_empty() {
        println!("dry run: no dead letters to {verb} in {}", dir.display());
        return;
    }
    println!(
        "dry run: would {verb} {} (nothing changed):",
        count(chosen.len() as u64, "dead letter")
    );
    print!("{}", dead_letter_table(chosen, now_unix_ms()));
}

/// No dead-letter wal (nothing was ever dead-lettered; none is created): nothing to do
/// for `--all`, said as an empty pass says it; an unknown id for `--id`.
fn nothing_there(selection: &Selection, action: Action) -> anyhow::Result<()> {
    if let Some(id) = &selection.id {
        return Err(no_such_id(id).into());
    }
    print_report(action, &[], &DeadLetterReport::default());
    Ok(())
}

fn no_such_id(id: &str) -> UsageError {
    UsageError::new(format!(
        "no dead letter with id {id} (neither a dl_ id nor an image query id); see \
         `escalation-queue dlq list`"
    ))
}

fn rewrite(config: &Config, dir: &Path, selector: &Selector, action: Action) -> anyhow::Result<()> {
    let queue = open(config, dir)?;
    let report = match action {
        Action::Replay => queue.replay(selector),
        Action::Purge => queue.purge(selector),
    }
    .context("the dead-letter queue was not changed")?;
    let done = match action {
        Action::Replay => &report.replayed,
        Action::Purge => &report.purged,
    };
    if let (Selector::Id(id), true) = (selector, done.is_empty()) {
        return Err(no_such_id(id).into());
    }
    print_report(action, done, &report);
    Ok(())
}

fn print_report(action: Action, done: &[DeadLetterId], report: &DeadLetterReport) {
    let (verb, infinitive) = match action {
        Action::Replay => ("replayed", "replay"),
        Action::Purge => ("purged", "purge"),
    };
    let ids: Vec<String> = done.iter().map(ToString::to_string).collect();
    match ids.len() {
        0 => println!("no dead letters to {infinitive}"),
        n => println!(
            "{verb} {}: {}",
            count(n as u64, "dead letter"),
            ids.join(" ")
        ),
    }
    if !report.expired.is_empty() {
        println!(
            "expired {} past the retention age (worker.retention_ms)",
            count(report.expired.len() as u64, "dead letter")
        );
    }
    println!("{} left", count(report.kept, "dead letter"));
    tracing::info!(
        verb,
        count = ids.len(),
        left = report.kept,
        "dead-letter queue rewritten"
    );
}

fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
