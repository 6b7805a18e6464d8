//! A lane's segment files: creation (allocated, header synced, directory synced) and
//! opening with the header checked. Walking the frames inside is `segment.rs`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::LaneFiles;
use crate::clock::now_ns;
use crate::error::{Error, Result};
use crate::format::{BadSegmentHeader, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::fs::{OpenMode, Storage, StorageFile};
use crate::segment::{self, ScanContext};
use crate::types::{SegmentId, Seq};

/// A newly created segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub file: Arc<dyn StorageFile>,
}

/// How much of a new segment to allocate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocation {
    /// The most bytes the segment may grow to (written into its header).
    pub capacity: u64,
    /// Bytes allocated now; later steps are allocated as records arrive.
    pub first: u64,
}

/// An opened segment: its file, its path, and its header or why the header is bad.
pub(crate) type OpenedSegment = (
    Arc<dyn StorageFile>,
    PathBuf,
    std::result::Result<SegmentHeader, BadSegmentHeader>,
);

impl LaneFiles<'_> {
    /// Creates segment `id`: allocate its first step, write and sync the header, sync the
    /// dir. On failure nothing is left behind (a half-made file is removed).
    pub fn create_segment(
        &self,
        id: SegmentId,
        first_seq: Seq,
        allocation: Allocation,
    ) -> Result<SegmentFile> {
        let (storage, dir) = (self.storage, self.dir);
        let path = self.segment_path(id);
        let file = match storage.open(&path, OpenMode::CreateNew) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.remove_if_never_used(id, &path)?;
                storage
                    .open(&path, OpenMode::CreateNew)
                    .map_err(|e| Error::io("create", &path, e))?
            }
            Err(e) => return Err(Error::io("create", &path, e)),
        };
        let header = SegmentHeader {
            lane: self.lane,
            segment: id,
            first_seq,
            created_ns: now_ns(),
            size_bytes: allocation.capacity,
        };
        let size_bytes = allocation.first;
        let made = file
            .allocate(size_bytes)
            .map_err(|e| (e, "fallocate", false))
            .and_then(|()| {
                file.write_all_at(&header.encode(), 0)
                    .map_err(|e| (e, "write header", false))
            })
            .and_then(|()| file.sync_data().map_err(|e| (e, "fdatasync", true)));
        if let Err((e, op, sync)) = made {
            let _ = storage.remove_file(&path);
            let _ = storage.sync_dir(dir);
            if crate::fs::is_storage_full(&e) {
                return Err(Error::NoSpace {
                    path: dir.to_path_buf(),
                    available_bytes: storage.available_bytes(dir).unwrap_or(0),
                    needed_bytes: size_bytes,
                });
            }
            return Err(match sync {
                true => Error::sync_failed(op, &path, e),
                false => Error::io(op, &path, e),
            });
        }
        // IMPORTANT: the new directory entry must be durable before any record in it is
        // acknowledged, or a power loss could drop the whole file.
        storage
            .sync_dir(dir)
            .map_err(|e| Error::sync_failed("fsync dir", dir, e))?;
        Ok(SegmentFile { file })
    }

    /// A file already named like the segment a writer is about to create. It may be left by
    /// an earlier failed creation of ours (no valid header, no record: removed), or it may
    /// hold records (a stray copy, or a lane whose ids were reused): then nothing is removed
    /// and the creation fails, because deleting it could delete acknowledged records.
    fn remove_if_never_used(&self, id: SegmentId, path: &Path) -> Result<()> {
        let (file, _, header) = self.open_segment(id, OpenMode::Read)?;
        let holds_records = self.holds_records(file.as_ref(), path, id, u32::MAX)?;
        if header.is_ok() || holds_records {
            return Err(Error::io(
                "create",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a segment with this id already exists and holds data; refusing to overwrite it",
                ),
            ));
        }
        self.storage
            .remove_file(path)
            .map_err(|e| Error::io("remove", path, e))
    }

    /// True when segment `id` holds at least one valid frame of this lane after its header.
    pub fn holds_records(
        &self,
        file: &dyn StorageFile,
        path: &Path,
        id: SegmentId,
        len_max: u32,
    ) -> Result<bool> {
        let data = file.map().map_err(|e| Error::io("map", path, e))?;
        let cx = ScanContext {
            lane: self.lane,
            segment: id,
            len_max,
            durable_hint: 0,
            first_seq: Seq(0),
            lookahead: true,
        };
        Ok(segment::find_next_valid(&data, SEGMENT_HEADER_LEN as u64, &cx).is_some())
    }

    /// Opens an existing segment and reads its header. A header that fails verification is
    /// returned as the error half, with the file still usable: frames carry their own
    /// identity, so a damaged header does not hide the records behind it.
    pub fn open_segment(&self, id: SegmentId, mode: OpenMode) -> Result<OpenedSegment> {
        let path = self.segment_path(id);
        let file = self
            .storage
            .open(&path, mode)
            .map_err(|e| Error::io("open", &path, e))?;
        self.read_header(file, path, id)
    }

    /// Like [`open_segment`](Self::open_segment), but `None` when the file is gone: a
    /// reader deleted it after it was listed (for tools that walk a live queue).
    pub fn open_segment_if_present(&self, id: SegmentId) -> Result<Option<OpenedSegment>> {
        let path = self.segment_path(id);
        match self.storage.open(&path, OpenMode::Read) {
            Ok(file) => self.read_header(file, path, id).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    fn read_header(
        &self,
        file: Arc<dyn StorageFile>,
        path: PathBuf,
        id: SegmentId,
    ) -> Result<OpenedSegment> {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        let header = match file.read_exact_at(&mut buf, 0) {
            Ok(()) => match SegmentHeader::decode(&buf) {
                Ok(h) if h.lane != self.lane || h.segment != id => Err(BadSegmentHeader::Foreign),
                other => other,
            },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(BadSegmentHeader::Short),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        Ok((file, path, header))
    }
}

/// Maps a failed `fallocate` of `needed_bytes` more to the error an appender sees: no
/// space is `NoSpace` (retryable), anything else an I/O error.
pub(crate) fn allocation_error(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    e: std::io::Error,
    needed_bytes: u64,
) -> Error {
    if crate::fs::is_storage_full(&e) {
        return Error::NoSpace {
            path: dir.to_path_buf(),
            available_bytes: storage.available_bytes(dir).unwrap_or(0),
            needed_bytes,
        };
    }
    Error::io("fallocate", path, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FileName;
    use crate::types::LaneId;

    /// Story: a file already carries the name of the segment a writer creates (a stray
    /// copy, ids reused). If this fails, creation deletes it and the records in it.
    #[test]
    fn create_never_removes_an_existing_segment_that_holds_data() {
        let disk = crate::sim::SimDisk::new(1);
        let dir = Path::new("/q");
        let (lane, seg) = (LaneId(1), SegmentId(4));
        let files = LaneFiles::new(&disk, dir, lane);
        let alloc = Allocation {
            capacity: 64 << 10,
            first: 8 << 10,
        };
        files
            .create_segment(seg, Seq(0), alloc)
            .expect("first creation");
        let path = dir.join(FileName::Segment(lane, seg).render());
        let before = disk.read_file(&path).expect("file");
        let err = files
            .create_segment(seg, Seq(0), alloc)
            .expect_err("refused");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(disk.read_file(&path), Some(before));
        // A file left by a failed creation (no header, no record) is replaced.
        disk.write_file(&path, &[0u8; 100]);
        files
            .create_segment(seg, Seq(0), alloc)
            .expect("replaces an empty leftover");
        assert!(disk.list_dir(dir).expect("list").len() == 1);
    }
}
