//! The cloud call: the [`Destination`] seam and the Groundlight implementation over ureq.

mod config;
mod error;
mod proxy;
mod tls;
mod url;

use std::fmt;
use std::io::Read;
use std::num::NonZeroU32;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::Value;

pub use config::{
    defaults, normalize_endpoint, read_token_file, ApiToken, ClientConfig, DEFAULT_ENDPOINT,
    ENV_API_TOKEN, ENV_ENDPOINT,
};
pub use error::ConfigError;
pub use error::{parse_retry_after, DeliveryError, TimeoutPhase, BODY_EXCERPT_MAX_BYTES};
pub use proxy::ProxyUrl;
pub use proxy::{ProxyRoute, ProxySource};
pub(crate) use tls::tls_config_for;
pub use tls::TlsRoots;
pub use url::{redact_url, url_has_credentials};

use crate::escalation::{python_float_repr, Escalation, ImageError, ImageSource, ValidationError};

/// The path of the image-query collection, after the endpoint.
const IMAGE_QUERIES_PATH: &str = "/v1/image-queries";

/// Where escalations are delivered. The worker loop calls [`submit`](Self::submit) once per
/// attempt and classifies the result; implementations do no retrying of their own.
pub trait Destination: Send + Sync {
    /// A short name for logs and stats, e.g. `"groundlight"`.
    fn name(&self) -> &str;

    /// Makes one delivery attempt of `escalation`.
    fn submit(
        &self,
        escalation: &Escalation,
        attempt: AttemptContext,
    ) -> Result<Delivered, DeliveryError>;

    /// Asks whether the cloud has the image query `image_query_id` (one request, no
    /// retrying): how the worker settles a 400 for an escalation that may have been
    /// submitted before.
    fn lookup(&self, image_query_id: &str) -> Result<Lookup, DeliveryError>;
}

/// What [`Destination::lookup`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The cloud has it (HTTP 200 with an ImageQuery).
    Found(Box<ImageQuery>),
    /// The cloud does not have it (HTTP 404).
    NotFound,
}

/// Which attempt of an item this is (1-based); retries use shorter connect timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptContext {
    number: NonZeroU32,
}

impl AttemptContext {
    /// The first attempt.
    pub const FIRST: Self = Self {
        number: NonZeroU32::MIN,
    };

    /// Attempt number `number` (1-based); 0 is treated as 1.
    pub fn new(number: u32) -> Self {
        Self {
            number: NonZeroU32::new(number).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// The attempt number, starting at 1.
    pub fn number(self) -> u32 {
        self.number.get()
    }

    /// Whether an earlier attempt of the same item was made.
    pub fn is_retry(self) -> bool {
        self.number.get() > 1
    }

    /// The following attempt (saturating).
    #[must_use]
    pub fn next(self) -> Self {
        Self {
            number: self.number.saturating_add(1),
        }
    }
}

/// A successful delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    /// The created image query.
    pub image_query: ImageQuery,
    /// The HTTP status (201 from the real API).
    pub status: u16,
    /// Time from sending the request to reading the whole response.
    pub elapsed: Duration,
}

/// The ImageQuery the API returns, read after the checks the SDK makes (the fields it
/// requires are present and well-typed, see [`GroundlightClient`]'s submit); unknown
/// fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ImageQuery {
    /// The image query id (`iq_…`).
    pub id: String,
    /// Always `"image_query"`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Creation time, RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// The detector's query text.
    #[serde(default)]
    pub query: Option<String>,
    /// The detector id.
    #[serde(default)]
    pub detector_id: Option<String>,
    /// `binary_classification`, `counting`, `multi_classification`, ….
    #[serde(default)]
    pub result_type: Option<String>,
    /// The result, `null` (or a placeholder) for async submissions.
    #[serde(default)]
    pub result: Option<Value>,
    /// Patience time in seconds.
    #[serde(default)]
    pub patience_time: Option<f64>,
    /// Confidence threshold.
    #[serde(default)]
    pub confidence_threshold: Option<f64>,
    /// Metadata echoed back.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Edge only; false from the cloud.
    #[serde(default)]
    pub done_processing: Option<bool>,
    /// Regions of interest.
    #[serde(default)]
    pub rois: Option<Value>,
    /// Recognised text.
    #[serde(default)]
    pub text: Option<String>,
}

/// What identifies one version of the token file: a rewrite in place or a rename over it
/// changes at least one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        })
    }
}

/// The token file and the version of it last read.
#[derive(Debug)]
struct TokenFile {
    path: std::path::PathBuf,
    seen: std::sync::Mutex<Option<FileStamp>>,
}

/// The Groundlight cloud: `POST {endpoint}/v1/image-queries`, one keep-alive agent reused.
pub struct GroundlightClient {
    config: ClientConfig,
    token: RwLock<ApiToken>,
    token_file: Option<TokenFile>,
    agent: ureq::Agent,
    url: String,
}

impl fmt::Debug for GroundlightClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroundlightClient")
            .field("url", &self.url)
            .field("config", &self.config)
            .finish()
    }
}

impl GroundlightClient {
    /// Validates `config` and builds the agent.
    pub fn new(mut config: ClientConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let proxy = config.proxy.to_ureq()?;
        let trust = tls::trust(&config.endpoint, config.tls_roots, config.ca_file.as_ref())?;
        tracing::info!(
            endpoint = %config.endpoint,
            route = %config.proxy,
            tls_roots = %trust.description,
            "cloud client ready"
        );
        let tls_config = ureq::tls::TlsConfig::builder()
            .root_certs(trust.roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are reported, never followed: the token must not travel elsewhere.
            .max_redirects(0)
            .user_agent(config.user_agent.as_str())
            .accept("application/json")
            .timeout_send_request(Some(Duration::from_millis(config.send_timeout_ms)))
            .timeout_send_body(Some(Duration::from_millis(config.send_timeout_ms)))
            .timeout_recv_response(Some(Duration::from_millis(config.read_timeout_ms)))
            .timeout_recv_body(Some(Duration::from_millis(config.read_timeout_ms)))
            .proxy(proxy)
            .tls_config(tls_config)
            .build()
            .new_agent();
        let url = format!("{}{}", config.endpoint, IMAGE_QUERIES_PATH);
        let mut first_token = config.api_token.clone();
        let token_file = match &config.api_token_file {
            Some(path) => {
                let stamp = FileStamp::of(path);
                first_token = config::read_token_file(path)?;
                tracing::info!(path = %path.display(), "API token read from cloud.api_token_file; re-read when it changes and after a 401/403");
                Some(TokenFile {
                    path: path.clone(),
                    seen: std::sync::Mutex::new(stamp),
                })
            }
            None => None,
        };
        Ok(Self {
            config,
            token: RwLock::new(first_token),
            token_file,
            agent,
            url,
        })
    }

    /// The token for the next request: re-reads the token file first when it changed since
    /// the last read, or unconditionally when `force` (after a 401/403). A file that cannot
    /// be read or holds no valid token keeps the token in use, with a warning.
    fn current_token(&self, force: bool) -> ApiToken {
        if let Some(file) = &self.token_file {
            let stamp = FileStamp::of(&file.path);
            let mut seen = file.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if force || stamp != *seen {
                match config::read_token_file(&file.path) {
                    Ok(token) => {
                        let mut current =
                            self.token.write().unwrap_or_else(PoisonError::into_inner);
                        if *current != token {
                            tracing::info!(path = %file.path.display(), "API token changed in cloud.api_token_file; using the new one");
                            *current = token;
                        }
                    }
                    Err(error) if stamp != *seen => {
                        tracing::warn!(%error, "keeping the API token in use");
                    }
                    Err(_) => {}
                }
                *seen = stamp;
            }
        }
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configuration in use (the token in it is the one given at construction).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Replaces the token for later calls, e.g. after an operator fixed an auth failure.
    pub fn set_api_token(&self, token: ApiToken) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The request query parameters, only those that are set, in the order the Groundlight
    /// SDK sends them (its `params` dict, then `detector_id`, which the generated API
    /// appends last): `patience_time, confidence_threshold, human_review, want_async,
    /// metadata, image_query_id, detector_id`.
    pub fn query_params(escalation: &Escalation) -> Vec<(&'static str, String)> {
        let mut params = Vec::with_capacity(7);
        if let Some(patience) = escalation.patience_time_s {
            params.push(("patience_time", python_float_repr(patience)));
        }
        if let Some(threshold) = escalation.confidence_threshold {
            params.push(("confidence_threshold", python_float_repr(threshold)));
        }
        if let Some(review) = escalation.human_review {
            params.push(("human_review", review.as_str().to_owned()));
        }
        params.push(("want_async", "True".to_owned()));
        if let Some(metadata) = &escalation.metadata {
            params.push(("metadata", metadata.to_query_value()));
        }
        params.push(("image_query_id", escalation.image_query_id.clone()));
        params.push(("detector_id", escalation.detector_id.clone()));
        params
    }

    fn send(
        &self,
        escalation: &Escalation,
        attempt: AttemptContext,
    ) -> Result<Delivered, DeliveryError> {
        let image = match &escalation.image {
            // Not even the mock accepts an empty body; the size bound is the queue's and was
            // applied by the worker (here only the largest any queue allows is known).
            ImageSource::Inline(bytes) if bytes.is_empty() => {
                return Err(DeliveryError::ImageUnavailable {
                    source: ImageError::Invalid(ValidationError::ImageEmpty {
                        max_bytes: 512 << 20,
                    }),
                })
            }
            ImageSource::Inline(bytes) => bytes.clone(),
            // The worker loads path images (with the queue's images directory) before it
            // calls `submit`; the client has no images directory of its own to read one.
            ImageSource::Path(path) => {
                return Err(DeliveryError::ImageUnavailable {
                    source: ImageError::Refused {
                        path: path.clone(),
                        reason: "the cloud client sends images already in memory; deliver path \
                                 images through the Worker, which reads them under \
                                 QueueOptions::images_dir (queue.images_dir)"
                            .to_owned(),
                    },
                })
            }
        };
        let token = self.current_token(false);
        let request = self
            .agent
            .post(&self.url)
            .config()
            .timeout_connect(Some(self.config.connect_timeout(attempt.is_retry())))
            .build()
            .query_pairs(Self::query_params(escalation))
            .header("x-api-token", token.expose())
            .header("X-Request-Id", escalation.request_id.as_str())
            // What urllib3 sends for the SDK: no compressed answers.
            .header("Accept-Encoding", "identity")
            .content_type(escalation.content_type(&image));
        let started = Instant::now();
        let mut response = request.send(&image[..]).map_err(DeliveryError::from_ureq)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            if matches!(status, 401 | 403) {
                // The next attempt uses a token rotated into the file meanwhile.
                self.current_token(true);
            }
            return Err(http_error(&mut response, status));
        }
        let body = self.read_json(&mut response, status)?;
        // An answer about another image query is a misrouting, whatever else it holds.
        if let Some(got) = body.get("id").and_then(Value::as_str) {
            if got != escalation.image_query_id {
                return Err(DeliveryError::WrongImageQuery {
                    status,
                    sent: escalation.image_query_id.clone(),
                    got: got.to_owned(),
                });
            }
        }
        let image_query = image_query_from(body, status)?;
        Ok(Delivered {
            image_query,
            status,
            elapsed: started.elapsed(),
        })
    }

    /// `GET {endpoint}/v1/image-queries/{id}` with the token: 200 is found, 404 is not.
    fn get(&self, image_query_id: &str) -> Result<Lookup, DeliveryError> {
        let token = self.current_token(false);
        let url = format!("{}/{}", self.url, path_segment(image_query_id));
        let request = self
            .agent
            .get(&url)
            .config()
            .timeout_connect(Some(self.config.connect_timeout(true)))
            .build()
            .header("x-api-token", token.expose());
        let mut response = request.call().map_err(DeliveryError::from_ureq)?;
        let status = response.status().as_u16();
        match status {
            200 => {
                let body = self.read_json(&mut response, status)?;
                image_query_from(body, status).map(|iq| Lookup::Found(Box::new(iq)))
            }
            404 => Ok(Lookup::NotFound),
            401 | 403 => {
                self.current_token(true);
                Err(http_error(&mut response, status))
            }
            _ => Err(http_error(&mut response, status)),
        }
    }

    /// Reads a 2xx body (bounded) as JSON.
    fn read_json(
        &self,
        response: &mut ureq::http::Response<ureq::Body>,
        status: u16,
    ) -> Result<Value, DeliveryError> {
        let body = response
            .body_mut()
            .with_config()
            .limit(self.config.response_size_max_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => DeliveryError::BadResponse {
                    status,
                    detail: format!("body exceeds {limit} bytes"),
                    body_excerpt: String::new(),
                },
                other => DeliveryError::from_ureq(other),
            })?;
        serde_json::from_slice::<Value>(&body).map_err(|e| DeliveryError::BadResponse {
            status,
            detail: e.to_string(),
            body_excerpt: error::body_excerpt(&body),
        })
    }
}

/// The fields the SDK's generated `ImageQuery` model takes as required arguments (a
/// response missing one fails its deserialisation): the API spec's required list.
const IMAGE_QUERY_REQUIRED: [&str; 12] = [
    "metadata",
    "id",
    "type",
    "created_at",
    "query",
    "detector_id",
    "result_type",
    "result",
    "patience_time",
    "confidence_threshold",
    "rois",
    "text",
];

/// Checks `body` as the SDK checks an ImageQuery answer (every required field present;
/// `id`, `created_at`, `query` and `detector_id` strings; `patience_time` and
/// `confidence_threshold` non-null numbers; `metadata` an object or null, `rois` an array
/// or null, `text` a string or null), then reads it.
fn image_query_from(body: Value, status: u16) -> Result<ImageQuery, DeliveryError> {
    let bad = |detail: String, body: &Value| DeliveryError::BadResponse {
        status,
        detail,
        body_excerpt: error::body_excerpt(body.to_string().as_bytes()),
    };
    let Some(object) = body.as_object() else {
        return Err(bad("not a JSON object (an ImageQuery)".to_owned(), &body));
    };
    if let Some(missing) = IMAGE_QUERY_REQUIRED
        .iter()
        .find(|field| !object.contains_key(**field))
    {
        return Err(bad(format!("not an ImageQuery: no {missing:?}"), &body));
    }
    let wrong = |field: &str, ok: fn(&Value) -> bool, expected: &str| {
        (!ok(&object[field])).then(|| format!("not an ImageQuery: {field:?} is not {expected}"))
    };
    let problem = wrong("id", Value::is_string, "a string")
        .or_else(|| wrong("created_at", Value::is_string, "a date-time string"))
        .or_else(|| wrong("query", Value::is_string, "a string"))
        .or_else(|| wrong("detector_id", Value::is_string, "a string"))
        .or_else(|| wrong("patience_time", Value::is_number, "a number"))
        .or_else(|| wrong("confidence_threshold", Value::is_number, "a number"))
        .or_else(|| {
            wrong(
                "metadata",
                |v| v.is_null() || v.is_object(),
                "an object or null",
            )
        })
        .or_else(|| wrong("rois", |v| v.is_null() || v.is_array(), "a list or null"))
        .or_else(|| wrong("text", |v| v.is_null() || v.is_string(), "a string or null"));
    if let Some(detail) = problem {
        return Err(bad(detail, &body));
    }
    ImageQuery::deserialize(&body).map_err(|e| bad(e.to_string(), &body))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (ids are printable ASCII,
/// but a `/` or `?` in one must not change the URL's meaning).
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Builds the error for a non-2xx answer, keeping `Retry-After` and a body excerpt.
fn http_error(response: &mut ureq::http::Response<ureq::Body>, status: u16) -> DeliveryError {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut head = Vec::with_capacity(BODY_EXCERPT_MAX_BYTES);
    let limit = u64::try_from(BODY_EXCERPT_MAX_BYTES).unwrap_or(u64::MAX);
    // A failed or partial read only shortens the excerpt; the status is what matters.
    let _ = response
        .body_mut()
        .as_reader()
        .take(limit)
        .read_to_end(&mut head);
    let location = (300..400)
        .contains(&status)
        .then(|| response.headers().get("location"))
        .flatten()
        .map(|v| error::shown_location(v.as_bytes()));
    DeliveryError::Http {
        status,
        retry_after,
        location,
        body_excerpt: error::body_excerpt(&head),
    }
}

impl Destination for GroundlightClient {
    fn name(&self) -> &str {
        "groundlight"
    }

    fn submit(
        &self,
        escalation: &Escalation,
        attempt: AttemptContext,
    ) -> Result<Delivered, DeliveryError> {
        let result = self.send(escalation, attempt);
        match &result {
            Ok(delivered) => tracing::debug!(
                image_query_id = %escalation.image_query_id,
                attempt = attempt.number(),
                status = delivered.status,
                elapsed_ms = u64::try_from(delivered.elapsed.as_millis()).unwrap_or(u64::MAX),
                "escalation delivered"
            ),
            Err(error) => tracing::debug!(
                image_query_id = %escalation.image_query_id,
                attempt = attempt.number(),
                %error,
                "escalation attempt failed"
            ),
        }
        result
    }

    fn lookup(&self, image_query_id: &str) -> Result<Lookup, DeliveryError> {
        let result = self.get(image_query_id);
        tracing::debug!(image_query_id, ?result, "image query lookup");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Story: the images directory lives in `QueueOptions` only (trust report); a path
    /// image handed to the client directly is refused without a request, naming the
    /// Worker and the option that does load it.
    #[test]
    fn the_client_refuses_a_path_image_it_was_not_given_the_bytes_of() {
        let mut config = ClientConfig::new(ApiToken::new("token").expect("token"));
        // Nothing listens here; a request would fail with a connect error instead.
        config.endpoint = "http://127.0.0.1:9".to_owned();
        let client = GroundlightClient::new(config).expect("client");
        let esc = Escalation::new("det_1", ImageSource::Path("/images/a.jpg".into()));
        match client.submit(&esc, AttemptContext::FIRST) {
            Err(DeliveryError::ImageUnavailable {
                source: ImageError::Refused { reason, .. },
            }) => assert!(reason.contains("QueueOptions::images_dir"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn ids_in_a_path_segment_cannot_change_the_url() {
        assert_eq!(path_segment("iq_2zZb3hW0"), "iq_2zZb3hW0");
        assert_eq!(path_segment("iq_a/b?c d"), "iq_a%2Fb%3Fc%20d");
    }
}
