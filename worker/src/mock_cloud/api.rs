//! The mock's `POST …/v1/image-queries`, validating like the cloud API is documented to,
//! and `GET …/v1/image-queries/{id}`, answering from what it accepted.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::http::{Request, Response};
use escalation_queue_producer::new_image_query_id;

/// The path suffix served; any prefix (such as `/device-api`) is accepted.
pub(super) const IMAGE_QUERIES_PATH: &str = "/v1/image-queries";
/// What precedes the id in a lookup's path.
const ITEM_PREFIX: &str = "/v1/image-queries/";
/// The identity of the token's user: every SDK client reads it when it is constructed.
const ME_PATH: &str = "/v1/me";

/// The detector defaults the API fills in when a submission leaves them out (the
/// documented defaults of a new detector); an SDK's ImageQuery model requires both.
pub(super) const DEFAULT_PATIENCE_TIME_S: f64 = 30.0;
/// See [`DEFAULT_PATIENCE_TIME_S`].
pub(super) const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.9;

/// The image queries the mock has created, by id.
#[derive(Debug, Default)]
pub(super) struct Store {
    pub by_id: HashMap<String, Value>,
    pub order: Vec<String>,
}

/// The result of handling a request: the response and the id created, if any.
pub(super) struct Handled {
    pub response: Response,
    pub created_id: Option<String>,
}

fn error(status: u16, detail: impl Into<String>) -> Handled {
    Handled {
        response: Response::json(status, &json!({ "detail": detail.into() })),
        created_id: None,
    }
}

/// What the mock accepts, besides the request itself.
pub(super) struct Rules<'a> {
    /// The token in force.
    pub token: &'a str,
    /// Detectors whose submissions are answered 400 (nothing is created).
    pub rejected_detectors: &'a [String],
}

/// Routes a request: a submission, a lookup or the token's identity (`/v1/me`).
pub(super) fn handle(request: &Request, rules: &Rules<'_>, store: &mut Store) -> Handled {
    if request.path.ends_with(ME_PATH) {
        if request.method != "GET" {
            return error(405, format!("method {} not allowed", request.method));
        }
        if request.header("x-api-token") != Some(rules.token) {
            return unauthorized();
        }
        return Handled {
            response: Response::json(200, &me()),
            created_id: None,
        };
    }
    let item = request
        .path
        .find(ITEM_PREFIX)
        .map(|at| &request.path[at + ITEM_PREFIX.len()..]);
    let route_found = item.is_some() || request.path.ends_with(IMAGE_QUERIES_PATH);
    if !route_found {
        return error(404, format!("no route for {}", request.path));
    }
    let allowed = if item.is_some() { "GET" } else { "POST" };
    if request.method != allowed {
        return error(405, format!("method {} not allowed", request.method));
    }
    if request.header("x-api-token") != Some(rules.token) {
        return unauthorized();
    }
    match item {
        Some(id) => lookup(id, store),
        None => submit(request, rules, store),
    }
}

fn unauthorized() -> Handled {
    error(
        401,
        "Invalid token header. No credentials provided or token invalid.",
    )
}

/// The `GET …/v1/me` answer: every field the SDKs' `Me` model requires. Not a superuser,
/// so an SDK logs no elevated-permissions warning.
fn me() -> Value {
    json!({
        "email": "mock@mock-cloud.invalid",
        "username": "mock@mock-cloud.invalid",
        "group": { "id": 1, "name": "mock-cloud" },
        "is_superuser": false,
    })
}

/// `GET …/v1/image-queries/{id}`: the ImageQuery returned when it was created, or 404.
fn lookup(id: &str, store: &Store) -> Handled {
    match store.by_id.get(id) {
        Some(image_query) => Handled {
            response: Response::json(200, image_query),
            created_id: None,
        },
        None => error(404, "Not found."),
    }
}

/// Validates and creates an image query, as the real API does for a `want_async` submission.
fn submit(request: &Request, rules: &Rules<'_>, store: &mut Store) -> Handled {
    let params = match Params::parse(request) {
        Ok(params) => params,
        Err(detail) => return error(400, detail),
    };
    if rules.rejected_detectors.contains(&params.detector_id) {
        return error(
            400,
            format!(
                "detector {} rejects submissions (mock --reject-detector)",
                params.detector_id
            ),
        );
    }
    if request.body.is_empty() {
        return error(400, "image body is empty");
    }
    let id = match request.param("image_query_id") {
        Some(id) if store.by_id.contains_key(id) => {
            return error(400, format!("An image query with id {id} already exists."));
        }
        Some(id) if !id.starts_with("iq_") => {
            return error(400, format!("invalid image_query_id {id:?}"))
        }
        Some(id) => id.to_owned(),
        None => new_image_query_id(),
    };
    let image_query = json!({
        "id": id,
        "type": "image_query",
        "created_at": rfc3339_now(),
        "query": "",
        "detector_id": params.detector_id,
        "result_type": "binary_classification",
        "result": null,
        "patience_time": params.patience_time.unwrap_or(DEFAULT_PATIENCE_TIME_S),
        "confidence_threshold": params
            .confidence_threshold
            .unwrap_or(DEFAULT_CONFIDENCE_THRESHOLD),
        "metadata": params.metadata,
        "done_processing": false,
        "rois": null,
        "text": null,
    });
    store.by_id.insert(id.clone(), image_query.clone());
    store.order.push(id.clone());
    Handled {
        response: Response::json(201, &image_query),
        created_id: Some(id),
    }
}

struct Params {
    detector_id: String,
    patience_time: Option<f64>,
    confidence_threshold: Option<f64>,
    metadata: Option<Map<String, Value>>,
}

impl Params {
    fn parse(request: &Request) -> Result<Self, String> {
        let detector_id = request.param("detector_id").filter(|d| !d.is_empty());
        let detector_id = detector_id.ok_or("detector_id is required")?.to_owned();
        let number = |name: &str| -> Result<Option<f64>, String> {
            request
                .param(name)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| format!("{name} {v:?} is not a number"))
                })
                .transpose()
        };
        let confidence_threshold = number("confidence_threshold")?;
        if confidence_threshold.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            return Err("confidence_threshold must be between 0 and 1".to_owned());
        }
        let patience_time = number("patience_time")?;
        // The spec has no minimum and edge-endpoint sends 0 (its route allows `ge=0`).
        if patience_time.is_some_and(|p| !(p >= 0.0 && p.is_finite())) {
            return Err("patience_time must be a finite number >= 0".to_owned());
        }
        if let Some(review) = request.param("human_review") {
            if !matches!(review, "DEFAULT" | "ALWAYS" | "NEVER") {
                return Err(format!(
                    "human_review {review:?} must be DEFAULT, ALWAYS or NEVER"
                ));
            }
        }
        let metadata = request.param("metadata").map(decode_metadata).transpose()?;
        Ok(Self {
            detector_id,
            patience_time,
            confidence_threshold,
            metadata,
        })
    }
}

/// base64url (padding optional) of a JSON object.
fn decode_metadata(value: &str) -> Result<Map<String, Value>, String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(value)
        .map_err(|e| format!("metadata is not base64url: {e}"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("metadata must be a JSON object".to_owned()),
        Err(e) => Err(format!("metadata is not JSON: {e}")),
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339_now() -> String {
    let now = escalation_queue_wal::clock::since_epoch();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn metadata_padding_is_optional() {
        assert!(decode_metadata("eyJpc19lZGdlX2F1ZGl0IjogdHJ1ZX0=").is_ok());
        assert!(decode_metadata("eyJpc19lZGdlX2F1ZGl0IjogdHJ1ZX0").is_ok());
        assert!(decode_metadata("WzFd").is_err()); // [1]
    }
}
