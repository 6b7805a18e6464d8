//! What to do after an attempt: classification, backoff, the circuit breaker and per-item
//! budgets. Everything here is pure: time and randomness are passed in.

mod backoff;
mod breaker;
mod budget;
mod classify;
mod systemic;
mod wait;

pub use backoff::{Backoff, BackoffConfig};
pub use breaker::{Admission, BreakerConfig, CircuitBreaker, CircuitState};
pub use budget::{BudgetConfig, BudgetLimit, ItemBudget, DEFAULT_AGE_MAX_MS};
pub use classify::{
    Classification, ClassificationPolicy, DeadLetterReason, ErrorClass, PolicyAction,
};
pub use systemic::{RejectVerdict, RejectedItem, SystemicRejects};
pub use wait::{OutageReplay, Wait, WaitCause};
