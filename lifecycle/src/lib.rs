//! What every binary of the system does the same way: logs, traces, stop signals, metrics.

pub mod telemetry;

/// Logs to standard output, filtered by `RUST_LOG` (else `default`, e.g. "info"), and traces to
/// OTLP as `service` when the OpenTelemetry variables ask for it ([`telemetry`]); also installs
/// the TLS crypto provider, since every binary starts here. Keep the result for the process's
/// life: dropping it sends the last spans.
pub fn init_logging(service: &str, default: &str) -> telemetry::Telemetry {
    telemetry::init(service, default)
}

/// Resolves on Ctrl-C or SIGTERM: the signals a terminal and an orchestrator send to stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// The process's Prometheus recorder, installed on first use; every part of the process
/// (`park` runs several) records into it and `/metrics` renders it.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then that one records.
        let _ = ::metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text exposition of everything recorded so far.
pub fn render_metrics() -> String {
    metrics().render()
}

/// Chooses the process's TLS crypto provider (aws-lc-rs, the one tonic uses). Both rustls
/// back-ends end up compiled in (the `kurrentdb` client's HTTP stack brings ring), so rustls
/// cannot pick one by itself and the first TLS connection would panic. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A secret setting: `name` itself, or the contents of the file `file_name` names (how
/// orchestrators mount secrets, so that they never sit in the environment). Trailing white
/// space is dropped; `Err` says why the file cannot be read, never what it holds.
pub fn secret(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    file_name: &str,
) -> Result<Option<String>, String> {
    if let Some(path) = lookup(file_name).filter(|p| !p.trim().is_empty()) {
        let text = std::fs::read_to_string(path.trim())
            .map_err(|e| format!("cannot read {}: {e}", path.trim()))?;
        return Ok(Some(text.trim_end().to_string()));
    }
    Ok(lookup(name).filter(|v| !v.is_empty()))
}

/// [`secret`] from the process environment.
pub fn secret_from_env(name: &str, file_name: &str) -> Result<Option<String>, String> {
    secret(&|n: &str| std::env::var(n).ok(), name, file_name)
}

/// A connection string fit for a log line: any `user:password@` is cut out.
pub fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Serves what orchestrators and Prometheus poll on `listen`, in the background: `/metrics`,
/// `/healthz` (the process answers) and `/readyz` (every part reached what it depends on; see
/// [`mark_ready`]). Open to anyone: nothing personal is there.
/// With `TLS_CERT_FILE` and `TLS_KEY_FILE` set (PEM), it serves HTTPS only.
pub async fn serve_operations(listen: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    metrics();
    let operations = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { render_metrics() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(|| async {
                if is_ready() {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for a dependency",
                    )
                }
            }),
        );
    let tls = match (
        std::env::var("TLS_CERT_FILE"),
        std::env::var("TLS_KEY_FILE"),
    ) {
        (Ok(cert), Ok(key)) => Some((cert, key)),
        (Err(_), Err(_)) => None,
        _ => {
            return Err(std::io::Error::other(
                "TLS_CERT_FILE and TLS_KEY_FILE go together",
            ))
        }
    };
    // A connection that sends no request headers within the timeout (slowloris, idle) is
    // closed, as on the query side.
    let listener = listener.into_std()?;
    let timeout = OPERATIONS_HEADER_TIMEOUT;
    match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?.first_request_timeout(timeout);
            server.http_builder().http1().header_read_timeout(timeout);
            tokio::spawn(async move { server.serve(operations.into_make_service()).await });
        }
        Some((cert, key)) => {
            install_crypto_provider();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
            let mut server =
                axum_server::from_tcp_rustls(listener, config)?.first_request_timeout(timeout);
            server.http_builder().http1().header_read_timeout(timeout);
            tokio::spawn(async move { server.serve(operations.into_make_service()).await });
        }
    }
    Ok(())
}

/// How long the operations listener waits for a request's headers (and for the first request
/// of a connection) before it closes the connection.
pub const OPERATIONS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether each long-running part of the process (a projection, a policy) currently reaches
/// what it depends on. `/readyz` is ready when all are.
static READINESS: std::sync::Mutex<std::collections::BTreeMap<&'static str, bool>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records whether `part` reaches its dependencies (the event store, PostgreSQL) right now.
pub fn mark_ready(part: &'static str, ready: bool) {
    if let Ok(mut parts) = READINESS.lock() {
        parts.insert(part, ready);
    }
}

/// Every part that reported is ready, and at least one did.
pub fn is_ready() -> bool {
    READINESS
        .lock()
        .map(|parts| !parts.is_empty() && parts.values().all(|ready| *ready))
        .unwrap_or(false)
}

/// A stop request that any number of tasks can wait for, any number of times.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Resolves once the stop was requested.
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.0.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }
}

/// A [`Stop`] requested by Ctrl-C or SIGTERM.
pub fn stop_on_signal() -> Stop {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    Stop(rx)
}

/// A [`Stop`] and the function that requests it (for processes that stop for other reasons).
pub fn stop_handle() -> (Stop, impl Fn()) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (Stop(rx), move || {
        let _ = tx.send(true);
    })
}

/// Backoff between attempts: from the first to the longest, doubling.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_LONGEST: std::time::Duration = std::time::Duration::from_secs(5);
/// An attempt that lasted this long was healthy: the next failure starts the backoff anew.
const HEALTHY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `attempt` until it ends well (it returns `Ok` once `stop` is requested), starting it
/// again after every `transient` failure with a growing pause: a dependency that goes away
/// (the event store, PostgreSQL) is waited for, not exited on, and `part` reports not ready
/// meanwhile. Each attempt resumes from its own checkpoint, so nothing is lost or done twice.
/// Any other failure is returned.
pub async fn keep_running<E, F, Fut>(
    part: &'static str,
    stop: &Stop,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<(), E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut pause = RETRY_FIRST;
    loop {
        let started = std::time::Instant::now();
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if !transient(&e) => return Err(e),
            Err(e) => {
                mark_ready(part, false);
                if started.elapsed() > HEALTHY_FOR {
                    pause = RETRY_FIRST;
                }
                tracing::warn!(part, error = %e, retry_in = ?pause, "stopped by a failure; starting again");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.requested() => return Ok(()),
                }
                pause = (pause * 2).min(RETRY_LONGEST);
            }
        }
    }
}
