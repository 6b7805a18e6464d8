//! Options for opening a queue directory: each documents its default and bounds, and one
//! `validate()` rejects what is out of range with the key, the value and what is allowed.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{frame_len, SEAL_LEN, SEGMENT_HEADER_LEN};
use crate::fs::{RealStorage, Storage};
use crate::types::Durability;

/// Most lanes a queue can have (lane ids are 0..64).
pub const LANES_LIMIT: u16 = 64;

/// Each option's default, written once: [`Options::default`], the producer's
/// `QueueOptions::default` and the binary's configuration file all take them from here.
pub mod defaults {
    use crate::types::Durability;

    /// `segment_bytes`: 64 MiB.
    pub const SEGMENT_BYTES: u64 = 64 << 20;
    /// `record_bytes_max`: 16 MiB.
    pub const RECORD_BYTES_MAX: u32 = 16 << 20;
    /// `queue_bytes_max`: 8 GiB.
    pub const QUEUE_BYTES_MAX: u64 = 8 << 30;
    /// `free_disk_bytes_min`: 64 MiB.
    pub const FREE_DISK_BYTES_MIN: u64 = 64 << 20;
    /// `lanes_max`: 16.
    pub const LANES_MAX: u16 = 16;
    /// `durability`: sync before an append returns.
    pub const DURABILITY: Durability = Durability::SyncEachAppend;
    /// `batch_bytes_max`: 8 MiB.
    pub const BATCH_BYTES_MAX: usize = 8 << 20;
    /// `allocation_step_bytes`: 4 MiB.
    pub const ALLOCATION_STEP_BYTES: u64 = 4 << 20;
}

/// How a queue directory is opened. Build with [`Options::default`] and the setters.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segment_bytes: u64,
    pub(crate) record_bytes_max: u32,
    pub(crate) queue_bytes_max: u64,
    pub(crate) free_disk_bytes_min: u64,
    pub(crate) lanes_max: u16,
    pub(crate) durability: Durability,
    pub(crate) batch_bytes_max: usize,
    pub(crate) allocation_step_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            storage: Arc::new(RealStorage),
            segment_bytes: defaults::SEGMENT_BYTES,
            record_bytes_max: defaults::RECORD_BYTES_MAX,
            queue_bytes_max: defaults::QUEUE_BYTES_MAX,
            free_disk_bytes_min: defaults::FREE_DISK_BYTES_MIN,
            lanes_max: defaults::LANES_MAX,
            durability: defaults::DURABILITY,
            batch_bytes_max: defaults::BATCH_BYTES_MAX,
            allocation_step_bytes: defaults::ALLOCATION_STEP_BYTES,
        }
    }
}

impl Options {
    /// The storage behind the queue. Default: the real file system.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Most bytes a segment file holds before the lane continues in a new one (segments are
    /// allocated in steps up to this, see [`Options::allocation_step_bytes`]). Default
    /// 64 MiB; at least 64 KiB, at most 1 GiB, and large enough for one record of
    /// `record_bytes_max` plus framing.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Largest record payload. Default 16 MiB; at least 1.
    pub fn record_bytes_max(mut self, bytes: u32) -> Self {
        self.record_bytes_max = bytes;
        self
    }

    /// Most bytes all segment files together may occupy (their allocated lengths); an append
    /// that needs more allocated beyond it fails with `QueueFull`. Default 8 GiB; at least
    /// two segments.
    pub fn queue_bytes_max(mut self, bytes: u64) -> Self {
        self.queue_bytes_max = bytes;
        self
    }

    /// Free space to leave on the file system; an allocation that would eat into it fails
    /// with `NoSpace`. Default 64 MiB; 0 disables the check.
    pub fn free_disk_bytes_min(mut self, bytes: u64) -> Self {
        self.free_disk_bytes_min = bytes;
        self
    }

    /// Lanes, that is concurrent writer handles across all processes. Default 16; 1..=64.
    pub fn lanes_max(mut self, lanes: u16) -> Self {
        self.lanes_max = lanes;
        self
    }

    /// How appends are made durable. Default [`Durability::SyncEachAppend`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Most bytes one group-commit write carries (a record larger than this is written
    /// alone). Default 8 MiB; at least 4 KiB.
    pub fn batch_bytes_max(mut self, bytes: usize) -> Self {
        self.batch_bytes_max = bytes;
        self
    }

    /// Segment files are allocated (`fallocate`) in steps of this many bytes as records
    /// arrive, the first when the segment is created, so a lane that holds little costs
    /// little disk. Default 4 MiB; 4 KiB to 1 GiB, a multiple of 4 KiB. A step larger than
    /// `segment_bytes` allocates the whole segment at once.
    pub fn allocation_step_bytes(mut self, bytes: u64) -> Self {
        self.allocation_step_bytes = bytes;
        self
    }

    /// Length to allocate a segment of `capacity` bytes to so that it holds `room` bytes
    /// (and at least its header and a seal): `room` rounded up to a whole step, at most
    /// the capacity.
    pub(crate) fn allocation_target(&self, room: u64, capacity: u64) -> u64 {
        let want = room.max(SEGMENT_HEADER_LEN as u64 + SEAL_LEN);
        let step = self.allocation_step_bytes.max(4096);
        want.div_ceil(step)
            .saturating_mul(step)
            .min(capacity)
            .max(want.min(capacity))
    }

    /// Checks every option against its bounds.
    pub fn validate(&self) -> Result<()> {
        let min_segment = SEGMENT_HEADER_LEN as u64 + frame_len(self.record_bytes_max) + SEAL_LEN;
        check(
            "segment_bytes",
            self.segment_bytes,
            (64 << 10).max(min_segment)..=(1 << 30),
            "64 KiB to 1 GiB, and room for one record of record_bytes_max plus 104 bytes",
        )?;
        check(
            "record_bytes_max",
            u64::from(self.record_bytes_max),
            1..=u64::from(u32::MAX),
            "at least 1",
        )?;
        check(
            "queue_bytes_max",
            self.queue_bytes_max,
            self.segment_bytes.saturating_mul(2)..=u64::MAX,
            "at least two segments (2 * segment_bytes)",
        )?;
        check(
            "lanes_max",
            u64::from(self.lanes_max),
            1..=u64::from(LANES_LIMIT),
            "1 to 64",
        )?;
        check(
            "batch_bytes_max",
            self.batch_bytes_max as u64,
            4096..=(1 << 30),
            "4 KiB to 1 GiB",
        )?;
        check(
            "allocation_step_bytes",
            self.allocation_step_bytes,
            4096..=(1 << 30),
            "4 KiB to 1 GiB",
        )?;
        if !self.allocation_step_bytes.is_multiple_of(4096) {
            return Err(Error::Config {
                key: "allocation_step_bytes",
                value: self.allocation_step_bytes.to_string(),
                allowed: "a multiple of 4096".into(),
            });
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() || d > Duration::from_secs(60) {
                return Err(Error::Config {
                    key: "durability",
                    value: format!("Interval({d:?})"),
                    allowed: "an interval between 1 ns and 60 s".into(),
                });
            }
        }
        Ok(())
    }
}

fn check(
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    allowed: &str,
) -> Result<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Error::Config {
            key,
            value: value.to_string(),
            allowed: allowed.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        Options::default().validate().expect("defaults are valid");
        let err = Options::default().lanes_max(0).validate().unwrap_err();
        assert!(err.to_string().contains("lanes_max = 0"), "{err}");
        let err = Options::default()
            .segment_bytes(1 << 20)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("segment_bytes"), "{err}");
    }
}
