//! `mock-cloud`: the worker crate's [`MockCloud`] as a standalone server, with faults
//! from flags. Prints `listening on http://IP:PORT/device-api` first, and on SIGTERM or
//! SIGINT one JSON line summarising what it received (for tests and demos).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use escalation_queue::worker::{FaultAction, FaultPlan, OutageMode, RandomFaults};
use escalation_queue::{MockCloud, MockCloudConfig};

use crate::cli::{FaultArgs, MockCloudArgs, OutageArg};
use crate::config::env_vars;
use crate::exit::{Exit, UsageError};
use crate::shutdown::Shutdown;

/// Runs `mock-cloud`.
pub fn mock_cloud(args: &MockCloudArgs) -> anyhow::Result<ExitCode> {
    let read_token_file = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| UsageError::new(format!("--token-file {}: {e}", path.display())))
    };
    let from_file = args
        .token_file
        .as_deref()
        .map(read_token_file)
        .transpose()?;
    let token = from_file
        .clone()
        .or_else(|| args.token.clone())
        .or_else(|| {
            std::env::var(env_vars::API_TOKEN)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .unwrap_or_else(|| MockCloudConfig::DEFAULT_TOKEN.to_owned());
    let mut config = MockCloudConfig::new(token);
    config.bind_addr = args.listen;
    config.faults = fault_plan(&args.faults)?;
    config.rejected_detectors = args.faults.reject_detector.clone();
    let shutdown = Shutdown::install()?;
    let mut cloud = MockCloud::start(config).map_err(|e| {
        UsageError::new(format!("cannot listen on {} (--listen): {e}", args.listen))
    })?;
    println!("listening on {}", cloud.endpoint());
    tracing::info!(endpoint = %cloud.endpoint(), "mock cloud started; stop it with SIGTERM or SIGINT");
    let faults = &args.faults;
    if faults.outage_ms > 0 {
        let started = Instant::now();
        let at = Duration::from_millis(faults.outage_after_ms);
        if !shutdown.sleep(at.saturating_sub(started.elapsed())) {
            let mode = match faults.outage_mode {
                OutageArg::Unavailable => OutageMode::ServiceUnavailable,
                OutageArg::Refuse => OutageMode::Refuse,
            };
            tracing::warn!(outage_ms = faults.outage_ms, ?mode, "outage starts");
            cloud.start_outage(Duration::from_millis(faults.outage_ms), mode);
        }
    }
    match &args.token_file {
        Some(path) => {
            let mut accepted = from_file.unwrap_or_default();
            while !shutdown.sleep(Duration::from_millis(100)) {
                match read_token_file(path) {
                    Ok(token) if token != accepted && !token.is_empty() => {
                        tracing::info!("mock cloud: the token changed (--token-file)");
                        cloud.set_api_token(token.clone());
                        accepted = token;
                    }
                    _ => {}
                }
            }
        }
        None => while !shutdown.sleep(Duration::from_secs(3600)) {},
    }
    cloud.shutdown();
    let requests = cloud.requests();
    let summary = serde_json::json!({
        "requests": requests.len(),
        "token_mismatches": requests.iter().filter(|r| !r.token_matched).count(),
        "image_query_ids": cloud.image_query_ids(),
        "resubmissions": resubmissions(&requests),
        "lookups": requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/v1/image-queries/"))
            .count(),
    });
    println!("{summary}");
    Ok(Exit::Ok.into())
}

/// Submissions of an image query id the mock had already created (duplicates it received).
fn resubmissions(requests: &[escalation_queue::worker::RecordedRequest]) -> usize {
    let mut created = std::collections::HashSet::new();
    let mut again = 0;
    for r in requests.iter().filter(|r| r.method == "POST") {
        if r.param("image_query_id")
            .is_some_and(|id| created.contains(id))
        {
            again += 1;
        }
        if let Some(id) = &r.created_image_query_id {
            created.insert(id.clone());
        }
    }
    again
}

fn fault_plan(f: &FaultArgs) -> Result<FaultPlan, UsageError> {
    let rates = [
        ("--unavailable-rate", f.unavailable_rate),
        ("--too-many-requests-rate", f.too_many_requests_rate),
        ("--reset-rate", f.reset_rate),
        ("--drop-response-rate", f.drop_response_rate),
        ("--timeout-rate", f.timeout_rate),
    ];
    for (flag, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(UsageError::new(format!("{flag} {rate}: allowed 0 to 1")));
        }
    }
    let sum: f64 = rates.iter().map(|(_, r)| r).sum();
    if sum > 1.0 + 1e-9 {
        return Err(UsageError::new(format!(
            "the fault rates add up to {sum}; allowed: at most 1"
        )));
    }
    let script = f
        .script
        .iter()
        .map(|s| parse_action(s))
        .collect::<Result<std::collections::VecDeque<_>, _>>()?;
    let random = RandomFaults {
        seed: f.seed,
        unavailable_rate: f.unavailable_rate,
        reset_rate: f.reset_rate,
        drop_response_rate: f.drop_response_rate,
        delay_rate: f.timeout_rate,
        rate_limited_rate: f.too_many_requests_rate,
        delay_ms: f.timeout_delay_ms,
    };
    let any_random = sum > 0.0;
    Ok(FaultPlan {
        script,
        random: any_random.then_some(random),
    })
}

fn parse_action(text: &str) -> Result<FaultAction, UsageError> {
    let text = text.trim();
    let bad = || {
        UsageError::new(format!(
            "--script {text:?}: expected pass, reset, drop, delay:MS or an HTTP status 100-599"
        ))
    };
    match text {
        "pass" => Ok(FaultAction::Pass),
        "reset" => Ok(FaultAction::Reset),
        "drop" => Ok(FaultAction::DropResponse),
        _ => {
            if let Some(ms) = text.strip_prefix("delay:") {
                let delay_ms = ms.parse().map_err(|_| bad())?;
                return Ok(FaultAction::Delay { delay_ms });
            }
            let status: u16 = text.parse().map_err(|_| bad())?;
            if !(100..=599).contains(&status) {
                return Err(bad());
            }
            let retry_after = (status == 429).then(|| "1".to_owned());
            Ok(FaultAction::Respond {
                status,
                retry_after,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_actions_parse_and_bad_ones_are_named() {
        assert_eq!(parse_action("pass").expect("pass"), FaultAction::Pass);
        assert_eq!(
            parse_action("delay:50").expect("delay"),
            FaultAction::Delay { delay_ms: 50 }
        );
        assert!(matches!(
            parse_action("400").expect("status"),
            FaultAction::Respond {
                status: 400,
                retry_after: None
            }
        ));
        let err = parse_action("sometimes").expect_err("bad");
        assert!(err.to_string().contains("\"sometimes\""));
    }
}
