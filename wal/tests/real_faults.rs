//! Faults on the real file system: system calls failed by `strace -e inject`,
//! and a full file system.
//!
//! * `strace`: the test binary re-executes itself as a child (`--exact child_entry` with
//!   `WAL_FAULT_CHILD` set, as `tests/kill.rs` does) under
//!   `strace -f -e inject=SYSCALL:error=ERRNO:when=N`, for `fdatasync`, `fsync` (directory
//!   syncs), `pwrite64` and `fallocate`. The child appends and logs every acknowledgement.
//!   The parent then checks: no acknowledged record lost, none corrupt, FIFO, no append
//!   acknowledged after the writer reported `Poisoned` (a failed batch sync returns it at
//!   once), and a reopened writer appends again. Skipped (with a message) without strace.
//! * A 1 MiB tmpfs (`escalation_queue_wal::tmpfs`; skipped with a message when mounting is
//!   not permitted, failed under CI):
//!   appends fail with a clear `NoSpace`, nothing acknowledged is lost, reading through the
//!   maps does not fault (no SIGBUS), and appends resume once consumed segments are freed.

use std::path::{Path, PathBuf};
use std::process::Command;

use escalation_queue_wal::tmpfs::{under_ci, Tmpfs};
use escalation_queue_wal::{Error, Options, Reader, Writer};

const CHILD_ENV: &str = "WAL_FAULT_CHILD";
const APPENDS: u32 = 30;

fn opts() -> Options {
    Options::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(8192)
        .free_disk_bytes_min(0)
}

fn payload(n: u32) -> Vec<u8> {
    let size = 1500 + (n as usize * 997) % 4000;
    let mut p = n.to_le_bytes().to_vec();
    p.extend((0..size).map(|i| (n as u8) ^ (i as u8).wrapping_mul(7)));
    let crc = crc32c::crc32c(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn decode(p: &[u8]) -> Option<u32> {
    let (body, crc) = p.split_at(p.len().checked_sub(4)?);
    (body.len() >= 4 && crc32c::crc32c(body).to_le_bytes() == crc)
        .then(|| u32::from_le_bytes([body[0], body[1], body[2], body[3]]))
}

/// The child: appends `APPENDS` records to the directory in `WAL_FAULT_CHILD`, printing
/// `@@ ack N SEQ`, `@@ poisoned N` or `@@ err N MESSAGE` per append. A no-op in a normal run.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let w = match Writer::open(&dir, &opts()) {
        Ok(w) => w,
        Err(e) => {
            println!("@@ open-failed {e}");
            return;
        }
    };
    for n in 0..APPENDS {
        match w.append(&payload(n)) {
            Ok(id) => println!("@@ ack {n} {}", id.seq.0),
            Err(Error::Poisoned { .. }) => println!("@@ poisoned {n}"),
            Err(e) => println!("@@ err {n} {}", e.to_string().replace('\n', " ")),
        }
    }
}

/// A test that cannot run here says why and passes, except under CI (`CI=true`), which
/// must run every test: there it fails (`.ci/run` installs what the tests need).
fn skip(why: &str) {
    assert!(!under_ci(), "CI=true, yet this test cannot run: {why}");
    println!("SKIPPED: {why}");
}

fn strace() -> Option<PathBuf> {
    ["/usr/bin/strace", "/bin/strace"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs the child under `strace` injecting `inject`; returns its stdout.
fn run_child(strace: &Path, dir: &Path, inject: &str) -> String {
    let out = Command::new(strace)
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={inject}"))
        .arg(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .output()
        .expect("run strace");
    assert!(
        out.status.success(),
        "{inject}: child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks one injected run; returns (acknowledged, failed appends).
fn check_run(dir: &Path, inject: &str, log: &str) -> (usize, usize) {
    let mut acked: Vec<(u32, u64)> = Vec::new();
    let mut failed = 0;
    let mut poisoned_at: Option<u32> = None;
    // libtest prints `test child_entry ... ` in front of the first line: lines are marked.
    for line in log
        .lines()
        .filter_map(|l| l.split_once("@@ ").map(|(_, l)| l))
    {
        let f: Vec<&str> = line.splitn(3, ' ').collect();
        match f.as_slice() {
            ["ack", n, seq] => {
                let n: u32 = n.parse().unwrap();
                assert!(
                    poisoned_at.is_none(),
                    "{inject}: append {n} acknowledged after Poisoned\n{log}"
                );
                acked.push((n, seq.parse().unwrap()));
            }
            ["poisoned", n] => {
                failed += 1;
                poisoned_at = poisoned_at.or(Some(n.parse().unwrap()));
            }
            // A failed batch sync returns `Poisoned`; an `Io` error naming fdatasync is a
            // new segment's header sync, whose file is removed (nothing acknowledged in it).
            ["err", ..] => failed += 1,
            ["open-failed", ..] => failed += 1,
            _ => {}
        }
    }
    // The reader sees every acknowledged record, in order, uncorrupted.
    let mut r = Reader::open(dir, "worker", &opts()).expect("reader opens after the fault");
    let mut got: Vec<u32> = Vec::new();
    while let Some(rec) = r.next().expect("reader next") {
        got.push(decode(&rec.payload).unwrap_or_else(|| panic!("{inject}: corrupt record")));
    }
    let mut it = got.iter();
    for (n, _) in &acked {
        assert!(
            it.any(|g| g == n),
            "{inject}: acknowledged append {n} missing or out of order: got {got:?}\n{log}"
        );
    }
    assert!(got.windows(2).all(|p| p[0] < p[1]), "{inject}: {got:?}");
    // A reopened writer recovers the lane and appends again.
    drop(r);
    let w = Writer::open(dir, &opts()).expect("writer reopens");
    w.append(&payload(999)).expect("append after reopen");
    let mut r = Reader::open(dir, "worker", &opts()).unwrap();
    let last = std::iter::from_fn(|| r.next().unwrap()).last();
    assert_eq!(last.and_then(|l| decode(&l.payload)), Some(999), "{inject}");
    (acked.len(), failed)
}

/// Story: the kernel reports EIO from `fdatasync` (or `fsync` of the directory, or a
/// `pwrite`), or ENOSPC from `fallocate`, to a real writer process. If this fails, the
/// real system calls behave differently from the simulated disk: an append is
/// acknowledged whose data may be gone, or the queue does not recover.
#[test]
fn syscalls_failed_by_strace_lose_nothing_acknowledged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let Some(strace) = strace() else {
        return skip("strace not found; install strace to run syscall fault injection");
    };
    let mut scenarios = Vec::new();
    for when in 1..=6 {
        scenarios.push(format!("fdatasync:error=EIO:when={when}"));
        scenarios.push(format!("pwrite64:error=EIO:when={when}"));
    }
    for when in 1..=3 {
        scenarios.push(format!("fsync:error=EIO:when={when}"));
    }
    scenarios.push("fdatasync:error=EIO:when=4+".to_owned());
    scenarios.push("fallocate:error=ENOSPC:when=1".to_owned());
    scenarios.push("fallocate:error=ENOSPC:when=2".to_owned());
    let (mut acked, mut failed) = (0, 0);
    for inject in &scenarios {
        let dir = tempfile::tempdir().unwrap();
        let log = run_child(&strace, dir.path(), inject);
        let (a, f) = check_run(dir.path(), inject, &log);
        assert!(
            f > 0 || inject.contains("fsync:"),
            "{inject}: nothing failed\n{log}"
        );
        acked += a;
        failed += f;
    }
    println!(
        "strace: {} scenarios, {acked} acknowledged appends all delivered, {failed} failed \
         appends, 0 lost, 0 corrupt",
        scenarios.len()
    );
}

/// Story: the edge device's disk fills up. If this fails, appends fail with something
/// other than a clear, retryable `NoSpace` (or crash the process with SIGBUS through a
/// map), acknowledged records are lost, or appends never resume after space is freed.
#[test]
fn a_full_file_system_gives_no_space_and_appends_resume_when_space_is_freed() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let Some(_mount) = Tmpfs::mount(root.path(), "1m") else {
        return;
    };
    let dir = root.path().join("queue");
    let w = Writer::open(&dir, &opts()).unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let n = acked.len() as u32;
        match w.append(&payload(n)) {
            Ok(_) => acked.push(n),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the file system never filled up");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(err.is_retryable());
    // Reading every acknowledged record through the maps of a full file system.
    let mut r = Reader::open(&dir, "worker", &opts()).unwrap();
    let mut got = Vec::new();
    let mut last = None;
    while let Some(rec) = r.next().unwrap() {
        got.push(decode(&rec.payload).expect("no corrupt record"));
        last = Some(rec.id);
    }
    assert_eq!(got, acked, "every acknowledged record is delivered");
    r.ack(last.unwrap()).unwrap();
    r.wait_for_deletions()
        .expect("checkpoint on a full file system (its file is preallocated)");
    // The checkpoint released consumed segments and they are deleted: appends resume.
    let resumed = w
        .append(&payload(5000))
        .expect("appends resume once space is freed");
    let rec = r.next().unwrap().expect("the new record");
    assert_eq!(rec.id, resumed);
    println!(
        "disk full: {} appends acknowledged before NoSpace on a 1 MiB tmpfs, all delivered; \
         appends resumed after the reader freed segments",
        acked.len()
    );
}
