//! Hostile and broken input reaching the real reader binary: records whose image path points
//! at files the reader must never upload (probe F6), 2xx answers naming another image query
//! (probe F16), writer clocks that are wrong (probe F11), patience values no cloud means
//! (probe F27). Each test writes the queue the way a producer does (the library, in this
//! process), runs `escalation-queue drain` as a separate process against a mock cloud on
//! 127.0.0.1, and checks what the cloud received, the exit code and the dead letters.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use escalation_queue::{
    Escalation, EscalationQueue, ImageSource, MockCloud, MockCloudConfig, QueueOptions,
};
use serde_json::Value;
use util::{Outcome, Sandbox, TOKEN};

const JPEG: &[u8] = b"\xff\xd8\xff\xe0 a legitimate image in the images directory";

/// A producer's queue handle with `images_dir`: `/` plays a writer that records any path.
fn writer(sandbox: &Sandbox, images_dir: Option<&Path>) -> EscalationQueue {
    let options = QueueOptions {
        images_dir: images_dir.map(Path::to_path_buf),
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    };
    EscalationQueue::open_with(sandbox.queue_dir(), options).expect("open the queue")
}

/// Appends a record naming `path` straight to the wal, as a writer that skips validation
/// would (no writer accepts a `..` component): the record is encoded with `XX` in place
/// of `..`, and the bytes are patched.
fn forge_dotdot_record(sandbox: &Sandbox, path_with_xx: &Path) -> String {
    let esc = path_escalation(path_with_xx);
    let limits = QueueOptions {
        images_dir: Some("/".into()),
        ..QueueOptions::default()
    };
    let mut record = esc.encode(&limits.record_limits()).expect("encode");
    let at = record
        .windows(4)
        .position(|w| w == b"/XX/")
        .expect("the XX component");
    record[at + 1..at + 3].copy_from_slice(b"..");
    let wal =
        escalation_queue::wal::Writer::open(sandbox.queue_dir().join("wal"), &limits.wal_options())
            .expect("raw writer");
    wal.append(&record).expect("append");
    esc.image_query_id
}

fn path_escalation(path: &Path) -> Escalation {
    Escalation::new("det_hostile", ImageSource::Path(path.to_path_buf()))
}

/// `drain` against `endpoint` with the shared token, plus `extra` flags.
fn drain(sandbox: &Sandbox, endpoint: &str, extra: &[&str]) -> Outcome {
    let mut args = vec!["drain", "--endpoint", endpoint];
    args.extend_from_slice(extra);
    let mut cmd = sandbox.command(&args);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    sandbox.run_with(cmd, None)
}

/// `dlq list --json`, by image query id: (error class, error).
fn dead_letters(sandbox: &Sandbox) -> Vec<(String, String, String)> {
    let out = sandbox.run(&["dlq", "list", "--json"]);
    out.expect_code(0);
    let list = out.json();
    list.as_array()
        .expect("array")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("image_query_id"), s("error_class"), s("error"))
        })
        .collect()
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .expect("mkfifo");
}

/// Story (probe F6): the reader opened whatever absolute path a record named, with its own
/// privileges, and POSTed the bytes: `/proc/self/environ` (holding the API token) and
/// `/etc/shadow` were "delivered". Now the reader trusts no path a writer recorded: it
/// loads path images only below `queue.images_dir`, component by component without
/// following links, regular single-link files only. Here a writer that records anything
/// (its own images directory is `/`) enqueues eight escapes, a forged record adds a `..` one, and one good image; the reader
/// uploads the good image only, dead-letters the rest with a reason naming the rule, and
/// exits 1. The cloud never sees the bytes of any file outside the images directory.
#[test]
fn the_reader_uploads_no_file_outside_the_images_directory() {
    let sandbox = Sandbox::new();
    let root = sandbox.root.path();
    let images = root.join("images");
    std::fs::create_dir(&images).expect("mkdir images");
    let secret = root.join("secret.jpg");
    std::fs::write(
        &secret,
        b"\xff\xd8\xff\xe0 SECRET outside the images directory",
    )
    .expect("secret");
    std::fs::write(images.join("ok.jpg"), JPEG).expect("image");
    std::os::unix::fs::symlink(&secret, images.join("link.jpg")).expect("symlink");
    std::os::unix::fs::symlink(root, images.join("linkdir")).expect("symlink");
    std::os::unix::fs::symlink("/proc/self/environ", images.join("environ.jpg")).expect("symlink");
    std::fs::hard_link(&secret, images.join("hard.jpg")).expect("hard link");
    std::fs::create_dir(images.join("dir.jpg")).expect("mkdir");
    mkfifo(&images.join("fifo.jpg"));

    let hostile: Vec<(PathBuf, &str)> = vec![
        ("/proc/self/environ".into(), "image_path_refused"),
        ("/etc/shadow".into(), "image_path_refused"),
        (images.join("link.jpg"), "symbolic link"),
        (images.join("environ.jpg"), "symbolic link"),
        (images.join("linkdir/secret.jpg"), "symbolic link"),
        (images.join("hard.jpg"), "hard links"),
        (images.join("dir.jpg"), "a directory"),
        (images.join("fifo.jpg"), "a FIFO"),
    ];
    let queue = writer(&sandbox, Some(Path::new("/")));
    let mut expected = Vec::new();
    for (path, why) in &hostile {
        let receipt = queue.enqueue(&path_escalation(path)).expect("enqueue");
        expected.push((receipt.image_query_id, *why));
    }
    let good = queue
        .enqueue(&path_escalation(&images.join("ok.jpg")))
        .expect("enqueue");
    drop(queue);
    let dotdot = forge_dotdot_record(&sandbox, &images.join("XX/secret.jpg"));
    expected.push((dotdot, "image_path_refused"));

    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let images_flag = format!("queue.images_dir={}", images.display());
    let out = drain(&sandbox, &cloud.endpoint(), &["--set", &images_flag]);
    out.expect_code(1)
        .expect_stderr(&["9 escalations dead-lettered"]);

    let requests = cloud.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the good image is sent: {requests:#?}"
    );
    assert_eq!(
        requests[0].param("image_query_id"),
        Some(good.image_query_id.as_str())
    );
    assert_eq!(requests[0].body_len_bytes, JPEG.len());
    assert!(JPEG.starts_with(&requests[0].body_prefix));
    for r in &requests {
        let prefix = String::from_utf8_lossy(&r.body_prefix);
        assert!(
            !prefix.contains("SECRET") && !prefix.contains(TOKEN),
            "{prefix}"
        );
    }
    let letters = dead_letters(&sandbox);
    assert_eq!(letters.len(), expected.len(), "{letters:#?}");
    for (id, why) in &expected {
        let (_, class, error) = letters
            .iter()
            .find(|(i, _, _)| i == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:#?}"));
        assert!(
            class == why || error.contains(why),
            "{id}: expected {why:?}, got {class}: {error}"
        );
    }
}

/// Story (probe F6): with no images directory configured path images are off. A producer
/// is told so at enqueue (nothing is written), and a record written by a writer that was
/// configured differently is refused by the reader too, before any file is opened.
#[test]
fn without_an_images_directory_path_images_are_refused_at_enqueue_and_by_the_reader() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("image.jpg", JPEG);
    let err = writer(&sandbox, None)
        .enqueue(&path_escalation(&image))
        .expect_err("path images are off");
    assert!(err.to_string().contains("queue.images_dir"), "{err}");

    let receipt = writer(&sandbox, Some(sandbox.root.path()))
        .enqueue(&path_escalation(&image))
        .expect("a writer with an images directory");
    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    drain(&sandbox, &cloud.endpoint(), &[]).expect_code(1);
    assert!(cloud.requests().is_empty(), "{:#?}", cloud.requests());
    let letters = dead_letters(&sandbox);
    assert_eq!(letters.len(), 1);
    let (id, class, error) = &letters[0];
    assert_eq!(id, &receipt.image_query_id);
    assert_eq!(class, "image_path_refused");
    assert!(
        error.contains("no images directory is configured"),
        "{error}"
    );
}

/// A one-shot cloud on 127.0.0.1 answering every POST with `201` and `body`; returns its
/// endpoint. The thread ends when the test process does (the listener is never closed
/// early; each connection is answered and closed).
fn cloud_answering(body: &'static str) -> String {
    cloud_answering_with("201 Created", body)
}

/// Like [`cloud_answering`], with the status line `status`.
fn cloud_answering_with(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut length = 0_usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body_in = vec![0; length];
            let _ = reader.read_exact(&mut body_in);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/device-api")
}

/// Story (probe F16): a 2xx whose ImageQuery id differed from the one sent, or was `""`,
/// counted as delivered, so a misrouting proxy or a broken gateway silently emptied the
/// queue. Through the real binary: both answers dead-letter the item as
/// `wrong_image_query` (kept for an operator, replayable), and drain exits 1.
#[test]
fn a_success_naming_another_or_no_image_query_is_dead_lettered_not_delivered() {
    for body in [r#"{"id":"iq_SOMETHING_ELSE"}"#, r#"{"id":""}"#] {
        let sandbox = Sandbox::new();
        let ids = sandbox.enqueue_many(2);
        let out = drain(&sandbox, &cloud_answering(body), &[]);
        out.expect_code(1);
        assert!(
            out.stdout.contains("0 delivered, 2 dead-lettered"),
            "{body}: {out:#?}"
        );
        let letters = dead_letters(&sandbox);
        let mut got: Vec<_> = letters.iter().map(|(id, _, _)| id.clone()).collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "{body}");
        assert!(
            letters
                .iter()
                .all(|(_, class, _)| class == "wrong_image_query"),
            "{body}: {letters:#?}"
        );
        let status: Value = sandbox.status();
        assert_eq!(status["pending_total"], 0, "{status}");
    }
}

/// Enqueues `n` escalations stamped `enqueued_at_unix_ms` (a writer's clock), like a
/// producer on a box whose clock is wrong.
fn enqueue_stamped(sandbox: &Sandbox, n: usize, enqueued_at_unix_ms: u64) -> Vec<String> {
    let queue = writer(sandbox, None);
    (0..n)
        .map(|i| {
            let image = format!("\u{ff}image {i}").into_bytes();
            let mut esc = Escalation::new("det_clock", ImageSource::Inline(image.into()));
            esc.enqueued_at_unix_ms = enqueued_at_unix_ms;
            queue.enqueue(&esc).expect("enqueue").image_query_id
        })
        .collect()
}

/// Story (probe F11): escalations enqueued before an edge box had set its clock carry a
/// 1970 stamp; the reader dropped them at once as expired (age 56 years) and `drain`
/// exited 0. Now a stamp before 2025 is not believed: the age counts from when the reader
/// took the item, and the three are delivered.
#[test]
fn escalations_stamped_in_1970_are_delivered_not_expired() {
    let sandbox = Sandbox::new();
    let ids = enqueue_stamped(&sandbox, 3, 60_000);
    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let out = drain(&sandbox, &cloud.endpoint(), &[]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("3 delivered, 0 dead-lettered, 0 expired"),
        "{out:#?}"
    );
    let mut sent = cloud.image_query_ids();
    sent.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(sent, want);
}

/// Story (probe F11): a stamp 30 days ahead made an item's age 0 for 30 days: it would
/// outlive the retention age (a security requirement). Now it ages from when the reader
/// took it: with a 300 ms retention and a cloud that answers 503, it expires, and `drain`
/// says so and exits 1 (it exited 0 for dropped items).
#[test]
fn a_far_future_stamp_still_expires_and_drain_exits_1() {
    let sandbox = Sandbox::new();
    let thirty_days_ahead = u64::try_from(
        (std::time::SystemTime::now() + Duration::from_secs(30 * 86_400))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    enqueue_stamped(&sandbox, 1, thirty_days_ahead);
    let endpoint = cloud_answering_with("503 Service Unavailable", "{}");
    let out = drain(&sandbox, &endpoint, &["--set", "worker.retention_ms=300"]);
    out.expect_code(1)
        .expect_stderr(&["1 escalation expired undelivered"]);
    assert!(
        out.stdout
            .contains("0 delivered, 0 dead-lettered, 1 expired"),
        "{out:#?}"
    );
    let incidents =
        std::fs::read_to_string(sandbox.queue_dir().join("incidents.jsonl")).expect("incidents");
    assert!(incidents.contains(r#""kind":"expired""#), "{incidents}");
}

/// Story (probe F27): `--patience-time 1e308` and `1e-320` were accepted and sent to the
/// cloud as `patience_time`. Each is refused with exit 2, naming the field and the range,
/// and nothing is enqueued; `0` and `30` are still accepted.
#[test]
fn absurd_patience_times_are_refused_at_enqueue() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("img.jpg", JPEG);
    let image = image.to_str().expect("utf-8");
    for bad in ["1e308", "1e-320", "0.0001", "40000000"] {
        let flag = format!("--patience-time={bad}");
        sandbox
            .run(&["enqueue", "--detector-id", "det_1", "--image", image, &flag])
            .expect_code(2)
            .expect_stderr(&["patience_time", "365 days"]);
    }
    for ok in ["0", "30"] {
        let flag = format!("--patience-time={ok}");
        sandbox
            .run(&["enqueue", "--detector-id", "det_1", "--image", image, &flag])
            .expect_code(0);
    }
    // Only the two accepted ones are in the queue.
    assert_eq!(sandbox.status()["pending_total"], 2);
}

/// Story (probe F27): a reused `--request-id` made the later escalation a silent duplicate
/// (an INFO line), even with another image and detector. Request-id dedupe stays (it
/// suppresses an SDK retry of one edge request, docs/SEMANTICS.md §6), but the skip is a WARN naming
/// both ids and the rule, and the drain summary counts it.
#[test]
fn a_reused_request_id_is_skipped_with_a_warning_not_silently() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("img.jpg", JPEG);
    let image = image.to_str().expect("utf-8");
    for detector in ["det_first", "det_second"] {
        sandbox
            .run(&[
                "enqueue",
                "--detector-id",
                detector,
                "--image",
                image,
                "--request-id",
                "req_reused",
            ])
            .expect_code(0);
    }
    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let out = drain(&sandbox, &cloud.endpoint(), &[]);
    out.expect_code(0).expect_stderr(&[
        "WARN",
        "req_reused",
        "det_second",
        "request ids must be unique",
    ]);
    assert!(
        out.stdout.contains("1 delivered") && out.stdout.contains("1 duplicate"),
        "{out:#?}"
    );
    assert_eq!(cloud.requests().len(), 1);
}
