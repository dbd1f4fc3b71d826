//! `ServerFeatures` and `Gossip`: how a client learns what it is talking to.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

use super::convert::{uuid_to_proto, UuidFormat};
use crate::proto::gossip::{
    gossip_server::Gossip, member_info::VNodeState, ClusterInfo, EndPoint, MemberInfo,
};
use crate::proto::server_features::{
    server_features_server::ServerFeatures, SupportedMethod, SupportedMethods,
};
use crate::proto::shared::Empty;
use crate::storage::now_ticks;

/// The KurrentDB version whose behaviour the store follows; clients gate features on it.
pub const SERVER_VERSION: &str = "25.1.0";

pub struct Discovery {
    pub advertised: SocketAddr,
    pub instance_id: u128,
    /// Whether the `Projections` service is served.
    pub projections: bool,
}

#[tonic::async_trait]
impl ServerFeatures for Discovery {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        const STREAMS: &str = "event_store.client.streams.streams";
        let method = |name: &str, service: &str, features: &[&str]| SupportedMethod {
            method_name: name.into(),
            service_name: service.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        };
        const PERSISTENT: &str =
            "event_store.client.persistent_subscriptions.persistentsubscriptions";
        // Only what is served, as the real server lists it.
        let mut methods = vec![
            method("read", STREAMS, &["position", "events"]),
            method("append", STREAMS, &[]),
            method("delete", STREAMS, &[]),
            method("tombstone", STREAMS, &[]),
            method("batchappend", STREAMS, &["deadline_duration"]),
            method("read", "event_store.client.gossip.gossip", &[]),
            method(
                "getsupportedmethods",
                "event_store.client.server_features.serverfeatures",
                &[],
            ),
        ];
        for name in [
            "create",
            "update",
            "delete",
            "read",
            "getinfo",
            "replayparked",
            "list",
            "restartsubsystem",
        ] {
            methods.push(method(name, PERSISTENT, &["stream", "all"]));
        }
        const OPERATIONS: &str = "event_store.client.operations.operations";
        for name in [
            "startscavenge",
            "stopscavenge",
            "shutdown",
            "mergeindexes",
            "resignnode",
            "setnodepriority",
            "restartpersistentsubscriptions",
        ] {
            methods.push(method(name, OPERATIONS, &[]));
        }
        methods.push(method(
            "stats",
            "event_store.client.monitoring.monitoring",
            &[],
        ));
        if self.projections {
            // Every method of the service, as the real server lists what it registered; create
            // is served (to refuse user projections), with the feature the real one names.
            const PROJECTIONS: &str = "event_store.client.projections.projections";
            methods.push(method("create", PROJECTIONS, &["track_emitted_streams"]));
            for name in [
                "update",
                "delete",
                "statistics",
                "disable",
                "enable",
                "reset",
                "state",
                "result",
                "restartsubsystem",
            ] {
                methods.push(method(name, PROJECTIONS, &[]));
            }
        }
        Ok(Response::new(SupportedMethods {
            methods,
            event_store_server_version: SERVER_VERSION.into(),
        }))
    }
}

#[tonic::async_trait]
impl Gossip for Discovery {
    async fn read(&self, _request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let member = MemberInfo {
            instance_id: Some(uuid_to_proto(self.instance_id, UuidFormat::Structured)),
            time_stamp: now_ticks(),
            state: VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(EndPoint {
                address: self.advertised.ip().to_string(),
                port: self.advertised.port() as u32,
            }),
        };
        Ok(Response::new(ClusterInfo {
            members: vec![member],
        }))
    }
}
