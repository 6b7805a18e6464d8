//! The wal's performance report: every target of the storage-engine issue, each measured
//! against a raw baseline in the same run, printed as a table of ratios.
//!
//! Run: `cargo bench --bench wal_report` (about 2 minutes), or
//! `EQ_BENCH_QUICK=1 cargo bench --bench wal_report` for a short smoke run.
//! `EQ_BENCH_DIR` picks the directory to benchmark in (default: the system temp dir).
//!
//! Raw baselines, written here with plain `std` file calls:
//! * raw per-append: `pwrite` of one record + `fdatasync`, sequentially, into a file
//!   preallocated with `fallocate` exactly like a wal segment;
//! * raw group commit: threads hand records to a mutex-protected buffer; whoever finds no
//!   write in flight becomes leader and does one `pwrite` + one `fdatasync` for the batch;
//! * raw read: each segment mapped whole and the CRC-32C of every record frame computed.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use escalation_queue_wal::layout::{frame_len, SEGMENT_HEADER_LEN};
use escalation_queue_wal::{
    Durability, OpenMode, Options, Reader, RealStorage, SlowSyncStorage, Storage, Writer,
};

/// Raw baselines write into fresh, preallocated (not yet written) space, as the wal does:
/// overwriting already-written blocks would spare them the extent conversion that every
/// wal write pays, and flatter them. Sized so a run never laps it (and no larger: on a
/// file system mounted with `discard`, deleting huge files floods the device with TRIMs).
fn prealloc_bytes(record: usize) -> u64 {
    if record >= 64 << 10 {
        6 << 30
    } else {
        512 << 20
    }
}

fn main() {
    if let Ok(role) = std::env::var("EQ_BENCH_CHILD") {
        child(&role);
        return;
    }
    let quick = std::env::var_os("EQ_BENCH_QUICK").is_some();
    let secs = if quick { 0.4 } else { 2.0 };
    let run = Duration::from_secs_f64(secs);
    let base = std::env::var_os("EQ_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut rows = Vec::new();

    let only = std::env::var("EQ_BENCH_ONLY").unwrap_or_default();
    // Each scenario starts with no dirty data of the previous one being written back (the
    // 256 KiB scenario leaves gigabytes): writeback competing for the 2 cores had cut the
    // 1 ms-sync figure from ~38,000 to ~14,000 appends/s in a full run.
    let want = |key: &str| {
        let wanted = only.is_empty() || only.split(',').any(|k| k == key);
        if wanted {
            settle();
        }
        wanted
    };

    // 1 KiB, 1 thread: raw pwrite+fdatasync vs wal.
    if want("append1") {
        let (raw1, wal1) = paired(
            || raw_per_append(&base, 1024, run),
            || wal_append(&base, 1, 1024, run, opts()),
        );
        rows.push(Row::ratio(
            "1 KiB durable append, 1 thread (appends/s)",
            wal1.rate,
            raw1.rate,
            0.9,
        ));
    }

    for threads in [16, 64].into_iter().filter(|_| want("append_threads")) {
        let (raw, wal) = paired(
            || raw_group_commit(&base, threads, 1024, run),
            || wal_append(&base, threads, 1024, run, opts()),
        );
        rows.push(Row::ratio(
            &format!("1 KiB, {threads} threads (appends/s)"),
            wal.rate,
            raw.rate,
            0.8,
        ));
        rows.push(Row::inverse(
            &format!("1 KiB, {threads} threads p99 latency (µs; target ≤ 2× raw)"),
            wal.p99_us,
            raw.p99_us,
            2.0,
        ));
    }

    if want("append_big") {
        let (raw_big, wal_big) = paired(
            || raw_group_commit(&base, 16, 256 << 10, run),
            || wal_append(&base, 16, 256 << 10, run, opts()),
        );
        rows.push(Row::ratio(
            "256 KiB, 16 threads (MiB/s)",
            wal_big.rate * 0.25,
            raw_big.rate * 0.25,
            0.7,
        ));
    }

    if want("steps") {
        // The cost of allocating segments in steps (the default, 4 MiB) instead of whole
        // (64 MiB at creation): the same appends against the raw baseline, in one run.
        let whole = || opts().allocation_step_bytes(64 << 20);
        for (threads, size, target) in [(1, 1024, 0.9), (16, 256 << 10, 0.7)] {
            let raw = if threads == 1 {
                raw_per_append(&base, size, run)
            } else {
                raw_group_commit(&base, threads, size, run)
            };
            let stepped = wal_append(&base, threads, size, run, opts());
            let whole = wal_append(&base, threads, size, run, whole());
            let what = format!("{} KiB, {threads} thread(s) (appends/s)", size >> 10);
            rows.push(Row::ratio(
                &format!("{what}: 4 MiB allocation steps vs raw"),
                stepped.rate,
                raw.rate,
                target,
            ));
            rows.push(Row::ratio(
                &format!("{what}: whole 64 MiB segments vs raw"),
                whole.rate,
                raw.rate,
                target,
            ));
            rows.push(Row::ratio(
                &format!("{what}: 4 MiB steps vs whole segments"),
                stepped.rate,
                whole.rate,
                0.9,
            ));
        }
    }

    if want("slow_sync") {
        // A device whose every sync takes exactly 1 ms: the slow-sync wrapper over tmpfs
        // (where the real sync costs nothing), so the figure measures how group commit
        // amortizes a slow disk, not this machine's own disk.
        let shm = Path::new("/dev/shm");
        let slow_base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            base.clone()
        };
        let slow = Arc::new(SlowSyncStorage::new(
            Arc::new(RealStorage),
            Duration::from_millis(1),
        ));
        let wal_slow = wal_append(&slow_base, 64, 1024, run, opts().storage(slow));
        rows.push(Row::absolute(
            "1 ms sync (tmpfs + 1 ms per sync), 64 threads (appends/s)",
            wal_slow.rate,
            35_000.0,
        ));
    }

    if want("multi_process") {
        let (one, multi) = paired(
            || wal_append(&base, 64, 1024, run, opts()),
            || Sample {
                rate: multi_process(&base, 8, 8, run),
                p99_us: 0.0,
            },
        );
        rows.push(Row::ratio(
            "8 processes × 8 threads vs 1 process × 64 threads (appends/s)",
            multi.rate,
            one.rate,
            0.7,
        ));
    }

    if want("consume") {
        let n = if quick { 200_000 } else { 1_000_000 };
        let (raw, consume) =
            median_pair(if quick { 1 } else { 3 }, || consume_ack(&base, n, false));
        rows.push(Row::absolute_vs_raw(
            "consume + ack 1 KiB, background checkpoint every 1,000 (records/s)",
            consume,
            raw,
            3_000_000.0,
        ));
        let consume_sync = consume_ack(&base, n, true).1;
        rows.push(Row::info(
            "consume + ack 1 KiB, synchronous checkpoint every 1,000 (records/s)",
            consume_sync,
        ));
    }

    if want("open") {
        let (reader_ms, writer_ms) = open_recovery(&base, if quick { 256 << 20 } else { 1 << 30 });
        rows.push(Row::at_most(
            "open + recover a 1 GiB queue, reader (ms)",
            reader_ms,
            50.0,
        ));
        rows.push(Row::at_most(
            "open + recover a 1 GiB queue, writer (ms)",
            writer_ms,
            50.0,
        ));
    }

    if want("visibility") {
        let (from_call, from_durable) = visibility(&base, if quick { 100 } else { 500 });
        rows.push(Row::at_most(
            "durable-to-visible across processes, idle, p99 (ms)",
            from_durable,
            10.0,
        ));
        rows.push(Row::info(
            "append-call-to-visible across processes, idle, p99 (ms; includes the fdatasync)",
            from_call,
        ));
    }

    println!("\n| scenario | escalation-queue | raw baseline | ratio | target | met |");
    println!("|---|---:|---:|---:|---:|:---:|");
    for r in &rows {
        println!("{r}");
    }
}

fn opts() -> Options {
    Options::default()
        .free_disk_bytes_min(0)
        .queue_bytes_max(64 << 30)
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rate: f64,
    p99_us: f64,
}

/// Runs baseline and candidate alternately three times each (the disk's speed drifts, so
/// interleaving keeps the comparison fair) and returns the median run of each.
fn paired(mut raw: impl FnMut() -> Sample, mut ours: impl FnMut() -> Sample) -> (Sample, Sample) {
    let (mut r, mut o) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        r.push(raw());
        o.push(ours());
    }
    (median(r), median(o))
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    v[v.len() / 2]
}

fn p99(mut lat: Vec<u32>) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort_unstable();
    f64::from(lat[(lat.len() * 99 / 100).min(lat.len() - 1)])
}

fn preallocated(dir: &Path, len: u64) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("raw.dat"))
        .expect("open raw file");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len).expect("fallocate");
    f.sync_all().expect("sync");
    f
}

fn raw_per_append(base: &Path, size: usize, run: Duration) -> Sample {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let f = preallocated(dir.path(), prealloc_bytes(size));
    let buf = vec![7u8; size];
    let (mut off, mut n, mut lat) = (0u64, 0u64, Vec::new());
    let start = Instant::now();
    while start.elapsed() < run {
        let t = Instant::now();
        f.write_all_at(&buf, off).expect("pwrite");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed().as_micros() as u32);
        off += size as u64;
        assert!(
            off < prealloc_bytes(size),
            "raw baseline ran past its preallocated space"
        );
        n += 1;
    }
    Sample {
        rate: n as f64 / start.elapsed().as_secs_f64(),
        p99_us: p99(lat),
    }
}

/// Minimal leader-based group commit: the raw baseline for concurrent appends.
struct RawGroup {
    file: std::fs::File,
    capacity: u64,
    state: Mutex<RawState>,
    cv: Condvar,
}

struct RawState {
    buf: Vec<u8>,
    next: u64,
    durable: u64,
    leader: bool,
    off: u64,
}

impl RawGroup {
    fn append(&self, rec: &[u8]) {
        let mut st = self.state.lock().expect("lock");
        st.buf.extend_from_slice(rec);
        st.next += 1;
        let me = st.next;
        loop {
            if st.durable >= me {
                return;
            }
            if !st.leader {
                st.leader = true;
                let batch = std::mem::take(&mut st.buf);
                let (end, off) = (st.next, st.off);
                st.off = off + batch.len() as u64;
                assert!(
                    st.off < self.capacity,
                    "raw baseline ran past its preallocated space"
                );
                drop(st);
                self.file.write_all_at(&batch, off).expect("pwrite");
                self.file.sync_data().expect("fdatasync");
                st = self.state.lock().expect("lock");
                st.durable = end;
                st.leader = false;
                self.cv.notify_all();
            } else {
                st = self.cv.wait(st).expect("wait");
            }
        }
    }
}

fn threaded(threads: usize, run: Duration, op: impl Fn() + Sync) -> Sample {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let lats = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut lat = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    op();
                    lat.push(t.elapsed().as_micros() as u32);
                }
                count.fetch_add(lat.len() as u64, Ordering::Relaxed);
                lats.lock().expect("lock").extend(lat);
            });
        }
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    Sample {
        rate: count.load(Ordering::Relaxed) as f64 / elapsed,
        p99_us: p99(lats.into_inner().expect("lock")),
    }
}

fn raw_group_commit(base: &Path, threads: usize, size: usize, run: Duration) -> Sample {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let g = RawGroup {
        file: preallocated(dir.path(), prealloc_bytes(size)),
        capacity: prealloc_bytes(size),
        state: Mutex::new(RawState {
            buf: Vec::new(),
            next: 0,
            durable: 0,
            leader: false,
            off: 0,
        }),
        cv: Condvar::new(),
    };
    let rec = vec![7u8; size];
    threaded(threads, run, || g.append(&rec))
}

fn wal_append(base: &Path, threads: usize, size: usize, run: Duration, opts: Options) -> Sample {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let w = Writer::open(dir.path(), &opts).expect("open writer");
    let rec = vec![7u8; size];
    threaded(threads, run, || {
        w.append(&rec).expect("append");
    })
}

fn spawn_child(role: &str, dir: &Path, extra: &[(&str, String)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.env("EQ_BENCH_CHILD", role)
        .env("EQ_BENCH_CHILD_DIR", dir)
        .stdout(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().expect("spawn child")
}

fn multi_process(base: &Path, procs: usize, threads: usize, run: Duration) -> f64 {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let start_at = std::time::SystemTime::now() + Duration::from_millis(500);
    let start_ns = start_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let children: Vec<_> = (0..procs)
        .map(|_| {
            spawn_child(
                "append",
                dir.path(),
                &[
                    ("EQ_BENCH_THREADS", threads.to_string()),
                    ("EQ_BENCH_RUN_MS", run.as_millis().to_string()),
                    ("EQ_BENCH_START_NS", start_ns.to_string()),
                ],
            )
        })
        .collect();
    let mut total = 0.0;
    for c in children {
        let out = c.wait_with_output().expect("child");
        let s = String::from_utf8_lossy(&out.stdout);
        total += s.trim().parse::<f64>().unwrap_or(0.0);
    }
    total
}

fn child(role: &str) {
    let dir = PathBuf::from(std::env::var("EQ_BENCH_CHILD_DIR").expect("dir"));
    let env_u = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u128>().ok())
            .unwrap_or(0)
    };
    match role {
        "append" => {
            let w = Writer::open(&dir, &opts()).expect("open writer");
            let start =
                std::time::UNIX_EPOCH + Duration::from_nanos(env_u("EQ_BENCH_START_NS") as u64);
            if let Ok(wait) = start.duration_since(std::time::SystemTime::now()) {
                std::thread::sleep(wait);
            }
            let run = Duration::from_millis(env_u("EQ_BENCH_RUN_MS") as u64);
            let rec = vec![7u8; 1024];
            let s = threaded(env_u("EQ_BENCH_THREADS") as usize, run, || {
                w.append(&rec).expect("append");
            });
            println!("{}", s.rate);
        }
        "stamp" => {
            // Appends a record every 5-10 ms (an idle queue). Each payload holds the time the
            // append was called; once it returns (durable) the child prints the record's
            // index and that time, so the parent can measure both from the call and from
            // durability to the moment its reader sees the record.
            let w = Writer::open(&dir, &opts()).expect("open writer");
            for i in 0..env_u("EQ_BENCH_COUNT") as u64 {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(0..5)));
                let mut payload = i.to_le_bytes().to_vec();
                payload.extend_from_slice(&unix_ns().to_le_bytes());
                w.append(&payload).expect("append");
                println!("{i} {}", unix_ns());
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Runs `f` (which returns a (raw, ours) pair of rates) `rounds` times; the medians.
fn median_pair(rounds: usize, mut f: impl FnMut() -> (f64, f64)) -> (f64, f64) {
    let (mut raw, mut ours): (Vec<f64>, Vec<f64>) = (0..rounds).map(|_| f()).unzip();
    raw.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    (raw[rounds / 2], ours[rounds / 2])
}

/// Writes `records` 1 KiB records, then measures (records/s) the raw read baseline and
/// the reader consuming, acknowledging and checkpointing every 1,000 of them (in the
/// background or waiting), up to a final checkpoint that returns once durable.
fn consume_ack(base: &Path, records: u64, sync_checkpoints: bool) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let o = opts().durability(Durability::None);
    {
        let w = Writer::open(dir.path(), &o).expect("writer");
        let rec = vec![7u8; 1024];
        for _ in 0..records {
            w.append(&rec).expect("append");
        }
    }
    let raw = raw_map_and_checksum(dir.path(), records);
    let mut r = Reader::open(dir.path(), "bench", &opts()).expect("reader");
    let start = Instant::now();
    let mut n = 0u64;
    while let Some(rec) = r.next().expect("next") {
        std::hint::black_box(&rec.payload);
        r.ack(rec.id).expect("ack");
        n += 1;
        if n.is_multiple_of(1000) {
            if sync_checkpoints {
                r.checkpoint().expect("checkpoint");
            } else {
                r.checkpoint_in_background().expect("checkpoint");
            }
        }
    }
    r.checkpoint().expect("checkpoint");
    assert_eq!(n, records, "every record consumed");
    let ours = n as f64 / start.elapsed().as_secs_f64();
    // Deleting the consumed segments is not timed (it runs behind the consumer), but it
    // must finish before the next measurement.
    r.wait_for_deletions().expect("deletions");
    (raw, ours)
}

/// Raw read baseline: maps each segment file whole, through the same `mmap` the reader
/// uses, and computes the CRC-32C of every record frame in order (the minimum a reader
/// that verifies what it hands out must do). Frames are found by their length field.
fn raw_map_and_checksum(dir: &Path, records: u64) -> f64 {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let start = Instant::now();
    let (mut n, mut acc) = (0u64, 0u32);
    for path in &segments {
        let map = RealStorage
            .open(path, OpenMode::Read)
            .and_then(|f| f.map())
            .expect("map segment");
        let mut off = SEGMENT_HEADER_LEN;
        while let Some(len) = map.get(off + 4..off + 8) {
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
            let frame = frame_len(len) as usize;
            if len == 0 || off + frame > map.len() {
                break;
            }
            acc ^= crc32c::crc32c(&map[off..off + frame]);
            off += frame;
            n += 1;
        }
    }
    std::hint::black_box(acc);
    assert_eq!(n, records, "raw baseline found every record");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Fills a queue with `bytes` of 64 KiB records, "crashes" the writer (drops it without
/// sealing), then times a reader open up to its first record, and a writer open.
fn open_recovery(base: &Path, bytes: u64) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let o = opts().durability(Durability::None);
    {
        let w = Writer::open(dir.path(), &o).expect("writer");
        let rec = vec![7u8; 64 << 10];
        for _ in 0..bytes / (64 << 10) {
            w.append(&rec).expect("append");
        }
        // Make it durable the way a synced writer would have, then drop without sealing.
        std::process::Command::new("sync").status().ok();
    }
    let t = Instant::now();
    let mut r = Reader::open(dir.path(), "bench", &opts()).expect("reader");
    r.next().expect("next").expect("a record");
    let reader_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(r);
    let t = Instant::now();
    let _w = Writer::open(dir.path(), &opts()).expect("writer");
    let writer_ms = t.elapsed().as_secs_f64() * 1e3;
    (reader_ms, writer_ms)
}

/// Writes back all dirty data (`sync(1)`) and gives the file system two seconds to finish
/// the previous scenario's deletions (with `discard`, freeing gigabytes goes on after the
/// unlink returns).
fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// Cross-process visibility on an idle queue: p99 in ms from the append call, and from
/// the append's return (the record is durable) to the reader seeing it.
fn visibility(base: &Path, count: u64) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let mut r = Reader::open(dir.path(), "vis", &opts()).expect("reader");
    let child = spawn_child(
        "stamp",
        dir.path(),
        &[("EQ_BENCH_COUNT", count.to_string())],
    );
    let mut seen: Vec<(u64, u128, u128)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(count / 50 + 30);
    while (seen.len() as u64) < count && Instant::now() < deadline {
        if let Some(rec) = r.next_timeout(Duration::from_millis(100)).expect("next") {
            let now = unix_ns();
            let i = u64::from_le_bytes(rec.payload[..8].try_into().expect("index"));
            let called = u128::from_le_bytes(rec.payload[8..24].try_into().expect("time"));
            seen.push((i, called, now));
            r.ack(rec.id).expect("ack");
        }
    }
    let out = child.wait_with_output().expect("child");
    let returned: std::collections::HashMap<u64, u128> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (i, t) = l.split_once(' ')?;
            Some((i.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let us = |d: u128| (d / 1000).min(u128::from(u32::MAX)) as u32;
    let from_call = seen
        .iter()
        .map(|&(_, called, now)| us(now.saturating_sub(called)))
        .collect();
    let from_durable = seen
        .iter()
        .filter_map(|(i, _, now)| Some(us(now.saturating_sub(*returned.get(i)?))))
        .collect();
    (p99(from_call) / 1000.0, p99(from_durable) / 1000.0)
}

struct Row {
    name: String,
    ours: f64,
    raw: Option<f64>,
    target: String,
    met: bool,
    ratio: Option<f64>,
}

impl Row {
    fn ratio(name: &str, ours: f64, raw: f64, min: f64) -> Self {
        let r = ours / raw;
        Self {
            name: name.into(),
            ours,
            raw: Some(raw),
            target: format!("≥ {min}×"),
            met: r >= min,
            ratio: Some(r),
        }
    }
    fn inverse(name: &str, ours: f64, raw: f64, max: f64) -> Self {
        let r = ours / raw;
        Self {
            name: name.into(),
            ours,
            raw: Some(raw),
            target: format!("≤ {max}× raw"),
            met: r <= max,
            ratio: Some(r),
        }
    }
    fn absolute(name: &str, ours: f64, min: f64) -> Self {
        Self {
            name: name.into(),
            ours,
            raw: None,
            target: format!("≥ {min}"),
            met: ours >= min,
            ratio: None,
        }
    }
    /// An absolute target, with the raw baseline shown for scale.
    fn absolute_vs_raw(name: &str, ours: f64, raw: f64, min: f64) -> Self {
        Self {
            name: name.into(),
            ours,
            raw: Some(raw),
            target: format!("≥ {min}"),
            met: ours >= min,
            ratio: Some(ours / raw),
        }
    }
    fn info(name: &str, ours: f64) -> Self {
        Self {
            name: name.into(),
            ours,
            raw: None,
            target: "–".into(),
            met: true,
            ratio: None,
        }
    }
    fn at_most(name: &str, ours: f64, max: f64) -> Self {
        Self {
            name: name.into(),
            ours,
            raw: None,
            target: format!("≤ {max}"),
            met: ours <= max,
            ratio: None,
        }
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = self.raw.map_or("–".into(), |r| format!("{r:.1}"));
        let ratio = self.ratio.map_or("–".into(), |r| format!("{r:.2}×"));
        let met = if self.met { "yes" } else { "**no**" };
        write!(
            f,
            "| {} | {:.1} | {} | {} | {} | {} |",
            self.name, self.ours, raw, ratio, self.target, met
        )
    }
}
