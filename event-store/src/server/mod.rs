//! The gRPC server: the KurrentDB services over one store.

// `tonic::Status` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod auth;
mod connection;
pub mod convert;
mod discovery;
mod errors;
pub mod filter;
mod health;
mod operations;
mod persistent;
mod projections;
pub(crate) mod read;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::Credentials;
pub use convert::AppendLimits;
pub use discovery::SERVER_VERSION;

use crate::proto::gossip::gossip_server::GossipServer;
use crate::proto::monitoring::monitoring_server::MonitoringServer;
use crate::proto::operations::operations_server::OperationsServer;
use crate::proto::persistent::persistent_subscriptions_server::PersistentSubscriptionsServer;
use crate::proto::projections::projections_server::ProjectionsServer;
use crate::proto::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::streams::streams_server::StreamsServer;
use crate::storage::Store;

/// How the server is exposed. The default: plaintext, no credentials, the default limits, no
/// system projections.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Certificate and key (PEM) to serve TLS; plaintext HTTP/2 when absent.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The one user allowed in; every caller is when absent.
    pub credentials: Option<Credentials>,
    pub limits: AppendLimits,
    /// Runs the system projections (`$ce-`, `$et-`, `$streams`, `$category-`) and serves the
    /// `Projections` service. Off by default, as on the real server (`RunProjections=None`):
    /// their links double the writes behind every append, for readers few applications have.
    pub system_projections: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the persistent subscriptions: {0}")]
    Persistent(#[from] crate::persistent::PersistentError),
    #[error("cannot start the system projections: {0}")]
    Projections(#[from] crate::projections::ProjectionError),
    #[error("cannot read the TLS files: {0}")]
    Tls(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot read the listener's address: {0}")]
    Address(std::io::Error),
}

/// Serves until `shutdown` completes, then stops accepting, ends live subscriptions and lets
/// in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let address: SocketAddr = listener.local_addr().map_err(ServeError::Address)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let authenticate = auth::Authenticate(options.credentials.clone());
    let discovery = || discovery::Discovery {
        advertised: address,
        instance_id: 0x4b75_7272_656e_7444_4265_6d62_6564_6465,
        projections: options.system_projections,
    };
    let subsystem = crate::persistent::Subsystem::start(store.clone(), stop_rx.clone()).await?;
    let projections = if options.system_projections {
        let running =
            crate::projections::SystemProjections::start(store.clone(), stop_rx.clone()).await?;
        Some(tonic::service::interceptor::InterceptedService::new(
            ProjectionsServer::new(projections::ProjectionsService::new(running)),
            authenticate.clone(),
        ))
    } else {
        None
    };
    // `Operations.Shutdown` stops the server as the caller's shutdown does.
    let shutdown_requested = std::sync::Arc::new(tokio::sync::Notify::new());
    let operations = operations::OperationsService::new(
        store.clone(),
        subsystem.clone(),
        shutdown_requested.clone(),
    );
    let monitoring = operations::MonitoringService {
        store: store.clone(),
        started: std::time::SystemTime::now(),
        shutdown: stop_rx.clone(),
    };
    let persistent = persistent::PersistentService::new(subsystem, stop_rx.clone());
    let streams = streams::StreamsService::new(store, options.limits, stop_rx);
    // An event may be as large as the limit, plus its envelope.
    let max_message = options.limits.max_event_size + 1024 * 1024;

    let mut builder = Server::builder()
        // HTTP/1.1 too, for `GET /health/live`; gRPC stays on HTTP/2.
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some((cert, key)) = &options.tls {
        lifecycle::install_crypto_provider();
        let cert = std::fs::read(cert).map_err(ServeError::Tls)?;
        let key = std::fs::read(key).map_err(ServeError::Tls)?;
        builder =
            builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let router = builder
        .add_service(health::Health)
        .add_service(ServerFeaturesServer::new(discovery()))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            GossipServer::new(discovery()),
            authenticate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            PersistentSubscriptionsServer::new(persistent).max_encoding_message_size(max_message),
            authenticate.clone(),
        ))
        .add_optional_service(projections)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            OperationsServer::new(operations),
            authenticate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            MonitoringServer::new(monitoring),
            authenticate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            StreamsServer::new(streams)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            authenticate,
        ));
    let incoming =
        TcpListenerStream::new(listener).map(|accepted| accepted.map(connection::Connection::new));
    router
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = shutdown => {}
                _ = shutdown_requested.notified() => {}
            }
            let _ = stop_tx.send(true);
        })
        .await?;
    Ok(())
}
