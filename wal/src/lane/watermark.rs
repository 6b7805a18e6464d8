//! A lane's watermark file (`lane-NNN.commit`): how far the lane is durable. Published after
//! every sync of the lane's data and never synced itself: it only tells live readers how far
//! to read, and recovery does not depend on it being current (`docs/FORMAT.md`).

use std::path::PathBuf;
use std::sync::Arc;

use super::LaneFiles;
use crate::error::{Error, Result};
use crate::format::{BootId, Watermark, WATERMARK_LEN};
use crate::fs::{OpenMode, Storage, StorageFile};

/// Reads a lane's watermark and the boot it was written in; `None` if missing, torn or
/// unreadable.
pub(super) fn read(files: &LaneFiles<'_>) -> Option<(Watermark, BootId)> {
    let file = files
        .storage
        .open(&files.watermark_path(), OpenMode::Read)
        .ok()?;
    let mut buf = [0u8; WATERMARK_LEN];
    file.read_exact_at(&mut buf, 0).ok()?;
    Watermark::decode(&buf)
}

/// A lane's watermark file, open for publishing (held by the lane's writer, or by
/// recovery while it holds the lane's lock).
#[derive(Debug, Clone)]
pub(crate) struct WatermarkFile {
    file: Arc<dyn StorageFile>,
    /// The queue directory, named in errors.
    dir: PathBuf,
}

impl WatermarkFile {
    /// Opens (creating if needed) the lane's watermark file.
    pub fn open(files: &LaneFiles<'_>) -> Result<Self> {
        let path = files.watermark_path();
        let file = files
            .storage
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("open", &path, e))?;
        // IMPORTANT: the entry must survive a power loss like the segments it describes.
        files
            .storage
            .sync_dir(files.dir)
            .map_err(|e| Error::sync_failed("fsync dir", files.dir, e))?;
        Ok(Self {
            file,
            dir: files.dir.to_path_buf(),
        })
    }

    /// Publishes `wm`, stamped with the current boot. Never synced: it is written only
    /// after the data it describes was synced, and only live readers rely on it.
    pub fn publish(&self, storage: &dyn Storage, wm: &Watermark) -> Result<()> {
        self.file
            .write_all_at(&wm.encode(&storage.boot_id()), 0)
            .map_err(|e| Error::io("write watermark", &self.dir, e))
    }
}
