//! A simulated disk behind the storage seam, for tests: it keeps the bytes the OS has been
//! given apart from the bytes that are durable, so a "power loss" can drop unsynced writes,
//! tear them at sector granularity, and forget directory entries that were never synced.
//! It also fails syncs, writes and allocations on command.
//!
//! Deterministic: all randomness comes from the seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::fs::{LockGuard, OpenMode, Storage, StorageFile};

/// Sector size used for torn writes.
pub const SECTOR: usize = 512;

/// What a simulated power loss keeps of the data that was written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives.
    LoseUnsynced,
    /// Each unsynced 512-byte sector independently survives or not (torn writes, pages
    /// written back out of order).
    KeepRandomSectors,
    /// Everything written survives (a process crash: the OS still had it all).
    KeepAll,
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
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
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
    faults: Vec<Fault>,
    syncs: u64,
    writes: u64,
    rng: u64,
}

/// The simulated disk. Cheap to clone; clones share the disk.
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
                syncs: 0,
                writes: 0,
                rng: seed | 1,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates a power loss (or, with [`CrashMode::KeepAll`], a crash of every process):
    /// handles opened before it fail from now on, locks are released, and the disk keeps
    /// what `mode` says of unsynced data. Directory entries never synced are lost except
    /// with `KeepAll`.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        s.epoch += 1;
        if mode != CrashMode::KeepAll {
            s.boots += 1;
        }
        s.locks.clear();
        s.faults.clear();
        if mode != CrashMode::KeepAll {
            s.live_names = s.durable_names.clone();
        }
        let mut rng = s.rng;
        for inode in s.inodes.values_mut() {
            match mode {
                CrashMode::KeepAll => {}
                CrashMode::LoseUnsynced => inode.live = inode.durable.clone(),
                CrashMode::KeepRandomSectors => {
                    let mut kept = inode.durable.clone();
                    kept.resize(inode.live.len().max(kept.len()), 0);
                    for (i, sector) in inode.live.chunks(SECTOR).enumerate() {
                        let start = i * SECTOR;
                        if xorshift(&mut rng) & 1 == 0 {
                            kept[start..start + sector.len()].copy_from_slice(sector);
                        }
                    }
                    inode.live = kept;
                }
            }
            inode.durable = inode.live.clone();
        }
        s.rng = rng;
        s.durable_names = s.live_names.clone();
        let reachable: std::collections::HashSet<u64> = s.live_names.values().copied().collect();
        s.inodes.retain(|ino, _| reachable.contains(ino));
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        let mut s = self.lock();
        let (syncs, writes) = (s.syncs, s.writes);
        let f = match fault {
            Fault::SyncFailsOnce(n) => Fault::SyncFailsOnce(syncs + n),
            Fault::SyncFailsFrom(n) => Fault::SyncFailsFrom(syncs + n),
            Fault::WriteFailsOnce(n) => Fault::WriteFailsOnce(writes + n),
        };
        s.faults.push(f);
    }

    /// Removes every armed fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
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

    /// Every file name on the disk, live view.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().live_names.keys().cloned().collect()
    }
}

/// Bytes used by files that have a name: a removed file's space is free again, as on a
/// real file system once the last handle is closed (simulated maps are copies and hold
/// no space).
fn used(s: &State) -> u64 {
    let named: std::collections::HashSet<u64> = s.live_names.values().copied().collect();
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

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other("simulated process died in a crash"));
        }
        f(&mut s, self.inode)
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

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|s, ino| {
            let data = &s.inodes.get(&ino).ok_or_else(|| eio("read"))?.live;
            let start = usize::try_from(offset).map_err(|_| eio("read offset"))?;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| data.get(start..end))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|s, ino| {
            s.writes += 1;
            let n = s.writes;
            if let Some(i) = s.faults.iter().position(|f| *f == Fault::WriteFailsOnce(n)) {
                s.faults.remove(i);
                return Err(eio("write"));
            }
            let end = offset + buf.len() as u64;
            grow_within_capacity(s, ino, end)?;
            let data = &mut s.inodes.get_mut(&ino).ok_or_else(|| eio("write"))?.live;
            let (start, end) = (offset as usize, end as usize);
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(buf);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, ino| {
            s.syncs += 1;
            let n = s.syncs;
            let mut fail = false;
            s.faults.retain(|f| match *f {
                Fault::SyncFailsOnce(k) if k == n => {
                    fail = true;
                    false
                }
                Fault::SyncFailsFrom(k) if n >= k => {
                    fail = true;
                    true
                }
                _ => true,
            });
            if fail {
                return Err(eio("fdatasync"));
            }
            let i = s.inodes.get_mut(&ino).ok_or_else(|| eio("sync"))?;
            i.durable = i.live.clone();
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(|s, ino| {
            grow_within_capacity(s, ino, len)?;
            let data = &mut s.inodes.get_mut(&ino).ok_or_else(|| eio("allocate"))?.live;
            if (data.len() as u64) < len {
                data.resize(len as usize, 0);
            }
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(|s, ino| Ok(s.inodes.get(&ino).map_or(0, |i| i.live.len() as u64)))
    }

    fn map_range(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        self.with(|s, ino| {
            let data = &s.inodes.get(&ino).ok_or_else(|| eio("map"))?.live;
            let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
            let end = usize::try_from(len)
                .map_or(data.len(), |l| start.saturating_add(l).min(data.len()));
            Ok(Bytes::copy_from_slice(&data[start..end]))
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
        let epoch = s.epoch;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            epoch,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.live_names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        Ok(s.live_names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let live: Vec<(PathBuf, u64)> = s
            .live_names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        s.durable_names.extend(live);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut s = self.lock();
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
