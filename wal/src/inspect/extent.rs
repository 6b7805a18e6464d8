//! Reading one segment for the offline tools at the cost of its data, not of its file
//! length: a segment is read up to the capacity its header declares (bytes past
//! it are never part of the lane), and trailing holes of a sparse file are skipped with
//! `SEEK_DATA`/`SEEK_HOLE`, so a 10 GiB sparse file holding two records costs what two
//! records cost.

use std::path::Path;

use bytes::Bytes;

use crate::format::{BadSegmentHeader, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::fs::StorageFile;

/// Most data regions looked at to find where a sparse file's data ends.
const REGIONS_MAX: u32 = 4096;

/// The bytes of a segment worth reading: from 0 to the smallest of its length, its
/// declared capacity (`fallback_capacity` when the header is damaged) and the end of its
/// last data region.
pub(crate) fn segment_bytes(
    file: &dyn StorageFile,
    path: &Path,
    header: &Result<SegmentHeader, BadSegmentHeader>,
    fallback_capacity: u64,
) -> std::io::Result<Bytes> {
    let len = file.size()?;
    let capacity = match header {
        Ok(h) => h.size_bytes.max(SEGMENT_HEADER_LEN as u64),
        Err(_) => fallback_capacity,
    };
    let limit = len.min(capacity);
    let limit = data_end(path, limit).unwrap_or(limit);
    if limit == 0 {
        return Ok(Bytes::new());
    }
    file.map_range(0, limit)
}

/// Where the last data region of the file at `path` below `limit` ends (rounded to whole
/// 4 KiB pages, clipped to `limit`); `None` when the file system cannot say (or the path
/// is not a real file, as on the simulated disk).
fn data_end(path: &Path, limit: u64) -> Option<u64> {
    use rustix::fs::{Mode, OFlags, SeekFrom};
    // Non-blocking and not through a symlink: a FIFO or a link put in place of the segment
    // must not hang or redirect this second look (it only asks where data lies).
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, Mode::empty()).ok()?;
    if !rustix::fs::fstat(&file).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
    }) {
        return None;
    }
    let mut end = 0u64;
    let mut at = 0u64;
    for _ in 0..REGIONS_MAX {
        let data = match rustix::fs::seek(&file, SeekFrom::Data(at)) {
            Ok(d) if d < limit => d,
            Ok(_) => return Some(end),
            Err(rustix::io::Errno::NXIO) => return Some(end),
            Err(_) => return None,
        };
        let hole = rustix::fs::seek(&file, SeekFrom::Hole(data)).ok()?;
        end = hole.div_ceil(4096).saturating_mul(4096).min(limit);
        if hole >= limit {
            return Some(end);
        }
        at = hole;
    }
    // Too many regions to walk: read up to the limit.
    None
}
