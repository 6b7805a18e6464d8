//! The configuration file's schema: every key with its default and range. The same keys
//! are set by `ESCALATION_QUEUE__<SECTION>__<KEY>` and `--set section.key=value`.
//! `docs/OPERATIONS.md` lists them all; a test there keeps the two in step.

use std::fmt;
use std::path::PathBuf;

use escalation_queue::wal::Durability;
use escalation_queue::worker::TlsRoots;
use escalation_queue::{QueueOptions, WorkerConfig};
use serde::{Deserialize, Serialize};

/// The whole file. Unknown keys are rejected, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The queue directory. Default: `$ESCALATION_QUEUE_DIR`, else
    /// `$XDG_STATE_HOME/escalation-queue`, else `~/.local/state/escalation-queue`.
    pub queue_dir: Option<PathBuf>,
    /// Logging.
    pub log: LogSection,
    /// How the queue directory is opened; every process of one queue must agree.
    pub queue: QueueSection,
    /// The Groundlight API.
    pub cloud: CloudSection,
    /// The reader's status server.
    pub status: StatusSection,
    /// The delivery worker (retention, backoff, circuit breaker, budgets, classification,
    /// incidents): the worker crate's own `WorkerConfig`, key for key.
    pub worker: WorkerConfig,
}

/// `[log]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Filter: `error`, `warn`, `info`, `debug`, `trace` or a `RUST_LOG` directive.
    /// Default `info`.
    pub level: String,
    /// `human` or `json`. Default `human`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[queue]`: the wal options every process opening the queue uses.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSection {
    /// Largest image accepted. Default 16 MiB; 1 byte to 512 MiB.
    pub image_size_max_bytes: usize,
    /// Size of each segment file. Default 64 MiB; 64 KiB to 1 GiB and at least
    /// `image_size_max_bytes` + 64 KiB + framing.
    pub segment_bytes: u64,
    /// Most bytes the queue's segment files may occupy (allocated lengths); beyond it
    /// enqueue fails. Default 8 GiB; at least two segments.
    pub queue_bytes_max: u64,
    /// Segment files are allocated in steps of this many bytes. Default 4 MiB; 4 KiB to
    /// 1 GiB, a multiple of 4 KiB.
    pub allocation_step_bytes: u64,
    /// Free space to leave on the file system. Default 64 MiB; 0 disables the check.
    pub free_disk_bytes_min: u64,
    /// Writer lanes (concurrent writers across processes). Default 16; 1 to 64.
    pub lanes_max: u16,
    /// `sync_each_append` (default: durable before acknowledged), `interval` or `none`.
    pub durability: DurabilityKind,
    /// Sync interval of `durability = "interval"`. Default 10; 1 to 60000.
    pub durability_interval_ms: u64,
    /// The only directory path images may be in (absolute). Default: none, path images
    /// are refused (inline images only).
    pub images_dir: Option<PathBuf>,
}

/// Sync interval of `durability = "interval"` when the file gives none.
const DURABILITY_INTERVAL_MS_DEFAULT: u64 = 10;

/// The library's defaults ([`QueueOptions::default`]), key for key.
impl Default for QueueSection {
    fn default() -> Self {
        let lib = QueueOptions::default();
        let (durability, durability_interval_ms) = match lib.durability {
            Durability::SyncEachAppend => (
                DurabilityKind::SyncEachAppend,
                DURABILITY_INTERVAL_MS_DEFAULT,
            ),
            Durability::Interval(every) => (
                DurabilityKind::Interval,
                u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            ),
            Durability::None => (DurabilityKind::None, DURABILITY_INTERVAL_MS_DEFAULT),
        };
        Self {
            image_size_max_bytes: lib.image_size_max_bytes,
            segment_bytes: lib.segment_bytes,
            queue_bytes_max: lib.queue_bytes_max,
            allocation_step_bytes: lib.allocation_step_bytes,
            free_disk_bytes_min: lib.free_disk_bytes_min,
            lanes_max: lib.lanes_max,
            durability,
            durability_interval_ms,
            images_dir: lib.images_dir,
        }
    }
}

/// `queue.durability`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityKind {
    /// fdatasync before an enqueue returns (group commit).
    #[default]
    SyncEachAppend,
    /// A background sync every `durability_interval_ms`: a power loss loses up to one
    /// interval of acknowledged escalations.
    Interval,
    /// Never sync. Throw-away queues only.
    None,
}

/// `[cloud]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudSection {
    /// API base URL. Default `https://api.groundlight.ai/device-api`.
    pub endpoint: String,
    /// The API token. Default: none (`GROUNDLIGHT_API_TOKEN` is the usual way). A file
    /// holding it should be mode 0600.
    pub api_token: Option<Secret>,
    /// A file holding the token (or the SDK's token cache JSON), re-read when it changes
    /// and after a 401/403: rotation without a restart. Wins over `api_token`. Default none.
    pub api_token_file: Option<PathBuf>,
    /// Connect timeout of an item's first attempt. Default 5000; at least 1.
    pub connect_timeout_first_ms: u64,
    /// Connect timeout of retries. Default 1000; at least 1.
    pub connect_timeout_retry_ms: u64,
    /// Wait for the response headers, then for the body. Default 15000; at least 1.
    pub read_timeout_ms: u64,
    /// Sending the request headers, then the image. Default 60000; at least 1.
    pub send_timeout_ms: u64,
    /// Largest success response read. Default 1 MiB; at least 1.
    pub response_size_max_bytes: u64,
    /// HTTP proxy, `http://[user:password@]host:port`. Default: none (direct).
    pub proxy_url: Option<Secret>,
    /// The CAs TLS connections trust: `system` (the system store, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`) or `bundled` (the Mozilla roots compiled in). Default `system`.
    pub tls_roots: TlsRoots,
    /// A PEM file of extra CA certificates, trusted on top of the system store. Default none.
    pub ca_file: Option<PathBuf>,
}

impl Default for CloudSection {
    fn default() -> Self {
        use escalation_queue::worker::client_defaults as lib;
        Self {
            endpoint: lib::ENDPOINT.to_owned(),
            api_token: None,
            api_token_file: None,
            connect_timeout_first_ms: lib::CONNECT_TIMEOUT_FIRST_MS,
            connect_timeout_retry_ms: lib::CONNECT_TIMEOUT_RETRY_MS,
            read_timeout_ms: lib::READ_TIMEOUT_MS,
            send_timeout_ms: lib::SEND_TIMEOUT_MS,
            response_size_max_bytes: lib::RESPONSE_SIZE_MAX_BYTES,
            proxy_url: None,
            tls_roots: TlsRoots::System,
            ca_file: None,
        }
    }
}

/// `[status]`: the reader's HTTP status server and its health thresholds.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSection {
    /// Serve /health, /stats and /metrics while `reader` runs. Default true.
    pub enabled: bool,
    /// `IP:PORT` to bind. Default `127.0.0.1:8787`; port 0 picks a free port.
    pub addr: String,
    /// /health is `degraded` when the head of the queue is older than this. Default
    /// 600000 (10 min); at least 1.
    pub oldest_pending_degraded_ms: u64,
    /// /health is `degraded` when the queue's file system has less free space than this.
    /// Default 1 GiB; 0 disables. (Below `queue.free_disk_bytes_min` it is `unhealthy`.)
    pub disk_free_degraded_bytes: u64,
    /// /health is `degraded` for this long after a CRITICAL incident (corruption, auth
    /// failure, disk full). Default 900000 (15 min); 0 disables.
    pub critical_incident_degraded_ms: u64,
    /// Offer replay and purge of dead letters on the status page (`/`), each behind a
    /// confirmation and a POST carrying the page's CSRF token. Default false: read-only.
    pub actions_enabled: bool,
}

impl Default for StatusSection {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:8787".to_owned(),
            oldest_pending_degraded_ms: 600_000,
            disk_free_degraded_bytes: 1 << 30,
            critical_incident_degraded_ms: 900_000,
            actions_enabled: false,
        }
    }
}

/// A string that never appears in `Debug` output (tokens, proxy credentials).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use escalation_queue::worker::WebhookConfig;
    use escalation_queue::{ApiToken, ClientConfig};

    #[test]
    fn defaults_match_the_libraries() {
        let queue = QueueSection::default();
        let lib = QueueOptions::default();
        assert_eq!(queue.image_size_max_bytes, lib.image_size_max_bytes);
        assert_eq!(queue.segment_bytes, lib.segment_bytes);
        assert_eq!(queue.queue_bytes_max, lib.queue_bytes_max);
        assert_eq!(queue.allocation_step_bytes, lib.allocation_step_bytes);
        assert_eq!(queue.free_disk_bytes_min, lib.free_disk_bytes_min);
        assert_eq!(queue.lanes_max, lib.lanes_max);
        let cloud = CloudSection::default();
        let lib = ClientConfig::new(ApiToken::new("t").expect("token"));
        assert_eq!(cloud.endpoint, lib.endpoint);
        assert_eq!(cloud.connect_timeout_first_ms, lib.connect_timeout_first_ms);
        assert_eq!(cloud.connect_timeout_retry_ms, lib.connect_timeout_retry_ms);
        assert_eq!(cloud.read_timeout_ms, lib.read_timeout_ms);
        assert_eq!(cloud.send_timeout_ms, lib.send_timeout_ms);
        assert_eq!(cloud.response_size_max_bytes, lib.response_size_max_bytes);
    }

    /// Keys that are unset by default (so absent from the serialized defaults).
    const OPTIONAL_KEYS: [&str; 11] = [
        "queue_dir",
        "cloud.api_token",
        "cloud.api_token_file",
        "cloud.proxy_url",
        "cloud.ca_file",
        "worker.jitter_seed",
        "worker.budget.attempts_max",
        "worker.incidents.webhook.url",
        "worker.incidents.webhook.timeout_ms",
        "worker.incidents.webhook.per_minute_max",
        "worker.incidents.webhook.queue_max",
    ];

    fn leaves(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = match prefix {
                        "" => key.clone(),
                        _ => format!("{prefix}.{key}"),
                    };
                    leaves(value, &path, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    /// Issue 4: every key has a documented default. A key added to any section (here or
    /// in the worker's `WorkerConfig`) fails this test until `docs/OPERATIONS.md` has it.
    #[test]
    fn every_key_is_documented_in_operations_md() {
        let docs = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/OPERATIONS.md"
        ));
        let defaults = toml::Value::try_from(FileConfig::default()).expect("serialize");
        let mut keys = Vec::new();
        leaves(&defaults, "", &mut keys);
        assert!(keys.len() > 50, "{keys:?}");
        keys.extend(OPTIONAL_KEYS.iter().map(|k| (*k).to_owned()));
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !docs.contains(&format!("| `{k}` |")))
            .collect();
        assert!(missing.is_empty(), "not in docs/OPERATIONS.md: {missing:?}");
        let webhook: WebhookConfig = toml::from_str("url = \"http://x\"").expect("webhook");
        let mut webhook_keys = Vec::new();
        leaves(
            &toml::Value::try_from(webhook).expect("ser"),
            "worker.incidents.webhook",
            &mut webhook_keys,
        );
        for key in webhook_keys {
            assert!(OPTIONAL_KEYS.contains(&key.as_str()), "{key} not listed");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let cloud: CloudSection = toml::from_str("api_token = \"api_2hunter2\"").expect("parse");
        assert!(!format!("{cloud:?}").contains("hunter2"));
    }
}
