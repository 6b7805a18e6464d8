//! Helpers shared by the delivery test binaries: a mock cloud, a client with short
//! timeouts, a fully populated escalation.

use bytes::Bytes;
use escalation_queue_worker::{
    ApiToken, AttemptContext, Classification, ClassificationPolicy, ClientConfig, Delivered,
    DeliveryError, Destination, Escalation, GroundlightClient, HumanReview, ImageSource, Metadata,
    MockCloud, MockCloudConfig,
};

pub const TOKEN: &str = "api_2testtoken";
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really-a-png";

pub fn start_mock() -> MockCloud {
    MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud starts")
}

/// A client with short timeouts so failures show up quickly.
pub fn client(endpoint: &str) -> GroundlightClient {
    let mut config = ClientConfig::new(ApiToken::new(TOKEN).expect("token"));
    config.endpoint = endpoint.to_owned();
    config.connect_timeout_first_ms = 300;
    config.connect_timeout_retry_ms = 300;
    config.read_timeout_ms = 300;
    GroundlightClient::new(config).expect("client")
}

pub fn escalation() -> Escalation {
    let mut esc = Escalation::new(
        "det_2testdetector",
        ImageSource::Inline(Bytes::from_static(PNG)),
    );
    esc.patience_time_s = Some(30.0);
    esc.confidence_threshold = Some(0.75);
    esc.human_review = Some(HumanReview::Never);
    esc.metadata = Some(
        Metadata::from_json_str(
            r#"{"is_edge_audit": true, "edge_result": {"label": "YES", "confidence": 0.5}}"#,
        )
        .expect("metadata"),
    );
    esc
}

pub fn submit(
    client: &GroundlightClient,
    esc: &Escalation,
    attempt: u32,
) -> Result<Delivered, DeliveryError> {
    client.submit(esc, AttemptContext::new(attempt))
}

pub fn classify(
    result: &Result<Delivered, DeliveryError>,
    previous_response_lost: bool,
) -> Classification {
    ClassificationPolicy::default().classify(result, previous_response_lost)
}
