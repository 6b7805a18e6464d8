//! `escalation-queue`: see the library half (`lib.rs`) for everything it does.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match escalation_queue_cli::run(std::env::args_os()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", escalation_queue_cli::error_chain(&error));
            escalation_queue_cli::exit_for(&error).into()
        }
    }
}
