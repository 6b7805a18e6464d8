//! Generated identifiers, shaped like the ones the Python edge-endpoint produces.

/// Prefix of generated request ids (`"req_uu" + uuid4().hex` in the original).
pub const REQUEST_ID_PREFIX: &str = "req_uu";

/// Prefix of image query ids.
pub const IMAGE_QUERY_ID_PREFIX: &str = "iq_";

/// KSUID epoch: 2014-05-13T16:53:20Z, in Unix seconds.
const KSUID_EPOCH_UNIX_S: u64 = 1_400_000_000;

/// Length of a base62 KSUID (20 bytes encoded).
const KSUID_BASE62_LEN: usize = 27;

const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new request id: `"req_uu"` followed by 32 lowercase hex digits (128 random bits).
pub fn new_request_id() -> String {
    format!("{REQUEST_ID_PREFIX}{:032x}", fastrand::u128(..))
}

/// A new image query id: `"iq_"` followed by a 27-character base62 KSUID with millisecond
/// resolution (svix `KsuidMs` layout: 4 bytes of seconds since the KSUID epoch, 1 byte of
/// milliseconds / 4, 15 random bytes), so ids sort by creation time like the original's.
pub fn new_image_query_id() -> String {
    let now = escalation_queue_wal::clock::since_epoch();
    format!(
        "{IMAGE_QUERY_ID_PREFIX}{}",
        ksuid_ms(now.as_millis(), fastrand::u128(..))
    )
}

/// The base62 KSUID for a Unix time in milliseconds and 120 bits of randomness.
fn ksuid_ms(unix_ms: u128, random: u128) -> String {
    let secs = u64::try_from(unix_ms / 1000).unwrap_or(u64::MAX);
    // Saturate rather than wrap for clocks outside the 136-year KSUID range.
    let ksuid_secs = u32::try_from(secs.saturating_sub(KSUID_EPOCH_UNIX_S)).unwrap_or(u32::MAX);
    // 0..=249, fits in u8.
    let quarter_ms = u8::try_from((unix_ms % 1000) / 4).unwrap_or(u8::MAX);
    let mut bytes = [0_u8; 20];
    bytes[..4].copy_from_slice(&ksuid_secs.to_be_bytes());
    bytes[4] = quarter_ms;
    bytes[5..].copy_from_slice(&random.to_be_bytes()[1..]);
    base62_fixed(bytes)
}

/// Encodes a 160-bit big-endian number in base62, left-padded with '0' to 27 characters.
fn base62_fixed(mut number: [u8; 20]) -> String {
    let mut out = [b'0'; KSUID_BASE62_LEN];
    for slot in out.iter_mut().rev() {
        // Long division of the whole number by 62; the remainder is the next digit.
        let mut remainder = 0_u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = u8::try_from(acc / 62).unwrap_or(0); // acc < 62 * 256, so the quotient < 256
            remainder = acc % 62;
        }
        *slot = BASE62_ALPHABET[remainder as usize];
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_shape() {
        let id = new_request_id();
        assert_eq!(id.len(), 6 + 32);
        assert!(id.starts_with("req_uu"));
        assert!(id[6..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn image_query_id_shape() {
        let id = new_image_query_id();
        assert_eq!(id.len(), 3 + 27, "{id}");
        assert!(id.starts_with("iq_"));
        assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn base62_extremes() {
        assert_eq!(base62_fixed([0; 20]), "0".repeat(27));
        // The largest KSUID, from the KSUID specification.
        assert_eq!(base62_fixed([0xff; 20]), "aWgEPTl1tmebfsQzFP4bxwgy80V");
    }

    #[test]
    fn ksuid_sorts_by_time() {
        let a = ksuid_ms(1_700_000_000_000, u128::MAX);
        let b = ksuid_ms(1_700_000_000_004, 0);
        assert!(a < b, "{a} !< {b}");
    }
}
