//! `policies`: the process managers (refund on cancel, notify the customer, refund orphaned
//! payments), each a consumer group of the event store that every replica joins, acting
//! through the command side and payment like any client.
//!
//! Settings: its own in [`Args`] (`policies --help`: `COMMAND_ENDPOINT`, `PAYMENT_ENDPOINT`,
//! `ORPHAN_AFTER_MS`, `METRICS_LISTEN`; `https://` endpoints are verified against the system's
//! roots and `TLS_CA_FILE`); and, read as every service reads them, `EVENT_STORE_URL`
//! (esdb://127.0.0.1:2113?tls=false, or `EVENT_STORE_URL_FILE`), `DATABASE_URL` or the `PG*`
//! variables (checkpoints and the policies' state), and the policies' own identity:
//! `AUTH_ISSUER` (with `AUTH_DISCOVERY_URL`, `AUTH_AUDIENCE` as the services read them),
//! `AUTH_CLIENT_ID`, `AUTH_CLIENT_SECRET` or `AUTH_CLIENT_SECRET_FILE` (client credentials).

use std::time::Duration;

use anyhow::Context;
use api_contract::message_service_client::MessageServiceClient;
use api_contract::payment_service_client::PaymentServiceClient;
use api_contract::reservation_service_client::ReservationServiceClient;
use policies::{consume, NotifyCustomer, Policy, RefundOnCancel, RefundOrphanedPayments};

/// Connections to the database: each of the three policies reacts to one event at a time, in
/// one transaction, and one more serves the orphan policy's sweep.
const DATABASE_CONNECTIONS: usize = 4;
/// How long an approved payment may wait for its reservation before it is refunded: far longer
/// than an application takes between paying and recording (its deadline is seconds).
const DEFAULT_ORPHAN_AFTER_MS: u64 = 60_000;

/// The policies' own settings (`policies --help`; each flag or its environment variable).
#[derive(clap::Parser)]
#[command(about = "Runs the process managers as consumer groups of the event store")]
struct Args {
    /// Where the command side is (messages, and the reservations the orphan policy cancels).
    #[arg(
        long,
        env = "COMMAND_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    command_endpoint: String,
    /// Where payment is (refunds).
    #[arg(
        long,
        env = "PAYMENT_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    payment_endpoint: String,
    /// How long an approved payment may wait for its reservation before it is refunded
    /// (milliseconds).
    #[arg(long, env = "ORPHAN_AFTER_MS", default_value_t = DEFAULT_ORPHAN_AFTER_MS)]
    orphan_after_ms: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9092")]
    metrics_listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("policies", "info");
    let args = <Args as clap::Parser>::parse();
    let url = lifecycle::secret_from_env("EVENT_STORE_URL", "EVENT_STORE_URL_FILE")
        .map_err(anyhow::Error::msg)?
        .unwrap_or_else(|| "esdb://127.0.0.1:2113?tls=false".into());
    // The policies act with their own identity, never with a customer's.
    let auth = access::AuthSettings::from_env()?;
    let identity =
        access::client::ServiceToken::new(auth.clone(), access::ClientSettings::from_env()?)?;
    let commands = args.command_endpoint;
    let orphan_after = Duration::from_millis(args.orphan_after_ms);
    let events = kurrentdb::Client::new(
        url.parse()
            .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let payment = args.payment_endpoint;
    // Both called with the policies' own identity.
    let connect = |endpoint: &str, variable: &str| {
        let channel = access::client::grpc_endpoint(endpoint, auth.ca_file.as_deref())
            .map_err(|e| anyhow::anyhow!("{variable}: {e}"))?
            .connect_lazy();
        anyhow::Ok(access::client::WithToken::new(
            channel,
            access::client::Credentials::Service(identity.clone()),
        ))
    };
    let channel = connect(&commands, "COMMAND_ENDPOINT")?;
    let payments = PaymentServiceClient::new(connect(&payment, "PAYMENT_ENDPOINT")?);
    let pool = read_models::pool(read_models::config_from_env()?, DATABASE_CONNECTIONS)?;
    lifecycle::serve_operations(&args.metrics_listen.to_string()).await?;
    read_models::migrate(&pool)
        .await
        .context("cannot migrate the policies' tables")?;

    // Each policy stops between two events when asked; the event store, the command side or
    // PostgreSQL going away is waited out (not ready meanwhile): what this replica held and
    // had not acknowledged goes to another meanwhile, or back to it.
    let stop = lifecycle::stop_on_signal();
    let refunds = RefundOnCancel {
        events: events.clone(),
        payments: payments.clone(),
    };
    let notify = NotifyCustomer {
        events: events.clone(),
        messages: MessageServiceClient::new(channel.clone()),
    };
    let orphans = RefundOrphanedPayments {
        events: events.clone(),
        payments,
        reservations: ReservationServiceClient::new(channel),
        pool: pool.clone(),
        orphan_after,
    };
    tracing::info!(commands = %commands, payment = %payment, ?orphan_after, "policies running");
    let always = |_: &policies::PolicyError| true;
    // Each attempt after a failure gets a new event store client: the official client gives
    // up for good when a connection attempt fails (its first connection, if the store is away
    // then), and answers every later call with "Connection is closed".
    let renewed = |client: &kurrentdb::Client| {
        kurrentdb::Client::new(client.settings().clone()).unwrap_or_else(|_| client.clone())
    };
    let (stop, pool) = (&stop, &pool);
    tokio::try_join!(
        lifecycle::keep_running(RefundOnCancel::NAME, stop, always, || {
            let policy = RefundOnCancel {
                events: renewed(&refunds.events),
                ..refunds.clone()
            };
            async move { consume(&policy, &policy.events, pool, stop.requested()).await }
        }),
        lifecycle::keep_running(NotifyCustomer::NAME, stop, always, || {
            let policy = NotifyCustomer {
                events: renewed(&notify.events),
                ..notify.clone()
            };
            async move { consume(&policy, &policy.events, pool, stop.requested()).await }
        }),
        lifecycle::keep_running(RefundOrphanedPayments::NAME, stop, always, || {
            let policy = RefundOrphanedPayments {
                events: renewed(&orphans.events),
                ..orphans.clone()
            };
            async move { policy.run(stop.requested()).await }
        }),
    )?;
    tracing::info!("policies stopped");
    Ok(())
}
