//! The synchronization primitives of the wal's two concurrent parts, group commit and the
//! background checkpointer, switchable for a model checker: with the `shuttle` feature
//! their mutexes, condition variables and threads are shuttle's, so
//! `wal/tests/concurrency.rs` can run them under thousands of thread schedules. Normal
//! builds use `std`'s. Code with threads or locks shared between them imports from here.
//! (The interval-mode flusher stays a `std` thread: it sleeps in real time, so shuttle
//! tests use `Durability::SyncEachAppend`.)

pub(crate) use std::sync::Arc;

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};

/// Threads: `std::thread`, or shuttle's scheduled ones.
pub(crate) mod thread {
    #[cfg(not(feature = "shuttle"))]
    pub(crate) use std::thread::{Builder, JoinHandle};

    #[cfg(feature = "shuttle")]
    pub(crate) use shuttle::thread::{Builder, JoinHandle};
}

#[cfg(feature = "shuttle")]
pub(crate) use model::Condvar;

#[cfg(feature = "shuttle")]
mod model {
    use shuttle::sync::MutexGuard;
    use std::sync::LockResult;
    use std::time::Duration;

    /// shuttle's condvar, except `wait_timeout`: shuttle's never times out (0.8: "TODO
    /// support the timeout case"), which turns a leader's bounded wait for more appenders
    /// into a false deadlock. Here a timed wait times out at once: the leader goes on
    /// without the appenders it hoped for, which is what a real timeout allows.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(shuttle::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
        ) -> LockResult<MutexGuard<'a, T>> {
            self.0.wait(guard)
        }

        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            _dur: Duration,
        ) -> LockResult<(MutexGuard<'a, T>, ())> {
            Ok((guard, ()))
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
