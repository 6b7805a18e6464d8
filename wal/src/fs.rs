//! The storage seam: every file operation the wal makes goes through [`Storage`], so tests
//! can swap the real file system for a simulated disk that loses unsynced writes, tears
//! writes and fails syncs on command (see [`crate::SimDisk`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(any(test, feature = "test-support"))]
use std::time::Duration;

use bytes::Bytes;

use crate::format::BootId;

/// Whether `e` is "no space left on device" (`ENOSPC`), by its kind or its errno: the
/// one test of a full file system in the wal (the producer adds quota errors to it).
pub fn is_storage_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write, creating the file (mode 0600) if missing.
    Create,
    /// Read and write; fail if the file exists.
    CreateNew,
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset` (fails with `UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes written data durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Preallocates `len` bytes (`fallocate`), so later writes cannot fail for lack of space.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Sets the length (`ftruncate`): cuts the file or extends it with zeros. Like a
    /// write, the new length is durable only after [`StorageFile::sync_data`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// A read-only view of `len` bytes from `offset` (a multiple of 4096), clipped to the
    /// file's length. For the real file system this is a shared memory map that keeps
    /// showing later writes; see [`Storage::maps_are_live`].
    fn map_range(&self, offset: u64, len: u64) -> io::Result<Bytes>;
    /// A read-only view of the whole file.
    fn map(&self) -> io::Result<Bytes> {
        self.map_range(0, u64::MAX)
    }
}

/// What a directory entry is. The queue's own files are always [`FileKind::Regular`];
/// anything else named like one (a symlink, a FIFO, a directory...) is foreign: never
/// followed, opened, read, written or removed, only reported (see `docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (not followed, wherever it points).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A type the OS did not say.
    Unknown,
}

impl FileKind {
    fn of(ft: std::fs::FileType) -> Self {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_file() {
            Self::Regular
        } else if ft.is_dir() {
            Self::Directory
        } else if ft.is_symlink() {
            Self::Symlink
        } else if ft.is_fifo() {
            Self::Fifo
        } else if ft.is_socket() {
            Self::Socket
        } else if ft.is_char_device() {
            Self::CharDevice
        } else if ft.is_block_device() {
            Self::BlockDevice
        } else {
            Self::Unknown
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Regular => "a regular file",
            Self::Directory => "a directory",
            Self::Symlink => "a symbolic link",
            Self::Fifo => "a FIFO (named pipe)",
            Self::Socket => "a socket",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Unknown => "a file of unknown type",
        })
    }
}

/// The payload of the `io::Error` an open returns for a path that is not a regular file.
#[derive(Debug)]
struct NotRegular(FileKind);

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, not a regular file", self.0)
    }
}

impl std::error::Error for NotRegular {}

/// The `io::Error` for a path found to be `kind`, not a regular file.
pub fn not_regular_error(kind: FileKind) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular(kind))
}

/// What a path was found to be when an open refused it for not being a regular file
/// (`None` for every other error).
pub fn not_regular_kind(e: &io::Error) -> Option<FileKind> {
    e.get_ref()?.downcast_ref::<NotRegular>().map(|n| n.0)
}

/// Creates `dir` and its missing parents with mode 0700 (existing directories are left
/// alone): how every queue directory is created, by the wal, the producer, the worker and
/// the binary.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Opens `path` with `options` the way every queue file is opened: without following a
/// symlink in the last component (`O_NOFOLLOW`), without blocking on a FIFO or device
/// (`O_NONBLOCK`, cleared again once the file is known to be regular), without taking a
/// controlling terminal (`O_NOCTTY`), and only if the opened file is a regular file
/// (checked with `fstat` on the descriptor, so a swap after a check cannot slip through).
/// Anything else fails with an error [`not_regular_kind`] recognises.
pub fn open_regular(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    use rustix::fs::OFlags;
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match options.custom_flags(flags.bits() as i32).open(path) {
        Ok(f) => f,
        // Say what the path is rather than the errno's wording.
        Err(e) if refused_for_type(&e) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_file() => not_regular_error(FileKind::of(m.file_type())),
                _ => e,
            });
        }
        Err(e) => return Err(e),
    };
    let kind = FileKind::of(file.metadata()?.file_type());
    if kind != FileKind::Regular {
        return Err(not_regular_error(kind));
    }
    let now = rustix::fs::fcntl_getfl(&file).map_err(io::Error::from)?;
    rustix::fs::fcntl_setfl(&file, now - OFlags::NONBLOCK).map_err(io::Error::from)?;
    Ok(file)
}

/// ELOOP (a symlink under `O_NOFOLLOW`), EISDIR, ENXIO (a socket, or a FIFO opened for
/// writing only): errors an open gives because of what the path is.
fn refused_for_type(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let raw = e.raw_os_error();
    [Errno::LOOP, Errno::ISDIR, Errno::NXIO]
        .iter()
        .any(|errno| raw == Some(errno.raw_os_error()))
}

/// A held advisory lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// The directory-level operations.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames the entry `from` to `to`, replacing an entry named `to` (`rename(2)`: acts
    /// on the entries themselves, never follows a symlink, whatever either names). Atomic
    /// for a running system; durable only after [`Storage::sync_dir`] of the directory (of
    /// both directories when they differ). The default refuses: a storage that never
    /// renames.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = (from, to);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this storage does not rename",
        ))
    }
    /// What the entry `path` is, without following a symlink (`lstat`); `None` when there
    /// is none. The default looks the name up in [`Storage::list_dir_kinds`] of its parent.
    fn entry_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(None);
        };
        let entries = match self.list_dir_kinds(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(entries
            .into_iter()
            .find(|(n, _)| std::ffi::OsStr::new(n) == name)
            .map(|(_, kind)| kind))
    }
    /// Names of the entries in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Names of the entries in `dir` with what each is (from the directory listing, no
    /// link followed). The default takes every entry for a regular file: a storage that
    /// holds nothing else.
    fn list_dir_kinds(&self, dir: &Path) -> io::Result<Vec<(String, FileKind)>> {
        Ok(self
            .list_dir(dir)?
            .into_iter()
            .map(|n| (n, FileKind::Regular))
            .collect())
    }
    /// Creates `dir` (mode 0700) and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// `fsync`s a directory so created, renamed and removed entries are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) without blocking;
    /// `Ok(None)` when another holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
    /// Bytes available to an unprivileged writer on the file system holding `dir`.
    fn available_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// True when [`StorageFile::map`] views keep reflecting later writes, so a reader need
    /// not map a file again to see data appended after it was mapped.
    fn maps_are_live(&self) -> bool;
    /// Identifies the current boot of the machine (all zeros when unknown). Data the OS
    /// was given in this boot is still there after a process crash; after a reboot only
    /// what was synced is.
    fn boot_id(&self) -> BootId;
}

/// The real file system, through `std` and `rustix`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

#[derive(Debug)]
struct RealFile {
    file: File,
}

#[derive(Debug)]
struct RealLock {
    _file: File,
}

impl LockGuard for RealLock {}

impl StorageFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len)
            .map_err(io::Error::from)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // On the descriptor `open_regular` checked: a regular file, never a link's target.
        self.file.set_len(len)
    }

    fn map_range(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        crate::mmap::map_read_only(&self.file, offset, len)
    }
}

impl Storage for RealStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        o.read(true).mode(0o600);
        match mode {
            OpenMode::Read => &mut o,
            OpenMode::ReadWrite => o.write(true),
            OpenMode::Create => o.write(true).create(true),
            OpenMode::CreateNew => o.write(true).create_new(true),
        };
        Ok(Arc::new(RealFile {
            file: open_regular(&mut o, path)?,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        // rename(2) moves entries; a symlink named by either path is moved or replaced
        // itself, never followed.
        std::fs::rename(from, to)
    }

    fn entry_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(FileKind::of(m.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn list_dir_kinds(&self, dir: &Path) -> io::Result<Vec<(String, FileKind)>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // `file_type` comes from the listing (d_type) or an lstat: never follows.
            let kind = match entry.file_type() {
                Ok(ft) => FileKind::of(ft),
                // Gone since the listing: skipped like any file deleted meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Ok(name) = entry.file_name().into_string() {
                names.push((name, kind));
            }
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_private_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = open_regular(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
            path,
        )?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(RealLock { _file: file }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn maps_are_live(&self) -> bool {
        true
    }

    fn boot_id(&self) -> BootId {
        static BOOT: std::sync::OnceLock<BootId> = std::sync::OnceLock::new();
        *BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .and_then(|s| parse_uuid(s.trim()))
                .unwrap_or_default()
        })
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into its 16 bytes.
fn parse_uuid(s: &str) -> Option<BootId> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(BootId(out))
}

/// Wraps a storage so every `sync_data` takes at least `sync_latency` (the real sync, then
/// a sleep for the rest): a slow disk, to measure how group commit amortizes one.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct SlowSyncStorage {
    inner: Arc<dyn Storage>,
    sync_latency: Duration,
}

#[cfg(any(test, feature = "test-support"))]
impl SlowSyncStorage {
    /// `inner` with every data sync taking at least `sync_latency`.
    pub fn new(inner: Arc<dyn Storage>, sync_latency: Duration) -> Self {
        Self {
            inner,
            sync_latency,
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
struct SlowSyncFile {
    inner: Arc<dyn StorageFile>,
    sync_latency: Duration,
}

#[cfg(any(test, feature = "test-support"))]
impl StorageFile for SlowSyncFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let result = self.inner.sync_data();
        if let Some(rest) = self.sync_latency.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        result
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn map_range(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        self.inner.map_range(offset, len)
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Storage for SlowSyncStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(SlowSyncFile {
            inner: self.inner.open(path, mode)?,
            sync_latency: self.sync_latency,
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn entry_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        self.inner.entry_kind(path)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn list_dir_kinds(&self, dir: &Path) -> io::Result<Vec<(String, FileKind)>> {
        self.inner.list_dir_kinds(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(path)
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        self.inner.available_bytes(dir)
    }
    fn maps_are_live(&self) -> bool {
        self.inner.maps_are_live()
    }
    fn boot_id(&self) -> BootId {
        self.inner.boot_id()
    }
}

/// A path inside the queue directory.
pub(crate) fn join(dir: &Path, name: &crate::format::FileName) -> PathBuf {
    dir.join(name.render())
}
