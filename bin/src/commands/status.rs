//! `status`: what is in the queue and who is working on it, without changing anything
//! (safe while writers and the reader run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::wal::{self, Inspection, Reader};
use escalation_queue::worker::{DeadLetterQueue, WORKER_CURSOR};
use escalation_queue::QueueLayout;
use serde::Serialize;

use crate::config::Config;
use crate::exit::Exit;
use crate::render::{bytes, duration_ms, table};

use super::{existing_queue_dir, now_unix_ms, print_json, subdir_present};

/// The `status --json` document.
#[derive(Debug, Serialize)]
struct StatusReport {
    queue_dir: String,
    reader_running: bool,
    writers_active: usize,
    pending_total: u64,
    oldest_pending_age_ms: Option<u64>,
    dead_letters: usize,
    bytes_on_disk: DiskUsage,
    lanes: Vec<LaneStatus>,
    /// Entries in the wal named like queue files that are not regular files (a FIFO, a
    /// directory, a symlink): never opened; `verify` reports them (exit 3).
    foreign: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DiskUsage {
    wal_bytes: u64,
    dead_letter_bytes: u64,
    total_bytes: u64,
}

#[derive(Debug, Serialize)]
struct LaneStatus {
    lane: u16,
    writer_active: bool,
    segments: usize,
    pending: u64,
    oldest_pending_age_ms: Option<u64>,
    cursor: Option<Place>,
    durable_end: Option<Place>,
    /// Where `durable_end` comes from: "watermark" (published and checked against the
    /// segment files) or "scanned" (the watermark is missing, torn or contradicts the
    /// files: the end is the valid end of the newest segment).
    durable_end_source: &'static str,
}

/// A position in a lane and the sequence number of the record there.
#[derive(Debug, Serialize)]
struct Place {
    segment: u64,
    offset: u64,
    next_seq: u64,
}

/// Runs `status`.
pub fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let dir = existing_queue_dir(config)?;
    let report = gather(dir, config)?;
    if json {
        print_json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(Exit::Ok.into())
}

fn gather(dir: &Path, config: &Config) -> anyhow::Result<StatusReport> {
    let layout = QueueLayout::new(dir);
    let wal_options = config.queue.wal_options();
    let main = inspect_if_present(&layout.wal_dir(), &wal_options)?;
    let dlq_options = config.queue.dead_letter_wal_options();
    let dead = inspect_if_present(&layout.dead_letter_dir(), &dlq_options)?;
    let dead_letters = match subdir_present(&layout.dead_letter_dir())? {
        true => DeadLetterQueue::open(dir, config.queue.clone())?
            .with_retention_ms(config.worker.retention_ms)
            .list()
            .context("cannot list the dead letters")?
            .len(),
        false => 0,
    };
    let now_ns = now_unix_ms().saturating_mul(1_000_000);
    let cursor = main.cursors.iter().find(|c| c.name == WORKER_CURSOR);
    let mut lanes: Vec<LaneStatus> = main
        .lanes
        .iter()
        .map(|lane| {
            let at = cursor.and_then(|c| c.lanes.get(&lane.lane));
            let first_seq = lane.segments.first().and_then(|s| s.first_seq);
            let end = lane.durable_end;
            let pending = match (at, end) {
                (Some(at), _) => at.pending,
                (None, Some((_, next))) => next.0.saturating_sub(first_seq.map_or(0, |s| s.0)),
                (None, None) => 0,
            };
            LaneStatus {
                lane: lane.lane.0,
                writer_active: lane.writer_active,
                segments: lane.segments.len(),
                pending,
                oldest_pending_age_ms: at
                    .and_then(|a| a.oldest_pending_ns)
                    .map(|t| now_ns.saturating_sub(t) / 1_000_000),
                cursor: at.map(|a| Place {
                    segment: a.position.position.segment.0,
                    offset: a.position.position.offset,
                    next_seq: a.position.next_seq.0,
                }),
                durable_end: end.map(|(p, next)| Place {
                    segment: p.segment.0,
                    offset: p.offset,
                    next_seq: next.0,
                }),
                durable_end_source: match lane.end_source {
                    wal::EndSource::Watermark => "watermark",
                    wal::EndSource::Scanned => "scanned",
                    _ => "unknown",
                },
            }
        })
        .collect();
    // Lanes the worker's checkpoint says nothing about (no reader ever ran, or the lane is
    // newer than its last checkpoint): their oldest pending record is their first one.
    let unknown: BTreeSet<u16> = lanes
        .iter()
        .filter(|l| l.pending > 0 && l.oldest_pending_age_ms.is_none())
        .map(|l| l.lane)
        .collect();
    if !unknown.is_empty() {
        let firsts = first_pending_ns(&layout.wal_dir(), &wal_options, unknown)?;
        for lane in &mut lanes {
            if let Some(t) = firsts.get(&lane.lane) {
                lane.oldest_pending_age_ms = Some(now_ns.saturating_sub(*t) / 1_000_000);
            }
        }
    }
    let pending_total = lanes.iter().map(|l| l.pending).sum();
    // The header's age is the oldest of the lanes' ages, so the two always agree.
    let oldest_pending_age_ms = lanes.iter().filter_map(|l| l.oldest_pending_age_ms).max();
    Ok(StatusReport {
        queue_dir: dir.display().to_string(),
        reader_running: cursor.is_some_and(|c| c.reader_active),
        writers_active: main.lanes.iter().filter(|l| l.writer_active).count(),
        pending_total,
        oldest_pending_age_ms,
        dead_letters,
        bytes_on_disk: DiskUsage {
            wal_bytes: main.segment_bytes,
            dead_letter_bytes: dead.segment_bytes,
            total_bytes: dir_bytes(dir, 3),
        },
        lanes,
        foreign: main.foreign.iter().map(ToString::to_string).collect(),
    })
}

/// Records pending for the worker right now (for progress totals).
pub fn pending_total(dir: &Path, config: &Config) -> anyhow::Result<u64> {
    Ok(gather(dir, config)?.pending_total)
}

fn inspect_if_present(dir: &Path, options: &wal::Options) -> anyhow::Result<Inspection> {
    if !subdir_present(dir)? {
        return Ok(Inspection::default());
    }
    wal::inspect(dir, options).with_context(|| format!("cannot inspect {}", dir.display()))
}

/// Enqueue time of the first record the worker has not finished, for each of `lanes`:
/// reads pending records from the worker's position (oldest first, lanes merged by time)
/// until each of `lanes` has shown its first one.
fn first_pending_ns(
    wal_dir: &Path,
    options: &wal::Options,
    mut lanes: BTreeSet<u16>,
) -> anyhow::Result<BTreeMap<u16, u64>> {
    let mut reader = Reader::browse(wal_dir, WORKER_CURSOR, options)
        .with_context(|| format!("cannot read {}", wal_dir.display()))?;
    let mut firsts = BTreeMap::new();
    while !lanes.is_empty() {
        let Some(record) = reader.next()? else { break };
        if lanes.remove(&record.id.lane.0) {
            firsts.insert(record.id.lane.0, record.time_ns);
        }
    }
    Ok(firsts)
}

/// Bytes of the files under `dir`, `depth` levels deep.
fn dir_bytes(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() && depth > 0 => dir_bytes(&entry.path(), depth - 1),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

fn print_human(r: &StatusReport) {
    let reader = match r.reader_running {
        true => "running",
        false => "not running",
    };
    let oldest = r.oldest_pending_age_ms.map_or_else(String::new, |ms| {
        format!(" (oldest {} old)", duration_ms(ms))
    });
    println!("queue         {}", r.queue_dir);
    println!("reader        {reader}");
    println!("writers       {} active", r.writers_active);
    println!("pending       {}{oldest}", r.pending_total);
    println!("dead letters  {}", r.dead_letters);
    println!(
        "disk          {} (wal segments {}, dead-letter segments {})",
        bytes(r.bytes_on_disk.total_bytes),
        bytes(r.bytes_on_disk.wal_bytes),
        bytes(r.bytes_on_disk.dead_letter_bytes)
    );
    for f in &r.foreign {
        println!("note: foreign entry: {f}; run `escalation-queue verify`");
    }
    if r.lanes.is_empty() {
        return;
    }
    let place = |p: &Option<Place>| {
        p.as_ref().map_or_else(
            || "-".to_owned(),
            |p| format!("seg {} @ {} (seq {})", p.segment, p.offset, p.next_seq),
        )
    };
    let rows: Vec<Vec<String>> = r
        .lanes
        .iter()
        .map(|l| {
            vec![
                l.lane.to_string(),
                if l.writer_active { "active" } else { "-" }.to_owned(),
                l.segments.to_string(),
                l.pending.to_string(),
                l.oldest_pending_age_ms.map_or("-".to_owned(), duration_ms),
                place(&l.cursor),
                place(&l.durable_end),
            ]
        })
        .collect();
    let header = [
        "LANE",
        "WRITER",
        "SEGMENTS",
        "PENDING",
        "OLDEST",
        "CURSOR",
        "DURABLE END",
    ];
    print!("\n{}", table(&header, &rows));
    for l in r
        .lanes
        .iter()
        .filter(|l| l.durable_end_source != "watermark")
    {
        println!(
            "note: lane {}'s watermark (lane-{:03}.commit) is missing, torn or does not match \
             its segments; its durable end was found by scanning them ({}); a reader or \
             writer recovering the lane writes a new one",
            l.lane, l.lane, l.durable_end_source
        );
    }
}
