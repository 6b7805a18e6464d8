#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    escalation_queue_fuzz::wal_targets::decode_frame(data);
});
