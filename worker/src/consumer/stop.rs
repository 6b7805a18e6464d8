//! Graceful stop: a flag plus a condvar that wakes the worker from any wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Asks a [`Worker`](super::Worker) to stop. Clone it freely; [`stop`](Self::stop) returns
/// at once, and the worker's `run` returns after the request in progress (bounded by its
/// timeouts): the in-flight item is either acknowledged or left for redelivery.
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl StopHandle {
    /// Requests the stop and wakes the worker from any backoff or idle wait.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let _guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.wake.notify_all();
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Sleeps for `duration` unless a stop is requested first; returns whether stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .inner
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wakes_a_long_sleep() {
        let handle = StopHandle::default();
        let other = handle.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || other.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        handle.stop();
        assert!(t.join().expect("join"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!StopHandle::default().sleep(Duration::from_millis(1)));
    }
}
