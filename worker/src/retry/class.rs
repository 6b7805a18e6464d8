//! Which [`ErrorClass`] a delivery error is. The class itself is data of the producer crate
//! (dead-letter entries store it, and what reads them links no HTTP client); telling it from
//! a [`DeliveryError`] needs the client, so it is here.

pub use escalation_queue_producer::dead_letter::ErrorClass;

use crate::client::DeliveryError;

/// The class of a delivery error: `ErrorClass::of(&error)` (with this trait in scope).
pub trait ErrorClassOf {
    /// The class of `error`.
    fn of(error: &DeliveryError) -> Self;
}

impl ErrorClassOf for ErrorClass {
    fn of(error: &DeliveryError) -> Self {
        match error {
            DeliveryError::Http { status, .. } => Self::of_status(*status),
            DeliveryError::Timeout { .. } => Self::Timeout,
            DeliveryError::BadResponse { .. } => Self::BadResponse,
            DeliveryError::WrongImageQuery { .. } => Self::WrongImageQuery,
            DeliveryError::ImageUnavailable { .. } => Self::ImageUnavailable,
            DeliveryError::Request { .. } => Self::RequestBuild,
            _ => Self::Network,
        }
    }
}
