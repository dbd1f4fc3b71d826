//! `policies`: the process managers, each on its own subscription and checkpoint, acting
//! through the command side like any client.
//!
//! Settings: `EVENT_STORE_URL` (esdb://127.0.0.1:2113?tls=false), `COMMAND_ENDPOINT`
//! (http://127.0.0.1:50051), `DATABASE_URL` or the `PG*` variables (where checkpoints live).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_logging("info");
    let url = std::env::var("EVENT_STORE_URL")
        .unwrap_or_else(|_| "esdb://127.0.0.1:2113?tls=false".into());
    let commands =
        std::env::var("COMMAND_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let events = kurrentdb::Client::new(
        url.parse()
            .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let channel = tonic::transport::Channel::from_shared(commands.clone())
        .context("COMMAND_ENDPOINT")?
        .connect_lazy();
    let pool = read_models::pool(read_models::config_from_env()?, 2)?;
    read_models::migrate(&pool)
        .await
        .context("cannot migrate the checkpoints table")?;
    let refunds = policies::RefundOnCancel {
        events,
        payments: command_side::proto::payment_service_client::PaymentServiceClient::new(channel),
        pool,
    };
    tracing::info!(event_store = %url, commands = %commands, "refund-on-cancel policy running");
    refunds.run(lifecycle::shutdown_signal()).await?;
    tracing::info!("policies stopped");
    Ok(())
}
