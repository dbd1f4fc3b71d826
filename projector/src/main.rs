//! `projector`: builds the read models in PostgreSQL from the event store.
//!
//! Settings: `EVENT_STORE_URL` (esdb://127.0.0.1:2113?tls=false), `DATABASE_URL` or the `PG*`
//! variables, `KEY_STORE_URL` (the same database), `BATCH_MAX_EVENTS` (500), `BATCH_MAX_WAIT_MS` (5),
//! `ON_POISON` (`stop` or `park`), `METRICS_LISTEN` (127.0.0.1:9091: `/metrics`, `/healthz`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use projector::{BatchSettings, OnPoison, Projector};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_logging("info");
    let url = std::env::var("EVENT_STORE_URL")
        .unwrap_or_else(|_| "esdb://127.0.0.1:2113?tls=false".into());
    let client = kurrentdb::Client::new(
        url.parse()
            .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let pool = read_models::pool(read_models::config_from_env()?, 4)?;
    read_models::migrate(&pool)
        .await
        .context("cannot migrate the read models")?;
    let batches = BatchSettings {
        max_events: setting("BATCH_MAX_EVENTS", 500)?,
        max_wait: Duration::from_millis(setting("BATCH_MAX_WAIT_MS", 5)?),
    };
    // The same key store the command side seals with: `KEY_STORE_URL`, else the database above.
    let keys = customer_keys::PostgresKeys::connect(customer_keys::config_from_env()?, 2)
        .await
        .context("cannot reach the key store")?;
    let keys = Arc::new(keys);
    let projector = Projector {
        client,
        pool,
        keys,
        batches,
        on_poison: setting("ON_POISON", OnPoison::Stop)?,
    };
    let metrics_listen: String = setting("METRICS_LISTEN", "127.0.0.1:9091".to_string())?;
    let metrics_listener = tokio::net::TcpListener::bind(&metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {metrics_listen}"))?;
    lifecycle::metrics();
    let operations = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { lifecycle::render_metrics() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(metrics_listener, operations).await });
    tracing::info!(event_store = %url, checkpoint = ?projector.checkpoint().await?, "projecting the dashboard");
    projector.run(lifecycle::shutdown_signal()).await?;
    tracing::info!("projector stopped");
    Ok(())
}
