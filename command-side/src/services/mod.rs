//! The gRPC services. Each handler checks every field, runs the command through the
//! [`Executor`](command_core::execute::Executor), and answers with a `CommandReply`.

pub mod customer;
pub mod message;
pub mod paymethod;
pub mod reservation;
