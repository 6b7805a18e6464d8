//! Legacy failures as dead letters: a `failed/*.json` record of the Python reader, or a
//! pending line whose image file is gone, becomes one entry of our dead-letter queue with
//! the reason mapped onto our error classes.
//!
//! The entry's record is the legacy line's JSON (its image is gone: the Python reader
//! deleted it), so it stays visible in `dlq list` with its ids and reason but cannot be
//! delivered; a replay dead-letters it again as undecodable. Its id is derived from the
//! legacy file name or the line's image query id (`dl_legacy_…`), so a second import finds
//! it and adds nothing, and `dlq list` merges copies of one id.

use escalation_queue::producer::dead_letter::bounded;
use escalation_queue::worker::{
    DeadLetter, DeadLetterId, DeadLetterInfo, DeadLetterReason, ErrorClass, MESSAGE_MAX_BYTES,
};
use serde::Deserialize;
use serde_json::Value;

use super::legacy::{iso_ms, timestamp_ms};

/// A `failed/*.json` record as the legacy reader writes it.
#[derive(Debug, Deserialize)]
pub struct FailedRecord {
    /// When it was recorded (UTC ISO 8601).
    #[serde(default)]
    pub recorded_at: Option<String>,
    /// `json`, `raw` or `none`.
    #[serde(default)]
    pub escalation_format: Option<String>,
    /// The parsed line (`json`), the raw text (`raw`), or null.
    #[serde(default)]
    pub escalation: Value,
    /// The Python exception's class name.
    #[serde(default)]
    pub exception_type: Option<String>,
    /// Its message.
    #[serde(default)]
    pub exception_message: Option<String>,
}

/// The dead-letter id for a legacy key (a `failed/` file stem, or an image query id).
pub fn legacy_id(key: &str) -> DeadLetterId {
    let safe: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => c,
            _ => '_',
        })
        .take(120)
        .collect();
    // `dl_legacy_` cannot be the id of a record of ours (`dl_<lane>_<seq>`).
    DeadLetterId::new(format!("dl_legacy_{safe}"))
        .expect("at most 120 characters of [A-Za-z0-9_.-] after dl_legacy_ follow the id rule")
}

/// Our error class and HTTP status for a legacy exception, and whether the entry is an
/// undecodable or invalid line rather than a rejected escalation.
pub fn map_exception(
    exception_type: &str,
    message: &str,
) -> (DeadLetterReason, String, Option<u16>) {
    let rejected = |class: ErrorClass, status: Option<u16>| {
        (
            DeadLetterReason::Rejected { class, status },
            class.as_str().to_owned(),
            status,
        )
    };
    match exception_type {
        // Starlette's HTTPException prints as "<status>: <detail>"; safe_call_sdk makes
        // one from every SDK exception with a status (None after the SDK's own 5xx
        // retries, 0 for a TLS error).
        "HTTPException" => {
            let digits: String = message.chars().take_while(char::is_ascii_digit).collect();
            match digits.parse::<u16>().ok() {
                Some(400) => rejected(ErrorClass::BadRequest, Some(400)),
                Some(s @ (401 | 403)) => rejected(ErrorClass::Unauthorized, Some(s)),
                Some(408) => rejected(ErrorClass::RequestTimeout, Some(408)),
                Some(429) => rejected(ErrorClass::TooManyRequests, Some(429)),
                Some(s @ 400..=499) => rejected(ErrorClass::ClientError, Some(s)),
                Some(s @ 500..=599) => rejected(ErrorClass::ServerError, Some(s)),
                Some(0) => rejected(ErrorClass::Network, None),
                Some(s) => rejected(ErrorClass::UnexpectedStatus, Some(s)),
                None => rejected(ErrorClass::ServerError, None),
            }
        }
        "FileNotFoundError" => rejected(ErrorClass::ImageUnavailable, None),
        "JSONDecodeError" | "UnicodeDecodeError" => (
            DeadLetterReason::Undecodable,
            DeadLetterReason::Undecodable.label().to_owned(),
            None,
        ),
        "ValidationError" | "TypeError" => (
            DeadLetterReason::Invalid,
            DeadLetterReason::Invalid.label().to_owned(),
            None,
        ),
        "ProtocolError" | "MaxRetryError" | "ConnectionError" | "SSLError" => {
            rejected(ErrorClass::Network, None)
        }
        "ReadTimeoutError" | "TimeoutError" => rejected(ErrorClass::Timeout, None),
        _ => rejected(ErrorClass::ClientError, None),
    }
}

/// The dead letter for `failed/<stem>.json` holding `record`; `now_ms` when it carries no
/// usable time.
pub fn from_failed_record(
    stem: &str,
    record: &FailedRecord,
    utc_offset_minutes: i64,
    now_ms: u64,
) -> DeadLetter {
    let exception_type = record.exception_type.as_deref().unwrap_or("Exception");
    let message = record.exception_message.as_deref().unwrap_or("");
    let (cause, error_class, http_status) = map_exception(exception_type, message);
    let recorded_ms = record
        .recorded_at
        .as_deref()
        .and_then(iso_ms)
        .or_else(|| stem.get(..22).and_then(|ts| timestamp_ms(ts, 0)))
        .unwrap_or(now_ms);
    let (payload, line) = match (&record.escalation_format.as_deref(), &record.escalation) {
        (_, Value::String(raw)) => (raw.as_bytes().to_vec(), None),
        (_, Value::Null) => (Vec::new(), None),
        (_, other) => (
            serde_json::to_vec(other).unwrap_or_default(),
            Some(other.clone()),
        ),
    };
    let field = |v: &Option<Value>, path: &[&str]| -> Option<String> {
        let mut at = v.as_ref()?;
        for key in path {
            at = at.get(key)?;
        }
        at.as_str().map(str::to_owned)
    };
    let enqueued_ms = field(&line, &["timestamp"])
        .and_then(|ts| timestamp_ms(&ts, utc_offset_minutes))
        .unwrap_or(recorded_ms);
    let error = bounded(
        format!("legacy reader failure (failed/{stem}.json): {exception_type}: {message}"),
        MESSAGE_MAX_BYTES,
    );
    entry(
        legacy_id(stem),
        Meta {
            enqueued_ms,
            dead_lettered_ms: recorded_ms,
            detector_id: field(&line, &["detector_id"]),
            image_query_id: field(&line, &["submit_iq_params", "image_query_id"]),
            request_id: field(&line, &["request_id"]),
            cause,
            error_class,
            http_status,
            error,
        },
        payload,
    )
}

/// The dead letter for a pending legacy line whose image file is gone (the Python reader
/// would have failed it with `FileNotFoundError`).
#[allow(clippy::too_many_arguments)]
pub fn image_missing(
    line: &[u8],
    detector_id: &str,
    image_query_id: &str,
    request_id: &str,
    enqueued_ms: u64,
    why: &str,
    now_ms: u64,
) -> DeadLetter {
    entry(
        legacy_id(image_query_id),
        Meta {
            enqueued_ms,
            dead_lettered_ms: now_ms,
            detector_id: Some(detector_id.to_owned()),
            image_query_id: Some(image_query_id.to_owned()),
            request_id: Some(request_id.to_owned()),
            cause: DeadLetterReason::Rejected {
                class: ErrorClass::ImageUnavailable,
                status: None,
            },
            error_class: ErrorClass::ImageUnavailable.as_str().to_owned(),
            http_status: None,
            error: bounded(format!("import-legacy: {why}"), MESSAGE_MAX_BYTES),
        },
        line.to_vec(),
    )
}

struct Meta {
    enqueued_ms: u64,
    dead_lettered_ms: u64,
    detector_id: Option<String>,
    image_query_id: Option<String>,
    request_id: Option<String>,
    cause: DeadLetterReason,
    error_class: String,
    http_status: Option<u16>,
    error: String,
}

fn entry(id: DeadLetterId, meta: Meta, record: Vec<u8>) -> DeadLetter {
    DeadLetter {
        info: DeadLetterInfo {
            id,
            origin_lane: 0,
            origin_seq: 0,
            enqueued_at_unix_ms: meta.enqueued_ms,
            dead_lettered_at_unix_ms: meta.dead_lettered_ms,
            detector_id: meta.detector_id,
            image_query_id: meta.image_query_id,
            request_id: meta.request_id,
            cause: meta.cause,
            error_class: meta.error_class,
            http_status: meta.http_status,
            error: meta.error,
            response_excerpt: String::new(),
            attempts: Vec::new(),
            attempts_total: 0,
            record_len_bytes: record.len() as u64,
        },
        record: record.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_exceptions_map_onto_our_classes() {
        let class = |t: &str, m: &str| map_exception(t, m).1;
        assert_eq!(class("HTTPException", "400: Bad Request"), "bad_request");
        assert_eq!(class("HTTPException", "None: boom"), "server_error");
        assert_eq!(class("HTTPException", "503: x"), "server_error");
        assert_eq!(class("HTTPException", "404: x"), "client_error");
        assert_eq!(
            class("FileNotFoundError", "no such file"),
            "image_unavailable"
        );
        assert_eq!(
            map_exception("JSONDecodeError", "").0,
            DeadLetterReason::Undecodable
        );
        assert_eq!(legacy_id("2026 x/y").as_str(), "dl_legacy_2026_x_y");
    }
}
