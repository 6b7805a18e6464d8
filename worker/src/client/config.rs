//! Client configuration: endpoint, token, timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::proxy::ProxyRoute;
use super::tls::TlsRoots;
use super::url::{redact_url, url_has_credentials};

/// Environment variable holding the API token.
pub const ENV_API_TOKEN: &str = "GROUNDLIGHT_API_TOKEN";

/// Environment variable holding the API endpoint.
pub const ENV_ENDPOINT: &str = "GROUNDLIGHT_ENDPOINT";

/// The endpoint used when [`ENV_ENDPOINT`] is unset or empty.
pub const DEFAULT_ENDPOINT: &str = defaults::ENDPOINT;

/// The client's defaults, written once: [`ClientConfig::new`] and the binary's `[cloud]`
/// section both start from them.
pub mod defaults {
    /// `endpoint`.
    pub const ENDPOINT: &str = "https://api.groundlight.ai/device-api";
    /// `connect_timeout_first_ms`: 5 s for an item's first attempt.
    pub const CONNECT_TIMEOUT_FIRST_MS: u64 = 5_000;
    /// `connect_timeout_retry_ms`: 1 s for retries.
    pub const CONNECT_TIMEOUT_RETRY_MS: u64 = 1_000;
    /// `read_timeout_ms`: 15 s for the response headers, then for the body.
    pub const READ_TIMEOUT_MS: u64 = 15_000;
    /// `send_timeout_ms`: 60 s for the request headers, then the image.
    pub const SEND_TIMEOUT_MS: u64 = 60_000;
    /// `response_size_max_bytes`: 1 MiB.
    pub const RESPONSE_SIZE_MAX_BYTES: u64 = 1 << 20;
}

/// An API token. Its `Debug` output is redacted and it has no `Display`, so it cannot end up
/// in a log line by accident; [`expose`](Self::expose) is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Checks that `token` is non-empty and valid in an HTTP header (visible ASCII).
    pub fn new(token: impl Into<String>) -> Result<Self, ConfigError> {
        let token = token.into();
        if token.is_empty() {
            return Err(ConfigError::InvalidToken {
                reason: "the token is empty",
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidToken {
                reason: "the token must be visible ASCII without spaces or control characters",
            });
        }
        Ok(Self(token))
    }

    /// The secret itself, for the `x-api-token` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Reads the token from `path`: the file's text without surrounding whitespace, or, when
/// the file is a JSON object, its `current.raw_key` (the layout of the Groundlight SDK's
/// rotating-token cache, `~/.groundlight/tokens/<snippet>.json`, so the reader can follow
/// tokens the SDK rotates).
pub fn read_token_file(path: &std::path::Path) -> Result<ApiToken, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidTokenFile {
        path: path.display().to_string(),
        reason,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    let text = text.trim();
    let token = if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "not JSON (line {}): a token file holds the token, or the SDK's token cache",
                e.line()
            ))
        })?;
        value
            .pointer("/current/raw_key")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                invalid(
                    "a JSON token file needs current.raw_key (the SDK's token cache layout)"
                        .to_owned(),
                )
            })?
            .to_owned()
    } else {
        text.to_owned()
    };
    ApiToken::new(token).map_err(|e| invalid(e.to_string()))
}

/// Settings of [`GroundlightClient`](super::GroundlightClient).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// API base URL, normalised by [`normalize_endpoint`]. Default [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// The token sent as `x-api-token`.
    pub api_token: ApiToken,
    /// TCP + TLS connect timeout of an item's first attempt. Default 5000; minimum 1.
    pub connect_timeout_first_ms: u64,
    /// Connect timeout of retries (the network is probably bad). Default 1000; minimum 1.
    pub connect_timeout_retry_ms: u64,
    /// Time to wait for the response headers, and then for the body. Default 15000; minimum 1.
    pub read_timeout_ms: u64,
    /// Time to send the request headers, and then the image body. Default 60000; minimum 1.
    pub send_timeout_ms: u64,
    /// Largest success response body read. Default 1 MiB; minimum 1.
    pub response_size_max_bytes: u64,
    /// Sent as `User-Agent`. Default `escalation-queue/<crate version>`.
    pub user_agent: String,
    /// How requests reach the endpoint. [`new`](Self::new) connects directly;
    /// [`from_lookup`](Self::from_lookup) and the binary resolve it with
    /// [`ProxyRoute::resolve`] (`cloud.proxy_url`, else `HTTPS_PROXY`/`HTTP_PROXY`/
    /// `ALL_PROXY`, with `NO_PROXY` exemptions), the same rule the incident webhook uses.
    pub proxy: ProxyRoute,
    /// A file holding the token, re-read whenever it changes (checked before each request)
    /// and after every 401/403, so a rotated token is used without a restart; it replaces
    /// [`api_token`](Self::api_token) once read. Default none. See [`read_token_file`].
    pub api_token_file: Option<PathBuf>,
    /// The root certificates of TLS connections. Default [`TlsRoots::System`].
    pub tls_roots: TlsRoots,
    /// A PEM file of extra CA certificates trusted on top of the system store (e.g. a
    /// TLS-inspecting proxy's). Default none.
    pub ca_file: Option<PathBuf>,
}

impl ClientConfig {
    /// Defaults for everything but the token.
    pub fn new(api_token: ApiToken) -> Self {
        Self {
            endpoint: defaults::ENDPOINT.to_owned(),
            api_token,
            connect_timeout_first_ms: defaults::CONNECT_TIMEOUT_FIRST_MS,
            connect_timeout_retry_ms: defaults::CONNECT_TIMEOUT_RETRY_MS,
            read_timeout_ms: defaults::READ_TIMEOUT_MS,
            send_timeout_ms: defaults::SEND_TIMEOUT_MS,
            response_size_max_bytes: defaults::RESPONSE_SIZE_MAX_BYTES,
            user_agent: format!("escalation-queue/{}", env!("CARGO_PKG_VERSION")),
            proxy: ProxyRoute::Direct,
            api_token_file: None,
            tls_roots: TlsRoots::System,
            ca_file: None,
        }
    }

    /// Reads [`ENV_API_TOKEN`] (required) and [`ENV_ENDPOINT`] (optional) from the process
    /// environment, and routes through the environment's proxy ([`ProxyRoute::resolve`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let token = lookup(ENV_API_TOKEN).filter(|t| !t.is_empty());
        let token = token.ok_or(ConfigError::MissingToken { var: ENV_API_TOKEN })?;
        let mut config = Self::new(ApiToken::new(token)?);
        if let Some(endpoint) = lookup(ENV_ENDPOINT).filter(|e| !e.trim().is_empty()) {
            config.endpoint = normalize_endpoint(&endpoint)?;
        }
        config.proxy = ProxyRoute::resolve(&config.endpoint, None, lookup)?;
        Ok(config)
    }

    /// Normalises the endpoint and checks every minimum.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.endpoint = normalize_endpoint(&self.endpoint)?;
        let minimums = [
            ("connect_timeout_first_ms", self.connect_timeout_first_ms),
            ("connect_timeout_retry_ms", self.connect_timeout_retry_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
        ];
        for (field, value_ms) in minimums {
            if value_ms < 1 {
                return Err(ConfigError::InvalidTimeout {
                    field,
                    value_ms,
                    min_ms: 1,
                });
            }
        }
        self.response_size_max_bytes = self.response_size_max_bytes.max(1);
        Ok(())
    }

    /// The connect timeout for an attempt.
    pub(crate) fn connect_timeout(&self, is_retry: bool) -> Duration {
        let ms = if is_retry {
            self.connect_timeout_retry_ms
        } else {
            self.connect_timeout_first_ms
        };
        Duration::from_millis(ms)
    }
}

/// Normalises an endpoint like the SDK's `sanitize_endpoint_url`: http or https with a host,
/// no query or fragment, an empty path becomes `/device-api`, trailing slashes are removed.
pub fn normalize_endpoint(raw: &str) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::InvalidEndpoint {
        endpoint: redact_url(raw.trim()),
        reason,
    };
    let trimmed = raw.trim();
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| invalid("the scheme must be http:// or https://"))?;
    if url_has_credentials(trimmed) {
        return Err(invalid(
            "an endpoint cannot hold credentials (user:password@): they would never be \
             sent; the token goes in GROUNDLIGHT_API_TOKEN",
        ));
    }
    if trimmed.contains(['?', '#']) {
        return Err(invalid("an endpoint cannot have a query or fragment"));
    }
    if trimmed.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid("an endpoint cannot contain whitespace"));
    }
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(invalid("the host is missing"));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/device-api" } else { path };
    let scheme_len = trimmed.len() - rest.len();
    Ok(format!("{}{host}{path}", &trimmed[..scheme_len]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ProxyUrl;

    #[test]
    fn endpoint_normalisation_matches_the_sdk() {
        let cases = [
            (
                "https://api.groundlight.ai/",
                "https://api.groundlight.ai/device-api",
            ),
            (
                "https://api.groundlight.ai",
                "https://api.groundlight.ai/device-api",
            ),
            (
                "https://api.groundlight.ai/device-api/",
                "https://api.groundlight.ai/device-api",
            ),
            ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_endpoint(raw).as_deref(), Ok(expected), "{raw}");
        }
        for bad in [
            "ftp://x",
            "https://",
            "https://x/?a=1",
            "api.groundlight.ai",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_lookup_reads_token_and_endpoint() {
        let env = |name: &str| match name {
            ENV_API_TOKEN => Some("api_2secret".to_owned()),
            ENV_ENDPOINT => Some("http://localhost:30101/".to_owned()),
            _ => None,
        };
        let config = ClientConfig::from_lookup(env).expect("config");
        assert_eq!(config.api_token.expose(), "api_2secret");
        assert_eq!(config.endpoint, "http://localhost:30101/device-api");
        let config = ClientConfig::from_lookup(|n| (n == ENV_API_TOKEN).then(|| "t".into()))
            .expect("config");
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(
            ClientConfig::from_lookup(|_| None).err(),
            Some(ConfigError::MissingToken { var: ENV_API_TOKEN })
        );
    }

    /// Probe F19: credentials in the endpoint were accepted, logged and never used; a
    /// query string (refused) was echoed with its `token=…`.
    #[test]
    fn endpoint_credentials_are_refused_and_errors_redact_them() {
        let err = normalize_endpoint("http://user:SEKRITPW@127.0.0.1:1").expect_err("creds");
        let msg = err.to_string();
        assert!(
            msg.contains("credentials") && !msg.contains("SEKRITPW"),
            "{msg}"
        );
        let msg = normalize_endpoint("https://h/x?token=SEKRIT#f")
            .expect_err("q")
            .to_string();
        assert!(
            msg.contains("?<redacted>") && !msg.contains("SEKRIT"),
            "{msg}"
        );
        assert_eq!(
            redact_url("http://a:b@h:1/p?q=1"),
            "http://<redacted>@h:1/p?<redacted>"
        );
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        assert!(ProxyUrl::new("socks5://h:1").is_err());
        assert!(ProxyUrl::new("h:3128").is_ok());
    }

    #[test]
    fn proxy_credentials_are_redacted() {
        let proxy = ProxyUrl::new("http://user:hunter2@proxy.local:3128").expect("proxy");
        assert_eq!(format!("{proxy:?}"), "ProxyUrl(http://proxy.local:3128)");
        assert_eq!(proxy.expose(), "http://user:hunter2@proxy.local:3128");
    }

    #[test]
    fn token_is_redacted_and_checked() {
        let config = ClientConfig::new(ApiToken::new("api_2supersecret").expect("token"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(ApiToken::new("").is_err());
        assert!(ApiToken::new("bad token").is_err());
        assert!(ApiToken::new("bad\ntoken").is_err());
    }
}
