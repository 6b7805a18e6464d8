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

fn encode(esc: &Escalation) -> Bytes {
    Bytes::from(esc.encode(&RecordLimits::DEFAULT).expect("encode"))
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
    bytes[0] = 2;
    let err = Escalation::decode(&Bytes::from(bytes)).expect_err("version 2");
    assert!(
        matches!(
            err,
            DecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 2"));
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

#[test]
fn validate_patience_time() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut esc = full_record();
        esc.patience_time_s = Some(bad);
        let err = esc.validate().expect_err("bad patience");
        assert!(
            matches!(err, ValidationError::PatienceTimeOutOfRange { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn validate_metadata_limit_is_the_sdk_limit() {
    // 49 (CPython str header) + len('{"k": "' + x*n + '"}') = 49 + 9 + n <= 1024 → n <= 966.
    let mut esc = full_record();
    esc.metadata = Some(Metadata::try_from(json!({"k": "x".repeat(966)})).expect("object"));
    assert_eq!(esc.validate(), Ok(()));
    esc.metadata = Some(Metadata::try_from(json!({"k": "x".repeat(967)})).expect("object"));
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

#[test]
fn load_path_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img");
    std::fs::write(&path, JPEG).expect("write");
    let source = ImageSource::Path(path.clone());
    assert_eq!(
        &source.load(&RecordLimits::DEFAULT).expect("load")[..],
        JPEG
    );
    let small = RecordLimits {
        image_size_max_bytes: 3,
    };
    assert!(matches!(
        source.load(&small),
        Err(ImageError::Invalid(ValidationError::ImageTooLarge {
            size_bytes: 4,
            max_bytes: 3
        }))
    ));
    let missing = ImageSource::Path(dir.path().join("missing"));
    match missing.load(&RecordLimits::DEFAULT) {
        Err(ImageError::Unreadable { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
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
