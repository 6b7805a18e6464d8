//! Journal model tests: reopen after a crash, torn tails, damage, compaction, release rules.

use super::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

#[path = "../../tests/support/record_ids.rs"]
mod record_ids;
use record_ids::{id, iq};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("attempts.log");
        Self { _dir: dir, path }
    }

    fn open(&self, slots: u32) -> AttemptJournal {
        AttemptJournal::open(&self.path, slots, MarkerDurability::Synced).expect("open journal")
    }

    fn sent(&self, journal: &AttemptJournal, lane: u16, seq: u64) -> bool {
        journal.may_have_been_sent(id(lane, seq), &iq(lane, seq))
    }

    fn len(&self) -> u64 {
        fs::metadata(&self.path).expect("metadata").len()
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .expect("open for damage");
        file.write_all_at(bytes, offset).expect("damage");
    }
}

#[test]
fn a_crash_between_marker_and_send_leaves_the_record_possibly_submitted() {
    // Story: the marker is durable before the request goes out, so a crash at any point
    // after it (before the send, during it, before the ack) makes the next run treat the
    // record as possibly submitted; records never marked are not.
    let fx = Fixture::new();
    let mut journal = fx.open(16);
    journal.mark(id(0, 5), &iq(0, 5)).expect("mark");
    drop(journal); // the crash: no settle, no checkpoint
    let journal = fx.open(16);
    assert_eq!(journal.report().inherited, 1);
    assert!(fx.sent(&journal, 0, 5));
    assert!(!fx.sent(&journal, 0, 6), "never marked: never sent");
    assert!(!fx.sent(&journal, 1, 5), "another lane");
    assert!(
        !journal.may_have_been_sent(id(0, 5), "iq_other"),
        "a different image query id at the same position is another record"
    );
}

#[test]
fn a_settled_marker_is_released_only_by_a_durable_checkpoint() {
    // Story: a record acknowledged but not yet checkpointed comes again after a crash;
    // its marker must still be there. After the checkpoint it is not needed.
    let fx = Fixture::new();
    let mut journal = fx.open(16);
    journal.mark(id(2, 1), &iq(2, 1)).expect("mark");
    journal.mark(id(2, 2), &iq(2, 2)).expect("mark");
    journal.settled(id(2, 1));
    assert!(!fx.sent(&journal, 2, 1), "acknowledged in this run");
    drop(journal);
    let mut journal = fx.open(16);
    assert!(fx.sent(&journal, 2, 1) && fx.sent(&journal, 2, 2));
    journal.mark(id(2, 1), &iq(2, 1)).expect("adopt");
    journal.settled(id(2, 1));
    journal.checkpointed();
    journal.seen(id(2, 2));
    journal.mark(id(2, 2), &iq(2, 2)).expect("adopt");
    assert_eq!(journal.marks_written().0, 0, "adopting writes nothing");
    assert!(!fx.sent(&journal, 2, 1), "released by the checkpoint");
    assert_eq!(journal.len(), 1, "only (2, 2) is still needed");
    drop(journal);
    let journal = fx.open(16);
    assert!(fx.sent(&journal, 2, 2), "still live");
}

#[test]
fn a_torn_marker_write_is_ignored_and_earlier_markers_are_kept() {
    // Story: power fails while a marker is being written. That write never returned, so
    // its request was never sent: the torn slot is ignored, the others count.
    let fx = Fixture::new();
    let mut journal = fx.open(16);
    for seq in 0..3 {
        journal.mark(id(0, seq), &iq(0, seq)).expect("mark");
    }
    drop(journal);
    // The third marker is slot 2 (after the header): keep half of it.
    let third = slot_offset(2);
    fx.write_at(third + 12, &[0_u8; 20]);
    let journal = fx.open(16);
    assert_eq!(journal.report().damaged_slots, 1);
    assert!(fx.sent(&journal, 0, 0) && fx.sent(&journal, 0, 1));
    assert!(!fx.sent(&journal, 0, 2));
    // A file cut in the middle of a slot (a torn append of an older build) reads too.
    drop(journal);
    let cut = fx.len() - 7;
    OpenOptions::new()
        .write(true)
        .open(&fx.path)
        .expect("open")
        .set_len(cut)
        .expect("cut");
    let journal = fx.open(16);
    assert!(fx.sent(&journal, 0, 0) && fx.sent(&journal, 0, 1));
}

#[test]
fn a_flipped_byte_loses_only_its_marker_and_is_reported() {
    // Story: bit rot in one slot or in the header must not crash-loop the worker nor hide
    // the other markers.
    let fx = Fixture::new();
    let mut journal = fx.open(16);
    for seq in 0..4 {
        journal.mark(id(1, seq), &iq(1, seq)).expect("mark");
    }
    drop(journal);
    fx.write_at(slot_offset(1) + 9, &[0xff]);
    fx.write_at(3, b"!"); // the header's magic
    let journal = fx.open(16);
    let report = journal.report();
    assert!(report.bad_header);
    assert_eq!((report.damaged_slots, report.inherited), (1, 3));
    let survivors: Vec<bool> = (0..4).map(|seq| fx.sent(&journal, 1, seq)).collect();
    assert_eq!(survivors, [true, false, true, true]);
    drop(journal);
    let journal = fx.open(16);
    assert_eq!(
        journal.report(),
        JournalReport {
            inherited: 3,
            ..Default::default()
        },
        "rewritten clean"
    );
}

#[test]
fn compaction_keeps_what_is_needed_and_bounds_the_file() {
    // Story: a long run writes one marker per delivered record; the file must not grow,
    // and compacting it must never drop a marker whose record is not checkpointed.
    let fx = Fixture::new();
    let mut journal = fx.open(64);
    let size = fx.len();
    assert_eq!(size, 65 * SLOT_LEN as u64);
    for seq in 0..2_000_u64 {
        journal.mark(id(3, seq), &iq(3, seq)).expect("mark");
        journal.settled(id(3, seq));
        if seq % 10 == 9 {
            journal.checkpointed();
        }
        assert!(journal.len() <= 10, "{}", journal.len());
    }
    journal.mark(id(3, 2_000), &iq(3, 2_000)).expect("mark");
    assert_eq!(fx.len(), size, "compacted in place of growing");
    let written = journal.marks_written().0;
    assert!(
        (1_940..2_001).contains(&written),
        "one rewrite per 50+ marks: {written}"
    );
    drop(journal);
    let journal = fx.open(64);
    let sent: Vec<u64> = (1_990..=2_000)
        .filter(|&s| fx.sent(&journal, 3, s))
        .collect();
    assert_eq!(
        sent,
        (1_990..=2_000).collect::<Vec<_>>(),
        "settled-not-checkpointed and live survive"
    );
    // Released markers stay readable until their slot is compacted away: harmless, since
    // their records are behind the durable cursor and never come again.
    assert!(journal.report().inherited <= 64);
    assert!(
        (0..1_900).all(|s| !fx.sent(&journal, 3, s)),
        "compacted away"
    );
}

#[test]
fn more_needed_markers_than_slots_grow_the_file_instead_of_dropping_one() {
    // Story: markers inherited from lanes the reader has not reached yet stay needed; a
    // full journal must make room, not forget one.
    let fx = Fixture::new();
    let mut journal = fx.open(4);
    for seq in 0..10 {
        journal.mark(id(0, seq), &iq(0, seq)).expect("mark");
    }
    drop(journal);
    let journal = fx.open(4);
    assert!((0..10).all(|s| fx.sent(&journal, 0, s)));
    assert!(journal.slots() >= 20);
}

#[test]
fn inherited_markers_go_once_the_reader_shows_their_records_are_behind_the_cursor() {
    // Story: an earlier run left markers for records it had checkpointed (or whose lane
    // the new run reaches later). They are released when a later record of their lane
    // comes first, or when the reader has caught up with every lane.
    let fx = Fixture::new();
    let mut journal = fx.open(16);
    for (lane, seq) in [(0, 1), (0, 2), (0, 3), (1, 7)] {
        journal.mark(id(lane, seq), &iq(lane, seq)).expect("mark");
    }
    drop(journal);
    let mut journal = fx.open(16);
    journal.seen(id(0, 3));
    assert!(!fx.sent(&journal, 0, 1) && !fx.sent(&journal, 0, 2));
    assert!(fx.sent(&journal, 0, 3), "the record that came");
    assert!(fx.sent(&journal, 1, 7), "another lane");
    journal.mark(id(0, 3), &iq(0, 3)).expect("adopt");
    journal.caught_up();
    assert!(!fx.sent(&journal, 1, 7));
    assert!(
        fx.sent(&journal, 0, 3),
        "adopted: this run's until acknowledged"
    );
    assert_eq!(journal.len(), 1);
}

#[test]
fn free_slots_are_not_markers() {
    // Story: zeros are free slots, so a preallocated file reads as empty.
    assert!(decode_slot(&[0_u8; SLOT_LEN]).is_none());
    assert_ne!(crc32c::crc32c(&[0_u8; CRC_AT]), 0);
    let slot = encode_slot(9, 4, 77, iq_key("iq_a"));
    assert_eq!(
        decode_slot(&slot),
        Some(Slot {
            generation: 9,
            lane: 4,
            seq: 77,
            iq_key: iq_key("iq_a")
        })
    );
}

/// Issue 10 property ("arbitrary bytes in any queue file never hang or panic"): 200 seeded
/// cases of random bytes as the attempt journal. Each open returns (on a thread with a
/// deadline) and the journal then records and finds a marker after a reopen.
#[test]
fn arbitrary_bytes_as_the_journal_open_to_a_working_journal() {
    let mut rng = fastrand::Rng::with_seed(10);
    for case in 0..200 {
        let fx = Fixture::new();
        let len = rng.usize(0..(SLOT_LEN * 40));
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        fs::write(&fx.path, &bytes).expect("garbage");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fx.path.clone();
        std::thread::spawn(move || {
            let opened = AttemptJournal::open(&path, 16, MarkerDurability::Synced).is_ok();
            let _ = tx.send(opened);
        });
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("case {case}: open hung or panicked: {e}"));
        assert!(opened, "case {case}: open failed");
        let mut journal = fx.open(16);
        journal.mark(id(0, 1), &iq(0, 1)).expect("mark");
        drop(journal);
        assert!(fx.sent(&fx.open(16), 0, 1), "case {case}");
    }
}

/// Probe F7/F8 for the worker's files: the attempt journal as a symlink to a victim or a
/// FIFO. Now the entry is moved aside, never opened, and a fresh journal is used.
#[test]
fn a_foreign_journal_is_moved_aside_never_opened() {
    let fx = Fixture::new();
    let victim = fx.path.with_file_name("victim");
    fs::write(&victim, b"victim bytes").expect("victim");
    std::os::unix::fs::symlink(&victim, &fx.path).expect("link");
    let journal = fx.open(16);
    drop(journal);
    assert_eq!(fs::read(&victim).expect("victim"), b"victim bytes");
    fs::remove_file(&fx.path).expect("remove");
    let ok = std::process::Command::new("mkfifo").arg(&fx.path).status();
    assert!(ok.expect("mkfifo").success());
    let _journal = fx.open(16);
    assert!(fs::symlink_metadata(&fx.path)
        .expect("journal")
        .file_type()
        .is_file());
}
