//! Reading the Python (edge-endpoint) queue directory: which data files there are and in
//! what order its reader would have taken them, how far each tracker says the reader got,
//! the lines of a data file (bytes, universal newlines, NUL damage), and one line as the
//! legacy `EscalationInfo`.
//!
//! The layout (`docs/EDGE-ENDPOINT.md`, "What the importer reads"):
//! `writing/<seg>` and `reading/<seg>` hold JSON lines, `<seg>` =
//! `YYYYmmdd_HHMMSS_ffffff-<27-char KSUID>.txt`; `reading/tracking-<seg>` holds one byte per
//! line the reader finished, so the line at index `len(tracker)` may have been in flight;
//! `images/<detector>-<timestamp>-<KSUID>` the raw image of each line, named by absolute path
//! in the line; `failed/*.json` permanent failures; `request-cache/<request_id>` empty
//! marker files of the last request ids the reader finished.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

/// The tracker file prefix in `reading/`.
pub const TRACKING_PREFIX: &str = "tracking-";

/// Where a data file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// `reading/`, with a tracker.
    Tracked,
    /// `reading/`, without a tracker: claimed by a reader that crashed before it opened
    /// the tracker. The Python reader never looks at it again.
    ClaimedWithoutTracker,
    /// `writing/`.
    Writing,
}

/// One legacy data file, in the order the importer takes them.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// `reading/<name>` or `writing/<name>`, relative to the legacy directory.
    pub rel: String,
    /// The absolute path.
    pub path: PathBuf,
    /// Its tracker, for [`Place::Tracked`].
    pub tracker: Option<PathBuf>,
    /// Where it was found.
    pub place: Place,
    /// Whether the name matches the writer's pattern (the Python reader ignores others).
    pub name_matches: bool,
}

/// The legacy directory, listed.
#[derive(Debug, Default)]
pub struct Listing {
    /// Data files: tracked `reading/` files by name, untracked `reading/` files by name,
    /// then `writing/` files by name (what the Python reader would have read first).
    pub files: Vec<DataFile>,
    /// Trackers whose data file is gone (the Python reader discards them).
    pub orphan_trackers: Vec<PathBuf>,
    /// `failed/*.json`, by name.
    pub failed: Vec<PathBuf>,
    /// The request ids in `request-cache/`.
    pub request_cache: Vec<String>,
    /// Whether any of the legacy subdirectories exists.
    pub any_legacy_dir: bool,
}

/// Whether `name` is a segment name the legacy writer makes:
/// `\d{8}_\d{6}_\d{6}-.{27}\.txt`.
pub fn segment_name_matches(name: &str) -> bool {
    let b = name.as_bytes();
    let Some(stem) = name.strip_suffix(".txt") else {
        return false;
    };
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    stem.len() >= 23
        && digits(0..8)
        && b[8] == b'_'
        && digits(9..15)
        && b[15] == b'_'
        && digits(16..22)
        && b[22] == b'-'
        && stem[23..].chars().count() == 27
}

fn names(dir: &Path) -> io::Result<Option<Vec<String>>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(Some(out))
}

/// Lists `legacy_dir`.
pub fn list(legacy_dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let reading = legacy_dir.join("reading");
    let writing = legacy_dir.join("writing");
    let reading_names = names(&reading)?;
    let writing_names = names(&writing)?;
    listing.any_legacy_dir = reading_names.is_some() || writing_names.is_some();
    let reading_names = reading_names.unwrap_or_default();
    let (trackers, data): (Vec<&String>, Vec<&String>) = reading_names
        .iter()
        .partition(|n| n.starts_with(TRACKING_PREFIX));
    let tracked: Vec<&str> = trackers
        .iter()
        .map(|t| &t[TRACKING_PREFIX.len()..])
        .collect();
    for t in &trackers {
        let data_name = &t[TRACKING_PREFIX.len()..];
        if !data.iter().any(|d| d.as_str() == data_name) {
            listing.orphan_trackers.push(reading.join(t));
        }
    }
    let file = |dir: &Path, sub: &str, name: &str, place: Place| DataFile {
        rel: format!("{sub}/{name}"),
        path: dir.join(name),
        tracker: (place == Place::Tracked).then(|| dir.join(format!("{TRACKING_PREFIX}{name}"))),
        place,
        name_matches: segment_name_matches(name),
    };
    for name in data.iter().filter(|d| tracked.contains(&d.as_str())) {
        listing
            .files
            .push(file(&reading, "reading", name, Place::Tracked));
    }
    for name in data.iter().filter(|d| !tracked.contains(&d.as_str())) {
        listing.files.push(file(
            &reading,
            "reading",
            name,
            Place::ClaimedWithoutTracker,
        ));
    }
    for name in writing_names.unwrap_or_default() {
        listing
            .files
            .push(file(&writing, "writing", &name, Place::Writing));
    }
    let failed_dir = legacy_dir.join("failed");
    if let Some(failed) = names(&failed_dir)? {
        listing.any_legacy_dir = true;
        listing.failed = failed
            .iter()
            .filter(|n| n.ends_with(".json"))
            .map(|n| failed_dir.join(n))
            .collect();
    }
    if let Some(cache) = names(&legacy_dir.join("request-cache"))? {
        listing.any_legacy_dir = true;
        listing.request_cache = cache;
    }
    if legacy_dir.join("images").is_dir() {
        listing.any_legacy_dir = true;
    }
    Ok(listing)
}

/// The lines of a data file: split on `\r\n`, `\r` or `\n` (Python's universal newlines,
/// so indices match the tracker's count), without the empty piece after a final newline.
pub fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&bytes[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&bytes[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// The legacy `SubmitImageQueryParams`.
#[derive(Clone, Debug, Deserialize)]
pub struct SubmitParams {
    /// Seconds, or none.
    pub patience_time: Option<f64>,
    /// 0..=1, or none.
    pub confidence_threshold: Option<f64>,
    /// `DEFAULT`, `ALWAYS`, `NEVER`, or none.
    pub human_review: Option<String>,
    /// A JSON object, or none.
    pub metadata: Option<Map<String, Value>>,
    /// The image query id to create.
    pub image_query_id: String,
}

/// The legacy `EscalationInfo`: one queue line.
#[derive(Clone, Debug, Deserialize)]
pub struct EscalationInfo {
    /// `YYYYmmdd_HHMMSS_ffffff`, naive local time of the legacy container.
    pub timestamp: String,
    /// The detector.
    pub detector_id: String,
    /// The absolute path of the image, as the legacy container saw it.
    pub image_path_str: String,
    /// The submit parameters.
    pub submit_iq_params: SubmitParams,
    /// The request id.
    pub request_id: String,
}

/// Why a piece of a line is not an escalation.
#[derive(Clone, Debug)]
pub enum Unparsed {
    /// Nothing but NUL bytes (the padding a power loss leaves).
    NulPadding(usize),
    /// Not JSON: truncated, torn, or not UTF-8.
    NotJson(String),
    /// JSON, but not the shape of an escalation line.
    NotAnEscalation(String),
}

/// Parses `piece` (whitespace around it ignored, like Python's `strip()`).
pub fn parse(piece: &[u8]) -> Result<EscalationInfo, Unparsed> {
    let trimmed = trim(piece);
    if trimmed.is_empty() && !piece.is_empty() && piece.iter().all(|b| *b == 0) {
        return Err(Unparsed::NulPadding(piece.len()));
    }
    let value: Value =
        serde_json::from_slice(trimmed).map_err(|e| Unparsed::NotJson(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| Unparsed::NotAnEscalation(e.to_string()))
}

/// `piece` without leading and trailing ASCII whitespace and NULs.
fn trim(piece: &[u8]) -> &[u8] {
    let skip = |b: &u8| b.is_ascii_whitespace() || *b == 0;
    let start = piece.iter().position(|b| !skip(b)).unwrap_or(piece.len());
    let end = piece
        .iter()
        .rposition(|b| !skip(b))
        .map_or(start, |e| e + 1);
    &piece[start..end]
}

/// Whether Python's reader would have parsed this line (`json.loads(line.strip())` into an
/// `EscalationInfo`): NUL is not whitespace to `strip()`, so any NUL fails it.
pub fn python_parses(line: &[u8]) -> bool {
    !line.contains(&0) && parse(line).is_ok()
}

/// The pieces of a damaged line between runs of NUL bytes, with their byte offsets.
pub fn nul_fragments(line: &[u8]) -> Vec<&[u8]> {
    line.split(|b| *b == 0)
        .filter(|f| !trim(f).is_empty())
        .collect()
}

/// A short printable excerpt of `bytes` for a report.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .collect();
    if bytes.len() > 80 {
        out.push('…');
    }
    out
}

/// Where the image of a line is in this file system: `image_path_str` is absolute in the
/// legacy container's, below `root_as` (or already below `legacy_dir`); it must name a file
/// directly in `images/`.
pub fn image_path(
    image_path_str: &str,
    legacy_dir: &Path,
    root_as: &Path,
) -> Result<PathBuf, String> {
    let path = Path::new(image_path_str);
    let rel = path
        .strip_prefix(root_as)
        .or_else(|_| path.strip_prefix(legacy_dir))
        .map_err(|_| {
            format!(
                "image path {image_path_str:?} is outside the legacy queue (neither below \
                 --legacy-root-as {} nor below {})",
                root_as.display(),
                legacy_dir.display()
            )
        })?;
    let parts: Vec<Component<'_>> = rel.components().collect();
    match parts.as_slice() {
        [Component::Normal(dir), Component::Normal(_)] if *dir == "images" => {
            Ok(legacy_dir.join(rel))
        }
        _ => Err(format!(
            "image path {image_path_str:?} does not name a file in the legacy images/ directory"
        )),
    }
}

/// Unix milliseconds of a legacy `YYYYmmdd_HHMMSS_ffffff` timestamp, read as UTC (the
/// legacy container image sets no time zone) shifted by `utc_offset_minutes`.
pub fn timestamp_ms(text: &str, utc_offset_minutes: i64) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 22 || b[8] != b'_' || b[15] != b'_' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let micros = num(16..22)?;
    civil_ms(y, mo, d, h, mi, s, micros / 1000, -utc_offset_minutes)
}

/// Unix milliseconds of an ISO 8601 time as Python's `datetime.isoformat()` writes it
/// (`2026-02-18T10:00:00.123456+00:00`; fraction and offset optional).
pub fn iso_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes = match rest.as_bytes().first() {
        None => 0,
        Some(b'Z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        Some(_) => return None,
    };
    civil_ms(y, mo, d, h, mi, s, ms, -offset_minutes)
}

/// Unix ms of a proleptic Gregorian date and time, plus `shift_minutes`.
#[allow(clippy::too_many_arguments)]
fn civil_ms(
    y: i64,
    mo: i64,
    d: i64,
    h: i64,
    mi: i64,
    s: i64,
    ms: i64,
    shift_minutes: i64,
) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + s + shift_minutes * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lines_and_times() {
        assert!(segment_name_matches(
            "20261202_064744_241500-3MuIXO7Eg6ChtMO4JaBxDDiMSsG.txt"
        ));
        assert!(!segment_name_matches(
            "20261202_064744_241500-3MuIXO7Eg6ChtMO4JaBxDDiMSs.txt"
        ));
        assert!(!segment_name_matches("notes.txt"));
        assert_eq!(
            split_lines(b"a\nb\r\nc\rd"),
            vec![&b"a"[..], b"b", b"c", b"d"]
        );
        assert_eq!(split_lines(b"a\n"), vec![&b"a"[..]]);
        assert_eq!(timestamp_ms("19700101_000001_500000", 0), Some(1_500));
        assert_eq!(timestamp_ms("19700101_010000_000000", 60), Some(0));
        assert_eq!(timestamp_ms("2026", 0), None);
        assert_eq!(iso_ms("1970-01-01T00:00:02.250000+00:00"), Some(2_250));
        assert_eq!(iso_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            iso_ms("2026-02-18T10:00:00"),
            timestamp_ms("20260218_100000_000000", 0)
        );
        assert!(matches!(parse(b"\0\0\0"), Err(Unparsed::NulPadding(3))));
        assert!(matches!(parse(b"{\"a\": 1"), Err(Unparsed::NotJson(_))));
        assert!(matches!(
            parse(b"{\"a\": 1}"),
            Err(Unparsed::NotAnEscalation(_))
        ));
        assert_eq!(nul_fragments(b"\0\0{x}\0\0 \0{y}").len(), 2);
    }

    #[test]
    fn image_paths_stay_in_images() {
        let legacy = Path::new("/mnt/q");
        let root = Path::new("/opt/groundlight/queue");
        assert_eq!(
            image_path("/opt/groundlight/queue/images/det_1-x", legacy, root),
            Ok(PathBuf::from("/mnt/q/images/det_1-x"))
        );
        assert_eq!(
            image_path("/mnt/q/images/det_1-x", legacy, root),
            Ok(PathBuf::from("/mnt/q/images/det_1-x"))
        );
        assert!(image_path("/etc/passwd", legacy, root).is_err());
        assert!(image_path("/opt/groundlight/queue/images/../x", legacy, root).is_err());
        assert!(image_path("/opt/groundlight/queue/writing/x", legacy, root).is_err());
    }
}
