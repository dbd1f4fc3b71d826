//! Traces: one request followed across processes and across the event log.
//!
//! Every binary exports its spans over OTLP (gRPC) when the standard OpenTelemetry variables ask
//! for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the SDK reads
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and
//! the rest itself). Without them no OpenTelemetry layer is installed: the helpers below find no
//! trace context, write none and cost a lookup.
//!
//! Context crosses three kinds of boundary:
//! - gRPC and HTTP calls carry W3C `traceparent` ([`server_span`], [`inject`]);
//! - appended events carry the trace and span ids in their metadata under `$traceId` and
//!   `$spanId`, the keys KurrentDB's own clients use, so whatever reacts to an event later, in
//!   another process, joins the trace that wrote it ([`ids`], [`follow`]).

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// What is exported: the system's spans (info and above), none of its libraries'.
const TRACED: &str = "info,h2=off,hyper=off,hyper_util=off,tower=off,tonic=off,kurrentdb=off,\
                      reqwest=off,rustls=off,tokio_postgres=off,deadpool=off,redb=off,axum=off";

/// Keeps the exporter running; dropping it sends what is still buffered.
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("trace export did not shut down cleanly: {e}");
            }
        }
    }
}

/// Whether the environment asks for traces: an OTLP endpoint, and the SDK not turned off.
pub fn requested(lookup: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = lookup("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true")
        || lookup("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !disabled
}

/// Logs to standard output (filtered by `RUST_LOG`, else `default_filter`) and, when
/// [`requested`], the system's own spans (info and above, whatever the log level) to OTLP as
/// `service` (unless `OTEL_SERVICE_NAME` names it). Must run inside the Tokio runtime: the
/// exporter's connection lives on it.
pub fn init(service: &str, default_filter: &str) -> Telemetry {
    crate::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt::layer();
    let env = |name: &str| std::env::var(name).ok();
    let provider = if requested(env) {
        match provider(service) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("traces are not exported: {e}");
                None
            }
        }
    } else {
        None
    };
    let traces = provider.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        // The system's own spans, whatever the log level; the libraries' (HTTP/2 frames,
        // connection pools) would drown them.
        let ours = tracing_subscriber::EnvFilter::new(TRACED);
        // Per span: no source location, thread or busy/idle timing (measured on every poll):
        // they cost more than they tell here (`bench tracing`).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cleaning-park"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(ours)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn provider(service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service.to_string());
    }
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` continue the trace an incoming request's `traceparent` names, if any.
pub fn continue_request(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(headers))
        });
        span.set_parent(parent);
    }
}

/// The span of one incoming gRPC call, named by its method as OpenTelemetry's RPC conventions
/// name it (`cleaning.v1.ReservationService/ApplyReservation`), continuing the caller's trace.
pub fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_request(&span, request.headers());
    span
}

/// A tower layer giving each incoming gRPC call its [`server_span`], with the call's status
/// code recorded on it (an error status for the codes that mean the server failed), and the
/// call counted by method and code (`grpc_server_calls_total`) and timed
/// (`grpc_server_call_duration_seconds`).
/// Calls to services not in `services` (health, reflection, made-up paths) get no span and
/// count as method "other": a caller making up paths cannot grow the metrics without bound.
#[derive(Clone, Copy)]
pub struct ServerSpans {
    pub services: &'static [&'static str],
}

impl<S> tower::Layer<S> for ServerSpans {
    type Service = WithServerSpan<S>;
    fn layer(&self, inner: S) -> WithServerSpan<S> {
        WithServerSpan {
            inner,
            services: self.services,
        }
    }
}

#[derive(Clone)]
pub struct WithServerSpan<S> {
    inner: S,
    services: &'static [&'static str],
}

impl<S, B, R> tower::Service<http::Request<B>> for WithServerSpan<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let path = request.uri().path().trim_start_matches('/');
        let known = path
            .split_once('/')
            .is_some_and(|(service, _)| self.services.contains(&service));
        // Health checks (probes every few seconds) and reflection are not worth a trace.
        let span = if known {
            server_span(&request)
        } else {
            tracing::Span::none()
        };
        let method = if known {
            path.to_string()
        } else {
            "other".into()
        };
        let started = std::time::Instant::now();
        let call = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = call.await;
                if let Ok(response) = &result {
                    // A refusal is "trailers only": its status is in the headers. A reply's
                    // status comes in trailers, after this; it is OK unless the body fails.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    recorded.record("rpc.grpc.status_code", code);
                    metrics::counter!(
                        "grpc_server_calls_total",
                        "method" => method.clone(),
                        "code" => GRPC_CODES.get(code as usize).copied().unwrap_or("UNKNOWN"),
                    )
                    .increment(1);
                    metrics::histogram!("grpc_server_call_duration_seconds", "method" => method)
                        .record(started.elapsed().as_secs_f64());
                    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS:
                    // the server's failures; the rest are answers.
                    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                        recorded.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// gRPC status codes by number, as metrics label them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Adds the current span's `traceparent` to an outgoing request, so the callee's span is its
/// child. Nothing without a current trace.
pub fn inject(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeadersMut(headers))
        });
    }
}

/// The trace and span ids of `span` in hex, as events carry them; `None` outside a trace.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// The span that wrote an event, from the ids its metadata carries.
fn remote(trace_id: &str, span_id: &str) -> Option<SpanContext> {
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Makes `span` (work done on an event) a child of the span that appended the event, so it
/// joins that trace; ignored for ids that name no span.
pub fn follow(span: &tracing::Span, trace_id: &str, span_id: &str) {
    if let Some(written) = remote(trace_id, span_id) {
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(written));
    }
}

/// Links `span` to `other`: the two belong together (an event's work and the batch that
/// committed it) without one being the other's parent.
pub fn link(span: &tracing::Span, other: &tracing::Span) {
    let context = other.context();
    let other = context.span().span_context().clone();
    if other.is_valid() {
        span.add_link(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set_and_nothing_turns_them_off() {
        assert!(!requested(lookup(&[])));
        assert!(!requested(lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(requested(lookup(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(requested(lookup(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!requested(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
        assert!(!requested(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }

    #[test]
    fn ids_that_name_no_span_are_ignored() {
        assert!(remote("not hex", "00f067aa0ba902b7").is_none());
        assert!(remote("00000000000000000000000000000000", "00f067aa0ba902b7").is_none());
        assert!(remote("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7").is_some());
    }
}
