//! Arbitrary bytes in any queue file of one lane never hang, panic or stop another lane
//! (probe F7–F10 follow-up: "a property test that arbitrary bytes in any queue file never
//! hang, panic or stop other lanes").
//!
//! Lane 0 holds good records; one file of lane 1 (its segment, whole or from an offset,
//! or its `.commit` watermark) or the cursor's checkpoint is overwritten with arbitrary
//! bytes. Opening a writer, then a reader, and reading until caught up must finish within
//! a bound (run on a thread with a deadline), never panic, and hand out every record of
//! lane 0. The probe's hostile file types (symlinks, FIFOs, directories) are covered by
//! the unit stories at the end and by `bin/tests/hostile_files.rs`.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use escalation_queue_wal::layout::FileName;
use escalation_queue_wal::{
    CorruptionKind, Error, Event, FileKind, LaneId, Options, Reader, SegmentId, Writer,
};
use proptest::prelude::*;

/// Far above what one case takes; far below a hang.
const CASE_DEADLINE: Duration = Duration::from_secs(20);
const GOOD: usize = 12;

fn opts() -> Options {
    Options::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(4 << 10)
        .allocation_step_bytes(16 << 10)
        .free_disk_bytes_min(0)
}

/// Which file of the queue gets the bytes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Lane 1's first segment, from this offset on.
    Segment { from: u64 },
    /// Lane 1's `.commit` watermark.
    Watermark,
    /// The cursor's checkpoint.
    Checkpoint,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u64..8192).prop_map(|from| Target::Segment { from }),
        Just(Target::Watermark),
        Just(Target::Checkpoint),
    ]
}

fn path_of(dir: &Path, target: Target) -> PathBuf {
    dir.join(match target {
        Target::Segment { .. } => FileName::Segment(LaneId(1), SegmentId(1)).render(),
        Target::Watermark => FileName::Watermark(LaneId(1)).render(),
        Target::Checkpoint => FileName::Checkpoint("c".to_owned()).render(),
    })
}

/// Two lanes: lane 0 with `GOOD` records, lane 1 with a few; a checkpoint written.
fn two_lanes(dir: &Path) -> BTreeSet<Vec<u8>> {
    let (a, b) = (
        Writer::open(dir, &opts()).expect("lane 0"),
        Writer::open(dir, &opts()).expect("lane 1"),
    );
    assert_eq!((a.lane(), b.lane()), (LaneId(0), LaneId(1)));
    let good: BTreeSet<Vec<u8>> = (0..GOOD)
        .map(|i| format!("good {i}").into_bytes())
        .collect();
    for g in &good {
        a.append(g).expect("append good");
    }
    for i in 0..5 {
        b.append(format!("other {i}").as_bytes())
            .expect("append other");
    }
    drop((a, b));
    let mut r = Reader::open(dir, "c", &opts()).expect("reader");
    r.checkpoint().expect("first checkpoint");
    good
}

/// Overwrites `path` from `from` with `bytes` (creating it if missing).
fn damage(path: &Path, from: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(from == 0)
        .open(path)
        .expect("open to damage");
    file.write_all_at(bytes, from).expect("damage");
}

/// Opens a writer and a reader and reads until caught up; the payloads of lane 0 read.
fn read_lane_0(dir: &Path) -> Result<BTreeSet<Vec<u8>>, Error> {
    // A writer claiming a lane runs recovery over the damaged one, as an enqueue would.
    drop(Writer::open(dir, &opts()));
    let mut reader = Reader::open(dir, "c", &opts())?;
    let mut got = BTreeSet::new();
    for _ in 0..10_000 {
        let Some(r) = reader.next_timeout(Duration::from_millis(20))? else {
            break;
        };
        if r.id.lane == LaneId(0) {
            got.insert(r.payload.to_vec());
        }
        reader.ack(r.id)?;
    }
    reader.checkpoint()?;
    Ok(got)
}

/// Runs `f` on a thread; fails if it panics or takes longer than [`CASE_DEADLINE`].
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(CASE_DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung for {CASE_DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("panicked"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary bytes in one queue file: no hang, no panic, lane 0 fully read.
    #[test]
    fn arbitrary_bytes_in_a_queue_file_stop_no_other_lane(
        target in target(),
        bytes in prop::collection::vec(any::<u8>(), 0..6000),
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let good = two_lanes(dir.path());
        let from = match target { Target::Segment { from } => from, _ => 0 };
        damage(&path_of(dir.path(), target), from, &bytes);
        let path = dir.path().to_path_buf();
        let got = bounded(move || read_lane_0(&path));
        let got = got.map_err(|e| TestCaseError::fail(format!("{target:?}: {e}")))?;
        prop_assert_eq!(got, good, "{:?}", target);
    }
}

/// What the reader reported about foreign files.
fn foreign_reports(events: &[Event]) -> Vec<(PathBuf, FileKind)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Corruption { corruption: c, .. } => match c.kind {
                CorruptionKind::NotRegularFile { found } => Some((c.path.clone(), found)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Probe F7/F8/F10 at the wal level: lane 1's only segment replaced by a symlink, a FIFO,
/// a directory or a symlink loop. The reader opens, reads every record of lane 0, and
/// reports the foreign file once with its path and type; a writer claiming lane 1 takes a
/// segment id after the foreign one instead of failing.
#[test]
fn a_foreign_segment_is_skipped_reported_once_and_never_opened() {
    type Plant = fn(&Path);
    let plants: [(FileKind, Plant); 4] = [
        (FileKind::Symlink, |p| {
            symlink("/etc/passwd", p).expect("link")
        }),
        (FileKind::Symlink, |p| symlink(p, p).expect("loop")),
        (FileKind::Directory, |p| {
            std::fs::create_dir(p).expect("dir")
        }),
        (FileKind::Fifo, |p| {
            rustix_free_mkfifo(p);
        }),
    ];
    for (kind, plant) in plants {
        let dir = tempfile::tempdir().expect("dir");
        let good = two_lanes(dir.path());
        let seg = path_of(dir.path(), Target::Segment { from: 0 });
        std::fs::remove_file(&seg).expect("remove");
        plant(&seg);
        let d = dir.path().to_path_buf();
        let (got, events) = bounded(move || {
            let mut reader = Reader::open(&d, "c", &opts()).expect("reader opens");
            let mut got = BTreeSet::new();
            let mut events = Vec::new();
            while let Some(r) = reader
                .next_timeout(Duration::from_millis(50))
                .expect("reading goes on")
            {
                got.insert(r.payload.to_vec());
                events.extend(reader.take_events());
            }
            events.extend(reader.take_events());
            (got, events)
        });
        assert!(good.is_subset(&got), "{kind:?}: lane 0 not fully read");
        assert_eq!(
            foreign_reports(&events),
            vec![(seg.clone(), kind)],
            "{events:#?}"
        );

        // Writers still open (lane 0 and lane 1), and lane 1 goes on after the foreign id.
        let a = Writer::open(dir.path(), &opts()).expect("lane 0 writer");
        let b = Writer::open(dir.path(), &opts()).expect("lane 1 writer");
        b.append(b"after")
            .expect("append after the foreign segment");
        drop((a, b));
        let meta = std::fs::symlink_metadata(&seg).expect("still there");
        assert!(
            !meta.file_type().is_file(),
            "{kind:?}: the foreign file was replaced"
        );
    }
}

/// Probe F7: a lane's watermark replaced by a symlink to a victim file. A writer used to
/// open it through the link and write the watermark into the victim. Now the writer
/// refuses that lane (reported) and takes the next one; the victim is unchanged.
#[test]
fn a_symlinked_watermark_is_not_written_through() {
    let dir = tempfile::tempdir().expect("dir");
    two_lanes(dir.path());
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"victim bytes").expect("victim");
    let commit = dir.path().join(FileName::Watermark(LaneId(0)).render());
    std::fs::remove_file(&commit).expect("remove");
    symlink(&victim, &commit).expect("link");
    let w = Writer::open(dir.path(), &opts()).expect("a writer opens on another lane");
    assert_ne!(w.lane(), LaneId(0));
    w.append(b"x").expect("append");
    drop(w);
    assert_eq!(std::fs::read(&victim).expect("victim"), b"victim bytes");
}

fn rustix_free_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
}
