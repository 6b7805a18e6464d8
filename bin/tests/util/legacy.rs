//! A faithful re-implementation of the Python (edge-endpoint) file queue's on-disk
//! behaviour, to build the legacy directories `import-legacy` reads
//! (`docs/EDGE-ENDPOINT.md`, "What the importer reads"):
//!
//! - [`LegacyWriter`] is one `QueueWriter`: the image is written first to
//!   `images/{detector}-{timestamp}-{KSUID}` (no extension), then the line is appended with a
//!   fresh `open(O_WRONLY|O_APPEND)` per write to `writing/{timestamp}-{KSUID}.txt`, rolling
//!   over after 200 lines or when the file was taken by the reader. The line is
//!   `json.dumps(EscalationInfo.model_dump())`: default separators, model field order.
//! - [`LegacyReader`] is the single `QueueReader` plus `manage_reader`'s bookkeeping: it
//!   resumes a tracked `reading/` file first, else claims the oldest `writing/` file by
//!   rename; it appends one `"1"` to `reading/tracking-<name>` when asked for the *next*
//!   line (so the line handed out last is in flight); after a line is processed the
//!   request id goes into `request-cache/` (at most 15, oldest by mtime evicted) and the
//!   image is unlinked; a finished file and its tracker are unlinked.
//! - [`record_failure`] writes `failed/<UTC ts>-<KSUID>.json` through a `.json.tmp` file.

#![allow(dead_code, reason = "each test uses a different subset")]

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `MAX_QUEUE_FILE_LINES`.
pub const MAX_QUEUE_FILE_LINES: usize = 200;
/// `DEFAULT_REQUEST_CACHE_MAX_ENTRIES`.
pub const REQUEST_CACHE_MAX: usize = 15;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A small deterministic generator (xorshift64*) for KSUID tails and test choices.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// 27 base62 characters, shaped like a `KsuidMs`.
    pub fn ksuid(&mut self) -> String {
        (0..27)
            .map(|_| BASE62[self.below(62) as usize] as char)
            .collect()
    }
}

/// `datetime.now().strftime("%Y%m%d_%H%M%S_%f")` for `t` (the container's zone is UTC).
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}_{:02}{:02}{:02}_{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The submit parameters of one legacy line.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub patience_time: Option<f64>,
    pub confidence_threshold: Option<f64>,
    pub human_review: Option<String>,
    /// A JSON object, written as given (already in Python's `json.dumps` form).
    pub metadata_json: Option<String>,
    pub image_query_id: String,
}

/// One line the writer wrote.
#[derive(Clone, Debug)]
pub struct Line {
    pub text: String,
    pub detector_id: String,
    pub image_query_id: String,
    pub request_id: String,
    pub image_path: PathBuf,
    pub image: Vec<u8>,
    /// The data file it went to.
    pub file_name: String,
}

/// A JSON string as `json.dumps` writes it (`ensure_ascii`): non-ASCII as `\uXXXX`
/// (surrogate pairs beyond the BMP); ASCII escaped as serde_json escapes it.
fn py_str(s: &str) -> String {
    let ascii = serde_json::to_string(s).expect("string");
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0_u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn py_opt_f64(v: Option<f64>) -> String {
    match v {
        None => "null".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e16 => format!("{x:.1}"),
        Some(x) => format!("{x}"),
    }
}

/// `convert_escalation_info_to_str`: the line without its newline.
pub fn line_text(
    timestamp: &str,
    detector_id: &str,
    image_path: &str,
    params: &Params,
    request_id: &str,
) -> String {
    format!(
        "{{\"timestamp\": {}, \"detector_id\": {}, \"image_path_str\": {}, \"submit_iq_params\": \
         {{\"patience_time\": {}, \"confidence_threshold\": {}, \"human_review\": {}, \
         \"metadata\": {}, \"image_query_id\": {}}}, \"request_id\": {}}}",
        py_str(timestamp),
        py_str(detector_id),
        py_str(image_path),
        py_opt_f64(params.patience_time),
        py_opt_f64(params.confidence_threshold),
        params.human_review.as_deref().map_or("null".into(), py_str),
        params.metadata_json.as_deref().unwrap_or("null"),
        py_str(&params.image_query_id),
        py_str(request_id),
    )
}

/// One `QueueWriter` (one uvicorn worker process).
pub struct LegacyWriter {
    base: PathBuf,
    /// How the container saw `base` (image paths in lines are absolute under it).
    root_as: PathBuf,
    pub last_file_path: Option<PathBuf>,
    pub num_lines_written_to_file: usize,
    rng: Rng,
}

impl LegacyWriter {
    /// `QueueWriter(base_dir)`: creates `writing/` and `images/`. Image paths are written
    /// as `root_as/images/...` (`root_as` = `base` for a writer on this host).
    pub fn new(base: &Path, root_as: &Path, seed: u64) -> Self {
        fs::create_dir_all(base.join("writing")).expect("writing/");
        fs::create_dir_all(base.join("images")).expect("images/");
        Self {
            base: base.to_path_buf(),
            root_as: root_as.to_path_buf(),
            last_file_path: None,
            num_lines_written_to_file: 0,
            rng: Rng(seed.max(1)),
        }
    }

    pub fn new_image_query_id(&mut self) -> String {
        format!("iq_{}", self.rng.ksuid())
    }

    pub fn new_request_id(&mut self) -> String {
        format!("req_uu{:016x}{:016x}", self.rng.next(), self.rng.next())
    }

    /// `write_escalation_to_queue`: the image, then the line. Returns what was written.
    pub fn write(
        &mut self,
        detector_id: &str,
        image: &[u8],
        params: &Params,
        request_id: &str,
    ) -> Line {
        let ts = timestamp(SystemTime::now());
        let image_name = format!("{detector_id}-{ts}-{}", self.rng.ksuid());
        fs::write(self.base.join("images").join(&image_name), image).expect("image");
        let image_path = self.root_as.join("images").join(&image_name);
        let text = line_text(
            &ts,
            detector_id,
            image_path.to_str().expect("utf-8"),
            params,
            request_id,
        );
        let file = self.write_line(&format!("{text}\n"));
        Line {
            text,
            detector_id: detector_id.into(),
            image_query_id: params.image_query_id.clone(),
            request_id: request_id.into(),
            image_path: self.base.join("images").join(&image_name),
            image: image.to_vec(),
            file_name: file,
        }
    }

    /// `write_escalation`'s file handling: a new file when there is none or it is full;
    /// `O_APPEND` without `O_CREAT` for an existing one, and a new file when that fails
    /// with "not found" (the reader took it).
    fn write_line(&mut self, line: &str) -> String {
        loop {
            let new_file = match &self.last_file_path {
                None => true,
                Some(_) => self.num_lines_written_to_file >= MAX_QUEUE_FILE_LINES,
            };
            if new_file {
                let name = format!("{}-{}.txt", timestamp(SystemTime::now()), self.rng.ksuid());
                self.last_file_path = Some(self.base.join("writing").join(name));
                self.num_lines_written_to_file = 0;
            }
            let path = self.last_file_path.clone().expect("set above");
            let opened = OpenOptions::new().append(true).create(new_file).open(&path);
            match opened {
                Ok(mut f) => {
                    f.write_all(line.as_bytes()).expect("append");
                    self.num_lines_written_to_file += 1;
                    return path
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.last_file_path = None;
                }
                Err(e) => panic!("legacy write: {e}"),
            }
        }
    }
}

/// The single legacy reader and `manage_reader`'s per-line bookkeeping.
pub struct LegacyReader {
    base: PathBuf,
    /// The file being read, its lines, and how many the consumer has asked past.
    current: Option<(PathBuf, Vec<String>, usize)>,
    /// A line handed out and not yet acknowledged (the tracker's missing "1").
    handed_out: bool,
}

impl LegacyReader {
    pub fn new(base: &Path) -> Self {
        fs::create_dir_all(base.join("reading")).expect("reading/");
        Self {
            base: base.to_path_buf(),
            current: None,
            handed_out: false,
        }
    }

    fn tracker(&self, data: &Path) -> PathBuf {
        let name = data.file_name().expect("name").to_string_lossy();
        self.base.join("reading").join(format!("tracking-{name}"))
    }

    /// `_choose_new_file`: a tracked `reading/` file, else the oldest `writing/` file by
    /// name, renamed into `reading/`.
    fn choose(&self) -> Option<PathBuf> {
        let reading = self.base.join("reading");
        let mut trackers: Vec<PathBuf> = fs::read_dir(&reading)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tracking-"))
            })
            .collect();
        trackers.sort();
        if let Some(t) = trackers.first() {
            let name = t.file_name()?.to_string_lossy()["tracking-".len()..].to_owned();
            return Some(reading.join(name));
        }
        let mut names: Vec<String> = fs::read_dir(self.base.join("writing"))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let oldest = names.first()?;
        let to = reading.join(oldest);
        fs::rename(self.base.join("writing").join(oldest), &to).ok()?;
        Some(to)
    }

    /// Claims the next file without opening its tracker (the state a crash between the
    /// rename and the tracker's `open(mode="a")` leaves).
    pub fn claim_only(&self) -> Option<PathBuf> {
        self.choose()
    }

    /// The next line, as `for escalation in reader` gets it: first acknowledges the line
    /// handed out before (one `"1"` appended to the tracker).
    pub fn next_line(&mut self) -> Option<String> {
        if self.handed_out {
            let (data, _, _) = self.current.as_ref().expect("a current file");
            let mut t = OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.tracker(data))
                .expect("tracker");
            t.write_all(b"1").expect("ack");
            self.handed_out = false;
        }
        loop {
            if self.current.is_none() {
                let data = self.choose()?;
                let tracker = self.tracker(&data);
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&tracker)
                    .expect("tracker");
                let skip = fs::read(&tracker).expect("tracker").len();
                let text = fs::read_to_string(&data).expect("data");
                let lines: Vec<String> = text.lines().map(str::to_owned).collect();
                self.current = Some((data, lines, skip));
            }
            let (data, lines, at) = self.current.as_mut().expect("set above");
            if *at < lines.len() {
                let line = lines[*at].clone();
                *at += 1;
                self.handed_out = true;
                return Some(line);
            }
            // Finished: the data file and its tracker go.
            let data = data.clone();
            let tracker = self.tracker(&data);
            fs::remove_file(&data).expect("unlink data");
            fs::remove_file(tracker).expect("unlink tracker");
            self.current = None;
        }
    }

    /// `manage_reader`'s `finally` for a parsed line: cache the request id, unlink the
    /// image.
    pub fn finish(&self, line: &Line) {
        cache_request_id(&self.base, &line.request_id);
        let _ = fs::remove_file(&line.image_path);
    }
}

/// `RequestCache.add`: an empty file per id, at most 15, oldest by mtime evicted.
pub fn cache_request_id(base: &Path, request_id: &str) {
    let dir = base.join("request-cache");
    fs::create_dir_all(&dir).expect("request-cache/");
    fs::write(dir.join(request_id), b"").expect("cache entry");
    let mut entries: Vec<(SystemTime, PathBuf)> = fs::read_dir(&dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH),
                e.path(),
            )
        })
        .collect();
    entries.sort();
    while entries.len() > REQUEST_CACHE_MAX {
        let (_, oldest) = entries.remove(0);
        let _ = fs::remove_file(oldest);
    }
}

/// `record_failed_escalation`: `failed/<UTC %Y%m%d_%H%M%S_%f>-<KSUID>.json` via a tmp file.
pub fn record_failure(
    base: &Path,
    rng: &mut Rng,
    escalation: Option<&str>,
    exception_type: &str,
    exception_message: &str,
) -> PathBuf {
    let dir = base.join("failed");
    fs::create_dir_all(&dir).expect("failed/");
    let now = SystemTime::now();
    let id = format!("{}-{}", timestamp(now), rng.ksuid());
    let (format, value) = match escalation {
        None => ("none", serde_json::Value::Null),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => ("json", v),
            Err(_) => ("raw", serde_json::Value::String(text.to_owned())),
        },
    };
    let ts = timestamp(now);
    let recorded_at = format!(
        "{}-{}-{}T{}:{}:{}.{}+00:00",
        &ts[0..4],
        &ts[4..6],
        &ts[6..8],
        &ts[9..11],
        &ts[11..13],
        &ts[13..15],
        &ts[16..22]
    );
    let record = serde_json::json!({
        "id": id,
        "recorded_at": recorded_at,
        "escalation_format": format,
        "escalation": value,
        "exception_type": exception_type,
        "exception_message": exception_message,
        "traceback": "Traceback (most recent call last):\n  ...",
    });
    let tmp = dir.join(format!("{id}.json.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(&record).expect("json")).expect("tmp");
    let path = dir.join(format!("{id}.json"));
    fs::rename(&tmp, &path).expect("replace");
    path
}
