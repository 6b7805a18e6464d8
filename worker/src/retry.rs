//! What to do after an attempt: classification, backoff, the circuit breaker and per-item
//! budgets. Everything here is pure: time and randomness are passed in.

mod backoff;
mod breaker;
mod budget;
mod class;
mod classify;
mod reason;
mod systemic;
mod wait;

pub use backoff::{Backoff, BackoffConfig};
pub use breaker::{Admission, BreakerConfig, CircuitBreaker, CircuitState};
pub use budget::{BudgetConfig, ItemBudget, DEFAULT_AGE_MAX_MS};
pub use class::ErrorClass;
pub use classify::{Classification, ClassificationPolicy, PolicyAction};
pub use reason::DeadLetterReason;
pub use systemic::{RejectVerdict, RejectedItem, SystemicRejects};
pub use wait::{OutageReplay, Wait, WaitCause};
