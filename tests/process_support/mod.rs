//! The process harness of the multi-process tests (`kill.rs`, `kill_worker.rs`, and
//! `chaos.rs` for re-executing itself): children of this test binary that the parent spawns,
//! watches and SIGKILLs ([`ChildProc`]); a [`Fleet`] of writer slots and one other process
//! (the reader or the worker), each restarted as a new incarnation after a kill; the child
//! side ([`child_main`], [`ChildEnv`]): children that stop themselves when the parent dies;
//! durable line logs, bounded waits, the failure report and the run directory.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::ffi::{OsStr, OsString};
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

/// An environment variable for a child, owned (for names made from a prefix).
type OwnedEnv = (String, OsString);

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
        let owned: Vec<OwnedEnv> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_ref().to_owned()))
            .collect();
        Self::spawn_owned(role, inc, exe, child_test, stderr, &owned)
    }

    fn spawn_owned(
        role: R,
        inc: u32,
        exe: &Path,
        child_test: &str,
        stderr: PathBuf,
        envs: &[OwnedEnv],
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

// ---------------------------------------------------------------------------------------
// The fleet: writer slots and one other process, killed and restarted
// ---------------------------------------------------------------------------------------

/// A role a [`Fleet`] runs: one of its writer slots, or the one other process (the reader,
/// the worker, a final drain), whose incarnations are counted together.
pub trait Role: Copy + Debug + PartialEq {
    /// The writer slot, or `None` for the one other process.
    fn writer_slot(self) -> Option<u16>;
    /// The child's name for its role (the value of the role variable, and in file names).
    fn kind(self) -> &'static str;
}

/// What tells one kill test's children apart: the names of its variables and logs.
pub struct FleetSpec {
    /// The test, as its failure report names it.
    pub test: &'static str,
    /// The test entry the children run (a no-op unless `role_env` is set).
    pub child_test: &'static str,
    /// The variable holding a child's role.
    pub role_env: &'static str,
    /// The prefix of every other variable: `<prefix>_DIR`, `_INC`, `_SLOT`, `_SEED`,
    /// `_PARENT`, `_DEADLINE_MS`, and the test's own.
    pub env_prefix: &'static str,
    /// The logs (in `logs`) of the children's own failures, for the report.
    pub failure_logs: &'static [&'static str],
}

/// The children of one kill test: `writers` slots of writer processes and one other process,
/// this test binary re-executed into `spec.child_test`. Every child is SIGKILLed when the
/// fleet is dropped.
pub struct Fleet<R: Role> {
    spec: FleetSpec,
    pub exe: PathBuf,
    pub root: PathBuf,
    pub logs: PathBuf,
    pub seed: u64,
    pub deadline_ms: u64,
    /// The parent's random choices (from `seed`).
    pub rng: fastrand::Rng,
    pub writers: Vec<Option<ChildProc<R>>>,
    pub single: Option<ChildProc<R>>,
    writer_incs: Vec<u32>,
    single_inc: u32,
}

impl<R: Role> Fleet<R> {
    /// A fleet of `writers` empty writer slots and no other process, for the run directory
    /// `root` (with its `logs`); children stop by themselves after `budget_ms`.
    pub fn new(
        spec: FleetSpec,
        root: &Path,
        logs: &Path,
        writers: u16,
        seed: u64,
        budget_ms: u64,
    ) -> Self {
        Self {
            spec,
            exe: std::env::current_exe().expect("current_exe"),
            root: root.to_path_buf(),
            logs: logs.to_path_buf(),
            seed,
            deadline_ms: now_ms() + budget_ms,
            rng: fastrand::Rng::with_seed(seed),
            writers: (0..writers).map(|_| None).collect(),
            single: None,
            writer_incs: vec![0; usize::from(writers)],
            single_inc: 0,
        }
    }

    /// The next incarnation of `role` and its slot (0 for the other process).
    fn next_inc(&mut self, role: R) -> (u16, u32) {
        match role.writer_slot() {
            Some(s) => {
                let inc = self.writer_incs[usize::from(s)];
                self.writer_incs[usize::from(s)] += 1;
                (s, inc)
            }
            None => {
                let inc = self.single_inc;
                self.single_inc += 1;
                (0, inc)
            }
        }
    }

    /// Starts the next incarnation of `role` (not put in its slot: see [`Self::start`]),
    /// its stderr in `logs/<kind>-<slot>-<inc>.stderr`, with the fleet's variables and the
    /// test's own `extra` ones (`<prefix>_<name>`).
    pub fn spawn(&mut self, role: R, extra: &[(&str, String)]) -> ChildProc<R> {
        let (slot, inc) = self.next_inc(role);
        let kind = role.kind();
        let stderr = self.logs.join(format!("{kind}-{slot:02}-{inc:05}.stderr"));
        let prefix = self.spec.env_prefix;
        let var = |name: &str, value: &dyn AsRef<OsStr>| -> OwnedEnv {
            (format!("{prefix}_{name}"), value.as_ref().to_owned())
        };
        let mut envs: Vec<OwnedEnv> = vec![
            (self.spec.role_env.to_owned(), kind.into()),
            var("DIR", &self.root),
            var("INC", &inc.to_string()),
            var("SLOT", &slot.to_string()),
            var("SEED", &child_seed(self.seed, slot, inc).to_string()),
            var("PARENT", &std::process::id().to_string()),
            var("DEADLINE_MS", &self.deadline_ms.to_string()),
        ];
        envs.extend(extra.iter().map(|(name, value)| var(name, value)));
        ChildProc::spawn_owned(role, inc, &self.exe, self.spec.child_test, stderr, &envs)
    }

    /// The slot of `role`: its writer slot, or the other process's.
    pub fn slot(&mut self, role: R) -> &mut Option<ChildProc<R>> {
        match role.writer_slot() {
            Some(s) => &mut self.writers[usize::from(s)],
            None => &mut self.single,
        }
    }

    /// Starts the next incarnation of `role` in its slot.
    pub fn start(&mut self, role: R, extra: &[(&str, String)]) {
        let p = self.spawn(role, extra);
        *self.slot(role) = Some(p);
    }

    /// SIGKILLs the running incarnation of `role` and reaps it (see [`ChildProc::kill9`]).
    pub fn kill9(&mut self, role: R) {
        let mut p = self.slot(role).take().expect("victim is running");
        p.kill9();
    }

    /// The writers and the other process, running or not.
    pub fn procs(&mut self) -> impl Iterator<Item = &mut Option<ChildProc<R>>> + '_ {
        self.writers
            .iter_mut()
            .chain(std::iter::once(&mut self.single))
    }

    /// Fails the test if a child stopped by itself (an error, a corrupt record, a timeout).
    pub fn check_alive(&mut self) {
        if let Some(what) = first_exited(self.procs()) {
            self.fail(&what);
        }
    }

    /// Kills every child and panics with the failure report (see [`failure_report`]).
    pub fn fail(&mut self, what: &str) -> ! {
        let report = failure_report(
            self.spec.test,
            what,
            self.seed,
            &self.logs,
            self.spec.failure_logs,
            &self.root,
        );
        self.kill_all();
        panic!("{report}");
    }

    /// SIGKILLs and reaps every running child.
    pub fn kill_all(&mut self) {
        kill_all(self.procs());
    }
}

impl<R: Role> Drop for Fleet<R> {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What a [`Fleet`] child knows from its environment: the run directory (`queue`, `logs`),
/// its incarnation, slot and seed, and the test's own variables.
pub struct ChildEnv {
    prefix: &'static str,
    pub queue: PathBuf,
    pub logs: PathBuf,
    pub inc: u32,
    pub slot: u16,
    pub seed: u64,
}

impl ChildEnv {
    /// The test's own variable `<prefix>_<name>`.
    pub fn var(&self, name: &str) -> String {
        child_var(&format!("{}_{name}", self.prefix))
    }

    /// The test's own number `<prefix>_<name>`.
    pub fn num(&self, name: &str) -> u64 {
        child_num(&format!("{}_{name}", self.prefix))
    }
}

/// The body of a [`Fleet`]'s child entry test: a no-op unless `spec.role_env` is set (a
/// normal run); otherwise starts the watchdog (the child ends when the parent goes away or
/// the deadline passes), runs `run(role, env)` and exits with its code.
pub fn child_main(spec: &FleetSpec, run: impl FnOnce(&str, &ChildEnv) -> i32) {
    let Ok(role) = std::env::var(spec.role_env) else {
        return;
    };
    let prefix = spec.env_prefix;
    let num = |name: &str| child_num(&format!("{prefix}_{name}"));
    let root = PathBuf::from(child_var(&format!("{prefix}_DIR")));
    let env = ChildEnv {
        prefix,
        queue: root.join("queue"),
        logs: root.join("logs"),
        inc: num("INC") as u32,
        slot: num("SLOT") as u16,
        seed: num("SEED"),
    };
    start_watchdog(num("PARENT") as u32, num("DEADLINE_MS"));
    std::process::exit(run(&role, &env));
}
