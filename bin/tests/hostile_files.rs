//! Hostile files in the queue directory (probe F7, F8, F9, F10), through the real binary.
//!
//! The probe found that queue files were opened through symlinks (recovery wrote a seal
//! into a symlink's target), that a FIFO named like a segment hung every command in
//! `open()`, that one stray directory named like a segment stopped delivery for the whole
//! queue (and a fresh reader exited 3, a crash loop under a supervisor), and that a
//! watermark naming a missing segment put the reader and `inspect` into a busy loop
//! writing megabytes of ERROR lines per second while `/health` said healthy. Each test
//! here plants one such file next to a lane of good records and checks what now holds:
//! nothing is followed or written through, no command hangs, the good lane is delivered,
//! the file is reported with its path, and `/health` is not "healthy" about it.

mod util;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use escalation_queue::wal::layout::{BootId, Watermark};
use escalation_queue::wal::{SegmentId, Seq};
use escalation_queue::{Escalation, EscalationQueue, ImageSource, QueueOptions};
use util::{get_json, spawn_reader, wait_for_json, wait_until, MockCloudProcess, Sandbox, TOKEN};

/// Longest a command on a hostile queue may take: far above what any takes, far below a hang.
const RETURN_WITHIN: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(30);
/// 1 MiB segments and 64 KiB images, so a few records fill several segments.
const SMALL: &str = "[queue]\nimage_size_max_bytes = 65536\nsegment_bytes = 1048576\n\
                     allocation_step_bytes = 65536\nfree_disk_bytes_min = 0\n";

fn small_options() -> QueueOptions {
    QueueOptions {
        image_size_max_bytes: 65536,
        segment_bytes: 1 << 20,
        allocation_step_bytes: 65536,
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    }
}

/// A sandbox whose commands use [`SMALL`].
struct Hostile {
    sandbox: Sandbox,
    config: PathBuf,
}

impl Hostile {
    fn new() -> Self {
        let sandbox = Sandbox::new();
        let config = sandbox.file("small.toml", SMALL.as_bytes());
        Self { sandbox, config }
    }

    fn wal(&self) -> PathBuf {
        self.sandbox.queue_dir().join("wal")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.command(args);
        cmd.env("ESCALATION_QUEUE_CONFIG", &self.config)
            .env("GROUNDLIGHT_API_TOKEN", TOKEN);
        cmd
    }

    /// Opens a writer handle (one lane) with the small options.
    fn writer(&self) -> EscalationQueue {
        EscalationQueue::open_with(self.sandbox.queue_dir(), small_options()).expect("open queue")
    }

    /// The lane's segment paths, oldest first.
    fn segments(&self, lane: u16) -> Vec<PathBuf> {
        let prefix = format!("lane-{lane:03}-");
        let mut segs: Vec<PathBuf> = std::fs::read_dir(self.wal())
            .expect("list wal")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&prefix) && name.ends_with(".seg")
            })
            .collect();
        segs.sort();
        segs
    }

    /// `drain` against `endpoint`, bounded.
    fn drain(&self, endpoint: &str) -> Bounded {
        run_bounded(self.command(&["drain", "--endpoint", endpoint]))
    }
}

/// Enqueues `n` escalations with ~60 KiB images (16 fill a 1 MiB segment).
fn enqueue(queue: &EscalationQueue, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut image = format!("{tag} image {i} ").into_bytes();
            image.resize(60_000, b'x');
            let esc = Escalation::new("det_test", ImageSource::Inline(image.into()));
            queue.enqueue(&esc).expect("enqueue").image_query_id
        })
        .collect()
}

/// A command run to completion or killed at [`RETURN_WITHIN`].
#[derive(Debug)]
struct Bounded {
    code: Option<i32>,
    hung: bool,
    stderr: String,
}

fn run_bounded(mut cmd: Command) -> Bounded {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the binary");
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let deadline = Instant::now() + RETURN_WITHIN;
    let (code, hung) = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break (status.code(), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Bounded {
        code,
        hung,
        stderr: reader.join().expect("stderr reader"),
    }
}

fn received(cloud: MockCloudProcess) -> BTreeSet<String> {
    cloud.stop()["image_query_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[track_caller]
fn assert_all_delivered(ids: &[String], got: &BTreeSet<String>) {
    let missing: Vec<&String> = ids.iter().filter(|id| !got.contains(*id)).collect();
    assert!(missing.is_empty(), "not delivered: {missing:?}");
}

fn replace_with_symlink(path: &Path, target: &Path) {
    std::fs::remove_file(path).expect("remove segment");
    symlink(target, path).expect("symlink");
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Probe F7: the tail segment of a lane replaced by a symlink to a victim file. `drain`
/// recovered the "torn tail" and wrote a seal into the victim. Now the symlink is never
/// followed: the victim is byte-for-byte unchanged, the symlink is reported by path, and
/// every record of the other lane is delivered.
#[test]
fn a_symlinked_tail_segment_is_never_written_through() {
    let q = Hostile::new();
    let (a, b) = (q.writer(), q.writer());
    let lane0 = enqueue(&a, 20, "a");
    let lane1 = enqueue(&b, 5, "b");
    drop((a, b));
    let segs = q.segments(0);
    assert!(segs.len() >= 2, "lane 0 spans segments: {segs:?}");
    let victim = q.sandbox.file("victim.txt", &{
        let mut v = b"original victim\n".to_vec();
        v.resize(2000, 0);
        v
    });
    let before = std::fs::read(&victim).expect("victim");
    let tail = segs.last().expect("tail");
    replace_with_symlink(tail, &victim);

    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let run = q.drain(&cloud.endpoint);
    assert!(!run.hung, "drain hung: {run:?}");
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        before,
        "the symlink target was written"
    );
    assert!(std::fs::symlink_metadata(tail)
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(
        run.stderr.contains("symbolic link") && run.stderr.contains(&*tail.to_string_lossy()),
        "the symlink is reported with its path:\n{}",
        run.stderr
    );
    let got = received(cloud);
    assert_all_delivered(&lane1, &got);
    // Records of lane 0 before the replaced segment are delivered too.
    assert!(
        lane0.iter().take(10).all(|id| got.contains(id)),
        "lane 0 head lost"
    );
}

/// Probe F7: a middle segment replaced by a symlink to `/etc/passwd` was read and reported
/// as damaged records. Now it is not opened: it is reported as a symbolic link, the
/// segments after it and the other lane are delivered, and `verify`/`status`/`inspect`
/// return.
#[test]
fn a_symlink_to_etc_passwd_mid_lane_is_skipped_not_read() {
    let q = Hostile::new();
    let (a, b) = (q.writer(), q.writer());
    let lane0 = enqueue(&a, 40, "a");
    let lane1 = enqueue(&b, 5, "b");
    drop((a, b));
    let segs = q.segments(0);
    assert!(segs.len() >= 3, "lane 0 spans 3 segments: {segs:?}");
    replace_with_symlink(&segs[1], Path::new("/etc/passwd"));

    for cmd in [&["verify"][..], &["status"], &["inspect"]] {
        let run = run_bounded(q.command(cmd));
        assert!(!run.hung && run.code.is_some(), "{cmd:?} hung: {run:?}");
    }
    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let run = q.drain(&cloud.endpoint);
    assert!(!run.hung, "drain hung: {run:?}");
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("root:"),
        "passwd content leaked:\n{}",
        run.stderr
    );
    let got = received(cloud);
    assert_all_delivered(&lane1, &got);
    assert!(got.contains(&lane0[0]), "segment before the link delivered");
    assert!(
        got.contains(lane0.last().expect("last")),
        "segment after the link delivered"
    );
}

/// Probe F7/F10: a symlink loop (ELOOP) named like a segment of an unused lane blocked the
/// whole queue. Now it is reported and every record is delivered.
#[test]
fn a_symlink_loop_named_like_a_segment_blocks_nothing() {
    let q = Hostile::new();
    let a = q.writer();
    let ids = enqueue(&a, 5, "a");
    drop(a);
    let looped = q.wal().join("lane-007-00000000000000000001.seg");
    symlink(&looped, &looped).expect("self link");

    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let run = q.drain(&cloud.endpoint);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("lane-007-00000000000000000001.seg"),
        "{}",
        run.stderr
    );
    assert_all_delivered(&ids, &received(cloud));
}

/// Probe F8: a FIFO in place of a middle segment hung `verify`, `status`, `inspect` and
/// `drain` forever in `open()`. Now each returns within the bound, and `drain` delivers
/// the other lane and the segments around the FIFO.
#[test]
fn a_fifo_mid_lane_hangs_no_command() {
    let q = Hostile::new();
    let (a, b) = (q.writer(), q.writer());
    let lane0 = enqueue(&a, 40, "a");
    let lane1 = enqueue(&b, 5, "b");
    drop((a, b));
    let segs = q.segments(0);
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(&segs[1]).expect("remove");
    mkfifo(&segs[1]);

    for cmd in [&["verify"][..], &["status"], &["inspect"]] {
        let run = run_bounded(q.command(cmd));
        assert!(!run.hung && run.code.is_some(), "{cmd:?} hung: {run:?}");
    }
    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let run = q.drain(&cloud.endpoint);
    assert!(!run.hung, "drain hung: {run:?}");
    assert!(run.stderr.contains("FIFO"), "{}", run.stderr);
    let got = received(cloud);
    assert_all_delivered(&lane1, &got);
    assert!(
        got.contains(lane0.last().expect("last")),
        "segment after the FIFO delivered"
    );
}

/// Probe F10: a directory named like a segment of an unused lane stopped the running
/// reader ("Is a directory"), every reopen failed, and a fresh reader exited 3. Now the
/// running reader keeps delivering new escalations, reports the directory, `/health`
/// names it (not "healthy"), and a fresh reader starts and delivers.
#[test]
fn a_directory_named_like_a_segment_stops_no_lane() {
    let q = Hostile::new();
    let a = q.writer();
    let first = enqueue(&a, 2, "first");
    drop(a);
    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let config = q.config.to_string_lossy().into_owned();
    let mut reader = spawn_reader(&q.sandbox, &cloud.endpoint, &["--config", &config]);
    let addr = reader.status_addr();
    let stray = q.wal().join("lane-005-00000000000000000001.seg");
    std::fs::create_dir(&stray).expect("mkdir");
    let a = q.writer();
    let later = enqueue(&a, 3, "later");
    drop(a);
    wait_until(WAIT, "the later escalations to be delivered", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 5
    });
    // The directory (of another lane) is found by the reader's periodic listing, not in
    // step with lane 0's deliveries, and becomes an incident when the worker next takes
    // the wal's events: "delivered 5" does not mean it is reported yet, so wait for it.
    let health = wait_for_json(
        addr,
        "/health",
        WAIT,
        "/health to report the directory",
        |h| h["status"] != "healthy" && h["reasons"].to_string().contains("CRITICAL"),
    );
    assert_ne!(health["status"], "healthy", "{health:#}");
    assert!(
        health["reasons"].to_string().contains("CRITICAL"),
        "{health:#}"
    );
    assert_eq!(health["checks"]["wal"]["state"], "running", "{health:#}");
    reader.terminate();
    assert_eq!(reader.wait_exit(WAIT), Some(0));
    assert!(
        reader.stderr_text().contains("a directory"),
        "{}",
        reader.stderr_text()
    );

    // A fresh reader on the queue with the directory: starts, stays up, delivers.
    let mut fresh = spawn_reader(&q.sandbox, &cloud.endpoint, &["--config", &config]);
    let addr = fresh.status_addr();
    let a = q.writer();
    let last = enqueue(&a, 1, "last");
    drop(a);
    wait_until(WAIT, "the fresh reader to deliver", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    fresh.terminate();
    assert_eq!(fresh.wait_exit(WAIT), Some(0));
    let got = received(cloud);
    for ids in [&first, &later, &last] {
        assert_all_delivered(ids, &got);
    }
}

/// Probe F9: a CRC-valid watermark naming segment 999 (which does not exist), written
/// while a live writer holds the lane, put the reader into a busy loop: ~390k ERROR lines
/// in 8 s while `/health` said healthy; `inspect` never ended. Now the stale watermark is
/// reported once, the log stays small, `/health` is not healthy, `inspect` returns, and
/// the writer's next escalation (which publishes a real watermark) is delivered.
#[test]
fn a_watermark_naming_a_missing_segment_is_reported_once_not_looped_on() {
    let q = Hostile::new();
    let live = q.writer();
    let first = enqueue(&live, 3, "first");
    let crafted = Watermark {
        segment: SegmentId(999),
        offset: 64,
        next_seq: Seq(1),
    };
    let commit = q.wal().join("lane-000.commit");
    std::fs::write(&commit, crafted.encode(&BootId::default())).expect("craft watermark");

    let run = run_bounded(q.command(&["inspect"]));
    assert!(
        !run.hung,
        "inspect hung: {} bytes of stderr",
        run.stderr.len()
    );
    assert!(
        run.stderr.len() < 64 << 10,
        "inspect logged {} bytes",
        run.stderr.len()
    );

    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let config = q.config.to_string_lossy().into_owned();
    let mut reader = spawn_reader(&q.sandbox, &cloud.endpoint, &["--config", &config]);
    let addr = reader.status_addr();
    wait_until(WAIT, "the first escalations to be delivered", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    wait_until(WAIT, "/health to report the stale watermark", || {
        get_json(addr, "/health").1["status"] != "healthy"
    });
    std::thread::sleep(Duration::from_secs(2));
    let logged = reader.stderr_text();
    assert!(
        logged.len() < 256 << 10,
        "{} bytes logged in a few seconds",
        logged.len()
    );
    assert_eq!(logged.matches("watermark is stale").count(), 1, "{logged}");
    let later = enqueue(&live, 1, "later");
    wait_until(WAIT, "the escalation after the stale watermark", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 4
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(WAIT), Some(0));
    let got = received(cloud);
    assert_all_delivered(&first, &got);
    assert_all_delivered(&later, &got);
}

/// Probe F10 ("the daemon should also retry its initial open instead of exiting"): with
/// the worker's cursor checkpoint replaced by a FIFO, the reader cannot open the queue.
/// It used to exit 3 at once (a crash loop under a supervisor). Now it stays up, retries
/// with backoff, `/health` is unhealthy and names the file, and once the FIFO is moved
/// away it opens the queue and delivers.
#[test]
fn the_reader_daemon_retries_an_initial_open_that_fails() {
    let q = Hostile::new();
    let a = q.writer();
    let ids = enqueue(&a, 2, "a");
    drop(a);
    let ckpt = q.wal().join("cursor-worker.ckpt");
    let _ = std::fs::remove_file(&ckpt);
    mkfifo(&ckpt);
    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let config = q.config.to_string_lossy().into_owned();
    let mut reader = spawn_reader(&q.sandbox, &cloud.endpoint, &["--config", &config]);
    let addr = reader.status_addr();
    wait_until(WAIT, "/health to report the failed open", || {
        let (code, health) = get_json(addr, "/health");
        code == 503 && health["reasons"].to_string().contains("cursor-worker.ckpt")
    });
    // Still up, still retrying.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get_json(addr, "/health").0, 503);
    std::fs::remove_file(&ckpt).expect("move the FIFO away");
    wait_until(WAIT, "delivery after the retry", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(WAIT), Some(0));
    assert_all_delivered(&ids, &received(cloud));
}

/// Probe F27: a 100 KB garbage `dedupe.log` was discarded without a word, silently
/// forgetting which escalations were delivered. Now `drain` warns, naming the file, and
/// still delivers.
#[test]
fn a_garbage_dedupe_log_is_discarded_with_a_warning() {
    let q = Hostile::new();
    let a = q.writer();
    let ids = enqueue(&a, 1, "a");
    drop(a);
    let log = q.sandbox.queue_dir().join("dedupe.log");
    let mut rng = 0x9e37_79b9_u32;
    let garbage: Vec<u8> = (0..100_000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as u8
        })
        .collect();
    std::fs::write(&log, garbage).expect("garbage dedupe log");
    let cloud = MockCloudProcess::start(&q.sandbox, &[]);
    let run = q.drain(&cloud.endpoint);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("WARN")
            && run
                .stderr
                .contains("dedupe log does not start with its magic"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("dedupe.log"), "{}", run.stderr);
    assert_all_delivered(&ids, &received(cloud));
}
