//! The queue directory: where each part lives, the wal options every process opening it
//! must agree on.
//!
//! ```text
//! <queue_dir>/                 0700
//!   wal/                       the main wal: one lane per open writer, cursor `worker`
//!   dead-letter/               the dead-letter queue, a wal of its own, cursor `dlq`
//!   dedupe.log                 recent request / image query ids + worker run markers (0600)
//!   dedupe.log.tmp             only while the dedupe log is being compacted
//!   incidents.jsonl            the bounded incident log (0600), rotated to incidents.jsonl.1
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use escalation_queue_wal::{defaults, Durability, Options, Storage};

use crate::error::Error;
use crate::escalation::RecordLimits;

/// Sub-directory of the main wal.
pub const WAL_DIR: &str = "wal";
/// Sub-directory of the dead-letter wal.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
/// The dedupe log file.
pub const DEDUPE_FILE: &str = "dedupe.log";
/// The worker's attempt journal (markers written before each first request).
pub const ATTEMPTS_FILE: &str = "attempts.log";
/// The incident log file.
pub const INCIDENTS_FILE: &str = "incidents.jsonl";
/// The worker's cursor on the main wal.
pub const WORKER_CURSOR: &str = "worker";
/// The dead-letter maintenance cursor (replay, purge, retention).
pub const DEAD_LETTER_CURSOR: &str = "dlq";
/// Room a record needs beyond its image: ids (3 × 200), metadata (≤ 1 KiB), a path.
pub const RECORD_OVERHEAD_MAX_BYTES: usize = 64 * 1024;
/// Room a dead-letter entry needs beyond the original record: the context.
pub const DEAD_LETTER_CONTEXT_MAX_BYTES: usize = 64 * 1024;

/// Paths inside a queue directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    root: PathBuf,
}

impl QueueLayout {
    /// The layout of the queue directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The queue directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }

    /// `<root>/dead-letter`.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.root.join(DEAD_LETTER_DIR)
    }

    /// `<root>/dedupe.log`.
    pub fn dedupe_path(&self) -> PathBuf {
        self.root.join(DEDUPE_FILE)
    }

    /// `<root>/attempts.log`.
    pub fn attempts_path(&self) -> PathBuf {
        self.root.join(ATTEMPTS_FILE)
    }

    /// `<root>/incidents.jsonl`.
    pub fn incidents_path(&self) -> PathBuf {
        self.root.join(INCIDENTS_FILE)
    }

    /// Creates the queue directory (mode 0700) if needed.
    pub fn create(&self) -> Result<(), Error> {
        create_private_dir(&self.root)
    }
}

/// Creates `dir` and its parents with mode 0700 (existing directories are left alone),
/// as the wal creates its directories ([`escalation_queue_wal::create_private_dir`]).
#[doc(hidden)]
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    escalation_queue_wal::create_private_dir(dir).map_err(|e| Error::io("create dir", dir, e))
}

/// Opens one of the queue's own files the way the wal opens its files: no symlink
/// followed, no blocking on a FIFO or device, and only a regular file accepted (checked
/// on the descriptor). Anything else fails with an error naming what the path is.
pub(crate) fn open_file(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    escalation_queue_wal::open_regular(options, path)
}

/// Reads a whole file of the queue, opened as [`open_file`] does.
pub(crate) fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_file(OpenOptions::new().read(true), path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// How a queue directory is opened, shared by writers, the worker and dead-letter tools.
/// Every process opening one queue must use the same `image_size_max_bytes`.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Largest image accepted. Default 16 MiB; 1 byte to 512 MiB.
    pub image_size_max_bytes: usize,
    /// Size of each main-wal segment file. Default 64 MiB. Must hold one record of
    /// `image_size_max_bytes` + 64 KiB. Smaller segments lower the reader's resident memory
    /// (the segment being read is memory-mapped).
    pub segment_bytes: u64,
    /// Most bytes the main wal's segment files may occupy (their allocated lengths);
    /// beyond it enqueue fails with `QueueFull`. Default 8 GiB.
    pub queue_bytes_max: u64,
    /// Segment files (of both wals) are allocated in steps of this many bytes as records
    /// arrive, so a lane holding little costs little disk. Default 4 MiB; 4 KiB to 1 GiB,
    /// a multiple of 4 KiB.
    pub allocation_step_bytes: u64,
    /// Free space to leave on the file system. Default 64 MiB; 0 disables the check.
    pub free_disk_bytes_min: u64,
    /// Writer lanes (open `EscalationQueue` handles across processes). Default 16; 1..=64.
    pub lanes_max: u16,
    /// How enqueues are made durable. Default: `fdatasync` before returning (group commit).
    pub durability: Durability,
    /// Storage behind both wals (tests use a simulated disk). Default: the real file system.
    pub storage: Option<Arc<dyn Storage>>,
    /// The only directory path images may be in (an absolute path). Default `None`: path
    /// images are refused at enqueue and by the reader (`docs/SEMANTICS.md` §12).
    pub images_dir: Option<PathBuf>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            image_size_max_bytes: crate::escalation::DEFAULT_IMAGE_SIZE_MAX_BYTES,
            segment_bytes: defaults::SEGMENT_BYTES,
            queue_bytes_max: defaults::QUEUE_BYTES_MAX,
            allocation_step_bytes: defaults::ALLOCATION_STEP_BYTES,
            free_disk_bytes_min: defaults::FREE_DISK_BYTES_MIN,
            lanes_max: defaults::LANES_MAX,
            durability: defaults::DURABILITY,
            storage: None,
            images_dir: None,
        }
    }
}

impl QueueOptions {
    /// The record limits escalations are validated against.
    pub fn record_limits(&self) -> RecordLimits {
        RecordLimits {
            image_size_max_bytes: self.image_size_max_bytes,
            images_dir: self.images_dir.clone(),
        }
    }

    /// Largest main-wal record: the image plus [`RECORD_OVERHEAD_MAX_BYTES`].
    pub fn record_bytes_max(&self) -> u32 {
        let bytes = self
            .image_size_max_bytes
            .saturating_add(RECORD_OVERHEAD_MAX_BYTES);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Largest dead-letter entry: a main record plus [`DEAD_LETTER_CONTEXT_MAX_BYTES`].
    pub fn dead_letter_bytes_max(&self) -> u32 {
        let context = u32::try_from(DEAD_LETTER_CONTEXT_MAX_BYTES).unwrap_or(u32::MAX);
        self.record_bytes_max().saturating_add(context)
    }

    /// The main wal's options.
    pub fn wal_options(&self) -> Options {
        self.base(Options::default())
            .segment_bytes(self.segment_bytes)
            .record_bytes_max(self.record_bytes_max())
            .queue_bytes_max(self.queue_bytes_max)
            .durability(self.durability)
    }

    /// The dead-letter wal's options: segments just large enough for one entry plus 1 MiB
    /// (dead letters are few), always synced on append.
    pub fn dead_letter_wal_options(&self) -> Options {
        let max = self.dead_letter_bytes_max();
        let segment_bytes = (u64::from(max) + (1 << 20)).div_ceil(1 << 20) << 20;
        self.base(Options::default())
            .segment_bytes(segment_bytes)
            .record_bytes_max(max)
            .queue_bytes_max(self.queue_bytes_max.max(segment_bytes.saturating_mul(4)))
            .durability(Durability::SyncEachAppend)
    }

    fn base(&self, options: Options) -> Options {
        let options = options
            .free_disk_bytes_min(self.free_disk_bytes_min)
            .allocation_step_bytes(self.allocation_step_bytes)
            .lanes_max(self.lanes_max);
        match &self.storage {
            Some(storage) => options.storage(Arc::clone(storage)),
            None => options,
        }
    }

    /// Checks every option; the error names the key, the value and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=(512 << 20)).contains(&self.image_size_max_bytes) {
            return Err(Error::Config {
                key: "image_size_max_bytes",
                value: self.image_size_max_bytes.to_string(),
                allowed: "1 byte to 512 MiB".into(),
            });
        }
        if let Some(dir) = &self.images_dir {
            if !dir.is_absolute() || dir.to_str().is_none() {
                return Err(Error::Config {
                    key: "images_dir",
                    value: dir.to_string_lossy().into_owned(),
                    allowed: "an absolute UTF-8 directory path".into(),
                });
            }
        }
        self.wal_options().validate()?;
        self.dead_letter_wal_options().validate()?;
        Ok(())
    }
}

/// Whether `e` says the disk (or the user's quota) has no room: the worker's own files
/// (`dedupe.log`, `attempts.log`) then degrade instead of stopping the reader, whose
/// deliveries are what frees the disk.
#[doc(hidden)]
pub fn is_no_space(e: &std::io::Error) -> bool {
    escalation_queue_wal::is_storage_full(e) || e.kind() == std::io::ErrorKind::QuotaExceeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_valid_and_records_fit() {
        let options = QueueOptions::default();
        options.validate().expect("defaults are valid");
        assert!(options.record_bytes_max() as usize > options.image_size_max_bytes);
        assert!(options.dead_letter_bytes_max() > options.record_bytes_max());
    }

    #[test]
    fn bad_options_name_the_key() {
        let options = QueueOptions {
            image_size_max_bytes: 0,
            ..QueueOptions::default()
        };
        let err = options.validate().expect_err("invalid");
        assert!(
            err.to_string().contains("image_size_max_bytes = 0"),
            "{err}"
        );
        let options = QueueOptions {
            segment_bytes: 1 << 20,
            ..QueueOptions::default()
        };
        let err = options
            .validate()
            .expect_err("segment too small for a record");
        assert!(err.to_string().contains("segment_bytes"), "{err}");
    }
}
