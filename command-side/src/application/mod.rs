//! The command side's commands, free of any transport: each takes checked values and the
//! request's context, runs through the one [`Executor`](command_core::execute::Executor) loop,
//! and answers with where it wrote. [`crate::grpc`] is their gRPC adapter.

pub mod customers;
pub mod messages;
pub mod paymethods;
pub mod reservations;
