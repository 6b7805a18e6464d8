//! SIGTERM and SIGINT: the first asks the running worker to stop after the request in
//! flight (its acknowledgements are checkpointed, the in-flight item is redelivered later);
//! a second exits at once with 130, which loses nothing either: every acknowledged
//! escalation is already durable.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use escalation_queue::StopHandle;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The exit code of a second signal (128 + SIGINT, as shells report it).
const FORCED_EXIT_CODE: i32 = 130;

/// Shared stop state: signals (or [`request`](Self::request)) set it; workers and sleeps
/// watch it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The process-wide stop: its flag and its interruptible sleep.
    stop: StopHandle,
    signals: AtomicU32,
    current: Mutex<Option<StopHandle>>,
}

impl Shutdown {
    /// A stop state driven by SIGTERM and SIGINT.
    pub fn install() -> std::io::Result<Self> {
        let shutdown = Self::default();
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let for_thread = shutdown.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    for_thread.on_signal(name);
                }
            })?;
        Ok(shutdown)
    }

    fn on_signal(&self, name: &str) {
        let count = self.inner.signals.fetch_add(1, Ordering::AcqRel) + 1;
        if count > 1 {
            tracing::warn!(
                signal = name,
                "second signal: exiting now; items in flight are redelivered on the next start"
            );
            std::process::exit(FORCED_EXIT_CODE);
        }
        tracing::info!(
            signal = name,
            "stopping after the request in flight (send the signal again to exit at once)"
        );
        self.request();
    }

    /// Asks everything watching to stop.
    pub fn request(&self) {
        let current = self.lock();
        self.inner.stop.stop();
        if let Some(handle) = current.as_ref() {
            handle.stop();
        }
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.inner.stop.is_stopped()
    }

    /// Routes stop requests to `handle` (the worker now running); stops it at once if a
    /// stop was asked for already.
    pub fn attach(&self, handle: StopHandle) {
        let mut current = self.lock();
        if self.is_requested() {
            handle.stop();
        }
        *current = Some(handle);
    }

    /// Sleeps for `duration` unless a stop is asked for first; returns whether it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.inner.stop.sleep(duration)
    }

    fn lock(&self) -> MutexGuard<'_, Option<StopHandle>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_request_stops_the_attached_worker_and_wakes_sleepers() {
        let shutdown = Shutdown::default();
        let handle = StopHandle::default();
        shutdown.attach(handle.clone());
        let sleeper = shutdown.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        shutdown.request();
        assert!(t.join().expect("join"));
        assert!(handle.is_stopped());
        assert!(started.elapsed() < Duration::from_secs(5));
        let late = StopHandle::default();
        shutdown.attach(late.clone());
        assert!(
            late.is_stopped(),
            "attached after the request: stopped at once"
        );
    }
}
