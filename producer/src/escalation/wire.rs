//! The versioned binary encoding of an [`Escalation`](super::Escalation).
//!
//! Layout: one format-version byte, then the postcard body of that version. Nothing may
//! follow. Version 1 ([`FORMAT_VERSION_V1`]) is [`WireV1`]; version 2 ([`FORMAT_VERSION`],
//! written since `possibly_submitted` exists) is [`WireV2`]: the version-1 fields followed by
//! one postcard `bool`. Both are read. The field order of each version and the variant order
//! of every enum it holds are part of the format: change them only by adding a new version.
//! Inline images are written as one postcard byte string, so decoding borrows them from the
//! record (zero copy) instead of copying.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{HumanReview, ImageFormat};

/// The version byte written in front of every record this code encodes.
pub const FORMAT_VERSION: u8 = 2;

/// The version byte of records written before `possibly_submitted` existed; still read.
pub const FORMAT_VERSION_V1: u8 = 1;

/// Version 2 of the record body: version 1, then `possibly_submitted`. Postcard writes a
/// nested struct as its fields in order with no framing, so the bytes are exactly a
/// version-1 body followed by one byte (0 or 1).
#[derive(Serialize, Deserialize)]
pub(super) struct WireV2<'a> {
    #[serde(borrow)]
    pub v1: WireV1<'a>,
    pub possibly_submitted: bool,
}

/// Version 1 of the record body (also the first part of version 2).
#[derive(Serialize, Deserialize)]
pub(super) struct WireV1<'a> {
    #[serde(borrow)]
    pub detector_id: Cow<'a, str>,
    #[serde(borrow)]
    pub image: WireImage<'a>,
    pub image_format: Option<ImageFormat>,
    #[serde(borrow)]
    pub image_query_id: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    pub patience_time_s: Option<f64>,
    pub confidence_threshold: Option<f64>,
    pub human_review: Option<HumanReview>,
    /// The metadata object as compact JSON text (postcard cannot hold a `serde_json::Value`).
    #[serde(borrow)]
    pub metadata_json: Option<Cow<'a, str>>,
    pub enqueued_at_unix_ms: u64,
}

/// Where the image is: inline bytes, or a path kept for Python-layout compatibility.
#[derive(Serialize, Deserialize)]
pub(super) enum WireImage<'a> {
    Inline(#[serde(borrow)] WireBytes<'a>),
    Path(#[serde(borrow)] Cow<'a, str>),
}

/// A byte slice written as one postcard byte string (serde writes `[u8]` element by element).
pub(super) struct WireBytes<'a>(pub &'a [u8]);

impl Serialize for WireBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireBytes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BorrowedBytes).map(WireBytes)
    }
}

struct BorrowedBytes;

impl<'de> Visitor<'de> for BorrowedBytes {
    type Value = &'de [u8];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a borrowed byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_bytes<E: serde::de::Error>(self, _v: &[u8]) -> Result<Self::Value, E> {
        Err(E::custom("image bytes must be borrowed from the record"))
    }
}
