//! The escalation record lives in the producer crate; this module gathers it for the
//! worker's code.

pub(crate) use escalation_queue_producer::support::python_float_repr;
pub(crate) use escalation_queue_producer::{
    new_image_query_id, Escalation, ImageError, ImageSource, ValidationError,
};
