//! `query-side`: the REST facade over the read models.
//!
//! Settings: `QUERY_LISTEN` (127.0.0.1:8080), `DATABASE_URL` or the `PG*` variables,
//! `READ_YOUR_WRITES_WAIT_MS` (2000).

use std::time::Duration;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_logging("info");
    let listen = std::env::var("QUERY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let wait_ms: u64 = match std::env::var("READ_YOUR_WRITES_WAIT_MS") {
        Ok(text) => text.parse().context("READ_YOUR_WRITES_WAIT_MS")?,
        Err(_) => 2_000,
    };
    let pool = read_models::pool(read_models::config_from_env()?, 16)?;
    let state = query_side::AppState {
        pool,
        max_wait: Duration::from_millis(wait_ms),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "query side serving");
    axum::serve(listener, query_side::router(state))
        .with_graceful_shutdown(lifecycle::shutdown_signal())
        .await?;
    Ok(())
}
