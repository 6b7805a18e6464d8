//! The reader `kill -9`ed many times over a queue that holds rejected escalations.
//!
//! Issue 9 §3: after a kill, an escalation that had never been sent got HTTP 400 (its
//! detector is rejected) and was counted as a delivered duplicate, because the first
//! `checkpoint_acks_max + 1` records of every lane were "possibly submitted" after an
//! unclean stop. It vanished from the operator's view. Now only records with a durable
//! attempt marker are, and their 400 is settled by asking the cloud
//! (`GET /v1/image-queries/{id}`). This test drives the real binaries: `mock-cloud
//! --reject-detector`, `reader` killed with SIGKILL at seeded random moments and started
//! again, a final drain. Every rejected escalation must end in `dlq list`, every good one in
//! the mock's accepted ids, and the mock's count of resubmissions (POSTs of an id it had
//! already created) within `kills × (checkpoint_acks_max + 1)`.
//!
//! Knobs: `EQ_READER_KILLS` (default 20), `EQ_READER_KILL_SEED` (default 9; printed).

mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{spawn_reader, wait_until, MockCloudProcess, Sandbox};

const WAIT: Duration = Duration::from_secs(60);
const ESCALATIONS: usize = 240;
/// Every this many escalations, one for the rejected detector.
const REJECTED_EVERY: usize = 6;
const REJECTED_DETECTOR: &str = "det_2rejected";
/// The reader's default `worker.checkpoint_acks_max`.
const CHECKPOINT_ACKS_MAX: u64 = 64;

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).map_or(default, |v| v.parse().expect(key))
}

/// xorshift64*: the kill moments, reproducible from the seed without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Enqueues the mix through the library; returns (good ids, rejected ids).
fn enqueue_mix(sandbox: &Sandbox) -> (Vec<String>, Vec<String>) {
    let queue = escalation_queue::EscalationQueue::open(sandbox.queue_dir()).expect("open");
    let (mut good, mut rejected) = (Vec::new(), Vec::new());
    for i in 0..ESCALATIONS {
        let bad = i % REJECTED_EVERY == 3;
        let detector = if bad { REJECTED_DETECTOR } else { "det_2good" };
        let image = format!("image {i}").into_bytes();
        let esc = escalation_queue::Escalation::new(
            detector,
            escalation_queue::ImageSource::Inline(image.into()),
        );
        let id = queue.enqueue(&esc).expect("enqueue").image_query_id;
        if bad { &mut rejected } else { &mut good }.push(id);
    }
    (good, rejected)
}

fn ids(value: &Value, key: &str) -> HashSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{key}: {value}"))
        .iter()
        .map(|v| v[key].as_str().or(v.as_str()).expect("id").to_owned())
        .collect()
}

#[test]
fn every_rejected_escalation_is_dead_lettered_across_many_reader_kills() {
    let kills = env_u64("EQ_READER_KILLS", 20);
    let seed = env_u64("EQ_READER_KILL_SEED", 9);
    println!("seed {seed}, kills {kills}");
    let mut rng = Rng(seed.max(1));
    let sandbox = Sandbox::new();
    let (good, rejected) = enqueue_mix(&sandbox);
    // Every answer 5 ms late, so that the kills land between requests and in them.
    let cloud = MockCloudProcess::start(
        &sandbox,
        &[
            "--reject-detector",
            REJECTED_DETECTOR,
            "--timeout-rate",
            "1",
            "--timeout-delay-ms",
            "5",
        ],
    );
    let started = Instant::now();
    for _ in 0..kills {
        let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
        reader.wait_stderr(WAIT, |l| l.contains("reader started"));
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        reader.kill();
    }
    let mut last = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    wait_until(WAIT, "the queue to drain after the last restart", || {
        sandbox.status()["pending_total"] == 0
    });
    last.terminate();
    assert_eq!(last.wait_exit(WAIT), Some(0));

    let listed = sandbox.run(&["dlq", "list", "--json"]);
    listed.expect_code(0);
    let dead: HashSet<String> = ids(&listed.json(), "image_query_id");
    let received = cloud.stop();
    let accepted = ids(&received["image_query_ids"], "id");
    let rejected: HashSet<String> = rejected.into_iter().collect();
    let good: HashSet<String> = good.into_iter().collect();
    assert_eq!(
        dead, rejected,
        "dead letters are exactly the rejected escalations"
    );
    assert_eq!(accepted, good, "the cloud has exactly the good escalations");
    let resubmissions = received["resubmissions"].as_u64().expect("resubmissions");
    let lookups = received["lookups"].as_u64().expect("lookups");
    let bound = kills * (CHECKPOINT_ACKS_MAX + 1);
    println!(
        "reader kill figures: {kills} kills, {} escalations ({} rejected), {resubmissions} resubmissions (bound {bound}), {lookups} lookups, {} requests, {:.1} s",
        ESCALATIONS,
        rejected.len(),
        received["requests"],
        started.elapsed().as_secs_f64()
    );
    assert!(resubmissions <= bound, "{resubmissions} > {bound}");
}
