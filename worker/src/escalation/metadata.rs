//! Escalation metadata and its exact Python-SDK wire encoding.
//!
//! The SDK sends metadata as `url_encode_dict(metadata, size_limit_bytes=1024)`
//! (python-sdk `src/groundlight/encodings.py`):
//!
//! ```python
//! data_json = json.dumps(maybe_dict)                       # default separators, ensure_ascii
//! if sys.getsizeof(data_json) > size_limit_bytes: raise ValueError(...)
//! return base64.urlsafe_b64encode(data_json.encode("utf-8")).decode("utf-8")
//! ```
//!
//! Our reading of the 1 KiB limit: it applies to the **Python `str` object** holding the JSON
//! text, not to the base64 text and not to the raw JSON length. `json.dumps` escapes every
//! non-ASCII character (`ensure_ascii=True`), so the text is pure ASCII and
//! `sys.getsizeof` is a fixed 49-byte object header plus one byte per character on 64-bit
//! CPython 3.3–3.11 (41 bytes from 3.12 on). We use the larger, stricter 49, so a record we
//! accept is also accepted by every SDK version: at most 975 bytes of JSON text, which is
//! about 1.3 KiB once base64-encoded. We render the JSON exactly as `json.dumps` does
//! (`", "` and `": "` separators, `\uXXXX` escapes, Python float `repr`), and send that same
//! text, so the size we check is the size of what we send. Key order differs (serde_json
//! sorts keys, Python keeps insertion order), which changes neither the size nor the meaning.

use std::io;

use base64::Engine as _;
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

/// The SDK's metadata size limit in bytes, as measured by [`Metadata::python_size_bytes`].
pub const METADATA_SIZE_LIMIT_BYTES: usize = 1024;

/// `sys.getsizeof("")` on 64-bit CPython 3.3–3.11: the header of a compact ASCII `str`.
const CPYTHON_ASCII_STR_OVERHEAD_BYTES: usize = 49;

/// Metadata attached to an escalation: a JSON object, as the API requires.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Map<String, Value>);

/// Why a JSON text is not valid metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The text is not JSON.
    #[error("metadata is not valid JSON: {source}")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is valid but not an object (`{...}`); the API takes only objects.
    #[error("metadata must be a JSON object, got a JSON {kind}")]
    NotAnObject {
        /// The JSON type found: "array", "string", "number", "bool" or "null".
        kind: &'static str,
    },
}

impl Metadata {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Parses JSON text that must hold an object.
    pub fn from_json_str(text: &str) -> Result<Self, MetadataError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| MetadataError::Json { source })?;
        Self::try_from(value)
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Consumes the metadata and returns the JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Compact JSON text, used to store the metadata in a record.
    pub fn to_compact_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// The JSON text exactly as Python's `json.dumps(metadata)` renders it (up to key order).
    pub fn to_python_json(&self) -> String {
        let mut out = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
        // Writing a `Value` into a Vec cannot fail: maps have string keys and numbers are finite.
        if serde::Serialize::serialize(&self.0, &mut serializer).is_err() {
            return String::from("{}");
        }
        // The formatter escapes everything outside printable ASCII, so the text is ASCII.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The size the SDK compares with [`METADATA_SIZE_LIMIT_BYTES`]: `sys.getsizeof` of the
    /// `json.dumps` text (see the module docs for why this is 49 + the text length).
    pub fn python_size_bytes(&self) -> usize {
        CPYTHON_ASCII_STR_OVERHEAD_BYTES + self.to_python_json().len()
    }

    /// The `metadata` query parameter: URL-safe base64 **with padding** of the Python JSON text,
    /// as `base64.urlsafe_b64encode` produces.
    pub fn to_query_value(&self) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(self.to_python_json().as_bytes())
    }
}

impl TryFrom<Value> for Metadata {
    type Error = MetadataError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Object(map) => Ok(Self(map)),
            Value::Array(_) => Err(MetadataError::NotAnObject { kind: "array" }),
            Value::String(_) => Err(MetadataError::NotAnObject { kind: "string" }),
            Value::Number(_) => Err(MetadataError::NotAnObject { kind: "number" }),
            Value::Bool(_) => Err(MetadataError::NotAnObject { kind: "bool" }),
            Value::Null => Err(MetadataError::NotAnObject { kind: "null" }),
        }
    }
}

impl From<Map<String, Value>> for Metadata {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

/// A serde_json formatter that writes what CPython's `json.dumps` writes by default.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json already escaped `"`, `\` and C0 controls; Python also escapes DEL and
        // everything non-ASCII, as UTF-16 code units in lowercase hex.
        for ch in fragment.chars() {
            if (' '..='~').contains(&ch) {
                let mut buf = [0_u8; 4];
                w.write_all(ch.encode_utf8(&mut buf).as_bytes())?;
            } else {
                let mut units = [0_u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
}

/// CPython's `repr(float)`: shortest round-trip digits, positional for exponents in
/// `-4..16`, otherwise `d.ddde±XX` with at least two exponent digits.
pub(crate) fn python_float_repr(value: f64) -> String {
    if !value.is_finite() {
        // `Value` cannot hold these; mirror Python's spelling anyway.
        return if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e-7".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        format!("{sign}{}", positional(&digits, exponent))
    } else {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{head}{frac}e{exp_sign}{:02}",
            exponent.unsigned_abs()
        )
    }
}

/// Places the decimal point in `digits` (d.ddd × 10^exponent), always keeping a fraction.
fn positional(digits: &str, exponent: i32) -> String {
    let point = exponent + 1; // digits before the decimal point
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        return format!("0.{zeros}{digits}");
    }
    let point = point.unsigned_abs() as usize;
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        format!("{digits}{zeros}.0")
    } else {
        let (int, frac) = digits.split_at(point);
        format!("{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(value: Value) -> Metadata {
        Metadata::try_from(value).expect("object")
    }

    #[test]
    fn python_json_matches_cpython_json_dumps() {
        // Expected text produced by CPython 3.11 `json.dumps` for the same object.
        let m =
            meta(json!({"a": 1e-5, "b": [1.5e16, 0.0001, 123.0, 1e22, -0.0], "c": "é😀\u{7f}"}));
        assert_eq!(
            m.to_python_json(),
            r#"{"a": 1e-05, "b": [1.5e+16, 0.0001, 123.0, 1e+22, -0.0], "c": "\u00e9\ud83d\ude00\u007f"}"#
        );
    }

    #[test]
    fn python_float_repr_cases() {
        let cases = [
            (0.9, "0.9"),
            (1.0, "1.0"),
            (0.5e-4, "5e-05"),
            (1234.5678, "1234.5678"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (-2.5e-7, "-2.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.0, "0.0"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value}");
        }
    }

    #[test]
    fn query_value_is_padded_urlsafe_base64() {
        // python: base64.urlsafe_b64encode(json.dumps({"k": "??>"}).encode())
        let m = meta(json!({"k": "??>"}));
        assert_eq!(m.to_python_json(), r#"{"k": "??>"}"#);
        assert_eq!(m.to_query_value(), "eyJrIjogIj8_PiJ9");
        let m = meta(json!({"is_edge_audit": true}));
        assert_eq!(m.to_query_value(), "eyJpc19lZGdlX2F1ZGl0IjogdHJ1ZX0=");
    }

    #[test]
    fn size_is_cpython_str_size() {
        let m = meta(json!({}));
        assert_eq!(m.python_size_bytes(), 49 + 2);
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(matches!(
            Metadata::from_json_str("[1]"),
            Err(MetadataError::NotAnObject { kind: "array" })
        ));
        assert!(matches!(
            Metadata::from_json_str("{"),
            Err(MetadataError::Json { .. })
        ));
    }
}
