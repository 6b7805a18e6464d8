//! Fault injection for [`MockCloud`](super::MockCloud): scripted actions, seeded random
//! faults and outage windows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the mock does with one request instead of (or around) answering it normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer normally.
    Pass,
    /// Answer `status` without processing the request (nothing is created).
    Respond {
        /// The status code.
        status: u16,
        /// A `Retry-After` header value, verbatim (seconds or an HTTP date).
        retry_after: Option<String>,
    },
    /// Process the request (an image query may be created), then wait `delay_ms` before
    /// answering: past the client's read timeout this is a lost response.
    Delay {
        /// The delay.
        delay_ms: u64,
    },
    /// Reset the connection (RST) after reading the request, without processing it.
    Reset,
    /// Process the request (the image query now exists), then close the connection without
    /// answering: the client never learns that it succeeded.
    DropResponse,
}

/// Faults drawn at random (from a seed, so runs are reproducible) for requests that no
/// scripted action covers. Rates are probabilities in `0..=1`, checked in field order.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// Seed of the generator.
    pub seed: u64,
    /// Rate of `503 Service Unavailable` answers.
    pub unavailable_rate: f64,
    /// Rate of connection resets.
    pub reset_rate: f64,
    /// Rate of accepted-then-dropped responses.
    pub drop_response_rate: f64,
    /// Rate of delayed answers.
    pub delay_rate: f64,
    /// Rate of `429 Too Many Requests` answers (with `Retry-After: 1`).
    pub rate_limited_rate: f64,
    /// The delay of delayed answers.
    pub delay_ms: u64,
}

/// How an outage window fails requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutageMode {
    /// Answer every request `503` with `Retry-After: 1`.
    ServiceUnavailable,
    /// Stop listening (connections are refused) and reset open connections.
    Refuse,
}

/// The initial fault configuration of a mock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Actions applied to the next requests, one each, in order.
    pub script: VecDeque<FaultAction>,
    /// Random faults for requests after the script runs out.
    pub random: Option<RandomFaults>,
}

impl FaultPlan {
    /// A plan that scripts `actions` for the next requests.
    pub fn scripted(actions: impl IntoIterator<Item = FaultAction>) -> Self {
        Self {
            script: actions.into_iter().collect(),
            random: None,
        }
    }
}

/// The live fault state, inside the mock's lock.
#[derive(Debug)]
pub(super) struct FaultState {
    script: VecDeque<FaultAction>,
    random: Option<(RandomFaults, fastrand::Rng)>,
    outage: Option<(Instant, OutageMode)>,
}

impl FaultState {
    pub(super) fn new(plan: FaultPlan) -> Self {
        let mut state = Self {
            script: plan.script,
            random: None,
            outage: None,
        };
        state.set_random(plan.random);
        state
    }

    pub(super) fn push(&mut self, actions: impl IntoIterator<Item = FaultAction>) {
        self.script.extend(actions);
    }

    pub(super) fn set_random(&mut self, random: Option<RandomFaults>) {
        self.random = random.map(|r| {
            let rng = fastrand::Rng::with_seed(r.seed);
            (r, rng)
        });
    }

    pub(super) fn start_outage(&mut self, now: Instant, duration: Duration, mode: OutageMode) {
        self.outage = Some((now + duration, mode));
    }

    pub(super) fn end_outage(&mut self) {
        self.outage = None;
    }

    /// The outage in force at `now`, clearing an expired one.
    pub(super) fn outage(&mut self, now: Instant) -> Option<OutageMode> {
        match self.outage {
            Some((until, mode)) if now < until => Some(mode),
            Some(_) => {
                self.outage = None;
                None
            }
            None => None,
        }
    }

    /// The action for the next request: an outage first, then the script, then chance.
    pub(super) fn next_action(&mut self, now: Instant) -> FaultAction {
        match self.outage(now) {
            Some(OutageMode::ServiceUnavailable) => {
                return FaultAction::Respond {
                    status: 503,
                    retry_after: Some("1".to_owned()),
                };
            }
            Some(OutageMode::Refuse) => return FaultAction::Reset,
            None => {}
        }
        if let Some(action) = self.script.pop_front() {
            return action;
        }
        match &mut self.random {
            Some((faults, rng)) => draw(faults, rng),
            None => FaultAction::Pass,
        }
    }
}

fn draw(faults: &RandomFaults, rng: &mut fastrand::Rng) -> FaultAction {
    let candidates = [
        (
            faults.unavailable_rate,
            FaultAction::Respond {
                status: 503,
                retry_after: None,
            },
        ),
        (faults.reset_rate, FaultAction::Reset),
        (faults.drop_response_rate, FaultAction::DropResponse),
        (
            faults.delay_rate,
            FaultAction::Delay {
                delay_ms: faults.delay_ms,
            },
        ),
        (
            faults.rate_limited_rate,
            FaultAction::Respond {
                status: 429,
                retry_after: Some("1".to_owned()),
            },
        ),
    ];
    let roll = rng.f64();
    let mut threshold = 0.0;
    for (rate, action) in candidates {
        threshold += rate.clamp(0.0, 1.0);
        if roll < threshold {
            return action;
        }
    }
    FaultAction::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_then_script_then_random() {
        let now = Instant::now();
        let mut state = FaultState::new(FaultPlan::scripted([FaultAction::Reset]));
        state.start_outage(
            now,
            Duration::from_millis(10),
            OutageMode::ServiceUnavailable,
        );
        assert!(matches!(
            state.next_action(now),
            FaultAction::Respond { status: 503, .. }
        ));
        let later = now + Duration::from_millis(10);
        assert_eq!(state.next_action(later), FaultAction::Reset);
        assert_eq!(state.next_action(later), FaultAction::Pass);
    }

    #[test]
    fn random_faults_follow_rates_and_seed() {
        let random = RandomFaults {
            seed: 7,
            unavailable_rate: 0.25,
            reset_rate: 0.25,
            drop_response_rate: 0.0,
            delay_rate: 0.0,
            rate_limited_rate: 0.2,
            delay_ms: 0,
        };
        let plan = FaultPlan {
            script: VecDeque::new(),
            random: Some(random),
        };
        let run = |plan: FaultPlan| {
            let mut state = FaultState::new(plan);
            (0..1000)
                .map(|_| state.next_action(Instant::now()))
                .collect::<Vec<_>>()
        };
        let a = run(plan.clone());
        assert_eq!(a, run(plan));
        let passes = a.iter().filter(|x| **x == FaultAction::Pass).count();
        assert!((200..400).contains(&passes), "{passes}");
        assert!(!a.contains(&FaultAction::DropResponse));
        // 429s come with the Retry-After a rate-limited client is told to honour.
        let rate_limited = a
            .iter()
            .filter(|x| {
                matches!(x, FaultAction::Respond { status: 429, retry_after: Some(r) } if r == "1")
            })
            .count();
        assert!((120..280).contains(&rate_limited), "{rate_limited}");
    }
}
