//! Escalation metadata and its exact Python-SDK wire encoding.
//!
//! The SDK sends metadata as `url_encode_dict(metadata, size_limit_bytes=1024)`. Since SDK
//! 0.14 (python-sdk PR #148, `bb542361`, 2024-01-18), including the 0.30.x that edge-endpoint
//! pins and 1.x, `src/groundlight/encodings.py` is:
//!
//! ```python
//! data_json = json.dumps(maybe_dict)                       # default separators, ensure_ascii
//! size_bytes = len(data_json)
//! if size_bytes > size_limit_bytes: raise ValueError(...)
//! return base64.urlsafe_b64encode(data_json.encode("utf-8")).decode("utf-8")
//! ```
//!
//! (Up to 0.13.1 it compared `sys.getsizeof(data_json)`, 49 bytes more; no SDK the
//! edge-endpoint uses does that.) So the limit is on the **length of the `json.dumps` text**,
//! not on the base64 text. We render the JSON exactly as `json.dumps` does (`", "` and
//! `": "` separators, `ensure_ascii`: every character outside `' '..='~'` as `\uXXXX`, a
//! character beyond U+FFFF as a surrogate pair of two escapes; Python float `repr`), check
//! its length against [`METADATA_SIZE_LIMIT_BYTES`] and send that same text. Key order
//! differs (serde_json sorts keys, Python keeps insertion order), which changes neither the
//! length nor the meaning. The text is pure ASCII, so its length in characters (Python's
//! `len`) is its length in bytes.
//!
//! One value Python can hold and `serde_json::Value` cannot: an integer outside the 64-bit
//! range (Python ints are unbounded; serde_json would silently turn it into a float, changing
//! both the value sent and its length). [`Metadata::from_json_str`] refuses such text.

use std::io;

use base64::Engine as _;
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

/// The SDK's metadata size limit: the most [`Metadata::python_json_len`] may be
/// (`len(json.dumps(metadata)) <= 1024`).
pub const METADATA_SIZE_LIMIT_BYTES: usize = 1024;

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
    /// An integer literal outside `i64::MIN..=u64::MAX`: Python would send it digit for
    /// digit, we could only send it rounded to a float.
    #[error("metadata integer {literal} is outside the 64-bit range (-9223372036854775808 to 18446744073709551615) and cannot be sent unchanged; write it as a string or a float")]
    IntegerOutOfRange {
        /// The literal (its first 40 characters).
        literal: String,
    },
}

impl Metadata {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Parses JSON text that must hold an object whose integers fit in 64 bits, reading
    /// numbers as Python's `json.loads` does (the integer `-0` is the integer 0, floats are
    /// correctly rounded).
    pub fn from_json_str(text: &str) -> Result<Self, MetadataError> {
        let parse = |text: &str| -> Result<Value, MetadataError> {
            serde_json::from_str(text).map_err(|source| MetadataError::Json { source })
        };
        let value = parse(text)?;
        let value = match python_integers(text)? {
            Some(rewritten) => parse(&rewritten)?,
            None => value,
        };
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

    /// What the SDK compares with [`METADATA_SIZE_LIMIT_BYTES`]: `len(json.dumps(metadata))`,
    /// the length of [`to_python_json`](Self::to_python_json) (ASCII, so characters = bytes).
    pub fn python_json_len(&self) -> usize {
        self.to_python_json().len()
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

/// Reads the integer literals (outside strings) of `text`, which is valid JSON, as Python
/// does: refuses those that fit neither `i64` nor `u64`, and returns the text with each
/// integer `-0` rewritten to `0` (serde_json would read it as the float `-0.0`, which
/// `json.dumps` writes as `-0.0`; Python's int `-0` is `0`). `None`: nothing to rewrite.
/// A number token is `-`? digits, then an optional fraction and exponent; an integer
/// literal is one with neither.
fn python_integers(text: &str) -> Result<Option<String>, MetadataError> {
    let mut negative_zeros = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1, // skip the escaped character
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let token = &text[start..i];
            if token.contains(['.', 'e', 'E']) {
                continue;
            }
            if token == "-0" {
                negative_zeros.push(start);
            } else if token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                return Err(MetadataError::IntegerOutOfRange {
                    literal: token.chars().take(40).collect(),
                });
            }
            continue;
        }
        i += 1;
    }
    if negative_zeros.is_empty() {
        return Ok(None);
    }
    let mut rewritten = String::with_capacity(text.len());
    let mut copied = 0;
    for start in negative_zeros {
        rewritten.push_str(&text[copied..start]);
        copied = start + 1; // drop the '-'
    }
    rewritten.push_str(&text[copied..]);
    Ok(Some(rewritten))
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
pub fn python_float_repr(value: f64) -> String {
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

    /// The SDK measures `len(json.dumps(md))` (since 0.14), not `sys.getsizeof`.
    #[test]
    fn python_json_len_is_the_length_of_the_json_dumps_text() {
        assert_eq!(meta(json!({})).python_json_len(), 2);
        assert_eq!(
            meta(json!({"k": "\u{e9}"})).python_json_len(),
            r#"{"k": "\u00e9"}"#.len()
        );
    }

    /// Python ints are unbounded; ours are 64-bit. Text beyond that is refused, not rounded.
    #[test]
    fn integers_beyond_64_bits_are_refused_not_rounded() {
        for ok in [
            r#"{"a": 18446744073709551615, "b": -9223372036854775808}"#,
            r#"{"a": 1e300, "b": 12345678901234567890e5, "s": "99999999999999999999999"}"#,
            r#"{"a": 123456789012345678901234567890.5, "s": "\"99999999999999999999999"}"#,
        ] {
            let parsed = Metadata::from_json_str(ok);
            assert!(
                !matches!(parsed, Err(MetadataError::IntegerOutOfRange { .. })),
                "{ok}: {parsed:?}"
            );
        }
        for bad in [
            r#"{"a": 18446744073709551616}"#,
            r#"{"a": [1, {"b": -9223372036854775809}]}"#,
        ] {
            let err = Metadata::from_json_str(bad).expect_err(bad);
            assert!(
                matches!(err, MetadataError::IntegerOutOfRange { .. }),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().contains("outside the 64-bit range"),
                "{err}"
            );
        }
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
