//! The dead-letter queue: list, replay and purge by id or all, retention, concurrent
//! maintenance, duplicates left by a crash, and the queue directory's permissions.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use escalation_queue_producer::Error;
use escalation_queue_wal::{Reader, Writer};
use escalation_queue_worker::{DeadLetter, FaultAction, Selector};
use support::{fast_config, minimal_escalation, options, Harness};

fn bad_requests(n: usize) -> Vec<FaultAction> {
    (0..n)
        .map(|_| FaultAction::Respond {
            status: 400,
            retry_after: None,
        })
        .collect()
}

/// Three items dead-lettered with 400, a fourth delivered.
fn three_dead_letters() -> (Harness, Vec<escalation_queue_worker::Escalation>) {
    let h = Harness::new();
    let items = h.enqueue(4);
    h.mock.push_faults(bad_requests(3));
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!((summary.dead_lettered, summary.delivered), (3, 1));
    (h, items)
}

#[test]
fn list_shows_each_dead_letter_with_a_stable_id_and_context() {
    // Story: the original kept 200 truncated failure records and no way to act on them.
    let (h, items) = three_dead_letters();
    let letters = h.dead_letters().list().expect("list");
    let lane = h.queue.lane();
    let ids: Vec<_> = letters.iter().map(|l| l.id().to_string()).collect();
    assert_eq!(
        ids,
        [
            format!("dl_{lane}_0"),
            format!("dl_{lane}_1"),
            format!("dl_{lane}_2")
        ]
    );
    for (letter, item) in letters.iter().zip(&items) {
        assert_eq!(
            letter.info.image_query_id.as_deref(),
            Some(item.image_query_id.as_str())
        );
        assert_eq!(
            letter.info.request_id.as_deref(),
            Some(item.request_id.as_str())
        );
        let record = escalation_queue_worker::Escalation::decode(&letter.record).expect("record");
        assert_eq!(&record, item);
    }
    // Listing is read-only and repeatable.
    assert_eq!(h.dead_letters().list().expect("list again").len(), 3);
}

#[test]
fn replay_by_image_query_id_delivers_it_and_removes_it() {
    // Story: after fixing the cause (here: the cloud stops rejecting), an operator puts
    // one item back; it is delivered like a new one, attempts starting from 1.
    let (h, items) = three_dead_letters();
    let dlq = h.dead_letters();
    let report = dlq
        .replay(&Selector::Id(items[0].image_query_id.clone()))
        .expect("replay");
    assert_eq!(report.replayed.len(), 1);
    assert_eq!(report.kept, 2);
    assert_eq!(dlq.list().expect("list").len(), 2);
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!((summary.delivered, summary.attempts), (1, 1));
    assert!(h.mock.image_query_ids().contains(&items[0].image_query_id));
    // Nothing matches: nothing changes.
    let report = dlq
        .replay(&Selector::Id("iq_nope".into()))
        .expect("replay none");
    assert_eq!((report.replayed.len(), report.kept), (0, 2));
}

#[test]
fn replay_all_resets_attempts_and_failures_come_back_as_new_dead_letters() {
    // Story: replaying into a cloud that still rejects must not lose the items.
    let (h, _) = three_dead_letters();
    let dlq = h.dead_letters();
    let report = dlq.replay(&Selector::All).expect("replay all");
    assert_eq!(report.replayed.len(), 3);
    assert!(dlq.list().expect("list").is_empty());
    h.mock.push_faults(bad_requests(3));
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(summary.dead_lettered, 3);
    let letters = dlq.list().expect("list");
    assert_eq!(letters.len(), 3);
    assert!(letters.iter().all(|l| l.info.attempts_total == 1));
}

#[test]
fn purge_by_dead_letter_id_and_all() {
    // Story: some dead letters are garbage; an operator deletes them, one or all.
    let (h, _) = three_dead_letters();
    let dlq = h.dead_letters();
    let letters = dlq.list().expect("list");
    let second = letters[1].id().clone();
    let report = dlq
        .purge(&Selector::Id(second.to_string()))
        .expect("purge one");
    assert_eq!(report.purged, std::slice::from_ref(&second));
    let left: Vec<_> = dlq
        .list()
        .expect("list")
        .iter()
        .map(|l| l.id().clone())
        .collect();
    assert_eq!(left, [letters[0].id().clone(), letters[2].id().clone()]);
    let report = dlq.purge(&Selector::All).expect("purge all");
    assert_eq!(report.purged.len(), 2);
    assert!(dlq.list().expect("list").is_empty());
    // Purged means gone: a later drain finds nothing to do.
    assert_eq!(h.drain(fast_config()).0.attempts, 0);
}

#[test]
fn retention_hides_and_expires_old_dead_letters() {
    // Story: the 7-day retention is a security requirement; it covers dead letters too.
    let h = Harness::new();
    let mut old = minimal_escalation();
    old.enqueued_at_unix_ms -= 2 * 24 * 3600 * 1000;
    h.queue.enqueue(&old).expect("enqueue");
    h.enqueue(1);
    h.mock.push_faults(bad_requests(2));
    h.drain(fast_config());
    let day_ms = 24 * 3600 * 1000;
    let dlq = h.dead_letters().with_retention_ms(day_ms);
    assert_eq!(dlq.list().expect("list").len(), 1, "the old one is hidden");
    assert_eq!(h.dead_letters().list().expect("7 days").len(), 2);
    let report = dlq.expire().expect("expire");
    assert_eq!((report.expired.len(), report.kept), (1, 1));
    assert_eq!(h.dead_letters().list().expect("list").len(), 1, "and gone");
}

#[test]
fn one_maintenance_pass_at_a_time() {
    // Story: two operators replaying at once must not both put the same items back.
    let (h, _) = three_dead_letters();
    let opts = options().dead_letter_wal_options();
    let holder = Reader::open(h.root().join("dead-letter"), "dlq", &opts).expect("hold");
    let err = h.dead_letters().purge(&Selector::All).expect_err("busy");
    assert!(matches!(err, Error::DeadLetterBusy { .. }), "{err}");
    assert!(
        err.to_string().contains("another dead-letter operation"),
        "{err}"
    );
    drop(holder);
    assert_eq!(h.dead_letters().list().expect("list").len(), 3, "untouched");
}

#[test]
fn copies_left_by_a_crashed_pass_are_merged() {
    // Story: a crash after survivors were re-appended but before the checkpoint leaves two
    // copies of each; they must show once and be merged by the next pass.
    let (h, _) = three_dead_letters();
    let opts = options().dead_letter_wal_options();
    let letters = h.dead_letters().list().expect("list");
    let writer = Writer::open(h.root().join("dead-letter"), &opts).expect("writer");
    writer
        .append(&letters[0].encode().expect("encode"))
        .expect("append a copy");
    drop(writer);
    assert_eq!(h.dead_letters().list().expect("list").len(), 3);
    let report = h
        .dead_letters()
        .purge(&Selector::Id("none".into()))
        .expect("pass");
    assert_eq!((report.duplicates_merged, report.kept), (1, 3));
    let again: Vec<DeadLetter> = h.dead_letters().list().expect("list");
    assert_eq!(again.len(), 3);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn queue_files_are_private() {
    // Story: escalations hold customer images; nothing in the queue directory is readable
    // by other users.
    let (h, _) = three_dead_letters();
    let root = &h.root();
    for dir in [
        root.to_path_buf(),
        root.join("wal"),
        root.join("dead-letter"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let mut files = vec![root.join("dedupe.log"), root.join("incidents.jsonl")];
    for dir in ["wal", "dead-letter"] {
        let entries = std::fs::read_dir(root.join(dir)).expect("dir");
        files.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn enqueue_rejects_invalid_escalations_with_a_clear_error() {
    // Story: the original swallowed every enqueue error; ours names the field and the rule.
    let h = Harness::new();
    let mut esc = minimal_escalation();
    esc.confidence_threshold = Some(1.5);
    let err = h.queue.enqueue(&esc).expect_err("invalid");
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("confidence_threshold is 1.5"),
        "{err}"
    );
    assert!(!err.is_retryable());
    esc.confidence_threshold = None;
    esc.image = escalation_queue_worker::ImageSource::Inline(vec![1; 300 << 10].into());
    let err = h.queue.enqueue(&esc).expect_err("too large");
    assert!(err.to_string().contains("image is 307200 bytes"), "{err}");
}
