//! Disk use when every escalation is enqueued by a process of its own (docs/OPERATIONS.md, "Disk use"): a shell
//! loop, a cron job or a service that spawns `escalation-queue enqueue` once per
//! escalation. Each process opens the queue, claims a lane, appends one record and exits.
//! Disk use must follow the data (plus at most one partly filled segment per lane in use),
//! never the number of processes.

mod util;

use std::path::Path;

use util::Sandbox;

/// Default allocation step of a segment file (`queue.allocation_step_bytes`).
const STEP: u64 = 4 << 20;
/// Default segment size (`queue.segment_bytes`).
const SEGMENT: u64 = 64 << 20;

fn enqueue(sandbox: &Sandbox, image: &Path, iq: &str) -> util::Outcome {
    sandbox.run(&[
        "enqueue",
        "--detector-id",
        "det_loop",
        "--image",
        image.to_str().expect("utf-8"),
        "--image-query-id",
        iq,
    ])
}

/// (segment files, their total length) in the queue's main wal.
fn segments(sandbox: &Sandbox) -> (usize, u64) {
    let mut count = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(sandbox.queue_dir().join("wal")).expect("wal dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            count += 1;
            bytes += entry.metadata().expect("stat").len();
        }
    }
    (count, bytes)
}

fn image(sandbox: &Sandbox, size: usize) -> std::path::PathBuf {
    let mut jpeg = b"\xff\xd8\xff\xe0".to_vec();
    jpeg.resize(size, b'j');
    sandbox.file("frame.jpg", &jpeg)
}

/// Story: 1,000 escalations, each enqueued by its own process, one after another. If this
/// fails, each process claims a fresh preallocated segment (64 MiB apiece: 3 records
/// showed as 192 MiB, and about 128 processes filled the default 8 GiB limit).
#[test]
fn a_thousand_sequential_one_enqueue_processes_use_the_data_plus_one_segment_step() {
    let sandbox = Sandbox::new();
    let image = image(&sandbox, 1024);
    for i in 0..1000 {
        enqueue(&sandbox, &image, &format!("iq_seq{i:05}")).expect_code(0);
    }
    let (count, bytes) = segments(&sandbox);
    // About 1.3 MB of records: one segment, allocated in one 4 MiB step.
    assert_eq!(count, 1, "one lane, one segment");
    assert_eq!(bytes, STEP, "the data plus at most one allocation step");
    assert!(bytes <= 1000 * 1024 + SEGMENT);

    let status = sandbox.status();
    assert_eq!(status["pending_total"], 1000, "{status}");
    assert_eq!(
        status["bytes_on_disk"]["wal_bytes"], bytes,
        "status counts what the segment files occupy: {status}"
    );
}

/// Story: eight writers run the same loop at once, 200 processes each, with the default
/// configuration and nothing consuming (a cloud outage). If this fails, the queue answers
/// "queue is full" while it holds a few MB.
#[test]
fn eight_concurrent_streams_of_200_one_enqueue_processes_never_see_queue_full() {
    let sandbox = Sandbox::new();
    let image = image(&sandbox, 2048);
    std::thread::scope(|s| {
        for stream in 0..8 {
            let (sandbox, image) = (&sandbox, &image);
            s.spawn(move || {
                for i in 0..200 {
                    let out = enqueue(sandbox, image, &format!("iq_s{stream}n{i:04}"));
                    assert_eq!(out.code, Some(0), "stream {stream}, process {i}: {out:#?}");
                }
            });
        }
    });
    let (count, bytes) = segments(&sandbox);
    assert!(count <= 8, "at most one segment per lane in use: {count}");
    assert!(
        bytes <= count as u64 * STEP,
        "{bytes} bytes in {count} segments: more than one step each"
    );
    let status = sandbox.status();
    assert_eq!(status["pending_total"], 1600, "{status}");
}
