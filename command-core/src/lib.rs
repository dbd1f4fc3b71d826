//! What every command service of Cleaning Service Park shares, so that each deployable (the
//! command side, payment) holds only its own commands:
//!
//! - [`execute`]: load an aggregate's stream, decide with the pure domain, append with the
//!   stream's revision as the expected revision, retry a lost race.
//! - [`store`]: the `kurrentdb` adapter; personal data sealed on the way in.
//! - [`request`]: who asks and what for (authorization, idempotency, correlation), and replies.
//! - [`errors`]: how a command fails, and the gRPC status each failure becomes.
//! - [`settings`], [`serve`]: the server every command service runs (health, reflection,
//!   tokens, overload shedding, tracing, graceful drain); [`drain`] and [`shed`] are its layers.

// `tonic::Status` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod drain;
pub mod errors;
pub mod execute;
pub mod request;
pub mod settings;
pub mod shed;
pub mod store;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::settings::{ServerSettings, TlsFiles};

/// The largest request message decoded: every command is a few fields of bounded text, so
/// anything near this is hostile. Larger ones are refused (OUT_OF_RANGE) before decoding.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often an idle connection is pinged, and how long the answer may take: a peer that stops
/// answering (a paused or vanished client) is found out and its connection closed, instead of
/// holding its streams open for ever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls at once on one connection; the instance-wide limit is `MAX_CONCURRENT_CALLS`.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The gRPC services one process serves, with the names health checks know them by. Each
/// deployable adds its own, so that several can be served together (park serves them all).
#[derive(Default)]
pub struct Services {
    names: Vec<&'static str>,
    routes: RoutesBuilder,
}

impl Services {
    /// Adds a generated service server (`FooServiceServer::new(..)`).
    pub fn with<S>(mut self, service: S) -> Services
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
}

/// Serves `services` on `listener` until `shutdown` completes: every call but health and
/// reflection needs a valid bearer token; overload is refused before anything is spent on it.
/// On shutdown the health service turns NOT_SERVING first, then the server keeps serving for
/// the drain delay, lets in-flight calls finish, and stops.
pub async fn serve(
    settings: &ServerSettings,
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let verifier =
        access::Verifier::new(settings.auth.clone()).map_err(|e| anyhow::anyhow!("AUTH: {e}"))?;
    // Keys are fetched now, not within the first calls' deadlines.
    tokio::spawn({
        let verifier = verifier.clone();
        async move { verifier.prefetch().await }
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &services.names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Error details (BadRequest, RetryInfo) are described too, so grpcurl can show them.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api_contract::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = if settings.reflection {
        (
            Some(reflection().build_v1()?),
            Some(reflection().build_v1alpha()?),
        )
    } else {
        (None, None)
    };

    // Replies leave at once; Nagle's algorithm would hold parts of them for up to 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let in_flight = drain::InFlight::default();
    let counting = in_flight.clone();
    let (drain_delay, grace) = (settings.drain_delay, settings.shutdown_grace);
    let names = services.names;
    let drain = async move {
        shutdown.await;
        tracing::info!(
            in_flight = counting.current(),
            "shutting down: reporting NOT_SERVING, then draining"
        );
        for service in std::iter::once("").chain(names) {
            health
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        tokio::time::sleep(drain_delay).await;
        counting.drained(grace).await;
    };
    let mut server = Server::builder();
    if let Some(tls) = &settings.tls {
        server = server.tls_config(server_tls(tls)?)?;
    }
    server
        .timeout(settings.call_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // Each call a span, continuing the caller's trace; refusals below are traced too.
        .layer(lifecycle::telemetry::ServerSpans {
            services: &api_contract::SERVICES,
        })
        .layer(in_flight)
        // Overload is refused before anything else is spent on it, even checking the token.
        .layer(shed::Shed::new(settings.max_concurrent_calls))
        .layer(access::grpc::RequireToken::new(verifier))
        .add_routes(services.routes.routes())
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    Ok(())
}

/// The server's certificate chain and key, read once at start.
fn server_tls(files: &TlsFiles) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let identity = tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// The event store client a service's executor writes through.
pub fn event_store_client(settings: &ServerSettings) -> anyhow::Result<kurrentdb::Client> {
    let parsed = settings
        .event_store_url
        .parse()
        .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?;
    kurrentdb::Client::new(parsed).map_err(|e| anyhow::anyhow!("event store client: {e}"))
}
