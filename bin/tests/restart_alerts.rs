//! Alerts across reader restarts (probe F25): a `kill -9` and restart of the real reader
//! binary must not page anyone for what is expected after a crash, and an incident raised
//! before a restart is not raised again by the next process within the dedupe window.

mod util;

use std::path::Path;
use std::time::Duration;

use escalation_queue::worker::RandomFaults;
use escalation_queue::{Escalation, EscalationQueue, ImageSource, MockCloud, MockCloudConfig};
use serde_json::Value;
use util::{get_json, spawn_reader, wait_until, Sandbox, TOKEN};

/// The incidents in `<queue>/incidents.jsonl`.
fn incidents(sandbox: &Sandbox) -> Vec<Value> {
    let text =
        std::fs::read_to_string(sandbox.queue_dir().join("incidents.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("incident JSON"))
        .collect()
}

/// Checkpoints that never come while the reader is busy, so a kill leaves every delivery
/// since the start to be redelivered (at most `checkpoint_acks_max` per lane).
const NO_CHECKPOINT: [&str; 4] = [
    "--set",
    "worker.checkpoint_acks_max=100000",
    "--set",
    "worker.checkpoint_interval_ms=600000",
];

/// Story (probe F25): after each `kill -9` of the reader the records delivered since its
/// last checkpoint come again; the cloud answers `400 already exists`, the lookup confirms
/// it has them, and they count as delivered. The spike detector still counted each 400 as
/// a failure: a HIGH `error_rate_spike` incident (and webhook post) after most restarts.
/// Now the expected duplicates are not failures: the restart delivers everything with
/// dozens of duplicates and raises no spike.
#[test]
fn expected_duplicates_after_a_kill_raise_no_error_rate_spike() {
    let sandbox = Sandbox::new();
    let total = 150;
    sandbox.enqueue_many(total);
    let mut config = MockCloudConfig::new(TOKEN);
    // Every answer takes 10 ms, so the kill lands in the middle of the queue.
    config.faults.random = Some(RandomFaults {
        seed: 25,
        unavailable_rate: 0.0,
        reset_rate: 0.0,
        drop_response_rate: 0.0,
        delay_rate: 1.0,
        rate_limited_rate: 0.0,
        delay_ms: 10,
    });
    let cloud = MockCloud::start(config).expect("mock cloud");
    let endpoint = cloud.endpoint();

    let mut first = spawn_reader(&sandbox, &endpoint, &NO_CHECKPOINT);
    wait_until(Duration::from_secs(30), "60 image queries created", || {
        cloud.image_query_ids().len() >= 60
    });
    first.kill();
    let created_before_restart = cloud.image_query_ids().len();
    assert!(created_before_restart < total, "the kill came too late");

    let second = spawn_reader(&sandbox, &endpoint, &NO_CHECKPOINT);
    let addr = second.status_addr();
    wait_until(
        Duration::from_secs(60),
        "every escalation delivered",
        || {
            cloud.image_query_ids().len() == total
                && get_json(addr, "/stats").1["worker"]["queue_depth"] == 0
        },
    );
    let (_, stats) = get_json(addr, "/stats");
    second.terminate();
    let duplicates = stats["worker"]["delivered_duplicates"]
        .as_u64()
        .expect("count");
    assert!(
        duplicates >= 20,
        "the restart must see at least the spike floor (20) of duplicates: {stats}"
    );
    let spikes: Vec<_> = incidents(&sandbox)
        .into_iter()
        .filter(|i| i["kind"] == "error_rate_spike")
        .collect();
    assert!(
        spikes.is_empty(),
        "{duplicates} duplicates raised {spikes:#?}"
    );
}

fn enqueue_refused_path_record(dir: &Path, images: &Path) {
    let options = escalation_queue::QueueOptions {
        images_dir: Some(images.to_path_buf()),
        free_disk_bytes_min: 0,
        ..escalation_queue::QueueOptions::default()
    };
    let queue = EscalationQueue::open_with(dir, options).expect("open");
    let esc = Escalation::new("det_restart", ImageSource::Path(images.join("gone.jpg")));
    queue.enqueue(&esc).expect("enqueue");
}

/// Story (probe F25): incident dedupe lived in the process, so every restart raised (and
/// posted) again what the previous process had raised minutes before. Two `drain` runs
/// each dead-letter an escalation for the same reason within the 15-minute window: the
/// first raises the MEDIUM incident, the second only counts it.
#[test]
fn an_incident_raised_before_a_restart_is_not_raised_again_within_the_window() {
    let sandbox = Sandbox::new();
    let images = sandbox.root.path().join("images");
    let cloud = MockCloud::start(MockCloudConfig::new(TOKEN)).expect("mock cloud");
    let images_flag = format!("queue.images_dir={}", images.display());
    for run in 1..=2 {
        enqueue_refused_path_record(&sandbox.queue_dir(), &images);
        let mut cmd = sandbox.command(&[
            "drain",
            "--endpoint",
            &cloud.endpoint(),
            "--set",
            &images_flag,
        ]);
        cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
        let out = sandbox.run_with(cmd, None);
        out.expect_code(1);
        let dead_lettered: Vec<_> = incidents(&sandbox)
            .into_iter()
            .filter(|i| i["kind"] == "dead_lettered")
            .collect();
        assert_eq!(
            dead_lettered.len(),
            1,
            "after run {run}: {dead_lettered:#?}"
        );
    }
}
