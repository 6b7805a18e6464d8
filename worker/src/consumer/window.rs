//! The restart rule: whether a record handed out by the reader may already have been
//! submitted, so that a 400 for it must be settled by asking the cloud (`lookup.rs`).
//!
//! It may have been when the attempt journal holds a durable marker for it (written before
//! any request for it went out, in this run or an earlier one, and not released by a
//! durable acknowledgement), or when its producer says so (`record_flag`). Any other record
//! was never sent: its 400 is a rejection.

use escalation_queue_wal::RecordId;

use crate::attempts::AttemptJournal;
use crate::escalation::Escalation;

/// Whether a request for `esc` (record `id`) may have reached the cloud before.
pub(super) fn possibly_submitted(journal: &AttemptJournal, id: RecordId, esc: &Escalation) -> bool {
    journal.may_have_been_sent(id, &esc.image_query_id) || record_flag(esc)
}

/// The producer's own flag: its synchronous submit failed after the request may have been
/// sent (`Escalation::possibly_submitted`).
fn record_flag(esc: &Escalation) -> bool {
    esc.possibly_submitted
}
