//! Seals: the frame that closes a segment. A writer seals its segment when it rolls to the
//! next one; recovery seals a tail it will not continue, which is how a torn tail is cut
//! off (files are never shrunk). A seal carries the lane's next sequence number.

use std::path::Path;

use super::LaneFiles;
use crate::clock::now_ns;
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    decode_frame, encode_record, Frame, RecordHeader, RecordKind, Watermark, SEAL_LEN,
};
use crate::fs::{OpenMode, StorageFile};
use crate::types::{LaneId, SegmentId, Seq};

/// True when the frame that ends at the watermark is a seal: the lane was closed cleanly
/// and needs no recovery.
pub(super) fn sealed_at(files: &LaneFiles<'_>, wm: &Watermark) -> bool {
    let Some(start) = wm.offset.checked_sub(SEAL_LEN) else {
        return false;
    };
    let path = files.segment_path(wm.segment);
    let Ok(file) = files.storage.open(&path, OpenMode::Read) else {
        return false;
    };
    let mut buf = [0u8; SEAL_LEN as usize];
    if file.read_exact_at(&mut buf, start).is_err() {
        return false;
    }
    // Decode against a buffer holding just the seal: offset 0, no payload.
    matches!(
        decode_frame(&buf, 0, files.lane, wm.segment, 0),
        Frame::Record { header, .. } if header.kind == RecordKind::Seal
    )
}

/// Where a seal goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealAt {
    pub lane: LaneId,
    pub segment: SegmentId,
    /// Offset of the seal: just past the segment's last valid record.
    pub at: u64,
    /// The lane's next unused sequence number.
    pub next_seq: Seq,
    /// Time of the newest record (0: unknown, the seal takes the current time).
    pub last_time_ns: u64,
}

/// Writes and syncs a seal; returns the offset after it. `file_len` is how far the file
/// may extend (the seal must fit within it).
pub(crate) fn write_seal(
    file: &dyn StorageFile,
    path: &Path,
    seal: &SealAt,
    file_len: u64,
) -> Result<u64> {
    let &SealAt {
        lane,
        segment,
        at,
        next_seq,
        last_time_ns,
    } = seal;
    if at + SEAL_LEN > file_len {
        return Err(Error::Corrupt(Corruption {
            path: path.to_path_buf(),
            lane: Some(lane),
            segment: Some(segment),
            offset: at,
            kind: CorruptionKind::Truncated,
        }));
    }
    let seal = RecordHeader {
        len: 0,
        kind: RecordKind::Seal,
        lane,
        batch_start: u32::try_from(at).unwrap_or(u32::MAX),
        segment,
        seq: next_seq,
        time_ns: if last_time_ns == 0 {
            now_ns()
        } else {
            last_time_ns
        },
    };
    let mut buf = Vec::with_capacity(SEAL_LEN as usize);
    encode_record(&mut buf, &seal, &[]);
    file.write_all_at(&buf, at)
        .map_err(|e| Error::io("write seal", path, e))?;
    file.sync_data()
        .map_err(|e| Error::sync_failed("fdatasync", path, e))?;
    Ok(at + SEAL_LEN)
}
