//! `escalation_queue._native`: the Rust half of the Python package `escalation_queue`.
//!
//! It wraps the producer crate only ([`escalation_queue_producer`]): the writer handle
//! (`Queue`), a read-only listing of pending records and of dead letters. The Python half
//! (`python/escalation_queue/`) turns [`NativeError`] into one exception class per
//! [`ErrorKind`], and holds the public API, its docstrings and its type stubs.
//!
//! Every error raised here is `NativeError(kind, message, retryable)`, with `kind` derived
//! from `err.kind()` alone ([`kind_name`]) and `message` from `err.to_string()`: the
//! producer's error variants may change, its kinds are the contract.

mod dead_letter;

use std::path::PathBuf;
use std::sync::RwLock;

use escalation_queue_producer::wal::{ErrorKind as WalKind, Reader};
use escalation_queue_producer::{
    Error, ErrorKind, Escalation, EscalationQueue, HumanReview, ImageSource, Metadata, QueueLayout,
    QueueOptions, WORKER_CURSOR,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    NativeError,
    PyException,
    "An error of the Rust queue: args are (kind, message, retryable)."
);

/// The stable name of an error kind, as the Python layer maps it to an exception class.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Invalid => "invalid",
        ErrorKind::Encode => "encode",
        ErrorKind::Config => "config",
        ErrorKind::Locked => "locked",
        ErrorKind::Io => "io",
        ErrorKind::Malformed => "malformed",
        ErrorKind::Wal(wal) => match wal {
            WalKind::Io { sync: false } => "wal.io",
            WalKind::Io { sync: true } => "wal.sync",
            WalKind::NotRegularFile => "wal.not_regular_file",
            WalKind::Poisoned => "wal.poisoned",
            WalKind::Closed => "wal.closed",
            WalKind::QueueFull => "wal.queue_full",
            WalKind::NoSpace => "wal.no_space",
            WalKind::SegmentIdsExhausted => "wal.segment_ids_exhausted",
            WalKind::InvalidRecord => "wal.invalid_record",
            WalKind::Locked => "wal.locked",
            WalKind::Config => "wal.config",
            WalKind::Misuse => "wal.misuse",
            WalKind::CheckpointDeferred => "wal.checkpoint_deferred",
            WalKind::Corruption => "wal.corruption",
            _ => "wal.unknown",
        },
        _ => "unknown",
    }
}

/// `NativeError` for a producer error: kind and retryability from `kind()`, the message
/// from `Display`.
fn raise(err: &Error) -> PyErr {
    let kind = err.kind();
    NativeError::new_err((kind_name(kind), err.to_string(), kind.is_retryable()))
}

/// `NativeError` of kind `invalid` for an argument the producer's types refuse before
/// validation (metadata that is not a JSON object, an unknown `human_review`).
fn invalid(message: String) -> PyErr {
    NativeError::new_err(("invalid", format!("escalation rejected: {message}"), false))
}

/// The options a queue directory is read with: the defaults but for the image limit and
/// the segment size, which every process opening it must agree on.
fn options(image_size_max_bytes: Option<usize>, segment_bytes: Option<u64>) -> QueueOptions {
    let d = QueueOptions::default();
    QueueOptions {
        image_size_max_bytes: image_size_max_bytes.unwrap_or(d.image_size_max_bytes),
        segment_bytes: segment_bytes.unwrap_or(d.segment_bytes),
        ..d
    }
}

/// A writer handle (one lane), shared by every Python thread that holds it.
///
/// The handle remembers the process that opened it: in a `fork()`ed child every call fails
/// with kind `forked`, and dropping it there leaks the Rust handle instead of closing files
/// and locks the parent still uses.
#[pyclass(frozen, module = "escalation_queue._native")]
struct Queue {
    queue: RwLock<Option<EscalationQueue>>,
    pid: u32,
    queue_dir: PathBuf,
    options: QueueOptions,
}

impl Queue {
    fn check_pid(&self) -> PyResult<()> {
        let now = std::process::id();
        match now == self.pid {
            true => Ok(()),
            false => Err(NativeError::new_err((
                "forked",
                format!(
                    "this EscalationQueue was opened by process {} and cannot be used in process {now} (a fork() child): open a new EscalationQueue in the child",
                    self.pid
                ),
                false,
            ))),
        }
    }

    fn handle(&self) -> PyResult<EscalationQueue> {
        self.check_pid()?;
        let guard = self.queue.read().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or_else(|| {
            NativeError::new_err((
                "wal.closed",
                format!(
                    "the queue handle for {} is closed; open a new EscalationQueue",
                    self.queue_dir.display()
                ),
                false,
            ))
        })
    }
}

#[pymethods]
impl Queue {
    #[new]
    #[pyo3(signature = (queue_dir, image_size_max_bytes=None, queue_bytes_max=None, free_disk_bytes_min=None, lanes_max=None, segment_bytes=None, allocation_step_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        queue_dir: PathBuf,
        image_size_max_bytes: Option<usize>,
        queue_bytes_max: Option<u64>,
        free_disk_bytes_min: Option<u64>,
        lanes_max: Option<u16>,
        segment_bytes: Option<u64>,
        allocation_step_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let d = options(image_size_max_bytes, segment_bytes);
        let options = QueueOptions {
            queue_bytes_max: queue_bytes_max.unwrap_or(d.queue_bytes_max),
            free_disk_bytes_min: free_disk_bytes_min.unwrap_or(d.free_disk_bytes_min),
            lanes_max: lanes_max.unwrap_or(d.lanes_max),
            allocation_step_bytes: allocation_step_bytes.unwrap_or(d.allocation_step_bytes),
            ..d
        };
        let opened = options.clone();
        let dir = queue_dir.clone();
        let queue = py
            .detach(move || EscalationQueue::open_with(dir, opened))
            .map_err(|e| raise(&e))?;
        Ok(Self {
            queue: RwLock::new(Some(queue)),
            pid: std::process::id(),
            queue_dir,
            options,
        })
    }

    /// Appends one escalation; returns `(lane, seq, image_query_id, request_id,
    /// record_len_bytes)` once it is durable. The GIL is released for the append and its
    /// sync, so concurrent threads share one `fdatasync` (group commit).
    #[pyo3(signature = (detector_id, image, image_query_id=None, request_id=None, patience_time=None, confidence_threshold=None, human_review=None, metadata_json=None, possibly_submitted=false, enqueued_at_unix_ms=None))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        py: Python<'_>,
        detector_id: String,
        image: &[u8],
        image_query_id: Option<String>,
        request_id: Option<String>,
        patience_time: Option<f64>,
        confidence_threshold: Option<f64>,
        human_review: Option<&str>,
        metadata_json: Option<&str>,
        possibly_submitted: bool,
        enqueued_at_unix_ms: Option<u64>,
    ) -> PyResult<(u16, u64, String, String, usize)> {
        let queue = self.handle()?;
        let mut esc = Escalation::new(detector_id, ImageSource::Inline(image.to_vec().into()));
        if let Some(id) = image_query_id {
            esc.image_query_id = id;
        }
        if let Some(id) = request_id {
            esc.request_id = id;
        }
        esc.patience_time_s = patience_time;
        esc.confidence_threshold = confidence_threshold;
        esc.human_review = human_review
            .map(str::parse::<HumanReview>)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        esc.metadata = metadata_json
            .map(Metadata::from_json_str)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        esc.possibly_submitted = possibly_submitted;
        if let Some(at) = enqueued_at_unix_ms {
            esc.enqueued_at_unix_ms = at;
        }
        let receipt = py
            .detach(move || queue.enqueue(&esc))
            .map_err(|e| raise(&e))?;
        Ok((
            receipt.lane,
            receipt.seq,
            receipt.image_query_id,
            receipt.request_id,
            receipt.record_len_bytes,
        ))
    }

    /// Releases this handle's lane (once enqueues already running have returned). Later
    /// calls fail with kind `wal.closed`; closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.check_pid()?;
        let taken = self.queue.write().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(taken));
        Ok(())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.queue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The lane this handle appends to.
    #[getter]
    fn lane(&self) -> PyResult<u16> {
        Ok(self.handle()?.lane())
    }

    /// The queue directory.
    #[getter]
    fn queue_dir(&self) -> PathBuf {
        self.queue_dir.clone()
    }

    /// The process id that opened the handle.
    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Pending records as JSON (see [`pending`]), with this handle's options.
    #[pyo3(signature = (limit=0))]
    fn pending(&self, py: Python<'_>, limit: usize) -> PyResult<String> {
        self.check_pid()?;
        let (dir, options) = (self.queue_dir.clone(), self.options.clone());
        py.detach(move || pending_json(&dir, &options, limit))
            .map_err(|e| raise(&e))
    }

    /// Dead letters as JSON (see [`dead_letters`]), with this handle's options.
    fn dead_letters(&self, py: Python<'_>, retention_ms: u64) -> PyResult<String> {
        self.check_pid()?;
        let (dir, options) = (self.queue_dir.clone(), self.options.clone());
        py.detach(move || dead_letter::list_json(&dir, &options, retention_ms))
            .map_err(|e| raise(&e))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A fork() child: the files and locks are the parent's; touch nothing.
            let queue = self
                .queue
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            std::mem::forget(queue);
        }
    }
}

/// One pending record, as `pending()` lists it.
#[derive(serde::Serialize)]
struct PendingView {
    lane: u16,
    seq: u64,
    wal_time_unix_ms: u64,
    size_bytes: usize,
    detector_id: Option<String>,
    image_query_id: Option<String>,
    request_id: Option<String>,
    image_size_bytes: Option<usize>,
    patience_time: Option<f64>,
    confidence_threshold: Option<f64>,
    human_review: Option<&'static str>,
    metadata: Option<serde_json::Value>,
    possibly_submitted: Option<bool>,
    enqueued_at_unix_ms: Option<u64>,
    decode_error: Option<String>,
}

/// Pending (not yet delivered) records of the main wal, oldest first per lane, as a JSON
/// array; `limit` 0 lists all. Read-only: it takes no lock and consumes nothing.
fn pending_json(
    dir: &std::path::Path,
    options: &QueueOptions,
    limit: usize,
) -> Result<String, Error> {
    let wal_dir = QueueLayout::new(dir).wal_dir();
    let mut out = Vec::new();
    if wal_dir.is_dir() {
        let mut reader = Reader::browse(&wal_dir, WORKER_CURSOR, &options.wal_options())?;
        while let Some(record) = reader.next()? {
            if limit != 0 && out.len() == limit {
                break;
            }
            let mut view = PendingView {
                lane: record.id.lane.0,
                seq: record.id.seq.0,
                wal_time_unix_ms: record.time_ns / 1_000_000,
                size_bytes: record.payload.len(),
                detector_id: None,
                image_query_id: None,
                request_id: None,
                image_size_bytes: None,
                patience_time: None,
                confidence_threshold: None,
                human_review: None,
                metadata: None,
                possibly_submitted: None,
                enqueued_at_unix_ms: None,
                decode_error: None,
            };
            match Escalation::decode(&record.payload) {
                Ok(esc) => {
                    view.image_size_bytes = match &esc.image {
                        ImageSource::Inline(b) => Some(b.len()),
                        ImageSource::Path(_) => None,
                    };
                    view.detector_id = Some(esc.detector_id);
                    view.image_query_id = Some(esc.image_query_id);
                    view.request_id = Some(esc.request_id);
                    view.patience_time = esc.patience_time_s;
                    view.confidence_threshold = esc.confidence_threshold;
                    view.human_review = esc.human_review.map(HumanReview::as_str);
                    view.metadata = esc
                        .metadata
                        .map(|m| serde_json::Value::Object(m.into_map()));
                    view.possibly_submitted = Some(esc.possibly_submitted);
                    view.enqueued_at_unix_ms = Some(esc.enqueued_at_unix_ms);
                }
                Err(e) => view.decode_error = Some(e.to_string()),
            }
            out.push(view);
        }
    }
    Ok(serde_json::to_string(&out).unwrap_or_else(|_| "[]".to_owned()))
}

/// `pending(queue_dir, …, limit)`: [`pending_json`] without opening a writer handle.
#[pyfunction]
#[pyo3(signature = (queue_dir, image_size_max_bytes=None, segment_bytes=None, limit=0))]
fn pending(
    py: Python<'_>,
    queue_dir: PathBuf,
    image_size_max_bytes: Option<usize>,
    segment_bytes: Option<u64>,
    limit: usize,
) -> PyResult<String> {
    let o = options(image_size_max_bytes, segment_bytes);
    py.detach(move || pending_json(&queue_dir, &o, limit))
        .map_err(|e| raise(&e))
}

/// `dead_letters(queue_dir, retention_ms, …)`: the dead letters as `dlq list --json` shows
/// them, without opening a writer handle.
#[pyfunction]
#[pyo3(signature = (queue_dir, retention_ms, image_size_max_bytes=None))]
fn dead_letters(
    py: Python<'_>,
    queue_dir: PathBuf,
    retention_ms: u64,
    image_size_max_bytes: Option<usize>,
) -> PyResult<String> {
    let o = options(image_size_max_bytes, None);
    py.detach(move || dead_letter::list_json(&queue_dir, &o, retention_ms))
        .map_err(|e| raise(&e))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Queue>()?;
    m.add_function(wrap_pyfunction!(pending, m)?)?;
    m.add_function(wrap_pyfunction!(dead_letters, m)?)?;
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add(
        "METADATA_SIZE_LIMIT_BYTES",
        escalation_queue_producer::METADATA_SIZE_LIMIT_BYTES,
    )?;
    m.add(
        "ID_LEN_MAX_CHARS",
        escalation_queue_producer::ID_LEN_MAX_CHARS,
    )?;
    m.add(
        "DEFAULT_IMAGE_SIZE_MAX_BYTES",
        escalation_queue_producer::DEFAULT_IMAGE_SIZE_MAX_BYTES,
    )?;
    Ok(())
}
