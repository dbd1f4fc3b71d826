//! `command-side`: the gRPC command services, configured from the environment.

use std::sync::Arc;

use anyhow::Context;
use command_side::config::Config;
use events::InMemoryKeys;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_logging("info");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        event_store = %config.event_store_url,
        payment_endpoint = %config.payment_endpoint,
        "command side serving cleaning.v1 (reflection and health included)"
    );
    // Keys live in memory until the PostgreSQL key store exists: a restart forgets them.
    let keys = Arc::new(InMemoryKeys::default());
    command_side::serve(config, keys, listener, lifecycle::shutdown_signal()).await?;
    tracing::info!("command side stopped");
    Ok(())
}
