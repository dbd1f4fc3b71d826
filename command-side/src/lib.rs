//! The command side of Cleaning Service Park: the gRPC services (package `cleaning.v1`) for
//! reservations, payment methods, messages and customers. Each loads an aggregate's stream,
//! decides with the pure domain and appends the new events (see [`command_core`]).
//!
//! - [`application`]: the commands (checked values in, where they wrote out), no transport.
//! - [`grpc`]: the four gRPC services: field checks, the application, replies.
//! - [`payments`], [`breaker`]: the synchronous call to the payment service (its own deployable,
//!   the `payment` crate), with a deadline and a circuit breaker.
//! - [`config`]: the settings.

// `tonic::Status` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod application;
pub mod breaker;
pub mod config;
pub mod grpc;
pub mod payments;

/// The contract this side serves (its own crate, so that clients need not depend on the server).
pub use api_contract as proto;

use std::future::Future;
use std::sync::Arc;

use command_core::execute::Executor;
use command_core::store::EventStore;
use command_core::{Services, MAX_MESSAGE_BYTES};
use events::KeyStore;
use tokio::net::TcpListener;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::payments::PaymentGateway;
use crate::proto::customer_service_server::CustomerServiceServer;
use crate::proto::message_service_server::MessageServiceServer;
use crate::proto::paymethod_service_server::PaymethodServiceServer;
use crate::proto::reservation_service_server::ReservationServiceServer;

/// `services` and the command side's four, writing to the event store `config` names and
/// sealing personal data with `keys`.
pub fn services<K: KeyStore>(
    config: &Config,
    keys: Arc<K>,
    services: Services,
) -> anyhow::Result<Services> {
    let executor = Arc::new(Executor {
        store: EventStore::new(command_core::event_store_client(&config.server)?, keys),
        retries: config.server.concurrency_retries,
    });
    // The call to payment is made with this service's own identity.
    let own_identity =
        access::client::ServiceToken::new(config.server.auth.clone(), config.client.clone())
            .map_err(|e| anyhow::anyhow!("AUTH_CLIENT: {e}"))?;
    // The own token is fetched now, not within the first calls' deadlines.
    tokio::spawn({
        let own_identity = own_identity.clone();
        async move {
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
        config.server.auth.ca_file.as_deref(),
    )?);
    let reservations = application::reservations::Reservations {
        executor: executor.clone(),
        payments: gateway.clone(),
    };
    let paymethods = application::paymethods::Paymethods {
        executor: executor.clone(),
        payments: gateway,
    };
    let messages = application::messages::Messages {
        executor: executor.clone(),
    };
    let customers = application::customers::Customers { executor };
    let limited = MAX_MESSAGE_BYTES;
    Ok(services
        .with(
            ReservationServiceServer::new(grpc::reservations::ReservationsOverGrpc(Arc::new(
                reservations,
            )))
            .max_decoding_message_size(limited),
        )
        .with(
            PaymethodServiceServer::new(grpc::paymethods::PaymethodsOverGrpc(Arc::new(paymethods)))
                .max_decoding_message_size(limited),
        )
        .with(
            MessageServiceServer::new(grpc::messages::MessagesOverGrpc(Arc::new(messages)))
                .max_decoding_message_size(limited),
        )
        .with(
            CustomerServiceServer::new(grpc::customers::CustomersOverGrpc(Arc::new(customers)))
                .max_decoding_message_size(limited),
        ))
}

/// Serves the command side's services on `listener` until `shutdown` completes (see
/// [`command_core::serve`]).
pub async fn serve<K: KeyStore>(
    config: Config,
    keys: Arc<K>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let services = services(&config, keys, Services::default())?;
    command_core::serve(&config.server, services, listener, shutdown).await
}
