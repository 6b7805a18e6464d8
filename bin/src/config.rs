//! Step two of two: the raw arguments layered over the file and the environment, then
//! validated into a [`Config`]. Precedence, lowest first: built-in defaults, the TOML file,
//! the environment, the flags. Every rejected value is reported with its key, the value,
//! where it came from, and what is allowed.

mod file;
mod layers;
mod secrets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use escalation_queue::wal::{Durability, Error as WalError};
use escalation_queue::worker::{ConfigError, ProxyRoute, ProxyUrl};
use escalation_queue::{ApiToken, ClientConfig, Error, QueueOptions, WorkerConfig};
use tracing_subscriber::EnvFilter;

pub use file::{CloudSection, DurabilityKind, FileConfig, LogFormat, StatusSection};
pub use layers::{Origin, ENV_PREFIX};

use crate::cli::{LogFormatArg, QueueArgs, RawArgs};
use crate::exit::UsageError;
use layers::Layers;

/// Names of the environment variables read besides `ESCALATION_QUEUE__*`.
pub mod env_vars {
    /// The queue directory.
    pub const QUEUE_DIR: &str = "ESCALATION_QUEUE_DIR";
    /// The configuration file.
    pub const CONFIG: &str = "ESCALATION_QUEUE_CONFIG";
    /// The API token.
    pub const API_TOKEN: &str = escalation_queue::worker::ENV_API_TOKEN;
    /// The API endpoint.
    pub const ENDPOINT: &str = escalation_queue::worker::ENV_ENDPOINT;
    /// The log filter.
    pub const RUST_LOG: &str = "RUST_LOG";
}

/// A snapshot of the environment (tests pass their own).
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Names of variables whose value is not UTF-8 (kept so that they are refused, not
    /// silently treated as unset: probe F15).
    not_utf8: BTreeSet<String>,
}

impl Env {
    /// The process environment. A variable whose name is not UTF-8 cannot be one of ours
    /// and is skipped; one whose value is not UTF-8 is remembered, so that reading it is
    /// an error rather than a silent fallback.
    pub fn from_process() -> Self {
        let mut env = Self::default();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    env.vars.insert(name, value);
                }
                Err(_) => {
                    env.not_utf8.insert(name);
                }
            }
        }
        env
    }

    /// An environment of exactly these variables.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            not_utf8: BTreeSet::new(),
        }
    }

    /// Marks `name` as set to a value that is not UTF-8 (for tests).
    pub fn with_non_utf8(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self.not_utf8.insert(name.to_owned());
        self
    }

    /// A variable, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A variable the configuration reads: unset is `None`; a value that is not UTF-8
    /// (or, when `empty_is_error`, an empty one) is an error naming the variable, never a
    /// silent fallback to a default somewhere else.
    fn checked(&self, name: &str, empty_is_error: bool) -> Result<Option<&str>, UsageError> {
        if self.not_utf8.contains(name) {
            return Err(UsageError::new(format!(
                "environment variable {name} is not valid UTF-8; set it to a UTF-8 value \
                 or unset it"
            )));
        }
        match self.vars.get(name).map(String::as_str) {
            Some("") if empty_is_error => Err(UsageError::new(format!(
                "environment variable {name} is set but empty; set it to a value or unset it"
            ))),
            Some("") | None => Ok(None),
            Some(value) => Ok(Some(value)),
        }
    }

    /// A variable as the proxy rule reads it (set, UTF-8; empty counts as unset there).
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// The variables [`ProxyRoute::resolve`] reads.
    fn proxy_vars(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .filter(|(k, _)| k.to_ascii_uppercase().ends_with("_PROXY"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Names of `ESCALATION_QUEUE__*` variables whose value is not UTF-8.
    fn not_utf8_keys(&self) -> impl Iterator<Item = &String> {
        self.not_utf8.iter().filter(|n| n.starts_with(ENV_PREFIX))
    }
}

/// The validated configuration every command works from.
#[derive(Debug)]
pub struct Config {
    queue_dir: Result<PathBuf, String>,
    /// Logging.
    pub log: LogConfig,
    /// How the queue is opened.
    pub queue: QueueOptions,
    /// The cloud section, validated into a client when a command needs one.
    pub cloud: CloudSection,
    /// The status server.
    pub status: StatusConfig,
    /// The delivery worker.
    pub worker: WorkerConfig,
    /// Things to log once logging is up (for example a token in a world-readable file).
    pub warnings: Vec<String>,
    origins: BTreeMap<&'static str, Origin>,
    /// The proxy variables of the environment, for the cloud client's route.
    cloud_route_env: BTreeMap<String, String>,
}

/// Validated logging settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// An `EnvFilter` directive known to parse.
    pub filter: String,
    /// Whether the filter was chosen by the user (flag, `RUST_LOG`, file), not defaulted.
    pub filter_is_explicit: bool,
    /// Human or JSON.
    pub format: LogFormat,
}

/// Validated status-server settings.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    /// Serve at all.
    pub enabled: bool,
    /// Where.
    pub addr: SocketAddr,
    /// Head older than this: degraded.
    pub oldest_pending_degraded_ms: u64,
    /// Free space below this: degraded (0: off).
    pub disk_free_degraded_bytes: u64,
    /// A CRITICAL incident this recent: degraded (0: off).
    pub critical_incident_degraded_ms: u64,
    /// Replay and purge from the status page (behind a confirmation and a CSRF token).
    pub actions_enabled: bool,
}

impl Config {
    /// Layers `raw` over the file and `env`, and validates everything every command uses.
    pub fn resolve(raw: &RawArgs, env: &Env) -> Result<Self, UsageError> {
        let layers = layer(raw, env)?;
        let file: FileConfig = deserialize(&layers)?;
        let warnings = secrets::exposed_in_file(
            &layers,
            &[
                "cloud.api_token",
                "cloud.proxy_url",
                "worker.incidents.webhook.url",
            ],
        );
        let mut file = file;
        let proxy = proxy_url(&file.cloud, &layers)?;
        let queue_dir = match &file.queue_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(invalid(&layers, "queue_dir", "a directory path"))
            }
            Some(dir) => Ok(dir.clone()),
            None => default_queue_dir(env),
        };
        let queue = queue_options(&file, &layers)?;
        file.worker
            .validate()
            .map_err(|e| qualify(e, "worker", &layers))?;
        if let Some(webhook) = file.worker.incidents.webhook.as_mut() {
            webhook.proxy = ProxyRoute::resolve(&webhook.url, proxy.as_ref(), |n| env.lookup(n))
                .map_err(|e| UsageError::new(format!("incident webhook: {e}")))?;
            webhook.tls_roots = file.cloud.tls_roots;
            webhook.ca_file = file.cloud.ca_file.clone();
        }
        let status = status_config(&file.status, &layers)?;
        let log = log_config(&file, &layers)?;
        let origins = [
            "cloud.endpoint",
            "cloud.api_token",
            "queue_dir",
            "status.addr",
        ]
        .into_iter()
        .map(|k| (k, layers.origin(k)))
        .collect();
        let cloud_route_env = env.proxy_vars();
        Ok(Self {
            cloud_route_env,
            queue_dir,
            log,
            queue,
            cloud: file.cloud,
            status,
            worker: file.worker,
            warnings,
            origins,
        })
    }

    /// The queue directory, or why there is none (no `$HOME` to derive it from).
    pub fn queue_dir(&self) -> Result<&Path, UsageError> {
        self.queue_dir
            .as_deref()
            .map_err(|why| UsageError::new(why.clone()))
    }

    /// Where a key's value came from (for `cloud.endpoint`, `cloud.api_token`, `queue_dir`,
    /// `status.addr`).
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The cloud client's configuration; fails without a token or with a bad value.
    pub fn client_config(&self) -> Result<ClientConfig, UsageError> {
        let cloud = &self.cloud;
        let token = match &cloud.api_token_file {
            Some(path) => escalation_queue::worker::read_token_file(path)
                .map_err(|e| UsageError::new(format!("invalid configuration: {e}")))?,
            None => {
                let token = cloud.api_token.as_ref().ok_or_else(|| {
                    UsageError::new(format!(
                        "no API token: set {} (or cloud.api_token or cloud.api_token_file in \
                         the config file)",
                        env_vars::API_TOKEN
                    ))
                })?;
                ApiToken::new(token.expose()).map_err(|e| {
                    UsageError::new(format!(
                        "cloud.api_token (from {}): {e}",
                        self.origin("cloud.api_token")
                    ))
                })?
            }
        };
        let mut config = ClientConfig::new(token);
        config.api_token_file = cloud.api_token_file.clone();
        config.endpoint = cloud.endpoint.clone();
        config.connect_timeout_first_ms = cloud.connect_timeout_first_ms;
        config.connect_timeout_retry_ms = cloud.connect_timeout_retry_ms;
        config.read_timeout_ms = cloud.read_timeout_ms;
        config.send_timeout_ms = cloud.send_timeout_ms;
        config.response_size_max_bytes = cloud.response_size_max_bytes;
        config.tls_roots = cloud.tls_roots;
        config.ca_file = cloud.ca_file.clone();
        let proxy = match &cloud.proxy_url {
            Some(url) => Some(ProxyUrl::new(url.expose()).map_err(|e| {
                UsageError::new(format!(
                    "invalid configuration: cloud.proxy_url = <redacted> (from {}): {e}",
                    self.origin("cloud.proxy_url")
                ))
            })?),
            None => None,
        };
        if cloud.response_size_max_bytes == 0 {
            return Err(UsageError::new(
                "invalid configuration: cloud.response_size_max_bytes = 0; allowed: at least 1",
            ));
        }
        config.validate().map_err(|e| match e {
            ConfigError::InvalidEndpoint { .. } => UsageError::new(format!(
                "cloud.endpoint (from {}): {e}",
                self.origin("cloud.endpoint")
            )),
            other => cloud_error(other),
        })?;
        let env = &self.cloud_route_env;
        config.proxy =
            ProxyRoute::resolve(&config.endpoint, proxy.as_ref(), |n| env.get(n).cloned())
                .map_err(cloud_error)?;
        Ok(config)
    }
}

fn cloud_error(error: ConfigError) -> UsageError {
    match error {
        ConfigError::InvalidEnvProxy { .. } => UsageError::new(format!("cloud client: {error}")),
        ConfigError::InvalidTimeout { .. } => {
            UsageError::new(format!("invalid configuration: cloud.{error}"))
        }
        other => UsageError::new(format!("invalid configuration: {other}")),
    }
}

/// `cloud.proxy_url`, checked (the value is never repeated: it may hold a password).
fn proxy_url(cloud: &CloudSection, layers: &Layers) -> Result<Option<ProxyUrl>, UsageError> {
    let Some(url) = &cloud.proxy_url else {
        return Ok(None);
    };
    ProxyUrl::new(url.expose()).map(Some).map_err(|e| {
        UsageError::new(format!(
            "invalid configuration: cloud.proxy_url = <redacted> (from {}): {e}",
            layers.origin("cloud.proxy_url")
        ))
    })
}

/// The configuration file; commands that take no queue (`mock-cloud`, `demo`) read none.
fn config_path(raw: &RawArgs, env: &Env) -> Result<Option<PathBuf>, UsageError> {
    let Some(queue) = raw.queue_args() else {
        return Ok(None);
    };
    if let Some(path) = &queue.config {
        return Ok(Some(path.clone()));
    }
    Ok(env.checked(env_vars::CONFIG, true)?.map(PathBuf::from))
}

/// File, then environment, then flags.
fn layer(raw: &RawArgs, env: &Env) -> Result<Layers, UsageError> {
    let mut layers = match config_path(raw, env)? {
        Some(path) => Layers::from_file(&path)?,
        None => Layers::default(),
    };
    // (variable, key, whether an empty value is a mistake rather than "unset").
    let aliases = [
        (env_vars::QUEUE_DIR, "queue_dir", true),
        (env_vars::API_TOKEN, "cloud.api_token", false),
        (env_vars::ENDPOINT, "cloud.endpoint", false),
        (env_vars::RUST_LOG, "log.level", false),
    ];
    for (var, key, empty_is_error) in aliases {
        if let Some(value) = env.checked(var, empty_is_error)? {
            // Taken verbatim: a path, a token or a URL is never TOML syntax.
            let value = toml::Value::String(value.to_owned());
            layers.set(key, value, Origin::Env(var.to_owned()))?;
        }
    }
    if let Some(var) = env.not_utf8_keys().next() {
        env.checked(var, false)?;
    }
    for (var, value) in &env.vars {
        if let Some(key) = layers::env_var_key(var) {
            layers.set_text(&key, value, Origin::Env(var.clone()))?;
        }
    }
    let no_queue_args = QueueArgs::default();
    let queue_args = raw.queue_args().unwrap_or(&no_queue_args);
    for item in &queue_args.overrides {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            UsageError::new(format!(
                "--set {item:?}: expected KEY=VALUE, e.g. --set worker.retention_ms=3600000"
            ))
        })?;
        secrets::refuse_on_command_line(key.trim(), value)?;
        layers.set_text(key.trim(), value, Origin::Flag(format!("--set {key}")))?;
    }
    let flag = |name: &str| Origin::Flag(name.to_owned());
    if let Some(dir) = &queue_args.queue_dir {
        let dir = dir.to_str().ok_or_else(|| {
            UsageError::new(format!("--queue-dir {}: not valid UTF-8", dir.display()))
        })?;
        layers.set("queue_dir", dir.into(), flag("--queue-dir"))?;
    }
    if let Some(level) = &raw.log_level {
        layers.set("log.level", level.as_str().into(), flag("--log-level"))?;
    }
    if let Some(format) = raw.log_format {
        let name = match format {
            LogFormatArg::Human => "human",
            LogFormatArg::Json => "json",
        };
        layers.set("log.format", name.into(), flag("--log-format"))?;
    }
    let delivery = raw.delivery_args();
    if let Some(endpoint) = delivery.and_then(|d| d.endpoint.as_ref()) {
        layers.set(
            "cloud.endpoint",
            endpoint.as_str().into(),
            flag("--endpoint"),
        )?;
    }
    if let Some(addr) = delivery.and_then(|d| d.status_addr.as_ref()) {
        layers.set("status.addr", addr.as_str().into(), flag("--status-addr"))?;
    }
    Ok(layers)
}

fn deserialize(layers: &Layers) -> Result<FileConfig, UsageError> {
    let value = toml::Value::Table(layers.table().clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // The toml deserializer appends "in `key`"; the key is named already.
        let inner = e.into_inner().to_string();
        let inner = inner.lines().next().unwrap_or_default().trim().to_owned();
        match layers.value(&key) {
            Some(value) if !key.is_empty() && key != "." => UsageError::new(format!(
                "invalid configuration: {key} = {} (from {}): {inner}",
                shown(&key, value),
                layers.origin(&key)
            )),
            _ => {
                let place = if key.is_empty() || key == "." {
                    "the top level".to_owned()
                } else {
                    format!("[{key}]")
                };
                UsageError::new(format!("invalid configuration in {place}: {inner}"))
            }
        }
    })
}

/// A value as shown in an error (secrets never).
fn shown(key: &str, value: &toml::Value) -> String {
    if layers::is_secret(key) {
        "<redacted>".to_owned()
    } else {
        value.to_string()
    }
}

fn invalid(layers: &Layers, key: &str, allowed: &str) -> UsageError {
    let value = layers
        .value(key)
        .map_or_else(|| "(unset)".to_owned(), |v| shown(key, v));
    UsageError::new(format!(
        "invalid configuration: {key} = {value} (from {}); allowed: {allowed}",
        layers.origin(key)
    ))
}

/// A library's range error, with the key qualified by its section and the value's origin.
fn qualify(error: Error, section: &str, layers: &Layers) -> UsageError {
    let (key, value, allowed) = match &error {
        Error::Config {
            key,
            value,
            allowed,
        }
        | Error::Wal(WalError::Config {
            key,
            value,
            allowed,
        }) => (*key, value.clone(), allowed.clone()),
        other => return UsageError::new(format!("invalid configuration: {other}")),
    };
    let full = format!("{section}.{key}");
    let origin = match layers.contains(&full) {
        true => format!(" (from {})", layers.origin(&full)),
        false => String::new(),
    };
    UsageError::new(format!(
        "invalid configuration: {full} = {value}{origin}; allowed: {allowed}"
    ))
}

fn queue_options(file: &FileConfig, layers: &Layers) -> Result<QueueOptions, UsageError> {
    let q = &file.queue;
    let durability = match q.durability {
        DurabilityKind::SyncEachAppend => Durability::SyncEachAppend,
        DurabilityKind::None => Durability::None,
        DurabilityKind::Interval => {
            if !(1..=60_000).contains(&q.durability_interval_ms) {
                return Err(invalid(
                    layers,
                    "queue.durability_interval_ms",
                    "1 to 60000",
                ));
            }
            Durability::Interval(Duration::from_millis(q.durability_interval_ms))
        }
    };
    let options = QueueOptions {
        image_size_max_bytes: q.image_size_max_bytes,
        segment_bytes: q.segment_bytes,
        queue_bytes_max: q.queue_bytes_max,
        allocation_step_bytes: q.allocation_step_bytes,
        free_disk_bytes_min: q.free_disk_bytes_min,
        lanes_max: q.lanes_max,
        durability,
        storage: None,
        images_dir: q.images_dir.clone(),
    };
    options
        .validate()
        .map_err(|e| qualify(e, "queue", layers))?;
    Ok(options)
}

fn status_config(s: &StatusSection, layers: &Layers) -> Result<StatusConfig, UsageError> {
    let addr: SocketAddr = s
        .addr
        .parse()
        .map_err(|_| invalid(layers, "status.addr", "IP:PORT, e.g. 127.0.0.1:8787"))?;
    if s.oldest_pending_degraded_ms == 0 {
        return Err(invalid(
            layers,
            "status.oldest_pending_degraded_ms",
            "at least 1",
        ));
    }
    Ok(StatusConfig {
        enabled: s.enabled,
        addr,
        oldest_pending_degraded_ms: s.oldest_pending_degraded_ms,
        disk_free_degraded_bytes: s.disk_free_degraded_bytes,
        critical_incident_degraded_ms: s.critical_incident_degraded_ms,
        actions_enabled: s.actions_enabled,
    })
}

fn log_config(file: &FileConfig, layers: &Layers) -> Result<LogConfig, UsageError> {
    let filter = file.log.level.trim().to_owned();
    if filter.is_empty() || EnvFilter::try_new(&filter).is_err() {
        return Err(invalid(
            layers,
            "log.level",
            "error, warn, info, debug, trace, or a RUST_LOG directive such as \
             escalation_queue=debug,info",
        ));
    }
    Ok(LogConfig {
        filter,
        filter_is_explicit: layers.contains("log.level"),
        format: file.log.format,
    })
}

/// `$XDG_STATE_HOME/escalation-queue`, else `~/.local/state/escalation-queue`: a place
/// every user can write to without root.
fn default_queue_dir(env: &Env) -> Result<PathBuf, String> {
    if let Some(state) = env.get("XDG_STATE_HOME").filter(|s| s.starts_with('/')) {
        return Ok(Path::new(state).join("escalation-queue"));
    }
    match env.get("HOME") {
        Some(home) => Ok(Path::new(home).join(".local/state/escalation-queue")),
        None => Err(format!(
            "no queue directory: pass --queue-dir or set {} (there is no $HOME to derive \
             a default from)",
            env_vars::QUEUE_DIR
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, UsageError> {
        let mut argv = vec!["escalation-queue"];
        argv.extend_from_slice(args);
        let raw = RawArgs::try_parse_from(argv).expect("parse");
        Config::resolve(&raw, &Env::from_pairs(env.iter().copied()))
    }

    #[test]
    fn defaults_resolve_with_a_home() {
        let config = resolve(&["status"], &[("HOME", "/home/u")]).expect("config");
        assert_eq!(
            config.queue_dir().expect("dir"),
            Path::new("/home/u/.local/state/escalation-queue")
        );
        assert_eq!(config.status.addr.to_string(), "127.0.0.1:8787");
        assert_eq!(config.log.filter, "info");
        assert!(!config.log.filter_is_explicit);
        assert!(resolve(&["status"], &[])
            .expect("config")
            .queue_dir()
            .is_err());
    }

    #[test]
    fn flags_beat_environment_beats_defaults() {
        let env = [
            ("ESCALATION_QUEUE_DIR", "/env/q"),
            ("ESCALATION_QUEUE__WORKER__RETENTION_MS", "5000"),
            ("GROUNDLIGHT_ENDPOINT", "http://env:1"),
        ];
        let config = resolve(&["reader"], &env).expect("config");
        assert_eq!(config.queue_dir().expect("dir"), Path::new("/env/q"));
        assert_eq!(config.worker.retention_ms, 5000);
        assert_eq!(config.cloud.endpoint, "http://env:1");
        let args = [
            "reader",
            "--queue-dir",
            "/flag/q",
            "--set",
            "worker.retention_ms=6000",
            "--endpoint",
            "http://flag:2",
        ];
        let config = resolve(&args, &env).expect("config");
        assert_eq!(config.queue_dir().expect("dir"), Path::new("/flag/q"));
        assert_eq!(config.worker.retention_ms, 6000);
        assert_eq!(config.cloud.endpoint, "http://flag:2");
        assert_eq!(
            config.origin("cloud.endpoint"),
            Origin::Flag("--endpoint".into())
        );
    }

    #[test]
    fn the_recovery_and_systemic_fault_keys_are_accepted_and_checked() {
        let args = ["reader", "--set", "worker.systemic_reject_threshold=0"];
        let config = resolve(&args, &[]).expect("config");
        assert_eq!(config.worker.systemic_reject_threshold, 0);
        let args = ["reader", "--set", "worker.systemic_reject_threshold=1"];
        let msg = resolve(&args, &[]).expect_err("one").to_string();
        assert!(
            msg.contains("worker.systemic_reject_threshold = 1"),
            "{msg}"
        );
        let args = ["reader", "--set", "worker.breaker.cool_down_max_ms=3600000"];
        let msg = resolve(&args, &[]).expect_err("unbounded").to_string();
        assert!(msg.contains("cool_down_max_ms = 3600000"), "{msg}");
        assert!(msg.contains("at most 300000"), "{msg}");
    }

    #[test]
    fn bad_values_name_key_value_origin_and_range() {
        let err = resolve(&["status", "--set", "worker.checkpoint_acks_max=0"], &[])
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("worker.checkpoint_acks_max = 0"), "{msg}");
        assert!(msg.contains("--set"), "{msg}");
        assert!(msg.contains("1 to 100000"), "{msg}");

        let env = [("ESCALATION_QUEUE__WORKER__RETENTION_MS", "soon")];
        let msg = resolve(&["status"], &env).expect_err("type").to_string();
        assert!(msg.contains("worker.retention_ms = \"soon\""), "{msg}");
        assert!(
            msg.contains("ESCALATION_QUEUE__WORKER__RETENTION_MS"),
            "{msg}"
        );

        let msg = resolve(&["status", "--set", "queue.lanes_max=0"], &[])
            .expect_err("range")
            .to_string();
        assert!(msg.contains("queue.lanes_max = 0"), "{msg}");

        let msg = resolve(&["reader", "--status-addr", "localhost"], &[])
            .expect_err("addr")
            .to_string();
        assert!(msg.contains("status.addr = \"localhost\""), "{msg}");

        let msg = resolve(&["status", "--set", "worker.no_such_key=1"], &[])
            .expect_err("unknown")
            .to_string();
        assert!(msg.contains("no_such_key"), "{msg}");
    }

    #[test]
    fn the_token_comes_from_the_environment_and_is_never_shown() {
        let env = [("GROUNDLIGHT_API_TOKEN", "api_2hunter2")];
        let config = resolve(&["drain"], &env).expect("config");
        let client = config.client_config().expect("client");
        assert_eq!(client.api_token.expose(), "api_2hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        let err = resolve(&["drain"], &[]).expect("config").client_config();
        assert!(err
            .expect_err("no token")
            .to_string()
            .contains("GROUNDLIGHT_API_TOKEN"));
        // Probe F18: a token on the command line shows in ps; it is refused, unrepeated.
        let msg = resolve(&["drain", "--set", "cloud.api_token=12345"], &[])
            .expect_err("token on the command line")
            .to_string();
        assert!(
            msg.contains("GROUNDLIGHT_API_TOKEN") && !msg.contains("12345"),
            "{msg}"
        );
        let env = [("ESCALATION_QUEUE__CLOUD__API_TOKEN", "12345")];
        let config = resolve(&["drain"], &env).expect("config");
        assert_eq!(
            config.client_config().expect("client").api_token.expose(),
            "12345"
        );
    }

    /// Probe F15: a queue directory variable that is empty or not UTF-8 fell back to
    /// `~/.local/state` silently.
    #[test]
    fn an_empty_or_non_utf8_queue_dir_variable_is_refused() {
        let raw = RawArgs::try_parse_from(["escalation-queue", "status"]).expect("parse");
        let env = Env::from_pairs([("HOME", "/h")]).with_non_utf8("ESCALATION_QUEUE_DIR");
        let msg = Config::resolve(&raw, &env)
            .expect_err("non-utf8")
            .to_string();
        assert!(
            msg.contains("ESCALATION_QUEUE_DIR is not valid UTF-8"),
            "{msg}"
        );
        let msg = resolve(&["status"], &[("HOME", "/h"), ("ESCALATION_QUEUE_DIR", "")])
            .expect_err("empty")
            .to_string();
        assert!(
            msg.contains("ESCALATION_QUEUE_DIR is set but empty"),
            "{msg}"
        );
        let msg = resolve(&["status"], &[("ESCALATION_QUEUE_CONFIG", "")])
            .expect_err("empty config")
            .to_string();
        assert!(msg.contains("ESCALATION_QUEUE_CONFIG"), "{msg}");
    }

    /// Probe F20: values the worker clamps silently are rejected at load, by key.
    #[test]
    fn documented_minimums_are_enforced() {
        let cases = [
            (
                "worker.backoff.delay_base_ms=0",
                "worker.backoff.delay_base_ms = 0",
            ),
            (
                "worker.backoff.delay_max_ms=100",
                "worker.backoff.delay_max_ms = 100",
            ),
            (
                "worker.breaker.failure_threshold=0",
                "worker.breaker.failure_threshold = 0",
            ),
            (
                "worker.breaker.cool_down_max_ms=10",
                "worker.breaker.cool_down_max_ms = 10",
            ),
            (
                "worker.incidents.jsonl_max_bytes=1",
                "worker.incidents.jsonl_max_bytes = 1",
            ),
            (
                "worker.incidents.spike.bucket_ms=0",
                "worker.incidents.spike.bucket_ms = 0",
            ),
            (
                "worker.incidents.webhook.url=notaurl",
                "worker.incidents.webhook.url",
            ),
            (
                "worker.incidents.webhook.url=ftp://x",
                "worker.incidents.webhook.url",
            ),
        ];
        for (set, needle) in cases {
            let msg = resolve(&["reader", "--set", set], &[])
                .expect_err(set)
                .to_string();
            assert!(
                msg.contains(needle) && msg.contains("--set"),
                "{set}: {msg}"
            );
        }
    }

    /// Probe F27: an unknown key under an unknown section named "the default" as origin.
    #[test]
    fn an_unknown_section_names_the_flag_that_set_it() {
        let msg = resolve(&["status", "--set", "foo.bar=1"], &[])
            .expect_err("unknown")
            .to_string();
        assert!(!msg.contains("the default"), "{msg}");
        let msg = resolve(&["status", "--set", "cloud.proxy_url=ftp://p:1"], &[])
            .expect_err("bad proxy")
            .to_string();
        assert!(
            msg.contains("cloud.proxy_url = <redacted> (from flag --set"),
            "{msg}"
        );
        assert!(!msg.contains("cloud.invalid"), "{msg}");
    }
}
