//! `dlq list | replay | purge`: the dead-letter queue. Listing is read-only and safe while
//! the reader runs; replay and purge rewrite the dead-letter wal (one pass at a time).

use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::worker::{DeadLetterId, DeadLetterInfo};
use escalation_queue::{DeadLetterQueue, DeadLetterReport, QueueLayout, Selector};

use crate::cli::{DlqCommand, Selection};
use crate::config::Config;
use crate::exit::{Exit, UsageError};
use crate::render::{count, duration_ms, table};

use super::{existing_queue_dir, now_unix_ms, print_json, subdir_present, writable_queue_dir};

/// Runs a `dlq` subcommand.
pub fn dlq(config: &Config, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list(config, args.json),
        DlqCommand::Replay(selection) => rewrite(config, selection, Action::Replay),
        DlqCommand::Purge(selection) => rewrite(config, selection, Action::Purge),
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

fn rewrite(config: &Config, selection: &Selection, action: Action) -> anyhow::Result<ExitCode> {
    let dir = writable_queue_dir(config)?;
    let selector = match &selection.id {
        Some(id) => Selector::Id(id.clone()),
        None => Selector::All,
    };
    let queue = open(config, dir)?;
    let report = match action {
        Action::Replay => queue.replay(&selector),
        Action::Purge => queue.purge(&selector),
    }
    .context("the dead-letter queue was not changed")?;
    let done = match action {
        Action::Replay => &report.replayed,
        Action::Purge => &report.purged,
    };
    if let (Selector::Id(id), true) = (&selector, done.is_empty()) {
        return Err(UsageError::new(format!(
            "no dead letter with id {id} (neither a dl_ id nor an image query id); see \
             `escalation-queue dlq list`"
        ))
        .into());
    }
    print_report(action, done, &report);
    Ok(Exit::Ok.into())
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
