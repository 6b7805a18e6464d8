//! One module per subcommand, and what they share: finding the queue directory, the clock,
//! JSON output.

mod demo;
mod dlq;
mod enqueue;
mod import_legacy;
mod inspect;
mod mock_cloud;
mod reader;
mod status;

use std::fs::OpenOptions;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Command;
use crate::config::Config;
use crate::exit::UsageError;

/// Runs `command`.
pub fn dispatch(command: &Command, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Reader(_) => reader::reader(config),
        Command::Drain(args) => reader::drain(config, args.json),
        Command::Enqueue(args) => enqueue::enqueue(config, args),
        Command::Status(args) => status::status(config, args.json),
        Command::Inspect(args) => inspect::inspect(config, args),
        Command::Verify(args) => inspect::verify(config, args.json),
        Command::Dlq(args) => dlq::dlq(config, &args.command),
        Command::ImportLegacy(args) => import_legacy::import_legacy(config, args),
        Command::MockCloud(args) => mock_cloud::mock_cloud(args),
        Command::Demo(args) => demo::demo(args),
    }
}

/// The queue directory, created (mode 0700) if needed and checked to be writable: a
/// command that writes fails here, naming the directory, rather than deep in the wal.
///
/// The check creates and removes an empty file, so it tests permission (and a read-only
/// file system) but needs no free space: a full file system is no usage error. The reader
/// must start on one, because delivering is what frees it (probe F5); an enqueue then
/// fails with the wal's own "no space" error (exit 3).
pub fn writable_queue_dir(config: &Config) -> Result<&Path, UsageError> {
    let dir = config.queue_dir()?;
    let unusable = |what: String| {
        UsageError::new(format!(
            "queue directory {} (queue_dir, from {}) {what}",
            dir.display(),
            config.origin("queue_dir")
        ))
    };
    escalation_queue::wal::create_private_dir(dir)
        .map_err(|e| unusable(format!("cannot be created: {}", io_reason(&e, dir))))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let created = OpenOptions::new().write(true).create_new(true).open(&probe);
    let _ = std::fs::remove_file(&probe);
    match created {
        Ok(_) => {}
        Err(e) if escalation_queue::producer::support::is_no_space(&e) => tracing::warn!(
            queue = %dir.display(),
            error = %e,
            "the queue's file system is full; going on (delivering frees space, enqueues \
             fail with \"no space\" until then)"
        ),
        Err(e) => return Err(unusable(format!("is not writable: {}", io_reason(&e, dir)))),
    }
    Ok(dir)
}

/// The queue directory, which must exist and be readable (read-only commands never create
/// one). Only "not found" means "not there": any other error (permission denied above
/// all) is reported as such, never as an empty queue (probe F13).
pub fn existing_queue_dir(config: &Config) -> Result<&Path, UsageError> {
    let dir = config.queue_dir()?;
    let unusable = |what: String| {
        UsageError::new(format!(
            "queue directory {} (queue_dir, from {}) {what}",
            dir.display(),
            config.origin("queue_dir")
        ))
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(unusable("is not a directory".to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable(
                "does not exist: nothing was ever enqueued there, or --queue-dir / \
                 ESCALATION_QUEUE_DIR points elsewhere"
                    .to_owned(),
            ))
        }
        Err(e) => return Err(unusable(format!("cannot be read: {}", io_reason(&e, dir)))),
    }
    std::fs::read_dir(dir)
        .map_err(|e| unusable(format!("cannot be read: {}", io_reason(&e, dir))))?;
    Ok(dir)
}

/// Whether the queue's subdirectory `sub` (`wal/`, `dead-letter/`) exists: `false` only
/// when it is not found; a subdirectory that is there but cannot be read (permission
/// denied, not a directory, I/O error) is an error naming it, never "absent" (probe F13).
pub fn subdir_present(sub: &Path) -> Result<bool, UsageError> {
    let unreadable = |what: String| UsageError::new(format!("{} {what}", sub.display()));
    match std::fs::metadata(sub) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(sub)
            .map(|_| true)
            .map_err(|e| unreadable(format!("cannot be read: {}", io_reason(&e, sub)))),
        Ok(_) => Err(unreadable(
            "is not a directory (the queue directory holds something else there)".to_owned(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(unreadable(format!(
            "cannot be read: {}",
            io_reason(&e, sub)
        ))),
    }
}

/// An I/O error as an operator reads it: permission problems say whose files these are
/// and what to do.
fn io_reason(e: &std::io::Error, path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return e.to_string();
    }
    let owner = std::fs::symlink_metadata(path)
        .or_else(|_| std::fs::symlink_metadata(path.parent().unwrap_or(path)))
        .map(|m| format!(" (owned by uid {})", m.uid()))
        .unwrap_or_default();
    format!(
        "permission denied{owner}; run this command as the user that runs the reader, or \
         give this user access (the queue is created mode 0700): {e}"
    )
}

/// Now, in milliseconds since the Unix epoch (the wal's clock).
pub use escalation_queue::wal::clock::now_unix_ms;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}
