#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    escalation_queue_fuzz::escalation_decode(data);
});
