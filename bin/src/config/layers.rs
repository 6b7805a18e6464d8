//! Merging the configuration sources into one TOML table, remembering where each key came
//! from so that an error can say "from environment variable X" or "from --set".

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::exit::UsageError;

/// Prefix of the environment variables that set any key: `ESCALATION_QUEUE__WORKER__RETENTION_MS`
/// sets `worker.retention_ms`.
pub const ENV_PREFIX: &str = "ESCALATION_QUEUE__";

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
    /// Reads and parses the configuration file (the lowest layer).
    pub fn from_file(path: &Path) -> Result<Self, UsageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            UsageError::new(format!(
                "config file {} is not valid TOML: {}",
                path.display(),
                e.to_string().trim_end()
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

    /// Where `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
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
