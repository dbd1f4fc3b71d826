//! `payment`: the payment service on its own, configured from the environment (see
//! [`payment::config`] and [`command_core::settings`]).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("payment", "info");
    let config = payment::config::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        event_store = %lifecycle::without_credentials(&config.server.event_store_url),
        "payment serving cleaning.v1.PaymentService (reflection and health included)"
    );
    if let Some(listen) = config.server.metrics_listen {
        lifecycle::serve_operations(&listen.to_string()).await?;
    }
    payment::serve(config, listener, lifecycle::shutdown_signal()).await?;
    tracing::info!("payment stopped");
    Ok(())
}
