//! A library reader configures path images in one place: `QueueOptions` (probe trust
//! report, "the client's image limits are separate from QueueOptions"). The worker loads
//! every image with the queue's own limits and hands the cloud client bytes, so a reader
//! that sets only `QueueOptions::images_dir` / `image_size_max_bytes` delivers what the
//! producers enqueued under the same options. Real wal files, a real worker, real HTTP to
//! the mock cloud on 127.0.0.1.

use std::path::Path;

use escalation_queue::{
    ApiToken, ClientConfig, Escalation, EscalationQueue, GroundlightClient, ImageSource, MockCloud,
    MockCloudConfig, QueueOptions, Worker, WorkerConfig,
};

const TOKEN: &str = "api_token_images_dir";

fn options(images_dir: &Path, image_size_max_bytes: usize) -> QueueOptions {
    QueueOptions {
        image_size_max_bytes,
        segment_bytes: 64 << 20,
        free_disk_bytes_min: 0,
        images_dir: Some(images_dir.to_path_buf()),
        ..QueueOptions::default()
    }
}

/// A client as a library user builds it: nothing about images in it.
fn client(cloud: &MockCloud) -> GroundlightClient {
    let mut config = ClientConfig::new(ApiToken::new(TOKEN).expect("token"));
    config.endpoint = cloud.endpoint();
    config.connect_timeout_first_ms = 2_000;
    config.connect_timeout_retry_ms = 2_000;
    config.read_timeout_ms = 10_000;
    GroundlightClient::new(config).expect("client")
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        idle_poll_ms: 10,
        jitter_seed: Some(3),
        ..WorkerConfig::default()
    }
}

fn image(len: usize) -> Vec<u8> {
    let mut bytes = b"\xff\xd8\xff\xe0".to_vec();
    bytes.extend((0..len.saturating_sub(4)).map(|i| (i % 251) as u8));
    bytes
}

/// Story: an edge-endpoint keeps its images on disk and enqueues their paths (the Python
/// layout). Its reader process opens the worker with the same `QueueOptions` (only
/// `images_dir` set, as the docs say) and a plain `ClientConfig`. Every path image is
/// delivered with its exact bytes; before the fix the client's separate, default limits
/// knew no images directory and every one was dead-lettered ("no images directory is
/// configured").
#[test]
fn a_path_image_is_delivered_when_only_queue_options_name_the_images_dir() {
    let queue_dir = tempfile::tempdir().expect("queue dir");
    let images = tempfile::tempdir().expect("images dir");
    let images_dir = images.path().canonicalize().expect("canonical images dir");
    let options = options(&images_dir, 1 << 20);
    let bytes = image(10_000);
    let path = images_dir.join("frame-1.jpg");
    std::fs::write(&path, &bytes).expect("write image");

    let queue = EscalationQueue::open_with(queue_dir.path(), options.clone()).expect("open");
    let receipt = queue
        .enqueue(&Escalation::new("det_1", ImageSource::Path(path)))
        .expect("enqueue a path image under the images dir");
    drop(queue);

    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let mut worker = Worker::open(queue_dir.path(), &options, worker_config()).expect("worker");
    let summary = worker.drain(&client(&cloud)).expect("drain");
    assert_eq!(
        (summary.delivered, summary.dead_lettered),
        (1, 0),
        "{summary:?}"
    );
    assert_eq!(cloud.image_query_ids(), [receipt.image_query_id]);
    let sent = cloud.requests();
    let posted = sent.iter().find(|r| r.method == "POST").expect("a POST");
    assert_eq!(posted.body_len_bytes, bytes.len());
    assert_eq!(posted.body_crc32c, crc32c::crc32c(&bytes));
}

/// Story: a queue configured for images larger than the 16 MiB default
/// (`QueueOptions::image_size_max_bytes` only) delivers them, inline or on disk: the size
/// bound the reader applies is the queue's, not a second default inside the client (which
/// dead-lettered both as "image is too large" before the fix).
#[test]
fn images_above_the_default_limit_are_delivered_when_the_queue_allows_them() {
    let queue_dir = tempfile::tempdir().expect("queue dir");
    let images = tempfile::tempdir().expect("images dir");
    let images_dir = images.path().canonicalize().expect("canonical images dir");
    let options = options(&images_dir, 20 << 20);
    let bytes = image((16 << 20) + 1);
    let path = images_dir.join("big.jpg");
    std::fs::write(&path, &bytes).expect("write image");

    let queue = EscalationQueue::open_with(queue_dir.path(), options.clone()).expect("open");
    let inline = ImageSource::Inline(bytes.clone().into());
    queue
        .enqueue(&Escalation::new("det_1", inline))
        .expect("enqueue inline");
    queue
        .enqueue(&Escalation::new("det_1", ImageSource::Path(path)))
        .expect("enqueue path");
    drop(queue);

    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let mut worker = Worker::open(queue_dir.path(), &options, worker_config()).expect("worker");
    let summary = worker.drain(&client(&cloud)).expect("drain");
    assert_eq!(
        (summary.delivered, summary.dead_lettered),
        (2, 0),
        "{summary:?}"
    );
    let posts: Vec<_> = cloud
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.body_len_bytes)
        .collect();
    assert_eq!(posts, [bytes.len(), bytes.len()]);
}
