//! `import-legacy`: moves a Python (edge-endpoint) file queue into this queue, once, with
//! nothing lost and nothing imported twice — also when it is killed and run again.
//!
//! Every pending legacy line becomes one escalation with its image inlined and the
//! line's own ids; the line the legacy reader may have had in flight (index = the
//! tracker's length) is imported `possibly_submitted`; consumed lines are skipped;
//! `failed/` records and lines whose image is gone become dead letters; `request-cache/`
//! ids seed the dedupe log. Damage the Python reader mishandles (NUL bytes, torn or
//! non-JSON lines, claimed files without a tracker, names it ignores) is handled and
//! reported.
//!
//! Why a rerun imports nothing twice (`docs/OPERATIONS.md`, "Importing a legacy queue"):
//! - The ids of an imported escalation are the line's own, so "already imported" is a
//!   question our queue answers: the id is pending in the wal, dead-lettered, or in the
//!   dedupe log of delivered ids. The run holds the worker's cursor (a reader cannot run
//!   meanwhile, and one that runs is refused with exit 4), so what it enqueued is still
//!   pending when a killed run is restarted.
//! - A legacy file is never modified. It is removed (or, when it holds damage, moved to
//!   `import-legacy-damaged/`) only after everything that came from it is durable, then its
//!   images; `failed/` records after their dead letters are durable; `request-cache/`
//!   last. A rerun reads the same bytes, derives the same escalations and skips the ones
//!   our queue already has.

mod failed;
mod legacy;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::wal::{Durability, Error as WalError, Reader, RealStorage, Storage as _};
use escalation_queue::worker::{DeadLetterSink, DedupeSet, Metadata, WORKER_CURSOR};
use escalation_queue::{
    DeadLetterQueue, Error, Escalation, EscalationQueue, HumanReview, ImageSource, QueueLayout,
};
use serde::Serialize;

use crate::cli::ImportLegacyArgs;
use crate::config::Config;
use crate::exit::{Exit, UsageError};
use crate::render::count;

use self::legacy::{DataFile, EscalationInfo, Listing, Place, Unparsed};
use super::{now_unix_ms, print_json, writable_queue_dir};

/// Name of the directory (inside the legacy directory) where data files holding damage
/// are moved once their good lines are imported.
pub const DAMAGED_DIR: &str = "import-legacy-damaged";

/// One thing the importer could not import as it stands, or a file it treated specially.
#[derive(Debug, Serialize)]
struct Damage {
    /// The legacy file, relative to the legacy directory.
    file: String,
    /// 1-based line number, for line damage.
    line: Option<usize>,
    /// `nul_bytes`, `not_json`, `not_an_escalation`, `invalid`, `image_missing`,
    /// `image_unreadable`, `claimed_without_tracker`, `name_mismatch`, `orphan_tracker`,
    /// `failed_record_unreadable`.
    reason: &'static str,
    /// What exactly, and what was done about it.
    detail: String,
}

/// The summary, printed at the end (`--json`: this object).
#[derive(Debug, Default, Serialize)]
struct Summary {
    legacy_dir: String,
    queue_dir: String,
    dry_run: bool,
    /// Legacy data files read.
    files: usize,
    /// Escalations enqueued (with `--dry-run`: that would be).
    imported: u64,
    /// Of those, imported `possibly_submitted` (the line the legacy reader had in flight).
    possibly_submitted: u64,
    /// Of those, recovered from a line with NUL damage the legacy reader would have dropped.
    recovered_from_damage: u64,
    /// Lines the legacy reader had finished (delivered, failed or skipped).
    skipped_consumed: u64,
    /// Lines whose request id the legacy reader had finished or that an earlier line of
    /// this import carries (an SDK retry of one request): the legacy reader skips them too.
    skipped_duplicate_request: u64,
    /// Lines already in this queue (pending, delivered or dead-lettered): an earlier,
    /// interrupted run imported them.
    already_imported: u64,
    /// Dead letters added: `failed/` records and lines whose image is gone.
    dead_letters: u64,
    /// Dead letters an earlier run had already added.
    dead_letters_already_present: u64,
    /// Request ids from `request-cache/` added to the dedupe log.
    request_ids_seeded: u64,
    /// Data files moved to `import-legacy-damaged/` (their good lines imported).
    files_archived_damaged: u64,
    /// Files in the legacy `images/` left after the import (orphans, or images of damaged
    /// lines kept for a human).
    images_left: u64,
    /// Everything not imported as it stood, with the reason.
    damaged: Vec<Damage>,
}

/// Runs `import-legacy`.
pub fn import_legacy(config: &Config, args: &ImportLegacyArgs) -> anyhow::Result<ExitCode> {
    let legacy_dir = args.legacy_dir.as_path();
    match fs::metadata(legacy_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(UsageError::new(format!(
                "legacy directory {} is not a directory",
                legacy_dir.display()
            ))
            .into())
        }
        Err(e) => {
            return Err(UsageError::new(format!(
                "legacy directory {} cannot be read: {e}",
                legacy_dir.display()
            ))
            .into())
        }
    }
    let listing = legacy::list(legacy_dir)
        .with_context(|| format!("cannot list the legacy queue {}", legacy_dir.display()))?;
    if !listing.any_legacy_dir {
        return Err(UsageError::new(format!(
            "{} holds none of writing/, reading/, images/, failed/, request-cache/: not a \
             legacy (edge-endpoint) queue directory",
            legacy_dir.display()
        ))
        .into());
    }
    let queue_dir = config.queue_dir()?.to_path_buf();
    if same_dir(&queue_dir, legacy_dir) {
        return Err(UsageError::new(format!(
            "the queue directory {} is the legacy directory itself; use a subdirectory \
             (e.g. --queue-dir {}/eq)",
            queue_dir.display(),
            legacy_dir.display()
        ))
        .into());
    }
    let mut run = Run::open(config, args, &listing)?;
    run.summary.legacy_dir = legacy_dir.display().to_string();
    run.summary.queue_dir = queue_dir.display().to_string();
    run.summary.dry_run = args.dry_run;
    run.seed_request_cache(&listing)?;
    run.import_failed(&listing)?;
    for file in &listing.files {
        run.import_file(file)?;
    }
    run.finish(&listing)?;
    let summary = run.summary;
    // The whole summary, as `--json` prints it (not a hand-kept subset of its fields).
    tracing::info!(
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "legacy import finished"
    );
    match args.json {
        true => print_json(&summary)?,
        false => print_summary(&summary),
    }
    Ok(Exit::Ok.into())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What is already in our queue, by id.
#[derive(Default)]
struct Known {
    image_query_ids: HashSet<String>,
    request_ids: HashSet<String>,
    dead_letter_ids: HashSet<String>,
}

/// The state of one import run.
struct Run<'a> {
    config: &'a Config,
    args: &'a ImportLegacyArgs,
    layout: QueueLayout,
    /// Held for the whole run: no reader consumes while we import (`None` in a dry run).
    _worker_cursor: Option<Reader>,
    dedupe: Option<DedupeSet>,
    queue: Option<EscalationQueue>,
    /// Opens the dead-letter wal on the first append (never in a dry run).
    dead_letters: DeadLetterSink,
    known: Known,
    request_cache: HashSet<String>,
    summary: Summary,
}

impl<'a> Run<'a> {
    fn open(
        config: &'a Config,
        args: &'a ImportLegacyArgs,
        listing: &Listing,
    ) -> anyhow::Result<Self> {
        let dir = match args.dry_run {
            true => config.queue_dir()?.to_path_buf(),
            false => writable_queue_dir(config)?.to_path_buf(),
        };
        let layout = QueueLayout::new(&dir);
        let mut known = Known::default();
        let wal_options = config.queue.wal_options();
        let (cursor, dedupe) = if args.dry_run {
            if layout.wal_dir().is_dir() {
                let mut reader = Reader::browse(layout.wal_dir(), WORKER_CURSOR, &wal_options)
                    .with_context(|| format!("cannot read {}", layout.wal_dir().display()))?;
                collect_pending(&mut reader, &mut known)?;
            }
            (None, None)
        } else {
            layout.create()?;
            let mut reader = match Reader::open(layout.wal_dir(), WORKER_CURSOR, &wal_options) {
                Err(WalError::CursorLocked { .. }) => {
                    return Err(
                        anyhow::Error::new(Error::WorkerRunning { path: dir.clone() }).context(
                            "a reader is running on this queue; stop it before importing (the \
                         import must not share the queue with a reader)",
                        ),
                    )
                }
                other => {
                    other.with_context(|| format!("cannot open {}", layout.wal_dir().display()))?
                }
            };
            collect_pending(&mut reader, &mut known)?;
            let dedupe = DedupeSet::open(layout.dedupe_path(), config.worker.dedupe_items_max)?;
            (Some(reader), Some(dedupe))
        };
        let dlq = DeadLetterQueue::open(&dir, config.queue.clone())?
            .with_retention_ms(config.worker.retention_ms);
        if layout.dead_letter_dir().is_dir() {
            for entry in dlq.list().context("cannot list the dead letters")? {
                known.dead_letter_ids.insert(entry.info.id.to_string());
                if let Some(iq) = entry.info.image_query_id {
                    known.image_query_ids.insert(iq);
                }
            }
        }
        Ok(Self {
            config,
            args,
            layout,
            _worker_cursor: cursor,
            dedupe,
            queue: None,
            dead_letters: dlq.sink(),
            known,
            request_cache: listing.request_cache.iter().cloned().collect(),
            summary: Summary {
                files: listing.files.len(),
                ..Summary::default()
            },
        })
    }

    fn dry_run(&self) -> bool {
        self.args.dry_run
    }

    /// `request-cache/` ids into the dedupe log: the reader then skips a later escalation
    /// with one of them, as the legacy reader would.
    fn seed_request_cache(&mut self, listing: &Listing) -> anyhow::Result<()> {
        for id in &listing.request_cache {
            let mut marker = Escalation::new("det_legacy", ImageSource::Inline(vec![0].into()));
            marker.request_id = safe_id("req_h", id);
            let new = match &self.dedupe {
                Some(d) => d.contains(&marker).is_none(),
                None => true,
            };
            if new {
                self.summary.request_ids_seeded += 1;
                if let Some(d) = &mut self.dedupe {
                    d.insert(&marker);
                }
            }
        }
        if let Some(d) = &mut self.dedupe {
            d.persist().context("cannot seed the dedupe log")?;
        }
        Ok(())
    }

    fn append_dead_letter(&mut self, entry: &escalation_queue::DeadLetter) -> anyhow::Result<bool> {
        let id = entry.info.id.to_string();
        if self.known.dead_letter_ids.contains(&id) {
            self.summary.dead_letters_already_present += 1;
            return Ok(false);
        }
        self.summary.dead_letters += 1;
        self.known.dead_letter_ids.insert(id);
        if self.dry_run() {
            return Ok(true);
        }
        self.dead_letters
            .append(entry)
            .context("cannot append a dead letter")?;
        Ok(true)
    }

    /// `failed/` records into dead letters; each record file is removed once its dead
    /// letter is durable.
    fn import_failed(&mut self, listing: &Listing) -> anyhow::Result<()> {
        let now = now_unix_ms();
        for path in &listing.failed {
            let stem = file_name(path).trim_end_matches(".json").to_owned();
            let rel = format!("failed/{}", file_name(path));
            let bytes = match fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let record: failed::FailedRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    self.summary.damaged.push(Damage {
                        file: rel,
                        line: None,
                        reason: "failed_record_unreadable",
                        detail: format!("not a failure record ({e}); left in place"),
                    });
                    continue;
                }
            };
            let entry = failed::from_failed_record(
                &stem,
                &record,
                self.args.legacy_utc_offset_minutes,
                now,
            );
            self.append_dead_letter(&entry)?;
            if !self.dry_run() {
                remove(path)?;
            }
        }
        if !self.dry_run() && !listing.failed.is_empty() {
            sync_dir(&self.args.legacy_dir.join("failed"))?;
        }
        Ok(())
    }

    fn queue(&mut self) -> anyhow::Result<&EscalationQueue> {
        if self.queue.is_none() {
            let dir = self.layout.root().to_path_buf();
            // Synced on every append whatever `queue.durability` says: legacy files are
            // removed on the strength of these enqueues.
            let mut options = self.config.queue.clone();
            options.durability = Durability::SyncEachAppend;
            let queue = EscalationQueue::open_with(&dir, options)
                .with_context(|| format!("cannot open the queue {}", dir.display()))?;
            self.queue = Some(queue);
        }
        Ok(self.queue.as_ref().expect("opened above"))
    }

    fn damage(
        &mut self,
        file: &DataFile,
        line: Option<usize>,
        reason: &'static str,
        detail: String,
    ) {
        self.summary.damaged.push(Damage {
            file: file.rel.clone(),
            line,
            reason,
            detail,
        });
    }

    /// One data file: its lines imported or skipped, then the file and its images gone.
    fn import_file(&mut self, file: &DataFile) -> anyhow::Result<()> {
        let bytes = match fs::read(&file.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", file.path.display()))
            }
        };
        let acked = match &file.tracker {
            Some(t) => match fs::metadata(t) {
                Ok(m) => Some(usize::try_from(m.len()).unwrap_or(usize::MAX)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(0),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", t.display())),
            },
            None => None,
        };
        let lines = legacy::split_lines(&bytes);
        if file.place == Place::ClaimedWithoutTracker {
            self.damage(
                file,
                None,
                "claimed_without_tracker",
                format!(
                    "claimed by the legacy reader, which crashed before it opened the \
                     tracker and never reads it again; all {} imported as pending",
                    count(lines.len() as u64, "line")
                ),
            );
        }
        if !file.name_matches {
            self.damage(
                file,
                None,
                "name_mismatch",
                "the name is not one the legacy writer makes (YYYYmmdd_HHMMSS_ffffff-<KSUID>.txt); \
                 the legacy reader ignores it; its lines were read like any other"
                    .to_owned(),
            );
        }
        let mut line_damage = false;
        let mut images = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let line_no = index + 1;
            let state = match acked {
                Some(a) if index < a => LineState::Consumed,
                Some(a) if index == a => LineState::InFlight,
                _ => LineState::Pending,
            };
            if legacy::python_parses(line) {
                let info = legacy::parse(line).expect("python_parses checked it");
                let finished =
                    state == LineState::InFlight && self.request_cache.contains(&info.request_id);
                if state == LineState::Consumed || finished {
                    // The legacy reader deleted its image in `finally`; finish that.
                    self.summary.skipped_consumed += 1;
                    if let Ok(p) = self.image_path(&info) {
                        images.push(p);
                    }
                    continue;
                }
                let outcome = self.import_unit(
                    file,
                    line_no,
                    line,
                    &info,
                    state == LineState::InFlight,
                    false,
                )?;
                line_damage |= outcome.damaged;
                images.extend(outcome.image);
                continue;
            }
            // The legacy reader could not parse this line: it sent nothing and deleted
            // nothing, whatever the tracker says. Recover what can be recovered.
            let nuls = line.iter().filter(|b| **b == 0).count();
            let pieces: Vec<&[u8]> = match nuls {
                0 => vec![line],
                _ => legacy::nul_fragments(line),
            };
            let mut recovered = 0;
            for piece in &pieces {
                match legacy::parse(piece) {
                    Ok(info) => {
                        let outcome =
                            self.import_unit(file, line_no, piece, &info, false, nuls > 0)?;
                        line_damage |= outcome.damaged;
                        images.extend(outcome.image);
                        recovered += 1;
                    }
                    Err(Unparsed::NulPadding(n)) => {
                        self.damage(file, Some(line_no), "nul_bytes", format!("{n} NUL bytes"));
                    }
                    Err(Unparsed::NotJson(e)) => {
                        line_damage = true;
                        let what = match piece.is_empty() {
                            true => "an empty line".to_owned(),
                            false => format!("not JSON (truncated or torn: {e})"),
                        };
                        self.damage(
                            file,
                            Some(line_no),
                            "not_json",
                            format!("{what}: {:?}; not importable", legacy::excerpt(piece)),
                        );
                    }
                    Err(Unparsed::NotAnEscalation(e)) => {
                        line_damage = true;
                        self.damage(
                            file,
                            Some(line_no),
                            "not_an_escalation",
                            format!(
                                "JSON but not a queue line ({e}): {:?}; not importable",
                                legacy::excerpt(piece)
                            ),
                        );
                    }
                }
            }
            if nuls > 0 && (recovered > 0 || pieces.is_empty()) {
                let detail = match recovered {
                    0 => format!("{nuls} NUL bytes (padding left by a crash or power loss)"),
                    n => format!(
                        "{nuls} NUL bytes around {}, imported (the legacy reader drops the line)",
                        count(n, "escalation")
                    ),
                };
                self.damage(file, Some(line_no), "nul_bytes", detail);
            }
        }
        if self.dry_run() {
            return Ok(());
        }
        // Everything from this file is durable: its images can go, then the file (and its
        // tracker). Images first: a run killed in between finds the file again, skips its
        // lines as already imported (before reading any image) and removes the rest of
        // them; the other order would leave images that no file names any more. A file
        // that holds damage is kept for a human, out of the queue.
        for image in &images {
            remove(image)?;
        }
        let archive = line_damage;
        let dir = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if archive {
            let to = self.args.legacy_dir.join(DAMAGED_DIR);
            fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
            let name = file.rel.replace('/', "_");
            rename(&file.path, &to.join(&name))?;
            if let Some(t) = &file.tracker {
                if t.exists() {
                    rename(t, &to.join(format!("{name}.tracker")))?;
                }
            }
            sync_dir(&to)?;
            self.summary.files_archived_damaged += 1;
        } else {
            remove(&file.path)?;
            if let Some(t) = &file.tracker {
                remove(t)?;
            }
        }
        sync_dir(&dir)?;
        Ok(())
    }

    fn image_path(&self, info: &EscalationInfo) -> Result<PathBuf, String> {
        legacy::image_path(
            &info.image_path_str,
            &self.args.legacy_dir,
            &self.args.legacy_root_as,
        )
    }

    /// One legacy escalation: skipped, enqueued, dead-lettered or reported.
    fn import_unit(
        &mut self,
        file: &DataFile,
        line_no: usize,
        raw: &[u8],
        info: &EscalationInfo,
        in_flight: bool,
        recovered: bool,
    ) -> anyhow::Result<UnitOutcome> {
        let image_query_id = safe_id("iq_h", &info.submit_iq_params.image_query_id);
        let request_id = safe_id("req_h", &info.request_id);
        let enqueued_ms =
            legacy::timestamp_ms(&info.timestamp, self.args.legacy_utc_offset_minutes)
                .or_else(|| {
                    let m = fs::metadata(&file.path).and_then(|m| m.modified()).ok()?;
                    let d = m.duration_since(std::time::UNIX_EPOCH).ok()?;
                    u64::try_from(d.as_millis()).ok()
                })
                .unwrap_or_else(now_unix_ms);
        let image_path = self.image_path(info);
        let done = |image: Option<PathBuf>| UnitOutcome {
            image,
            damaged: false,
        };
        if self.known.image_query_ids.contains(&image_query_id) {
            self.summary.already_imported += 1;
            return Ok(done(image_path.ok()));
        }
        if !in_flight
            && (self.request_cache.contains(&info.request_id)
                || self.known.request_ids.contains(&request_id))
        {
            self.summary.skipped_duplicate_request += 1;
            return Ok(done(image_path.ok()));
        }
        let mut esc = Escalation::new(
            info.detector_id.clone(),
            ImageSource::Inline(Vec::new().into()),
        );
        esc.image_query_id = image_query_id.clone();
        esc.request_id = request_id.clone();
        esc.enqueued_at_unix_ms = enqueued_ms;
        esc.possibly_submitted = in_flight;
        if let Some(d) = &self.dedupe {
            if d.contains(&esc).is_some() {
                self.summary.already_imported += 1;
                return Ok(done(image_path.ok()));
            }
        }
        let path = match image_path {
            Ok(p) => p,
            Err(why) => {
                self.damage(
                    file,
                    Some(line_no),
                    "image_unreadable",
                    format!("{why}; not importable"),
                );
                return Ok(UnitOutcome {
                    image: None,
                    damaged: true,
                });
            }
        };
        let limit = self.config.queue.image_size_max_bytes;
        let image = match read_image(&path, limit) {
            Ok(bytes) => bytes,
            Err(ImageProblem::Missing) => {
                let why = format!("image file {} is gone", path.display());
                let entry = failed::image_missing(
                    raw,
                    &info.detector_id,
                    &image_query_id,
                    &request_id,
                    enqueued_ms,
                    &why,
                    now_unix_ms(),
                );
                self.append_dead_letter(&entry)?;
                self.known.image_query_ids.insert(image_query_id);
                self.known.request_ids.insert(request_id);
                self.damage(
                    file,
                    Some(line_no),
                    "image_missing",
                    format!(
                        "{why}; dead-lettered as image_unavailable ({})",
                        entry.info.id
                    ),
                );
                return Ok(done(None));
            }
            Err(ImageProblem::Unusable(why)) => {
                self.damage(
                    file,
                    Some(line_no),
                    "image_unreadable",
                    format!("{why}; not importable, image kept"),
                );
                return Ok(UnitOutcome {
                    image: None,
                    damaged: true,
                });
            }
            Err(ImageProblem::Io(e)) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        esc.image = ImageSource::Inline(image.into());
        if let Err(why) = fill_params(&mut esc, info) {
            self.damage(
                file,
                Some(line_no),
                "invalid",
                format!("{why}; not importable, image kept"),
            );
            return Ok(UnitOutcome {
                image: None,
                damaged: true,
            });
        }
        if let Err(e) = esc.validate_with(&self.config.queue.record_limits()) {
            self.damage(
                file,
                Some(line_no),
                "invalid",
                format!("{e}; not importable, image kept"),
            );
            return Ok(UnitOutcome {
                image: None,
                damaged: true,
            });
        }
        if !self.dry_run() {
            let receipt = self
                .queue()?
                .enqueue(&esc)
                .with_context(|| format!("cannot import line {line_no} of {}", file.rel))?;
            tracing::debug!(image_query_id = %receipt.image_query_id, lane = receipt.lane, seq = receipt.seq, file = %file.rel, line = line_no, "legacy line imported (durable)");
        }
        self.summary.imported += 1;
        self.summary.possibly_submitted += u64::from(in_flight);
        self.summary.recovered_from_damage += u64::from(recovered);
        self.known.image_query_ids.insert(image_query_id);
        self.known.request_ids.insert(request_id);
        Ok(done(Some(path)))
    }

    /// After every file: orphan trackers and the request cache go; images left are counted.
    fn finish(&mut self, listing: &Listing) -> anyhow::Result<()> {
        for tracker in &listing.orphan_trackers {
            self.summary.damaged.push(Damage {
                file: format!("reading/{}", file_name(tracker)),
                line: None,
                reason: "orphan_tracker",
                detail:
                    "a tracker whose data file is gone (the legacy reader discards it); removed"
                        .to_owned(),
            });
            if !self.dry_run() {
                remove(tracker)?;
            }
        }
        let cache_dir = self.args.legacy_dir.join("request-cache");
        if !self.dry_run() {
            for id in &listing.request_cache {
                remove(&cache_dir.join(id))?;
            }
            if !listing.request_cache.is_empty() {
                sync_dir(&cache_dir)?;
            }
        }
        let images = self.args.legacy_dir.join("images");
        self.summary.images_left = match fs::read_dir(&images) {
            Ok(entries) => entries.filter_map(Result::ok).count() as u64,
            Err(_) => 0,
        };
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    /// Before the tracker's count: the legacy reader finished it.
    Consumed,
    /// At the tracker's count: the legacy reader may have sent it.
    InFlight,
    /// After it, or in a file the reader had not started.
    Pending,
}

struct UnitOutcome {
    /// The image to remove once the file is done.
    image: Option<PathBuf>,
    /// The line could not be imported and its file is kept.
    damaged: bool,
}

/// Reads the pending records of the main wal into `known`.
fn collect_pending(reader: &mut Reader, known: &mut Known) -> anyhow::Result<()> {
    while let Some(record) = reader.next().context("cannot read the queue")? {
        if let Ok(esc) = Escalation::decode(&record.payload) {
            known.image_query_ids.insert(esc.image_query_id);
            known.request_ids.insert(esc.request_id);
        }
    }
    Ok(())
}

/// The optional fields of a legacy line.
fn fill_params(esc: &mut Escalation, info: &EscalationInfo) -> Result<(), String> {
    let p = &info.submit_iq_params;
    esc.patience_time_s = p.patience_time;
    esc.confidence_threshold = p.confidence_threshold;
    if let Some(review) = &p.human_review {
        esc.human_review = Some(
            review
                .parse::<HumanReview>()
                .map_err(|e| format!("human_review: {e}"))?,
        );
    }
    esc.metadata = p.metadata.clone().map(Metadata::new);
    Ok(())
}

enum ImageProblem {
    Missing,
    Unusable(String),
    Io(io::Error),
}

fn read_image(path: &Path, limit: usize) -> Result<Vec<u8>, ImageProblem> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageProblem::Missing),
        Err(e) => return Err(ImageProblem::Io(e)),
    };
    if !meta.is_file() {
        return Err(ImageProblem::Unusable(format!(
            "image {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > limit as u64 {
        return Err(ImageProblem::Unusable(format!(
            "image {} is {} bytes, larger than queue.image_size_max_bytes = {limit}",
            path.display(),
            meta.len()
        )));
    }
    if meta.len() == 0 {
        return Err(ImageProblem::Unusable(format!(
            "image {} is empty (a writer crashed while writing it)",
            path.display()
        )));
    }
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageProblem::Missing,
        _ => ImageProblem::Io(e),
    })
}

/// `id` if it obeys our id rule (1 to 200 printable ASCII characters, no spaces); else a
/// stable replacement, `prefix` + the first 32 hex digits of its SHA-256: the mapping the
/// Python package applies to a client's `X-Request-Id` (`edge_compat.safe_request_id`), so
/// every line carrying the same legacy id maps to the same one, and to what a new write
/// with that id gets.
fn safe_id(prefix: &str, id: &str) -> String {
    let ok = (1..=escalation_queue::worker::ID_LEN_MAX_CHARS).contains(&id.chars().count())
        && id.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if ok {
        return id.to_owned();
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    match RealStorage.sync_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot sync {}", dir.display())),
    }
}

fn print_summary(s: &Summary) {
    let would = if s.dry_run {
        "dry run (nothing changed): would import"
    } else {
        "imported"
    };
    println!(
        "{would} {} from {} in {} into {}",
        count(s.imported, "escalation"),
        count(s.files as u64, "legacy file"),
        s.legacy_dir,
        s.queue_dir
    );
    println!(
        "  possibly submitted (in flight in the legacy reader): {}",
        s.possibly_submitted
    );
    println!(
        "  recovered from NUL-damaged lines: {}",
        s.recovered_from_damage
    );
    println!("skipped consumed: {}", s.skipped_consumed);
    println!(
        "skipped duplicate request id: {}",
        s.skipped_duplicate_request
    );
    println!("already imported by an earlier run: {}", s.already_imported);
    println!(
        "dead letters: {} added, {} already present",
        s.dead_letters, s.dead_letters_already_present
    );
    println!(
        "request ids seeded into the dedupe log: {}",
        s.request_ids_seeded
    );
    println!(
        "files with damage moved to {DAMAGED_DIR}/: {}",
        s.files_archived_damaged
    );
    println!("files left in images/: {}", s.images_left);
    println!("damaged: {}", s.damaged.len());
    for d in &s.damaged {
        match d.line {
            Some(line) => println!("  {} line {line}: {}: {}", d.file, d.reason, d.detail),
            None => println!("  {}: {}: {}", d.file, d.reason, d.detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_break_our_rule_map_stably() {
        assert_eq!(safe_id("req_h", "req_uu0123"), "req_uu0123");
        let a = safe_id("req_h", "has space");
        assert_eq!(a, safe_id("req_h", "has space"));
        assert_ne!(a, safe_id("req_h", "has  space"));
        assert!(a.starts_with("req_h") && a.len() == 37);
        assert!(safe_id("iq_h", "").starts_with("iq_h"));
        // hashlib.sha256("has space".encode()).hexdigest()[:32], as edge_compat computes it.
        assert_eq!(a, "req_h47b5c36fc0b017ba576f10f988d0cbcb");
    }
}
