//! Setup and assertion helpers shared by the wal's integration tests.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::PathBuf;
use std::sync::Arc;

use escalation_queue_wal::layout::FileName;
use escalation_queue_wal::{LaneId, Options, Reader, SegmentId, SimDisk};

/// Small segments (64 KiB) allocated in 8 KiB steps, as the default 64 MiB segments are
/// in 4 MiB steps: lanes roll and segments grow within a few records.
pub fn opts(sim: &SimDisk) -> Options {
    Options::default()
        .storage(Arc::new(sim.clone()))
        .segment_bytes(64 << 10)
        .allocation_step_bytes(8 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0)
}

/// Compares payload lists; on failure prints a short summary of each payload rather than
/// kilobytes of bytes.
#[track_caller]
pub fn assert_same(got: &[Vec<u8>], want: &[Vec<u8>]) {
    if got != want {
        panic!(
            "payloads differ:\n  got  {:?}\n  want {:?}",
            summary(got),
            summary(want)
        );
    }
}

pub fn summary(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| {
            let head: String = p
                .iter()
                .take(12)
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                .collect();
            format!("{head}..({} B)", p.len())
        })
        .collect()
}

/// The segment files that exist on `sim` now: lane, segment id and path.
pub fn segment_files(sim: &SimDisk) -> Vec<(LaneId, SegmentId, PathBuf)> {
    sim.paths()
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str().and_then(FileName::parse)?;
            match name {
                FileName::Segment(lane, seg) => Some((lane, seg, p)),
                _ => None,
            }
        })
        .collect()
}

/// Every record the reader has now, without acknowledging any.
pub fn drain(r: &mut Reader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("reader next") {
        out.push(rec.payload.to_vec());
    }
    out
}

/// Drains, acknowledging everything, checkpoints and waits until consumed segments are
/// deleted (for stories about space).
pub fn consume_and_free(r: &mut Reader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("reader next") {
        r.ack(rec.id).expect("ack");
        out.push(rec.payload.to_vec());
    }
    r.wait_for_deletions().expect("checkpoint and deletions");
    out
}

/// A small payload named by `tag` and `i`.
pub fn p(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}-{i:05}").into_bytes()
}

/// [`p`] padded with dots to `size` bytes.
pub fn big(tag: &str, i: usize, size: usize) -> Vec<u8> {
    let mut v = p(tag, i);
    v.resize(size, b'.');
    v
}
