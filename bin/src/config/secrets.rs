//! Secrets and the command line: a value passed as an argument is visible to every local
//! user through `ps` and `/proc/PID/cmdline`, so secrets are refused there (probe F18), and
//! a file that holds one should not be readable by others (probe F24).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use escalation_queue::worker::url_has_credentials;

use super::layers::{is_secret, Layers, Origin};
use crate::exit::UsageError;

/// Refuses `--set KEY=VALUE` when the value is a secret: the API token always, and any URL
/// with credentials (`cloud.proxy_url`, `worker.incidents.webhook.url`, …). The message
/// says where the value belongs instead; the value itself is never repeated.
pub fn refuse_on_command_line(key: &str, value: &str) -> Result<(), UsageError> {
    let env_var = format!(
        "{}{}",
        super::ENV_PREFIX,
        key.replace('.', "__").to_ascii_uppercase()
    );
    if key.ends_with("api_token") {
        return Err(UsageError::new(format!(
            "--set {key}: refused: a value on the command line is visible to every user \
             through ps; set {} (or {env_var}) in the environment, or {key} in a config file \
             of mode 0600",
            super::env_vars::API_TOKEN
        )));
    }
    if url_has_credentials(value) || (is_secret(key) && value.contains('@')) {
        return Err(UsageError::new(format!(
            "--set {key}: refused: the URL holds credentials (user:password@), and a value on \
             the command line is visible to every user through ps; set {env_var} in the \
             environment, or {key} in a config file of mode 0600"
        )));
    }
    Ok(())
}

/// Warnings for secrets held in a configuration file that others can read: only keys whose
/// value actually came from that file count (a token from `GROUNDLIGHT_API_TOKEN` does not
/// make a 0644 file holding no secret a problem).
pub fn exposed_in_file(layers: &Layers, keys: &[&str]) -> Vec<String> {
    let mut warnings = Vec::new();
    for key in keys {
        let Origin::File(path) = layers.origin(key) else {
            continue;
        };
        let secret = match layers.value(key).and_then(|v| v.as_str()) {
            Some(v) if key.ends_with("api_token") => !v.is_empty(),
            Some(v) => url_has_credentials(v),
            None => false,
        };
        if !secret {
            continue;
        }
        if let Some(mode) = group_or_world_mode(&path) {
            warnings.push(format!(
                "config file {} holds {key} but is readable by others (mode {:o}); run \
                 chmod 600 on it",
                path.display(),
                mode
            ));
        }
    }
    warnings
}

fn group_or_world_mode(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_url_credentials_are_refused_without_repeating_them() {
        let err = refuse_on_command_line("cloud.api_token", "SEKRIT").expect_err("token");
        let msg = err.to_string();
        assert!(msg.contains("GROUNDLIGHT_API_TOKEN"), "{msg}");
        assert!(!msg.contains("SEKRIT"), "{msg}");
        let err = refuse_on_command_line("cloud.proxy_url", "http://u:pw@p:1").expect_err("pw");
        assert!(err
            .to_string()
            .contains("ESCALATION_QUEUE__CLOUD__PROXY_URL"));
        let err = refuse_on_command_line("worker.incidents.webhook.url", "https://u:p@h/x");
        assert!(err.is_err());
        refuse_on_command_line("cloud.proxy_url", "http://proxy:3128").expect("no secret");
        refuse_on_command_line("worker.retention_ms", "5").expect("not a secret");
    }
}
