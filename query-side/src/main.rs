//! `query-side`: the REST facade over the read models.
//!
//! Settings: `QUERY_LISTEN` (127.0.0.1:8080), `DATABASE_URL` or the `PG*` variables,
//! `READ_YOUR_WRITES_WAIT_MS` (2000), `SHUTDOWN_DRAIN_DELAY_MS` (0; a few seconds behind a load
//! balancer: how long `/readyz` fails before the server stops accepting); the tokens it
//! accepts: `AUTH_ISSUER` (required), `AUTH_DISCOVERY_URL`, `AUTH_AUDIENCE`,
//! `AUTH_ROLES_CLAIM`, `TLS_CA_FILE`; and `AUTH_PAGE_CLIENT_ID` (cleaning-park-page), the public
//! client the page signs in with; `MAX_CONCURRENT_REQUESTS` (64) data requests at once; `MAX_LIVE_STREAMS` (1000) open live dashboards; `TLS_CERT_FILE` and `TLS_KEY_FILE` (PEM) to serve HTTPS.

use std::time::Duration;

use anyhow::Context;

fn millis(name: &str, default: u64) -> anyhow::Result<Duration> {
    match std::env::var(name) {
        Ok(text) => Ok(Duration::from_millis(text.trim().parse().with_context(
            || format!("{name}: {text:?} is not a number of milliseconds"),
        )?)),
        Err(_) => Ok(Duration::from_millis(default)),
    }
}

fn count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|n: &usize| *n > 0)
            .with_context(|| format!("{name}: {text:?} is not a positive number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("query-side", "info");
    let listen = std::env::var("QUERY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let max_wait = millis("READ_YOUR_WRITES_WAIT_MS", 2_000)?;
    let drain_delay = millis("SHUTDOWN_DRAIN_DELAY_MS", 0)?;
    let database = read_models::config_from_env()?;
    let pool = read_models::pool(database.clone(), 16)?;
    if cfg!(feature = "no-auth-baseline") {
        tracing::warn!("built with no-auth-baseline: tokens are NOT checked; benchmarks only");
    }
    let auth = access::AuthSettings::from_env()?;
    let page_client = std::env::var("AUTH_PAGE_CLIENT_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| query_side::auth::PAGE_CLIENT_ID.into());
    let verifier = access::Verifier::new(auth)?;
    let limit = count(
        "MAX_CONCURRENT_REQUESTS",
        query_side::DEFAULT_MAX_CONCURRENT_REQUESTS,
    )?;
    let streams = count("MAX_LIVE_STREAMS", query_side::live::DEFAULT_MAX_STREAMS)?;
    let mut state = query_side::AppState::new(pool, max_wait, verifier, &page_client)
        .with_request_limit(limit)
        .with_live_changes(database);
    state.live = state.live.with_stream_limit(streams);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "query side serving");
    // `TLS_CERT_FILE` and `TLS_KEY_FILE`: serve HTTPS with this certificate chain and key.
    let tls = match (
        std::env::var("TLS_CERT_FILE"),
        std::env::var("TLS_KEY_FILE"),
    ) {
        (Ok(cert), Ok(key)) => Some(query_side::TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (Err(_), Err(_)) => None,
        _ => anyhow::bail!("TLS_CERT_FILE and TLS_KEY_FILE go together"),
    };
    let serving = query_side::Serving {
        drain_delay,
        tls,
        ..Default::default()
    };
    query_side::serve(listener, state, lifecycle::shutdown_signal(), serving).await?;
    tracing::info!("query side stopped");
    Ok(())
}
