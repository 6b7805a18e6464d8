//! A read-only view of the dead-letter queue, without linking the worker crate (which
//! brings the HTTP client and TLS): the entries are listed and decoded by the producer's
//! codec ([`escalation_queue_producer::dead_letter`]), the one the worker writes them with.
//! `py/tests/test_dead_letters.py` checks the listing against `escalation-queue dlq list
//! --json` on dead letters the real worker wrote.

use std::path::Path;

use escalation_queue_producer::dead_letter::{self, DeadLetterInfo};
use escalation_queue_producer::{Error, QueueOptions};

/// Every dead letter enqueued less than `retention_ms` ago, oldest first, one per id, as a
/// JSON array of what `escalation-queue dlq list --json` prints. Read-only.
pub fn list_json(dir: &Path, options: &QueueOptions, retention_ms: u64) -> Result<String, Error> {
    let infos: Vec<DeadLetterInfo> = dead_letter::list(dir, options, retention_ms)?
        .into_iter()
        .map(|entry| entry.info)
        .collect();
    Ok(serde_json::to_string(&infos).unwrap_or_else(|_| "[]".to_owned()))
}
