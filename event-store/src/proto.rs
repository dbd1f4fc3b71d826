//! Code generated from `proto/`: the subset of the KurrentDB protocol the store serves.
#![allow(clippy::all, missing_docs)]

pub mod event_store {
    pub mod client {
        tonic::include_proto!("event_store.client");

        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
        pub mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }
        pub mod projections {
            tonic::include_proto!("event_store.client.projections");
        }
        pub mod operations {
            tonic::include_proto!("event_store.client.operations");
        }
        pub mod monitoring {
            tonic::include_proto!("event_store.client.monitoring");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use event_store::client as shared;
pub use event_store::client::persistent_subscriptions as persistent;
pub use event_store::client::{
    gossip, monitoring, operations, projections, server_features, streams,
};
