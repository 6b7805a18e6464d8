//! The one proxy story shared by the cloud client and the incident webhook: an explicit
//! proxy (`cloud.proxy_url`) when one is configured, else the usual environment variables
//! (`HTTPS_PROXY` for https targets, `HTTP_PROXY` for http targets, then `ALL_PROXY`;
//! lowercase forms too), and `NO_PROXY` exempting hosts from either. Each HTTP agent talks
//! to exactly one host, so the route is decided once, when the agent is built, and logged.

use std::fmt;
use std::net::IpAddr;

use super::error::ConfigError;
use super::url::{redact_url, url_has_credentials};

/// Where a proxy setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// The configuration (`cloud.proxy_url`, [`ClientConfig::proxy`](super::ClientConfig)).
    Config,
    /// This environment variable.
    Env(&'static str),
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("cloud.proxy_url"),
            Self::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// How requests to one destination travel. `Display` and `Debug` never show proxy
/// credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyRoute {
    /// Straight to the host: no proxy is configured.
    #[default]
    Direct,
    /// Straight to the host because an entry of `NO_PROXY` matches it.
    Bypassed {
        /// The destination host.
        host: String,
        /// The `NO_PROXY` entry that matched.
        entry: String,
    },
    /// Through an HTTP CONNECT proxy.
    Via {
        /// The proxy.
        proxy: ProxyUrl,
        /// Where it was configured.
        source: ProxySource,
    },
}

/// Variables tried for an https target, in order.
const HTTPS_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
/// Variables tried for an http target, in order.
const HTTP_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
/// The exemption list.
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

impl ProxyRoute {
    /// The route to `target` (an http or https URL): `NO_PROXY` first, then `configured`,
    /// then the environment read through `lookup`. A proxy variable that is set but not a
    /// usable proxy URL is an error naming the variable (never silently direct).
    pub fn resolve(
        target: &str,
        configured: Option<&ProxyUrl>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let is_https = target.trim_start().starts_with("https://");
        let host = host_of(target);
        let first_set = |vars: &[&'static str]| {
            vars.iter().find_map(|var| {
                lookup(var)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (*var, v))
            })
        };
        if let Some((_, list)) = first_set(&NO_PROXY_VARS) {
            if let Some(entry) = no_proxy_match(&list, &host) {
                return Ok(Self::Bypassed { host, entry });
            }
        }
        if let Some(proxy) = configured {
            return Ok(Self::Via {
                proxy: proxy.clone(),
                source: ProxySource::Config,
            });
        }
        let vars = if is_https { &HTTPS_VARS } else { &HTTP_VARS };
        match first_set(vars) {
            Some((var, value)) => {
                let proxy = ProxyUrl::new(value.trim())
                    .map_err(|_| ConfigError::InvalidEnvProxy { var })?;
                Ok(Self::Via {
                    proxy,
                    source: ProxySource::Env(var),
                })
            }
            None => Ok(Self::Direct),
        }
    }

    /// The proxy requests go through, if any.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        match self {
            Self::Via { proxy, .. } => Some(proxy),
            Self::Direct | Self::Bypassed { .. } => None,
        }
    }

    /// The ureq proxy for an agent (`None`: direct). ureq's own environment lookup is
    /// never used: the route was decided here.
    pub(crate) fn to_ureq(&self) -> Result<Option<ureq::Proxy>, ConfigError> {
        self.proxy()
            .map(|p| ureq::Proxy::new(p.expose()).map_err(|_| ConfigError::InvalidProxy))
            .transpose()
    }
}

impl fmt::Display for ProxyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Bypassed { host, entry } => {
                write!(f, "direct (NO_PROXY entry {entry:?} matches {host})")
            }
            Self::Via { proxy, source } => {
                write!(f, "via proxy {} (from {source})", proxy.redacted())
            }
        }
    }
}

/// The lowercased host of `url`, without port, brackets or credentials.
fn host_of(url: &str) -> String {
    let rest = url.trim().split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    strip_port(authority).to_ascii_lowercase()
}

/// `host:port` → `host`, `[::1]:80` → `::1`; a bare IPv6 address stays as it is.
fn strip_port(hostport: &str) -> &str {
    if let Some(inner) = hostport.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    match hostport.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => hostport,
    }
}

/// The first entry of a `NO_PROXY` list (comma or space separated) that matches `host`:
/// `*` matches everything; `example.com`, `.example.com` and `*.example.com` match that
/// host and its subdomains; `10.0.0.0/8` matches addresses in the range; an entry's port
/// is ignored.
pub(crate) fn no_proxy_match(list: &str, host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .find(|entry| {
            let e = entry.to_ascii_lowercase();
            if e == "*" {
                return true;
            }
            if let (Some((net, bits)), Some(ip)) = (e.split_once('/'), host_ip) {
                return cidr_contains(net, bits, ip);
            }
            let name = strip_port(&e)
                .trim_start_matches('*')
                .trim_start_matches('.');
            let name = name.trim_end_matches('.');
            !name.is_empty()
                && (host == name
                    || (host.len() > name.len()
                        && host.ends_with(name)
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
        })
        .map(str::to_owned)
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// An HTTP proxy URL (`http://[user:pass@]host:port`). `Debug` hides any credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(String);

impl ProxyUrl {
    /// Checks that `url` is an `http://` or `https://` proxy URL that ureq accepts (a
    /// missing scheme means `http://`; SOCKS is not built in, so it is refused here rather
    /// than failing at the first request).
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), None | Some("http" | "https")) {
            return Err(ConfigError::InvalidProxy);
        }
        if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::InvalidProxy);
        }
        ureq::Proxy::new(&url).map_err(|_| ConfigError::InvalidProxy)?;
        Ok(Self(url))
    }

    /// The URL, credentials included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any credentials replaced by `<redacted>`, for logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// Whether the URL holds credentials (`user:password@`).
    pub fn has_credentials(&self) -> bool {
        url_has_credentials(&self.0)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", self.0.as_str()));
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        write!(f, "ProxyUrl({scheme}://{host})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn no_proxy_entries_match_hosts_suffixes_and_ranges() {
        let list = "localhost, .internal,*.corp.example, 10.0.0.0/8,[::1]:8080 api.other:443";
        for host in [
            "localhost",
            "a.internal",
            "internal",
            "x.corp.example",
            "10.2.3.4",
            "::1",
            "api.other",
        ] {
            assert!(no_proxy_match(list, host).is_some(), "{host}");
        }
        for host in ["notinternal", "11.0.0.1", "example", "api.groundlight.ai"] {
            assert!(no_proxy_match(list, host).is_none(), "{host}");
        }
        assert_eq!(no_proxy_match("*", "anything").as_deref(), Some("*"));
    }

    #[test]
    fn the_target_scheme_picks_the_variable_and_no_proxy_wins() {
        let vars = [
            ("HTTPS_PROXY", "http://secure:1"),
            ("HTTP_PROXY", "http://plain:2"),
            ("NO_PROXY", "127.0.0.1"),
        ];
        let https = ProxyRoute::resolve("https://api.x/device-api", None, env(&vars)).unwrap();
        assert_eq!(
            https.to_string(),
            "via proxy http://secure:1 (from environment variable HTTPS_PROXY)"
        );
        let http = ProxyRoute::resolve("http://hooks.x/a", None, env(&vars)).unwrap();
        assert!(http.to_string().contains("plain:2"), "{http}");
        let local = ProxyRoute::resolve("http://127.0.0.1:9/a", None, env(&vars)).unwrap();
        assert!(matches!(local, ProxyRoute::Bypassed { .. }), "{local}");
        let configured = ProxyUrl::new("http://user:hunter2@conf:3").unwrap();
        let route = ProxyRoute::resolve("https://api.x", Some(&configured), env(&vars)).unwrap();
        assert_eq!(
            route.to_string(),
            "via proxy http://<redacted>@conf:3 (from cloud.proxy_url)"
        );
        assert!(!format!("{route:?}").contains("hunter2"));
        let none = ProxyRoute::resolve("https://api.x", None, env(&[])).unwrap();
        assert_eq!(none, ProxyRoute::Direct);
        let bad = ProxyRoute::resolve("https://api.x", None, env(&[("ALL_PROXY", "::bad::")]));
        assert_eq!(bad, Err(ConfigError::InvalidEnvProxy { var: "ALL_PROXY" }));
    }
}
