//! What the mock records about each request, for test assertions.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::http::Request;

/// Bytes of each request body kept in [`RecordedRequest::body_prefix`].
pub const BODY_PREFIX_LEN_BYTES: usize = 64;

/// What the mock did with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MockOutcome {
    /// It answered `status`, after `delay_ms`.
    Responded {
        /// The status sent.
        status: u16,
        /// The injected delay before answering.
        delay_ms: u64,
    },
    /// It reset the connection without processing the request.
    Reset,
    /// It processed the request (answer `status` computed) and closed without answering.
    ResponseDropped {
        /// The status that was not sent.
        status: u16,
    },
}

/// One request as the mock saw it. The token value is never stored.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Which connection carried it (equal ids: the connection was reused).
    pub connection_id: u64,
    /// When the request was fully read.
    pub received_at: SystemTime,
    /// `POST`, …
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers (lowercase names); `x-api-token`'s value is replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// Whether `x-api-token` matched the token in force.
    pub token_matched: bool,
    /// Body length.
    pub body_len_bytes: usize,
    /// crc32c of the body.
    pub body_crc32c: u32,
    /// The first [`BODY_PREFIX_LEN_BYTES`] of the body.
    pub body_prefix: Vec<u8>,
    /// What the mock did.
    pub outcome: MockOutcome,
    /// The image query this request created, if any (also when the answer was lost).
    pub created_image_query_id: Option<String>,
}

impl RecordedRequest {
    /// The last value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What happened to a request, besides the request itself.
pub(super) struct Disposition {
    pub connection_id: u64,
    pub token_matched: bool,
    pub outcome: MockOutcome,
    pub created_image_query_id: Option<String>,
}

/// Appends a record of `request`, dropping the oldest beyond `requests_max`.
pub(super) fn record(
    requests: &mut VecDeque<RecordedRequest>,
    requests_max: usize,
    request: &Request,
    disposition: Disposition,
) {
    let headers = request
        .headers
        .iter()
        .map(|(name, value)| {
            let value = if name == "x-api-token" {
                "<redacted>".to_owned()
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect();
    let prefix_len = request.body.len().min(BODY_PREFIX_LEN_BYTES);
    requests.push_back(RecordedRequest {
        connection_id: disposition.connection_id,
        received_at: SystemTime::now(),
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers,
        token_matched: disposition.token_matched,
        body_len_bytes: request.body.len(),
        body_crc32c: crc32c::crc32c(&request.body),
        body_prefix: request.body.get(..prefix_len).unwrap_or_default().to_vec(),
        outcome: disposition.outcome,
        created_image_query_id: disposition.created_image_query_id,
    });
    while requests.len() > requests_max.max(1) {
        requests.pop_front();
    }
}
