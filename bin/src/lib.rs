//! The `escalation-queue` binary, as a library that tests can call: the reader daemon
//! (`reader`, `drain`), the operator commands (`enqueue`, `status`, `inspect`, `verify`,
//! `dlq`), the mock cloud and the demo.
//!
//! [`run`] parses the command line in two steps — clap's raw arguments ([`RawArgs`]),
//! then a validated [`Config`] layered from the TOML file, the environment and the flags —
//! sets up logging, and runs the command. `main` maps its error to an exit code with
//! [`exit_for`]; the codes are documented in `--help` and `docs/OPERATIONS.md`.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod exit;
mod logging;
mod progress;
mod render;
mod shutdown;
mod status_server;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

pub use {
    cli::{Command, RawArgs},
    config::{Config, Env, Origin, ENV_PREFIX},
    exit::{exit_codes_help, exit_for, Exit, UsageError, EXIT_CODES},
    render::error_chain,
    status_server::{Health, ReaderState, StatusServer},
};

/// Runs the command line `args` (the program name first). Returns the exit code of a
/// command that ran; an `Err` is a failure whose code [`exit_for`] gives.
pub fn run<I, T>(args: I) -> anyhow::Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let raw = match RawArgs::try_parse_from(args) {
        Ok(raw) => raw,
        Err(e) => {
            // --help and --version print to stdout and succeed; mistakes exit 2.
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return Ok(exit.into());
        }
    };
    let config = Config::resolve(&raw, &Env::from_process())?;
    let default_filter = match raw.command {
        // The demo's output is its progress and its tally; the worker's own incidents
        // about the faults the demo injects would drown them (--log-level shows them).
        Command::Demo(_) => "off",
        _ => "info",
    };
    logging::init(&config.log, default_filter)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    commands::dispatch(&raw.command, &config)
}
