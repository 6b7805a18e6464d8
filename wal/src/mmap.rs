//! Read-only shared memory maps of segment files: the only `unsafe` in the project.
//!
//! # Safety
//!
//! Mapping a file is unsafe because the mapped bytes can change, or disappear (SIGBUS),
//! if the file is modified or truncated while mapped. The wal's protocol rules both out
//! for every byte it hands to callers:
//!
//! * Segment files are preallocated to their full size before they are first mapped and
//!   are never shrunk; space is reclaimed only by deleting whole files, which leaves
//!   existing maps valid (the inode lives until the last map is dropped).
//! * Readers hand out only bytes below a lane's durable end (its watermark). No process
//!   following the protocol writes below the durable end again: writers only append past
//!   it, and tail recovery writes only past the last valid record.
//!
//! A file truncated or rewritten by something outside the protocol (a person, another
//! program) is outside this contract, as with any memory-mapped database.

#![expect(
    unsafe_code,
    reason = "memory-mapping segment files for zero-copy reads"
)]

use bytes::Bytes;
use std::fs::File;
use std::io;

/// Maps `len` bytes of `file` from `offset` (a multiple of the page size) read-only and
/// shared, as `Bytes` that keep the map alive. The range is clipped to the file's length,
/// so no page of the map lies past the end of the file.
pub(crate) fn map_read_only(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let size = file.metadata()?.len();
    let len = len.min(size.saturating_sub(offset));
    if len == 0 {
        return Ok(Bytes::new());
    }
    if !offset.is_multiple_of(rustix::param::page_size() as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "map offset not page-aligned",
        ));
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("range too large to map"))?;
    // SAFETY: see the module's `# Safety`: the file is preallocated and never shrunk while
    // mapped, the range lies within the file, and callers only expose bytes below the
    // durable end, which nobody rewrites.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}
