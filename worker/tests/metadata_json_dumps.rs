//! Our metadata text and its length against CPython's own `json.dumps`, run as a subprocess.
//!
//! Story: the Groundlight SDK (>= 0.14, the 0.30.x edge-endpoint pins, 1.x) refuses metadata
//! when `len(json.dumps(metadata)) > 1024`, and edge-endpoint fills metadata up to exactly
//! 1024. If our length differed from Python's by a single character, an escalation the SDK
//! accepts would be refused at enqueue (lost), or one the SDK refuses would be queued and
//! dead-lettered later. So the rendering is checked against the real interpreter, not
//! against expectations written by hand.
//!
//! Needs `python3` on PATH. Without it the test fails when `CI=true` and otherwise prints why
//! it checked nothing.

use std::io::Write as _;
use std::process::{Command, Stdio};

use escalation_queue_worker::Metadata;

/// JSON texts that stress every part of `json.dumps`: separators, nesting, string escapes,
/// `ensure_ascii` (BMP, astral, control, DEL, U+2028), float `repr` at every exponent
/// boundary and hard-to-round inputs, and integers at the 64-bit edges.
const CASES: &[&str] = &[
    r#"{}"#,
    r#"{"a": {}, "b": [], "c": [[], {}, [[]]]}"#,
    r#"{"is_edge_audit": true, "edge_result": {"confidence": 0.97, "label": 0, "text": null, "rois": [{"label": "person", "score": 0.875, "geometry": {"left": 0.1, "top": 0.2, "right": 0.30000000000000004, "bottom": 1.0, "x": 0.2, "y": 0.6}}], "raw_primary_confidence": 0.9712345678901234, "mlb_key": "det_2UOxalD1gegjk4TnyLbtGggiJ8p"}}"#,
    r#"{"t": true, "f": false, "n": null, "nested": {"deeper": {"deepest": [1, [2, [3, [4]]]]}}}"#,
    "{\"k\": \"\u{e9}\u{fc}\u{df}\", \"cjk\": \"\u{6f22}\u{5b57}\", \"\u{1F600}\": \"\u{1F600}\u{10FFFF}\"}",
    r#"{"escaped": "\ud83d\ude00 \u00e9 \u2028 \u2029 \uffff \u0080"}"#,
    r#"{"controls": "\u0000\u0001\u001f\u007f", "short": "\"\\\/\b\f\n\r\t", "slash": "a/b"}"#,
    r#"{"spaces in key": " leading and trailing ", "": "", "quote\"key": "x"}"#,
    r#"{"f": [0.1, 0.2, 0.30000000000000004, 1.0, -1.5, 100.0, 1e2, 1E+2, 2.5e-7]}"#,
    r#"{"exp": [1e-4, 1e-5, 0.0001, 0.00001, 1e15, 1e16, 1.5e16, 9999999999999998.0, 1e21, 1e22, 1e23]}"#,
    r#"{"edge": [5e-324, 2.2250738585072014e-308, 2.2250738585072011e-308, 1.7976931348623157e308, -0.0, 0.0]}"#,
    r#"{"hard": [1.00000000000000011102230246251565404236316680908203125, 7.2057594037927933e16, 8.98846567431158e307, 1.2345678901234567e-300, 123456789.123456789, 0.1e-300]}"#,
    r#"{"long": [3.141592653589793238462643383279, 2.718281828459045235360287471352662497757, 12345678901234567890e5, 0.000000000000000000000000000000001]}"#,
    r#"{"ints": [0, -0, 1, -1, 9007199254740993, 9223372036854775807, -9223372036854775808, 18446744073709551615]}"#,
    r#"{"zeros": [-0, -0.0, 0, [-0], {"z": -0}], "s": "-0", "q": "\"-0"}"#,
    r#"{"dup": 1, "dup": 2}"#,
];

/// A Python program: reads a JSON list of texts on stdin and prints, per text,
/// `[len(json.dumps(v)), json.dumps(v, sort_keys=True)]` of `v = json.loads(text)`.
const PYTHON: &str = r#"
import json, sys
texts = json.load(sys.stdin)
out = []
for t in texts:
    v = json.loads(t)
    out.append([len(json.dumps(v)), json.dumps(v, sort_keys=True)])
json.dump(out, sys.stdout)
"#;

/// Runs `python3` on [`CASES`]; `None` when there is no interpreter.
fn python_json_dumps(cases: &[&str]) -> Option<Vec<(usize, String)>> {
    let spawned = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "python3 is not installed; CI=true requires it for this test"
            );
            eprintln!("SKIPPED: python3 is not on PATH, nothing compared (set CI=true to fail)");
            return None;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    let input = serde_json::to_vec(cases).expect("cases as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write to python3");
    let output = child.wait_with_output().expect("python3 ran");
    assert!(output.status.success(), "python3 failed: {}", output.status);
    let parsed: Vec<(usize, String)> =
        serde_json::from_slice(&output.stdout).expect("python3 printed JSON");
    assert_eq!(parsed.len(), cases.len());
    Some(parsed)
}

/// Every case renders to Python's exact text (ours sorts keys, so we compare with
/// `sort_keys=True`) and to Python's exact length in insertion order.
#[test]
fn metadata_text_and_length_match_cpython_json_dumps() {
    let Some(python) = python_json_dumps(CASES) else {
        return;
    };
    let mut mismatches = Vec::new();
    for (case, (python_len, python_sorted)) in CASES.iter().zip(python) {
        let metadata = Metadata::from_json_str(case).expect("case is valid metadata");
        let ours = metadata.to_python_json();
        if ours != python_sorted || metadata.python_json_len() != python_len {
            mismatches.push(format!(
                "case {case}\n  python len {python_len}: {python_sorted}\n  ours   len {}: {ours}",
                metadata.python_json_len()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The limit itself, measured by Python: texts of exactly 1024 and 1025 `json.dumps`
/// characters, padded with non-ASCII so that escapes count.
#[test]
fn metadata_at_the_sdk_limit_is_measured_as_python_measures_it() {
    // '{"k": "' + 'x' * n + '\u00e9' + '"}': 7 + n + 6 + 2 characters.
    let at_limit = format!("{{\"k\": \"{}\u{e9}\"}}", "x".repeat(1024 - 15));
    let over_limit = format!("{{\"k\": \"{}\u{e9}\"}}", "x".repeat(1025 - 15));
    let at = Metadata::from_json_str(&at_limit).expect("metadata");
    let over = Metadata::from_json_str(&over_limit).expect("metadata");
    assert_eq!((at.python_json_len(), over.python_json_len()), (1024, 1025));
    let Some(python) = python_json_dumps(&[&at_limit, &over_limit]) else {
        return;
    };
    assert_eq!((python[0].0, python[1].0), (1024, 1025));
}
