//! The escalation record lives in the producer crate; this module gathers it for the
//! worker's code.

pub(crate) use escalation_queue_producer::support::python_float_repr;
pub(crate) use escalation_queue_producer::{Escalation, ImageError, ImageSource, ValidationError};
