//! `escalation-queue import-legacy`, driven as an operator (or a Kubernetes init step)
//! drives it: the real binary on a legacy edge-endpoint queue directory built by a
//! faithful re-implementation of the Python writer and reader (`util/legacy.rs`), checked
//! through `inspect --json`, `dlq list --json` and a `drain` against `mock-cloud`.
//!
//! The stories: every pending legacy line arrives exactly once and nothing the legacy
//! reader finished is resent; the line it had in flight is marked possibly submitted; the
//! damage the Python reader mishandles is imported where possible and reported where not;
//! `--dry-run` changes nothing; a second run imports nothing; and an import killed with
//! SIGKILL at random moments, again and again, still ends with every pending line in the
//! queue exactly once.
//!
//! Knobs: `EQ_IMPORT_KILLS` (default 12), `EQ_IMPORT_KILL_SEED` (default 5; printed).

#[path = "util/legacy.rs"]
mod legacy;
mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use legacy::{cache_request_id, record_failure, LegacyReader, LegacyWriter, Line, Params, Rng};
use serde_json::Value;
use util::{MockCloudProcess, Outcome, Sandbox, TOKEN};

/// Where the legacy containers mounted the queue (image paths in lines are below it).
const ROOT_AS: &str = "/opt/groundlight/queue";
const DETECTOR: &str = "det_2UOxalD1gegjk4TnyLbtGggiJ8p";

fn legacy_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox.root.path().join("legacy")
}

fn params(w: &mut LegacyWriter) -> Params {
    Params {
        confidence_threshold: Some(0.75),
        metadata_json: Some(
            "{\"is_edge_audit\": true, \"edge_result\": {\"confidence\": 0.97, \"label\": 0}}"
                .into(),
        ),
        image_query_id: w.new_image_query_id(),
        ..Params::default()
    }
}

fn write_n(w: &mut LegacyWriter, n: usize, tag: &str) -> Vec<Line> {
    (0..n)
        .map(|i| {
            let p = params(w);
            let rq = w.new_request_id();
            w.write(
                DETECTOR,
                format!("\u{ff}\u{d8} image {tag}{i}").as_bytes(),
                &p,
                &rq,
            )
        })
        .collect()
}

fn import(sandbox: &Sandbox, extra: &[&str]) -> Outcome {
    let dir = legacy_dir(sandbox);
    let mut args = vec!["import-legacy", dir.to_str().expect("utf-8"), "--json"];
    args.extend_from_slice(extra);
    sandbox.run(&args)
}

/// Image query id → (count, possibly_submitted) of the pending records.
fn pending(sandbox: &Sandbox) -> HashMap<String, (usize, bool)> {
    let out = sandbox.run(&["inspect", "--json", "--limit", "0"]);
    out.expect_code(0);
    let report = out.json();
    let mut seen: HashMap<String, (usize, bool)> = HashMap::new();
    for r in report["records"].as_array().expect("records") {
        assert!(r["decode_error"].is_null(), "{r}");
        assert!(
            r["image"].as_str().expect("image").starts_with("inline"),
            "images are inlined: {r}"
        );
        let id = r["image_query_id"].as_str().expect("id").to_owned();
        let e = seen.entry(id).or_insert((0, false));
        e.0 += 1;
        e.1 |= r["possibly_submitted"] == true;
    }
    seen
}

fn dead_letters(sandbox: &Sandbox) -> Vec<Value> {
    let out = sandbox.run(&["dlq", "list", "--json"]);
    out.expect_code(0);
    out.json().as_array().expect("list").clone()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// The damaged legacy queue of the story below, and what must come of it.
struct Fixture {
    /// Image query ids that must end pending, exactly once.
    imported: HashSet<String>,
    /// The one the legacy reader had in flight.
    in_flight: String,
    /// The one whose image is gone (dead-lettered).
    image_gone: String,
    /// C2's image query id, and the request id it must get.
    mapped: (String, String),
}

/// - File A (5 lines): the legacy reader finished A0 (request id cached, image deleted)
///   and had A1 in flight when it was killed: tracker "1".
/// - File B (4 lines): 37 NUL bytes glued before B2 and a 512-byte NUL tail (power loss).
/// - File C (3 lines): claimed (renamed into reading/) with no tracker; C2's request id
///   breaks our id rule.
/// - File D: D0 good; D1's image deleted; D2 an SDK retry of A0 (same request id); D3
///   patience_time 0; D4 metadata too large for the SDK; then a non-JSON line and a torn
///   last line.
/// - `writing/copy-of-a-queue-file.txt` (a name the writer never makes): one good line.
/// - An orphan tracker, an orphan image, a `failed/` record of a 400 and a raw one.
fn build_damaged(base: &Path) -> Fixture {
    let root = Path::new(ROOT_AS);
    let mut wa = LegacyWriter::new(base, root, 11);
    let a = write_n(&mut wa, 5, "a");
    let mut wb = LegacyWriter::new(base, root, 12);
    let b = write_n(&mut wb, 4, "b");
    let mut wc = LegacyWriter::new(base, root, 13);
    let mut c = write_n(&mut wc, 2, "c");
    // A client X-Request-Id our id rule refuses (spaces, non-ASCII).
    let p = params(&mut wc);
    c.push(wc.write(DETECTOR, b"c2 image", &p, "my client id \u{e9}"));
    let mut wd = LegacyWriter::new(base, root, 14);
    let d0 = write_n(&mut wd, 2, "d");
    let p = params(&mut wd);
    let d2 = wd.write(DETECTOR, b"d2 image", &p, &a[0].request_id);
    let mut p3 = params(&mut wd);
    p3.patience_time = Some(0.0);
    let rq = wd.new_request_id();
    let d3 = wd.write(DETECTOR, b"d3 image", &p3, &rq);
    let mut p4 = params(&mut wd);
    p4.metadata_json = Some(format!("{{\"edge_result\": \"{}\"}}", "x".repeat(1100)));
    let rq = wd.new_request_id();
    let _d4 = wd.write(DETECTOR, b"d4 image", &p4, &rq);
    let mut torn = params(&mut wd);
    torn.confidence_threshold = Some(0.5);
    let rq = wd.new_request_id();
    let torn_line = wd.write(DETECTOR, b"torn image", &torn, &rq);
    // Keep D0..D4, then a non-JSON line and the first half of the torn line (no newline).
    let d_path = base.join("writing").join(&d0[0].file_name);
    let text = fs::read_to_string(&d_path).expect("D");
    let mut d_bytes: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    d_bytes.push_str("hello from a confused process\n");
    d_bytes.push_str(&torn_line.text[..torn_line.text.len() / 2]);
    fs::write(&d_path, d_bytes).expect("D damaged");
    fs::remove_file(&d0[1].image_path).expect("D1 image");

    // The reader: A0 done, A1 in flight.
    let mut reader = LegacyReader::new(base);
    let first = reader.next_line().expect("A0");
    assert_eq!(first, a[0].text);
    reader.finish(&a[0]);
    let second = reader.next_line().expect("A1");
    assert_eq!(second, a[1].text);
    drop(reader);

    // B: NULs before B2 and a NUL tail.
    let b_path = base.join("writing").join(&b[0].file_name);
    let mut b_bytes = Vec::new();
    for (i, line) in b.iter().enumerate() {
        if i == 2 {
            b_bytes.extend_from_slice(&[0; 37]);
        }
        b_bytes.extend_from_slice(line.text.as_bytes());
        b_bytes.push(b'\n');
    }
    b_bytes.extend_from_slice(&[0; 512]);
    fs::write(&b_path, b_bytes).expect("B damaged");

    // C: claimed without a tracker.
    fs::rename(
        base.join("writing").join(&c[0].file_name),
        base.join("reading").join(&c[0].file_name),
    )
    .expect("claim C");

    // A file whose name the writer never makes.
    let mut we = LegacyWriter::new(&base.join("scratch"), root, 15);
    let e = write_n(&mut we, 1, "e");
    fs::rename(
        base.join("scratch/images")
            .join(e[0].image_path.file_name().expect("name")),
        base.join("images")
            .join(e[0].image_path.file_name().expect("name")),
    )
    .expect("image e");
    fs::write(
        base.join("writing/copy-of-a-queue-file.txt"),
        format!("{}\n", e[0].text),
    )
    .expect("odd name");
    fs::remove_dir_all(base.join("scratch")).expect("scratch");

    fs::write(
        base.join("reading/tracking-20200101_000000_000000-AAAAAAAAAAAAAAAAAAAAAAAAAAA.txt"),
        b"11",
    )
    .expect("orphan tracker");
    fs::write(
        base.join("images/det_x-20200101_000000_000000-orphan"),
        b"o",
    )
    .expect("orphan");
    let mut rng = Rng(99);
    record_failure(
        base,
        &mut rng,
        Some(
            &a[0]
                .text
                .replace(&a[0].image_query_id, "iq_failedwith400xxxxxxxxxxxxxx"),
        ),
        "HTTPException",
        "400: Bad Request",
    );
    record_failure(
        base,
        &mut rng,
        Some("{\"timestamp\": \"2026"),
        "JSONDecodeError",
        "Expecting ',' delimiter",
    );

    let ids = |lines: &[&Line]| {
        lines
            .iter()
            .map(|l| l.image_query_id.clone())
            .collect::<Vec<_>>()
    };
    let imported: HashSet<String> = ids(&[
        &a[1], &a[2], &a[3], &a[4], &b[0], &b[1], &b[2], &b[3], &c[0], &c[1], &c[2], &d0[0], &d3,
        &e[0],
    ])
    .into_iter()
    .collect();
    let _ = d2;
    Fixture {
        imported,
        in_flight: a[1].image_query_id.clone(),
        image_gone: d0[1].image_query_id.clone(),
        // "req_h" + hashlib.sha256("my client id é".encode()).hexdigest()[:32], as the
        // Python package's safe_request_id maps it.
        mapped: (
            c[2].image_query_id.clone(),
            "req_hbd2a00c085cd778826006b22a5688c91".to_owned(),
        ),
    }
}

/// The damaged queue: everything importable arrives once (and is delivered once), the
/// damage is reported by reason, failures become dead letters, and a second run imports
/// nothing.
#[test]
fn a_damaged_legacy_queue_is_imported_once_with_every_damage_reported() {
    let sandbox = Sandbox::new();
    let base = legacy_dir(&sandbox);
    let fixture = build_damaged(&base);

    let out = import(&sandbox, &[]);
    out.expect_code(0);
    let s = out.json();
    assert_eq!(s["imported"], 14, "{s:#}");
    assert_eq!(s["possibly_submitted"], 1, "{s:#}");
    assert_eq!(s["recovered_from_damage"], 1, "{s:#}");
    assert_eq!(s["skipped_consumed"], 1, "{s:#}");
    assert_eq!(s["skipped_duplicate_request"], 1, "{s:#}");
    assert_eq!(s["already_imported"], 0, "{s:#}");
    assert_eq!(s["dead_letters"], 3, "{s:#}");
    assert_eq!(s["request_ids_seeded"], 1, "{s:#}");
    assert_eq!(s["files_archived_damaged"], 1, "{s:#}");
    let reasons: Vec<(String, Option<u64>, String)> = s["damaged"]
        .as_array()
        .expect("damaged")
        .iter()
        .map(|d| {
            (
                d["file"]
                    .as_str()
                    .expect("file")
                    .split('/')
                    .next()
                    .expect("dir")
                    .to_owned(),
                d["line"].as_u64(),
                d["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    let has = |dir: &str, line: Option<u64>, reason: &str| {
        assert!(
            reasons
                .iter()
                .any(|(d, l, r)| d == dir && *l == line && r == reason),
            "no {reason} at {dir}:{line:?} in {s:#}"
        );
    };
    has("reading", None, "claimed_without_tracker");
    has("writing", Some(3), "nul_bytes");
    has("writing", Some(5), "nul_bytes");
    has("writing", Some(2), "image_missing");
    has("writing", Some(5), "invalid");
    has("writing", Some(6), "not_json");
    has("writing", Some(7), "not_json");
    has("writing", None, "name_mismatch");
    has("reading", None, "orphan_tracker");
    assert_eq!(reasons.len(), 9, "{s:#}");

    let seen = pending(&sandbox);
    let ids: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(ids, fixture.imported);
    assert!(seen.values().all(|(n, _)| *n == 1), "{seen:?}");
    for (id, (_, possibly)) in &seen {
        assert_eq!(*possibly, *id == fixture.in_flight, "{id}");
    }
    let listed = sandbox.run(&["inspect", "--json", "--limit", "0"]).json();
    let c2 = listed["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["image_query_id"] == fixture.mapped.0.as_str())
        .expect("C2 imported");
    assert_eq!(c2["request_id"], fixture.mapped.1.as_str());
    let dls = dead_letters(&sandbox);
    let causes: HashMap<String, String> = dls
        .iter()
        .map(|d| {
            (
                d["error_class"].as_str().expect("class").to_owned(),
                d["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    assert_eq!(dls.len(), 3, "{dls:#?}");
    assert!(
        causes.contains_key("bad_request")
            && causes.contains_key("undecodable")
            && causes.contains_key("image_unavailable"),
        "{dls:#?}"
    );
    assert!(dls
        .iter()
        .any(|d| d["image_query_id"] == fixture.image_gone.as_str()));
    assert!(dls.iter().any(|d| d["http_status"] == 400));

    // What is left of the legacy queue: the damaged file, kept; images of lines that could
    // not be imported and the orphan; nothing the reader would read.
    assert_eq!(files_in(&base.join("writing")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("reading")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("failed")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("request-cache")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("import-legacy-damaged")).len(), 1);
    assert_eq!(s["images_left"], 3, "{s:#}");

    let again = import(&sandbox, &[]);
    again.expect_code(0);
    let s2 = again.json();
    assert_eq!(
        (s2["imported"].as_u64(), s2["dead_letters"].as_u64()),
        (Some(0), Some(0)),
        "{s2:#}"
    );
    assert_eq!(pending(&sandbox).len(), 14);

    // Delivered: each exactly once, the consumed line not resent.
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint, "--json"]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let drained = sandbox.run_with(cmd, None);
    drained.expect_code(0);
    let d = drained.json();
    assert_eq!(
        (d["delivered"].as_u64(), d["duplicates"].as_u64()),
        (Some(14), Some(0)),
        "{d:#}"
    );
    let received = cloud.stop();
    let created: Vec<String> = received["image_query_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().or(v["id"].as_str()).expect("id").to_owned())
        .collect();
    assert_eq!(created.len(), 14);
    assert_eq!(
        created.into_iter().collect::<HashSet<_>>(),
        fixture.imported
    );
}

/// `--dry-run` reports what a real run will do and changes nothing, on either side.
#[test]
fn dry_run_reports_the_import_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let base = legacy_dir(&sandbox);
    build_damaged(&base);
    let before = snapshot(&base);
    let out = import(&sandbox, &["--dry-run"]);
    out.expect_code(0);
    let dry = out.json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(snapshot(&base), before, "the legacy directory is unchanged");
    assert!(
        !sandbox.queue_dir().exists(),
        "no queue directory was created"
    );
    let real = import(&sandbox, &[]).json();
    for key in [
        "imported",
        "possibly_submitted",
        "skipped_consumed",
        "skipped_duplicate_request",
        "dead_letters",
        "recovered_from_damage",
    ] {
        assert_eq!(dry[key], real[key], "{key}: dry {dry:#} real {real:#}");
    }
    assert_eq!(
        dry["damaged"].as_array().map(Vec::len),
        real["damaged"].as_array().map(Vec::len)
    );
}

/// A running reader holds the queue: the import refuses (exit 4) and changes nothing.
#[test]
fn the_import_refuses_to_share_the_queue_with_a_running_reader() {
    let sandbox = Sandbox::new();
    let base = legacy_dir(&sandbox);
    let mut w = LegacyWriter::new(&base, Path::new(ROOT_AS), 3);
    write_n(&mut w, 3, "x");
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let mut reader = util::spawn_reader(&sandbox, &cloud.endpoint, &[]);
    reader.wait_stderr(Duration::from_secs(30), |l| l.contains("reader started"));
    let before = snapshot(&base);
    let out = import(&sandbox, &[]);
    out.expect_code(4).expect_stderr(&["reader is running"]);
    assert_eq!(snapshot(&base), before);
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(30)), Some(0));
    import(&sandbox, &[]).expect_code(0);
    assert_eq!(pending(&sandbox).len(), 3);
}

/// The message the importer logs (at debug) once a line is durable.
const LINE_IMPORTED: &str = "legacy line imported (durable)";

/// The importer's log filter that logs every imported line (at debug).
const LOG_EACH_LINE: &str = "warn,escalation_queue_cli::commands::import_legacy=debug";

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir").filter_map(Result::ok) {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).map_or(default, |v| v.parse().expect(key))
}

/// SIGKILL at random moments, many times, then a run to completion: every pending line is
/// in the queue exactly once, the consumed ones are not, every failure is one dead letter,
/// and nothing of the legacy queue is left to read.
#[test]
fn an_import_killed_at_random_moments_ends_with_every_pending_line_exactly_once() {
    let kills = env_u64("EQ_IMPORT_KILLS", 12);
    let seed = env_u64("EQ_IMPORT_KILL_SEED", 5);
    println!("seed {seed}, kills {kills}");
    let mut rng = Rng(seed.max(1));
    let sandbox = Sandbox::new();
    let base = legacy_dir(&sandbox);
    let root = Path::new(ROOT_AS);
    // Three writer processes, 600 lines; the reader finished 40 of the oldest file and has
    // the 41st in flight; a NUL-damaged file; five failure records.
    let mut lines = Vec::new();
    for (i, n) in [(1_u64, 250_usize), (2, 200), (3, 150)] {
        let mut w = LegacyWriter::new(&base, root, 100 + i);
        lines.extend(write_n(&mut w, n, &format!("w{i}-")));
    }
    let mut reader = LegacyReader::new(&base);
    let mut consumed = HashSet::new();
    for _ in 0..40 {
        let text = reader.next_line().expect("line");
        let line = lines.iter().find(|l| l.text == text).expect("known");
        reader.finish(line);
        consumed.insert(line.image_query_id.clone());
    }
    let in_flight_text = reader.next_line().expect("in flight");
    drop(reader);
    let in_flight = lines
        .iter()
        .find(|l| l.text == in_flight_text)
        .expect("known")
        .image_query_id
        .clone();
    let damaged_file = base.join("writing").join(&lines[460].file_name);
    let mut bytes = fs::read(&damaged_file).expect("read");
    bytes.extend_from_slice(&[0; 300]);
    fs::write(&damaged_file, bytes).expect("NUL tail");
    for line in &lines[..5] {
        record_failure(
            &base,
            &mut rng,
            Some(&line.text),
            "HTTPException",
            "400: Bad Request",
        );
    }
    cache_request_id(&base, "req_uu_not_in_any_line");
    let expected: HashSet<String> = lines
        .iter()
        .map(|l| l.image_query_id.clone())
        .filter(|id| !consumed.contains(id))
        .collect();
    assert_eq!(expected.len(), 560);

    // How long one uninterrupted import of this queue takes, on a copy: kills are drawn
    // within the time the remaining work needs, so that they land inside runs.
    let calibration = Sandbox::new();
    copy_tree(&base, &legacy_dir(&calibration));
    let t0 = Instant::now();
    import(&calibration, &[]).expect_code(0);
    let full_ms = u64::try_from(t0.elapsed().as_millis()).expect("ms").max(10);
    // A run with nothing left to do: the start-up part of every run.
    let t1 = Instant::now();
    import(&calibration, &[]).expect_code(0);
    let startup_ms = u64::try_from(t1.elapsed().as_millis()).expect("ms");
    drop(calibration);

    let legacy = base.to_str().expect("utf-8").to_owned();
    let mut mid_run_kills = 0;
    let mut done = 0;
    let started = Instant::now();
    // Bounded: at most 4 runs per kill wanted.
    for _ in 0..kills * 4 {
        if mid_run_kills >= kills {
            break;
        }
        let left = expected.len() - done;
        let log_path = sandbox.root.path().join("import.log");
        let log = fs::File::create(&log_path).expect("log file");
        let mut child = sandbox
            .command(&["import-legacy", &legacy, "--log-level", LOG_EACH_LINE])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn");
        // Two kills in three after a random number of the lines left were imported (the
        // kill lands somewhere after that line: in an enqueue, between files, in a
        // removal); one in three at a random moment of the start-up.
        let (after_lines, after_ms) = match rng.below(3) {
            0 => (usize::MAX, startup_ms / 2 + rng.below(startup_ms * 2 + 1)),
            _ => (1 + rng.below(left.min(80) as u64) as usize, u64::MAX),
        };
        let t = Instant::now();
        let finished = loop {
            if child.try_wait().expect("try_wait").is_some() {
                break true;
            }
            let logged = fs::read_to_string(&log_path).unwrap_or_default();
            let lines_done = logged.matches(LINE_IMPORTED).count();
            let ms = u64::try_from(t.elapsed().as_millis()).expect("ms");
            if lines_done >= after_lines || ms >= after_ms || ms > 30_000 {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if !finished {
            child.kill().expect("SIGKILL");
        }
        child.wait().expect("reap");
        let logged = fs::read_to_string(&log_path).expect("log");
        let imported_here = logged.matches(LINE_IMPORTED).count();
        if !finished && imported_here > 0 {
            mid_run_kills += 1;
        }
        let now = pending(&sandbox);
        let twice: Vec<&String> = now
            .iter()
            .filter(|(_, (n, _))| *n > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(
            twice.is_empty(),
            "imported more than once after a kill: {twice:?}"
        );
        println!("killed after {imported_here} imported (target {after_lines} lines or {after_ms} ms); finished {finished}");
        done = now.len().max(done + imported_here).min(expected.len());
        if finished {
            break;
        }
    }
    let out = import(&sandbox, &[]);
    out.expect_code(0);
    println!(
        "full import {full_ms} ms (start-up {startup_ms} ms); {mid_run_kills} kills landed mid-import; {:?} in all; last run: {}",
        started.elapsed(),
        out.stdout
    );
    assert!(
        mid_run_kills >= 3,
        "too few kills landed mid-import ({mid_run_kills})"
    );

    let seen = pending(&sandbox);
    let ids: HashSet<String> = seen.keys().cloned().collect();
    let missing: Vec<&String> = expected.difference(&ids).collect();
    let extra: Vec<&String> = ids.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert!(
        seen.values().all(|(n, _)| *n == 1),
        "every line exactly once"
    );
    assert!(
        seen[&in_flight].1,
        "the in-flight line is possibly submitted"
    );
    assert_eq!(seen.values().filter(|(_, p)| *p).count(), 1);
    assert_eq!(dead_letters(&sandbox).len(), 5);
    assert_eq!(files_in(&base.join("writing")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("reading")), Vec::<String>::new());
    assert_eq!(files_in(&base.join("images")), Vec::<String>::new());
    let again = import(&sandbox, &[]).json();
    assert_eq!(again["imported"], 0, "{again:#}");
}
