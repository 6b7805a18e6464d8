//! Where incidents go besides the log and `incidents.jsonl` (the producer crate's
//! `IncidentLog`): the optional webhook.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use serde::{Deserialize, Serialize};

use super::Incident;
use crate::client::{redact_url, tls_config_for, ProxyRoute, TlsRoots};
use crate::layout::Error;

/// Webhook settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where incidents are POSTed as JSON.
    pub url: String,
    /// Timeout of one POST. Default 5000; minimum 1.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most POSTs per minute; further incidents are dropped (and counted). Default 10.
    #[serde(default = "default_per_minute_max")]
    pub per_minute_max: u32,
    /// Incidents waiting to be sent; beyond it new ones are dropped. Default 64.
    #[serde(default = "default_queue_max")]
    pub queue_max: usize,
    /// How POSTs reach `url`: not a key of its own (the binary resolves it from
    /// `cloud.proxy_url` and the proxy environment, like the cloud client's route). Default
    /// direct.
    #[serde(skip)]
    pub proxy: ProxyRoute,
    /// What the POSTs' TLS is verified against: not keys of their own (the binary takes
    /// `cloud.tls_roots` and `cloud.ca_file`, so the webhook trusts what the cloud client
    /// trusts). Default the system store.
    #[serde(skip)]
    pub tls_roots: TlsRoots,
    /// An extra CA file on top of the system store (see `tls_roots`).
    #[serde(skip)]
    pub ca_file: Option<PathBuf>,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_per_minute_max() -> u32 {
    10
}
fn default_queue_max() -> usize {
    64
}

impl WebhookConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout_ms: default_timeout_ms(),
            per_minute_max: default_per_minute_max(),
            queue_max: default_queue_max(),
            proxy: ProxyRoute::Direct,
            tls_roots: TlsRoots::System,
            ca_file: None,
        }
    }

    /// Checks the URL (http or https with a host) and the timeout (at least 1 ms); the
    /// error names the key, the value (credentials and query redacted) and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        let url = self.url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
        let host = host.map(|h| h.rsplit_once('@').map_or(h, |(_, h)| h));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            return Err(Error::Config {
                key: "incidents.webhook.url",
                value: format!("{:?}", redact_url(&self.url)),
                allowed: "an http:// or https:// URL with a host".to_owned(),
            });
        }
        if self.timeout_ms == 0 {
            return Err(Error::Config {
                key: "incidents.webhook.timeout_ms",
                value: "0".to_owned(),
                allowed: "at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

/// Sends incidents from a background thread through a bounded channel: a slow or failing
/// webhook never blocks the caller.
#[derive(Debug)]
pub(super) struct Webhook {
    tx: Sender<Incident>,
    dropped: Arc<AtomicU64>,
}

impl Webhook {
    pub(super) fn start(config: WebhookConfig) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Incident>(config.queue_max.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_in_thread = Arc::clone(&dropped);
        thread::Builder::new()
            .name("incident-webhook".into())
            .spawn(move || {
                tracing::info!(
                    url = %redact_url(&config.url),
                    route = %config.proxy,
                    "incident webhook ready"
                );
                let proxy = config.proxy.to_ureq().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "incident webhook proxy unusable; posting directly");
                    None
                });
                let tls = tls_config_for(&config.url, config.tls_roots, config.ca_file.as_ref())
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "incident webhook: the configured trust is unusable; verifying with the bundled roots");
                        ureq::tls::TlsConfig::builder()
                            .root_certs(ureq::tls::RootCerts::WebPki)
                            .build()
                    });
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_millis(config.timeout_ms.max(1))))
                    .tls_config(tls)
                    .http_status_as_error(false)
                    .max_redirects(0)
                    // Always set: ureq's default would read the environment on its own.
                    .proxy(proxy)
                    .build()
                    .new_agent();
                let mut limiter = RateLimiter::new(config.per_minute_max);
                for incident in rx {
                    if !limiter.admit(Instant::now()) {
                        dropped_in_thread.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key = %incident.key, "incident webhook rate limit reached; incident not sent");
                        continue;
                    }
                    post(&agent, &config.url, &incident);
                }
            })?;
        Ok(Self { tx, dropped })
    }

    /// Queues `incident`; drops it (counted) when the queue is full.
    pub(super) fn send(&self, incident: Incident) {
        match self.tx.try_send(incident) {
            Ok(()) => {}
            Err(TrySendError::Full(incident) | TrySendError::Disconnected(incident)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %incident.key, "incident webhook queue full or stopped; incident not sent");
            }
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn post(agent: &ureq::Agent, url: &str, incident: &Incident) {
    let body = match serde_json::to_vec(incident) {
        Ok(body) => body,
        Err(e) => return tracing::warn!(error = %e, "incident could not be serialized"),
    };
    let result = agent
        .post(url)
        .header("content-type", "application/json")
        .send(&body[..]);
    match result {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            tracing::warn!(status = response.status().as_u16(), key = %incident.key, "incident webhook answered with an error status")
        }
        Err(e) => tracing::warn!(error = %e, key = %incident.key, "incident webhook failed"),
    }
}

/// At most `per_minute_max` admissions in any sliding minute.
#[derive(Debug)]
struct RateLimiter {
    per_minute_max: usize,
    sent: std::collections::VecDeque<Instant>,
}

impl RateLimiter {
    fn new(per_minute_max: u32) -> Self {
        Self {
            per_minute_max: usize::try_from(per_minute_max).unwrap_or(usize::MAX),
            sent: std::collections::VecDeque::new(),
        }
    }

    fn admit(&mut self, now: Instant) -> bool {
        while let Some(first) = self.sent.front() {
            if now.duration_since(*first) < Duration::from_secs(60) {
                break;
            }
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_minute_max {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_admits_at_most_n_per_minute() {
        let mut limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(limiter.admit(t0));
        assert!(limiter.admit(t0));
        assert!(!limiter.admit(t0 + Duration::from_secs(30)));
        assert!(limiter.admit(t0 + Duration::from_secs(61)));
    }
}
