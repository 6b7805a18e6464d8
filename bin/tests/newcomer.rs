//! The command line as a newcomer and an operator meet it: a flag a command does not use is refused, not silently ignored;
//! `drain` can be probed like the daemon; what the demo dead-letters is shown, since its
//! queue is gone afterwards; `status` agrees with itself; the last progress frame tells
//! the truth; counts read as English; and `--help` gives the exit codes exactly as
//! docs/OPERATIONS.md does (and the one no other test reaches, 130, is checked).

mod util;

use std::time::Duration;

use util::{get_json, run_on_terminal, tool_or_skip, MockCloudProcess, Sandbox, TOKEN};

/// `mock-cloud` and `demo` open no queue and read no configuration: `--queue-dir`,
/// `--config` and `--set` are refused with clap's usage error (exit 2, naming the flag)
/// rather than accepted and ignored, nothing is created where they point, and their
/// `--help` does not offer them.
#[test]
fn flags_a_command_does_not_use_are_refused() {
    let sandbox = Sandbox::new();
    let elsewhere = sandbox.root.path().join("x");
    let elsewhere = elsewhere.to_str().expect("utf-8");
    for command in ["mock-cloud", "demo"] {
        for (flag, value) in [
            ("--queue-dir", elsewhere),
            ("--config", elsewhere),
            ("--set", "worker.retention_ms=1"),
        ] {
            let out = sandbox.run(&[command, flag, value]);
            out.expect_code(2)
                .expect_stderr(&[&format!("unexpected argument '{flag}'"), "Usage:"]);
            assert!(out.stdout.is_empty(), "{command} {flag}: {}", out.stdout);
        }
        let help = sandbox.run(&[command, "--help"]);
        help.expect_code(0);
        for flag in ["--queue-dir", "--config", "--set"] {
            assert!(
                !help.stdout.contains(flag),
                "`{command} --help` offers {flag}:\n{}",
                help.stdout
            );
        }
    }
    assert!(!std::path::Path::new(elsewhere).exists());
    assert!(!sandbox.queue_dir().exists());
}

/// The queue flags of `dlq` may come before or after its subcommand, and every command
/// that opens the queue takes them after its name.
#[test]
fn queue_flags_go_after_the_command_and_around_dlq_subcommands() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    let dir = sandbox.queue_dir();
    let dir = dir.to_str().expect("utf-8");
    for args in [
        vec!["dlq", "--queue-dir", dir, "list"],
        vec!["dlq", "list", "--queue-dir", dir],
    ] {
        let mut cmd = sandbox.command(&args);
        cmd.env_remove("ESCALATION_QUEUE_DIR");
        let out = sandbox.run_with(cmd, None);
        out.expect_code(0);
        assert!(out.stdout.contains("no dead letters in"), "{}", out.stdout);
    }
    for command in ["status", "inspect", "verify"] {
        let mut cmd = sandbox.command(&[command, "--queue-dir", dir, "--json"]);
        cmd.env_remove("ESCALATION_QUEUE_DIR");
        sandbox.run_with(cmd, None).expect_code(0);
    }
}

/// A Kubernetes Job running `drain` can be probed: given `--status-addr`, `drain` serves
/// `/health` and `/stats` while it delivers, here while the cloud is down (so it keeps
/// retrying). Without an address it serves nothing (no port to collide with).
#[test]
fn drain_serves_the_status_endpoints_while_it_delivers() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(3);
    let cloud = MockCloudProcess::start(&sandbox, &["--outage-ms", "120000"]);
    let mut cmd = sandbox.command(&[
        "drain",
        "--endpoint",
        &cloud.endpoint,
        "--status-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let mut drain = util::Daemon::start(cmd);
    let addr = drain.status_addr();
    let (status, health) = get_json(addr, "/health");
    assert_eq!(status, 200, "{health:#}");
    assert!(
        matches!(health["status"].as_str(), Some("healthy" | "degraded")),
        "{health:#}"
    );
    util::wait_until(Duration::from_secs(20), "drain retrying the outage", || {
        let (_, stats) = get_json(addr, "/stats");
        assert_eq!(stats["reader"]["wal"]["state"], "running", "{stats:#}");
        stats["worker"]["attempts"].as_u64().unwrap_or(0) >= 1
    });
    drain.terminate();
    assert_eq!(drain.wait_exit(Duration::from_secs(20)), Some(1));
    assert!(
        drain.stderr_text().contains("drain interrupted"),
        "{}",
        drain.stderr_text()
    );
    drop(cloud);

    let healthy = MockCloudProcess::start(&sandbox, &[]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &healthy.endpoint]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0);
    assert!(
        !out.stderr.contains("status server listening"),
        "{}",
        out.stderr
    );
}

/// The demo's queue is a temporary directory removed at the end, so `dlq list` cannot
/// show its dead letters afterwards: the demo lists them itself, each with its image
/// query id and cause. Its last progress line is the final count (nothing pending), and
/// its counts read as English ("1 writer thread").
#[test]
fn the_demo_shows_its_dead_letters_and_a_true_last_progress_line() {
    let sandbox = Sandbox::new();
    let args = [
        "demo",
        "--escalations",
        "100",
        "--writers",
        "1",
        "--outage-ms",
        "0",
    ];
    let out = sandbox.run(&args);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("demo: 100 escalations from 1 writer thread,"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("listed below"), "{}", out.stdout);
    assert!(!out.stdout.contains("shows why"), "{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("dead letters ("))
        .unwrap_or_else(|| panic!("no dead-letter list:\n{}", out.stdout));
    assert!(lines[at + 1].starts_with("ID "), "{}", out.stdout);
    let row = lines[at + 2];
    assert!(
        row.starts_with("dl_") && row.contains(" iq_") && row.contains("image_unavailable"),
        "{}",
        out.stdout
    );
    assert!(lines[at + 3].is_empty(), "one dead letter:\n{}", out.stdout);
    let last = out
        .stderr
        .lines()
        .rfind(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no progress line:\n{}", out.stderr));
    assert!(
        last.contains("100/100 finished · pending 0 ·"),
        "last progress line: {last}"
    );
}

/// `drain` on a terminal: the progress bar's last frame stays on screen and shows what
/// is left, 0, not the worker's depth gauge (refreshed only every maintenance interval,
/// made long here so that the gauge is still at its starting value when drain ends).
#[test]
fn the_drain_progress_bar_ends_on_a_true_frame() {
    if !tool_or_skip("script", "util-linux `script` gives the drain a terminal") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(20);
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let out = run_on_terminal(
        &sandbox,
        &[
            "drain",
            "--endpoint",
            &cloud.endpoint,
            "--set",
            "worker.maintenance_interval_ms=600000",
        ],
        &[("GROUNDLIGHT_API_TOKEN", TOKEN)],
    );
    out.expect_code(0);
    let screen = out.stdout.replace('\r', "\n");
    let frame = screen
        .lines()
        .rfind(|l| l.contains("pending "))
        .unwrap_or_else(|| panic!("no progress frame:\n{screen}"));
    assert!(
        frame.contains("20/20 pending 0 · delivered 20"),
        "last frame: {frame}"
    );
    assert!(screen.contains("20 delivered"), "{screen}");
}

/// Before any reader ran there is no cursor checkpoint, yet `status` knows each lane's
/// oldest pending record: every lane shows an age, and the header's age is the oldest of
/// them (they were `-` while the header showed an age).
#[test]
fn status_gives_every_lane_an_oldest_age_before_any_reader_ran() {
    let sandbox = Sandbox::new();
    let first = escalation_queue::EscalationQueue::open(sandbox.queue_dir()).expect("open");
    let second = escalation_queue::EscalationQueue::open(sandbox.queue_dir()).expect("open");
    for queue in [&first, &second] {
        let image = escalation_queue::ImageSource::Inline(b"image".to_vec().into());
        let esc = escalation_queue::Escalation::new("det_test", image);
        queue.enqueue(&esc).expect("enqueue");
    }
    drop((first, second));
    let status = sandbox.status();
    let lanes = status["lanes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), 2, "{status:#}");
    let ages: Vec<u64> = lanes
        .iter()
        .map(|l| {
            l["oldest_pending_age_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("a lane without an age: {status:#}"))
        })
        .collect();
    assert_eq!(
        status["oldest_pending_age_ms"].as_u64(),
        ages.iter().copied().max(),
        "{status:#}"
    );
    let human = sandbox.run(&["status"]);
    human.expect_code(0);
    let rows: Vec<Vec<&str>> = human
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("LANE"))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let oldest = rows[0].iter().position(|c| *c == "OLDEST").expect("column");
    assert_eq!(rows.len(), 3, "{}", human.stdout);
    for row in &rows[1..] {
        assert!(
            row[oldest].ends_with(" ms") || row[oldest].ends_with(" s"),
            "{row:?}"
        );
    }
}

/// Counts read as English: one segment is "1 segment"; replaying an empty dead-letter
/// queue says there was nothing to replay (not "replayed 0: "); one dead letter left is
/// "1 dead letter left".
#[test]
fn counts_read_as_english() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    let out = sandbox.run(&["verify"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("wal: clean: 1 segment, 1 record, "),
        "{}",
        out.stdout
    );
    let out = sandbox.run(&["dlq", "replay", "--all"]);
    out.expect_code(0);
    assert_eq!(
        out.stdout, "no dead letters to replay\n0 dead letters left\n",
        "{}",
        out.stdout
    );
    let cloud = MockCloudProcess::start(&sandbox, &["--script", "400"]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(1)
        .expect_stderr(&["1 escalation dead-lettered: see"]);
    assert!(
        out.stdout
            .contains(": 0 delivered, 1 dead-lettered, 0 expired, 0 duplicates skipped, 0 retries"),
        "{}",
        out.stdout
    );
    let out = sandbox.run(&["dlq", "purge", "--all", "--yes"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("purged 1 dead letter: dl_")
            && out.stdout.ends_with("0 dead letters left\n"),
        "{}",
        out.stdout
    );
}

/// `--help` gives every exit code with exactly the meaning the table in
/// docs/OPERATIONS.md gives (supervisors and scripts are written from either).
#[test]
fn help_gives_the_exit_codes_of_the_operations_guide() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["--help"]);
    out.expect_code(0);
    let section = out
        .stdout
        .split("Exit codes:\n")
        .nth(1)
        .expect("an exit-code section");
    let mut from_help: Vec<(u16, String)> = Vec::new();
    for line in section.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().and_then(|w| w.parse::<u16>().ok()) {
            Some(code) if line.starts_with("  ") && !line.starts_with("       ") => {
                from_help.push((code, words[1..].join(" ")));
            }
            _ => {
                let (_, meaning) = from_help.last_mut().expect("a code first");
                meaning.push(' ');
                meaning.push_str(&words.join(" "));
            }
        }
    }
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .expect("docs/OPERATIONS.md");
    let table = guide
        .split("## Exit codes")
        .nth(1)
        .expect("an exit-code section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let from_guide: Vec<(u16, String)> = table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            let code = cells.first()?.trim().parse().ok()?;
            Some((
                code,
                cells
                    .get(1)?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        })
        .collect();
    assert_eq!(from_help, from_guide);
    assert_eq!(
        from_help.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 130]
    );
}

/// Exit code 130, as documented: a second SIGTERM while the reader is stopping (waiting
/// for its request in flight, which the cloud holds for 30 s) exits at once. The request
/// is known to be in flight when the kernel shows the reader's connection to the cloud.
#[test]
fn a_second_signal_while_stopping_exits_130() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    let cloud = MockCloudProcess::start(
        &sandbox,
        &["--timeout-rate", "1", "--timeout-delay-ms", "30000"],
    );
    let port: u16 = cloud
        .endpoint
        .trim_end_matches("/device-api")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut reader = util::spawn_reader(&sandbox, &cloud.endpoint, &[]);
    util::wait_until(Duration::from_secs(20), "a request in flight", || {
        established_connections_to(port) > 0
    });
    reader.terminate();
    reader.wait_stderr(Duration::from_secs(10), |l| {
        l.contains("send the signal again to exit at once")
    });
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(10)), Some(130));
}

/// TCP connections in state ESTABLISHED to 127.0.0.1:`port`, from /proc/net/tcp.
fn established_connections_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}
