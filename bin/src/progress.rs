//! Live progress of a worker run, drawn from its [`Stats`]: an indicatif bar on a terminal,
//! plain lines once a second otherwise (for `demo`), or nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

/// A running progress display; [`finish`](Self::finish) draws its last frame, dropping it
/// removes it.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    last: Arc<LastFrame>,
    thread: Option<JoinHandle<()>>,
}

/// What the last frame shows: `pending` as the caller counted it once the worker stopped
/// (the worker's depth gauge is refreshed only every maintenance interval, so it lags).
/// `None`: no last frame (the display is just removed).
#[derive(Debug, Default)]
struct LastFrame {
    pending: Mutex<Option<u64>>,
}

impl LastFrame {
    fn set(&self, pending: u64) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(pending);
    }

    /// `s` as the last frame shows it, if there is one.
    fn apply(&self, mut s: StatsSnapshot) -> Option<StatsSnapshot> {
        let pending = (*self.pending.lock().unwrap_or_else(PoisonError::into_inner))?;
        s.queue_depth = pending;
        s.enqueued = finished(&s) + pending;
        Some(s)
    }
}

impl Progress {
    /// Shows the progress of the worker behind `stats` towards `expected` finished items
    /// (raised as more are seen; 0: unknown yet).
    pub fn start(stats: Arc<Stats>, expected: Arc<AtomicU64>, fallback: Fallback) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(LastFrame::default());
        let terminal = std::io::stderr().is_terminal();
        if !terminal && fallback == Fallback::Quiet {
            return Self {
                stop,
                last,
                thread: None,
            };
        }
        let flag = Arc::clone(&stop);
        let frame = Arc::clone(&last);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || match terminal {
                true => draw_bar(&stats, &expected, &flag, &frame),
                false => print_lines(&stats, &expected, &flag, &frame),
            })
            .ok();
        Self { stop, last, thread }
    }

    /// Stops the display after a last frame that shows `pending` left (when known: the
    /// worker has stopped, so the caller can count), which stays on the screen.
    pub fn finish(mut self, pending: Option<u64>) {
        if let Some(pending) = pending {
            self.last.set(pending);
        }
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

fn draw_bar(stats: &Stats, expected: &AtomicU64, stop: &AtomicBool, last: &LastFrame) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    logging::set_bar(&bar);
    let show = |s: &StatsSnapshot| {
        bar.set_length(total(s, expected));
        bar.set_position(finished(s));
        bar.set_message(message(s));
    };
    while !stop.load(Ordering::Acquire) {
        show(&stats.snapshot());
        bar.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    logging::clear_bar();
    match last.apply(stats.snapshot()) {
        Some(s) => {
            show(&s);
            bar.finish();
        }
        None => bar.finish_and_clear(),
    }
}

fn print_lines(stats: &Stats, expected: &AtomicU64, stop: &AtomicBool, last: &LastFrame) {
    let started = Instant::now();
    let line = |s: &StatsSnapshot| {
        eprintln!(
            "[{:>4.1} s] {}/{} finished · {}",
            started.elapsed().as_secs_f64(),
            finished(s),
            total(s, expected),
            message(s)
        );
    };
    let mut printed = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if printed.elapsed() < Duration::from_secs(1) {
            continue;
        }
        printed = Instant::now();
        line(&stats.snapshot());
    }
    if let Some(s) = last.apply(stats.snapshot()) {
        line(&s);
    }
}
