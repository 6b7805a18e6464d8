//! The row of the classification table an error falls in ([`ErrorClass`]), and its name.
//!
//! Data only: which class a delivery error is needs the HTTP client's error type, so that
//! mapping is the worker's (`escalation_queue_worker::ErrorClassOf`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The row of the classification table an error falls in.
///
/// Not `#[non_exhaustive]`: the worker's policy table matches every class, so a new class
/// cannot be added without its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Refused, unreachable, DNS, reset, TLS, other socket errors, malformed HTTP.
    Network,
    /// A connect, send or read timeout.
    Timeout,
    /// HTTP 429.
    TooManyRequests,
    /// HTTP 5xx.
    ServerError,
    /// HTTP 408.
    RequestTimeout,
    /// HTTP 400.
    BadRequest,
    /// HTTP 401 or 403.
    Unauthorized,
    /// Any other 4xx.
    ClientError,
    /// 1xx or 3xx (redirects are never followed) or another non-2xx status.
    UnexpectedStatus,
    /// A 2xx whose body is not an ImageQuery.
    BadResponse,
    /// A 2xx whose ImageQuery id is not the one sent (or is empty).
    WrongImageQuery,
    /// The image file is missing, unreadable, empty or too large.
    ImageUnavailable,
    /// The request could not be built.
    RequestBuild,
}

impl ErrorClass {
    /// The class of a non-2xx HTTP status.
    pub fn of_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 | 403 => Self::Unauthorized,
            408 => Self::RequestTimeout,
            429 => Self::TooManyRequests,
            402..=499 => Self::ClientError,
            500..=599 => Self::ServerError,
            _ => Self::UnexpectedStatus,
        }
    }

    /// Every class, in the order of the classification table.
    pub const ALL: [Self; 13] = [
        Self::Network,
        Self::Timeout,
        Self::TooManyRequests,
        Self::ServerError,
        Self::RequestTimeout,
        Self::BadRequest,
        Self::Unauthorized,
        Self::ClientError,
        Self::UnexpectedStatus,
        Self::BadResponse,
        Self::WrongImageQuery,
        Self::ImageUnavailable,
        Self::RequestBuild,
    ];

    /// The snake_case name (the policy row's name; stored in dead letters).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::TooManyRequests => "too_many_requests",
            Self::ServerError => "server_error",
            Self::RequestTimeout => "request_timeout",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::ClientError => "client_error",
            Self::UnexpectedStatus => "unexpected_status",
            Self::BadResponse => "bad_response",
            Self::WrongImageQuery => "wrong_image_query",
            Self::ImageUnavailable => "image_unavailable",
            Self::RequestBuild => "request_build",
        }
    }

    /// The class named `name` ([`as_str`](Self::as_str)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized as its name, as dead-letter entries have always stored it.
impl Serialize for ErrorClass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error class `{name}`")))
    }
}
