//! Exit codes, and which error maps to which. Documented in `--help` and
//! `docs/OPERATIONS.md`; scripts and supervisors depend on them, so they never change.

use std::process::ExitCode;

use escalation_queue::wal::{Error as WalError, ErrorKind as WalErrorKind};
use escalation_queue::worker::ConfigError;
use escalation_queue::{Error, ErrorKind};

/// What the process tells its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Ok = 0,
    /// 1: the command ran, but work failed: `drain` dead-lettered or expired an item, or
    /// was interrupted with work left; `demo` lost an escalation.
    WorkFailed = 1,
    /// 2: the command line, the configuration or the input is wrong.
    Usage = 2,
    /// 3: the queue's storage failed: corruption, a poisoned writer, no space, I/O.
    Storage = 3,
    /// 4: another process holds the queue (a second reader, a dead-letter pass, every lane).
    Locked = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Every exit code and what it means, word for word as `--help` and the table in
/// `docs/OPERATIONS.md` give it (a test compares the two). 130 is the shutdown
/// module's forced exit.
pub const EXIT_CODES: [(u8, &str); 6] = [
    (0, "success"),
    (
        1,
        "work failed: `drain` dead-lettered or expired an item, or was interrupted with \
         work left; `demo` lost an escalation",
    ),
    (
        2,
        "usage or configuration error: unknown flag, or a flag the command does not take; \
         invalid value (the message names the key or flag, the value, where it came from \
         and what is allowed); unreadable or invalid config file; missing or oversized \
         image; unusable queue directory; unknown dead-letter id; no API token; an address \
         that cannot be listened on (`--listen`, `status.addr`)",
    ),
    (
        3,
        "storage error: damage found by `verify`, corruption, a poisoned writer, no space, \
         the queue full, an I/O error (the message names the file); also any failure not \
         listed here",
    ),
    (
        4,
        "another process holds the queue: a second reader (one reader per queue), a \
         dead-letter replay/purge in progress, or every writer lane taken (for longer than \
         `enqueue --lane-wait-ms`)",
    ),
    (
        130,
        "a second SIGINT/SIGTERM arrived while stopping: exit at once (nothing acknowledged \
         is lost; the item in flight is redelivered)",
    ),
];

/// The `--help` text that documents the exit codes: [`EXIT_CODES`], wrapped.
pub fn exit_codes_help() -> String {
    const WIDTH: usize = 92;
    const INDENT: &str = "       ";
    let mut out = String::from("Exit codes:");
    for (code, meaning) in EXIT_CODES {
        let mut line = format!("  {code:>3}  ");
        for word in meaning.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.len() > INDENT.len() {
                out.push('\n');
                out.push_str(line.trim_end());
                line = INDENT.to_owned();
            }
            line.push_str(word);
            line.push(' ');
        }
        out.push('\n');
        out.push_str(line.trim_end());
    }
    out
}

/// A problem with the command line, the configuration or the input: exit code 2. The
/// message names what is wrong (the key or flag, the value, what is allowed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    /// A usage error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The exit code for a failed command: the first error in the chain that says, by its
/// kind (one match, [`exit_for_kind`]).
pub fn exit_for(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if cause.is::<UsageError>() || cause.is::<ConfigError>() {
            return Exit::Usage;
        }
        let kind = if let Some(e) = cause.downcast_ref::<Error>() {
            e.kind()
        } else if let Some(e) = cause.downcast_ref::<WalError>() {
            ErrorKind::Wal(e.kind())
        } else {
            continue;
        };
        return exit_for_kind(kind);
    }
    Exit::Storage
}

/// The exit code for a queue error of `kind`.
fn exit_for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::Invalid
        | ErrorKind::Encode
        | ErrorKind::Config
        | ErrorKind::Wal(WalErrorKind::Config | WalErrorKind::InvalidRecord) => Exit::Usage,
        ErrorKind::Locked | ErrorKind::Wal(WalErrorKind::Locked) => Exit::Locked,
        _ => Exit::Storage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn errors_map_to_documented_codes() {
        let running = Error::WorkerRunning {
            path: PathBuf::from("/q"),
        };
        assert_eq!(exit_for(&anyhow::Error::new(running)), Exit::Locked);
        let usage = anyhow::Error::new(UsageError::new("bad")).context("while starting");
        assert_eq!(exit_for(&usage), Exit::Usage);
        let io = Error::Wal(WalError::QueueFull {
            queue_bytes: 1,
            queue_bytes_max: 1,
        });
        assert_eq!(exit_for(&anyhow::Error::new(io)), Exit::Storage);
        assert_eq!(exit_for(&anyhow::anyhow!("unknown")), Exit::Storage);
        let lanes = Error::from(WalError::NoFreeLane {
            path: PathBuf::from("/q"),
            lanes_max: 1,
        });
        assert_eq!(exit_for(&anyhow::Error::new(lanes)), Exit::Locked);
        let empty = anyhow::Error::new(WalError::EmptyRecord).context("enqueue");
        assert_eq!(exit_for(&empty), Exit::Usage);
        let poisoned = Error::from(WalError::Poisoned {
            lane: escalation_queue::wal::LaneId(0),
            cause: std::sync::Arc::new(std::io::Error::other("EIO")),
        });
        assert_eq!(exit_for(&anyhow::Error::new(poisoned)), Exit::Storage);
    }

    #[test]
    fn every_exit_code_is_documented_once() {
        let documented: Vec<u8> = EXIT_CODES.iter().map(|(code, _)| *code).collect();
        let exits = [
            Exit::Ok,
            Exit::WorkFailed,
            Exit::Usage,
            Exit::Storage,
            Exit::Locked,
        ];
        let mut expected: Vec<u8> = exits.iter().map(|e| *e as u8).collect();
        expected.push(130);
        assert_eq!(documented, expected);
        let help = exit_codes_help();
        assert!(help.lines().all(|l| l.len() <= 92), "{help}");
    }
}
