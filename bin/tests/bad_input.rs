//! Every mistake an operator or a deployment can make gets the documented exit code and a
//! message that names the problem: the flag, the key, the value, the file, what is
//! allowed. A supervisor that restarts on failure, or a script that branches on `$?`,
//! depends on these codes (docs/OPERATIONS.md, "Exit codes"); a human reading the message at 3 a.m.
//! depends on the wording.

mod util;

use std::time::Duration;

use util::{spawn_reader, Sandbox};

/// A typo in a flag is a usage error (2) naming the flag, and nothing is created.
#[test]
fn unknown_flag_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["status", "--jsno"])
        .expect_code(2)
        .expect_stderr(&["--jsno"]);
    assert!(!sandbox.queue_dir().exists());
}

/// A confidence threshold outside 0..=1 is rejected before anything is written.
#[test]
fn bad_confidence_threshold_exits_2_naming_field_and_range() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("img.jpg", b"\xff\xd8\xffjpeg");
    let image = image.to_str().expect("utf-8");
    let args = ["enqueue", "--detector-id", "det_1", "--image", image];
    let out = sandbox.run(&[&args[..], &["--confidence-threshold", "1.5"]].concat());
    out.expect_code(2)
        .expect_stderr(&["confidence_threshold", "1.5"]);
    let out = sandbox.run(&[&args[..], &["--confidence-threshold", "high"]].concat());
    out.expect_code(2)
        .expect_stderr(&["--confidence-threshold", "high"]);
    let out = sandbox.run(&[&args[..], &["--human-review", "SOMETIMES"]].concat());
    out.expect_code(2)
        .expect_stderr(&["human_review", "SOMETIMES"]);
}

/// A configuration value out of range names the key, the value, where it came from and
/// the allowed range, whether it came from a flag, the environment or the file.
#[test]
fn bad_config_values_exit_2_naming_key_value_origin_and_range() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["status", "--set", "worker.checkpoint_acks_max=0"])
        .expect_code(2)
        .expect_stderr(&["worker.checkpoint_acks_max = 0", "--set", "1 to 100000"]);

    let mut cmd = sandbox.command(&["status"]);
    cmd.env("ESCALATION_QUEUE__QUEUE__LANES_MAX", "99");
    sandbox.run_with(cmd, None).expect_code(2).expect_stderr(&[
        "queue.lanes_max = 99",
        "ESCALATION_QUEUE__QUEUE__LANES_MAX",
        "1 to 64",
    ]);

    let config = sandbox.file("bad.toml", b"[worker]\nretention_ms = \"a week\"\n");
    sandbox
        .run(&["status", "--config", config.to_str().expect("utf-8")])
        .expect_code(2)
        .expect_stderr(&["worker.retention_ms", "a week", "bad.toml"]);

    let config = sandbox.file("typo.toml", b"[worker]\nretension_ms = 5\n");
    sandbox
        .run(&["status", "--config", config.to_str().expect("utf-8")])
        .expect_code(2)
        .expect_stderr(&["retension_ms"]);
}

/// An image that is not there is named, with the OS's reason.
#[test]
fn missing_image_exits_2_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&[
            "enqueue",
            "--detector-id",
            "det_1",
            "--image",
            "/no/such/frame.jpg",
        ])
        .expect_code(2)
        .expect_stderr(&["/no/such/frame.jpg", "No such file"]);
}

/// A config file that cannot be read, or is not TOML, is named with the reason.
#[test]
fn unreadable_config_exits_2_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["status", "--config", "/no/such/config.toml"])
        .expect_code(2)
        .expect_stderr(&["/no/such/config.toml", "cannot read config file"]);
    let dir = sandbox.root.path().to_str().expect("utf-8").to_owned();
    sandbox
        .run(&["status", "--config", &dir])
        .expect_code(2)
        .expect_stderr(&["cannot read config file"]);
    let broken = sandbox.file("broken.toml", b"[worker\nretention_ms = 1\n");
    sandbox
        .run(&["status", "--config", broken.to_str().expect("utf-8")])
        .expect_code(2)
        .expect_stderr(&["broken.toml", "not valid TOML"]);
}

/// Tests run as root, for whom permissions are no obstacle; a queue directory under a
/// regular file cannot be created by anyone, so that is the unwritable directory here.
#[test]
fn queue_dir_not_writable_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let file = sandbox.file("plain-file", b"not a directory");
    let queue = file.join("queue");
    let queue = queue.to_str().expect("utf-8");
    let image = sandbox.file("img.jpg", b"\xff\xd8\xffjpeg");
    let image = image.to_str().expect("utf-8");
    sandbox
        .run(&[
            "enqueue",
            "--queue-dir",
            queue,
            "--detector-id",
            "det_1",
            "--image",
            image,
        ])
        .expect_code(2)
        .expect_stderr(&[queue, "cannot be created"]);
    sandbox
        .run(&["status", "--queue-dir", queue])
        .expect_code(2)
        .expect_stderr(&[queue]);
}

/// The reader needs a token; without one it says which variable to set, at once.
#[test]
fn reader_without_token_exits_2_naming_the_variable() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["drain", "--endpoint", "http://127.0.0.1:9/"])
        .expect_code(2)
        .expect_stderr(&["GROUNDLIGHT_API_TOKEN"]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", "ftp://nowhere"]);
    cmd.env("GROUNDLIGHT_API_TOKEN", util::TOKEN);
    sandbox.run_with(cmd, None).expect_code(2).expect_stderr(&[
        "cloud.endpoint",
        "ftp://nowhere",
        "--endpoint",
    ]);
}

/// One reader per queue (docs/OPERATIONS.md, "Exit codes", 4): the second is refused with exit 4, naming the
/// queue, and the first keeps running.
#[test]
fn second_reader_exits_4() {
    let sandbox = Sandbox::new();
    let first = spawn_reader(&sandbox, "http://127.0.0.1:9/", &[]);
    first.wait_stderr(Duration::from_secs(20), |l| l.contains("reader started"));
    let mut cmd = sandbox.command(&[
        "reader",
        "--endpoint",
        "http://127.0.0.1:9/",
        "--status-addr",
        "127.0.0.1:0",
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", util::TOKEN);
    let queue = sandbox.queue_dir();
    sandbox.run_with(cmd, None).expect_code(4).expect_stderr(&[
        "another worker is already running",
        queue.to_str().expect("utf-8"),
    ]);
    let mut drain = sandbox.command(&["drain", "--endpoint", "http://127.0.0.1:9/"]);
    drain.env("GROUNDLIGHT_API_TOKEN", "x");
    sandbox.run_with(drain, None).expect_code(4);
    assert!(sandbox.status()["reader_running"].as_bool().expect("bool"));
}

/// A flipped byte in a durable record is corruption: `verify` reports where (file,
/// offset, crc) and exits 3; a clean queue verifies with 0.
#[test]
fn verify_reports_damage_with_exit_3() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(3);
    sandbox.run(&["verify"]).expect_code(0);
    let wal = sandbox.queue_dir().join("wal");
    let segment = std::fs::read_dir(&wal)
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let at = bytes
        .windows(b"test image 1".len())
        .position(|w| w == b"test image 1")
        .expect("record payload");
    bytes[at] ^= 0xFF;
    std::fs::write(&segment, bytes).expect("write segment");
    let out = sandbox.run(&["verify"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("DAMAGED") && out.stdout.contains("crc32c"),
        "{out:#?}"
    );
    let json = sandbox.run(&["verify", "--json"]);
    json.expect_code(3);
    assert_eq!(json.json()["clean"], false);
}

/// A dead-letter id that matches nothing is a usage error, not a silent no-op.
#[test]
fn unknown_dead_letter_id_exits_2() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    sandbox
        .run(&["dlq", "replay", "--id", "dl_9_9"])
        .expect_code(2)
        .expect_stderr(&["dl_9_9", "dlq list"]);
    sandbox
        .run(&["dlq", "purge"])
        .expect_code(2)
        .expect_stderr(&["--id", "--all"]);
}
