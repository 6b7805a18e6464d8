//! Listing a queue directory's lanes: which segments each lane has, which entries are named
//! like queue files but are not regular files, and how many bytes the segments occupy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::FileName;
use crate::fs::{FileKind, OpenMode, Storage};
use crate::types::{LaneId, SegmentId};

/// Bytes every segment file in `dir` occupies (their lengths: what was allocated), the
/// figure `queue_bytes_max` limits. Files deleted while being counted count as 0.
pub(crate) fn disk_bytes(storage: &dyn Storage, dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    for (lane, segs) in list(storage, dir)? {
        for id in segs {
            let path = dir.join(FileName::Segment(lane, id).render());
            let size = match storage.open(&path, OpenMode::Read) {
                Ok(f) => f.size().map_err(|e| Error::io("stat", &path, e))?,
                // Gone, or swapped for a foreign file since the listing: holds nothing.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || crate::fs::not_regular_kind(&e).is_some() =>
                {
                    0
                }
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

/// Every segment in `dir` that is a regular file, grouped by lane and sorted by id.
/// Entries named like a segment that are something else (symlinks, FIFOs, directories)
/// are left out, as if absent: see [`list_all`].
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<BTreeMap<LaneId, Vec<SegmentId>>> {
    Ok(list_all(storage, dir)?.segments)
}

/// A file named like one of the queue's files that is not a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreign {
    pub path: PathBuf,
    pub name: FileName,
    pub kind: FileKind,
}

/// What [`list_all`] found in a queue directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Regular segment files, by lane, sorted by id.
    pub segments: BTreeMap<LaneId, Vec<SegmentId>>,
    /// Entries named like queue files (segments, watermarks, checkpoints, locks) that are
    /// not regular files. Never opened; reported, and no segment takes their ids.
    pub foreign: Vec<Foreign>,
}

impl Listing {
    /// The largest segment id a foreign entry of `lane` is named with.
    pub fn foreign_segment_max(&self, lane: LaneId) -> Option<SegmentId> {
        self.foreign
            .iter()
            .filter_map(|f| match f.name {
                FileName::Segment(l, s) if l == lane => Some(s),
                _ => None,
            })
            .max()
    }
}

/// Lists `dir`: regular segments, and foreign entries named like queue files.
pub(crate) fn list_all(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let names = storage
        .list_dir_kinds(dir)
        .map_err(|e| Error::io("list", dir, e))?;
    let mut listing = Listing::default();
    for (text, kind) in names {
        let Some(name) = FileName::parse(&text) else {
            continue;
        };
        match (&name, kind) {
            (FileName::Segment(lane, seg), FileKind::Regular) => {
                listing.segments.entry(*lane).or_default().push(*seg)
            }
            (_, FileKind::Regular) => {}
            (_, kind) => listing.foreign.push(Foreign {
                path: dir.join(&text),
                name,
                kind,
            }),
        }
    }
    for segs in listing.segments.values_mut() {
        segs.sort_unstable();
    }
    listing.foreign.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}
