//! The business of Cleaning Service Park (see `DOMAIN.md`) as pure aggregates.
//!
//! Each aggregate is plain data with two functions: `decide` turns a command into the events it
//! causes (or refuses it with a reason), and `apply` folds an event into the state. Nothing here
//! does I/O: services load a stream, fold it with `apply`, call `decide`, and append the result
//! with the stream's revision as the expected revision.
//!
//! Personal data travels in [`Personal`] values, which can be neither printed nor serialised as
//! they are: the adapter that writes events must seal them with the customer's key.

pub mod aggregate;
pub mod customer;
pub mod message;
pub mod payment;
pub mod paymethod;
pub mod reservation;
pub mod values;

pub use aggregate::Aggregate;
pub use values::{
    CustomerId, MaskedNumber, MessageId, Money, PaymentId, PaymethodId, PaymethodKind, Personal,
    ReservationId, ValueError,
};
