//! Live progress of a worker run, drawn from its [`Stats`]: an indicatif bar on a terminal,
//! plain lines once a second otherwise (for `demo`), or nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use escalation_queue::{Stats, StatsSnapshot};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::logging;

/// How progress is shown when stderr is not a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Show nothing.
    Quiet,
    /// A plain line on stderr every second.
    Lines,
}

/// A running progress display; [`finish`](Self::finish) removes it.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows the progress of the worker behind `stats` towards `expected` finished items
    /// (raised as more are seen; 0: unknown yet).
    pub fn start(stats: Arc<Stats>, expected: Arc<AtomicU64>, fallback: Fallback) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal();
        if !terminal && fallback == Fallback::Quiet {
            return Self { stop, thread: None };
        }
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || match terminal {
                true => draw_bar(&stats, &expected, &flag),
                false => print_lines(&stats, &expected, &flag),
            })
            .ok();
        Self { stop, thread }
    }

    /// Stops and removes the display.
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Items finished one way or another.
pub fn finished(s: &StatsSnapshot) -> u64 {
    s.delivered + s.dead_lettered_total + s.expired + s.duplicates
}

/// The expected total when known, else what the worker has seen.
fn total(s: &StatsSnapshot, expected: &AtomicU64) -> u64 {
    match expected.load(Ordering::Relaxed) {
        0 => s.enqueued.max(finished(s)),
        n => n.max(finished(s)),
    }
}

fn message(s: &StatsSnapshot) -> String {
    let mut msg = format!(
        "pending {} · delivered {} · retries {} · dead-lettered {}",
        s.queue_depth, s.delivered, s.retried, s.dead_lettered_total
    );
    if s.circuit_state != "closed" {
        msg.push_str(&format!(
            " · cloud unreachable (circuit {})",
            s.circuit_state
        ));
    }
    if s.paused_for_auth {
        msg.push_str(" · token rejected, paused");
    }
    msg
}

fn draw_bar(stats: &Stats, expected: &AtomicU64, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    logging::set_bar(&bar);
    while !stop.load(Ordering::Acquire) {
        let s = stats.snapshot();
        let done = finished(&s);
        bar.set_length(total(&s, expected));
        bar.set_position(done);
        bar.set_message(message(&s));
        bar.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    logging::clear_bar();
    bar.finish_and_clear();
}

fn print_lines(stats: &Stats, expected: &AtomicU64, stop: &AtomicBool) {
    let started = Instant::now();
    let mut last = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last = Instant::now();
        let s = stats.snapshot();
        let done = finished(&s);
        let total = total(&s, expected);
        eprintln!(
            "[{:>4.1} s] {done}/{total} finished · {}",
            started.elapsed().as_secs_f64(),
            message(&s)
        );
    }
}
