//! The attempt journal (`<queue_dir>/attempts.log`): before the first request for a record
//! goes out, the worker writes a small marker for it and `fdatasync`s it. After any stop
//! (crash or clean), a redelivered record is "possibly submitted" exactly when a marker for
//! it survived: a record without one was never sent, so its HTTP 400 is a real rejection.
//! See `docs/SEMANTICS.md` §6 and `docs/FORMAT.md` ("Attempt journal").
//!
//! The file is a 32-byte header and a preallocated array of 32-byte slots (zeros are free);
//! markers fill the slots in order and are overwritten in place (no size change, so the
//! `fdatasync` flushes one data block and no metadata). When the slots run out the file is
//! compacted: the markers still needed are written to a fresh file (temp, fsync, rename,
//! directory fsync). It is also rewritten on every open.
//!
//! A marker is needed until its record's acknowledgement is in a durable cursor checkpoint:
//! the worker reports acks ([`AttemptJournal::settled`]) and checkpoints
//! ([`AttemptJournal::checkpointed`]). Markers inherited from an earlier run are needed
//! until their record comes again (then they are this run's), or until the reader shows
//! that the record lies behind the cursor: a later record of its lane came first, or the
//! reader caught up with every lane.
//!
//! Layout (little-endian). Header: magic `EQATTEM1` [0, 8), version u32 [8, 12), slot
//! count u32 [12, 16), zeros [16, 28), crc32c of [0, 28) [28, 32). Slot: generation u64
//! [0, 8) (1, 2, …; 0 never written), seq u64 [8, 16), image-query key u64 [16, 24) (FNV-1a
//! 64 of the image query id), lane u16 [24, 26), zeros [26, 28), crc32c of [0, 28) [28, 32).
//! A slot whose crc fails is ignored: a torn marker write never returned, so its request was
//! never sent. Damage anywhere else only makes fewer records "possibly submitted" for the
//! ones whose markers it destroyed; it is reported.
//!
//! A full disk (ENOSPC, EDQUOT) must not stop the reader, whose deliveries free it: when
//! the journal cannot be rewritten at open it goes on in its old file; when there is no
//! file yet (a reader that never ran) or no slot left and no room to compact, requests go
//! out *unjournaled* (one WARN per spell) and the journal is tried again at the next
//! marker. A crash inside that spell can make a redelivered record's HTTP 400 look like a
//! real rejection: it is dead-lettered (kept, replayable), never lost.
//!
//! All file I/O goes through the wal's storage seam ([`Storage`]): [`AttemptJournal::open`]
//! uses the real file system, [`AttemptJournal::open_on`] any storage (the simulated disk
//! of `worker/tests/crash_states.rs` explores every crash point of the journal through it).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use escalation_queue_wal::{OpenMode, RealStorage, RecordId, Storage, StorageFile};

use crate::dedupe::quarantine_foreign;
use crate::layout::{is_no_space, Error};

const MAGIC: &[u8; 8] = b"EQATTEM1";
const VERSION: u32 = 1;
/// Bytes of the header and of each slot.
pub const SLOT_LEN: usize = 32;
const CRC_AT: usize = SLOT_LEN - 4;
/// Slots of a new file: enough for many checkpoint windows between compactions.
pub const DEFAULT_SLOTS: u32 = 1024;
/// While the disk is full, how often a marker tries to write the journal again.
const UNJOURNALED_RETRY: Duration = Duration::from_secs(1);
/// The operation a [`rewrite`] failing after its rename names: the fresh file has the
/// journal's name, but the name is not durable.
const RENAMED_OP: &str = "fsync dir";
/// Largest file read on open, in slots (32 MiB): bounds memory on a damaged file.
const SLOTS_READ_MAX: usize = 1 << 20;

/// Whether a marker is `fdatasync`ed before its request goes out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MarkerDurability {
    /// Synced: a marker survives a power loss. The default, with the queue's default
    /// durability (`Durability::SyncEachAppend`).
    #[default]
    Synced,
    /// Written to the OS only: it survives a crash or `kill -9` of the worker, not a power
    /// loss. Used when the queue itself is opted out of syncing each append.
    OsBuffered,
}

/// Where a needed marker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Written by an earlier run; its record has not come again in this one.
    Inherited,
    /// This run's: attempted and not acknowledged.
    Live,
    /// Acknowledged, not yet in a durable checkpoint.
    Settled,
}

#[derive(Clone, Copy, Debug)]
struct Marker {
    iq_key: u64,
    state: State,
}

/// What opening found, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalReport {
    /// Markers inherited from earlier runs.
    pub inherited: usize,
    /// Slots that were neither free nor a valid marker (torn or damaged).
    pub damaged_slots: usize,
    /// Whether the header was missing or damaged (the slots were still read).
    pub bad_header: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct AttemptJournal {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    /// `None`: no journal file yet, for want of space (see the module docs).
    file: Option<Arc<dyn StorageFile>>,
    /// A marker could not be made durable for want of space (logged once per spell).
    unjournaled: bool,
    /// While unjournaled, the next try to write the journal (at most one a second).
    retry_at: Instant,
    slots: u32,
    next_slot: u32,
    next_generation: u64,
    slots_min: u32,
    durability: MarkerDurability,
    markers: BTreeMap<(u16, u64), Marker>,
    report: JournalReport,
    marks_written: u64,
    sync_time: Duration,
}

impl AttemptJournal {
    /// Opens the journal at `path` on the real file system (creating it, mode 0600),
    /// inherits the markers it holds and rewrites it with only those, in a fresh file of at
    /// least `slots_min` slots.
    pub fn open(
        path: impl Into<PathBuf>,
        slots_min: u32,
        durability: MarkerDurability,
    ) -> Result<Self, Error> {
        Self::open_on(Arc::new(RealStorage), path, slots_min, durability)
    }

    /// [`AttemptJournal::open`] on `storage`.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        path: impl Into<PathBuf>,
        slots_min: u32,
        durability: MarkerDurability,
    ) -> Result<Self, Error> {
        let path = path.into();
        let slots_min = slots_min.max(2);
        quarantine_foreign(&*storage, &path)?;
        let (loaded, report) = match load(&*storage, &path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), JournalReport::default()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        if report.damaged_slots > 0 || report.bad_header {
            tracing::warn!(path = %path.display(), ?report, "attempt journal had torn or damaged slots; they are ignored (a torn marker's request was never sent)");
        }
        let mut markers = BTreeMap::new();
        let mut generation = 0;
        for slot in &loaded {
            generation = generation.max(slot.generation);
            markers.insert(
                (slot.lane, slot.seq),
                Marker {
                    iq_key: slot.iq_key,
                    state: State::Inherited,
                },
            );
        }
        let report = JournalReport {
            inherited: markers.len(),
            ..report
        };
        let mut next_generation = generation.saturating_add(1);
        let fresh = match rewrite(&*storage, &path, &markers, slots_min, &mut next_generation) {
            Ok(fresh) => fresh,
            // A full file system must not stop the reader from starting: delivering is what
            // frees space (probe F5). Go on in the old file, after its last used slot; the
            // next compaction retries the rewrite. Not once the fresh file took the name
            // (only its directory sync failed): that name may not survive a power loss, so
            // markers written to it could vanish; go on unjournaled instead (next arm).
            Err(Error::Io { op, source, .. })
                if is_no_space(&source) && !report.bad_header && op != RENAMED_OP =>
            {
                match in_place(&*storage, &path) {
                    Ok(kept) => {
                        tracing::warn!(path = %path.display(), error = %source, "file system full: the attempt journal goes on in its old file (compacted once space is free)");
                        kept
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound || is_no_space(&e) => {
                        warn_unjournaled(&path, &source);
                        Fresh::none()
                    }
                    Err(e) => return Err(Error::io("reopen", &path, e)),
                }
            }
            Err(Error::Io { source, .. }) if is_no_space(&source) => {
                warn_unjournaled(&path, &source);
                Fresh::none()
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            storage,
            unjournaled: fresh.file.is_none(),
            retry_at: Instant::now(),
            file: fresh.file,
            path,
            slots: fresh.slots,
            next_slot: fresh.next_slot,
            next_generation,
            slots_min,
            durability,
            markers,
            report,
            marks_written: 0,
            sync_time: Duration::ZERO,
        })
    }

    /// What opening found.
    pub fn report(&self) -> JournalReport {
        self.report
    }

    /// Markers currently needed (inherited, live or settled).
    pub fn len(&self) -> usize {
        self.markers.len()
    }

    /// Whether no marker is needed.
    pub fn is_empty(&self) -> bool {
        self.markers.is_empty()
    }

    /// Slots in the current file.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Whether markers go out without a durable journal because the disk had no room
    /// (see the module docs): a marker [`mark`](Self::mark) accepted meanwhile may not
    /// survive a crash.
    pub fn is_unjournaled(&self) -> bool {
        self.unjournaled
    }

    /// Markers written (and synced) since open, and the time spent syncing them.
    pub fn marks_written(&self) -> (u64, Duration) {
        (self.marks_written, self.sync_time)
    }

    /// Whether a durable marker says a request for this record (same lane, seq and image
    /// query id) may have reached the cloud and the record is not acknowledged since.
    pub fn may_have_been_sent(&self, id: RecordId, image_query_id: &str) -> bool {
        self.markers
            .get(&(id.lane.0, id.seq.0))
            .is_some_and(|m| m.state != State::Settled && m.iq_key == iq_key(image_query_id))
    }

    /// The reader handed out `id` (FIFO within its lane): inherited markers of earlier
    /// records of that lane are behind the cursor and no longer needed.
    pub fn seen(&mut self, id: RecordId) {
        let lane = id.lane.0;
        self.markers
            .retain(|&(l, seq), m| !(l == lane && seq < id.seq.0 && m.state == State::Inherited));
    }

    /// The reader caught up with every lane: each inherited marker's record either came
    /// again (and is this run's now) or lies behind the cursor.
    pub fn caught_up(&mut self) {
        self.markers.retain(|_, m| m.state != State::Inherited);
    }

    /// Makes durable, before a request for it goes out, that `id` may be submitted. Once
    /// per record per run: a no-op while its marker is live.
    pub fn mark(&mut self, id: RecordId, image_query_id: &str) -> Result<(), Error> {
        let key = (id.lane.0, id.seq.0);
        let iq_key = iq_key(image_query_id);
        if let Some(m) = self.markers.get_mut(&key) {
            if m.iq_key == iq_key && m.state != State::Settled {
                // Inherited (already durable) or already marked in this run.
                m.state = State::Live;
                return Ok(());
            }
        }
        self.markers.insert(
            key,
            Marker {
                iq_key,
                state: State::Live,
            },
        );
        if self.file.is_none() || self.next_slot >= self.slots {
            if self.unjournaled && Instant::now() < self.retry_at {
                return Ok(()); // still unjournaled: tried again at most once a second
            }
            return match self.compact() {
                Ok(()) => {
                    if std::mem::take(&mut self.unjournaled) {
                        tracing::info!(path = %self.path.display(), "attempt journal written again: the disk has room");
                    }
                    Ok(())
                }
                Err(Error::Io { source, .. }) if is_no_space(&source) => {
                    self.retry_at = Instant::now() + UNJOURNALED_RETRY;
                    if !std::mem::replace(&mut self.unjournaled, true) {
                        warn_unjournaled(&self.path, &source);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let slot = encode_slot(self.next_generation, id.lane.0, id.seq.0, iq_key);
        let offset = slot_offset(self.next_slot);
        let started = Instant::now();
        let synced = match self.durability {
            MarkerDurability::Synced => file
                .write_all_at(&slot, offset)
                .and_then(|()| file.sync_data()),
            MarkerDurability::OsBuffered => file.write_all_at(&slot, offset),
        };
        synced.map_err(|e| Error::io("write attempt marker", &self.path, e))?;
        self.sync_time += started.elapsed();
        self.marks_written += 1;
        self.next_slot += 1;
        self.next_generation = self.next_generation.saturating_add(1);
        Ok(())
    }

    /// `id` was acknowledged (delivered, dead-lettered, expired, skipped).
    pub fn settled(&mut self, id: RecordId) {
        if let Some(m) = self.markers.get_mut(&(id.lane.0, id.seq.0)) {
            if m.state == State::Live {
                m.state = State::Settled;
            }
        }
    }

    /// A cursor checkpoint is durable: settled markers are no longer needed.
    pub fn checkpointed(&mut self) {
        self.markers.retain(|_, m| m.state != State::Settled);
    }

    /// Writes the needed markers to a fresh file (see [`rewrite`]).
    fn compact(&mut self) -> Result<(), Error> {
        let fresh = rewrite(
            &*self.storage,
            &self.path,
            &self.markers,
            self.slots_min,
            &mut self.next_generation,
        )?;
        tracing::debug!(path = %self.path.display(), markers = fresh.next_slot, slots = fresh.slots, "attempt journal compacted");
        self.file = fresh.file;
        self.slots = fresh.slots;
        self.next_slot = fresh.next_slot;
        Ok(())
    }
}

/// The existing journal at `path`, reopened to go on after its last used slot (when no
/// fresh file can be written for want of space).
fn in_place(storage: &dyn Storage, path: &Path) -> io::Result<Fresh> {
    let file = storage.open(path, OpenMode::ReadWrite)?;
    // IMPORTANT: an earlier process may have renamed this file into place and died before
    // its directory sync: the name must be durable before markers written to it count.
    storage.sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    let mut header = [0_u8; SLOT_LEN];
    file.read_exact_at(&mut header, 0)?;
    let declared = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let len_slots = (file.size()? / SLOT_LEN as u64).saturating_sub(1);
    let slots = declared.min(u32::try_from(len_slots).unwrap_or(u32::MAX));
    let mut next_slot = 0;
    let mut block = [0_u8; SLOT_LEN];
    for index in 0..slots {
        file.read_exact_at(&mut block, slot_offset(index))?;
        if block.iter().any(|b| *b != 0) {
            next_slot = index + 1;
        }
    }
    Ok(Fresh {
        file: Some(file),
        slots,
        next_slot,
    })
}

fn warn_unjournaled(path: &Path, e: &io::Error) {
    tracing::warn!(path = %path.display(), error = %e, "no space for the attempt journal: requests go out without a durable marker until the disk has room (after a crash meanwhile, a duplicate's HTTP 400 is dead-lettered instead of counted as delivered; dlq replay resolves it)");
}

/// A freshly written journal file and where its next marker goes.
struct Fresh {
    file: Option<Arc<dyn StorageFile>>,
    slots: u32,
    next_slot: u32,
}

impl Fresh {
    /// No file (no room to write one): every marker tries to create it.
    fn none() -> Self {
        Self {
            file: None,
            slots: 0,
            next_slot: 0,
        }
    }
}

/// Writes `markers` to a fresh file with room for as many again (at least `slots_min`):
/// temp file, fsync, rename, directory fsync.
fn rewrite(
    storage: &dyn Storage,
    path: &Path,
    markers: &BTreeMap<(u16, u64), Marker>,
    slots_min: u32,
    next_generation: &mut u64,
) -> Result<Fresh, Error> {
    let needed = u32::try_from(markers.len()).unwrap_or(u32::MAX);
    let slots = slots_min.max(needed.saturating_mul(2));
    let mut bytes = vec![0_u8; SLOT_LEN * (slots as usize + 1)];
    bytes[..SLOT_LEN].copy_from_slice(&encode_header(slots));
    for (i, (&(lane, seq), m)) in markers.iter().enumerate() {
        let slot = encode_slot(*next_generation, lane, seq, m.iq_key);
        *next_generation = next_generation.saturating_add(1);
        let at = SLOT_LEN * (i + 1);
        bytes[at..at + SLOT_LEN].copy_from_slice(&slot);
    }
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    quarantine_foreign(storage, &tmp)?;
    let written = storage.open(&tmp, OpenMode::Create).and_then(|f| {
        f.set_len(0)?;
        f.write_all_at(&bytes, 0)?;
        f.sync_data()?;
        Ok(f)
    });
    let file = written.map_err(|e| {
        let _ = storage.remove_file(&tmp); // a partial temp file must not hold space
        Error::io("write", &tmp, e)
    })?;
    storage
        .rename(&tmp, path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // IMPORTANT: the new journal must be the one found after a crash before any request
    // relies on the markers it holds.
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io(RENAMED_OP, dir, e))?;
    Ok(Fresh {
        file: Some(file),
        slots,
        next_slot: needed,
    })
}

/// FNV-1a, 64 bits: stable across builds and platforms.
fn iq_key(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn slot_offset(index: u32) -> u64 {
    (u64::from(index) + 1) * SLOT_LEN as u64
}

fn seal(block: &mut [u8; SLOT_LEN]) {
    let crc = crc32c::crc32c(&block[..CRC_AT]);
    block[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(block: &[u8; SLOT_LEN]) -> bool {
    let mut crc = [0_u8; 4];
    crc.copy_from_slice(&block[CRC_AT..]);
    crc32c::crc32c(&block[..CRC_AT]) == u32::from_le_bytes(crc)
}

fn encode_header(slots: u32) -> [u8; SLOT_LEN] {
    let mut block = [0_u8; SLOT_LEN];
    block[..8].copy_from_slice(MAGIC);
    block[8..12].copy_from_slice(&VERSION.to_le_bytes());
    block[12..16].copy_from_slice(&slots.to_le_bytes());
    seal(&mut block);
    block
}

fn encode_slot(generation: u64, lane: u16, seq: u64, iq_key: u64) -> [u8; SLOT_LEN] {
    let mut block = [0_u8; SLOT_LEN];
    block[..8].copy_from_slice(&generation.to_le_bytes());
    block[8..16].copy_from_slice(&seq.to_le_bytes());
    block[16..24].copy_from_slice(&iq_key.to_le_bytes());
    block[24..26].copy_from_slice(&lane.to_le_bytes());
    seal(&mut block);
    block
}

/// A valid marker read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    generation: u64,
    lane: u16,
    seq: u64,
    iq_key: u64,
}

fn decode_slot(block: &[u8; SLOT_LEN]) -> Option<Slot> {
    let u64_at = |i: usize| {
        let mut b = [0_u8; 8];
        b.copy_from_slice(&block[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let slot = Slot {
        generation: u64_at(0),
        seq: u64_at(8),
        iq_key: u64_at(16),
        lane: u16::from_le_bytes([block[24], block[25]]),
    };
    (sealed(block) && slot.generation != 0).then_some(slot)
}

/// Every valid marker in the file, whatever the header says (a damaged header must not
/// hide markers); the header only has to be right for the report to call it good.
fn load(storage: &dyn Storage, path: &Path) -> io::Result<(Vec<Slot>, JournalReport)> {
    let limit = ((SLOTS_READ_MAX + 1) * SLOT_LEN) as u64;
    let file = storage.open(path, OpenMode::Read)?;
    let len = usize::try_from(file.size()?.min(limit)).unwrap_or(usize::MAX);
    let mut bytes = vec![0_u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    let mut report = JournalReport::default();
    let mut blocks = bytes.chunks_exact(SLOT_LEN).map(|c| {
        let mut block = [0_u8; SLOT_LEN];
        block.copy_from_slice(c);
        block
    });
    report.bad_header = blocks
        .next()
        .is_none_or(|h| !(sealed(&h) && &h[..8] == MAGIC));
    let mut slots = Vec::new();
    for block in blocks {
        match decode_slot(&block) {
            Some(slot) => slots.push(slot),
            None if block.iter().all(|b| *b == 0) => {}
            None => report.damaged_slots += 1,
        }
    }
    if bytes.len() % SLOT_LEN != 0 {
        report.damaged_slots += 1;
    }
    Ok((slots, report))
}

#[cfg(test)]
mod tests;
