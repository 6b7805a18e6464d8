//! Checkpoints written by a background thread, so a reader can checkpoint often without
//! waiting for `fdatasync` on its hot path. One thread owns the checkpoint file: requests
//! are coalesced (the newest wins), each is written and synced, and only then are the
//! segments it releases deleted (and the directory synced), one file per step, a newly
//! requested checkpoint going before the remaining deletions. `Reader::checkpoint` waits for
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
        // The newest durable checkpoint whose released segments are not all deleted yet.
        let mut release: Option<Release> = None;
        loop {
            let step = {
                let mut st = self.lock();
                loop {
                    if st.failed.is_none() {
                        if let Some(cp) = st.requested.take() {
                            break Step::Write(cp);
                        }
                        if release.is_some() {
                            break Step::Delete;
                        }
                    }
                    if st.stop {
                        return;
                    }
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            match step {
                Step::Write(cp) => {
                    // IMPORTANT: durable is published only after the sync, and segments
                    // are deleted only after that: a crash in between keeps records
                    // still needed.
                    let written = file.write(&cp);
                    if self.finish(written, dir, |st| {
                        st.durable = st.durable.max(cp.generation)
                    }) {
                        // A newer checkpoint releases at least what an older one did.
                        let removed = release.as_ref().is_some_and(|r| r.removed);
                        release = Some(Release::new(cp, removed));
                    }
                }
                Step::Delete => {
                    let Some(r) = release.as_mut() else { continue };
                    // One file per step, so a checkpoint requested meanwhile waits for at
                    // most one unlink, not for a whole backlog of them.
                    match r.step(storage, dir) {
                        Ok(false) => {}
                        Ok(true) => {
                            let generation = r.checkpoint.generation;
                            release = None;
                            self.finish(Ok(()), dir, |st| {
                                st.released = st.released.max(generation)
                            });
                        }
                        Err(e) => {
                            release = None;
                            self.finish(Err(e), dir, |_| {});
                        }
                    }
                }
            }
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

/// What the thread does next: write a requested checkpoint (first), or delete a segment.
enum Step {
    Write(Checkpoint),
    Delete,
}

/// The deletions a durable checkpoint allows: every segment that lies wholly before the
/// checkpoint's position in its lane, except a lane's newest segment (it carries the lane's
/// sequence numbers forward).
struct Release {
    checkpoint: Checkpoint,
    /// Listed on the first step.
    victims: Option<Vec<PathBuf>>,
    /// Some file was removed since the directory was last synced.
    removed: bool,
}

impl Release {
    fn new(checkpoint: Checkpoint, removed: bool) -> Self {
        Self {
            checkpoint,
            victims: None,
            removed,
        }
    }

    /// Removes one released segment; when none is left, syncs the directory (if anything
    /// was removed) and returns true.
    fn step(&mut self, storage: &dyn Storage, dir: &Path) -> Result<bool> {
        let victims = match &mut self.victims {
            Some(v) => v,
            None => self
                .victims
                .insert(released(storage, dir, &self.checkpoint)?),
        };
        if let Some(path) = victims.pop() {
            match storage.remove_file(&path) {
                Ok(()) => self.removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            return Ok(false);
        }
        if self.removed {
            // IMPORTANT: the removals must be durable (the checkpoint releasing them
            // already is).
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync dir", dir, e))?;
            self.removed = false;
        }
        Ok(true)
    }
}

/// The segments `cp` releases, newest last (removed oldest first).
fn released(storage: &dyn Storage, dir: &Path, cp: &Checkpoint) -> Result<Vec<PathBuf>> {
    let mut victims = Vec::new();
    for (lane, segs) in segment::list(storage, dir)? {
        let Some(pos) = cp.lanes.get(&lane) else {
            continue;
        };
        let newest = segs.last().copied();
        victims.extend(
            segs.iter()
                .filter(|s| **s < pos.position.segment && Some(**s) != newest)
                .map(|seg| join(dir, &FileName::Segment(lane, *seg))),
        );
    }
    // Popped from the end: oldest first.
    victims.reverse();
    Ok(victims)
}
