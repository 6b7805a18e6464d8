//! A size-limited tmpfs for the tests that need a real file system to fill up
//! (`wal/tests/real_faults.rs`, `bin/tests/operator_truth.rs`). Feature `test-support`
//! only, which the tests enable through their dev-dependencies; never in a production build.
//!
//! Mounting needs root (CAP_SYS_ADMIN) and the `mount` program. Where it is not permitted
//! a test says `SKIPPED` and why, and passes, except under CI (`CI=true` or `CI=1`), which
//! must run every test: there it fails (`.ci/run` runs the tests as root with `mount`).

use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the tests run under CI (`CI=true` or `CI=1`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tmpfs mounted by [`Tmpfs::mount`]; unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s `size=`, e.g. "1m") with mode 0700 at `at`,
    /// creating the directory if needed. `None` (after printing `SKIPPED:` and the reason)
    /// when mounting is not permitted here.
    ///
    /// # Panics
    /// When mounting fails under CI, or `at` cannot be created.
    #[track_caller]
    pub fn mount(at: &Path, size: &str) -> Option<Self> {
        if let Err(e) = std::fs::create_dir_all(at) {
            panic!("creating the mount point {}: {e}", at.display());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        if out.as_ref().is_ok_and(|o| o.status.success()) {
            return Some(Self {
                at: at.to_path_buf(),
            });
        }
        let why = "cannot mount a size-limited tmpfs here (needs root / CAP_SYS_ADMIN and `mount`)";
        assert!(
            !under_ci(),
            "CI=true, yet this test cannot run: {why}: {out:?}"
        );
        println!("SKIPPED: {why}");
        None
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Fills the file system with `<mount>/filler` until a write fails for want of space.
    ///
    /// # Panics
    /// When a write fails for another reason.
    pub fn fill(&self) {
        let path = self.at.join("filler");
        let mut filler = match File::create(&path) {
            Ok(f) => f,
            Err(e) => panic!("creating {}: {e}", path.display()),
        };
        let chunk = vec![0xAA_u8; 4096];
        loop {
            match filler.write_all(&chunk).and_then(|()| filler.sync_data()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}
