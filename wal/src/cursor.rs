//! Named cursors and their atomic checkpoints.
//!
//! A checkpoint file `cursor-NAME.ckpt` has two 4 KiB slots; checkpoint `g` is written to
//! slot `g % 2` and synced, so a torn write can only damage the slot being written while
//! the other still holds the previous checkpoint. Loading takes the valid slot with the
//! higher generation.
//!
//! Slot layout (little-endian):
//!
//! ```text
//!   0..4    magic "EQCK"
//!   4..8    crc32c of bytes 8..(24 + 32 * lanes)
//!   8..16   generation (u64), starts at 1
//!  16..20   number of lane entries (u32), at most 64
//!  20..24   reserved, zero
//!  24..     lane entries, 32 bytes each:
//!             0..2 lane (u16), 2..8 reserved, 8..16 segment id, 16..24 offset,
//!             24..32 next sequence number
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{field, put, u16_at, u32_at, u64_at, FileName};
use crate::fs::{join, OpenMode, Storage, StorageFile};
use crate::options::LANES_LIMIT;
use crate::types::{LaneId, Position, SegmentId, Seq};

/// Size of one checkpoint slot.
pub const SLOT_LEN: usize = 4096;
const MAGIC: [u8; 4] = *b"EQCK";
const CK_MAGIC: usize = 0;
const CK_CRC: usize = CK_MAGIC + 4;
const CK_GENERATION: usize = CK_CRC + 4;
const CK_COUNT: usize = CK_GENERATION + 8;
const ENTRIES: usize = CK_COUNT + 8;
const ENTRY_LEN: usize = 32;
const E_LANE: usize = 0;
const E_SEGMENT: usize = 8;
const E_OFFSET: usize = E_SEGMENT + 8;
const E_NEXT_SEQ: usize = E_OFFSET + 8;
const _: () = assert!(ENTRIES == 24 && E_NEXT_SEQ + 8 == ENTRY_LEN);
const _: () = assert!(ENTRIES + ENTRY_LEN * LANES_LIMIT as usize <= SLOT_LEN);

/// Where a cursor stands in one lane: the next record it has not consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LanePosition {
    /// Frame boundary of the next unconsumed record (or of the lane's end).
    pub position: Position,
    /// Its sequence number.
    pub next_seq: Seq,
}

/// A cursor's saved state: one position per lane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Increases by one per checkpoint written.
    pub generation: u64,
    /// Position per lane; lanes missing here start at their oldest segment.
    pub lanes: BTreeMap<LaneId, LanePosition>,
}

impl Checkpoint {
    /// Encodes one slot. A checkpoint has at most [`LANES_LIMIT`] lanes; one with more
    /// than that (never written by the wal) gives a slot that [`Checkpoint::decode`]
    /// rejects.
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        put::<CK_MAGIC, _, _>(&mut b, MAGIC);
        put::<CK_GENERATION, _, _>(&mut b, self.generation.to_le_bytes());
        put::<CK_COUNT, _, _>(&mut b, (self.lanes.len() as u32).to_le_bytes());
        let (entries, _) = b[ENTRIES..].as_chunks_mut::<ENTRY_LEN>();
        for (e, (lane, p)) in entries.iter_mut().zip(&self.lanes) {
            put::<E_LANE, _, _>(e, lane.0.to_le_bytes());
            put::<E_SEGMENT, _, _>(e, p.position.segment.0.to_le_bytes());
            put::<E_OFFSET, _, _>(e, p.position.offset.to_le_bytes());
            put::<E_NEXT_SEQ, _, _>(e, p.next_seq.0.to_le_bytes());
        }
        let end = ENTRIES + self.lanes.len() * ENTRY_LEN;
        let crc = crc32c::crc32c(b.get(CK_GENERATION..end).unwrap_or(&b[CK_GENERATION..]));
        put::<CK_CRC, _, _>(&mut b, crc.to_le_bytes());
        b
    }

    /// Decodes one slot; `None` when it is empty, torn or damaged.
    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; SLOT_LEN] = b.first_chunk()?;
        if field::<CK_MAGIC, 4, _>(b) != MAGIC {
            return None;
        }
        let count = u32_at::<CK_COUNT, _>(b) as usize;
        if count > LANES_LIMIT as usize {
            return None;
        }
        let end = ENTRIES + count * ENTRY_LEN;
        // In bounds: `count` is at most LANES_LIMIT, whose entries fit in a slot.
        let (Some(covered), Some(entries)) = (
            b.get(CK_GENERATION..end),
            b[ENTRIES..].as_chunks::<ENTRY_LEN>().0.get(..count),
        ) else {
            return None;
        };
        if u32_at::<CK_CRC, _>(b) != crc32c::crc32c(covered) {
            return None;
        }
        let mut lanes = BTreeMap::new();
        for e in entries {
            let position = Position {
                segment: SegmentId(u64_at::<E_SEGMENT, _>(e)),
                offset: u64_at::<E_OFFSET, _>(e),
            };
            let next_seq = Seq(u64_at::<E_NEXT_SEQ, _>(e));
            lanes.insert(
                LaneId(u16_at::<E_LANE, _>(e)),
                LanePosition { position, next_seq },
            );
        }
        Some(Self {
            generation: u64_at::<CK_GENERATION, _>(b),
            lanes,
        })
    }
}

/// An open checkpoint file.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    /// Both slots are allocated. False after an open that met a full disk (`ENOSPC`):
    /// the file exists (its directory entry is durable) but holds no slot; the first
    /// [`CheckpointFile::write`] allocates them.
    allocated: bool,
}

impl CheckpointFile {
    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating) the checkpoint of cursor `name`. Returns the newest valid
    /// checkpoint, and a corruption report when the file held slots but none was valid.
    ///
    /// A file shorter than its two slots is extended to them. On a full disk (`ENOSPC`)
    /// that is left for the first [`CheckpointFile::write`], so a reader that never ran
    /// can still start, deliver and free space: the file then holds no valid
    /// slot, which is what it held before.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        name: &str,
    ) -> Result<(Self, Checkpoint, Option<Corruption>)> {
        let path = join(dir, &FileName::Checkpoint(name.to_owned()));
        let file = storage
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file.size().map_err(|e| Error::io("stat", &path, e))?;
        let mut allocated = true;
        if len < 2 * SLOT_LEN as u64 {
            match file.allocate(2 * SLOT_LEN as u64) {
                Err(e) if crate::fs::is_storage_full(&e) => {
                    tracing::warn!(path = %path.display(), "no space to allocate the checkpoint file; it is allocated at the first checkpoint (after consumed segments are freed)");
                    allocated = false;
                }
                other => other
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io("create checkpoint", &path, e))?,
            }
            // IMPORTANT: the checkpoint's directory entry must be durable.
            storage
                .sync_dir(dir)
                .map_err(|e| Error::sync_failed("fsync dir", dir, e))?;
        }
        let mut slots = vec![0u8; 2 * SLOT_LEN];
        let have = match allocated {
            true => slots.len(),
            false => usize::try_from(len).unwrap_or(0).min(slots.len()),
        };
        file.read_exact_at(slots.get_mut(..have).unwrap_or_default(), 0)
            .map_err(|e| Error::io("read checkpoint", &path, e))?;
        let (a, b) = slots.split_at(SLOT_LEN);
        let best = [Checkpoint::decode(a), Checkpoint::decode(b)]
            .into_iter()
            .flatten()
            .max_by_key(|c| c.generation);
        let damage = match &best {
            None if slots.iter().any(|&x| x != 0) => Some(Corruption {
                path: path.clone(),
                lane: None,
                segment: None,
                offset: 0,
                kind: CorruptionKind::BadHeader,
            }),
            _ => None,
        };
        let file = Self {
            file,
            path,
            allocated,
        };
        Ok((file, best.unwrap_or_default(), damage))
    }

    /// False while the file holds no slot (see [`CheckpointFile::open`]): no checkpoint
    /// of this cursor is durable, so a restart reads every lane from its oldest segment.
    pub(crate) fn is_allocated(&self) -> bool {
        self.allocated
    }

    /// Writes `cp` to its slot and syncs. Returns only once the checkpoint is durable.
    /// Allocates both slots first if the open could not (an `ENOSPC` from that is an
    /// [`Error::Io`] whose source [`crate::fs::is_storage_full`] recognises).
    pub(crate) fn write(&mut self, cp: &Checkpoint) -> Result<()> {
        if !self.allocated {
            // Extending the file is its metadata: synced by the fdatasync below, before
            // any slot is trusted (the slot's crc covers a torn write either way).
            self.file
                .allocate(2 * SLOT_LEN as u64)
                .map_err(|e| Error::io("create checkpoint", &self.path, e))?;
            self.allocated = true;
        }
        let slot = (cp.generation % 2) * SLOT_LEN as u64;
        self.file
            .write_all_at(&cp.encode(), slot)
            .map_err(|e| Error::io("write checkpoint", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::sync_failed("fdatasync", &self.path, e))
    }
}

/// Reads a cursor's newest checkpoint without opening it for writing (for `inspect`).
pub(crate) fn peek(storage: &dyn Storage, dir: &Path, name: &str) -> Option<Checkpoint> {
    let path = join(dir, &FileName::Checkpoint(name.to_owned()));
    let file = storage.open(&path, OpenMode::Read).ok()?;
    let mut slots = vec![0u8; 2 * SLOT_LEN];
    file.read_exact_at(&mut slots, 0).ok()?;
    let (a, b) = slots.split_at(SLOT_LEN);
    [Checkpoint::decode(a), Checkpoint::decode(b)]
        .into_iter()
        .flatten()
        .max_by_key(|c| c.generation)
}

/// True when cursor `name`'s checkpoint file holds bytes but no valid slot. A file that
/// was created but never written (all zeros, or not yet extended to its two slots) is a
/// cursor that never checkpointed, not damage (for `verify`).
pub(crate) fn is_damaged(storage: &dyn Storage, dir: &Path, name: &str) -> bool {
    if peek(storage, dir, name).is_some() {
        return false;
    }
    let path = join(dir, &FileName::Checkpoint(name.to_owned()));
    let Ok(file) = storage.open(&path, OpenMode::Read) else {
        return true;
    };
    let Ok(len) = file.size() else { return true };
    let mut bytes = vec![0u8; usize::try_from(len.min(2 * SLOT_LEN as u64)).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0).is_err() || bytes.iter().any(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> Checkpoint {
        let mut lanes = BTreeMap::new();
        lanes.insert(
            LaneId(2),
            LanePosition {
                position: Position {
                    segment: SegmentId(5),
                    offset: 4096,
                },
                next_seq: Seq(77),
            },
        );
        Checkpoint { generation, lanes }
    }

    #[test]
    fn slot_round_trips_and_every_flipped_bit_is_detected() {
        let cp = sample(3);
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp.clone()));
        let used = ENTRIES + ENTRY_LEN;
        for bit in 0..used * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                Checkpoint::decode(&b),
                None,
                "bit {bit} flipped went unnoticed"
            );
        }
    }
}
