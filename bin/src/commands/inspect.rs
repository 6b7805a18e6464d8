//! `inspect` lists pending records without consuming them; `verify` checks every checksum
//! of the main wal and the dead-letter wal and reports damage (exit 3).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::wal::{self, Reader, Record, VerifyReport};
use escalation_queue::worker::WORKER_CURSOR;
use escalation_queue::{Escalation, ImageSource, QueueLayout};
use serde::Serialize;

use crate::cli::InspectArgs;
use crate::config::Config;
use crate::exit::Exit;
use crate::render::{bytes, count, duration_ms, table};

use super::{existing_queue_dir, now_unix_ms, print_json, subdir_present};

/// One pending record as `inspect` shows it.
#[derive(Debug, Serialize)]
struct RecordView {
    lane: u16,
    seq: u64,
    segment: u64,
    offset: u64,
    size_bytes: usize,
    age_ms: u64,
    detector_id: Option<String>,
    image_query_id: Option<String>,
    request_id: Option<String>,
    image: Option<String>,
    /// The producer's own submit may have reached the cloud (`enqueue --possibly-submitted`).
    possibly_submitted: Option<bool>,
    /// Why the record does not decode (it will be dead-lettered).
    decode_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct InspectReport {
    queue_dir: String,
    records: Vec<RecordView>,
    /// More pending records exist beyond `--limit`.
    truncated: bool,
    /// Records of lanes whose published durable end is missing or does not match the files
    /// (after a power loss, or tampering): they are there (found by scanning) but are not
    /// listed until a reader or writer recovers the lane.
    unlisted: Vec<Unlisted>,
    /// Entries named like queue files that are not regular files: never opened, so a
    /// segment's records in one are not listed (`verify` reports them, exit 3).
    foreign: Vec<ForeignView>,
}

/// Records of one lane `inspect` could not list.
#[derive(Debug, Serialize)]
struct Unlisted {
    lane: u16,
    records: u64,
}

/// Runs `inspect`.
pub fn inspect(config: &Config, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let dir = existing_queue_dir(config)?;
    let wal_dir = QueueLayout::new(dir).wal_dir();
    let mut records = Vec::new();
    let mut truncated = false;
    if subdir_present(&wal_dir)? {
        let options = config.queue.wal_options();
        let mut reader = Reader::browse(&wal_dir, WORKER_CURSOR, &options)
            .with_context(|| format!("cannot read {}", wal_dir.display()))?;
        let now_ns = now_unix_ms().saturating_mul(1_000_000);
        while let Some(record) = reader.next()? {
            if args.limit != 0 && records.len() == args.limit {
                truncated = true;
                break;
            }
            records.push(view(&record, now_ns));
        }
    }
    let unlisted = match truncated || !subdir_present(&wal_dir)? {
        true => Vec::new(),
        false => unlisted(&wal_dir, &config.queue.wal_options(), &records)?,
    };
    for u in &unlisted {
        eprintln!(
            "warning: lane {} holds {} pending records past its published durable end (its \
             watermark lane-{:03}.commit is missing, torn or does not match the segments); \
             they are not listed until a reader or writer recovers the lane",
            u.lane, u.records, u.lane
        );
    }
    let foreign = match subdir_present(&wal_dir)? {
        true => wal::foreign(&wal_dir, &config.queue.wal_options())
            .with_context(|| format!("cannot list {}", wal_dir.display()))?,
        false => Vec::new(),
    };
    for f in &foreign {
        eprintln!("warning: foreign entry: {f}; run `escalation-queue verify`");
    }
    let report = InspectReport {
        queue_dir: dir.display().to_string(),
        records,
        truncated,
        unlisted,
        foreign: foreign.iter().map(ForeignView::from).collect(),
    };
    match args.json {
        true => print_json(&report)?,
        false => print_records(&report),
    }
    Ok(Exit::Ok.into())
}

/// Pending records per lane (from the verified lane ends) that the listing did not show.
fn unlisted(
    wal_dir: &Path,
    options: &wal::Options,
    listed: &[RecordView],
) -> anyhow::Result<Vec<Unlisted>> {
    let seen = wal::inspect(wal_dir, options)
        .with_context(|| format!("cannot inspect {}", wal_dir.display()))?;
    let Some(cursor) = seen.cursors.iter().find(|c| c.name == WORKER_CURSOR) else {
        return Ok(seen
            .lanes
            .iter()
            .filter(|l| l.end_source != wal::EndSource::Watermark)
            .filter_map(|l| {
                let (_, end) = l.durable_end?;
                let first = l.segments.first()?.first_seq?;
                let shown = listed.iter().filter(|r| r.lane == l.lane.0).count() as u64;
                let records = end.0.saturating_sub(first.0).saturating_sub(shown);
                (records > 0).then_some(Unlisted {
                    lane: l.lane.0,
                    records,
                })
            })
            .collect());
    };
    Ok(cursor
        .lanes
        .iter()
        .filter_map(|(lane, at)| {
            let shown = listed.iter().filter(|r| r.lane == lane.0).count() as u64;
            let records = at.pending.saturating_sub(shown);
            (records > 0).then_some(Unlisted {
                lane: lane.0,
                records,
            })
        })
        .collect())
}

fn view(record: &Record, now_ns: u64) -> RecordView {
    let mut view = RecordView {
        lane: record.id.lane.0,
        seq: record.id.seq.0,
        segment: record.id.position.segment.0,
        offset: record.id.position.offset,
        size_bytes: record.payload.len(),
        age_ms: now_ns.saturating_sub(record.time_ns) / 1_000_000,
        detector_id: None,
        image_query_id: None,
        request_id: None,
        image: None,
        possibly_submitted: None,
        decode_error: None,
    };
    match Escalation::decode(&record.payload) {
        Ok(esc) => {
            view.image = Some(match &esc.image {
                ImageSource::Inline(b) => format!("inline, {}", bytes(b.len() as u64)),
                ImageSource::Path(p) => format!("file {}", p.display()),
            });
            view.detector_id = Some(esc.detector_id);
            view.image_query_id = Some(esc.image_query_id);
            view.request_id = Some(esc.request_id);
            view.possibly_submitted = Some(esc.possibly_submitted);
        }
        Err(e) => view.decode_error = Some(e.to_string()),
    }
    view
}

/// The IMAGE column: where the image is, and whether it may already be in the cloud.
fn image_note(r: &RecordView) -> String {
    let image = r.image.clone().unwrap_or_default();
    match r.possibly_submitted {
        Some(true) => format!("{image}; possibly submitted"),
        _ => image,
    }
}

fn print_records(report: &InspectReport) {
    if report.records.is_empty() {
        match report.unlisted.is_empty() {
            true => println!("no pending records in {}", report.queue_dir),
            false => println!(
                "{} pending records in {} cannot be listed yet (see the warning above)",
                report.unlisted.iter().map(|u| u.records).sum::<u64>(),
                report.queue_dir
            ),
        }
        return;
    }
    let unknown = || "?".to_owned();
    let rows: Vec<Vec<String>> = report
        .records
        .iter()
        .map(|r| {
            vec![
                format!("{}:{}", r.lane, r.seq),
                r.image_query_id.clone().unwrap_or_else(unknown),
                r.detector_id.clone().unwrap_or_else(unknown),
                bytes(r.size_bytes as u64),
                duration_ms(r.age_ms),
                r.decode_error
                    .as_ref()
                    .map_or_else(|| image_note(r), |e| format!("UNDECODABLE: {e}")),
            ]
        })
        .collect();
    let header = [
        "LANE:SEQ",
        "IMAGE QUERY",
        "DETECTOR",
        "SIZE",
        "AGE",
        "IMAGE",
    ];
    print!("{}", table(&header, &rows));
    if report.truncated {
        println!("… more pending records; raise --limit (0: all)");
    }
}

/// One wal's verification, as `verify --json` shows it.
#[derive(Debug, Serialize)]
struct WalVerdict {
    name: &'static str,
    path: String,
    present: bool,
    segments: u64,
    records: u64,
    payload_bytes: u64,
    clean: bool,
    damage: Vec<String>,
    torn_tails: Vec<String>,
    /// Lanes that do not add up: records missing between segments, a segment cut short,
    /// an entry that is no segment file, a checkpoint missing although records were
    /// consumed.
    gaps: Vec<String>,
    /// Entries named like queue files that are not regular files (never opened).
    foreign: Vec<ForeignView>,
    checkpoints: Vec<(String, bool)>,
}

/// An entry named like a queue file that is not a regular file, as the JSON shows it.
#[derive(Debug, Serialize)]
struct ForeignView {
    path: String,
    /// What it is ("a FIFO (named pipe)", "a directory", "a symbolic link", ...).
    kind: String,
    /// The whole report line.
    message: String,
}

impl From<&wal::ForeignEntry> for ForeignView {
    fn from(f: &wal::ForeignEntry) -> Self {
        Self {
            path: f.path.display().to_string(),
            kind: f.kind.to_string(),
            message: f.to_string(),
        }
    }
}

/// Runs `verify`.
pub fn verify(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let dir = existing_queue_dir(config)?;
    let layout = QueueLayout::new(dir);
    let verdicts = [
        check("wal", &layout.wal_dir(), &config.queue.wal_options())?,
        check(
            "dead-letter",
            &layout.dead_letter_dir(),
            &config.queue.dead_letter_wal_options(),
        )?,
    ];
    let clean = verdicts.iter().all(|v| v.clean);
    if json {
        print_json(&serde_json::json!({ "clean": clean, "wals": verdicts }))?;
    } else {
        for v in &verdicts {
            print_verdict(v);
        }
    }
    if clean {
        return Ok(Exit::Ok.into());
    }
    eprintln!(
        "damage found: the reader quarantines damaged records and keeps serving the rest \
         (records reported missing are gone from the files: look for the named segment \
         files); keep a copy of the files above for analysis"
    );
    Ok(Exit::Storage.into())
}

fn check(name: &'static str, dir: &Path, options: &wal::Options) -> anyhow::Result<WalVerdict> {
    let present = subdir_present(dir)?;
    let report = match present {
        true => {
            wal::verify(dir, options).with_context(|| format!("cannot verify {}", dir.display()))?
        }
        false => VerifyReport::default(),
    };
    Ok(WalVerdict {
        name,
        path: dir.display().to_string(),
        present,
        segments: report.segments,
        records: report.records,
        payload_bytes: report.payload_bytes,
        clean: report.is_clean(),
        damage: report.damage.iter().map(ToString::to_string).collect(),
        torn_tails: report
            .torn_tails
            .iter()
            .map(|(lane, at)| format!("{lane} at {at}"))
            .collect(),
        gaps: report.gaps.iter().map(ToString::to_string).collect(),
        foreign: report.foreign.iter().map(ForeignView::from).collect(),
        checkpoints: report.checkpoints.clone(),
    })
}

fn print_verdict(v: &WalVerdict) {
    if !v.present {
        println!("{}: not created yet ({})", v.name, v.path);
        return;
    }
    let verdict = if v.clean { "clean" } else { "DAMAGED" };
    println!(
        "{}: {verdict}: {}, {}, {} of payload ({})",
        v.name,
        count(v.segments, "segment"),
        count(v.records, "record"),
        bytes(v.payload_bytes),
        v.path
    );
    for damage in &v.damage {
        println!("  damage: {damage}");
    }
    for gap in &v.gaps {
        println!("  gap: {gap}");
    }
    for foreign in &v.foreign {
        println!("  foreign entry: {}", foreign.message);
    }
    for torn in &v.torn_tails {
        println!("  torn tail (an unacknowledged write cut short; recovery removes it): {torn}");
    }
    for (cursor, ok) in &v.checkpoints {
        if !ok {
            println!("  cursor checkpoint '{cursor}' unreadable");
        }
    }
}
