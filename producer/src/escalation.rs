//! The escalation record: what the cloud call needs, validated and versioned.

mod ids;
mod image_file;
mod metadata;
mod validate;
mod wire;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use ids::{new_image_query_id, new_request_id, IMAGE_QUERY_ID_PREFIX, REQUEST_ID_PREFIX};
#[doc(hidden)]
pub use metadata::python_float_repr;
pub use metadata::{Metadata, MetadataError, METADATA_SIZE_LIMIT_BYTES};
pub use validate::{
    IdField, RecordLimits, ValidationError, DEFAULT_IMAGE_SIZE_MAX_BYTES, ID_LEN_MAX_CHARS,
};
pub use wire::{FORMAT_VERSION, FORMAT_VERSION_V1};

use wire::{WireBytes, WireImage, WireV1, WireV2};

/// One escalation: an image query to submit to the cloud.
///
/// Fields are public; [`validate`](Self::validate) checks them, [`encode`](Self::encode)
/// validates before it writes, and [`decode`](Self::decode) reads what `encode` wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    /// The detector, e.g. `det_2abc…`.
    pub detector_id: String,
    /// The image, inline (the default) or a file path (Python-layout compatibility).
    pub image: ImageSource,
    /// The image's format; `None` sniffs it from the bytes at send time.
    pub image_format: Option<ImageFormat>,
    /// The id the cloud image query gets (`iq_…`); the cloud rejects a second submission.
    pub image_query_id: String,
    /// The edge request id (`req_uu…`), sent as `X-Request-Id`.
    pub request_id: String,
    /// `patience_time` in seconds, when the client set one.
    pub patience_time_s: Option<f64>,
    /// `confidence_threshold` in `0..=1`, when set.
    pub confidence_threshold: Option<f64>,
    /// `human_review`, when set.
    pub human_review: Option<HumanReview>,
    /// Edge metadata (edge result, audit flag), when set.
    pub metadata: Option<Metadata>,
    /// When the escalation was enqueued, in milliseconds since the Unix epoch.
    pub enqueued_at_unix_ms: u64,
    /// The producer already tried to submit this escalation itself (a synchronous call) and
    /// that call failed *after* the request may have reached the cloud (a read timeout, a
    /// reset connection, a 5xx): the cloud may already hold this image query id. The worker
    /// then treats the record as possibly submitted (`docs/SEMANTICS.md` §6). `false` for
    /// records of format version 1, which had no such field.
    pub possibly_submitted: bool,
}

/// The `human_review` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HumanReview {
    /// `"DEFAULT"`: the cloud decides.
    Default,
    /// `"ALWAYS"`: always send to a human.
    Always,
    /// `"NEVER"`: never send to a human.
    Never,
}

impl HumanReview {
    /// The API spelling: `"DEFAULT"`, `"ALWAYS"` or `"NEVER"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::Always => "ALWAYS",
            Self::Never => "NEVER",
        }
    }
}

impl fmt::Display for HumanReview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `human_review` string that is not `DEFAULT`, `ALWAYS` or `NEVER`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("human_review is {0:?}; allowed: \"DEFAULT\", \"ALWAYS\" or \"NEVER\"")]
pub struct ParseHumanReviewError(pub String);

impl FromStr for HumanReview {
    type Err = ParseHumanReviewError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "DEFAULT" => Ok(Self::Default),
            "ALWAYS" => Ok(Self::Always),
            "NEVER" => Ok(Self::Never),
            other => Err(ParseHumanReviewError(other.to_owned())),
        }
    }
}

/// Image formats the API accepts (`spec/public-api.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// `image/jpeg`, also the fallback when sniffing finds nothing.
    Jpeg,
    /// `image/png`.
    Png,
    /// `image/gif`.
    Gif,
    /// `image/webp`.
    Webp,
    /// `image/bmp`.
    Bmp,
    /// `image/x-icon`.
    Icon,
}

impl ImageFormat {
    /// The MIME type sent as `Content-Type`.
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Bmp => "image/bmp",
            Self::Icon => "image/x-icon",
        }
    }

    /// Recognises the format from the file's magic bytes.
    pub fn sniff(image: &[u8]) -> Option<Self> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        if image.starts_with(b"\xff\xd8\xff") {
            Some(Self::Jpeg)
        } else if image.starts_with(PNG) {
            Some(Self::Png)
        } else if image.starts_with(b"GIF87a") || image.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if image.len() >= 12
            && image.starts_with(b"RIFF")
            && image.get(8..12) == Some(b"WEBP")
        {
            Some(Self::Webp)
        } else if image.starts_with(b"BM") {
            Some(Self::Bmp)
        } else if image.starts_with(b"\x00\x00\x01\x00") {
            Some(Self::Icon)
        } else {
            None
        }
    }
}

/// Where an escalation's image bytes are.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The bytes, stored in the record itself (one fsync covers record and image).
    Inline(Bytes),
    /// An absolute path to a file, like the Python original's `image_path_str`. Allowed only
    /// below the configured images directory ([`RecordLimits::images_dir`]); the reader opens
    /// it without following links (`docs/SEMANTICS.md` §12).
    Path(PathBuf),
}

impl fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
            Self::Path(path) => f.debug_tuple("Path").field(path).finish(),
        }
    }
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image file is missing or unreadable.
    #[error("image file {path:?} could not be read: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error (`NotFound` when missing).
        #[source]
        source: io::Error,
    },
    /// The image is empty or too large.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The path is not one the reader may open: outside the images directory (or none is
    /// configured), through a symbolic link, not a regular file, or hard-linked.
    #[error("image file {path:?} is refused: {reason}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why, and what is allowed.
        reason: String,
    },
}

impl ImageSource {
    /// The image bytes: a cheap clone when inline; when on disk, a bounded read confined to
    /// `limits.images_dir` (see [`ImageError::Refused`]).
    pub fn load(&self, limits: &RecordLimits) -> Result<Bytes, ImageError> {
        match self {
            Self::Inline(bytes) => {
                validate::check_image_size(bytes.len(), limits)?;
                Ok(bytes.clone())
            }
            Self::Path(path) => image_file::read(path, limits),
        }
    }
}

impl Escalation {
    /// `self` with its image in memory, ready to send: borrowed as is when the image is
    /// inline, a copy holding the file's bytes when it is a path image (read under
    /// `limits`, see [`ImageSource::load`]). The worker calls this with the queue's own
    /// limits before each attempt, so a destination (the worker's `Destination`) only ever
    /// sees inline images and the images directory is configured in one place
    /// ([`QueueOptions::images_dir`](crate::QueueOptions::images_dir)).
    pub fn with_image_loaded(
        &self,
        limits: &RecordLimits,
    ) -> Result<std::borrow::Cow<'_, Self>, ImageError> {
        match &self.image {
            ImageSource::Inline(_) => Ok(std::borrow::Cow::Borrowed(self)),
            ImageSource::Path(_) => {
                let bytes = self.image.load(limits)?;
                let mut loaded = self.clone();
                loaded.image = ImageSource::Inline(bytes);
                Ok(std::borrow::Cow::Owned(loaded))
            }
        }
    }
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The record breaks a rule; nothing was encoded.
    #[error("escalation is invalid: {0}")]
    Invalid(#[from] ValidationError),
    /// postcard failed (not expected for a valid record).
    #[error("postcard could not encode the escalation: {0}")]
    Postcard(#[source] postcard::Error),
}

/// Why bytes could not be decoded into an [`Escalation`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record has no bytes at all.
    #[error("escalation record is empty (0 bytes)")]
    Empty,
    /// The version byte is one this code does not read.
    #[error("escalation record has format version {found}; this build reads versions {FORMAT_VERSION_V1} to {supported}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The newest version this build reads (it reads every version from 1 up).
        supported: u8,
    },
    /// The body is not a valid postcard encoding of the record.
    #[error("escalation record body is malformed: {source}")]
    Malformed {
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },
    /// Bytes follow a complete record.
    #[error("escalation record has {count} trailing bytes after a complete record")]
    TrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
    /// The stored metadata is not a JSON object.
    #[error("escalation record metadata is invalid: {source}")]
    Metadata {
        /// Why.
        #[source]
        source: MetadataError,
    },
}

impl Escalation {
    /// A new escalation for `detector_id` with fresh ids, enqueued now, no optional fields.
    pub fn new(detector_id: impl Into<String>, image: ImageSource) -> Self {
        Self {
            detector_id: detector_id.into(),
            image,
            image_format: None,
            image_query_id: new_image_query_id(),
            request_id: new_request_id(),
            patience_time_s: None,
            confidence_threshold: None,
            human_review: None,
            metadata: None,
            enqueued_at_unix_ms: escalation_queue_wal::clock::now_unix_ms(),
            possibly_submitted: false,
        }
    }

    /// [`validate_with`](Self::validate_with) the default [`RecordLimits`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_with(&RecordLimits::DEFAULT)
    }

    /// Checks every field; returns the first rule broken. Does no I/O: a path image is
    /// checked for shape only (absolute, UTF-8, lexically inside `limits.images_dir`), its
    /// file and bytes when [`ImageSource::load`] reads them.
    pub fn validate_with(&self, limits: &RecordLimits) -> Result<(), ValidationError> {
        validate::check_id(IdField::DetectorId, &self.detector_id)?;
        validate::check_id(IdField::ImageQueryId, &self.image_query_id)?;
        validate::check_id(IdField::RequestId, &self.request_id)?;
        validate::check_confidence_threshold(self.confidence_threshold)?;
        validate::check_patience_time(self.patience_time_s)?;
        if let Some(metadata) = &self.metadata {
            validate::check_metadata_size(metadata.python_json_len())?;
        }
        match &self.image {
            ImageSource::Inline(bytes) => validate::check_image_size(bytes.len(), limits),
            ImageSource::Path(path) if path.is_absolute() && path.to_str().is_some() => {
                match image_file::confine(path, limits) {
                    Ok(_) => Ok(()),
                    Err(reason) => Err(ValidationError::ImagePathRefused {
                        path: path.to_string_lossy().into_owned(),
                        reason,
                    }),
                }
            }
            ImageSource::Path(path) => Err(ValidationError::ImagePathInvalid {
                path: path.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The `Content-Type` for `image`: the stored format, else sniffed, else `image/jpeg`.
    pub fn content_type(&self, image: &[u8]) -> &'static str {
        self.image_format
            .or_else(|| ImageFormat::sniff(image))
            .unwrap_or(ImageFormat::Jpeg)
            .mime_type()
    }

    /// Validates, then encodes: the version byte ([`FORMAT_VERSION`]) followed by the
    /// postcard body.
    pub fn encode(&self, limits: &RecordLimits) -> Result<Vec<u8>, EncodeError> {
        Ok(self.encode_parts(limits)?.to_vec())
    }

    /// [`encode`](Self::encode) without copying an inline image: the record as the bytes
    /// before the image, the image itself (shared, not copied) and the bytes after it.
    /// Their concatenation is exactly what `encode` returns; the queue appends the parts
    /// as one wal record (probe F27: enqueue held the image three times).
    pub fn encode_parts(&self, limits: &RecordLimits) -> Result<EncodedRecord, EncodeError> {
        self.validate_with(limits)?;
        let image = match &self.image {
            ImageSource::Inline(bytes) => WireImage::Inline(WireBytes(bytes)),
            // `validate_with` checked that the path is UTF-8.
            ImageSource::Path(path) => WireImage::Path(path.to_string_lossy()),
        };
        let v1 = WireV1 {
            detector_id: self.detector_id.as_str().into(),
            image,
            image_format: self.image_format,
            image_query_id: self.image_query_id.as_str().into(),
            request_id: self.request_id.as_str().into(),
            patience_time_s: self.patience_time_s,
            confidence_threshold: self.confidence_threshold,
            human_review: self.human_review,
            metadata_json: self.metadata.as_ref().map(|m| m.to_compact_json().into()),
            enqueued_at_unix_ms: self.enqueued_at_unix_ms,
        };
        let wire = WireV2 {
            v1,
            possibly_submitted: self.possibly_submitted,
        };
        let image = match &self.image {
            ImageSource::Inline(bytes) => Some(bytes),
            ImageSource::Path(_) => None,
        };
        let split = SplitAtImage {
            image: image.map(|b| &b[..]),
            head: vec![FORMAT_VERSION],
            tail: Vec::new(),
            split: false,
        };
        let split = postcard::serialize_with_flavor(&wire, split).map_err(EncodeError::Postcard)?;
        Ok(EncodedRecord {
            image: image.filter(|_| split.split).cloned(),
            head: split.head,
            tail: split.tail,
        })
    }

    /// Decodes a record written by [`encode`](Self::encode). An inline image shares
    /// `record`'s memory (no copy). The result is not validated: call
    /// [`validate_with`](Self::validate_with) to check it.
    pub fn decode(record: &Bytes) -> Result<Self, DecodeError> {
        let (&found, body) = record.split_first().ok_or(DecodeError::Empty)?;
        let (wire, possibly_submitted) = match found {
            FORMAT_VERSION_V1 => (take_whole::<WireV1<'_>>(body)?, false),
            FORMAT_VERSION => {
                let v2 = take_whole::<WireV2<'_>>(body)?;
                (v2.v1, v2.possibly_submitted)
            }
            _ => {
                return Err(DecodeError::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
        };
        let metadata = match wire.metadata_json {
            Some(text) => Some(
                Metadata::from_json_str(&text)
                    .map_err(|source| DecodeError::Metadata { source })?,
            ),
            None => None,
        };
        let image = match wire.image {
            WireImage::Inline(WireBytes(slice)) => ImageSource::Inline(subslice(record, slice)),
            WireImage::Path(path) => ImageSource::Path(PathBuf::from(path.into_owned())),
        };
        Ok(Self {
            detector_id: wire.detector_id.into_owned(),
            image,
            image_format: wire.image_format,
            image_query_id: wire.image_query_id.into_owned(),
            request_id: wire.request_id.into_owned(),
            patience_time_s: wire.patience_time_s,
            confidence_threshold: wire.confidence_threshold,
            human_review: wire.human_review,
            metadata,
            enqueued_at_unix_ms: wire.enqueued_at_unix_ms,
            possibly_submitted,
        })
    }

    /// Milliseconds between enqueueing and `now_unix_ms` (0 if the clock went backwards).
    pub fn age_ms(&self, now_unix_ms: u64) -> u64 {
        now_unix_ms.saturating_sub(self.enqueued_at_unix_ms)
    }
}

/// An encoded record in three parts: [`head`](Self::parts), the inline image (shared with
/// the escalation, not copied) and the rest. A path image is in `head`.
#[derive(Clone, Debug)]
pub struct EncodedRecord {
    head: Vec<u8>,
    image: Option<Bytes>,
    tail: Vec<u8>,
}

impl EncodedRecord {
    /// The record's bytes in order: before the image, the image (empty for a path image),
    /// after it.
    pub fn parts(&self) -> [&[u8]; 3] {
        [
            &self.head,
            self.image.as_deref().unwrap_or_default(),
            &self.tail,
        ]
    }

    /// The record's length in bytes.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// Never true: a record holds at least its version byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record as one buffer (a copy of the image).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// A postcard output that keeps the image's bytes out of the buffers: the byte string
/// that *is* the escalation's image (same memory) marks the split, everything before it
/// goes to `head`, everything after to `tail`.
struct SplitAtImage<'a> {
    image: Option<&'a [u8]>,
    head: Vec<u8>,
    tail: Vec<u8>,
    split: bool,
}

impl SplitAtImage<'_> {
    fn current(&mut self) -> &mut Vec<u8> {
        if self.split {
            &mut self.tail
        } else {
            &mut self.head
        }
    }
}

impl postcard::ser_flavors::Flavor for SplitAtImage<'_> {
    type Output = Self;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.current().push(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let is_image = self
            .image
            .is_some_and(|image| std::ptr::eq(image, data) && !image.is_empty());
        if is_image && !self.split {
            self.split = true;
        } else {
            self.current().extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Self> {
        Ok(self)
    }
}

/// Decodes one postcard value that must span all of `body`.
fn take_whole<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|source| DecodeError::Malformed { source })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

/// `record.slice(..)` for a slice borrowed from `record`; copies if it somehow is not.
fn subslice(record: &Bytes, slice: &[u8]) -> Bytes {
    let base = record.as_ptr() as usize;
    let start = (slice.as_ptr() as usize).wrapping_sub(base);
    match start.checked_add(slice.len()) {
        Some(end) if start <= record.len() && end <= record.len() => record.slice(start..end),
        _ => Bytes::copy_from_slice(slice),
    }
}

#[cfg(test)]
mod tests;
