//! Bodies of the fuzz targets. The wal ones live in `wal_targets.rs`, which the wal's own
//! test suite also runs over seeded random inputs (`wal/tests/fuzz_smoke.rs`), so they
//! keep compiling and keep passing without cargo-fuzz.

pub mod wal_targets;

use bytes::Bytes;
use escalation_queue_worker::{Escalation, RecordLimits};

/// `Escalation::decode` never panics on any bytes, and whatever it accepts and validates
/// encodes back to a record that decodes to the same escalation.
pub fn escalation_decode(data: &[u8]) {
    let record = Bytes::copy_from_slice(data);
    let Ok(e) = Escalation::decode(&record) else {
        return;
    };
    let limits = RecordLimits::default();
    if e.validate_with(&limits).is_err() {
        return;
    }
    let encoded = e.encode(&limits).expect("a valid escalation encodes");
    let again = Escalation::decode(&Bytes::from(encoded)).expect("an encoded escalation decodes");
    assert_eq!(again, e, "decode(encode(e)) != e");
}
