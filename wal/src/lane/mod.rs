//! A lane on disk: its writer lock, its watermark, its segments and their seals, and the
//! recovery of its tail, behind one handle, [`LaneFiles`]. The writer claims a lane through
//! it, the reader follows and (when the writer is gone) recovers lanes through it, and
//! `inspect` and the checkpointer read through it.
//!
//! A lane's files are `lane-NNN.lock` (the writer's `flock`), `lane-NNN.commit` (the
//! watermark: how far the lane is durable) and `lane-NNN-SSSS.seg` (its segments, each
//! closed by a seal once the lane goes on in the next one); `docs/FORMAT.md` has the bytes.

mod listing;
mod recovery;
mod seal;
mod segments;
mod watermark;

use std::path::{Path, PathBuf};

use crate::error::{Error, Event, Result};
use crate::format::{BootId, FileName, Watermark};
use crate::fs::{join, LockGuard, Storage};
use crate::options::Options;
use crate::types::{LaneId, SegmentId};

pub(crate) use listing::{disk_bytes, list, list_all, Listing};
pub(crate) use recovery::{LaneEnd, OpenTail};
pub(crate) use seal::{write_seal, SealAt};
pub(crate) use segments::{allocation_error, Allocation, OpenedSegment};
pub(crate) use watermark::WatermarkFile;

/// One lane's files in one queue directory. Cheap to make and to copy: it holds no file
/// open, each method opens what it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneFiles<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    lane: LaneId,
}

impl<'a> LaneFiles<'a> {
    pub fn new(storage: &'a dyn Storage, dir: &'a Path, lane: LaneId) -> Self {
        Self { storage, dir, lane }
    }

    pub fn lane(&self) -> LaneId {
        self.lane
    }

    pub fn storage(&self) -> &'a dyn Storage {
        self.storage
    }

    pub fn dir(&self) -> &'a Path {
        self.dir
    }

    /// Path of segment `id` of this lane.
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        join(self.dir, &FileName::Segment(self.lane, id))
    }

    /// Path of this lane's writer lock.
    pub fn lock_path(&self) -> PathBuf {
        join(self.dir, &FileName::LaneLock(self.lane))
    }

    /// Path of this lane's watermark.
    pub fn watermark_path(&self) -> PathBuf {
        join(self.dir, &FileName::Watermark(self.lane))
    }

    /// Takes the lane's writer lock; `None` while another process (or handle) holds it.
    pub fn try_lock(&self) -> Result<Option<Box<dyn LockGuard>>> {
        let path = self.lock_path();
        self.storage
            .try_lock(&path)
            .map_err(|e| Error::io("flock", &path, e))
    }

    /// The lane's (regular) segments, oldest first.
    pub fn segments(&self) -> Result<Vec<SegmentId>> {
        Ok(list(self.storage, self.dir)?
            .remove(&self.lane)
            .unwrap_or_default())
    }

    /// The lane's watermark; `None` if missing, torn or unreadable.
    pub fn read_watermark(&self) -> Option<Watermark> {
        self.read_watermark_and_boot().map(|(w, _)| w)
    }

    /// The lane's watermark and the boot it was written in.
    pub fn read_watermark_and_boot(&self) -> Option<(Watermark, BootId)> {
        watermark::read(self)
    }

    /// True when the frame that ends at `wm` is a seal: the lane was closed cleanly there.
    pub fn sealed_at(&self, wm: &Watermark) -> bool {
        seal::sealed_at(self, wm)
    }

    /// Recovers the lane's tail; the caller holds the lane's lock. Appends what it found to
    /// `events` and returns where the lane continues.
    pub fn recover(&self, len_max: u32, events: &mut Vec<Event>) -> Result<LaneEnd> {
        recovery::recover_lane(self, len_max, events)
    }

    /// If no writer holds the lane and its tail is not settled (see
    /// [`recovery::is_settled`]), recovers it: records a killed writer synced become
    /// readable, and a torn tail is cut off. For the reader, which checks every lane
    /// without a writer.
    pub fn recover_if_abandoned(&self, len_max: u32, events: &mut Vec<Event>) -> Result<()> {
        let Some(_guard) = self.try_lock()? else {
            return Ok(());
        };
        let newest = self.segments()?.last().copied();
        if !recovery::is_settled(self, newest) {
            self.recover(len_max, events)?;
        }
        Ok(())
    }
}

/// A lane a writer claimed: its lock (held as long as this lives), where appends
/// continue, its watermark file and what recovering its tail found.
#[derive(Debug)]
pub(crate) struct ClaimedLane {
    pub lane: LaneId,
    pub lock: Box<dyn LockGuard>,
    pub end: LaneEnd,
    pub watermark: WatermarkFile,
    pub events: Vec<Event>,
}

/// Claims the first free lane of `dir` and recovers its tail. A lane whose files include a
/// foreign one (its lock, watermark or tail named like a queue file but a symlink, FIFO,
/// directory...) cannot be written safely: it is reported and the next lane is tried, so
/// one stray file does not stop every enqueue. When every free lane was refused, the first
/// refusal is returned; when every lane is held, `NoFreeLane`.
pub(crate) fn claim(storage: &dyn Storage, dir: &Path, opts: &Options) -> Result<ClaimedLane> {
    let mut refused: Option<Error> = None;
    for l in 0..opts.lanes_max {
        let files = LaneFiles::new(storage, dir, LaneId(l));
        match files.claim(opts.record_bytes_max) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(e) if e.not_regular_file().is_some() => {
                tracing::error!(lane = l, error = %e, "writer lane refused: it holds a foreign file; trying the next lane");
                refused.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or(Error::NoFreeLane {
        path: dir.to_path_buf(),
        lanes_max: opts.lanes_max,
    }))
}

impl LaneFiles<'_> {
    /// Takes the lane if it is free and recovers its tail; `None` if another writer has it.
    fn claim(&self, len_max: u32) -> Result<Option<ClaimedLane>> {
        let Some(lock) = self.try_lock()? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        let end = self.recover(len_max, &mut events)?;
        let watermark = WatermarkFile::open(self)?;
        Ok(Some(ClaimedLane {
            lane: self.lane,
            lock,
            end,
            watermark,
            events,
        }))
    }
}
