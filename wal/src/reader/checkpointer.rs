//! Checkpoints written by a background thread, so a reader can checkpoint often without
//! waiting for `fdatasync` on its hot path. One thread owns the checkpoint file: requests
//! are coalesced (the newest wins), and each is written and synced. Only then does a second
//! thread delete the segments it releases (and sync the directory), so a checkpoint never
//! waits behind an unlink (deleting a large segment can take tens of milliseconds on some
//! file systems) and a consumer need not wait for space to be returned.
//! `Reader::checkpoint` waits for its request to become durable;
//! `Reader::checkpoint_in_background` waits for nothing; `Reader::wait_for_deletions`
//! waits for the deletions too.

use std::path::{Path, PathBuf};

use crate::cursor::{Checkpoint, CheckpointFile};
use crate::error::{Error, Result};
use crate::format::FileName;
use crate::fs::{join, Storage};
use crate::lane;
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    /// The checkpoint writer, then the deleter.
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// For the writer: the newest checkpoint handed over and not yet started.
    requested: Option<Checkpoint>,
    /// Newest generation that is durable.
    durable: u64,
    /// For the deleter: the newest durable checkpoint whose deletions have not started.
    to_release: Option<Checkpoint>,
    /// Newest generation whose released segments are deleted (and the deletions durable).
    released: u64,
    /// A failure of either thread stops checkpointing until the reader is reopened; every
    /// later call returns it.
    failed: Option<Failure>,
    /// Newest generation the writer could not write for want of space while the file was
    /// still unallocated (see [`write_making_room`]): not a failure, its waiters get
    /// [`Error::CheckpointDeferred`] and a later generation tries again.
    deferred: u64,
    /// The checkpoint file, for [`Error::CheckpointDeferred`].
    path: PathBuf,
    /// Set on drop: unless checkpointing failed, the threads finish what is pending, then
    /// exit.
    stop: bool,
    /// The writer has exited: nothing more will be handed to the deleter.
    writer_done: bool,
}

#[derive(Debug, Clone)]
struct Failure {
    op: &'static str,
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
    sync: bool,
}

impl Failure {
    fn from_error(e: &Error, dir: &Path) -> Self {
        match e {
            Error::Io {
                op,
                path,
                source,
                sync,
            } => Self {
                op,
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
                sync: *sync,
            },
            other => Self {
                op: "checkpoint",
                path: dir.to_path_buf(),
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
                sync: false,
            },
        }
    }

    fn to_error(&self) -> Error {
        Error::Io {
            op: self.op,
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.message.clone()),
            sync: self.sync,
        }
    }
}

impl Checkpointer {
    /// Starts the thread that owns `file` and the one that deletes released segments.
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
            st.path = file.path().to_path_buf();
        }
        let mut checkpointer = Self {
            shared,
            threads: Vec::new(),
        };
        let (writer, dir_w, storage_w) =
            (checkpointer.shared.clone(), dir.clone(), storage.clone());
        let mut file = file;
        checkpointer.start(
            "wal-checkpoint",
            "spawn checkpoint writer thread",
            move || {
                let _failure_on_panic = PanicGuard(&writer);
                writer.run_writer(&mut file, storage_w.as_ref(), &dir_w);
            },
        )?;
        let deleter = checkpointer.shared.clone();
        checkpointer.start("wal-release", "spawn segment deleter thread", move || {
            let _failure_on_panic = PanicGuard(&deleter);
            deleter.run_deleter(storage.as_ref(), &dir);
        })?;
        Ok(checkpointer)
    }

    /// Spawns one of the two threads. If the second cannot start, dropping `self` stops
    /// the first.
    fn start(
        &mut self,
        name: &str,
        op: &'static str,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        let t = thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| Error::io(op, PathBuf::new(), e))?;
        self.threads.push(t);
        Ok(())
    }

    /// The failure that stopped checkpointing, if any.
    pub(crate) fn failure(&self) -> Result<()> {
        match &self.shared.lock().failed {
            Some(f) => Err(f.to_error()),
            None => Ok(()),
        }
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
        let mut deferred = None;
        self.wait(|st| {
            if st.durable >= generation {
                return true;
            }
            if st.deferred >= generation {
                deferred = Some(st.path.clone());
                return true;
            }
            false
        })?;
        match deferred {
            Some(path) => Err(Error::CheckpointDeferred { path }),
            None => Ok(()),
        }
    }

    /// Waits until the segments released by checkpoint `generation` (or a newer one) are
    /// deleted.
    pub(crate) fn wait_released(&self, generation: u64) -> Result<()> {
        self.wait(|st| st.released >= generation)
    }

    /// Waits until `done` holds. A failure is returned even when `done` already holds: it
    /// is sticky, and a deletion failing after its checkpoint became durable must still be
    /// reported by the calls that follow.
    fn wait(&self, mut done: impl FnMut(&State) -> bool) -> Result<()> {
        let mut st = self.shared.lock();
        loop {
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            if done(&st) {
                return Ok(());
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
        // Unless checkpointing failed, the writer writes any request still pending and the
        // deleter then finishes the deletions it allows.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: writes and syncs each requested checkpoint, publishes it as
    /// durable and hands it to the deleter.
    fn run_writer(&self, file: &mut CheckpointFile, storage: &dyn Storage, dir: &Path) {
        loop {
            let cp = {
                let mut st = self.lock();
                loop {
                    match st.requested.take() {
                        Some(cp) if st.failed.is_none() => break cp,
                        _ if st.stop => {
                            st.writer_done = true;
                            self.changed.notify_all();
                            return;
                        }
                        _ => st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            // IMPORTANT: durable is published only after the sync, and segments are
            // deleted only after that: a crash in between keeps records still needed.
            let written = write_making_room(file, storage, dir, &cp);
            let generation = cp.generation;
            if matches!(&written, Err(e) if is_no_space(e)) && !file.is_allocated() {
                // Nothing durable refers to any segment yet, so there is nothing to fail:
                // the next request (its positions include these) tries again, by when it
                // may release whole segments and make room.
                let mut st = self.lock();
                if st.deferred == 0 {
                    tracing::warn!(dir = %dir.display(), "no space for the first cursor checkpoint, even after freeing the segments it releases; acknowledgements stay in memory until a later checkpoint can be written");
                }
                st.deferred = st.deferred.max(generation);
                self.changed.notify_all();
                continue;
            }
            self.finish(written, dir, |st| {
                st.durable = st.durable.max(generation);
                st.to_release = Some(cp);
            });
        }
    }

    /// The deleter thread: for each durable checkpoint handed over (the newest one waiting
    /// when the deleter is free), deletes the segments it releases, then syncs the
    /// directory, then publishes it as released.
    fn run_deleter(&self, storage: &dyn Storage, dir: &Path) {
        let mut release: Option<Release> = None;
        loop {
            {
                let mut st = self.lock();
                loop {
                    if st.failed.is_none() {
                        if release.is_none() {
                            release = st.to_release.take().map(Release::new);
                        }
                        if release.is_some() {
                            break;
                        }
                    }
                    // Nothing to do: done once the writer is (or, after a failure, on drop).
                    if st.writer_done || st.failed.is_some() && st.stop {
                        return;
                    }
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            }
            let Some(r) = release.as_mut() else { continue };
            match r.step(storage, dir) {
                Ok(false) => {}
                Ok(true) => {
                    let generation = r.checkpoint.generation;
                    release = None;
                    self.finish(Ok(()), dir, |st| st.released = st.released.max(generation));
                }
                Err(e) => {
                    release = None;
                    self.finish(Err(e), dir, |_| {});
                }
            }
        }
    }

    /// Publishes the outcome of a step: `on_ok` on success, else the failure, which stops
    /// both threads until the reader is reopened.
    fn finish(&self, result: Result<()>, dir: &Path, on_ok: impl FnOnce(&mut State)) {
        let mut st = self.lock();
        match result {
            Ok(()) => on_ok(&mut st),
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; acknowledgements are no longer persisted until the reader is reopened");
                st.failed = Some(Failure::from_error(&e, dir));
            }
        }
        self.changed.notify_all();
    }
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
    fn new(checkpoint: Checkpoint) -> Self {
        Self {
            checkpoint,
            victims: None,
            removed: false,
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
                .map_err(|e| Error::sync_failed("fsync dir", dir, e))?;
            self.removed = false;
        }
        Ok(true)
    }
}

/// Writes `cp`. A checkpoint file that the reader's open could not allocate (a full disk)
/// holds no checkpoint, so nothing durable refers to any segment: when its allocation
/// fails for want of space, the segments `cp` releases (every record in them consumed and
/// acknowledged) are deleted first, and the write is tried once more. A crash
/// in between restarts the cursor at each lane's oldest remaining segment, as it would
/// have without the deletions: records after the deleted ones are delivered again (at
/// least once), nothing unacknowledged is lost.
fn write_making_room(
    file: &mut CheckpointFile,
    storage: &dyn Storage,
    dir: &Path,
    cp: &Checkpoint,
) -> Result<()> {
    if file.is_allocated() {
        return file.write(cp);
    }
    match file.write(cp) {
        Err(e) if is_no_space(&e) => {
            let mut release = Release::new(cp.clone());
            while !release.step(storage, dir)? {}
            tracing::warn!(dir = %dir.display(), "no space for the first checkpoint: freed the consumed segments before writing it");
            file.write(cp)
        }
        other => other,
    }
}

/// An I/O error for `ENOSPC`.
fn is_no_space(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if crate::fs::is_storage_full(source))
}

/// Records a failure if a checkpoint thread panics, so that callers waiting for it get an
/// error instead of waiting forever.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = self.0.lock();
            st.failed = Some(Failure {
                op: "checkpoint thread",
                path: PathBuf::new(),
                kind: std::io::ErrorKind::Other,
                message: "panicked".to_owned(),
                sync: false,
            });
            st.writer_done = true;
            self.0.changed.notify_all();
        }
    }
}

/// The segments `cp` releases, newest last (removed oldest first).
fn released(storage: &dyn Storage, dir: &Path, cp: &Checkpoint) -> Result<Vec<PathBuf>> {
    let mut victims = Vec::new();
    for (lane, segs) in lane::list(storage, dir)? {
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
