//! What to do after an attempt: classification, backoff, the circuit breaker and per-item
//! budgets. Everything here is pure: time and randomness are passed in.

mod backoff;
mod breaker;
mod budget;
mod class;
mod classify;
mod systemic;
mod wait;

pub use backoff::{Backoff, BackoffConfig};
pub use breaker::{Admission, BreakerConfig, CircuitBreaker, CircuitState};
pub use budget::{BudgetConfig, ItemBudget, DEFAULT_AGE_MAX_MS};
pub use class::{ErrorClass, ErrorClassOf};
pub use classify::{Classification, ClassificationPolicy, PolicyAction};
pub use escalation_queue_producer::dead_letter::DeadLetterReason;
pub use systemic::{RejectVerdict, RejectedItem, SystemicRejects};
pub use wait::{OutageReplay, Wait, WaitCause};
