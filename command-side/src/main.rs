//! `command-side`: the gRPC command services, configured from the environment (see
//! [`command_side::config`] and [`command_core::settings`]).

use std::sync::Arc;

use anyhow::Context;
use command_side::config::Config;
use customer_keys::PostgresKeys;

/// Connections to the key store: half the calls served at once by default
/// (`MAX_CONCURRENT_CALLS`), as a key is looked up in a fraction of the call that needs it.
const KEY_STORE_CONNECTIONS: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("command-side", "info");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        event_store = %lifecycle::without_credentials(&config.server.event_store_url),
        payment_endpoint = %config.payment_endpoint,
        "command side serving cleaning.v1 (reflection and health included)"
    );
    // Customers' data keys: `KEY_STORE_URL`, else the read models' database settings.
    let keys = PostgresKeys::connect(customer_keys::config_from_env()?, KEY_STORE_CONNECTIONS)
        .await
        .context("cannot reach the key store")?;
    let keys = Arc::new(keys);
    if cfg!(feature = "no-auth-baseline") {
        tracing::warn!("built with no-auth-baseline: tokens are NOT checked; benchmarks only");
    }
    if cfg!(feature = "unsealed-baseline") {
        tracing::warn!(
            "built with unsealed-baseline: personal data is NOT sealed; benchmarks only"
        );
    }
    // `/metrics` (calls by method and outcome, appends, the payment breaker), `/healthz` and
    // `/readyz` for Prometheus and orchestrators, where asked for: replicas on one machine
    // would otherwise contend for one default port.
    if let Some(listen) = config.server.metrics_listen {
        lifecycle::serve_operations(&listen.to_string()).await?;
    }
    command_side::serve(config, keys, listener, lifecycle::shutdown_signal()).await?;
    tracing::info!("command side stopped");
    Ok(())
}
