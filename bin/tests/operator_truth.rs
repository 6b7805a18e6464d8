//! The operator's view must be the truth (probe F5, F12, F13, F14, F23, F26): the
//! reader starts on a full disk and frees it; `verify` never calls a queue with missing
//! records clean; a command that cannot read the queue says so instead of reporting an
//! empty one; `status` and `inspect` do not trust an unverified watermark; `verify` costs
//! what the data costs, not what the file length says; the dead-letter commands do not
//! delete without asking, do not create directories, and do not replay what cannot be
//! delivered.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use escalation_queue_wal::tmpfs::Tmpfs;
use util::{get_json, spawn_reader, wait_until, MockCloudProcess, Outcome, Sandbox};

/// `[queue]` settings for a queue that fits a 2 MiB file system: 256 KiB segments in
/// 64 KiB steps, images up to 64 KiB, no reserved free space.
const SMALL_QUEUE: &str = "[queue]\nimage_size_max_bytes = 65536\nsegment_bytes = 262144\n\
                           allocation_step_bytes = 65536\nfree_disk_bytes_min = 0\n";

/// A queue at `dir` with the small settings: `args` run with `--queue-dir` and `--config`.
struct SmallQueue<'a> {
    sandbox: &'a Sandbox,
    dir: PathBuf,
    config: PathBuf,
}

impl<'a> SmallQueue<'a> {
    fn new(sandbox: &'a Sandbox, dir: PathBuf) -> Self {
        let config = sandbox.file("small.toml", SMALL_QUEUE.as_bytes());
        Self {
            sandbox,
            dir,
            config,
        }
    }

    fn flags(&self) -> [String; 4] {
        [
            "--queue-dir".to_owned(),
            self.dir.display().to_string(),
            "--config".to_owned(),
            self.config.display().to_string(),
        ]
    }

    /// Runs `command` (the subcommand, then its own arguments) on this queue.
    fn run(&self, command: &[&str]) -> Outcome {
        let flags = self.flags();
        let mut args: Vec<&str> = command.to_vec();
        args.extend(flags.iter().map(String::as_str));
        let mut cmd = self.sandbox.command(&args);
        cmd.env("GROUNDLIGHT_API_TOKEN", util::TOKEN);
        self.sandbox.run_with(cmd, None)
    }

    fn enqueue(&self, n: usize, image_bytes: usize) {
        let mut jpeg = b"\xff\xd8\xff\xe0".to_vec();
        jpeg.resize(image_bytes, b'j');
        let image = self.sandbox.file("frame.jpg", &jpeg);
        for i in 0..n {
            let iq = format!("iq_small_{i:04}");
            self.run(&[
                "enqueue",
                "--detector-id",
                "det_small",
                "--image",
                image.to_str().expect("utf-8"),
                "--image-query-id",
                &iq,
            ])
            .expect_code(0);
        }
    }

    fn segments(&self) -> usize {
        std::fs::read_dir(self.dir.join("wal"))
            .expect("wal dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count()
    }
}

/// Story (probe F5): the edge device's disk fills up while the cloud is away. When the
/// reader restarts (systemd, Kubernetes), it must start, deliver everything and free the
/// consumed segments; before, a write probe failed with "No space left on device" and the
/// reader exited 2 ("usage error") on every restart, the one process that would free the
/// disk. While the disk is full `/health` says degraded and names the disk; an enqueue is
/// refused with the storage exit code (3), not as a usage error.
#[test]
fn the_reader_starts_on_a_full_disk_delivers_and_frees_it() {
    let sandbox = Sandbox::new();
    let Some(disk) = Tmpfs::mount(&sandbox.root.path().join("disk"), "2m") else {
        return;
    };
    let queue = SmallQueue::new(&sandbox, disk.path().join("q"));
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    // A reader ran here before (its checkpoint and journals exist), then escalations piled
    // up across three segments while the cloud was unreachable, and the disk filled.
    queue
        .run(&["drain", "--endpoint", &cloud.endpoint])
        .expect_code(0);
    queue.enqueue(10, 60_000);
    assert_eq!(queue.segments(), 3);
    disk.fill();
    queue
        .run(&["enqueue", "--detector-id", "det_small", "--image", "-"])
        .expect_code(2); // no image on stdin: a usage error still is one
    let full = queue.run(&[
        "enqueue",
        "--detector-id",
        "det_small",
        "--image",
        sandbox
            .root
            .path()
            .join("frame.jpg")
            .to_str()
            .expect("utf-8"),
    ]);
    full.expect_code(3).expect_stderr(&["no space"]);

    let flags = queue.flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &extra);
    let addr = reader.status_addr();
    let (code, health) = get_json(addr, "/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reasons"].to_string().contains("disk"),
        "the reason names the disk: {health}"
    );
    wait_until(Duration::from_secs(30), "10 deliveries", || {
        get_json(addr, "/stats").1["worker"]["delivered"] == 10
    });
    wait_until(Duration::from_secs(30), "consumed segments freed", || {
        queue.segments() == 1
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(20)), Some(0));
    let summary = cloud.stop();
    assert_eq!(
        summary["image_query_ids"].as_array().map(Vec::len),
        Some(10)
    );
}

/// Story (probe F5): `drain` on a full disk (a batch job catching up after an outage) must
/// run, deliver everything and exit 0, never exit 2 on a write probe.
#[test]
fn drain_on_a_full_disk_delivers_everything() {
    let sandbox = Sandbox::new();
    let Some(disk) = Tmpfs::mount(&sandbox.root.path().join("disk"), "2m") else {
        return;
    };
    let queue = SmallQueue::new(&sandbox, disk.path().join("q"));
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    queue
        .run(&["drain", "--endpoint", &cloud.endpoint])
        .expect_code(0);
    queue.enqueue(10, 60_000);
    disk.fill();
    let out = queue.run(&["drain", "--endpoint", &cloud.endpoint, "--json"]);
    out.expect_code(0);
    assert_eq!(out.json()["delivered"], 10, "{out:#?}");
    assert_eq!(queue.segments(), 1, "consumed segments are freed");
    let summary = cloud.stop();
    assert_eq!(
        summary["image_query_ids"].as_array().map(Vec::len),
        Some(10)
    );
}

/// `args` run as the unprivileged user `nobody` (uid 65534) through util-linux `setpriv`.
fn run_as_nobody(sandbox: &Sandbox, args: &[&str]) -> Option<Outcome> {
    if !util::tool_or_skip("setpriv", "to run a command as another user") {
        return None;
    }
    let mut cmd = sandbox.command(args);
    let program = cmd.get_program().to_owned();
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd = wrapped;
    Some(sandbox.run_with(cmd, None))
}

/// Story (probe F13): a monitoring job runs `status`, `verify`, `inspect` and `dlq list`
/// as the wrong user on a queue (mode 0700) holding 3 pending escalations and a dead
/// letter directory. Before, "permission denied" was read as "does not exist": pending 0,
/// "wal: not created yet", "no pending records", "no dead letters", all exit 0. Now each
/// says permission denied, names the directory and its owner, and exits 2 (an unusable
/// queue directory: run as the queue's user).
#[test]
fn read_only_commands_without_permission_say_so_and_never_report_an_empty_queue() {
    use std::os::unix::fs::PermissionsExt as _;
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(3);
    std::fs::create_dir_all(sandbox.queue_dir().join("dead-letter")).expect("dlq dir");
    // The queue's parent is traversable (as /var/lib is); the queue itself is 0700 root.
    std::fs::set_permissions(sandbox.root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    assert_eq!(sandbox.status()["pending_total"], 3);
    let commands: [&[&str]; 6] = [
        &["status"],
        &["status", "--json"],
        &["verify"],
        &["inspect"],
        &["dlq", "list"],
        &["dlq", "list", "--json"],
    ];
    for args in commands {
        let Some(out) = run_as_nobody(&sandbox, args) else {
            return;
        };
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        out.expect_stderr(&["permission denied", "owned by uid 0"]);
        for lie in [
            "pending       0",
            "not created yet",
            "no pending",
            "no dead letters",
        ] {
            assert!(!out.stdout.contains(lie), "{args:?} says {lie:?}: {out:#?}");
        }
    }
    // A wal directory of its own that is unreadable (queue dir readable) is no empty wal.
    std::fs::set_permissions(sandbox.queue_dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    for args in [&["status"][..], &["verify"], &["inspect"]] {
        let out = run_as_nobody(&sandbox, args).expect("setpriv");
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        out.expect_stderr(&["wal", "permission denied"]);
    }
}

/// A queue with `n` escalations of 60 KB in `<sandbox>/queue` with 256 KiB segments (four
/// records per segment).
fn small_queue_with(sandbox: &Sandbox, n: usize) -> SmallQueue<'_> {
    let queue = SmallQueue::new(sandbox, sandbox.queue_dir());
    queue.enqueue(n, 60_000);
    queue
}

fn wal_file(queue: &SmallQueue<'_>, name: &str) -> PathBuf {
    queue.dir.join("wal").join(name)
}

fn segment_name(id: u64) -> String {
    format!("lane-000-{id:020}.seg")
}

/// Story (probe F12): a segment file in the middle of a lane is deleted (a clean-up
/// script, a bad restore). Before, `verify` said "clean" (exit 0) while the reader raised
/// a CRITICAL gap incident and `status` and `inspect` disagreed. Now verify names the
/// missing sequence numbers and exits 3. A dangling symlink in place of the segment is
/// reported the same way.
#[test]
fn verify_reports_records_missing_mid_lane() {
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 12);
    assert_eq!(queue.segments(), 3);
    queue.run(&["verify"]).expect_code(0);
    let middle = wal_file(&queue, &segment_name(2));
    std::fs::remove_file(&middle).expect("delete the middle segment");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(out.stdout.contains("DAMAGED"), "{out:#?}");
    assert!(
        out.stdout
            .contains("records seq 4..8 (4 records) are missing"),
        "{out:#?}"
    );
    let json = queue.run(&["verify", "--json"]);
    json.expect_code(3);
    assert_eq!(json.json()["clean"], false);
    std::os::unix::fs::symlink(sandbox.root.path().join("nowhere"), &middle).expect("symlink");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(out.stdout.contains("cannot be opened"), "{out:#?}");
    assert!(out.stdout.contains("are missing"), "{out:#?}");
}

/// Story (probe F27): a segment in the middle of a lane is truncated inside a record.
/// Before, `verify` called it a "torn tail" (an unacknowledged write, not damage); but the
/// lane went on in later segments, so everything in it had been acknowledged. Now it is
/// damage, and the segment is reported cut short; exit 3.
#[test]
fn verify_calls_a_truncated_mid_lane_segment_damage_not_a_torn_tail() {
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 12);
    let first = std::fs::OpenOptions::new()
        .write(true)
        .open(wal_file(&queue, &segment_name(1)))
        .expect("open segment 1");
    first
        .set_len(100_000)
        .expect("truncate inside the second record");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(!out.stdout.contains("torn tail"), "{out:#?}");
    assert!(out.stdout.contains("damage:"), "{out:#?}");
    assert!(out.stdout.contains("without a seal"), "{out:#?}");
}

/// Story (probe F12): the reader consumed part of the queue (its oldest segments are
/// gone), then its cursor checkpoint was deleted or emptied. Before, `verify` said clean;
/// the next reader silently starts over from the oldest segment. Now verify reports that
/// no checkpoint is valid although records were consumed, and exits 3.
#[test]
fn verify_reports_a_deleted_or_emptied_checkpoint_after_consumption() {
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 12);
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    queue
        .run(&["drain", "--endpoint", &cloud.endpoint])
        .expect_code(0);
    cloud.stop();
    queue.enqueue(1, 60_000); // one pending record after the consumed ones
    queue.run(&["verify"]).expect_code(0);
    let checkpoint = wal_file(&queue, "cursor-worker.ckpt");
    std::fs::File::create(&checkpoint).expect("empty the checkpoint");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("no cursor checkpoint is valid"),
        "{out:#?}"
    );
    std::fs::remove_file(&checkpoint).expect("delete the checkpoint");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("no cursor checkpoint is valid"),
        "{out:#?}"
    );
}

/// Writes `wm` as lane 0's watermark (CRC-correct, stamped with an unknown boot).
fn write_watermark(queue: &SmallQueue<'_>, wm: &escalation_queue::wal::layout::Watermark) {
    let bytes = wm.encode(&escalation_queue::wal::layout::BootId::default());
    std::fs::write(wal_file(queue, "lane-000.commit"), bytes).expect("write watermark");
}

fn status_pending(queue: &SmallQueue<'_>) -> (serde_json::Value, serde_json::Value) {
    let out = queue.run(&["status", "--json"]);
    out.expect_code(0);
    let json = out.json();
    (
        json["pending_total"].clone(),
        json["lanes"][0]["durable_end_source"].clone(),
    )
}

/// Story (probe F14): a power loss tears a lane's watermark (FORMAT.md allows it), or it is
/// deleted, or a CRC-correct one is crafted. Before, `status` said pending 0 and `inspect`
/// "no pending records" for a queue holding 5 records, or pending 1000 and
/// 18446744073709551615 for crafted ones. Now the watermark is checked against the
/// segment files and, when it does not match, the end is found by scanning: pending 5,
/// and `inspect` warns that the records exist but cannot be listed yet.
#[test]
fn status_and_inspect_do_not_trust_an_unverified_watermark() {
    use escalation_queue::wal::layout::Watermark;
    use escalation_queue::wal::{SegmentId, Seq};
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 3);
    assert_eq!(status_pending(&queue), (3.into(), "watermark".into()));
    let path = wal_file(&queue, "lane-000.commit");
    let good = Watermark::decode(&std::fs::read(&path).expect("watermark"))
        .expect("valid watermark")
        .0;

    std::fs::write(&path, [0x5a_u8; 48]).expect("tear the watermark");
    assert_eq!(status_pending(&queue), (3.into(), "scanned".into()));
    let out = queue.run(&["inspect"]);
    out.expect_code(0)
        .expect_stderr(&["holds 3 pending records"]);
    assert!(!out.stdout.contains("no pending records"), "{out:#?}");
    assert!(
        queue.run(&["status"]).stdout.contains("found by scanning"),
        "status explains where the end comes from"
    );

    std::fs::remove_file(&path).expect("delete the watermark");
    assert_eq!(status_pending(&queue), (3.into(), "scanned".into()));

    let crafted = [
        Watermark {
            next_seq: Seq(1000),
            ..good
        },
        Watermark {
            next_seq: Seq(u64::MAX),
            ..good
        },
        Watermark {
            offset: good.offset + 8,
            ..good
        },
        Watermark {
            segment: SegmentId(good.segment.0 + 7),
            ..good
        },
    ];
    for wm in crafted {
        write_watermark(&queue, &wm);
        assert_eq!(
            status_pending(&queue),
            (3.into(), "scanned".into()),
            "{wm:?}"
        );
    }
    write_watermark(&queue, &good);
    assert_eq!(status_pending(&queue), (3.into(), "watermark".into()));
}

/// Story (probe F23): a segment file is extended to 8 GiB (sparse) by a tool or a bad copy.
/// Before, `verify` read every byte of it: a 10 GiB sparse segment holding 2 records took
/// 59 s and 10.5 GB of RSS. Now verify reads a segment only up to the capacity its header
/// declares, skipping holes; it reports the 2 records and finishes. The time and maximum
/// RSS are printed (`/usr/bin/time -v` when installed); no timing is asserted.
#[test]
fn verify_of_a_huge_sparse_segment_costs_what_its_data_costs() {
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 2);
    let tail = std::fs::OpenOptions::new()
        .write(true)
        .open(wal_file(&queue, &segment_name(1)))
        .expect("segment");
    tail.set_len(8 << 30).expect("extend to 8 GiB, sparse");
    let started = std::time::Instant::now();
    let out = queue.run(&["verify", "--json"]);
    let elapsed = started.elapsed();
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json["wals"][0]["records"], 2, "{json}");
    assert_eq!(json["wals"][0]["segments"], 1, "{json}");
    println!("verify of an 8 GiB sparse segment holding 2 records: {elapsed:?}");
    if Path::new("/usr/bin/time").is_file() {
        let flags = queue.flags();
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-v")
            .arg(util::BIN)
            .arg("verify")
            .args(&flags)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let timed = sandbox.run_with(cmd, None);
        for line in timed.stderr.lines() {
            if line.contains("Maximum resident") || line.contains("Elapsed (wall") {
                println!("{}", line.trim());
            }
        }
    }
}

/// Two escalations for `det_test` rejected by the cloud: two dead letters.
fn two_dead_letters(sandbox: &Sandbox) {
    sandbox.enqueue_many(2);
    let cloud = MockCloudProcess::start(sandbox, &["--reject-detector", "det_test"]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint]);
    cmd.env("GROUNDLIGHT_API_TOKEN", util::TOKEN);
    sandbox.run_with(cmd, None).expect_code(1);
    cloud.stop();
}

fn dead_letter_count(sandbox: &Sandbox) -> usize {
    let out = sandbox.run(&["dlq", "list", "--json"]);
    out.expect_code(0);
    out.json().as_array().map_or(0, Vec::len)
}

/// Story (probe F26): `dlq purge --all` deleted every dead letter at once, with no
/// confirmation and no way to look first. Now, when stdin is not a terminal (a script, a
/// CI job) it refuses without `--yes` (exit 2, nothing deleted); on a terminal it asks
/// and an answer other than yes deletes nothing; `--dry-run` lists what would go.
#[test]
fn dlq_purge_all_asks_first_and_refuses_without_yes() {
    let sandbox = Sandbox::new();
    two_dead_letters(&sandbox);
    assert_eq!(dead_letter_count(&sandbox), 2);
    sandbox
        .run(&["dlq", "purge", "--all"])
        .expect_code(2)
        .expect_stderr(&["would delete 2 dead letters", "--yes", "--dry-run"]);
    assert_eq!(dead_letter_count(&sandbox), 2);
    let dry = sandbox.run(&["dlq", "purge", "--all", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("would purge 2 dead letters"),
        "{dry:#?}"
    );
    assert_eq!(dead_letter_count(&sandbox), 2);
    if util::tool_or_skip("script", "to run dlq purge on a terminal") {
        let asked = util::run_on_terminal(&sandbox, &["dlq", "purge", "--all"], &[]);
        assert!(asked.stdout.contains("[y/N]"), "{asked:#?}");
        assert!(asked.stdout.contains("nothing purged"), "{asked:#?}");
        assert_eq!(dead_letter_count(&sandbox), 2);
    }
    let out = sandbox.run(&["dlq", "purge", "--all", "--yes"]);
    out.expect_code(0);
    assert!(out.stdout.contains("purged 2 dead letters"), "{out:#?}");
    assert_eq!(dead_letter_count(&sandbox), 0);
}

/// Story (probe F26): `dlq replay` and `dlq purge` on a mistyped `--queue-dir` created
/// the directory and printed "0 dead letters left" (exit 0), hiding the typo. Now every
/// dlq command on a missing directory exits 2 saying it does not exist, and creates
/// nothing.
#[test]
fn dlq_commands_never_create_a_missing_queue_dir() {
    let sandbox = Sandbox::new();
    let typo = sandbox.root.path().join("qeueu");
    let typo_flag = typo.display().to_string();
    let commands: [&[&str]; 6] = [
        &["list"],
        &["replay", "--all"],
        &["replay", "--id", "dl_0_1"],
        &["purge", "--all", "--yes"],
        &["purge", "--id", "dl_0_1"],
        &["purge", "--all", "--dry-run"],
    ];
    for args in commands {
        let mut full = vec!["dlq"];
        full.extend_from_slice(args);
        full.extend(["--queue-dir", &typo_flag]);
        sandbox
            .run(&full)
            .expect_code(2)
            .expect_stderr(&["does not exist", "qeueu"]);
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

/// Story (probe F26): `dlq replay --all` also replayed entries dead-lettered because their
/// record is undecodable; each was dead-lettered again at once under a new id. Now
/// `--all` replays the deliverable ones, leaves the undecodable ones (and says so), and
/// `--include-undecodable` replays them too when asked.
#[test]
fn dlq_replay_all_leaves_undecodable_entries_unless_asked() {
    let sandbox = Sandbox::new();
    // One record that is no escalation (a foreign writer, damage with a valid crc).
    let options = escalation_queue::QueueOptions::default().wal_options();
    let writer =
        escalation_queue::wal::Writer::open(sandbox.queue_dir().join("wal"), &options).unwrap();
    writer.append(b"\x09not an escalation").expect("append");
    drop(writer);
    two_dead_letters(&sandbox);
    let list = sandbox.run(&["dlq", "list", "--json"]).json();
    let causes: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["cause"].to_string())
        .collect();
    assert_eq!(causes.len(), 3, "{list}");
    assert!(
        causes.iter().any(|c| c.contains("undecodable")),
        "{causes:?}"
    );

    let dry = sandbox.run(&["dlq", "replay", "--all", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("would replay 2 dead letters"),
        "{dry:#?}"
    );
    assert_eq!(dead_letter_count(&sandbox), 3);

    let out = sandbox.run(&["dlq", "replay", "--all"]);
    out.expect_code(0);
    assert!(out.stdout.contains("replayed 2 dead letters"), "{out:#?}");
    assert!(
        out.stdout
            .contains("left 1 dead letter dead-lettered as undecodable"),
        "{out:#?}"
    );
    let left = sandbox.run(&["dlq", "list", "--json"]).json();
    assert!(
        left[0]["cause"].to_string().contains("undecodable"),
        "{left}"
    );

    let out = sandbox.run(&["dlq", "replay", "--all", "--include-undecodable"]);
    out.expect_code(0);
    assert!(out.stdout.contains("replayed 1 dead letter"), "{out:#?}");
    assert_eq!(dead_letter_count(&sandbox), 0);
}

/// Makes a FIFO at `path` with `mkfifo`.
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Story (probe F7-F10 left-over): something that is not a regular file sits in the wal
/// under a queue file's name: a FIFO, a directory or a symlink in place of a middle
/// segment, a FIFO named like a watermark, a directory named like a checkpoint. The queue
/// never opens such entries, and before, `verify` therefore never saw them: it printed
/// "clean" and exited 0 for a FIFO named like a watermark, and for a segment swapped for
/// one it reported only the records missing. An inconsistent queue is never reported
/// clean: `verify` names each entry with its path and type and exits 3 (also with
/// `--json`), and `status` and `inspect` mention them in a note.
#[test]
fn verify_reports_entries_named_like_queue_files_that_are_not_files() {
    let sandbox = Sandbox::new();
    let queue = small_queue_with(&sandbox, 12);
    assert_eq!(queue.segments(), 3);
    queue.run(&["verify"]).expect_code(0);
    let middle = wal_file(&queue, &segment_name(2));
    let kept = sandbox.root.path().join("segment-2.kept");
    std::fs::rename(&middle, &kept).expect("move the middle segment away");
    type Make = fn(&Path, &Path);
    let cases: [(&str, Make); 3] = [
        ("a FIFO", |at, _| mkfifo(at)),
        ("a directory", |at, _| {
            std::fs::create_dir(at).expect("mkdir");
        }),
        ("a symbolic link", |at, target| {
            std::os::unix::fs::symlink(target, at).expect("symlink");
        }),
    ];
    for (kind, make) in cases {
        make(&middle, &kept);
        let out = queue.run(&["verify"]);
        out.expect_code(3);
        let line = format!(
            "foreign entry: {}: named like segment 2 of lane 0 but is {kind}",
            middle.display()
        );
        assert!(out.stdout.contains(&line), "{kind}: {out:#?}");
        assert!(out.stdout.contains("DAMAGED"), "{kind}: {out:#?}");
        let json = queue.run(&["verify", "--json"]);
        json.expect_code(3);
        let doc = json.json();
        assert_eq!(doc["clean"], false, "{doc}");
        assert_eq!(
            doc["wals"][0]["foreign"][0]["path"],
            middle.display().to_string(),
            "{doc}"
        );
        assert!(
            doc["wals"][0]["foreign"][0]["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with(kind)),
            "{doc}"
        );
        let status = queue.run(&["status"]);
        status.expect_code(0);
        assert!(status.stdout.contains(&line), "{kind}: {status:#?}");
        let inspect = queue.run(&["inspect"]);
        inspect.expect_code(0).expect_stderr(&[&line]);
        match std::fs::symlink_metadata(&middle).expect("entry").is_dir() {
            true => std::fs::remove_dir(&middle).expect("rmdir"),
            false => std::fs::remove_file(&middle).expect("rm"),
        }
    }
    std::fs::rename(&kept, &middle).expect("restore the middle segment");
    queue.run(&["verify"]).expect_code(0);

    // Not a segment: a FIFO named like a watermark, a directory named like a checkpoint.
    // Nothing else is wrong, so before this was "clean", exit 0.
    let watermark = wal_file(&queue, "lane-005.commit");
    mkfifo(&watermark);
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains(&format!(
            "{}: named like the watermark of lane 5 but is a FIFO",
            watermark.display()
        )),
        "{out:#?}"
    );
    std::fs::remove_file(&watermark).expect("rm fifo");
    let checkpoint = wal_file(&queue, "cursor-audit.ckpt");
    std::fs::create_dir(&checkpoint).expect("mkdir");
    let out = queue.run(&["verify"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains(&format!(
            "{}: named like the checkpoint of cursor 'audit' but is a directory",
            checkpoint.display()
        )),
        "{out:#?}"
    );
}

/// Story (probe F5 left-over): writers filled the queue while no reader had ever run
/// (a new edge box offline from its first day), then the disk filled to 100 %. The reader
/// starting for the first time has no checkpoint file, and before, creating it (8 KiB)
/// failed with "No space left on device": exit 3 on every restart, and the one process
/// that frees the disk never ran. Now it starts, delivers everything and frees the
/// consumed segments (its first checkpoint makes room for itself).
///
/// The wal side is `wal/tests/sim_faults.rs::a_reader_that_never_ran_starts_on_a_full_
/// disk_and_frees_it`; the worker's new `dedupe.log` (its magic and run marker need a
/// first page) then failed the same way, and now keeps its ids in memory until there is
/// room.
#[test]
fn a_reader_that_never_ran_starts_on_a_full_disk_delivers_and_frees_it() {
    let sandbox = Sandbox::new();
    let Some(disk) = Tmpfs::mount(&sandbox.root.path().join("disk"), "2m") else {
        return;
    };
    let queue = SmallQueue::new(&sandbox, disk.path().join("q"));
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    queue.enqueue(10, 60_000);
    assert_eq!(queue.segments(), 3);
    assert!(
        !wal_file(&queue, "cursor-worker.ckpt").exists(),
        "no reader ever ran"
    );
    disk.fill();

    let flags = queue.flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &extra);
    let addr = reader.status_addr();
    wait_until(Duration::from_secs(30), "10 deliveries", || {
        get_json(addr, "/stats").1["worker"]["delivered"] == 10
    });
    wait_until(Duration::from_secs(30), "consumed segments freed", || {
        queue.segments() == 1
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(20)), Some(0));
    let summary = cloud.stop();
    assert_eq!(
        summary["image_query_ids"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(queue.run(&["status", "--json"]).json()["pending_total"], 0);
}

/// Story (probe F5 left-over, found in review): as above, but the reader's first
/// checkpoint lands inside the lane's first segment (here after 3 acknowledgements), so
/// it releases nothing and there is still no room for the checkpoint file. Before, that
/// failure was sticky: the worker stopped on it, the daemon reopened the queue and
/// redelivered from the oldest segment, and failed again at the next checkpoint, forever;
/// the disk was never freed. Now the checkpoint is deferred (logged once), delivery goes
/// on, and a later checkpoint that releases whole segments makes room for itself.
#[test]
fn a_first_checkpoint_inside_the_first_segment_does_not_stop_a_reader_on_a_full_disk() {
    let sandbox = Sandbox::new();
    let Some(disk) = Tmpfs::mount(&sandbox.root.path().join("disk"), "2m") else {
        return;
    };
    let queue = SmallQueue::new(&sandbox, disk.path().join("q"));
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    queue.enqueue(10, 60_000);
    assert_eq!(queue.segments(), 3);
    disk.fill();

    let flags = queue.flags();
    let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    extra.extend(["--set", "worker.checkpoint_acks_max=3"]);
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &extra);
    let addr = reader.status_addr();
    wait_until(Duration::from_secs(30), "10 deliveries", || {
        get_json(addr, "/stats").1["worker"]["delivered"] == 10
    });
    wait_until(Duration::from_secs(30), "consumed segments freed", || {
        queue.segments() == 1
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(20)), Some(0));
    let summary = cloud.stop();
    assert_eq!(
        summary["resubmissions"], 0,
        "nothing was delivered twice: {summary}"
    );
    assert_eq!(
        summary["image_query_ids"].as_array().map(Vec::len),
        Some(10)
    );
}
