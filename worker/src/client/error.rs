//! Typed delivery errors: enough detail to classify an attempt without parsing strings.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use crate::escalation::ImageError;

/// Longest response body excerpt kept in a [`DeliveryError::Http`], in bytes.
pub const BODY_EXCERPT_MAX_BYTES: usize = 1024;

/// The phase of an HTTP exchange that timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Resolving the host name.
    Resolve,
    /// TCP connect and TLS handshake: the request was not sent.
    Connect,
    /// Sending the request headers or the image: it may have been partly received.
    Send,
    /// Waiting for or reading the response: the request may have been processed.
    Read,
    /// An overall deadline.
    Overall,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Read => "read",
            Self::Overall => "overall",
        })
    }
}

/// Why one delivery attempt failed.
///
/// Classification (see [`ClassificationPolicy::classify`](crate::ClassificationPolicy::classify)) decides what happens next; this type
/// only says what happened, and whether the request may have reached the cloud
/// ([`response_possibly_lost`](Self::response_possibly_lost)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The cloud answered with a status other than 2xx (3xx included: redirects are never
    /// followed, so the token is never sent to another host).
    #[error(
        "cloud answered HTTP {status}{}{}: {body_excerpt}",
        retry_after_text(*retry_after),
        location_text(location.as_deref())
    )]
    Http {
        /// The status code.
        status: u16,
        /// The `Retry-After` delay, when the header was present and valid.
        retry_after: Option<Duration>,
        /// The `Location` header of a 3xx (what an http→https redirect points at), at most
        /// 256 characters, credentials and query redacted.
        location: Option<String>,
        /// The start of the body, at most [`BODY_EXCERPT_MAX_BYTES`], lossy UTF-8.
        body_excerpt: String,
    },
    /// The connection was refused or the host/network is unreachable; nothing was sent.
    #[error("could not connect to the cloud: {source}")]
    Connect {
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A timeout expired.
    #[error("cloud request timed out in the {phase} phase")]
    Timeout {
        /// Where.
        phase: TimeoutPhase,
    },
    /// The connection was reset or closed mid-exchange.
    #[error("connection to the cloud was reset or closed mid-request: {source}")]
    Reset {
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Another I/O error on the connection.
    #[error("I/O error talking to the cloud: {source}")]
    Io {
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake or session failed.
    #[error("TLS error talking to the cloud: {detail}")]
    Tls {
        /// What the TLS layer said.
        detail: String,
    },
    /// The host name did not resolve.
    #[error("could not resolve the cloud host name")]
    Dns,
    /// The server's answer was not valid HTTP/1.1.
    #[error("cloud sent a malformed HTTP response: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// A 2xx answer whose body is not an ImageQuery (or a captive portal's page).
    #[error("cloud answered HTTP {status} with a body that is not an ImageQuery: {detail}")]
    BadResponse {
        /// The status code.
        status: u16,
        /// Why the body was rejected.
        detail: String,
        /// The start of the body.
        body_excerpt: String,
    },
    /// A 2xx whose ImageQuery id is not the one sent (or is empty): the cloud did not
    /// confirm this escalation, so it is not delivered.
    #[error("cloud answered HTTP {status} with image query id {got:?} for {sent:?}")]
    WrongImageQuery {
        /// The status code.
        status: u16,
        /// The image query id sent.
        sent: String,
        /// The id in the answer.
        got: String,
    },
    /// The image file is missing, unreadable, empty or too large.
    #[error("image unavailable: {source}")]
    ImageUnavailable {
        /// Why.
        #[source]
        source: ImageError,
    },
    /// The request could not be built (a bug or a configuration problem); nothing was sent.
    #[error("could not build the cloud request: {detail}")]
    Request {
        /// What the HTTP library said.
        detail: String,
    },
}

/// Longest `Location` kept in a [`DeliveryError::Http`], in characters.
pub(crate) const LOCATION_MAX_CHARS: usize = 256;

fn location_text(location: Option<&str>) -> String {
    location
        .map(|l| format!(" (redirect to {l}, not followed: fix cloud.endpoint if it is right)"))
        .unwrap_or_default()
}

/// A `Location` header value as it may be shown: control characters escaped, credentials
/// and query redacted, bounded.
pub(crate) fn shown_location(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text: String = text.chars().flat_map(char::escape_default).collect();
    let text = super::url::redact_url(&text);
    let mut out: String = text.chars().take(LOCATION_MAX_CHARS).collect();
    if text.chars().nth(LOCATION_MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (Retry-After {} s)", d.as_secs()))
        .unwrap_or_default()
}

impl DeliveryError {
    /// Whether the request may have reached the cloud although no answer arrived. A later
    /// HTTP 400 for the same image query id is then most likely "already exists".
    pub fn response_possibly_lost(&self) -> bool {
        match self {
            Self::Timeout { phase } => matches!(
                phase,
                TimeoutPhase::Send | TimeoutPhase::Read | TimeoutPhase::Overall
            ),
            Self::Reset { .. }
            | Self::Io { .. }
            | Self::Protocol { .. }
            | Self::BadResponse { .. }
            | Self::WrongImageQuery { .. } => true,
            Self::Http { .. }
            | Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Dns
            | Self::ImageUnavailable { .. }
            | Self::Request { .. } => false,
        }
    }

    /// The HTTP status, for `Http` and `BadResponse`.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. }
            | Self::BadResponse { status, .. }
            | Self::WrongImageQuery { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Maps a ureq error.
    pub(crate) fn from_ureq(error: ureq::Error) -> Self {
        use ureq::Error as U;
        match error {
            U::StatusCode(status) => Self::Http {
                status,
                retry_after: None,
                location: None,
                body_excerpt: String::new(),
            },
            U::Io(source) => Self::from_io(source),
            U::Timeout(timeout) => Self::Timeout {
                phase: timeout_phase(timeout),
            },
            U::HostNotFound => Self::Dns,
            U::ConnectionFailed => Self::Connect {
                source: io::Error::new(io::ErrorKind::ConnectionRefused, "connection failed"),
            },
            U::ConnectProxyFailed(detail) => Self::Connect {
                source: io::Error::other(detail),
            },
            U::Tls(detail) => Self::Tls {
                detail: detail.to_owned(),
            },
            U::Rustls(e) => Self::Tls {
                detail: e.to_string(),
            },
            U::Pem(e) => Self::Tls {
                detail: e.to_string(),
            },
            U::TlsRequired => Self::Tls {
                detail: "the connection is not TLS".to_owned(),
            },
            U::Protocol(e) => Self::Protocol {
                detail: e.to_string(),
            },
            e @ (U::LargeResponseHeader(..) | U::BodyStalled) => Self::Protocol {
                detail: e.to_string(),
            },
            U::Other(e) => Self::Io {
                source: io::Error::other(e),
            },
            other => Self::Request {
                detail: other.to_string(),
            },
        }
    }

    /// Maps a socket error by kind.
    pub(crate) fn from_io(source: io::Error) -> Self {
        use io::ErrorKind as K;
        match source.kind() {
            K::ConnectionRefused
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable => Self::Connect { source },
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => Self::Reset { source },
            K::TimedOut | K::WouldBlock => Self::Timeout {
                phase: TimeoutPhase::Read,
            },
            // ureq reports TLS failures inside the TLS stream as I/O errors wrapping rustls's.
            K::InvalidData
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                Self::Tls {
                    detail: source.to_string(),
                }
            }
            _ => Self::Io { source },
        }
    }
}

fn timeout_phase(timeout: ureq::Timeout) -> TimeoutPhase {
    use ureq::Timeout as T;
    match timeout {
        T::Resolve => TimeoutPhase::Resolve,
        T::Connect => TimeoutPhase::Connect,
        T::SendRequest | T::SendBody | T::PerWrite | T::Await100 => TimeoutPhase::Send,
        T::RecvResponse | T::RecvBody | T::PerRead => TimeoutPhase::Read,
        _ => TimeoutPhase::Overall,
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// A date in the past gives zero; anything unparseable gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate instead of failing.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first [`BODY_EXCERPT_MAX_BYTES`] of a body as lossy UTF-8, cut at a char boundary.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let head = body.get(..BODY_EXCERPT_MAX_BYTES).unwrap_or(body);
    crate::dead_letter::bounded(
        String::from_utf8_lossy(head).into_owned(),
        BODY_EXCERPT_MAX_BYTES,
    )
}

/// Why a client configuration is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No token was configured.
    #[error("no API token: set {var}")]
    MissingToken {
        /// The environment variable to set.
        var: &'static str,
    },
    /// The token cannot be sent in a header.
    #[error("invalid API token: {reason}")]
    InvalidToken {
        /// What is wrong (the token itself is never included).
        reason: &'static str,
    },
    /// The endpoint is not an http(s) URL without credentials, query or fragment.
    #[error("invalid API endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given, credentials and query redacted ([`redact_url`](super::redact_url)).
        endpoint: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The proxy URL is not one ureq accepts (the URL is not repeated: it may hold a password).
    #[error("invalid proxy URL: expected http://[user:password@]host:port")]
    InvalidProxy,
    /// A proxy environment variable is set to something that is not a usable proxy URL.
    #[error(
        "environment variable {var} is not a usable proxy URL (expected \
         http://[user:password@]host:port); fix or unset it"
    )]
    InvalidEnvProxy {
        /// The variable.
        var: &'static str,
    },
    /// The token file (`cloud.api_token_file`) is unusable.
    #[error("cloud.api_token_file {path}: {reason}")]
    InvalidTokenFile {
        /// The file.
        path: String,
        /// What is wrong (the token itself is never included).
        reason: String,
    },
    /// The extra CA file (`cloud.ca_file`) is unusable.
    #[error("cloud.ca_file {path}: {reason}")]
    InvalidCaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A timeout is below its minimum.
    #[error("{field} is {value_ms} ms; allowed: at least {min_ms} ms")]
    InvalidTimeout {
        /// The field name.
        field: &'static str,
        /// The value.
        value_ms: u64,
        /// The minimum.
        min_ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_seconds_and_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let date = "Sun, 06 Nov 1994 08:50:07 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(30)));
        // Obsolete RFC 850 and asctime forms are accepted too.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:50:07 1994", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "99999999999999999999999999"] {
            let parsed = parse_retry_after(bad, now);
            if bad.starts_with('9') {
                assert_eq!(parsed, Some(Duration::from_secs(u64::MAX)));
            } else {
                assert_eq!(parsed, None, "{bad:?}");
            }
        }
    }

    #[test]
    fn excerpt_is_bounded_and_lossy() {
        assert_eq!(body_excerpt(b"short"), "short");
        let long = vec![b'a'; 5000];
        assert_eq!(body_excerpt(&long).len(), BODY_EXCERPT_MAX_BYTES);
        let invalid = vec![0xff_u8; 2000];
        let excerpt = body_excerpt(&invalid);
        assert!(excerpt.len() <= BODY_EXCERPT_MAX_BYTES);
        assert!(excerpt.starts_with('\u{fffd}'));
    }

    #[test]
    fn ureq_errors_map_to_variants() {
        assert!(matches!(
            DeliveryError::from_ureq(ureq::Error::HostNotFound),
            DeliveryError::Dns
        ));
        let phases = [
            (ureq::Timeout::Connect, TimeoutPhase::Connect),
            (ureq::Timeout::Resolve, TimeoutPhase::Resolve),
            (ureq::Timeout::SendBody, TimeoutPhase::Send),
            (ureq::Timeout::RecvResponse, TimeoutPhase::Read),
            (ureq::Timeout::RecvBody, TimeoutPhase::Read),
            (ureq::Timeout::Global, TimeoutPhase::Overall),
        ];
        for (timeout, phase) in phases {
            let mapped = DeliveryError::from_ureq(ureq::Error::Timeout(timeout));
            assert!(
                matches!(mapped, DeliveryError::Timeout { phase: p } if p == phase),
                "{timeout:?}"
            );
        }
        assert!(matches!(
            DeliveryError::from_ureq(ureq::Error::Tls("x")),
            DeliveryError::Tls { .. }
        ));
        assert!(matches!(
            DeliveryError::from_ureq(ureq::Error::BadUri("x".into())),
            DeliveryError::Request { .. }
        ));
    }

    #[test]
    fn io_kinds_map_to_variants() {
        let e = |kind| DeliveryError::from_io(io::Error::from(kind));
        assert!(matches!(
            e(io::ErrorKind::ConnectionRefused),
            DeliveryError::Connect { .. }
        ));
        assert!(matches!(
            e(io::ErrorKind::ConnectionReset),
            DeliveryError::Reset { .. }
        ));
        assert!(matches!(
            e(io::ErrorKind::UnexpectedEof),
            DeliveryError::Reset { .. }
        ));
        assert!(!e(io::ErrorKind::ConnectionRefused).response_possibly_lost());
        assert!(e(io::ErrorKind::ConnectionReset).response_possibly_lost());
    }
}
