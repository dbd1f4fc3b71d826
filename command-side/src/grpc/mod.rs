//! The command side over gRPC: each handler checks every field (all problems at once, as
//! INVALID_ARGUMENT with a violation per field), asks the [`application`](crate::application),
//! and answers with a `CommandReply`; a `CommandError` becomes its status.

pub mod customers;
pub mod messages;
pub mod paymethods;
pub mod reservations;
