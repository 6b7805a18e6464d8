//! Duplicate suppression that survives restarts: a bounded set of the request ids and image
//! query ids of recently delivered items, kept in memory and in an append-only log
//! (`<queue_dir>/dedupe.log`) that is compacted when it grows past twice the set.
//!
//! The log also holds the worker's *run markers* ([`PreviousRun`]): "running" is written
//! before the first delivery of a run and "stopped" after its last checkpoint, so the next
//! run knows whether records may be redelivered after a crash (see `docs/SEMANTICS.md`).
//!
//! Log format: the magic `EQDEDUP1`, then frames `[len u32][crc32c u32][kind u8][payload]`
//! (little-endian; the crc covers kind and payload). Kind 1 holds 16-byte keys (FNV-1a 128
//! of a tag byte and the id); kind 2 a run marker. A frame that fails its check ends the
//! log: it is cut off there (a torn append), and the keys before it are kept.
//!
//! On a full disk (ENOSPC, EDQUOT) the set keeps working in memory: the log is not needed
//! for correctness (delivery is at least once; it only suppresses duplicates after a
//! restart), so a reader that must start on a full disk to free it is not stopped by it.
//! A write that finds no space is cut back off the file, its keys stay unsaved, and the
//! next [`persist`](DedupeSet::persist) tries again; one WARN per spell, one INFO when
//! the log is written again. A "running" marker that finds no room cuts a "stopped" marker
//! off the log's tail (a truncation needs no space), so a crash of the run is never read
//! as a clean stop.
//!
//! Every open of the log (at start, after a compaction's rename, after a full disk) syncs
//! its directory before appending: a name an earlier process created or renamed into place
//! may not be durable yet.
//!
//! All file I/O goes through the wal's storage seam ([`Storage`]): [`DedupeSet::open`]
//! uses the real file system, [`DedupeSet::open_on`] any storage (the simulated disk of
//! `worker/tests/crash_states.rs` explores every crash point of the log through it).

use std::collections::{HashSet, VecDeque};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use escalation_queue_wal::{FileKind, OpenMode, RealStorage, Storage, StorageFile};

use crate::escalation::Escalation;
use crate::layout::{is_no_space, Error};

const MAGIC: &[u8; 8] = b"EQDEDUP1";
const FRAME_HEADER_LEN: usize = 9;
const KIND_KEYS: u8 = 1;
const KIND_RUN: u8 = 2;
const KEY_LEN: usize = 16;
/// Largest frame accepted when reading: bounds memory on a damaged length.
const FRAME_LEN_MAX: usize = 16 << 20;
const RUN_LEN: usize = 17;
/// Bytes read from the storage at a time when loading the log.
const READ_CHUNK: usize = 64 << 10;

/// Default number of recent items remembered.
pub const DEFAULT_DEDUPE_ITEMS_MAX: usize = 100_000;

/// Which id matched an earlier delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateOf {
    /// The request id (the edge's SDK retried a request).
    RequestId,
    /// The image query id (the cloud would reject it with a 400).
    ImageQueryId,
}

/// The item a cleanly stopped worker left unacknowledged after attempting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Its lane.
    pub lane: u16,
    /// Its sequence number.
    pub seq: u64,
    /// Whether an attempt's response may have been lost (the cloud may have it).
    pub response_possibly_lost: bool,
}

/// How the previous worker run ended, from its markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviousRun {
    /// No log: a new queue (or the log was deleted).
    First,
    /// Stopped gracefully after a final checkpoint.
    Clean {
        /// The attempted item it left for redelivery, if any.
        in_flight: Option<InFlight>,
    },
    /// Crashed or was killed: up to `window_records` records per lane may be redelivered
    /// although they were already submitted.
    Unclean {
        /// The previous run's checkpoint interval in acknowledgements, plus one in flight.
        window_records: u32,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct DedupeSet {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    /// `None` while the disk had no room to create the log (see the module docs).
    file: Option<Arc<dyn StorageFile>>,
    /// The log's valid length: where the next frame goes.
    len: u64,
    /// A write found no space and the log is behind the set.
    degraded: bool,
    keys: HashSet<u128>,
    order: VecDeque<u128>,
    unsaved: Vec<u128>,
    keys_max: usize,
    keys_in_file: usize,
    last_run: Option<[u8; RUN_LEN]>,
    /// Where the log's last frame starts when it is a run marker.
    tail_run_at: Option<u64>,

    previous_run: PreviousRun,
}

impl DedupeSet {
    /// Opens (or creates, mode 0600) the log at `path` on the real file system,
    /// remembering `items_max` items.
    pub fn open(path: impl Into<PathBuf>, items_max: usize) -> Result<Self, Error> {
        Self::open_on(Arc::new(RealStorage), path, items_max)
    }

    /// Opens (or creates) the log at `path` on `storage`, remembering `items_max` items.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        path: impl Into<PathBuf>,
        items_max: usize,
    ) -> Result<Self, Error> {
        let path = path.into();
        let keys_max = items_max.max(1).saturating_mul(2);
        quarantine_foreign(&*storage, &path)?;
        let found = load(&*storage, &path).map_err(|e| Error::io("read", &path, e))?;
        let existed = found.is_some();
        let loaded = found.unwrap_or_default();
        let (file, len, degraded) = match create_log(&*storage, &path, loaded.valid_len) {
            Ok((file, len)) => (Some(file), len, false),
            Err(e) if is_no_space(&e.1) => {
                // Retried from the same valid length: a log that is valid up to it keeps
                // its keys and run marker.
                warn_no_space(&path, &e.1);
                (None, loaded.valid_len, true)
            }
            Err((op, e)) => return Err(Error::io(op, &path, e)),
        };
        let mut set = Self {
            storage,
            file,
            len,
            degraded,
            path,
            keys: HashSet::new(),
            order: VecDeque::new(),
            unsaved: Vec::new(),
            keys_max,
            keys_in_file: loaded.keys.len(),
            last_run: loaded.last_run,
            tail_run_at: loaded.tail_run_at,
            previous_run: match (existed, loaded.last_run) {
                (false, _) => PreviousRun::First,
                (true, Some(run)) => decode_run(&run),
                (true, None) => PreviousRun::Unclean { window_records: 65 },
            },
        };
        for key in loaded.keys {
            set.remember(key);
        }
        Ok(set)
    }

    /// How the previous run ended.
    pub fn previous_run(&self) -> PreviousRun {
        self.previous_run
    }

    /// Keys remembered (two per item).
    pub fn len_keys(&self) -> usize {
        self.order.len()
    }

    /// Whether `escalation`'s request id or image query id was delivered recently.
    pub fn contains(&self, escalation: &Escalation) -> Option<DuplicateOf> {
        if self.keys.contains(&key(b'q', &escalation.image_query_id)) {
            Some(DuplicateOf::ImageQueryId)
        } else if self.keys.contains(&key(b'r', &escalation.request_id)) {
            Some(DuplicateOf::RequestId)
        } else {
            None
        }
    }

    /// Remembers `escalation`'s ids (durable at the next [`persist`](Self::persist)).
    pub fn insert(&mut self, escalation: &Escalation) {
        for k in [
            key(b'q', &escalation.image_query_id),
            key(b'r', &escalation.request_id),
        ] {
            if self.remember(k) {
                self.unsaved.push(k);
            }
        }
    }

    fn remember(&mut self, k: u128) -> bool {
        if !self.keys.insert(k) {
            return false;
        }
        self.order.push_back(k);
        while self.order.len() > self.keys_max {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }

    /// Makes every inserted id durable; compacts the log when it holds more than twice
    /// the set.
    pub fn persist(&mut self) -> Result<(), Error> {
        if !self.unsaved.is_empty() {
            let mut payload = Vec::with_capacity(self.unsaved.len() * KEY_LEN);
            for k in &self.unsaved {
                payload.extend_from_slice(&k.to_le_bytes());
            }
            if !self.append(KIND_KEYS, &payload)? {
                return Ok(()); // no space: the keys stay unsaved, tried again next time
            }
            self.keys_in_file += self.unsaved.len();
            self.unsaved.clear();
        }
        if self.keys_in_file > self.keys_max.saturating_mul(2) {
            self.compact()?;
        }
        Ok(())
    }

    /// Whether the log is behind the set because the disk had no room (module docs).
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Records, durably, that a run is starting: until it stops cleanly, up to
    /// `window_records` records per lane may be redelivered after being submitted.
    pub fn mark_running(&mut self, window_records: u32) -> Result<(), Error> {
        let mut run = [0_u8; RUN_LEN];
        run[0] = 1;
        run[1..5].copy_from_slice(&window_records.to_le_bytes());
        if !self.append(KIND_RUN, &run)? {
            self.cut_clean_tail()?;
        }
        self.last_run = Some(run);
        Ok(())
    }

    /// No room for a "running" marker: a "stopped" marker at the log's tail would make a
    /// crash of this run read as a clean stop, so it is cut off (a shorter file needs no
    /// space). The marker before it, if any, is "running": the next open reads the run as
    /// unclean, as it must.
    fn cut_clean_tail(&mut self) -> Result<(), Error> {
        let (Some(at), Some(run)) = (self.tail_run_at, self.last_run) else {
            return Ok(());
        };
        if run[0] != 2 {
            return Ok(());
        }
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => self
                .storage
                .open(&self.path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open", &self.path, e))?,
        };
        file.set_len(at)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("truncate", &self.path, e))?;
        self.len = at;
        self.tail_run_at = None;
        Ok(())
    }

    /// Persists the ids, then records, durably, a clean stop (after the final checkpoint).
    pub fn mark_stopped(&mut self, in_flight: Option<InFlight>) -> Result<(), Error> {
        self.persist()?;
        let mut run = [0_u8; RUN_LEN];
        run[0] = 2;
        if let Some(f) = in_flight {
            run[5] = 1 + u8::from(f.response_possibly_lost);
            run[6..8].copy_from_slice(&f.lane.to_le_bytes());
            run[8..16].copy_from_slice(&f.seq.to_le_bytes());
        }
        self.append(KIND_RUN, &run)?;
        self.last_run = Some(run);
        Ok(())
    }

    /// Appends one frame durably. `Ok(false)`: the disk had no room; nothing of the frame
    /// is left in the log and the caller keeps what it holds for a later try.
    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<bool, Error> {
        if self.file.is_none() {
            match create_log(&*self.storage, &self.path, self.len) {
                Ok((file, len)) => {
                    self.file = Some(file);
                    self.len = len;
                }
                Err((_, e)) if is_no_space(&e) => {
                    if !std::mem::replace(&mut self.degraded, true) {
                        warn_no_space(&self.path, &e);
                    }
                    return Ok(false);
                }
                Err((op, e)) => return Err(Error::io(op, &self.path, e)),
            }
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(false);
        };
        let frame = frame(kind, payload);
        // At the valid length, whatever a failed earlier append left after it.
        match file
            .write_all_at(&frame, self.len)
            .and_then(|()| file.sync_data())
        {
            Ok(()) => {
                self.tail_run_at = (kind == KIND_RUN).then_some(self.len);
                self.len += frame.len() as u64;
                if std::mem::take(&mut self.degraded) {
                    tracing::info!(path = %self.path.display(), "dedupe log written again: the disk has room");
                }
                Ok(true)
            }
            Err(e) if is_no_space(&e) => {
                // Cut the partial frame off, so that later frames follow a valid one.
                if let Err(cut) = file.set_len(self.len) {
                    return Err(Error::io("truncate", &self.path, cut));
                }
                if !std::mem::replace(&mut self.degraded, true) {
                    warn_no_space(&self.path, &e);
                }
                Ok(false)
            }
            Err(e) => Err(Error::io("append", &self.path, e)),
        }
    }

    /// Rewrites the log with only the remembered keys: temp file, fsync, rename, dir fsync.
    fn compact(&mut self) -> Result<(), Error> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut bytes = MAGIC.to_vec();
        let keys: Vec<u8> = self.order.iter().flat_map(|k| k.to_le_bytes()).collect();
        bytes.extend(frame(KIND_KEYS, &keys));
        let mut tail_run_at = None;
        if let Some(run) = &self.last_run {
            tail_run_at = Some(bytes.len() as u64);
            bytes.extend(frame(KIND_RUN, run));
        }
        let storage = &*self.storage;
        quarantine_foreign(storage, &tmp)?;
        let written = storage.open(&tmp, OpenMode::Create).and_then(|f| {
            f.set_len(0)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_data()
        });
        match written {
            Ok(()) => {}
            Err(e) if is_no_space(&e) => {
                // The log stays as it is (valid, only longer); compaction is tried again at
                // a later persist.
                let _ = storage.remove_file(&tmp);
                if !std::mem::replace(&mut self.degraded, true) {
                    warn_no_space(&self.path, &e);
                }
                return Ok(());
            }
            Err(e) => return Err(Error::io("write", &tmp, e)),
        }
        storage
            .rename(&tmp, &self.path)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        // From here the name is the new file's: never append to the old one again (a later
        // append reopens the log by its name if a step below fails).
        self.file = None;
        self.len = bytes.len() as u64;
        self.tail_run_at = tail_run_at;
        self.keys_in_file = self.order.len();
        // IMPORTANT: the rename must be durable before the old log's keys are relied on:
        // `create_log` syncs the directory before the new file is written to.
        let (file, len) = create_log(storage, &self.path, self.len)
            .map_err(|(op, e)| Error::io(op, &self.path, e))?;
        self.file = Some(file);
        self.len = len;
        Ok(())
    }
}

/// FNV-1a, 128 bits, of a tag byte and the id: stable across builds and platforms.
fn key(tag: u8, id: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for byte in std::iter::once(tag).chain(id.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

fn decode_run(run: &[u8; RUN_LEN]) -> PreviousRun {
    let u16_at = |i: usize| u16::from_le_bytes([run[i], run[i + 1]]);
    let mut seq = [0_u8; 8];
    seq.copy_from_slice(&run[8..16]);
    match run[0] {
        2 => PreviousRun::Clean {
            in_flight: (run[5] > 0).then(|| InFlight {
                lane: u16_at(6),
                seq: u64::from_le_bytes(seq),
                response_possibly_lost: run[5] == 2,
            }),
        },
        _ => PreviousRun::Unclean {
            window_records: u32::from_le_bytes([run[1], run[2], run[3], run[4]]),
        },
    }
}

fn warn_no_space(path: &Path, e: &io::Error) {
    tracing::warn!(path = %path.display(), error = %e, "no space for the dedupe log: recently delivered ids are kept in memory only until the disk has room (after a crash meanwhile, some escalations may be delivered again)");
}

/// The directory holding `path`.
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// If `path` exists on `storage` and is not a regular file (a symlink, a FIFO, a
/// directory...), moves it aside to `<path>.foreign-<unix ms>` (a rename moves the entry
/// itself, never what a link points to), makes the move durable and reports it: the
/// worker's own files (this log, the attempt journal) then start afresh instead of the
/// worker being unable to start. Returns where it went.
pub(crate) fn quarantine_foreign(
    storage: &dyn Storage,
    path: &Path,
) -> Result<Option<PathBuf>, Error> {
    let kind = match storage.entry_kind(path) {
        Ok(None | Some(FileKind::Regular)) => return Ok(None),
        Ok(Some(kind)) => kind,
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(
        ".foreign-{}",
        escalation_queue_wal::clock::now_unix_ms()
    ));
    let aside = PathBuf::from(aside);
    storage
        .rename(path, &aside)
        .map_err(|e| Error::io("rename", path, e))?;
    let dir = parent(path);
    // IMPORTANT: the move must be durable before a fresh file takes the name.
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync dir", dir, e))?;
    tracing::error!(path = %path.display(), moved_to = %aside.display(), found = %kind, "a queue file was not a regular file (symlink, FIFO, directory...); it was moved aside, never opened, and a fresh file is used");
    Ok(Some(aside))
}

/// An I/O error with the name of the operation that failed.
type FailedOp = (&'static str, io::Error);

/// Opens the log for appending after `valid_len` bytes, writing the magic into a new file;
/// returns it with its length. An error names the operation that failed.
fn create_log(
    storage: &dyn Storage,
    path: &Path,
    valid_len: u64,
) -> Result<(Arc<dyn StorageFile>, u64), FailedOp> {
    let file = storage
        .open(path, OpenMode::Create)
        .map_err(|e| ("open", e))?;
    let mut len = valid_len;
    if valid_len < MAGIC.len() as u64 {
        let found = file.size().map_err(|e| ("stat", e))?;
        if found > 0 {
            tracing::warn!(path = %path.display(), bytes = found, "dedupe log does not start with its magic (not a dedupe log, or damaged); its contents are discarded and it starts empty: recently delivered escalations may be delivered again");
        }
        file.set_len(0).map_err(|e| ("truncate", e))?;
        let written = file.write_all_at(MAGIC, 0).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = file.set_len(0); // never leave a partial magic behind
            return Err(("write", e));
        }
        len = MAGIC.len() as u64;
    } else if file.size().map_err(|e| ("stat", e))? > valid_len {
        tracing::warn!(path = %path.display(), valid_len, "dedupe log has a torn or damaged tail; cutting it off");
        file.set_len(valid_len).map_err(|e| ("truncate", e))?;
        file.sync_data().map_err(|e| ("fsync", e))?;
    }
    // IMPORTANT: the log's directory entry must be durable before anything appended to it
    // is relied on: a new log's, a log compacted into place by a rename, and one found on
    // open (an earlier process may have created or renamed it and failed its sync).
    storage
        .sync_dir(parent(path))
        .map_err(|e| ("fsync dir", e))?;
    Ok((file, len))
}

/// A file of the storage read from its start, as a stream (a damaged log can be large:
/// it is read frame by frame, never whole).
struct FileStream<'a> {
    file: &'a dyn StorageFile,
    offset: u64,
    len: u64,
}

impl Read for FileStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.offset);
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        if n == 0 {
            return Ok(0);
        }
        self.file.read_exact_at(dst, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[derive(Default)]
struct Loaded {
    keys: Vec<u128>,
    last_run: Option<[u8; RUN_LEN]>,
    tail_run_at: Option<u64>,
    valid_len: u64,
}

/// What the log at `path` holds; `None` when there is no log.
fn load(storage: &dyn Storage, path: &Path) -> io::Result<Option<Loaded>> {
    let file = match storage.open(path, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stream = FileStream {
        file: &*file,
        offset: 0,
        len: file.size()?,
    };
    let mut reader = BufReader::with_capacity(READ_CHUNK, stream);
    let mut loaded = Loaded::default();
    let mut magic = [0_u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(Some(loaded));
    }
    loaded.valid_len = MAGIC.len() as u64;
    let mut header = [0_u8; FRAME_HEADER_LEN];
    while reader.read_exact(&mut header).is_ok() {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        if len > FRAME_LEN_MAX {
            break;
        }
        let mut payload = vec![0_u8; len];
        if reader.read_exact(&mut payload).is_err()
            || crc32c::crc32c_append(crc32c::crc32c(&[kind]), &payload) != crc
        {
            break;
        }
        match kind {
            KIND_KEYS if len.is_multiple_of(KEY_LEN) => {
                loaded.keys.extend(payload.chunks_exact(KEY_LEN).map(|c| {
                    let mut k = [0_u8; KEY_LEN];
                    k.copy_from_slice(c);
                    u128::from_le_bytes(k)
                }));
                loaded.tail_run_at = None;
            }
            KIND_RUN if len == RUN_LEN => {
                let mut run = [0_u8; RUN_LEN];
                run.copy_from_slice(&payload);
                loaded.last_run = Some(run);
                loaded.tail_run_at = Some(loaded.valid_len);
            }
            _ => break,
        }
        loaded.valid_len += (FRAME_HEADER_LEN + len) as u64;
    }
    Ok(Some(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::ImageSource;
    use std::fs::{self, OpenOptions};

    fn esc(n: u32) -> Escalation {
        let mut e = Escalation::new("det_x", ImageSource::Inline(vec![1_u8].into()));
        e.image_query_id = format!("iq_{n}");
        e.request_id = format!("req_{n}");
        e
    }

    /// Issue 10 property ("arbitrary bytes in any queue file never hang or panic"): 200
    /// seeded cases of random bytes as the dedupe log, half behind a valid magic. Each open
    /// returns (on a thread with a deadline), and the set works after it: an id inserted
    /// and persisted is found after a reopen.
    #[test]
    fn arbitrary_bytes_as_the_log_open_to_a_working_set() {
        let mut rng = fastrand::Rng::with_seed(10);
        for case in 0..200 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("dedupe.log");
            let mut bytes: Vec<u8> = if case % 2 == 0 {
                MAGIC.to_vec()
            } else {
                Vec::new()
            };
            let len = rng.usize(0..20_000);
            bytes.extend((0..len).map(|_| rng.u8(..)));
            fs::write(&path, &bytes).expect("garbage");
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || {
                let opened = DedupeSet::open(&p, 10).map(|mut set| {
                    set.insert(&esc(7));
                    set.persist().expect("persist");
                });
                let _ = tx.send(opened.is_ok());
            });
            let opened = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("case {case}: open hung or panicked: {e}"));
            assert!(opened, "case {case}: open failed");
            let set = DedupeSet::open(&path, 10).expect("reopen");
            assert!(set.contains(&esc(7)).is_some(), "case {case}");
        }
    }

    /// Probe F7/F8 for the worker's files: `dedupe.log` as a symlink to a victim, a FIFO or
    /// a directory. Opening followed the link (and would have truncated the victim) or
    /// hung on the FIFO. Now the entry is moved aside, never opened, and a fresh log used.
    #[test]
    fn a_foreign_dedupe_log_is_moved_aside_never_opened() {
        type Plant = fn(&Path, &Path);
        let plants: [Plant; 3] = [
            |p, victim| std::os::unix::fs::symlink(victim, p).expect("link"),
            |p, _| {
                let ok = std::process::Command::new("mkfifo").arg(p).status();
                assert!(ok.expect("mkfifo").success());
            },
            |p, _| fs::create_dir(p).expect("dir"),
        ];
        for plant in plants {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("dedupe.log");
            let victim = dir.path().join("victim");
            fs::write(&victim, b"victim bytes").expect("victim");
            plant(&path, &victim);
            let mut set = DedupeSet::open(&path, 10).expect("opens afresh");
            set.insert(&esc(1));
            set.persist().expect("persist");
            assert_eq!(fs::read(&victim).expect("victim"), b"victim bytes");
            assert!(fs::symlink_metadata(&path)
                .expect("log")
                .file_type()
                .is_file());
            let aside = fs::read_dir(dir.path())
                .expect("list")
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("dedupe.log.foreign-")
                })
                .count();
            assert_eq!(aside, 1, "the foreign entry is kept, moved aside");
        }
    }

    #[test]
    fn ids_survive_a_restart_and_the_set_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dedupe.log");
        let mut set = DedupeSet::open(&path, 10).expect("open");
        assert_eq!(set.previous_run(), PreviousRun::First);
        set.mark_running(65).expect("mark");
        for n in 0..25 {
            set.insert(&esc(n));
        }
        set.persist().expect("persist");
        drop(set);
        let set = DedupeSet::open(&path, 10).expect("reopen");
        assert_eq!(
            set.previous_run(),
            PreviousRun::Unclean { window_records: 65 }
        );
        assert_eq!(set.len_keys(), 20);
        assert_eq!(set.contains(&esc(24)), Some(DuplicateOf::ImageQueryId));
        let mut other = esc(99);
        other.request_id = "req_20".into();
        assert_eq!(set.contains(&other), Some(DuplicateOf::RequestId));
        assert_eq!(set.contains(&esc(3)), None, "evicted");
    }

    #[test]
    fn clean_stop_marker_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dedupe.log");
        let mut set = DedupeSet::open(&path, 5).expect("open");
        for n in 0..100 {
            set.insert(&esc(n));
            set.persist().expect("persist");
        }
        let in_flight = InFlight {
            lane: 3,
            seq: 77,
            response_possibly_lost: true,
        };
        set.mark_stopped(Some(in_flight)).expect("stop");
        let size = fs::metadata(&path).expect("meta").len();
        assert!(size < 1000, "compacted: {size} bytes");
        drop(set);
        let set = DedupeSet::open(&path, 5).expect("reopen");
        assert_eq!(
            set.previous_run(),
            PreviousRun::Clean {
                in_flight: Some(in_flight)
            }
        );
        assert!(set.contains(&esc(99)).is_some());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_earlier_keys_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dedupe.log");
        let mut set = DedupeSet::open(&path, 100).expect("open");
        set.insert(&esc(1));
        set.persist().expect("persist");
        set.insert(&esc(2));
        set.persist().expect("persist");
        drop(set);
        let len = fs::metadata(&path).expect("meta").len();
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(len - 5).expect("tear");
        let mut set = DedupeSet::open(&path, 100).expect("reopen");
        assert!(set.contains(&esc(1)).is_some());
        assert!(set.contains(&esc(2)).is_none());
        set.insert(&esc(3));
        set.persist().expect("append after the cut");
        drop(set);
        let set = DedupeSet::open(&path, 100).expect("reopen");
        assert!(set.contains(&esc(3)).is_some());
    }
}
