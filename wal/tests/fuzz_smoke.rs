//! The fuzz targets' bodies (`fuzz/src/wal_targets.rs`, run by cargo-fuzz, see
//! `docs/RELIABILITY.md`) over seeded random inputs and over mutated valid segments and
//! checkpoints, so they keep compiling and passing in the default suite without
//! cargo-fuzz. Inputs that ever crashed a fuzz target are kept below as regressions.
//!
//! Cases: 3000 per target by default, `WAL_FUZZ_SMOKE_CASES=N` for more.

#[path = "../../fuzz/src/wal_targets.rs"]
mod wal_targets;

use std::sync::Arc;

use escalation_queue_wal::layout::FileName;
use escalation_queue_wal::{LaneId, Options, Reader, SegmentId, SimDisk, Writer};

fn cases() -> u64 {
    std::env::var("WAL_FUZZ_SMOKE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A valid segment (records of several sizes in several batches, then a seal) and a
/// valid checkpoint file, as written by the wal: the seeds mutations start from.
fn seeds() -> (Vec<u8>, Vec<u8>) {
    let sim = SimDisk::new(1);
    let opts = Options::default()
        .storage(Arc::new(sim.clone()))
        .segment_bytes(64 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0);
    let w = Writer::open("/q", &opts).unwrap();
    for i in 0..12u8 {
        w.append(&vec![i + 1; 1 + usize::from(i) * 37]).unwrap();
    }
    drop(w);
    let mut r = Reader::open("/q", "c", &opts).unwrap();
    while let Some(rec) = r.next().unwrap() {
        r.ack(rec.id).unwrap();
        r.checkpoint().unwrap();
    }
    drop(r);
    let seg = sim
        .read_file(
            &std::path::Path::new("/q").join(FileName::Segment(LaneId(0), SegmentId(1)).render()),
        )
        .unwrap();
    let ckpt = sim
        .read_file(&std::path::Path::new("/q").join(FileName::Checkpoint("c".into()).render()))
        .unwrap();
    (seg[..2048].to_vec(), ckpt)
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let i = rng.below(v.len() as u64) as usize;
        match rng.below(4) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next() as u8,
            2 => v.truncate(i),
            _ => v[i..].iter_mut().take(64).for_each(|b| *b = 0),
        }
        if v.is_empty() {
            break;
        }
    }
    v
}

fn random(rng: &mut Rng, len_max: u64) -> Vec<u8> {
    (0..rng.below(len_max)).map(|_| rng.next() as u8).collect()
}

/// A header for the targets that read parameters from their first bytes, then `body`.
fn with_head(rng: &mut Rng, head_len: usize, body: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = (0..head_len).map(|_| rng.next() as u8).collect();
    v.extend_from_slice(body);
    v
}

#[test]
fn decode_frame_and_scan_segment_hold_their_properties_on_random_and_mutated_segments() {
    let (seg, _) = seeds();
    let mut rng = Rng(0x5eed);
    for _ in 0..cases() {
        let body = if rng.below(2) == 0 {
            mutate(&mut rng, &seg[64..])
        } else {
            random(&mut rng, 600)
        };
        let mut input = with_head(&mut rng, 10, &body);
        // Point the offset at a frame boundary of the seed often.
        input[0..2].copy_from_slice(&(rng.below(4) as u16 * 48).to_le_bytes());
        wal_targets::decode_frame(&input);
        let mut input = with_head(&mut rng, 12, &body);
        input[0..2].copy_from_slice(&0u16.to_le_bytes());
        input[2..4].copy_from_slice(&4096u16.to_le_bytes());
        wal_targets::scan_segment(&input);
    }
}

#[test]
fn checkpoint_decoding_holds_its_properties_on_random_and_mutated_files() {
    let (_, ckpt) = seeds();
    let mut rng = Rng(0xc0ffee);
    for _ in 0..cases() {
        let input = if rng.below(2) == 0 {
            mutate(&mut rng, &ckpt)
        } else {
            random(&mut rng, 200)
        };
        wal_targets::checkpoint(&input);
    }
}

#[test]
fn recovery_and_reading_hold_their_properties_on_mutated_segments() {
    let (seg, _) = seeds();
    let mut rng = Rng(0xfeed);
    for _ in 0..cases() / 10 {
        let body = mutate(&mut rng, &seg[64..]);
        let mut input = with_head(&mut rng, 16, &body);
        input[8] |= 1;
        wal_targets::recover_segment(&input);
    }
}

/// Regression (cargo-fuzz `checkpoint`, crash-68187fd0…): 12 bytes, "EQCK", a crc of
/// 0xffffffff and a generation of 0xffffffff; zero-padded to two slots this is a valid
/// slot (libFuzzer solved the crc). The target's property "a valid slot needs its whole
/// 24-byte header in the input" was wrong, not the loader: it now accepts the slot.
#[test]
fn regression_checkpoint_valid_slot_from_a_12_byte_prefix() {
    let input = [
        0x45, 0x51, 0x43, 0x4b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    wal_targets::checkpoint(&input);
    let cp = escalation_queue_wal::layout::decode_checkpoint(&input).expect("a valid slot");
    assert_eq!((cp.generation, cp.lanes.len()), (0xffff_ffff, 0));
}
