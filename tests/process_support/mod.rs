//! Process helpers shared by the multi-process kill tests (`kill.rs`, `kill_worker.rs`):
//! children that stop themselves when the parent dies, durable line logs, bounded waits.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exit code of a child whose parent went away (or whose deadline passed).
pub const EXIT_ORPHAN: i32 = 4;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ends the process when the parent is gone (we were re-parented) or the deadline passed,
/// so that no child outlives a crashed or killed test run.
pub fn start_watchdog(parent: u32, deadline_ms: u64) {
    std::thread::spawn(move || loop {
        if std::os::unix::process::parent_id() != parent || now_ms() > deadline_ms {
            std::process::exit(EXIT_ORPHAN);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

pub fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Appends `line` with one `write` (O_APPEND keeps lines of concurrent threads whole).
pub fn put_line(file: &File, line: &str) {
    let mut f = file;
    f.write_all(line.as_bytes()).expect("write log line");
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn env_num(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    Some(v.parse().unwrap_or_else(|e| panic!("{key}={v}: {e}")))
}

/// Complete lines only: a child killed in the middle of a write may leave a partial one.
pub fn whole_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
}
