//! Helpers shared by the worker crate's test binaries: a mock cloud, a client with short
//! timeouts and fully populated escalations for the delivery tests (`client_request.rs`,
//! `failure_classification.rs`); a queue directory with small options, a worker
//! configuration with millisecond backoff so that tests are fast, and a worker run in a
//! thread for the worker behaviour tests (`worker_*.rs`).

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use escalation_queue_producer::EscalationQueue;
use escalation_queue_worker::{
    ApiToken, AttemptContext, BackoffConfig, BreakerConfig, Classification, ClassificationPolicy,
    ClientConfig, DeadLetterQueue, Delivered, DeliveryError, Destination, Error, Escalation,
    GroundlightClient, HumanReview, ImageSource, IncidentConfig, Incidents, Metadata, MockCloud,
    MockCloudConfig, QueueOptions, RunSummary, Stats, StopHandle, Worker, WorkerConfig,
};

/// The API token of the mock cloud and of every client here.
pub const TOKEN: &str = "api_2testtoken";
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really-a-png";
pub const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF-not-really-a-jpeg";

pub fn start_mock() -> MockCloud {
    MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud starts")
}

/// A client of `endpoint` with [`TOKEN`] and short timeouts, so failures show up quickly.
pub fn client(endpoint: &str) -> GroundlightClient {
    let mut config = ClientConfig::new(ApiToken::new(TOKEN).expect("token"));
    config.endpoint = endpoint.to_owned();
    config.connect_timeout_first_ms = 300;
    config.connect_timeout_retry_ms = 300;
    config.read_timeout_ms = 300;
    GroundlightClient::new(config).expect("client")
}

// ---------------------------------------------------------------------------------------
// Delivery tests: one request, its classification
// ---------------------------------------------------------------------------------------

/// A fully populated escalation (every optional field set) with a PNG image.
pub fn escalation() -> Escalation {
    let mut esc = Escalation::new(
        "det_2testdetector",
        ImageSource::Inline(Bytes::from_static(PNG)),
    );
    esc.patience_time_s = Some(30.0);
    esc.confidence_threshold = Some(0.75);
    esc.human_review = Some(HumanReview::Never);
    esc.metadata = Some(
        Metadata::from_json_str(
            r#"{"is_edge_audit": true, "edge_result": {"label": "YES", "confidence": 0.5}}"#,
        )
        .expect("metadata"),
    );
    esc
}

pub fn submit(
    client: &GroundlightClient,
    esc: &Escalation,
    attempt: u32,
) -> Result<Delivered, DeliveryError> {
    client.submit(esc, AttemptContext::new(attempt))
}

pub fn classify(
    result: &Result<Delivered, DeliveryError>,
    previous_response_lost: bool,
) -> Classification {
    ClassificationPolicy::default().classify(result, previous_response_lost)
}

// ---------------------------------------------------------------------------------------
// Worker behaviour tests: a queue, a worker draining or running it
// ---------------------------------------------------------------------------------------

/// A queue directory, a mock cloud, a client and a writer handle.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub mock: MockCloud,
    pub client: Arc<GroundlightClient>,
    pub queue: EscalationQueue,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_mock(MockCloudConfig::new(TOKEN))
    }

    /// A harness whose mock cloud answers 400 to every submission for `detector`.
    pub fn rejecting(detector: &str) -> Self {
        let mut config = MockCloudConfig::new(TOKEN);
        config.rejected_detectors = vec![detector.to_owned()];
        Self::with_mock(config)
    }

    fn with_mock(config: MockCloudConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockCloud::start(config).expect("mock cloud");
        let client = Arc::new(client(&mock.endpoint()));
        let queue = EscalationQueue::open_with(dir.path().join("queue"), options()).expect("queue");
        Self {
            dir,
            mock,
            client,
            queue,
        }
    }

    /// The queue directory (created by the queue, so mode 0700).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// Enqueues `n` fresh escalations; returns them in order.
    pub fn enqueue(&self, n: usize) -> Vec<Escalation> {
        (0..n)
            .map(|_| {
                let esc = minimal_escalation();
                self.queue.enqueue(&esc).expect("enqueue");
                esc
            })
            .collect()
    }

    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::open(self.root(), &options(), config).expect("worker")
    }

    /// Opens a worker and drains the queue with it.
    pub fn drain(&self, config: WorkerConfig) -> (RunSummary, Arc<Stats>, Arc<Incidents>) {
        let mut worker = self.worker(config);
        let summary = worker.drain(self.client.as_ref()).expect("drain");
        (summary, worker.stats(), worker.incidents())
    }

    /// Starts `worker.run` in a thread.
    pub fn spawn(&self, config: WorkerConfig) -> Running {
        let mut worker = self.worker(config);
        let stop = worker.stop_handle();
        let stats = worker.stats();
        let incidents = worker.incidents();
        let client = Arc::clone(&self.client);
        let thread = std::thread::spawn(move || worker.run(client.as_ref()));
        Running {
            stop,
            stats,
            incidents,
            thread,
        }
    }

    pub fn dead_letters(&self) -> DeadLetterQueue {
        DeadLetterQueue::open(self.root(), options()).expect("dead letters")
    }
}

/// A worker running in a thread.
pub struct Running {
    pub stop: StopHandle,
    pub stats: Arc<Stats>,
    pub incidents: Arc<Incidents>,
    pub thread: JoinHandle<Result<RunSummary, Error>>,
}

impl Running {
    /// Waits until `done(stats)` holds (panics after `timeout`).
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.stats) {
            assert!(
                Instant::now() < deadline,
                "timed out; stats: {:?}",
                self.stats.snapshot()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(self) -> RunSummary {
        self.stop.stop();
        self.thread.join().expect("worker thread").expect("run")
    }

    /// Stops the worker; panics unless `run` returned within `bound` (a stop must not wait
    /// for a backoff or a request in progress to end).
    pub fn stop_within(self, bound: Duration) -> RunSummary {
        let started = Instant::now();
        let summary = self.stop();
        let took = started.elapsed();
        assert!(took < bound, "the stop took {took:?}");
        summary
    }
}

/// The images directory of the harness: path images in these tests name missing files
/// below it (the directory does not exist either).
pub const IMAGES_DIR: &str = "/nonexistent";

/// Small segments so tests touch little disk; path images allowed below [`IMAGES_DIR`].
pub fn options() -> QueueOptions {
    QueueOptions {
        image_size_max_bytes: 256 << 10,
        segment_bytes: 1 << 20,
        free_disk_bytes_min: 0,
        images_dir: Some(IMAGES_DIR.into()),
        ..QueueOptions::default()
    }
}

/// Millisecond backoff and breaker timings.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        backoff: BackoffConfig {
            delay_base_ms: 2,
            delay_max_ms: 20,
            retry_after_max_ms: 5_000,
        },
        breaker: BreakerConfig {
            failure_threshold: 5,
            cool_down_base_ms: 20,
            cool_down_max_ms: 80,
        },
        auth_retry_interval_ms: 50,
        idle_poll_ms: 5,
        maintenance_interval_ms: 20,
        dead_letter_retry_ms: 20,
        jitter_seed: Some(7),
        incidents: IncidentConfig::default(),
        ..WorkerConfig::default()
    }
}

/// A minimal escalation (detector `det_2workertests`, a JPEG image, nothing optional).
pub fn minimal_escalation() -> Escalation {
    Escalation::new("det_2workertests", ImageSource::Inline(JPEG.into()))
}

/// Milliseconds between consecutive requests the mock received.
pub fn request_gaps_ms(mock: &MockCloud) -> Vec<u64> {
    let times: Vec<_> = mock.requests().iter().map(|r| r.received_at).collect();
    times
        .windows(2)
        .map(|w| {
            w[1].duration_since(w[0])
                .unwrap_or_default()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX)
        })
        .collect()
}

/// Flips a byte inside the record holding `image_query_id` in the queue's segment, so the
/// reader finds a checksum mismatch there (and only there).
pub fn damage_record(queue_root: &std::path::Path, image_query_id: &str) {
    let segment = std::fs::read_dir(queue_root.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let needle = image_query_id.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record in the segment");
    bytes[at + 5] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("damage");
}
