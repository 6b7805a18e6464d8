//! Field-level validation of an [`Escalation`](super::Escalation).

use std::fmt;
use std::path::PathBuf;

use super::metadata::METADATA_SIZE_LIMIT_BYTES;

/// Longest id accepted, in characters.
pub const ID_LEN_MAX_CHARS: usize = 200;

/// Default largest image accepted: 16 MiB. The edge's nginx caps uploads at 10 MiB.
pub const DEFAULT_IMAGE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Limits that [`Escalation::validate_with`](super::Escalation::validate_with) enforces
/// beyond the fixed API rules, and that [`ImageSource::load`](super::ImageSource::load)
/// applies when it reads a path image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest image, inline or on disk. Default [`DEFAULT_IMAGE_SIZE_MAX_BYTES`]; minimum 1.
    pub image_size_max_bytes: usize,
    /// The only directory path images may name (absolute). Default `None`: path images are
    /// refused, at enqueue and when the reader loads them (`docs/SEMANTICS.md` §12).
    pub images_dir: Option<PathBuf>,
}

impl RecordLimits {
    /// The defaults, usable in `const` context.
    pub const DEFAULT: Self = Self {
        image_size_max_bytes: DEFAULT_IMAGE_SIZE_MAX_BYTES,
        images_dir: None,
    };
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which id field a [`ValidationError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdField {
    /// `detector_id`.
    DetectorId,
    /// `image_query_id`.
    ImageQueryId,
    /// `request_id`.
    RequestId,
}

impl fmt::Display for IdField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DetectorId => "detector_id",
            Self::ImageQueryId => "image_query_id",
            Self::RequestId => "request_id",
        })
    }
}

/// One rule an escalation breaks. Each message names the field, the value and what is allowed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// An id is the empty string.
    #[error("{field} is empty; allowed: 1 to {ID_LEN_MAX_CHARS} printable ASCII characters without spaces")]
    IdEmpty {
        /// The field.
        field: IdField,
    },
    /// An id is longer than [`ID_LEN_MAX_CHARS`].
    #[error("{field} {excerpt:?}… is {length_chars} characters long; allowed: at most {ID_LEN_MAX_CHARS}")]
    IdTooLong {
        /// The field.
        field: IdField,
        /// The first 40 characters of the value.
        excerpt: String,
        /// The value's length in characters.
        length_chars: usize,
    },
    /// An id holds a character outside printable ASCII (`!`..=`~`).
    #[error("{field} {value:?} has {character:?} at character {position}; allowed: printable ASCII without spaces ('!'..='~')")]
    IdInvalidCharacter {
        /// The field.
        field: IdField,
        /// The value (at most [`ID_LEN_MAX_CHARS`] characters, so it is short).
        value: String,
        /// The first offending character.
        character: char,
        /// Its index, in characters.
        position: usize,
    },
    /// `confidence_threshold` is not a finite number in `0..=1`.
    #[error("confidence_threshold is {value}; allowed: a finite number in 0..=1")]
    ConfidenceThresholdOutOfRange {
        /// The value.
        value: f64,
    },
    /// `patience_time` is negative, NaN, infinite, below 1 ms but not 0, or above 365 days.
    #[error(
        "patience_time is {value_s:?} s; allowed: 0, or 0.001 to 31536000 seconds (365 days), >= 0"
    )]
    PatienceTimeOutOfRange {
        /// The value in seconds.
        value_s: f64,
    },
    /// The metadata is larger than the SDK accepts.
    #[error("metadata is {size_bytes} characters as Python's json.dumps writes it; allowed: at most {max_bytes} (the Groundlight SDK's len(json.dumps(metadata)) limit)")]
    MetadataTooLarge {
        /// `len(json.dumps(metadata))`, in characters (= bytes: the text is ASCII).
        size_bytes: usize,
        /// The limit, [`METADATA_SIZE_LIMIT_BYTES`].
        max_bytes: usize,
    },
    /// The inline image has no bytes.
    #[error("image is empty (0 bytes); allowed: 1 to {max_bytes} bytes")]
    ImageEmpty {
        /// The configured limit.
        max_bytes: usize,
    },
    /// The inline image is larger than the configured limit.
    #[error("image is {size_bytes} bytes; allowed: 1 to {max_bytes} bytes")]
    ImageTooLarge {
        /// The image size.
        size_bytes: usize,
        /// The configured limit.
        max_bytes: usize,
    },
    /// The image path is not an absolute UTF-8 path.
    #[error("image path {path:?} is not allowed: it must be absolute and valid UTF-8")]
    ImagePathInvalid {
        /// The path, lossily converted for display.
        path: String,
    },
    /// The image path is outside the configured images directory, has a `..` component, or
    /// no images directory is configured.
    #[error("image path {path:?} is refused: {reason}")]
    ImagePathRefused {
        /// The path, lossily converted for display.
        path: String,
        /// Why, and what is allowed.
        reason: String,
    },
}

/// Checks one id field.
pub(super) fn check_id(field: IdField, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::IdEmpty { field });
    }
    let length_chars = value.chars().count();
    if length_chars > ID_LEN_MAX_CHARS {
        let excerpt = value.chars().take(40).collect();
        return Err(ValidationError::IdTooLong {
            field,
            excerpt,
            length_chars,
        });
    }
    match value
        .chars()
        .enumerate()
        .find(|(_, c)| !('!'..='~').contains(c))
    {
        Some((position, character)) => Err(ValidationError::IdInvalidCharacter {
            field,
            value: value.to_owned(),
            character,
            position,
        }),
        None => Ok(()),
    }
}

/// Checks `confidence_threshold`.
pub(super) fn check_confidence_threshold(value: Option<f64>) -> Result<(), ValidationError> {
    match value {
        Some(v) if !(v.is_finite() && (0.0..=1.0).contains(&v)) => {
            Err(ValidationError::ConfidenceThresholdOutOfRange { value: v })
        }
        _ => Ok(()),
    }
}

/// Smallest non-zero `patience_time`: 1 ms (a smaller one, down to subnormals like
/// `1e-320`, only shows a broken caller).
pub const PATIENCE_TIME_MIN_S: f64 = 0.001;

/// Largest `patience_time`: 365 days (`1e308` passed the old check and went to the cloud).
pub const PATIENCE_TIME_MAX_S: f64 = 365.0 * 86_400.0;

/// Checks `patience_time`: 0 (edge-endpoint's route allows `ge=0`; the SDK sends `0.0`), or
/// [`PATIENCE_TIME_MIN_S`] to [`PATIENCE_TIME_MAX_S`]. The API spec has no bound
/// (`type: number, format: float`); NaN, infinities, negatives and absurd magnitudes mean
/// nothing as a patience and are refused at enqueue (probe F27).
pub(super) fn check_patience_time(value_s: Option<f64>) -> Result<(), ValidationError> {
    match value_s {
        Some(v) if !(v == 0.0 || (PATIENCE_TIME_MIN_S..=PATIENCE_TIME_MAX_S).contains(&v)) => {
            Err(ValidationError::PatienceTimeOutOfRange { value_s: v })
        }
        _ => Ok(()),
    }
}

/// Checks `len(json.dumps(metadata))` against the SDK's limit.
pub(super) fn check_metadata_size(size_bytes: usize) -> Result<(), ValidationError> {
    if size_bytes > METADATA_SIZE_LIMIT_BYTES {
        return Err(ValidationError::MetadataTooLarge {
            size_bytes,
            max_bytes: METADATA_SIZE_LIMIT_BYTES,
        });
    }
    Ok(())
}

/// Checks an image size against the limits.
pub(super) fn check_image_size(
    size_bytes: usize,
    limits: &RecordLimits,
) -> Result<(), ValidationError> {
    let max_bytes = limits.image_size_max_bytes;
    if size_bytes == 0 {
        Err(ValidationError::ImageEmpty { max_bytes })
    } else if size_bytes > max_bytes {
        Err(ValidationError::ImageTooLarge {
            size_bytes,
            max_bytes,
        })
    } else {
        Ok(())
    }
}
