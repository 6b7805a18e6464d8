//! Process helpers shared by the multi-process tests (`kill.rs`, `kill_worker.rs`, and
//! `chaos.rs` for re-executing itself): children of this test binary that the parent spawns,
//! watches and SIGKILLs, children that stop themselves when the parent dies, durable line
//! logs, bounded waits.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// A command that re-executes this test binary `exe` to run only its test `child_test`,
/// quietly and on one thread; the caller adds the environment and the stdio.
pub fn child_command(exe: &Path, child_test: &str) -> Command {
    let mut command = Command::new(exe);
    command.args([
        "--exact",
        child_test,
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]);
    command
}

/// The seed of incarnation `inc` of the child in `slot`: derived from the run's seed, so that
/// replaying a seed replays every child's random choices too.
pub fn child_seed(seed: u64, slot: u16, inc: u32) -> u64 {
    seed ^ (u64::from(slot) << 56) ^ (u64::from(inc) << 24) ^ 0x5eed
}

/// Appends `what` to the log file at `path` (synced) and to stderr: why a child stops by
/// itself, for the parent to print.
pub fn record_failure(path: &Path, what: &str) {
    let f = open_append(path);
    put_line(&f, &format!("{what}\n"));
    let _ = f.sync_data();
    eprintln!("{what}");
}

/// The value of the environment variable `key` the parent set for a child.
pub fn child_var(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

/// The number in the environment variable `key` the parent set for a child.
pub fn child_num(key: &str) -> u64 {
    child_var(key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// An environment variable for a child: its name and value.
pub type Env<'a> = (&'a str, &'a dyn AsRef<OsStr>);

/// How long a SIGKILLed child may take to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// One incarnation of a child role: this test binary re-executed into its child entry, with
/// stdin and stdout closed and stderr in a file of its own.
pub struct ChildProc<R> {
    pub role: R,
    pub inc: u32,
    pub child: Child,
    stderr: PathBuf,
}

impl<R: Debug> ChildProc<R> {
    /// Starts incarnation `inc` of `role`: `exe` running only `child_test`, its stderr
    /// written to `stderr` (created, or truncated), with `envs` set.
    pub fn spawn(
        role: R,
        inc: u32,
        exe: &Path,
        child_test: &str,
        stderr: PathBuf,
        envs: &[Env],
    ) -> Self {
        let file = File::create(&stderr).expect("create child stderr");
        let mut command = child_command(exe, child_test);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn child");
        Self {
            role,
            inc,
            child,
            stderr,
        }
    }

    /// `None` while the child runs; once it has exited (children run until killed, so it
    /// failed or timed out), what to report: role, incarnation, exit status and the last 20
    /// lines of its stderr.
    pub fn exited_by_itself(&mut self) -> Option<String> {
        let status = self.child.try_wait().expect("try_wait")?;
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        let (role, inc) = (&self.role, self.inc);
        let what = format!("{role:?} inc {inc} exited by itself: {status}");
        Some(format!("{what}; the end of its stderr:\n{tail}"))
    }

    /// SIGKILLs (`Child::kill` is SIGKILL on Unix) and reaps, waiting 10 s at the most;
    /// whether the child was reaped.
    pub fn kill_and_reap(&mut self) -> bool {
        let _ = self.child.kill();
        wait_bounded(&mut self.child, REAP_LIMIT).is_some()
    }

    /// [`Self::kill_and_reap`], panicking if the child was not reaped: a victim's lane and
    /// cursor locks must be released before its replacement starts.
    pub fn kill9(&mut self) {
        if !self.kill_and_reap() {
            panic!(
                "{:?} inc {} did not die within 10 s of SIGKILL",
                self.role, self.inc
            );
        }
    }
}

/// The report of the first child in `procs` that exited by itself, if any (see
/// [`ChildProc::exited_by_itself`]).
pub fn first_exited<'a, R: Debug + 'a>(
    procs: impl IntoIterator<Item = &'a mut Option<ChildProc<R>>>,
) -> Option<String> {
    procs
        .into_iter()
        .flatten()
        .find_map(ChildProc::exited_by_itself)
}

/// Takes every child out of `procs`, SIGKILLs and reaps it (bounded, the outcome ignored:
/// for tearing a run down).
pub fn kill_all<'a, R: Debug + 'a>(procs: impl IntoIterator<Item = &'a mut Option<ChildProc<R>>>) {
    let taken: Vec<ChildProc<R>> = procs.into_iter().filter_map(Option::take).collect();
    for mut p in taken {
        p.kill_and_reap();
    }
}

/// The panic message of a failed kill test `test`: `what`, the seed that replays the run,
/// those of the children's logs `names` (in `logs`) that exist, and where the files are kept.
pub fn failure_report(
    test: &str,
    what: &str,
    seed: u64,
    logs: &Path,
    names: &[&str],
    root: &Path,
) -> String {
    let mut report = format!("{test} failed: {what}\n(seed {seed})\n");
    for name in names {
        if let Ok(text) = fs::read_to_string(logs.join(name)) {
            report.push_str(&format!("--- {name}:\n{text}"));
        }
    }
    report.push_str(&format!("--- files kept in {}", root.display()));
    report
}

/// A new run directory (`prefix` and a random suffix, in the temp dir) and its `logs`
/// folder; not removed on drop, so that a failed run leaves its files.
pub fn run_dir(prefix: &str) -> (PathBuf, PathBuf) {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
        .keep();
    let logs = root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    (root, logs)
}

/// Removes the run directory `root` after a passing run, or keeps it (and says so) when the
/// environment variable `keep_env` is set.
pub fn remove_run_dir(root: &Path, keep_env: &str) {
    if std::env::var_os(keep_env).is_some() {
        println!("kept {}", root.display());
    } else {
        fs::remove_dir_all(root).expect("remove the test directory");
    }
}
