//! Setup and assertion helpers shared by the wal's integration tests.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::sync::Arc;

use escalation_queue_wal::{Options, SimDisk};

pub fn opts(sim: &SimDisk) -> Options {
    Options::default()
        .storage(Arc::new(sim.clone()))
        .segment_bytes(64 << 10)
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
