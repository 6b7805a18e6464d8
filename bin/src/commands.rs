//! One module per subcommand, and what they share: finding the queue directory, the clock,
//! JSON output.

mod demo;
mod dlq;
mod enqueue;
mod inspect;
mod mock_cloud;
mod reader;
mod status;

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
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
        Command::MockCloud(args) => mock_cloud::mock_cloud(args),
        Command::Demo(args) => demo::demo(args),
    }
}

/// The queue directory, created (mode 0700) if needed and checked to be writable: a
/// command that writes fails here, naming the directory, rather than deep in the wal.
pub fn writable_queue_dir(config: &Config) -> Result<&Path, UsageError> {
    let dir = config.queue_dir()?;
    let unusable = |what: String| {
        UsageError::new(format!(
            "queue directory {} (queue_dir, from {}) {what}",
            dir.display(),
            config.origin("queue_dir")
        ))
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| unusable(format!("cannot be created: {e}")))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"probe"));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| unusable(format!("is not writable: {e}")))?;
    Ok(dir)
}

/// The queue directory, which must exist (read-only commands never create one).
pub fn existing_queue_dir(config: &Config) -> Result<&Path, UsageError> {
    let dir = config.queue_dir()?;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(UsageError::new(format!(
            "queue directory {} (queue_dir, from {}) is not a directory",
            dir.display(),
            config.origin("queue_dir")
        ))),
        Err(e) => Err(UsageError::new(format!(
            "queue directory {} (queue_dir, from {}) cannot be read: {e}; nothing was ever \
             enqueued there, or --queue-dir / ESCALATION_QUEUE_DIR points elsewhere",
            dir.display(),
            config.origin("queue_dir")
        ))),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}
