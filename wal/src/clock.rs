//! The wall clock, read in one place for the whole workspace: the wal, the producer,
//! the worker and the binary all take "now since the Unix epoch" from here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is before 1970).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Current unix time in milliseconds (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Current unix time in nanoseconds (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    u64::try_from(since_epoch().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let ms = now_unix_ms();
        let ns = now_ns();
        assert!(ms > 1_600_000_000_000, "the clock reads after 2020");
        assert!(
            ns / 1_000_000 >= ms,
            "nanoseconds are read after milliseconds"
        );
    }
}
