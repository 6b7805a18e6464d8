//! Which certificate authorities the cloud client trusts. Like the Groundlight SDK (urllib3
//! over OpenSSL with no CA bundle of its own), the default is the system's store, so a CA an
//! operator installed (a TLS-inspecting proxy's, a private endpoint's) works here as it does
//! there; `SSL_CERT_FILE` / `SSL_CERT_DIR` replace that store as they do for OpenSSL.
//! Optionally, the bundled Mozilla roots instead, or an extra CA file on top of the system's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

use super::error::ConfigError;

/// The root certificates a TLS connection to the endpoint is verified against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRoots {
    /// The system's trust store (Debian: `/etc/ssl/certs`), or the file / directory named by
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set. If it holds no certificate at all, the
    /// bundled roots are used, with a warning.
    #[default]
    System,
    /// The Mozilla roots compiled into the binary (webpki-roots), whatever the system has.
    Bundled,
}

impl TlsRoots {
    /// The configuration spelling: `system` or `bundled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Bundled => "bundled",
        }
    }
}

impl fmt::Display for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roots for an agent, and a description for the startup log line.
pub(super) struct Trust {
    pub roots: RootCerts,
    pub description: String,
}

/// Reads the certificates of `ca_file` (PEM, one or more `CERTIFICATE` blocks).
fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidCaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(invalid(format!("not PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(invalid("it holds no PEM CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// Where the system store was read from, for the log line.
fn system_source() -> String {
    let named: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok().map(|v| format!("{var}={v}")))
        .collect();
    if named.is_empty() {
        "the system store".to_owned()
    } else {
        named.join(" ")
    }
}

/// Decides the trust for an agent talking to `endpoint`. The CA file is checked whatever the
/// scheme (a bad path is a configuration error at start, not at the first https request);
/// the system store is read only for an https endpoint.
pub(crate) fn trust(
    endpoint: &str,
    roots: TlsRoots,
    ca_file: Option<&PathBuf>,
) -> Result<Trust, ConfigError> {
    let extra = ca_file.map(|p| read_ca_file(p)).transpose()?;
    match (roots, extra) {
        (TlsRoots::Bundled, Some(_)) => Err(ConfigError::InvalidCaFile {
            path: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: "cloud.ca_file adds to the system store, and cloud.tls_roots = \"bundled\" \
                     ignores that store; use tls_roots = \"system\" (the default)"
                .to_owned(),
        }),
        (TlsRoots::Bundled, None) => Ok(Trust {
            roots: RootCerts::WebPki,
            description: "bundled roots (webpki-roots)".to_owned(),
        }),
        (TlsRoots::System, extra) => {
            let extra = extra.unwrap_or_default();
            if !endpoint.starts_with("https://") {
                return Ok(Trust {
                    roots: RootCerts::Specific(Arc::new(extra)),
                    description: "none needed (plain http)".to_owned(),
                });
            }
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "cloud client: part of the system trust store is unreadable");
            }
            let system_count = loaded.certs.len();
            if system_count == 0 && extra.is_empty() {
                tracing::warn!(
                    "cloud client: the system trust store holds no certificate (install \
                     ca-certificates, or point SSL_CERT_FILE at a bundle); using the bundled \
                     roots"
                );
                return Ok(Trust {
                    roots: RootCerts::WebPki,
                    description: "bundled roots (the system store is empty)".to_owned(),
                });
            }
            let extra_note = ca_file.map_or(String::new(), |p| {
                format!(
                    " + cloud.ca_file {} ({} certificates)",
                    p.display(),
                    extra.len()
                )
            });
            let mut certs: Vec<Certificate<'static>> = loaded
                .certs
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                .collect();
            certs.extend(extra);
            Ok(Trust {
                roots: RootCerts::Specific(Arc::new(certs)),
                description: format!(
                    "{} ({system_count} certificates){extra_note}",
                    system_source()
                ),
            })
        }
    }
}

/// The TLS configuration of an agent talking to `url` with `roots` and `ca_file`: what the
/// cloud client and the incident webhook both build their agents with.
pub(crate) fn tls_config_for(
    url: &str,
    roots: TlsRoots,
    ca_file: Option<&PathBuf>,
) -> Result<ureq::tls::TlsConfig, ConfigError> {
    let trust = trust(url, roots, ca_file)?;
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(trust.roots)
        .build())
}
