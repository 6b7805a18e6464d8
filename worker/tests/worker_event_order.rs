//! What an operator reads is in the order it happened: damage the reader stepped over is
//! raised as an incident before the record after it is delivered, not at the next idle
//! moment or maintenance pass (up to a second later on a busy queue).

mod support;

use std::path::PathBuf;
use std::sync::Mutex;

use escalation_queue_worker::{
    AttemptContext, Delivered, DeliveryError, Destination, Escalation, GroundlightClient, Lookup,
};
use support::{fast_config, Harness};

/// Delivers through the mock, noting for each escalation whether `incidents.jsonl` already
/// held a corruption incident when its first attempt began.
struct Recording<'a> {
    inner: &'a GroundlightClient,
    incidents: PathBuf,
    seen: Mutex<Vec<(String, bool)>>,
}

impl Destination for Recording<'_> {
    fn name(&self) -> &str {
        "recording"
    }

    fn submit(
        &self,
        escalation: &Escalation,
        attempt: AttemptContext,
    ) -> Result<Delivered, DeliveryError> {
        let log = std::fs::read_to_string(&self.incidents).unwrap_or_default();
        let raised = log.contains("\"kind\":\"corruption\"");
        self.seen
            .lock()
            .expect("seen")
            .push((escalation.image_query_id.clone(), raised));
        self.inner.submit(escalation, attempt)
    }

    fn lookup(&self, image_query_id: &str) -> Result<Lookup, DeliveryError> {
        self.inner.lookup(image_query_id)
    }
}

#[test]
fn damage_is_raised_before_the_record_after_it_is_delivered() {
    let h = Harness::new();
    let items = h.enqueue(3);
    support::damage_record(&h.root(), &items[1].image_query_id);

    let dest = Recording {
        inner: h.client.as_ref(),
        incidents: h.root().join("incidents.jsonl"),
        seen: Mutex::new(Vec::new()),
    };
    let mut worker = h.worker(fast_config());
    let summary = worker.drain(&dest).expect("drain");
    assert_eq!(summary.delivered, 2);
    let seen = dest.seen.into_inner().expect("seen");
    assert_eq!(
        seen,
        [
            (items[0].image_query_id.clone(), false),
            (items[2].image_query_id.clone(), true),
        ],
        "the corruption between the first and the third record must be an incident \
         before the third is submitted"
    );
}
