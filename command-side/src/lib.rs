//! The command side of Cleaning Service Park: gRPC services (package `cleaning.v1`) that load an
//! aggregate's stream, decide with the pure domain, and append the new events with the
//! stream's revision as the expected revision.
//!
//! - [`services`]: the five services, field checks and replies.
//! - [`execute`]: load, decide, append, retry a lost race.
//! - [`store`]: the `kurrentdb` adapter; personal data sealed on the way in.
//! - [`payments`], [`breaker`], [`provider`]: the synchronous call to the payment service, and
//!   the simulated provider behind it.

// `tonic::Status` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod breaker;
pub mod config;
pub mod drain;
pub mod errors;
pub mod execute;
pub mod payments;
pub mod provider;
pub mod services;
pub mod shed;
pub mod store;

/// The contract this side serves (its own crate, so that clients need not depend on the server).
pub use api_contract as proto;

use std::future::Future;
use std::sync::Arc;

use events::KeyStore;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::breaker::Breaker;
use crate::config::{Config, TlsFiles};
use crate::execute::Executor;
use crate::payments::PaymentGateway;
use crate::proto::customer_service_server::CustomerServiceServer;
use crate::proto::message_service_server::MessageServiceServer;
use crate::proto::payment_service_server::PaymentServiceServer;
use crate::proto::paymethod_service_server::PaymethodServiceServer;
use crate::proto::reservation_service_server::ReservationServiceServer;
use crate::provider::Provider;
use crate::store::EventStore;

/// The services this process serves, as health checks name them.
pub const SERVICES: [&str; 5] = [
    "cleaning.v1.ReservationService",
    "cleaning.v1.PaymentService",
    "cleaning.v1.PaymethodService",
    "cleaning.v1.MessageService",
    "cleaning.v1.CustomerService",
];

/// Serves every command service on `listener` until `shutdown` completes. On shutdown the
/// health service turns NOT_SERVING first, then the server stops accepting and lets in-flight
/// calls finish.
pub async fn serve<K: KeyStore>(
    config: Config,
    keys: Arc<K>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let settings = config
        .event_store_url
        .parse()
        .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?;
    let client =
        kurrentdb::Client::new(settings).map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let executor = Arc::new(Executor {
        store: EventStore::new(client, keys),
        retries: config.concurrency_retries,
    });
    // Every call but health and reflection needs a valid bearer token.
    let verifier =
        access::Verifier::new(config.auth.clone()).map_err(|e| anyhow::anyhow!("AUTH: {e}"))?;
    // The call to payment is made with this service's own identity.
    let own_identity =
        access::client::ServiceToken::new(config.auth.clone(), config.client.clone())
            .map_err(|e| anyhow::anyhow!("AUTH_CLIENT: {e}"))?;
    // Keys and the own token are fetched now, not within the first calls' deadlines.
    tokio::spawn({
        let (verifier, own_identity) = (verifier.clone(), own_identity.clone());
        async move {
            verifier.prefetch().await;
            if let Err(e) = own_identity.token().await {
                tracing::warn!(error = %e, "cannot get this service's own token yet");
            }
        }
    });
    let gateway = Arc::new(PaymentGateway::new(
        &config.payment_endpoint,
        config.payment_timeout,
        Breaker::new(config.breaker_failures, config.breaker_open),
        access::client::Credentials::Service(own_identity),
        config.auth.ca_file.as_deref(),
    )?);
    let provider = Arc::new(Provider::new(config.provider.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ReservationServiceServer<services::reservation::Reservations<K>>>()
        .await;
    health
        .set_serving::<PaymentServiceServer<services::payment::Payments<K>>>()
        .await;
    health
        .set_serving::<PaymethodServiceServer<services::paymethod::Paymethods<K>>>()
        .await;
    health
        .set_serving::<MessageServiceServer<services::message::Messages<K>>>()
        .await;
    health
        .set_serving::<CustomerServiceServer<services::customer::Customers<K>>>()
        .await;
    // Error details (BadRequest, RetryInfo) are described too, so grpcurl can show them.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
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
    let (drain_delay, grace) = (config.drain_delay, config.shutdown_grace);
    let drain = async move {
        shutdown.await;
        tracing::info!(
            in_flight = counting.current(),
            "shutting down: reporting NOT_SERVING, then draining"
        );
        for service in std::iter::once("").chain(SERVICES) {
            health
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        tokio::time::sleep(drain_delay).await;
        counting.drained(grace).await;
    };
    let mut server = Server::builder();
    if let Some(tls) = &config.tls {
        server = server.tls_config(server_tls(tls)?)?;
    }
    server
        .timeout(config.payment_timeout * 4 + std::time::Duration::from_secs(5))
        // A peer that stops answering (a paused or vanished client) is found out and its
        // connection closed, instead of holding its streams open for ever.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // Each call a span, continuing the caller's trace; refusals below are traced too.
        .layer(lifecycle::telemetry::ServerSpans {
            services: &SERVICES,
        })
        .layer(in_flight)
        // Overload is refused before anything else is spent on it, even checking the token.
        .layer(shed::Shed::new(config.max_concurrent_calls))
        .layer(access::grpc::RequireToken::new(verifier))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(
            ReservationServiceServer::new(services::reservation::Reservations {
                executor: executor.clone(),
                payments: gateway.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            PaymentServiceServer::new(services::payment::Payments {
                executor: executor.clone(),
                provider,
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            PaymethodServiceServer::new(services::paymethod::Paymethods {
                executor: executor.clone(),
                payments: gateway,
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            MessageServiceServer::new(services::message::Messages {
                executor: executor.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            CustomerServiceServer::new(services::customer::Customers { executor })
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    Ok(())
}

/// The largest request message decoded: every command is a few fields of bounded text, so
/// anything near this is hostile. Larger ones are refused (OUT_OF_RANGE) before decoding.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often an idle connection is pinged, and how long the answer may take.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Calls at once on one connection; the instance-wide limit is `MAX_CONCURRENT_CALLS`.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The server's certificate chain and key, read once at start.
fn server_tls(files: &TlsFiles) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let identity = tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}
