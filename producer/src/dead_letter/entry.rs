//! One dead-letter entry: the original record bytes plus what happened to them.
//!
//! Stored layout (one dead-letter wal record): a version byte ([`ENTRY_FORMAT_VERSION`]),
//! the length of the context as `u32` little-endian, the postcard encoding of
//! [`DeadLetterInfo`], then the original record bytes, verbatim. Decoding shares the record
//! bytes with the wal's map (no copy).

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::reason::DeadLetterReason;
use crate::error::MalformedEntry;
use crate::escalation::ID_LEN_MAX_CHARS;

/// The version byte of a stored entry.
pub const ENTRY_FORMAT_VERSION: u8 = 1;
/// Attempts kept in an entry: the first 8 and the latest ones up to this total.
pub const ATTEMPTS_KEPT_MAX: usize = 64;
const ATTEMPTS_HEAD: usize = 8;
/// Longest error message or attempt outcome kept, in bytes.
pub const MESSAGE_MAX_BYTES: usize = 1024;

/// What every dead-letter id starts with.
pub const DEAD_LETTER_ID_PREFIX: &str = "dl_";

/// A dead letter's stable id: `dl_<lane>_<seq>` of the record it was made from
/// ([`for_record`](Self::for_record)), or another `dl_…` name for an entry that does not
/// come from a record of this queue ([`new`](Self::new)).
///
/// Stored as its text; decoding takes a stored id as it is (entries already written are
/// never refused for their id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeadLetterId(String);

impl DeadLetterId {
    /// The id of the dead letter made from record `seq` of `lane`.
    pub fn for_record(lane: u16, seq: u64) -> Self {
        Self(format!("{DEAD_LETTER_ID_PREFIX}{lane}_{seq}"))
    }

    /// An id for a dead letter that was not made from a record of this queue (an imported
    /// failure, say). It must start with [`DEAD_LETTER_ID_PREFIX`], have at least one
    /// character after it, be at most [`ID_LEN_MAX_CHARS`] characters long, and hold only
    /// ASCII letters, digits, `_`, `-` and `.` (so that it is one word on a command line,
    /// in a file name and in `dlq replay --id`). Pick it so that it cannot be
    /// [`for_record`](Self::for_record)'s: `dlq list` merges entries of one id.
    pub fn new(id: impl Into<String>) -> Result<Self, MalformedEntry> {
        let id = id.into();
        let bad = |rule: &str| Err(MalformedEntry::new(format!("dead-letter id {id:?} {rule}")));
        let Some(name) = id.strip_prefix(DEAD_LETTER_ID_PREFIX) else {
            return bad("does not start with \"dl_\"");
        };
        if name.is_empty() {
            return bad("has nothing after \"dl_\"");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if let Some(c) = id.chars().find(|&c| !allowed(c)) {
            return bad(&format!(
                "holds {c:?}; allowed: ASCII letters, digits, '_', '-', '.'"
            ));
        }
        // ASCII only by now: bytes are characters.
        if id.len() > ID_LEN_MAX_CHARS {
            return bad(&format!("is longer than {ID_LEN_MAX_CHARS} characters"));
        }
        Ok(Self(id))
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
    /// Why (stored in [`DeadLetterReason`]'s serialized form).
    pub cause: DeadLetterReason,
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

impl DeadLetterInfo {
    /// Whether the entry is past a retention of `retention_ms` at `now_ms`: enqueued that
    /// long ago or longer.
    pub fn expired(&self, now_ms: u64, retention_ms: u64) -> bool {
        now_ms.saturating_sub(self.enqueued_at_unix_ms) >= retention_ms
    }
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

    /// The stored form (see the module docs). Refuses an entry whose
    /// [`record_len_bytes`](DeadLetterInfo::record_len_bytes) is not the record's length
    /// ([`decode`](Self::decode) could not read it back).
    pub fn encode(&self) -> Result<Vec<u8>, MalformedEntry> {
        if self.info.record_len_bytes != self.record.len() as u64 {
            return Err(MalformedEntry::new(format!(
                "record_len_bytes is {} but the record is {} bytes",
                self.info.record_len_bytes,
                self.record.len()
            )));
        }
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

/// Cuts `text` to at most `max_bytes` at a character boundary: how an entry's messages are
/// kept within [`MESSAGE_MAX_BYTES`].
pub fn bounded(mut text: String, max_bytes: usize) -> String {
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
    use crate::dead_letter::ErrorClass;

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
                cause: DeadLetterReason::Rejected {
                    class: ErrorClass::BadRequest,
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

    /// Bytes of entries as the first release of the format wrote them (one per cause, the
    /// same context otherwise): `<cause as JSON> <stored entry in hex>`.
    const WRITTEN_BY_FORMAT_1: [(&str, &str); 6] = [
        (r#"{"rejected":{"class":"bad_request","status":400}}"#, "016500000007646c5f325f34310229050901056465745f31010469715f3100000b6261645f726571756573740190030b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
        (r#"{"rejected":{"class":"image_unavailable","status":null}}"#, "016900000007646c5f325f34310229050901056465745f31010469715f31000011696d6167655f756e617661696c61626c65000b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
        (r#"{"attempts_exhausted":{"attempts":5,"max":5}}"#, "015800000007646c5f325f34310229050901056465745f31010469715f31000105050b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
        (r#"{"age_exhausted":{"age_ms":301,"max_ms":300}}"#, "015a00000007646c5f325f34310229050901056465745f31010469715f310002ad02ac020b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
        (r#""undecodable""#, "015600000007646c5f325f34310229050901056465745f31010469715f3100030b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
        (r#""invalid""#, "015600000007646c5f325f34310229050901056465745f31010469715f3100040b6261645f72657175657374019003084854545020343030027b7d01010703084854545020343030010b6261645f7265717565737401900300010401726563"),
    ];

    fn from_hex(hex: &str) -> Bytes {
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex");
        (0..hex.len())
            .step_by(2)
            .map(byte)
            .collect::<Vec<_>>()
            .into()
    }

    /// Story: the "why" of a dead letter became one enum; entries already in a queue's
    /// dead-letter wal must still decode to the same cause, and a new entry with that cause
    /// must be written byte for byte as before (so older readers can read it too).
    #[test]
    fn entries_written_by_format_1_decode_and_encode_the_same() {
        let expected = [
            DeadLetterReason::Rejected {
                class: ErrorClass::BadRequest,
                status: Some(400),
            },
            DeadLetterReason::Rejected {
                class: ErrorClass::ImageUnavailable,
                status: None,
            },
            DeadLetterReason::AttemptsExhausted {
                attempts: 5,
                max: 5,
            },
            DeadLetterReason::AgeExhausted {
                age_ms: 301,
                max_ms: 300,
            },
            DeadLetterReason::Undecodable,
            DeadLetterReason::Invalid,
        ];
        for ((json, hex), cause) in WRITTEN_BY_FORMAT_1.into_iter().zip(expected) {
            let stored = from_hex(hex);
            let entry = DeadLetter::decode(&stored).expect("an old entry decodes");
            assert_eq!(entry.info.cause, cause, "{json}");
            assert_eq!(
                serde_json::to_string(&entry.info.cause).expect("json"),
                json
            );
            assert_eq!(entry.info.id.as_str(), "dl_2_41");
            assert_eq!(entry.info.error_class, "bad_request");
            assert_eq!(entry.info.attempts[0].class.as_deref(), Some("bad_request"));
            assert_eq!(&entry.record[..], b"\x01rec");
            assert_eq!(entry.encode().expect("encode"), stored.to_vec(), "{json}");
        }
    }

    #[test]
    fn an_unknown_error_class_is_a_malformed_entry_not_a_panic() {
        let (_, hex) = WRITTEN_BY_FORMAT_1[0];
        // "bad_request" in the cause (first occurrence) becomes "bad_requesX".
        let hex = hex.replacen("6261645f72657175657374", "6261645f72657175657358", 1);
        assert!(DeadLetter::decode(&from_hex(&hex)).is_err());
    }

    /// Story: `import-legacy` names its dead letters itself; an id that `dlq replay --id`
    /// could not name (empty, spaces, another prefix, too long) is refused when it is made.
    #[test]
    fn a_dead_letter_id_from_outside_must_follow_the_id_rule() {
        let id = DeadLetterId::new("dl_legacy_2026-01-02.x").expect("valid");
        assert_eq!(id.as_str(), "dl_legacy_2026-01-02.x");
        assert_eq!(
            DeadLetterId::new(DeadLetterId::for_record(3, 7).as_str()).expect("valid"),
            DeadLetterId::for_record(3, 7)
        );
        let too_long = format!("dl_{}", "x".repeat(ID_LEN_MAX_CHARS));
        for bad in [
            "",
            "dl_",
            "legacy_1",
            "dl_a b",
            "dl_a/b",
            "dl_é",
            too_long.as_str(),
        ] {
            let err = DeadLetterId::new(bad).expect_err(bad);
            assert!(err.to_string().contains("dead-letter id"), "{err}");
        }
    }

    /// Story: an entry built by hand whose `record_len_bytes` is off would be written and
    /// then never read back (`dlq list` skips it); encoding refuses it instead.
    #[test]
    fn an_entry_whose_record_length_is_off_is_not_encoded() {
        let (_, hex) = WRITTEN_BY_FORMAT_1[0];
        let mut entry = DeadLetter::decode(&from_hex(hex)).expect("decode");
        entry.info.record_len_bytes += 1;
        let err = entry.encode().expect_err("length off");
        assert!(err.to_string().contains("record_len_bytes"), "{err}");
    }
}
