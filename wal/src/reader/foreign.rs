//! Foreign files: entries named like queue files that are not regular files (a symlink, a
//! FIFO, a directory, a device, a socket). The reader never opens them; it skips them as
//! if absent and reports each one once per open, with its path, as corruption (so a
//! consumer raises it as an incident), and keeps serving every other lane.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, Event};
use crate::format::FileName;
use crate::fs::FileKind;
use crate::types::{Position, SegmentId};

/// Distinct foreign paths remembered as reported; past this, reports repeat at the
/// reader's listing cadence rather than memory growing without bound.
const REPORTED_MAX: usize = 4096;

/// The foreign paths already reported by this reader.
#[derive(Debug, Default)]
pub(super) struct Reported {
    paths: BTreeSet<PathBuf>,
}

impl Reported {
    /// Reports `path` (which is `kind`) once: an ERROR log line and an
    /// `Event::Corruption` of kind `NotRegularFile`.
    pub fn report(&mut self, events: &mut Vec<Event>, path: &Path, kind: FileKind) {
        if self.paths.contains(path) {
            return;
        }
        if self.paths.len() >= REPORTED_MAX {
            self.paths.clear();
        }
        self.paths.insert(path.to_path_buf());
        events.push(event(path, kind));
    }
}

/// The report of a foreign file at `path`, logged once here.
pub(super) fn event(path: &Path, kind: FileKind) -> Event {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(FileName::parse);
    let (lane, segment) = match name {
        Some(FileName::Segment(l, s)) => (Some(l), Some(s)),
        Some(FileName::Watermark(l) | FileName::LaneLock(l)) => (Some(l), None),
        _ => (None, None),
    };
    let corruption = Corruption {
        path: path.to_path_buf(),
        lane,
        segment,
        offset: 0,
        kind: CorruptionKind::NotRegularFile { found: kind },
    };
    tracing::error!(%corruption, "foreign file in the queue directory: skipped, never opened; the other lanes are served");
    Event::Corruption {
        corruption,
        resumed_at: Position {
            segment: segment.unwrap_or(SegmentId(0)),
            offset: 0,
        },
        records_lost: None,
    }
}
