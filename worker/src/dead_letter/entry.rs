//! One dead-letter entry: the original record bytes plus what happened to them.
//!
//! Stored layout (one dead-letter wal record): a version byte ([`ENTRY_FORMAT_VERSION`]),
//! the length of the context as `u32` little-endian, the postcard encoding of
//! [`DeadLetterInfo`], then the original record bytes, verbatim. Decoding shares the record
//! bytes with the wal's map (no copy).

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;
pub use escalation_queue_producer::MalformedEntry;
use serde::{Deserialize, Serialize};

use crate::retry::{BudgetLimit, DeadLetterReason};

/// The version byte of a stored entry.
pub const ENTRY_FORMAT_VERSION: u8 = 1;
/// Attempts kept in an entry: the first 8 and the latest ones up to this total.
pub const ATTEMPTS_KEPT_MAX: usize = 64;
const ATTEMPTS_HEAD: usize = 8;
/// Longest error message or attempt outcome kept, in bytes.
pub const MESSAGE_MAX_BYTES: usize = 1024;

/// A dead letter's stable id: `dl_<lane>_<seq>` of the record it was made from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeadLetterId(String);

impl DeadLetterId {
    /// The id of the dead letter made from record `seq` of `lane`.
    pub fn for_record(lane: u16, seq: u64) -> Self {
        Self(format!("dl_{lane}_{seq}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an entry was dead-lettered, in a stable, serializable form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterCause {
    /// The policy dead-letters this class of error.
    Rejected {
        /// The error class (`bad_request`, `client_error`, `image_unavailable`, …).
        class: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// A retryable item ran out of attempts.
    AttemptsExhausted {
        /// Attempts charged.
        attempts: u32,
        /// The limit.
        max: u32,
    },
    /// A retryable item grew older than the budget's age limit.
    AgeExhausted {
        /// Its age.
        age_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// The stored record could not be decoded.
    Undecodable,
    /// The record decoded but breaks a validation rule.
    Invalid,
}

impl From<&DeadLetterReason> for DeadLetterCause {
    fn from(reason: &DeadLetterReason) -> Self {
        match reason {
            DeadLetterReason::Rejected { class, status } => Self::Rejected {
                class: class.to_string(),
                status: *status,
            },
            DeadLetterReason::BudgetExhausted {
                limit: BudgetLimit::Attempts { attempts, max },
            } => Self::AttemptsExhausted {
                attempts: *attempts,
                max: *max,
            },
            DeadLetterReason::BudgetExhausted {
                limit: BudgetLimit::Age { age_ms, max_ms },
            } => Self::AgeExhausted {
                age_ms: *age_ms,
                max_ms: *max_ms,
            },
            DeadLetterReason::RecordUndecodable => Self::Undecodable,
            _ => Self::Invalid,
        }
    }
}

impl fmt::Display for DeadLetterCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected {
                class,
                status: Some(s),
            } => write!(f, "rejected ({class}, HTTP {s})"),
            Self::Rejected {
                class,
                status: None,
            } => write!(f, "rejected ({class})"),
            Self::AttemptsExhausted { attempts, max } => {
                write!(f, "out of attempts ({attempts} of {max})")
            }
            Self::AgeExhausted { age_ms, max_ms } => {
                write!(f, "too old to retry ({age_ms} ms, limit {max_ms} ms)")
            }
            Self::Undecodable => f.write_str("record undecodable"),
            Self::Invalid => f.write_str("record invalid"),
        }
    }
}

/// One delivery attempt, as kept in a dead letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// When it started, unix milliseconds.
    pub at_unix_ms: u64,
    /// How long it took.
    pub elapsed_ms: u64,
    /// `delivered`, or the error (bounded to [`MESSAGE_MAX_BYTES`]).
    pub outcome: String,
    /// The error class, for failures.
    pub class: Option<String>,
    /// The HTTP status, when there was one.
    pub http_status: Option<u16>,
    /// Whether it was the circuit breaker's probe (not charged to the budget).
    pub probe: bool,
}

/// An item's attempts, bounded: the first 8 and the latest 56 are kept, with the total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptLog {
    head: Vec<AttemptRecord>,
    tail: VecDeque<AttemptRecord>,
    total: u32,
}

impl AttemptLog {
    /// Adds an attempt.
    pub fn push(&mut self, attempt: AttemptRecord) {
        self.total = self.total.saturating_add(1);
        if self.head.len() < ATTEMPTS_HEAD {
            self.head.push(attempt);
            return;
        }
        self.tail.push_back(attempt);
        if self.tail.len() > ATTEMPTS_KEPT_MAX - ATTEMPTS_HEAD {
            self.tail.pop_front();
        }
    }

    /// Attempts made (including those no longer kept).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The kept attempts, oldest first.
    pub fn records(&self) -> Vec<AttemptRecord> {
        self.head.iter().chain(&self.tail).cloned().collect()
    }
}

/// Everything about a dead letter except the record bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// The stable id.
    pub id: DeadLetterId,
    /// Lane of the original record.
    pub origin_lane: u16,
    /// Sequence number of the original record.
    pub origin_seq: u64,
    /// When the escalation was enqueued (the record's own time, else the wal's).
    pub enqueued_at_unix_ms: u64,
    /// When it was dead-lettered.
    pub dead_lettered_at_unix_ms: u64,
    /// The detector, when the record decoded.
    pub detector_id: Option<String>,
    /// The image query id, when the record decoded.
    pub image_query_id: Option<String>,
    /// The request id, when the record decoded.
    pub request_id: Option<String>,
    /// Why.
    pub cause: DeadLetterCause,
    /// The last error's class (`bad_request`, `network`, `undecodable`, …).
    pub error_class: String,
    /// The last HTTP status, when there was one.
    pub http_status: Option<u16>,
    /// The last error message.
    pub error: String,
    /// The start of the last response body.
    pub response_excerpt: String,
    /// The attempts kept (see [`AttemptLog`]).
    pub attempts: Vec<AttemptRecord>,
    /// Attempts made.
    pub attempts_total: u32,
    /// Length of the original record.
    pub record_len_bytes: u64,
}

/// A dead letter: its context and the original record, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The context.
    pub info: DeadLetterInfo,
    /// The original record bytes (what replay puts back into the main queue).
    pub record: Bytes,
}

impl DeadLetter {
    /// The stable id.
    pub fn id(&self) -> &DeadLetterId {
        &self.info.id
    }

    /// The stored form (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>, MalformedEntry> {
        let info =
            postcard::to_allocvec(&self.info).map_err(|e| MalformedEntry::new(e.to_string()))?;
        let info_len = u32::try_from(info.len()).map_err(|e| MalformedEntry::new(e.to_string()))?;
        let mut out = Vec::with_capacity(5 + info.len() + self.record.len());
        out.push(ENTRY_FORMAT_VERSION);
        out.extend_from_slice(&info_len.to_le_bytes());
        out.extend_from_slice(&info);
        out.extend_from_slice(&self.record);
        Ok(out)
    }

    /// Reads what [`encode`](Self::encode) wrote; the record shares `stored`'s memory.
    pub fn decode(stored: &Bytes) -> Result<Self, MalformedEntry> {
        let bad = |what: &str| MalformedEntry::new(what);
        match stored.first() {
            Some(&ENTRY_FORMAT_VERSION) => {}
            Some(v) => return Err(MalformedEntry::new(format!("unknown version {v}"))),
            None => return Err(bad("empty")),
        }
        let len_bytes = stored.get(1..5).ok_or_else(|| bad("truncated header"))?;
        let mut len = [0_u8; 4];
        len.copy_from_slice(len_bytes);
        let info_end = 5_usize.saturating_add(u32::from_le_bytes(len) as usize);
        let info_bytes = stored
            .get(5..info_end)
            .ok_or_else(|| bad("truncated context"))?;
        let info: DeadLetterInfo =
            postcard::from_bytes(info_bytes).map_err(|e| MalformedEntry::new(e.to_string()))?;
        let record = stored.slice(info_end..);
        if record.len() as u64 != info.record_len_bytes {
            return Err(bad("record length does not match the context"));
        }
        Ok(Self { info, record })
    }
}

/// Cuts `text` to at most `max_bytes` at a character boundary.
pub(crate) fn bounded(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut cut = max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(number: u32) -> AttemptRecord {
        AttemptRecord {
            number,
            at_unix_ms: 1_000 + u64::from(number),
            elapsed_ms: 3,
            outcome: "HTTP 503".into(),
            class: Some("server_error".into()),
            http_status: Some(503),
            probe: false,
        }
    }

    #[test]
    fn attempt_log_keeps_first_and_latest() {
        let mut log = AttemptLog::default();
        (1..=200).for_each(|n| log.push(attempt(n)));
        let kept = log.records();
        assert_eq!(kept.len(), ATTEMPTS_KEPT_MAX);
        assert_eq!(log.total(), 200);
        assert_eq!(kept[7].number, 8);
        assert_eq!(kept[8].number, 145);
        assert_eq!(kept[63].number, 200);
    }

    #[test]
    fn entry_round_trips_and_shares_the_record() {
        let record = Bytes::from_static(b"\x01original record bytes");
        let entry = DeadLetter {
            info: DeadLetterInfo {
                id: DeadLetterId::for_record(2, 41),
                origin_lane: 2,
                origin_seq: 41,
                enqueued_at_unix_ms: 5,
                dead_lettered_at_unix_ms: 9,
                detector_id: Some("det_1".into()),
                image_query_id: Some("iq_1".into()),
                request_id: None,
                cause: DeadLetterCause::Rejected {
                    class: "bad_request".into(),
                    status: Some(400),
                },
                error_class: "bad_request".into(),
                http_status: Some(400),
                error: "cloud answered HTTP 400".into(),
                response_excerpt: "{\"detail\": \"bad\"}".into(),
                attempts: vec![attempt(1)],
                attempts_total: 1,
                record_len_bytes: record.len() as u64,
            },
            record,
        };
        let stored = Bytes::from(entry.encode().expect("encode"));
        let decoded = DeadLetter::decode(&stored).expect("decode");
        assert_eq!(decoded, entry);
        assert_eq!(decoded.id().as_str(), "dl_2_41");
        assert!(DeadLetter::decode(&stored.slice(..stored.len() - 1)).is_err());
        assert!(DeadLetter::decode(&Bytes::from_static(b"\x09")).is_err());
        assert_eq!(bounded("héllo".into(), 2), "h");
    }
}
