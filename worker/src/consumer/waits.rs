//! The worker's waits between attempts: one place that sleeps, so that every wait is
//! logged once with its real length and cause and is visible in the stats while it lasts.

use std::time::{Duration, Instant};

use escalation_queue_wal::Reader;

use super::cloud::Cloud;
use crate::client::DeliveryError;
use crate::dead_letter::now_unix_ms;
use crate::escalation::Escalation;
use crate::retry::Wait;

/// Waits `wait` before the next attempt of `esc` (attempted `attempts` times; the last one
/// failed with `error`, if given). Logs it once, shows its cause and end in the stats,
/// keeps the gauges fresh every `maintenance_interval_ms` (reading `reader`); a stop ends
/// it early.
pub(super) fn wait(
    cloud: &mut Cloud,
    reader: &mut Reader,
    wait: Wait,
    esc: &Escalation,
    error: Option<&DeliveryError>,
    attempts: u32,
) {
    let wait_ms = millis(wait.length);
    let circuit = cloud.breaker.state().as_str();
    match error {
        Some(error) => tracing::info!(
            image_query_id = %esc.image_query_id,
            detector_id = %esc.detector_id,
            attempts,
            error = %error,
            retry_in_ms = wait_ms,
            wait_cause = %wait.cause,
            circuit,
            "escalation attempt failed; waiting before the next attempt"
        ),
        None => tracing::info!(
            image_query_id = %esc.image_query_id,
            detector_id = %esc.detector_id,
            attempts,
            retry_in_ms = wait_ms,
            wait_cause = %wait.cause,
            circuit,
            "waiting before the next attempt"
        ),
    }
    let started = Instant::now();
    let deadline = started + wait.length;
    cloud
        .stats
        .begin_wait(wait.cause, now_unix_ms().saturating_add(wait_ms));
    cloud.stats.set_circuit_state(cloud.breaker.state());
    let chunk = Duration::from_millis(cloud.config.maintenance_interval_ms);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || cloud.stop.sleep(left.min(chunk)) {
            break;
        }
        cloud.maybe_maintain(reader);
    }
    cloud.stats.end_wait(millis(started.elapsed()));
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
