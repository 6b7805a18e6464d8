//! Record round-trip, rejection and validation tests.

use super::*;
use serde_json::json;

const JPEG: &[u8] = b"\xff\xd8\xff\xe0fake-jpeg-body";

fn full_record() -> Escalation {
    let mut esc = Escalation::new("det_abc123", ImageSource::Inline(Bytes::from_static(JPEG)));
    esc.patience_time_s = Some(30.0);
    esc.confidence_threshold = Some(0.9);
    esc.human_review = Some(HumanReview::Always);
    esc.metadata = Some(
        Metadata::try_from(json!({"is_edge_audit": true, "edge_result": {"confidence": 0.5}}))
            .expect("object"),
    );
    esc.image_format = Some(ImageFormat::Png);
    esc
}

/// Encodes with the default limits, path images allowed below the Python layout's directory.
fn encode(esc: &Escalation) -> Bytes {
    let limits = confined_to(std::path::Path::new("/opt/groundlight/queue/images"));
    Bytes::from(esc.encode(&limits).expect("encode"))
}

#[test]
fn round_trip_all_fields() {
    let esc = full_record();
    let record = encode(&esc);
    assert_eq!(record[0], FORMAT_VERSION);
    assert_eq!(Escalation::decode(&record).expect("decode"), esc);
}

#[test]
fn round_trip_minimal_and_path() {
    let mut esc = Escalation::new(
        "det_x",
        ImageSource::Path("/opt/groundlight/queue/images/x".into()),
    );
    esc.enqueued_at_unix_ms = 0;
    let decoded = Escalation::decode(&encode(&esc)).expect("decode");
    assert_eq!(decoded, esc);
}

#[test]
fn inline_image_is_zero_copy() {
    let record = encode(&full_record());
    let decoded = Escalation::decode(&record).expect("decode");
    let ImageSource::Inline(image) = decoded.image else {
        panic!("inline expected")
    };
    assert_eq!(&image[..], JPEG);
    let range = record.as_ptr_range();
    assert!(
        range.contains(&image.as_ptr()),
        "image must point into the record"
    );
}

#[test]
fn decode_rejects_empty() {
    assert!(matches!(
        Escalation::decode(&Bytes::new()),
        Err(DecodeError::Empty)
    ));
}

#[test]
fn decode_rejects_unknown_version() {
    let mut bytes = encode(&full_record()).to_vec();
    for found in [0, 3, 255] {
        bytes[0] = found;
        let err = Escalation::decode(&Bytes::from(bytes.clone())).expect_err("unknown version");
        assert!(
            matches!(
                err,
                DecodeError::UnsupportedVersion {
                    found: f,
                    supported: 2
                } if f == found
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("version {found};")),
            "{err}"
        );
    }
}

/// Records written by the version-1 encoder (before `possibly_submitted` existed), byte for
/// byte as that encoder wrote them (generated with the code at f006b9c). A queue written by
/// an older build must still drain after an upgrade.
const GOLDEN_V1_FULL: &str = "010a6465745f6162633132330012ffd8ffe066616b652d6a7065672d626f647901010a69715f676f6c64656e310d7265715f7575676f6c64656e31010000000000003e4001cdccccccccccec3f010101377b22656467655f726573756c74223a7b22636f6e666964656e6365223a302e357d2c2269735f656467655f6175646974223a747275657dfbe0d9dafe32";
const GOLDEN_V1_MINIMAL_PATH: &str = "01056465745f78011f2f6f70742f67726f756e646c696768742f71756575652f696d616765732f78000a69715f676f6c64656e320d7265715f7575676f6c64656e320000000007";

fn unhex(hex: &str) -> Bytes {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Bytes::from(bytes)
}

#[test]
fn version_1_records_still_decode_as_not_possibly_submitted() {
    let mut full = full_record();
    full.image_query_id = "iq_golden1".into();
    full.request_id = "req_uugolden1".into();
    full.enqueued_at_unix_ms = 1_752_000_000_123;
    let mut minimal = Escalation::new(
        "det_x",
        ImageSource::Path("/opt/groundlight/queue/images/x".into()),
    );
    minimal.image_query_id = "iq_golden2".into();
    minimal.request_id = "req_uugolden2".into();
    minimal.enqueued_at_unix_ms = 7;
    for (golden, expected) in [(GOLDEN_V1_FULL, full), (GOLDEN_V1_MINIMAL_PATH, minimal)] {
        let record = unhex(golden);
        assert_eq!(record[0], FORMAT_VERSION_V1);
        let decoded = Escalation::decode(&record).expect("a version-1 record decodes");
        assert!(!decoded.possibly_submitted);
        assert_eq!(decoded, expected);
        // Re-encoding writes version 2: the same body plus one `false` byte.
        let reencoded = encode(&decoded);
        assert_eq!(reencoded[0], FORMAT_VERSION);
        assert_eq!(&reencoded[1..reencoded.len() - 1], &record[1..]);
        assert_eq!(reencoded[reencoded.len() - 1], 0);
    }
}

/// A version-1 record with a byte appended is not silently read as version 2.
#[test]
fn version_1_record_with_a_trailing_flag_byte_is_rejected() {
    let mut bytes = unhex(GOLDEN_V1_FULL).to_vec();
    bytes.push(1);
    let err = Escalation::decode(&Bytes::from(bytes)).expect_err("trailing");
    assert!(
        matches!(err, DecodeError::TrailingBytes { count: 1 }),
        "{err}"
    );
}

/// `possibly_submitted` (set by a producer whose own submit may have reached the cloud)
/// survives the record; any byte other than 0 or 1 in its place is malformed.
#[test]
fn possibly_submitted_round_trips_and_only_0_or_1_decodes() {
    for flag in [false, true] {
        let mut esc = full_record();
        esc.possibly_submitted = flag;
        let record = encode(&esc);
        assert_eq!(record[record.len() - 1], u8::from(flag));
        assert_eq!(Escalation::decode(&record).expect("decode"), esc);
    }
    let mut bytes = encode(&full_record()).to_vec();
    *bytes.last_mut().expect("non-empty") = 2;
    let err = Escalation::decode(&Bytes::from(bytes)).expect_err("flag 2");
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
}

#[test]
fn decode_rejects_trailing_garbage() {
    let mut bytes = encode(&full_record()).to_vec();
    bytes.extend_from_slice(b"xyz");
    let err = Escalation::decode(&Bytes::from(bytes)).expect_err("trailing");
    assert!(
        matches!(err, DecodeError::TrailingBytes { count: 3 }),
        "{err}"
    );
}

#[test]
fn decode_rejects_every_truncation() {
    let bytes = encode(&full_record());
    for len in 1..bytes.len() {
        let result = Escalation::decode(&bytes.slice(..len));
        assert!(result.is_err(), "truncation to {len} bytes decoded");
    }
}

#[test]
fn encode_refuses_invalid_records() {
    let mut esc = full_record();
    esc.confidence_threshold = Some(1.5);
    assert!(matches!(
        esc.encode(&RecordLimits::DEFAULT),
        Err(EncodeError::Invalid(
            ValidationError::ConfidenceThresholdOutOfRange { .. }
        ))
    ));
}

/// A predicate on the expected error.
type Check = fn(&ValidationError) -> bool;

#[test]
fn validate_ids() {
    let cases: [(&str, Check); 4] = [
        ("", |e| {
            matches!(
                e,
                ValidationError::IdEmpty {
                    field: IdField::DetectorId
                }
            )
        }),
        ("det x", |e| {
            matches!(
                e,
                ValidationError::IdInvalidCharacter {
                    character: ' ',
                    position: 3,
                    ..
                }
            )
        }),
        ("det_é", |e| {
            matches!(
                e,
                ValidationError::IdInvalidCharacter {
                    character: 'é', ..
                }
            )
        }),
        ("det\n", |e| {
            matches!(
                e,
                ValidationError::IdInvalidCharacter {
                    character: '\n',
                    ..
                }
            )
        }),
    ];
    for (value, is_expected) in cases {
        let mut esc = full_record();
        esc.detector_id = value.to_owned();
        let err = esc.validate().expect_err(value);
        assert!(is_expected(&err), "{value:?}: {err}");
        assert!(err.to_string().contains("detector_id"), "{err}");
    }
    let mut esc = full_record();
    esc.request_id = "r".repeat(ID_LEN_MAX_CHARS + 1);
    let err = esc.validate().expect_err("too long");
    assert!(
        matches!(
            err,
            ValidationError::IdTooLong {
                field: IdField::RequestId,
                length_chars: 201,
                ..
            }
        ),
        "{err}"
    );
    esc.request_id = "r".repeat(ID_LEN_MAX_CHARS);
    esc.image_query_id = String::new();
    assert!(matches!(
        esc.validate(),
        Err(ValidationError::IdEmpty {
            field: IdField::ImageQueryId
        })
    ));
}

#[test]
fn validate_confidence_threshold_range() {
    for ok in [0.0, 0.5, 1.0] {
        let mut esc = full_record();
        esc.confidence_threshold = Some(ok);
        assert_eq!(esc.validate(), Ok(()), "{ok}");
    }
    for bad in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
        let mut esc = full_record();
        esc.confidence_threshold = Some(bad);
        let err = esc.validate().expect_err("out of range");
        assert!(
            matches!(err, ValidationError::ConfidenceThresholdOutOfRange { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0..=1"), "{err}");
    }
}

/// edge-endpoint's route allows `patience_time >= 0` and the SDK sends `0.0`; the API spec
/// has no minimum. Negative, NaN and infinite values are still refused, and (probe F27)
/// `1e308` and `1e-320`, which were accepted and sent to the cloud.
#[test]
fn validate_patience_time_allows_zero_and_refuses_negative_and_non_finite() {
    for ok in [0.0, -0.0, 0.001, 30.0, 86_400.0 * 365.0] {
        let mut esc = full_record();
        esc.patience_time_s = Some(ok);
        assert_eq!(esc.validate(), Ok(()), "{ok}");
    }
    for bad in [
        -1e-9,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e308,
        f64::MAX,
        1e-320,
        0.0009,
        86_400.0 * 365.0 + 1.0,
    ] {
        let mut esc = full_record();
        esc.patience_time_s = Some(bad);
        let err = esc.validate().expect_err("bad patience");
        assert!(
            matches!(err, ValidationError::PatienceTimeOutOfRange { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(">= 0"), "{err}");
    }
}

/// The SDK (>= 0.14) accepts `len(json.dumps(md)) <= 1024`; edge-endpoint fills metadata up
/// to exactly that. We used to stop at 975 (a `sys.getsizeof` reading of SDK 0.13).
#[test]
fn validate_metadata_limit_is_the_sdk_limit() {
    // len('{"k": "' + x*n + '"}') = 9 + n <= 1024 → n <= 1015.
    let mut esc = full_record();
    esc.metadata = Some(Metadata::try_from(json!({"k": "x".repeat(1015)})).expect("object"));
    assert_eq!(esc.validate(), Ok(()));
    // A non-ASCII character counts as its \uXXXX escape: 6 characters (12 beyond U+FFFF).
    esc.metadata = Some(
        Metadata::try_from(json!({"k": format!("{}\u{1F600}", "x".repeat(1003))})).expect("object"),
    );
    assert_eq!(esc.validate(), Ok(()));
    esc.metadata = Some(
        Metadata::try_from(json!({"k": format!("{}\u{1F600}", "x".repeat(1004))})).expect("object"),
    );
    assert!(matches!(
        esc.validate(),
        Err(ValidationError::MetadataTooLarge {
            size_bytes: 1025,
            ..
        })
    ));
    esc.metadata = Some(Metadata::try_from(json!({"k": "x".repeat(1016)})).expect("object"));
    assert_eq!(
        esc.validate(),
        Err(ValidationError::MetadataTooLarge {
            size_bytes: 1025,
            max_bytes: 1024
        })
    );
}

#[test]
fn validate_image_size() {
    let limits = RecordLimits {
        image_size_max_bytes: 4,
        ..RecordLimits::DEFAULT
    };
    let mut esc = full_record();
    esc.image = ImageSource::Inline(Bytes::new());
    assert!(matches!(
        esc.validate_with(&limits),
        Err(ValidationError::ImageEmpty { max_bytes: 4 })
    ));
    esc.image = ImageSource::Inline(Bytes::from_static(b"12345"));
    assert!(matches!(
        esc.validate_with(&limits),
        Err(ValidationError::ImageTooLarge {
            size_bytes: 5,
            max_bytes: 4
        })
    ));
    esc.image = ImageSource::Path("relative/image.jpg".into());
    assert!(matches!(
        esc.validate(),
        Err(ValidationError::ImagePathInvalid { .. })
    ));
}

/// Limits allowing path images below `dir`.
fn confined_to(dir: &std::path::Path) -> RecordLimits {
    RecordLimits {
        images_dir: Some(dir.to_owned()),
        ..RecordLimits::DEFAULT
    }
}

#[test]
fn load_path_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img");
    std::fs::write(&path, JPEG).expect("write");
    let source = ImageSource::Path(path.clone());
    let limits = confined_to(dir.path());
    assert_eq!(&source.load(&limits).expect("load")[..], JPEG);
    let small = RecordLimits {
        image_size_max_bytes: 3,
        ..limits.clone()
    };
    assert!(matches!(
        source.load(&small),
        Err(ImageError::Invalid(ValidationError::ImageTooLarge {
            max_bytes: 3,
            ..
        }))
    ));
    let missing = ImageSource::Path(dir.path().join("missing"));
    match missing.load(&limits) {
        Err(ImageError::Unreadable { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

/// Story (probe F6): the reader opened whatever absolute path a record named, so any
/// enqueuer could make it upload `/proc/self/environ` (with the API token) or
/// `/etc/shadow`. Now path images are off without an images directory, and with one every
/// escape is refused by the validation (lexically) and again by `load` (on the file).
#[test]
fn path_images_are_confined_to_the_images_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let images = root.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    let secret = root.path().join("secret");
    std::fs::write(&secret, b"TOKEN=secret").expect("write");
    std::fs::write(images.join("ok.jpg"), JPEG).expect("write");
    let limits = confined_to(&images);
    let refused_lexically = [
        std::path::PathBuf::from("/proc/self/environ"),
        std::path::PathBuf::from("/etc/shadow"),
        images.join("../secret"),
        images.join("sub/../../secret"),
        images.clone(),
    ];
    for path in &refused_lexically {
        let mut esc = full_record();
        esc.image = ImageSource::Path(path.clone());
        assert!(
            matches!(
                esc.validate_with(&limits),
                Err(ValidationError::ImagePathRefused { .. })
            ),
            "{path:?}: {:?}",
            esc.validate_with(&limits)
        );
        assert!(
            matches!(
                ImageSource::Path(path.clone()).load(&limits),
                Err(ImageError::Refused { .. })
            ),
            "{path:?}"
        );
    }
    // Without an images directory every path image is refused, with a message saying how.
    let mut esc = full_record();
    esc.image = ImageSource::Path(images.join("ok.jpg"));
    let err = esc.validate().expect_err("off by default");
    assert!(err.to_string().contains("queue.images_dir"), "{err}");
    assert!(esc.validate_with(&limits).is_ok());

    // Files that pass the lexical check but must not be read.
    std::os::unix::fs::symlink(&secret, images.join("link.jpg")).expect("symlink");
    std::os::unix::fs::symlink(root.path(), images.join("linkdir")).expect("symlink");
    std::os::unix::fs::symlink(images.join("ok.jpg"), images.join("inside.jpg")).expect("symlink");
    std::fs::hard_link(&secret, images.join("hard.jpg")).expect("hard link");
    std::fs::create_dir(images.join("dir.jpg")).expect("mkdir");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        images.join("fifo.jpg"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .expect("mkfifo");
    for (name, needle) in [
        ("link.jpg", "symbolic link"),
        ("inside.jpg", "symbolic link"),
        ("linkdir/secret", "symbolic link"),
        ("hard.jpg", "hard links"),
        ("dir.jpg", "a directory"),
        ("fifo.jpg", "a FIFO"),
    ] {
        let path = images.join(name);
        match ImageSource::Path(path.clone()).load(&limits) {
            Err(e @ ImageError::Refused { .. }) => {
                assert!(e.to_string().contains(needle), "{name}: {e}")
            }
            other => panic!("{name}: expected Refused, got {other:?}"),
        }
    }
    let ok = ImageSource::Path(images.join("ok.jpg"))
        .load(&limits)
        .expect("load");
    assert_eq!(&ok[..], JPEG);
}

#[test]
fn content_type_sniffing() {
    let esc = Escalation::new("det", ImageSource::Inline(Bytes::from_static(JPEG)));
    assert_eq!(esc.content_type(JPEG), "image/jpeg");
    assert_eq!(esc.content_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
    assert_eq!(esc.content_type(b"GIF89a..."), "image/gif");
    assert_eq!(esc.content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
    assert_eq!(esc.content_type(b"BM......"), "image/bmp");
    assert_eq!(esc.content_type(b"unknown"), "image/jpeg");
    let mut explicit = esc.clone();
    explicit.image_format = Some(ImageFormat::Gif);
    assert_eq!(explicit.content_type(JPEG), "image/gif");
}

#[test]
fn human_review_strings() {
    for hr in [
        HumanReview::Default,
        HumanReview::Always,
        HumanReview::Never,
    ] {
        assert_eq!(hr.as_str().parse::<HumanReview>(), Ok(hr));
        assert_eq!(
            serde_json::to_string(&hr).expect("json"),
            format!("\"{hr}\"")
        );
    }
    assert!("always".parse::<HumanReview>().is_err());
}

/// Story: probe F27, enqueue held the image three times. `encode_parts` keeps the inline
/// image out of its buffers (the middle part is the escalation's own memory) and the
/// parts join to exactly what `encode` writes, so the stored format is unchanged.
#[test]
fn encode_parts_shares_the_image_and_joins_to_encode() {
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut esc = Escalation::new("det_parts", ImageSource::Inline(image.into()));
    esc.metadata = Some(Metadata::from_json_str(r#"{"k": "v"}"#).expect("metadata"));
    esc.patience_time_s = Some(30.0);
    let limits = RecordLimits::DEFAULT;
    let parts = esc.encode_parts(&limits).expect("parts");
    let [head, middle, tail] = parts.parts();
    let ImageSource::Inline(bytes) = &esc.image else {
        unreachable!()
    };
    assert!(std::ptr::eq(middle, &bytes[..]), "the image was copied");
    assert!(
        head.len() + tail.len() < 512,
        "{} + {}",
        head.len(),
        tail.len()
    );
    assert_eq!(parts.to_vec(), esc.encode(&limits).expect("encode"));
    assert_eq!(parts.len(), parts.to_vec().len());
    let decoded = Escalation::decode(&parts.to_vec().into()).expect("decode");
    assert_eq!(decoded, esc);

    let path = Escalation::new("det_parts", ImageSource::Path("/images/a.jpg".into()));
    let limits = RecordLimits {
        images_dir: Some("/images".into()),
        ..RecordLimits::DEFAULT
    };
    let parts = path.encode_parts(&limits).expect("path parts");
    assert!(parts.parts()[1].is_empty());
    let decoded = Escalation::decode(&parts.to_vec().into()).expect("decode");
    assert_eq!(decoded, path);
}
