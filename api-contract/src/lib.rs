//! The external gRPC contract of Cleaning Service Park, package `cleaning.v1`
//! (`proto/cleaning/v1/commands.proto`), generated once. The command side serves it; its
//! clients (the policies, the benchmarks, chaos) depend on this crate, not on the server.

tonic::include_proto!("cleaning.v1");

/// For server reflection: grpcurl lists and calls everything without .proto files.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cleaning_v1_descriptor");
