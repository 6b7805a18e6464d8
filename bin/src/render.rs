//! Human-readable output: sizes, durations, aligned tables.

use std::fmt::Write as _;

/// `1, "segment"` → `1 segment`, `2, "retry"` → `2 retries`: a count and its noun, in
/// the plural unless the count is one (for nouns whose plural is regular).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y = noun
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']));
    match consonant_y {
        Some(stem) => format!("{n} {stem}ies"),
        None => format!("{n} {noun}s"),
    }
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `1500` → `1.5 s`, `90000` → `1.5 min`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{:.1} min", ms as f64 / 60_000.0),
        3_600_000..=86_399_999 => format!("{:.1} h", ms as f64 / 3_600_000.0),
        _ => format!("{:.1} d", ms as f64 / 86_400_000.0),
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose
/// text the line already holds: many errors include their source in their own message,
/// and printing the chain repeated the OS error up to three times (probe F27).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot create {path}: {source}")]
    struct Create {
        path: &'static str,
        source: std::io::Error,
    }

    /// Probe F27: `…: File exists (os error 17): …: File exists (os error 17): File exists
    /// (os error 17)`; each cause now appears once.
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(17);
        let error = anyhow::Error::new(Create {
            path: "/q/x",
            source: io,
        })
        .context("cannot open the queue /q");
        let line = error_chain(&error);
        assert_eq!(line.matches("os error 17").count(), 1, "{line}");
        assert!(
            line.starts_with("cannot open the queue /q: cannot create /q/x"),
            "{line}"
        );
    }

    #[test]
    fn sizes_durations_and_tables_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(duration_ms(12), "12 ms");
        assert_eq!(duration_ms(1500), "1.5 s");
        assert_eq!(duration_ms(90_000), "1.5 min");
        assert_eq!(count(1, "segment"), "1 segment");
        assert_eq!(count(0, "segment"), "0 segments");
        assert_eq!(count(2, "retry"), "2 retries");
        assert_eq!(count(1, "retry"), "1 retry");
        assert_eq!(count(3, "dead letter"), "3 dead letters");
        assert_eq!(count(3, "day"), "3 days");
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
