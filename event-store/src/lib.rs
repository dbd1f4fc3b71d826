//! An embedded event store that speaks the KurrentDB gRPC protocol.
//!
//! The official `kurrentdb` client connects to it as to a single-node KurrentDB server
//! (`esdb://127.0.0.1:2113?tls=false`). Tests and local runs use it; production points the same
//! client at a real cluster.
//!
//! - [`storage`]: durable, crash-safe storage with group commit, on `redb`.
//! - [`server`]: the gRPC services over it.
//! - [`persistent`]: persistent subscriptions, the consumer groups the store keeps.
//! - [`projections`]: the system projections (`$ce-`, `$et-`, `$streams`, `$category-`), run
//!   natively.

pub mod persistent;
pub mod projections;
pub mod proto;
pub mod server;
pub mod storage;
