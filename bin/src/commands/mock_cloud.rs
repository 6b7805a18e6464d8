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

/// Requests for which 429s are drawn up front (the mock's random faults have no 429).
const DRAWN_REQUESTS: usize = 100_000;

/// Runs `mock-cloud`.
pub fn mock_cloud(args: &MockCloudArgs) -> anyhow::Result<ExitCode> {
    let token = args
        .token
        .clone()
        .or_else(|| {
            std::env::var(env_vars::API_TOKEN)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .unwrap_or_else(|| "mock-token".to_owned());
    let mut config = MockCloudConfig::new(token);
    config.bind_addr = args.listen;
    config.faults = fault_plan(&args.faults)?;
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
    while !shutdown.sleep(Duration::from_secs(3600)) {}
    cloud.shutdown();
    let requests = cloud.requests();
    let summary = serde_json::json!({
        "requests": requests.len(),
        "token_mismatches": requests.iter().filter(|r| !r.token_matched).count(),
        "image_query_ids": cloud.image_query_ids(),
    });
    println!("{summary}");
    Ok(Exit::Ok.into())
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
    let mut script = f
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
        delay_ms: f.timeout_delay_ms,
    };
    if f.too_many_requests_rate > 0.0 {
        script.extend(draw_with_429(&random, f.too_many_requests_rate));
    }
    let any_random = sum > 0.0;
    Ok(FaultPlan {
        script,
        random: any_random.then_some(random),
    })
}

/// Pre-draws actions for [`DRAWN_REQUESTS`] requests, 429s included.
fn draw_with_429(random: &RandomFaults, rate_429: f64) -> Vec<FaultAction> {
    let mut state = random.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*: enough for fault injection.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1_u64 << 53) as f64
    };
    let table = [
        (
            rate_429,
            FaultAction::Respond {
                status: 429,
                retry_after: Some("1".into()),
            },
        ),
        (
            random.unavailable_rate,
            FaultAction::Respond {
                status: 503,
                retry_after: None,
            },
        ),
        (random.reset_rate, FaultAction::Reset),
        (random.drop_response_rate, FaultAction::DropResponse),
        (
            random.delay_rate,
            FaultAction::Delay {
                delay_ms: random.delay_ms,
            },
        ),
    ];
    (0..DRAWN_REQUESTS)
        .map(|_| {
            let roll = next();
            let mut threshold = 0.0;
            for (rate, action) in &table {
                threshold += rate;
                if roll < threshold {
                    return action.clone();
                }
            }
            FaultAction::Pass
        })
        .collect()
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

    #[test]
    fn drawn_429s_follow_the_rate() {
        let random = RandomFaults {
            seed: 3,
            unavailable_rate: 0.0,
            reset_rate: 0.0,
            drop_response_rate: 0.0,
            delay_rate: 0.0,
            delay_ms: 0,
        };
        let drawn = draw_with_429(&random, 0.25);
        let n429 = drawn
            .iter()
            .filter(|a| matches!(a, FaultAction::Respond { status: 429, .. }))
            .count();
        assert!((20_000..30_000).contains(&n429), "{n429}");
    }
}
