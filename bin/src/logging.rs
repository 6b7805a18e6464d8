//! Logs go to stderr through `tracing`: readable lines by default, JSON objects with
//! `--log-format json`. While a progress bar is drawn, log lines are written "around" it so
//! the two never garble each other.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::exit::UsageError;

/// The progress bar on screen, if any.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Installs the global subscriber. `default_filter` applies when the user chose none.
pub fn init(config: &LogConfig, default_filter: &str) -> Result<(), UsageError> {
    let filter = match config.filter_is_explicit {
        true => config.filter.as_str(),
        false => default_filter,
    };
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| UsageError::new(format!("invalid log filter {filter:?}: {e}")))?;
    let layer = tracing_subscriber::fmt::layer().with_writer(StderrAroundBar);
    let registry = tracing_subscriber::registry()
        .with(NoHttpClientTrace)
        .with(filter);
    let installed = match config.format {
        LogFormat::Human => registry
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init(),
    };
    // Already installed (tests calling `run` twice in one process): keep the first.
    drop(installed);
    Ok(())
}

/// At TRACE the HTTP client dumps raw requests, the `x-api-token` header included. This
/// layer drops those events whatever the filter asks for, so the token is never logged
/// (at DEBUG the client redacts headers itself).
#[derive(Clone, Copy, Debug)]
struct NoHttpClientTrace;

impl NoHttpClientTrace {
    fn allows(metadata: &Metadata<'_>) -> bool {
        !(*metadata.level() == Level::TRACE && metadata.target().starts_with("ureq"))
    }
}

impl<S: Subscriber> Layer<S> for NoHttpClientTrace {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        Self::allows(metadata)
    }

    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // Events bridged from the `log` crate carry their real target in their fields.
        match event.normalized_metadata() {
            Some(metadata) => Self::allows(&metadata),
            None => Self::allows(event.metadata()),
        }
    }
}

/// Makes `bar` the bar log lines are written around, until [`clear_bar`].
pub fn set_bar(bar: &ProgressBar) {
    *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
}

/// Forgets the bar set by [`set_bar`].
pub fn clear_bar() {
    *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Writes each log line to stderr, suspending the active progress bar meanwhile.
#[derive(Clone, Copy, Debug)]
struct StderrAroundBar;

/// One log line, buffered and written whole on drop.
struct LineWriter {
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for StderrAroundBar {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { buf: Vec::new() }
    }
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let bar = ACTIVE_BAR
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.buf);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}
