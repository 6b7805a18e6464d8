//! The producer API of the root crate, as an edge-endpoint process uses it.

use escalation_queue::wal::Reader;
use escalation_queue::worker::WORKER_CURSOR;
use escalation_queue::{Escalation, EscalationQueue, ImageSource, QueueLayout, QueueOptions};

/// Story: edge-endpoint submits some escalations synchronously first and queues them only
/// when that call fails. If the call failed after the request went out, the cloud may
/// already have the image query; the producer says so through `possibly_submitted`, and
/// the flag must reach the reader unchanged (and stay `false` for everything else).
#[test]
fn possibly_submitted_set_by_the_producer_reaches_the_stored_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = EscalationQueue::open(dir.path()).expect("open");
    let image = || ImageSource::Inline(b"\xff\xd8\xff\xe0 jpeg".to_vec().into());
    let mut flagged = Escalation::new("det_1", image());
    flagged.possibly_submitted = true;
    let plain = Escalation::new("det_1", image());
    queue.enqueue(&flagged).expect("enqueue flagged");
    queue.enqueue(&plain).expect("enqueue plain");
    drop(queue);

    let wal_dir = QueueLayout::new(dir.path()).wal_dir();
    let mut reader = Reader::browse(
        &wal_dir,
        WORKER_CURSOR,
        &QueueOptions::default().wal_options(),
    )
    .expect("browse");
    let mut stored = Vec::new();
    while let Some(record) = reader.next().expect("read") {
        let esc = Escalation::decode(&record.payload).expect("decode");
        stored.push((esc.image_query_id, esc.possibly_submitted));
    }
    assert_eq!(
        stored,
        [
            (flagged.image_query_id, true),
            (plain.image_query_id, false)
        ]
    );
}
