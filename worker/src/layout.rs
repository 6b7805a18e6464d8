//! The queue directory layout, options and error live in the producer crate (a process
//! that only enqueues needs them too); this module gathers them for the worker's code.

pub(crate) use escalation_queue_producer::support::{create_private_dir, is_no_space};
pub(crate) use escalation_queue_producer::{
    Error, QueueLayout, QueueOptions, DEAD_LETTER_CURSOR, WORKER_CURSOR,
};
