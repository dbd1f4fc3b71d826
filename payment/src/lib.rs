//! The payment service of Cleaning Service Park (`cleaning.v1.PaymentService`): asks the
//! payment provider (simulated, [`provider`]), records its answer in the payment's stream,
//! refunds, and checks payment methods ([`application`]; [`grpc`] is its transport). It runs on its own (the `payment` binary, its own
//! deployment): the reservation side calls it over the network, behind a deadline and a circuit
//! breaker, because it can be slow or down on its own. Park serves it in its one process.

// `tonic::Status` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod application;
pub mod config;
pub mod grpc;
pub mod provider;

use std::future::Future;
use std::sync::Arc;

use api_contract::payment_service_server::PaymentServiceServer;
use command_core::execute::Executor;
use command_core::store::EventStore;
use command_core::{Services, MAX_MESSAGE_BYTES};
use events::NoKeys;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::provider::Provider;

/// `services` and the payment service, writing to the event store `config` names. Payments
/// carry no personal data, so the service needs no key store (and no database).
pub fn services(config: &Config, services: Services) -> anyhow::Result<Services> {
    let executor = Arc::new(Executor {
        store: EventStore::new(
            command_core::event_store_client(&config.server)?,
            Arc::new(NoKeys),
        ),
        retries: config.server.concurrency_retries,
    });
    let payments = application::Payments {
        executor,
        provider: Arc::new(Provider::new(config.provider.clone())),
    };
    let server = PaymentServiceServer::new(grpc::PaymentsOverGrpc(Arc::new(payments)));
    Ok(services.with(server.max_decoding_message_size(MAX_MESSAGE_BYTES)))
}

/// Serves the payment service alone on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let services = services(&config, Services::default())?;
    command_core::serve(&config.server, services, listener, shutdown).await
}
