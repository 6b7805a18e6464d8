//! A simulated disk behind the storage seam, for tests: it keeps the bytes the OS has been
//! given apart from the bytes that are durable, so a "power loss" can drop unsynced writes,
//! tear them at sector granularity, and forget directory entries that were never synced.
//!
//! It also injects faults on command: EIO or ENOSPC on the n-th call of an operation kind
//! (once, or from then on), stale and misdirected sector reads, and a "stop the world"
//! hook that freezes the disk right after the n-th state-changing call so a test can
//! crash at every point of a workload (see [`SimDisk::stop_after`]).
//!
//! The crash model promises no more than POSIX does, whatever ext4 or xfs add on top:
//!
//! * data written with `write_all_at` and lengths set with `set_len` are durable only once
//!   `sync_data` of that file returned; until then a crash may keep them, drop them, tear
//!   them at sector boundaries or zero them, as the [`CrashMode`] says (no mode relies on
//!   ext4's `auto_da_alloc` flushing a file replaced by a rename);
//! * a created, removed or renamed directory entry is durable only once `sync_dir` of its
//!   directory returned (for a rename between directories, of both); until then the modes
//!   that lose directory entries put every directory back to its last synced state. A
//!   rename is atomic: after a crash the name shows the old file or the new one, never
//!   neither nor a mix, which ext4 and xfs (journaled metadata) give.
//!
//! Deterministic: all randomness comes from the seed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::fs::{LockGuard, OpenMode, Storage, StorageFile};

/// Sector size: the unit a power loss keeps or loses, and the unit of read faults.
pub const SECTOR: usize = 512;

/// What a simulated power loss keeps of the data that was written but not synced.
///
/// Every mode but [`CrashMode::KeepAll`] is a power loss: the boot id changes, so
/// watermarks written before it are no longer trusted as exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives: data and directory entries go back to their durable state.
    LoseUnsynced,
    /// Each unsynced 512-byte sector independently survives or not (torn writes, pages
    /// written back out of order). Unsynced directory entries are lost.
    KeepRandomSectors,
    /// Everything written survives (a process crash: the OS still had it all).
    KeepAll,
    /// Everything written survives except the last write, which is cut at a random
    /// 512-byte boundary inside it (only a prefix of its sectors reached the medium; the
    /// rest keep their earlier contents). Directory entries survive.
    TornLastWrite,
    /// Files keep their written length, but unsynced sectors that never held durable data
    /// come back as zeros (the file system extended the file or converted its allocation,
    /// but the data blocks were never written: ext4 `data=writeback`, or fallocated extents
    /// still marked unwritten). Unsynced sectors that did hold durable data keep it, as a
    /// synced block is never zeroed by a later crash. Directory entries survive.
    ZeroedTail,
    /// All written data survives, but directory entries that were never synced are lost
    /// (created files vanish, removed files come back).
    LoseDirEntries,
}

impl CrashMode {
    /// Every mode, for tests that explore all of them.
    pub const ALL: [CrashMode; 6] = [
        CrashMode::LoseUnsynced,
        CrashMode::KeepRandomSectors,
        CrashMode::KeepAll,
        CrashMode::TornLastWrite,
        CrashMode::ZeroedTail,
        CrashMode::LoseDirEntries,
    ];
}

/// A kind of storage call, for fault injection and operation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimOp {
    /// [`Storage::open`] (any mode).
    Open,
    /// [`StorageFile::read_exact_at`], [`StorageFile::map_range`].
    Read,
    /// [`StorageFile::write_all_at`] (`pwrite`).
    Write,
    /// [`StorageFile::sync_data`] (`fdatasync`).
    Sync,
    /// [`StorageFile::allocate`] (`fallocate`).
    Allocate,
    /// [`Storage::sync_dir`] (`fsync` of a directory).
    SyncDir,
    /// [`Storage::remove_file`] (`unlink`).
    Remove,
    /// [`StorageFile::set_len`] (`ftruncate`).
    SetLen,
    /// [`Storage::rename`] (`rename`).
    Rename,
    /// [`Storage::entry_kind`] (`lstat`).
    Lookup,
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimErrno {
    /// `EIO` (errno 5).
    Eio,
    /// `ENOSPC` (errno 28).
    Enospc,
}

/// Whether an injected fault fires once or keeps firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Only the n-th call fails.
    Once,
    /// The n-th call and every later one of that kind fail.
    FromThenOn,
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The `n`-th `sync_data` from now (1 = the next) fails with EIO; later ones succeed.
    SyncFailsOnce(u64),
    /// Every `sync_data` from the `n`-th on fails with EIO.
    SyncFailsFrom(u64),
    /// The `n`-th `write_all_at` from now fails with EIO and writes nothing.
    WriteFailsOnce(u64),
    /// The `nth` call of kind `op` from now (1 = the next) fails with `errno`, doing
    /// nothing; with [`Repeat::FromThenOn`] every later one fails too.
    Fail {
        /// The kind of call.
        op: SimOp,
        /// Which call, counted from when the fault is armed.
        nth: u64,
        /// The error returned.
        errno: SimErrno,
        /// Once or from then on.
        repeat: Repeat,
    },
}

impl Fault {
    /// The general form of this fault.
    fn general(self) -> (SimOp, u64, SimErrno, Repeat) {
        match self {
            Fault::SyncFailsOnce(n) => (SimOp::Sync, n, SimErrno::Eio, Repeat::Once),
            Fault::SyncFailsFrom(n) => (SimOp::Sync, n, SimErrno::Eio, Repeat::FromThenOn),
            Fault::WriteFailsOnce(n) => (SimOp::Write, n, SimErrno::Eio, Repeat::Once),
            Fault::Fail {
                op,
                nth,
                errno,
                repeat,
            } => (op, nth, errno, repeat),
        }
    }
}

/// An armed fault: fires at call number `at` (absolute, per kind).
#[derive(Debug, Clone, Copy)]
struct Armed {
    op: SimOp,
    at: u64,
    errno: SimErrno,
    repeat: Repeat,
}

/// A sector that reads wrong.
#[derive(Debug, Clone)]
enum ReadFault {
    /// Reads return these bytes (the sector's durable bytes when the fault was set).
    Stale(Vec<u8>),
    /// Reads return the live bytes of another sector.
    Misdirected { inode: u64, sector: u64 },
}

#[derive(Debug, Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

/// The last write, for [`CrashMode::TornLastWrite`]: where it went and what it overwrote.
#[derive(Debug, Clone)]
struct LastWrite {
    inode: u64,
    offset: usize,
    before: Vec<u8>,
}

#[derive(Debug, Clone)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    live_names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
    epoch: u64,
    /// Power losses so far: each one is a new boot.
    boots: u64,
    capacity_bytes: Option<u64>,
    faults: Vec<Armed>,
    /// Calls so far, per kind.
    calls: HashMap<SimOp, u64>,
    /// State-changing calls so far (write, sync, allocate, set_len, sync_dir, remove,
    /// rename, open that creates): the crash points of a workload.
    mutations: u64,
    /// Freeze the disk once `mutations` reaches this.
    stop_at: Option<u64>,
    /// Frozen: every call fails until the next crash.
    stopped: bool,
    last_write: Option<LastWrite>,
    read_faults: HashMap<(u64, u64), ReadFault>,
    rng: u64,
}

/// The simulated disk. Cheap to clone; clones share the disk ([`SimDisk::fork`] copies it).
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk whose random choices derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                inodes: HashMap::new(),
                next_inode: 1,
                live_names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                locks: HashMap::new(),
                next_lock: 1,
                epoch: 0,
                boots: 0,
                capacity_bytes: None,
                faults: Vec::new(),
                calls: HashMap::new(),
                mutations: 0,
                stop_at: None,
                stopped: false,
                last_write: None,
                read_faults: HashMap::new(),
                rng: seed | 1,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An independent copy of this disk (its bytes, names, faults and counters), whose
    /// random choices derive from `seed`. Handles and locks of this disk do not carry
    /// over: the copy is as after a crash of every process, before the crash's losses are
    /// applied, so follow it with [`SimDisk::crash`].
    pub fn fork(&self, seed: u64) -> SimDisk {
        let mut s = self.lock().clone();
        s.rng = seed | 1;
        s.locks.clear();
        SimDisk {
            state: Arc::new(Mutex::new(s)),
        }
    }

    /// Simulates a power loss (or, with [`CrashMode::KeepAll`], a crash of every process):
    /// handles opened before it fail from now on, locks are released, armed faults, read
    /// faults and a pending stop are cleared, and the disk keeps what `mode` says of
    /// unsynced data and directory entries.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        s.epoch += 1;
        if mode != CrashMode::KeepAll {
            s.boots += 1;
        }
        s.locks.clear();
        s.faults.clear();
        s.read_faults.clear();
        s.stop_at = None;
        s.stopped = false;
        let names_survive = matches!(
            mode,
            CrashMode::KeepAll | CrashMode::TornLastWrite | CrashMode::ZeroedTail
        );
        if !names_survive {
            s.live_names = s.durable_names.clone();
        }
        if mode == CrashMode::TornLastWrite {
            tear_last_write(&mut s);
        }
        let mut rng = s.rng;
        for inode in s.inodes.values_mut() {
            match mode {
                CrashMode::KeepAll | CrashMode::TornLastWrite | CrashMode::LoseDirEntries => {}
                CrashMode::LoseUnsynced => inode.live = inode.durable.clone(),
                CrashMode::KeepRandomSectors => {
                    let mut kept = inode.durable.clone();
                    kept.resize(inode.live.len().max(kept.len()), 0);
                    for (i, sector) in inode.live.chunks(SECTOR).enumerate() {
                        let start = i * SECTOR;
                        if xorshift(&mut rng) & 1 == 0 {
                            // Always `Some`: `kept` is at least as long as `live`.
                            if let Some(dst) = kept.get_mut(start..start + sector.len()) {
                                dst.copy_from_slice(sector);
                            }
                        }
                    }
                    inode.live = kept;
                }
                CrashMode::ZeroedTail => {
                    let live_len = inode.live.len();
                    for (i, sector) in inode.live.chunks_mut(SECTOR).enumerate() {
                        let start = i * SECTOR;
                        let end = start + sector.len();
                        let dlen = inode.durable.len();
                        let durable = inode.durable.get(start.min(dlen)..end.min(dlen));
                        let durable = durable.unwrap_or(&[]);
                        if durable != &*sector {
                            sector.fill(0);
                            if durable.iter().any(|&b| b != 0) {
                                // Always `Some`: `durable` is no longer than the sector.
                                if let Some(dst) = sector.get_mut(..durable.len()) {
                                    dst.copy_from_slice(durable);
                                }
                            }
                        }
                    }
                    inode.live.truncate(live_len);
                }
            }
            inode.durable = inode.live.clone();
        }
        s.rng = rng;
        s.last_write = None;
        s.durable_names = s.live_names.clone();
        let reachable: HashSet<u64> = s.live_names.values().copied().collect();
        s.inodes.retain(|ino, _| reachable.contains(ino));
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        let mut s = self.lock();
        let (op, nth, errno, repeat) = fault.general();
        let at = s.calls.get(&op).copied().unwrap_or(0) + nth.max(1);
        s.faults.push(Armed {
            op,
            at,
            errno,
            repeat,
        });
    }

    /// Removes every armed fault (read faults stay; see [`SimDisk::clear_read_faults`]).
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Calls of kind `op` made so far (including failed ones).
    pub fn calls(&self, op: SimOp) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// State-changing calls made so far: writes, syncs, allocations, length changes,
    /// directory syncs, removals, renames and opens that create a file. These are a workload's crash points: a
    /// crash between two other calls leaves the same disk as a crash right after the
    /// state-changing call before them.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// Stops the world right after the `n`-th state-changing call from now (1 = the next)
    /// has completed: every later call of any kind fails with an error, as if every
    /// process using the disk had died at that instant, until [`SimDisk::crash`] applies
    /// the losses. `None` disarms it.
    pub fn stop_after(&self, n: Option<u64>) {
        let mut s = self.lock();
        s.stop_at = n.map(|n| s.mutations + n.max(1));
    }

    /// True once a [`SimDisk::stop_after`] point was reached (until the next crash).
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// From now on, reads of sector `sector` of `path` return what was durable in it at
    /// this moment, whatever is written later (a lost write, or a stale cache).
    pub fn stale_sector(&self, path: &Path, sector: u64) {
        let mut s = self.lock();
        let Some(&ino) = s.live_names.get(path) else {
            return;
        };
        let durable = s
            .inodes
            .get(&ino)
            .map(|i| i.durable.clone())
            .unwrap_or_default();
        let start = usize::try_from(sector).map_or(usize::MAX, |x| x.saturating_mul(SECTOR));
        let bytes = sector_at(&durable, start);
        s.read_faults.insert((ino, sector), ReadFault::Stale(bytes));
    }

    /// From now on, reads of sector `sector` of `path` return the live bytes of sector
    /// `from_sector` of `from_path` (a misdirected read: the right length, the wrong place).
    pub fn misdirect_sector(&self, path: &Path, sector: u64, from_path: &Path, from_sector: u64) {
        let mut s = self.lock();
        let (Some(&ino), Some(&from)) = (s.live_names.get(path), s.live_names.get(from_path))
        else {
            return;
        };
        s.read_faults.insert(
            (ino, sector),
            ReadFault::Misdirected {
                inode: from,
                sector: from_sector,
            },
        );
    }

    /// Removes every stale or misdirected sector.
    pub fn clear_read_faults(&self) {
        self.lock().read_faults.clear();
    }

    /// Limits the disk to `bytes` in total (`None`: unlimited). Allocations and writes
    /// beyond it fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity_bytes = bytes;
    }

    /// Bytes used by all files that have a name (removed files no longer count).
    pub fn used_bytes(&self) -> u64 {
        used(&self.lock())
    }

    /// The live bytes of a file, for tests that corrupt or inspect files directly.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.live_names.get(path)?;
        s.inodes.get(ino).map(|i| i.live.clone())
    }

    /// Overwrites a file's bytes, durably (a test's stand-in for damage on the medium).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.lock();
        if let Some(&ino) = s.live_names.get(path) {
            if let Some(i) = s.inodes.get_mut(&ino) {
                i.live = bytes.to_vec();
                i.durable = bytes.to_vec();
            }
        }
    }

    /// Removes a file by hand, durably (as an operator or another program would), without
    /// counting as a call of the wal.
    pub fn delete_file(&self, path: &Path) -> bool {
        let mut s = self.lock();
        let gone = s.live_names.remove(path).is_some();
        s.durable_names.remove(path);
        gone
    }

    /// Every file name on the disk, live view.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().live_names.keys().cloned().collect()
    }
}

/// Puts back the old contents of the sectors of the last write after a random cut.
fn tear_last_write(s: &mut State) {
    let Some(last) = s.last_write.take() else {
        return;
    };
    let end = last.offset + last.before.len();
    // Sector boundaries strictly inside the write, plus its start (nothing kept).
    let first_boundary = (last.offset / SECTOR + 1) * SECTOR;
    let mut cuts = vec![last.offset];
    cuts.extend((first_boundary..end).step_by(SECTOR));
    let pick = (xorshift(&mut s.rng) % cuts.len() as u64) as usize;
    // Always `Some`: `pick` is below `cuts.len()`, and every cut lies within the write.
    let Some(&cut) = cuts.get(pick) else { return };
    let Some(restore) = last.before.get(cut - last.offset..) else {
        return;
    };
    if let Some(inode) = s.inodes.get_mut(&last.inode) {
        if let Some(dst) = inode.live.get_mut(cut..cut + restore.len()) {
            dst.copy_from_slice(restore);
        }
    }
}

/// The `SECTOR` bytes of `data` from `start`, zero-filled past its end.
fn sector_at(data: &[u8], start: usize) -> Vec<u8> {
    let tail = data.get(start..).unwrap_or_default();
    let mut bytes = tail.get(..SECTOR).unwrap_or(tail).to_vec();
    bytes.resize(SECTOR, 0);
    bytes
}

/// Bytes used by files that have a name: a removed file's space is free again, as on a
/// real file system once the last handle is closed (simulated maps are copies and hold
/// no space).
fn used(s: &State) -> u64 {
    let named: HashSet<u64> = s.live_names.values().copied().collect();
    named
        .iter()
        .filter_map(|ino| s.inodes.get(ino))
        .map(|i| i.live.len() as u64)
        .sum()
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO on {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn stopped_error() -> io::Error {
    io::Error::other("simulated crash: the world stopped")
}

/// Counts a call of kind `op`: fails it when the world stopped or a fault fires, and
/// counts it as a crash point when it changes state (`mutates`).
fn enter(s: &mut State, op: SimOp, mutates: bool) -> io::Result<()> {
    if s.stopped {
        return Err(stopped_error());
    }
    let n = {
        let c = s.calls.entry(op).or_insert(0);
        *c += 1;
        *c
    };
    let mut fired = None;
    s.faults.retain(|f| {
        if f.op != op {
            return true;
        }
        match f.repeat {
            Repeat::Once if f.at == n => {
                fired = Some(f.errno);
                false
            }
            Repeat::FromThenOn if n >= f.at => {
                fired = Some(f.errno);
                true
            }
            _ => true,
        }
    });
    match fired {
        Some(SimErrno::Enospc) => return Err(enospc()),
        Some(SimErrno::Eio) => {
            return Err(match op {
                SimOp::Sync => eio("fdatasync"),
                SimOp::Write => eio("write"),
                _ => io::Error::from_raw_os_error(5),
            })
        }
        None => {}
    }
    if mutates {
        s.mutations += 1;
    }
    Ok(())
}

/// Marks the world stopped if the call just completed was the stop point.
fn leave(s: &mut State) {
    if s.stop_at.is_some_and(|at| s.mutations >= at) {
        s.stopped = true;
        s.stop_at = None;
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        op: SimOp,
        mutates: bool,
        f: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other("simulated process died in a crash"));
        }
        enter(&mut s, op, mutates)?;
        let out = f(&mut s, self.inode);
        leave(&mut s);
        out
    }
}

fn grow_within_capacity(s: &State, ino: u64, end: u64) -> io::Result<()> {
    let cur = s.inodes.get(&ino).map_or(0, |i| i.live.len() as u64);
    if let Some(cap) = s.capacity_bytes {
        if end > cur && used(s) + (end - cur) > cap {
            return Err(enospc());
        }
    }
    Ok(())
}

/// The bytes `start..end` of a file as a read sees them: live bytes, with stale and
/// misdirected sectors substituted.
fn read_view(s: &State, ino: u64, start: usize, end: usize) -> io::Result<Vec<u8>> {
    let data = &s.inodes.get(&ino).ok_or_else(|| eio("read"))?.live;
    let mut out = data
        .get(start..end)
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?
        .to_vec();
    if s.read_faults.is_empty() {
        return Ok(out);
    }
    for (&(fino, sector), fault) in &s.read_faults {
        if fino != ino {
            continue;
        }
        let Ok(sector) = usize::try_from(sector) else {
            continue;
        };
        let (ss, se) = (sector * SECTOR, sector * SECTOR + SECTOR);
        let (lo, hi) = (ss.max(start), se.min(end));
        if lo >= hi {
            continue;
        }
        let replacement: Vec<u8> = match fault {
            ReadFault::Stale(bytes) => bytes.clone(),
            ReadFault::Misdirected { inode, sector } => {
                let src = s.inodes.get(inode).map(|i| &i.live[..]).unwrap_or(&[]);
                let from = usize::try_from(*sector).map_or(usize::MAX, |x| x * SECTOR);
                sector_at(src, from)
            }
        };
        // Always `Some`: `lo..hi` lies within both `start..end` and the sector `ss..se`.
        if let (Some(dst), Some(src)) = (
            out.get_mut(lo - start..hi - start),
            replacement.get(lo - ss..hi - ss),
        ) {
            dst.copy_from_slice(src);
        }
    }
    Ok(out)
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(SimOp::Read, false, |s, ino| {
            let start = usize::try_from(offset).map_err(|_| eio("read offset"))?;
            let end = start
                .checked_add(buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(&read_view(s, ino, start, end)?);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(SimOp::Write, true, |s, ino| {
            let end = offset + buf.len() as u64;
            grow_within_capacity(s, ino, end)?;
            let data = &mut s.inodes.get_mut(&ino).ok_or_else(|| eio("write"))?.live;
            let (start, end) = (offset as usize, end as usize);
            if data.len() < end {
                data.resize(end, 0);
            }
            // Always `Some`: the file was just extended to `end`.
            let dst = data
                .get_mut(start..end)
                .ok_or_else(|| eio("write offset"))?;
            let before = dst.to_vec();
            dst.copy_from_slice(buf);
            s.last_write = Some(LastWrite {
                inode: ino,
                offset: start,
                before,
            });
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(SimOp::Sync, true, |s, ino| {
            let i = s.inodes.get_mut(&ino).ok_or_else(|| eio("sync"))?;
            i.durable = i.live.clone();
            if s.last_write.as_ref().is_some_and(|w| w.inode == ino) {
                s.last_write = None;
            }
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(SimOp::Allocate, true, |s, ino| {
            grow_within_capacity(s, ino, len)?;
            let data = &mut s.inodes.get_mut(&ino).ok_or_else(|| eio("allocate"))?.live;
            if (data.len() as u64) < len {
                data.resize(len as usize, 0);
            }
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(SimOp::SetLen, true, |s, ino| {
            grow_within_capacity(s, ino, len)?;
            let len = usize::try_from(len).map_err(|_| enospc())?;
            let data = &mut s.inodes.get_mut(&ino).ok_or_else(|| eio("set_len"))?.live;
            data.resize(len, 0);
            // Like a write, the new length is live only: `durable` keeps the old one until
            // `sync_data`. The last write is no longer "last" once the file changed after it.
            if s.last_write.as_ref().is_some_and(|w| w.inode == ino) {
                s.last_write = None;
            }
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        let s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other("simulated process died in a crash"));
        }
        if s.stopped {
            return Err(stopped_error());
        }
        Ok(s.inodes.get(&self.inode).map_or(0, |i| i.live.len() as u64))
    }

    fn map_range(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        self.with(SimOp::Read, false, |s, ino| {
            let data_len = s.inodes.get(&ino).ok_or_else(|| eio("map"))?.live.len();
            let start = usize::try_from(offset).map_or(data_len, |o| o.min(data_len));
            let end =
                usize::try_from(len).map_or(data_len, |l| start.saturating_add(l).min(data_len));
            Ok(Bytes::from(read_view(s, ino, start, end)?))
        })
    }
}

#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    token: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.disk.lock();
        if s.locks.get(&self.path) == Some(&self.token) {
            s.locks.remove(&self.path);
        }
    }
}

impl Storage for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.lock();
        let existing = s.live_names.get(path).copied();
        let creates = existing.is_none() && matches!(mode, OpenMode::Create | OpenMode::CreateNew);
        enter(&mut s, SimOp::Open, creates)?;
        let inode = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => return Err(io::ErrorKind::AlreadyExists.into()),
            (Some(ino), _) => ino,
            (None, OpenMode::Read | OpenMode::ReadWrite) => {
                return Err(io::ErrorKind::NotFound.into())
            }
            (None, OpenMode::Create | OpenMode::CreateNew) => {
                let ino = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(ino, Inode::default());
                s.live_names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        leave(&mut s);
        let epoch = s.epoch;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            epoch,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        enter(&mut s, SimOp::Remove, true)?;
        let out = s
            .live_names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::ErrorKind::NotFound.into());
        leave(&mut s);
        out
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        enter(&mut s, SimOp::Rename, true)?;
        // Atomic in the live view; the durable names change only at `sync_dir`.
        let out = match s.live_names.remove(from) {
            Some(ino) => {
                s.live_names.insert(to.to_path_buf(), ino);
                Ok(())
            }
            None => Err(io::ErrorKind::NotFound.into()),
        };
        leave(&mut s);
        out
    }

    fn entry_kind(&self, path: &Path) -> io::Result<Option<crate::fs::FileKind>> {
        let mut s = self.lock();
        enter(&mut s, SimOp::Lookup, false)?;
        // The simulated disk holds regular files only.
        let found = s
            .live_names
            .contains_key(path)
            .then_some(crate::fs::FileKind::Regular);
        leave(&mut s);
        Ok(found)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        if s.stopped {
            return Err(stopped_error());
        }
        Ok(s.live_names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        if self.lock().stopped {
            return Err(stopped_error());
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        enter(&mut s, SimOp::SyncDir, true)?;
        let live: Vec<(PathBuf, u64)> = s
            .live_names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        s.durable_names.extend(live);
        leave(&mut s);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut s = self.lock();
        if s.stopped {
            return Err(stopped_error());
        }
        if s.locks.contains_key(path) {
            return Ok(None);
        }
        let token = s.next_lock;
        s.next_lock += 1;
        s.locks.insert(path.to_path_buf(), token);
        Ok(Some(Box::new(SimLock {
            disk: self.clone(),
            path: path.to_path_buf(),
            token,
        })))
    }

    fn available_bytes(&self, _dir: &Path) -> io::Result<u64> {
        let s = self.lock();
        if s.stopped {
            return Err(stopped_error());
        }
        Ok(s.capacity_bytes
            .map_or(u64::MAX / 4, |cap| cap.saturating_sub(used(&s))))
    }

    fn maps_are_live(&self) -> bool {
        false
    }

    fn boot_id(&self) -> crate::format::BootId {
        let boots = self.lock().boots;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(boots + 1).to_le_bytes());
        crate::format::BootId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with(path: &Path, bytes: &[u8]) -> SimDisk {
        let disk = SimDisk::new(5);
        let f = disk.open(path, OpenMode::Create).expect("create");
        f.write_all_at(bytes, 0).expect("write");
        f.sync_data().expect("sync");
        disk.sync_dir(path.parent().expect("dir"))
            .expect("sync dir");
        disk
    }

    /// The crash model of the operations the worker's logs use: a rename is durable only
    /// after the directory sync, a truncation only after the file's data sync.
    #[test]
    fn renames_need_a_dir_sync_and_truncations_a_data_sync() {
        let (dir, log, tmp) = (
            Path::new("/d"),
            Path::new("/d/log"),
            Path::new("/d/log.tmp"),
        );
        let disk = disk_with(log, b"old");
        let t = disk.open(tmp, OpenMode::Create).expect("tmp");
        t.write_all_at(b"new", 0).expect("write");
        t.sync_data().expect("sync");
        disk.rename(tmp, log).expect("rename");
        assert_eq!(disk.read_file(log).as_deref(), Some(&b"new"[..]));
        let lost = disk.fork(1);
        lost.crash(CrashMode::LoseDirEntries);
        assert_eq!(lost.read_file(log).as_deref(), Some(&b"old"[..]));
        assert_eq!(lost.read_file(tmp), None, "its creation was never synced");
        let kept = disk.fork(1);
        kept.crash(CrashMode::KeepAll);
        assert_eq!(kept.read_file(log).as_deref(), Some(&b"new"[..]));
        disk.sync_dir(dir).expect("sync dir");
        disk.crash(CrashMode::LoseUnsynced);
        assert_eq!(disk.read_file(log).as_deref(), Some(&b"new"[..]));
        assert_eq!(disk.read_file(tmp), None);

        let disk = disk_with(log, b"0123456789");
        let f = disk.open(log, OpenMode::ReadWrite).expect("open");
        f.set_len(4).expect("cut");
        assert_eq!(f.size().expect("size"), 4);
        let lost = disk.fork(1);
        lost.crash(CrashMode::LoseUnsynced);
        assert_eq!(lost.read_file(log).as_deref(), Some(&b"0123456789"[..]));
        f.sync_data().expect("sync");
        disk.crash(CrashMode::LoseUnsynced);
        assert_eq!(disk.read_file(log).as_deref(), Some(&b"0123"[..]));
    }

    /// Each new call kind can be failed on command, and a failed rename changes nothing.
    #[test]
    fn rename_set_len_and_lookup_take_faults() {
        let log = Path::new("/d/log");
        let disk = disk_with(log, b"abc");
        for op in [SimOp::Rename, SimOp::SetLen, SimOp::Lookup] {
            disk.inject(Fault::Fail {
                op,
                nth: 1,
                errno: SimErrno::Enospc,
                repeat: Repeat::Once,
            });
        }
        let e = disk.rename(log, Path::new("/d/other")).expect_err("rename");
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(disk.read_file(log).as_deref(), Some(&b"abc"[..]));
        let f = disk.open(log, OpenMode::ReadWrite).expect("open");
        assert!(f.set_len(0).is_err());
        assert_eq!(f.size().expect("size"), 3);
        assert!(disk.entry_kind(log).is_err());
        assert_eq!(
            disk.entry_kind(log).expect("lookup"),
            Some(crate::fs::FileKind::Regular)
        );
        assert_eq!(disk.entry_kind(Path::new("/d/none")).expect("lookup"), None);
    }
}
