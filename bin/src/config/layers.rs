//! Merging the configuration sources into one TOML table, remembering where each key came
//! from so that an error can say "from environment variable X" or "from --set".

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::exit::UsageError;

/// Prefix of the environment variables that set any key: `ESCALATION_QUEUE__WORKER__RETENTION_MS`
/// sets `worker.retention_ms`.
pub const ENV_PREFIX: &str = "ESCALATION_QUEUE__";

/// Largest configuration file read: 1 MiB (the full example in OPERATIONS.md is 500 bytes).
pub const CONFIG_FILE_MAX_BYTES: u64 = 1 << 20;

/// The file's text. Opened without blocking (a FIFO with no writer would hang), then
/// refused unless it is a regular file of at most [`CONFIG_FILE_MAX_BYTES`]; the read is
/// bounded too, in case the file grows meanwhile.
fn read_bounded(path: &Path) -> Result<String, UsageError> {
    let cannot = |what: String| {
        UsageError::new(format!(
            "cannot read config file {}: {what}",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)
        .map_err(|e| cannot(e.to_string()))?;
    let meta = file.metadata().map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        let kind = file_kind(&meta.file_type());
        return Err(cannot(format!("it is {kind}, not a regular file")));
    }
    if meta.len() > CONFIG_FILE_MAX_BYTES {
        return Err(cannot(format!(
            "it is {} bytes; a config file may hold at most {CONFIG_FILE_MAX_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > CONFIG_FILE_MAX_BYTES {
        return Err(cannot(format!(
            "it grew past {CONFIG_FILE_MAX_BYTES} bytes while being read"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        cannot(format!(
            "not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// `O_NONBLOCK`, as `OpenOptionsExt::custom_flags` takes it.
fn libc_o_nonblock() -> i32 {
    i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0)
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// At most 8 lines of at most 200 characters each of a parser message (it quotes the
/// offending line, which may be megabytes long).
fn excerpt(message: &str) -> String {
    const LINE_CHARS_MAX: usize = 200;
    let mut out: Vec<String> = Vec::new();
    for line in message.lines().take(8) {
        let mut shown: String = line.chars().take(LINE_CHARS_MAX).collect();
        if line.chars().nth(LINE_CHARS_MAX).is_some() {
            shown.push_str(" …");
        }
        out.push(shown);
    }
    out.join("\n")
}

/// Where a key's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The merged table and the origin of every key set in it.
#[derive(Debug, Default)]
pub struct Layers {
    table: Table,
    origins: BTreeMap<String, Origin>,
}

impl Layers {
    /// Reads and parses the configuration file (the lowest layer): a regular file of at
    /// most [`CONFIG_FILE_MAX_BYTES`] (probe F22: `/dev/zero` grew without bound, and a
    /// 50 MB invalid file came back as a 100 MB error).
    pub fn from_file(path: &Path) -> Result<Self, UsageError> {
        let text = read_bounded(path)?;
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            UsageError::new(format!(
                "config file {} is not valid TOML: {}",
                path.display(),
                excerpt(e.to_string().trim_end())
            ))
        })?;
        let mut layers = Self::default();
        let origin = Origin::File(path.to_path_buf());
        record_leaves(&table, "", &origin, &mut layers.origins);
        layers.table = table;
        Ok(layers)
    }

    /// Sets `key` (dotted, `section.key`) to `value`, replacing a lower layer's value.
    pub fn set(&mut self, key: &str, value: Value, origin: Origin) -> Result<(), UsageError> {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(UsageError::new(format!(
                "invalid configuration key {key:?} (from {origin}): expected section.key"
            )));
        }
        let (last, sections) = parts.split_last().unwrap_or((&"", &[]));
        let mut table = &mut self.table;
        for (i, section) in sections.iter().enumerate() {
            let entry = table
                .entry((*section).to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(t) => t,
                _ => {
                    let path = parts[..=i].join(".");
                    return Err(UsageError::new(format!(
                        "cannot set {key} (from {origin}): {path} is a value, not a section"
                    )));
                }
            };
        }
        table.insert((*last).to_owned(), value);
        self.origins.insert(key.to_owned(), origin);
        Ok(())
    }

    /// Sets `key` from text: TOML syntax when it parses (`10`, `true`, `"x"`, `[1, 2]`),
    /// else the text itself as a string (`127.0.0.1:8787`, `info`).
    /// Secrets (`api_token`, `proxy_url`) are always taken verbatim.
    pub fn set_text(&mut self, key: &str, text: &str, origin: Origin) -> Result<(), UsageError> {
        let value = match is_secret(key) {
            true => Value::String(text.to_owned()),
            false => parse_value(text),
        };
        self.set(key, value, origin)
    }

    /// Where `key` came from; for a section, where a key inside it came from (so that an
    /// unknown `--set foo.bar=1` names the flag, not "the default").
    pub fn origin(&self, key: &str) -> Origin {
        if let Some(origin) = self.origins.get(key) {
            return origin.clone();
        }
        let prefix = format!("{key}.");
        self.origins
            .iter()
            .rev()
            .find(|(k, _)| k.starts_with(&prefix))
            .map_or(Origin::Default, |(_, o)| o.clone())
    }

    /// The value at `key`, if set.
    pub fn value(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// Whether any layer set `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    /// The merged table.
    pub fn table(&self) -> &Table {
        &self.table
    }
}

/// Keys whose values never appear in messages.
pub fn is_secret(key: &str) -> bool {
    key.ends_with("api_token") || key.ends_with("proxy_url")
}

/// A value given as text on the command line or in the environment.
pub fn parse_value(text: &str) -> Value {
    let wrapped = format!("v = {text}");
    match wrapped.parse::<Table>() {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Err(_) => Value::String(text.to_owned()),
    }
}

/// `ESCALATION_QUEUE__WORKER__BACKOFF__DELAY_BASE_MS` → `worker.backoff.delay_base_ms`.
pub fn env_var_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_lowercase(),
    )
}

fn record_leaves(table: &Table, prefix: &str, origin: &Origin, out: &mut BTreeMap<String, Origin>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) => record_leaves(inner, &path, origin, out),
            _ => {
                out.insert(path, origin.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_parse_as_toml_else_string() {
        assert_eq!(parse_value("10"), Value::Integer(10));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value("\"x y\""), Value::String("x y".into()));
        assert_eq!(
            parse_value("127.0.0.1:8787"),
            Value::String("127.0.0.1:8787".into())
        );
        assert_eq!(parse_value("info"), Value::String("info".into()));
    }

    #[test]
    fn env_vars_map_to_dotted_keys() {
        assert_eq!(
            env_var_key("ESCALATION_QUEUE__WORKER__BACKOFF__DELAY_BASE_MS").as_deref(),
            Some("worker.backoff.delay_base_ms")
        );
        assert_eq!(env_var_key("ESCALATION_QUEUE_DIR"), None);
        assert_eq!(env_var_key("ESCALATION_QUEUE__"), None);
    }

    #[test]
    fn later_layers_replace_values_and_remember_origins() {
        let mut layers = Layers::default();
        layers
            .set_text("worker.retention_ms", "5", Origin::Env("E".into()))
            .expect("set");
        layers
            .set_text("worker.retention_ms", "6", Origin::Flag("--set".into()))
            .expect("set");
        assert_eq!(
            layers.value("worker.retention_ms"),
            Some(&Value::Integer(6))
        );
        assert_eq!(
            layers.origin("worker.retention_ms"),
            Origin::Flag("--set".into())
        );
        assert_eq!(layers.origin("worker.other"), Origin::Default);
        let err = layers
            .set_text("worker.retention_ms.x", "1", Origin::Default)
            .expect_err("not a section");
        assert!(err.to_string().contains("worker.retention_ms is a value"));
    }
}
