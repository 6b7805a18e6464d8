//! Checkpoints written by a background thread, so a reader can checkpoint often without
//! waiting for `fdatasync` on its hot path. One thread owns the checkpoint file: requests
//! are coalesced (the newest wins), each is written and synced, and only then are the
//! segments it releases deleted (and the directory synced). `Reader::checkpoint` waits for
//! its request to become durable, not for the deletions (unlinking a large segment can take
//! tens of milliseconds on some file systems, and a consumer need not wait for space to be
//! returned); `Reader::checkpoint_in_background` waits for nothing;
//! `Reader::wait_for_deletions` waits for both.

use std::path::{Path, PathBuf};

use crate::cursor::{Checkpoint, CheckpointFile};
use crate::error::{Error, Result};
use crate::format::FileName;
use crate::fs::{join, Storage};
use crate::segment;
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    requested: Option<Checkpoint>,
    /// Newest generation that is durable.
    durable: u64,
    /// Newest generation whose released segments are deleted (and the deletions durable).
    released: u64,
    /// A failure stops checkpointing until the reader is reopened.
    failed: Option<Failure>,
    stop: bool,
}

#[derive(Debug, Clone)]
struct Failure {
    op: &'static str,
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl Failure {
    fn from_error(e: &Error, dir: &Path) -> Self {
        match e {
            Error::Io { op, path, source } => Self {
                op,
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Self {
                op: "checkpoint",
                path: dir.to_path_buf(),
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> Error {
        Error::Io {
            op: self.op,
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl Checkpointer {
    /// Starts the thread that owns `file`.
    pub(crate) fn spawn(
        file: CheckpointFile,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        durable: u64,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        {
            let mut st = shared.lock();
            st.durable = durable;
            st.released = durable;
        }
        let worker = shared.clone();
        let thread = thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || worker.run(&file, storage.as_ref(), &dir))
            .map_err(|e| Error::io("spawn checkpoint thread", PathBuf::new(), e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `cp` to the thread, replacing any request not yet started.
    pub(crate) fn submit(&self, cp: Checkpoint) -> Result<()> {
        let mut st = self.shared.lock();
        if let Some(f) = &st.failed {
            return Err(f.to_error());
        }
        st.requested = Some(cp);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until checkpoint `generation` (or a newer one) is durable.
    pub(crate) fn wait_durable(&self, generation: u64) -> Result<()> {
        self.wait(|st| st.durable >= generation)
    }

    /// Waits until the segments released by checkpoint `generation` (or a newer one) are
    /// deleted.
    pub(crate) fn wait_released(&self, generation: u64) -> Result<()> {
        self.wait(|st| st.released >= generation)
    }

    /// Waits until `done` holds, or returns the failure that stopped the thread.
    fn wait(&self, done: impl Fn(&State) -> bool) -> Result<()> {
        let mut st = self.shared.lock();
        loop {
            if done(&st) {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            // The thread writes any request still pending before it exits.
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, file: &CheckpointFile, storage: &dyn Storage, dir: &Path) {
        loop {
            let cp = {
                let mut st = self.lock();
                loop {
                    match st.requested.take() {
                        Some(cp) if st.failed.is_none() => break cp,
                        _ if st.stop => return,
                        _ => {
                            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                }
            };
            // IMPORTANT: durable is published only after the sync, and segments are
            // deleted only after that: a crash in between keeps records still needed.
            let written = file.write(&cp);
            if !self.finish(written, dir, |st| {
                st.durable = st.durable.max(cp.generation)
            }) {
                continue;
            }
            let deleted = delete_released(storage, dir, &cp);
            self.finish(deleted, dir, |st| {
                st.released = st.released.max(cp.generation)
            });
        }
    }

    /// Publishes the outcome of a step: `on_ok` on success, else the failure, which stops
    /// checkpointing. True on success.
    fn finish(&self, result: Result<()>, dir: &Path, on_ok: impl FnOnce(&mut State)) -> bool {
        let mut st = self.lock();
        let ok = match result {
            Ok(()) => {
                on_ok(&mut st);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; acknowledgements are no longer persisted until the reader is reopened");
                st.failed = Some(Failure::from_error(&e, dir));
                false
            }
        };
        self.changed.notify_all();
        ok
    }
}

/// Deletes every segment that lies wholly before the checkpoint's position in its lane,
/// except a lane's newest segment (it carries the lane's sequence numbers forward). Runs
/// only after the checkpoint is durable.
fn delete_released(storage: &dyn Storage, dir: &Path, cp: &Checkpoint) -> Result<()> {
    let mut removed = false;
    for (lane, segs) in segment::list(storage, dir)? {
        let Some(pos) = cp.lanes.get(&lane) else {
            continue;
        };
        let newest = segs.last().copied();
        for seg in segs
            .iter()
            .filter(|s| **s < pos.position.segment && Some(**s) != newest)
        {
            let path = join(dir, &FileName::Segment(lane, *seg));
            match storage.remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        }
    }
    if removed {
        // IMPORTANT: the removals must be durable (the checkpoint releasing them already is).
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync dir", dir, e))?;
    }
    Ok(())
}
