//! The query side: a REST facade (JSON over HTTP) over the read models, and the dashboard page.
//! It never reads the event store.
//!
//! Every list is newest first and keyset-paged (`limit`, `after`); every error is
//! `application/problem+json` naming the parameter; every query may wait for its own write
//! (`min_position`, see [`consistency`]). `/openapi.json` describes it all, generated from the
//! handlers below.

pub mod auth;
pub mod consistency;
pub mod dashboard;
pub mod lists;
pub mod live;
pub mod params;
mod problem;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::{OpenApi, ToSchema};

pub use dashboard::{DashboardEntry, Timeline, TimelineEntry};
pub use lists::{Message, Payment, Paymethod};
pub use params::MAX_PAGE;
pub use problem::Problem;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// Checks every data request's bearer token.
    pub verifier: access::Verifier,
    /// Where the page signs in.
    pub sign_in: Arc<auth::PageSignIn>,
    /// Data requests served at once; more are refused at once (503, `Retry-After`).
    pub permits: Arc<tokio::sync::Semaphore>,
    /// How long a read-your-writes query waits at most.
    pub max_wait: Duration,
    /// Set when the process is asked to stop: `/readyz` fails first so that load balancers
    /// stop sending before the server stops accepting.
    pub stopping: Arc<AtomicBool>,
    /// The projector's notices, for the live dashboard (see [`AppState::with_live_changes`]).
    pub live: live::Live,
}

impl AppState {
    /// The page signs in with the public client `page_client_id` of the verifier's issuer.
    /// Call it inside the runtime: it starts fetching the issuer's keys in the background.
    pub fn new(
        pool: Pool,
        max_wait: Duration,
        verifier: access::Verifier,
        page_client_id: &str,
    ) -> AppState {
        // The issuer's keys are fetched now, not on the first request.
        tokio::spawn({
            let verifier = verifier.clone();
            async move { verifier.prefetch().await }
        });
        let sign_in = auth::PageSignIn {
            issuer: verifier.settings().issuer.clone(),
            client_id: page_client_id.to_string(),
            scope: "openid".into(),
        };
        AppState {
            pool,
            verifier,
            sign_in: Arc::new(sign_in),
            permits: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONCURRENT_REQUESTS)),
            max_wait,
            stopping: Arc::default(),
            live: live::Live::idle(),
        }
    }

    /// Serves `GET /dashboard/changes`, following the projector's notices on the database
    /// `config` names; without it that route answers 503.
    pub fn with_live_changes(mut self, config: tokio_postgres::Config) -> AppState {
        self.live = self.live.follow(config);
        self
    }
}

/// Data requests served at once by default (`MAX_CONCURRENT_REQUESTS`): four for each of the
/// 16 database connections. More would only wait for a connection in memory: with 512 admitted,
/// `bench overload-queries` showed p99 near a second at capacity, with 64 about 25 ms.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

impl AppState {
    /// At most `limit` data requests at once; more are refused with 503 and `Retry-After`
    /// instead of queueing without bound.
    pub fn with_request_limit(mut self, limit: usize) -> AppState {
        self.permits = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
        self
    }
}

/// Refuses a data request at once when the house is full.
async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.permits.clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            metrics::counter!("http_requests_shed_total").increment(1);
            let mut response =
                Problem::unavailable("overloaded: too many requests at once; try again later")
                    .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

/// A page of a list. Pass `next` as `after` for the following page; absent on the last one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cleaning Service Park query side",
        description = "The read models over HTTP."
    ),
    paths(
        dashboard::list,
        dashboard::one,
        dashboard::timeline,
        live::changes,
        live::summary,
        lists::messages,
        lists::paymethods,
        lists::payments,
        healthz,
        readyz,
        auth::page_config,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The header that carries a request's correlation id (made when the client sends none).
pub const CORRELATION_ID: &str = "x-correlation-id";

/// Every data route needs a bearer token (OpenAPI says so, for clients and tools).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router(state: AppState) -> Router {
    // This process's recorder, so that `/metrics` shows what is recorded from here on.
    lifecycle::metrics();
    let correlation = HeaderName::from_static(CORRELATION_ID);
    // The read models, behind the token check.
    let data = Router::new()
        .route("/dashboard", get(dashboard::list))
        .route("/dashboard/changes", get(live::changes))
        .route("/dashboard/{reservation_id}", get(dashboard::one))
        .route("/summary", get(live::summary))
        .route(
            "/reservations/{reservation_id}/timeline",
            get(dashboard::timeline),
        )
        .route("/messages", get(lists::messages))
        .route("/paymethods", get(lists::paymethods))
        .route("/payments", get(lists::payments))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outside the token check: overload is refused before anything is spent on it.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), shed));
    // Open to anyone: the page (it signs in before it shows anything), where it signs in,
    // the API's description, and what orchestrators poll.
    Router::new()
        .merge(data)
        .route("/", get(page))
        .route("/auth/config", get(auth::page_config))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { lifecycle::render_metrics() }))
        .fallback(|| async { Problem::not_found("no such resource") })
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        // Outermost: every log line of a request carries its correlation id, and the response
        // returns it.
        .layer(PropagateRequestIdLayer::new(correlation.clone()))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(CORRELATION_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // Named by route, never by the path itself (ids) or its query.
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("unmatched", |path| path.as_str());
                    // What Prometheus and the probes poll every few seconds is not worth a trace.
                    if matches!(route, "/metrics" | "/healthz" | "/readyz") {
                        return tracing::Span::none();
                    }
                    let span = tracing::info_span!(
                        "request",
                        otel.name = %format_args!("{} {route}", request.method()),
                        otel.kind = "server",
                        http.route = %route,
                        method = %request.method(),
                        uri = %request.uri(),
                        correlation_id = %id,
                        http.response.status_code = tracing::field::Empty,
                    );
                    // A caller's `traceparent` makes this request part of its trace.
                    lifecycle::telemetry::continue_request(&span, request.headers());
                    span
                })
                .on_response(
                    |response: &axum::response::Response, _: Duration, span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                    },
                )
                .on_failure(log_failure),
        )
        .layer(SetRequestIdLayer::new(correlation, MakeRequestUuid))
        .with_state(state)
}

/// Logs a failed request: an error, except a 503, which is the query side refusing work it
/// cannot take on (shed or timed out). Those are counted in `http_requests_total` by status;
/// a line for each would flood the log exactly when the machine has least to spare.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    let ms = latency.as_millis();
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(latency_ms = ms, "request refused: 503")
        }
        other => tracing::error!(latency_ms = ms, classification = %other, "request failed"),
    }
}

/// A certificate chain and its key (PEM files): the query side then serves HTTPS only.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// How long a client may take to send a request's headers, and the first request on a new
/// connection: slow clients (slowloris) and idle connections cannot hold the server's
/// connections for long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How the query side serves, beside what it serves.
#[derive(Debug, Clone)]
pub struct Serving {
    /// How long it keeps serving after turning not ready, while load balancers notice.
    pub drain_delay: Duration,
    /// HTTPS when given.
    pub tls: Option<TlsFiles>,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            drain_delay: Duration::ZERO,
            tls: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves until `shutdown`, then turns not-ready, keeps serving for the drain delay while
/// load balancers notice, and finishes the requests in flight before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    serving: Serving,
) -> std::io::Result<()> {
    let stopping = state.stopping.clone();
    let live = state.live.clone();
    let drain_delay = serving.drain_delay;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.store(true, Ordering::SeqCst);
        tracing::info!(?drain_delay, "not ready; draining");
        tokio::time::sleep(drain_delay).await;
        // Open live streams never end by themselves.
        live.stop();
        // In-flight requests finish; nothing new is accepted.
        stopper.graceful_shutdown(None);
    });
    let app = router(state).into_make_service();
    let listener = listener.into_std()?;
    let timeout = serving.header_read_timeout;
    match serving.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .handle(handle)
                .first_request_timeout(timeout);
            server.http_builder().http1().header_read_timeout(timeout);
            server.serve(app).await
        }
        Some(tls) => {
            lifecycle::install_crypto_provider();
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
            let mut server = axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .first_request_timeout(timeout);
            server.http_builder().http1().header_read_timeout(timeout);
            server.serve(app).await
        }
    }
}

/// Runs `sql` on a pooled connection as a statement prepared once per connection, so that
/// PostgreSQL parses and plans each query once, not on every request.
pub(crate) async fn fetch(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Problem> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// Counts and times every request by route and status, for Prometheus.
async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The dashboard page: plain HTML and a little JavaScript that polls the JSON endpoints, so
/// updates arrive without reloading and nothing needs a front-end build.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: PostgreSQL answers and the process is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses(
    (status = 200, body = String),
    (status = 503, description = "stopping, or the database does not answer", content_type = "application/problem+json"),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.stopping.load(Ordering::SeqCst) {
        return Problem::unavailable("stopping").into_response();
    }
    match state.pool.get().await {
        Ok(client) => match client.query_one("SELECT 1", &[]).await {
            Ok(_) => "ready".into_response(),
            Err(e) => Problem::from(e).into_response(),
        },
        Err(e) => Problem::from(e).into_response(),
    }
}
