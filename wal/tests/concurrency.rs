//! Group commit under many thread schedules, with the `shuttle` model checker (issue 5).
//!
//! Run: `cargo test -p escalation-queue-wal --features shuttle --test concurrency`
//! (`WAL_SHUTTLE_ITERATIONS=N`, default 2000 schedules per test). Without the feature this
//! file is empty: the writer's mutex and condvar are `std`'s and cannot be scheduled.
//!
//! The story: several threads append through one writer while a sync fails. Whatever
//! the interleaving, no appender may be told `Ok` for a record that is not durable (it
//! would be lost by a power loss right after), every appender must wake up (a lost
//! wake-up hangs a producer forever; shuttle reports it as a deadlock), and after the
//! failure every later append fails until the writer is reopened.
#![cfg(feature = "shuttle")]

use std::sync::{Arc, Mutex};

use escalation_queue_wal::{CrashMode, Error, Fault, Reader, SimDisk, Writer};

mod support;
use support::opts;

fn iterations() -> usize {
    std::env::var("WAL_SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Three appenders, two records each; the `fail_at`-th sync fails (0: none). Checks the
/// outcomes against what a power loss right afterwards keeps.
fn appenders_with_a_failing_sync(fail_at: u64) {
    let sim = SimDisk::new(1);
    let o = opts(&sim);
    let w = Writer::open("/q", &o).expect("open");
    // The lane's first segment exists before the appenders start, so the failing sync is
    // a batch's (a new segment's header sync that fails removes the file instead).
    w.append(b"first").expect("first append");
    if fail_at > 0 {
        sim.inject(Fault::SyncFailsOnce(fail_at));
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let (w, results) = (w.clone(), results.clone());
            shuttle::thread::spawn(move || {
                for i in 0..2u8 {
                    let payload = vec![t * 10 + i + 1; 100 + usize::from(t)];
                    // Err(true): Poisoned; Err(false): any other error.
                    let r = w.append(&payload);
                    let r = r
                        .map(|_| ())
                        .map_err(|e| matches!(e, Error::Poisoned { .. }));
                    results.lock().unwrap().push((payload, r));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("an appender panicked");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    // Once a sync failed, nothing is acknowledged any more: the appender whose batch
    // failed, every appender waiting on it and every later one gets `Poisoned`.
    let synced_all = results.iter().all(|(_, r)| r.is_ok());
    if fail_at > 0 && !synced_all {
        assert!(
            results.iter().all(|(_, r)| *r != Err(false)),
            "a failure other than Poisoned: {results:?}"
        );
        let later = w.append(b"after the failure");
        assert!(
            matches!(later, Err(Error::Poisoned { .. })),
            "the writer was not poisoned: {later:?}"
        );
    }
    // With 3 appenders x 2 records the failing sync is always reached.
    assert!(
        fail_at == 0 || fail_at > 4 || !synced_all,
        "the fault never fired"
    );
    drop(w);
    // What is durable now is what a power loss keeps.
    let d = sim.fork(2);
    d.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open("/q", "c", &opts(&d)).expect("reader");
    let mut durable = Vec::new();
    while let Some(rec) = r.next().expect("next") {
        durable.push(rec.payload.to_vec());
    }
    for (payload, result) in &results {
        if result.is_ok() {
            assert!(
                durable.contains(payload),
                "acknowledged but not durable: {:?} (results {results:?})",
                &payload[..1]
            );
        }
    }
}

#[test]
fn group_commit_never_acknowledges_a_record_that_is_not_durable() {
    shuttle::check_random(|| appenders_with_a_failing_sync(0), iterations());
}

#[test]
fn a_failing_sync_wakes_every_waiter_and_acknowledges_nothing_after_it() {
    for fail_at in 1..=3 {
        shuttle::check_random(
            move || appenders_with_a_failing_sync(fail_at),
            iterations() / 2,
        );
    }
}

#[test]
fn group_commit_under_pct_scheduling() {
    shuttle::check_pct(|| appenders_with_a_failing_sync(2), iterations(), 3);
}
