//! A read-only view of the dead-letter queue, without linking the worker crate (which
//! brings the HTTP client and TLS).
//!
//! The entry layout is the worker's (`worker/src/dead_letter/entry.rs`): a version byte
//! ([`ENTRY_FORMAT_VERSION`]), the context's length as `u32` little-endian, the postcard
//! encoding of the context, then the original record. The structs below mirror the
//! worker's `DeadLetterInfo`, `DeadLetterCause` and `AttemptRecord` field for field (postcard
//! is positional). `py/tests/test_dead_letters.py` checks the mirror against
//! `escalation-queue dlq list --json` on dead letters the real worker wrote, so a change of
//! the worker's layout fails there.

use std::collections::HashSet;
use std::path::Path;

use escalation_queue_producer::wal::clock::now_unix_ms;
use escalation_queue_producer::wal::Reader;
use escalation_queue_producer::{Error, QueueLayout, QueueOptions, DEAD_LETTER_CURSOR};
use serde::{Deserialize, Serialize};

/// The version byte of a stored entry the mirror reads.
const ENTRY_FORMAT_VERSION: u8 = 1;

/// Mirror of the worker's `DeadLetterCause`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cause {
    Rejected { class: String, status: Option<u16> },
    AttemptsExhausted { attempts: u32, max: u32 },
    AgeExhausted { age_ms: u64, max_ms: u64 },
    Undecodable,
    Invalid,
}

/// Mirror of the worker's `AttemptRecord`.
#[derive(Debug, Serialize, Deserialize)]
struct Attempt {
    number: u32,
    at_unix_ms: u64,
    elapsed_ms: u64,
    outcome: String,
    class: Option<String>,
    http_status: Option<u16>,
    probe: bool,
}

/// Mirror of the worker's `DeadLetterInfo`.
#[derive(Debug, Serialize, Deserialize)]
struct Info {
    id: String,
    origin_lane: u16,
    origin_seq: u64,
    enqueued_at_unix_ms: u64,
    dead_lettered_at_unix_ms: u64,
    detector_id: Option<String>,
    image_query_id: Option<String>,
    request_id: Option<String>,
    cause: Cause,
    error_class: String,
    http_status: Option<u16>,
    error: String,
    response_excerpt: String,
    attempts: Vec<Attempt>,
    attempts_total: u32,
    record_len_bytes: u64,
}

/// The context of a stored entry, or `None` when it is not one this mirror reads (the
/// worker's own listing skips such entries too, with a warning).
fn decode(stored: &[u8]) -> Option<Info> {
    if stored.first() != Some(&ENTRY_FORMAT_VERSION) {
        return None;
    }
    let len = u32::from_le_bytes(stored.get(1..5)?.try_into().ok()?) as usize;
    let info_end = 5_usize.checked_add(len)?;
    let info: Info = postcard::from_bytes(stored.get(5..info_end)?).ok()?;
    let record_len = (stored.len() - info_end) as u64;
    (record_len == info.record_len_bytes).then_some(info)
}

/// Every dead letter enqueued less than `retention_ms` ago, oldest first, one per id, as a
/// JSON array of what `escalation-queue dlq list --json` prints. Read-only.
pub fn list_json(dir: &Path, options: &QueueOptions, retention_ms: u64) -> Result<String, Error> {
    let dlq_dir = QueueLayout::new(dir).dead_letter_dir();
    let mut out = Vec::new();
    if dlq_dir.is_dir() {
        let opts = options.dead_letter_wal_options();
        let mut reader = Reader::browse(&dlq_dir, DEAD_LETTER_CURSOR, &opts)?;
        let now_ms = now_unix_ms();
        let mut seen = HashSet::new();
        while let Some(record) = reader.next()? {
            let Some(info) = decode(&record.payload) else {
                continue;
            };
            let expired = now_ms.saturating_sub(info.enqueued_at_unix_ms) >= retention_ms;
            if !expired && seen.insert(info.id.clone()) {
                out.push(info);
            }
        }
    }
    Ok(serde_json::to_string(&out).unwrap_or_else(|_| "[]".to_owned()))
}
