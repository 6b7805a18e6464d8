//! A dead-letter entry as data: what the worker stores for an item it gave up on
//! ([`DeadLetter`]: the context [`DeadLetterInfo`] and the original record bytes), its
//! stored layout ([`DeadLetter::encode`], [`DeadLetter::decode`]), why it was dead-lettered
//! ([`DeadLetterReason`]) and the classification-table row of the last error
//! ([`ErrorClass`]).
//!
//! Here rather than in the worker so that what only reads or writes entries (the Python
//! package's `dead_letters()`, `import-legacy`) decodes and encodes them with this one
//! codec, and lists them ([`list`]), without linking the HTTP client. Telling an
//! [`ErrorClass`] from a delivery error, and the changes to the dead-letter queue (append,
//! replay, purge, retention), are the worker's (`escalation_queue_worker::DeadLetterQueue`).

mod class;
mod entry;
mod reason;

use std::collections::HashSet;
use std::path::Path;

use escalation_queue_wal::clock::now_unix_ms;
use escalation_queue_wal::Reader;

use crate::error::Error;
use crate::layout::{QueueLayout, QueueOptions, DEAD_LETTER_CURSOR};

pub use class::ErrorClass;
pub use entry::{
    bounded, AttemptLog, AttemptRecord, DeadLetter, DeadLetterId, DeadLetterInfo,
    ATTEMPTS_KEPT_MAX, DEAD_LETTER_ID_PREFIX, ENTRY_FORMAT_VERSION, MESSAGE_MAX_BYTES,
};
pub use reason::DeadLetterReason;

/// Every dead letter of the queue directory `queue_dir` enqueued less than `retention_ms`
/// ago, oldest first, one per id (the first copy: a crash during a rewrite pass may leave
/// two). Read-only: it takes no lock and consumes nothing, so it is safe while the worker
/// and other tools run. An entry that cannot be decoded is logged and left out (it stays
/// in the wal).
pub fn list(
    queue_dir: &Path,
    options: &QueueOptions,
    retention_ms: u64,
) -> Result<Vec<DeadLetter>, Error> {
    let dir = QueueLayout::new(queue_dir).dead_letter_dir();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut reader = Reader::browse(&dir, DEAD_LETTER_CURSOR, &options.dead_letter_wal_options())?;
    let mut seen = HashSet::new();
    let now_ms = now_unix_ms();
    let mut out = Vec::new();
    while let Some(record) = reader.next()? {
        match DeadLetter::decode(&record.payload) {
            Ok(entry) if entry.info.expired(now_ms, retention_ms) => {}
            Ok(entry) if seen.insert(entry.info.id.clone()) => out.push(entry),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(record = %record.id, error = %e, "dead-letter entry unreadable; kept, not listed")
            }
        }
    }
    Ok(out)
}
