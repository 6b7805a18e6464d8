//! Step one of two: the raw command line, as clap parses it. Nothing here is checked
//! beyond its type; [`crate::config`] layers it over the file and the environment and
//! validates the result.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::exit_codes_help;

const ABOUT: &str = "A crash-safe queue of Groundlight escalations: the reader daemon and the \
operator commands.";

const CONFIG_HELP: &str = "\
Configuration: a TOML file (--config, else $ESCALATION_QUEUE_CONFIG), overridden by the
environment (ESCALATION_QUEUE_DIR, GROUNDLIGHT_API_TOKEN, GROUNDLIGHT_ENDPOINT, RUST_LOG,
and ESCALATION_QUEUE__<SECTION>__<KEY> for any key), overridden by flags (the named flags
and --set section.key=value). Every key, its default and range: docs/OPERATIONS.md.";

/// The raw command line.
#[derive(Debug, Parser)]
#[command(
    name = "escalation-queue",
    version,
    about = ABOUT,
    after_help = format!("{CONFIG_HELP}\n\n{}", exit_codes_help()),
    propagate_version = true
)]
pub struct RawArgs {
    /// Log filter: error, warn, info, debug, trace, or a RUST_LOG directive
    /// [default: $RUST_LOG, else log.level, else info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log format on stderr [default: log.format, else human]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl RawArgs {
    /// Where the queue is and how it is configured, for a command that opens the queue;
    /// `None` for `mock-cloud` and `demo`, which take no queue and no configuration.
    pub fn queue_args(&self) -> Option<&QueueArgs> {
        match &self.command {
            Command::Reader(args) => Some(&args.queue),
            Command::Drain(args) => Some(&args.queue),
            Command::Enqueue(args) => Some(&args.queue),
            Command::Status(args) | Command::Verify(args) => Some(&args.queue),
            Command::Inspect(args) => Some(&args.queue),
            Command::Dlq(args) => Some(&args.queue),
            Command::ImportLegacy(args) => Some(&args.queue),
            Command::MockCloud(_) | Command::Demo(_) => None,
        }
    }

    /// The delivery flags of `reader` and `drain`.
    pub fn delivery_args(&self) -> Option<&DeliveryArgs> {
        match &self.command {
            Command::Reader(args) => Some(&args.delivery),
            Command::Drain(args) => Some(&args.delivery),
            _ => None,
        }
    }
}

/// The queue and its configuration: the options of every command that opens the queue.
/// Global within `dlq`, so they may come before or after `list`, `replay`, `purge`.
#[derive(Debug, Default, Args)]
pub struct QueueArgs {
    /// Queue directory [default: $ESCALATION_QUEUE_DIR, else $XDG_STATE_HOME/escalation-queue,
    /// else ~/.local/state/escalation-queue]
    #[arg(long, global = true, value_name = "DIR")]
    pub queue_dir: Option<PathBuf>,

    /// TOML configuration file [default: $ESCALATION_QUEUE_CONFIG, else none]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Set one configuration key, e.g. --set worker.retention_ms=3600000 (repeatable; wins
    /// over the file and the environment)
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deliver escalations until SIGTERM or SIGINT, serving /health, /stats and /metrics
    Reader(ReaderArgs),
    /// Deliver until the queue is empty, then exit: 0 if nothing was dead-lettered, 1 if
    /// something was
    Drain(DrainArgs),
    /// Enqueue one escalation; prints its image query id once it is durable
    Enqueue(EnqueueArgs),
    /// Pending items per lane, oldest pending age, dead letters, cursors, bytes on disk,
    /// whether a reader is running
    Status(ReportArgs),
    /// List pending records (ids, detector, size, age) without consuming them
    Inspect(InspectArgs),
    /// Check every checksum; exit 3 with a report when anything is damaged
    Verify(ReportArgs),
    /// The dead-letter queue: list, replay or purge
    Dlq(DlqArgs),
    /// Move a Python (edge-endpoint) file queue into this queue: pending lines become
    /// escalations, failed/ records dead letters; safe to kill and run again
    ImportLegacy(ImportLegacyArgs),
    /// Serve a local stand-in for the Groundlight API, with injectable faults
    MockCloud(MockCloudArgs),
    /// In one process: a mock cloud with an outage, a few hundred escalations from several
    /// writer threads, the reader with live progress, and the final tally
    Demo(DemoArgs),
}

/// Options of `reader`.
#[derive(Debug, Args)]
pub struct ReaderArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// Options of `drain`: those of `reader`, and `--json`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub delivery: DeliveryArgs,

    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// Where to deliver and where to be probed: the flags `reader` and `drain` share.
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    /// Groundlight API endpoint [default: $GROUNDLIGHT_ENDPOINT, else cloud.endpoint, else
    /// https://api.groundlight.ai/device-api]. The token comes only from
    /// $GROUNDLIGHT_API_TOKEN, or cloud.api_token or cloud.api_token_file (re-read when it
    /// changes) in the config file.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Address of the status server (/health, /stats, /metrics) [default: status.addr, else
    /// 127.0.0.1:8787]; port 0 picks a free port (logged at start). `reader` always serves
    /// it (unless status.enabled = false); `drain` only when an address is given, here or
    /// as status.addr
    #[arg(long, value_name = "IP:PORT")]
    pub status_addr: Option<String>,
}

/// Options of `enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// The detector, e.g. det_2abc
    #[arg(long, value_name = "ID")]
    pub detector_id: String,

    /// The image file, or - to read it from stdin
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// The image query id to create [default: a fresh iq_ id]
    #[arg(long, value_name = "ID")]
    pub image_query_id: Option<String>,

    /// The request id sent as X-Request-Id [default: a fresh req_ id]
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,

    /// Confidence threshold, 0 to 1
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub confidence_threshold: Option<f64>,

    /// Patience time in seconds: 0, or 0.001 to 31536000 (365 days)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub patience_time: Option<f64>,

    /// DEFAULT, ALWAYS or NEVER
    #[arg(long, value_name = "MODE")]
    pub human_review: Option<String>,

    /// Metadata, a JSON object (at most 1024 characters as Python's json.dumps writes it)
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,

    /// Your own submit of this escalation failed after the request may have reached the
    /// cloud (timeout, reset, 5xx): the reader then treats a 400 as a possible duplicate
    #[arg(long)]
    pub possibly_submitted: bool,

    /// Print the receipt (lane, seq, ids, size) as JSON instead of the image query id
    #[arg(long)]
    pub json: bool,

    /// When every writer lane is taken by other processes, wait this long for one to free
    /// up before failing with exit 4 (0: fail at once)
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub lane_wait_ms: u64,
}

/// Options of `status` and `verify`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Options of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,

    /// List at most this many records, oldest first (0: all)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

/// Options of `dlq`: the queue (before or after the subcommand) and what to do.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// What to do with the dead letters.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first
    List(JsonArgs),
    /// Put dead letters back into the queue (attempts start again)
    Replay(ReplayArgs),
    /// Delete dead letters for good
    Purge(PurgeArgs),
}

/// Options of `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// With --all, also replay entries dead-lettered as undecodable (skipped otherwise:
    /// they would only be dead-lettered again)
    #[arg(long)]
    pub include_undecodable: bool,

    /// Show what would be replayed; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Purge without asking (needed for --all when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,

    /// Show what would be purged; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `--id ID` or `--all`, exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// One dead letter, by its dl_ id or its image query id
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// Every dead letter
    #[arg(long)]
    pub all: bool,
}

/// Options of `import-legacy`.
#[derive(Debug, Args)]
pub struct ImportLegacyArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// The legacy queue directory: the one holding writing/, reading/, images/, failed/
    /// and request-cache/ (edge-endpoint's /opt/groundlight/queue)
    #[arg(value_name = "LEGACY_DIR")]
    pub legacy_dir: PathBuf,

    /// The path the legacy containers saw LEGACY_DIR at: the lines name their images by
    /// absolute path below it
    #[arg(long, value_name = "DIR", default_value = "/opt/groundlight/queue")]
    pub legacy_root_as: PathBuf,

    /// The legacy containers' offset from UTC, in minutes: their timestamps are naive
    /// local time (the edge-endpoint image sets no time zone, so UTC)
    #[arg(
        long,
        value_name = "MINUTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub legacy_utc_offset_minutes: i64,

    /// Show what would be imported; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// Options of `mock-cloud`.
#[derive(Debug, Args)]
pub struct MockCloudArgs {
    /// Where to listen; port 0 picks a free port. The first line printed is
    /// `listening on http://IP:PORT/device-api`.
    #[arg(long, default_value = "127.0.0.1:30101", value_name = "IP:PORT")]
    pub listen: SocketAddr,

    /// The token requests must carry [default: $GROUNDLIGHT_API_TOKEN, else api_mockcloud_default_token_0000]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Accept the token in FILE instead (its text, trimmed), re-read every 100 ms: a test or
    /// demo rotates the cloud's token by rewriting it
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Fault options of `mock-cloud`. Rates are probabilities from 0 to 1 whose sum is at most 1.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Rate of 503 Service Unavailable answers
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub unavailable_rate: f64,

    /// Rate of 429 Too Many Requests answers (with Retry-After: 1); drawn for the first
    /// 100000 requests
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub too_many_requests_rate: f64,

    /// Rate of connection resets
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub reset_rate: f64,

    /// Rate of requests processed whose response is then dropped
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub drop_response_rate: f64,

    /// Rate of answers delayed by --timeout-delay-ms (past the client's read timeout: a
    /// timeout)
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub timeout_rate: f64,

    /// The delay of --timeout-rate answers
    #[arg(long, default_value_t = 20_000, value_name = "MS")]
    pub timeout_delay_ms: u64,

    /// Seed of the fault generator
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,

    /// Scripted actions for the first requests, comma-separated: pass, reset, drop,
    /// delay:MS, or an HTTP status (400, 429, 503, ...)
    #[arg(long, value_delimiter = ',', value_name = "ACTION,...")]
    pub script: Vec<String>,

    /// Start an outage this long after starting
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub outage_after_ms: u64,

    /// Length of the outage (0: no outage)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub outage_ms: u64,

    /// How the outage fails requests
    #[arg(long, value_enum, default_value_t = OutageArg::Unavailable)]
    pub outage_mode: OutageArg,

    /// Answer HTTP 400 to every submission for this detector (nothing is created);
    /// repeatable
    #[arg(long, value_name = "DETECTOR_ID")]
    pub reject_detector: Vec<String>,
}

/// `--outage-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutageArg {
    /// Answer 503 with Retry-After: 1
    Unavailable,
    /// Stop listening: connections are refused
    Refuse,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Escalations to enqueue (1 to 100000)
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub escalations: u32,

    /// Writer threads, each with its own lane (1 to 16)
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub writers: u16,

    /// Length of the cloud outage (503s) in the middle of the run (0 to 20000)
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    pub outage_ms: u64,

    /// Seed of the mock cloud's random faults and the backoff jitter
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        RawArgs::command().debug_assert();
    }

    #[test]
    fn dlq_selection_needs_exactly_one_of_id_and_all() {
        let parse = |args: &[&str]| RawArgs::try_parse_from(args);
        assert!(parse(&["eq", "dlq", "replay", "--all"]).is_ok());
        assert!(parse(&["eq", "dlq", "purge", "--id", "dl_0_1"]).is_ok());
        assert!(parse(&["eq", "dlq", "purge"]).is_err());
        assert!(parse(&["eq", "dlq", "purge", "--id", "x", "--all"]).is_err());
    }
}
