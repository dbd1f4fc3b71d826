//! One request followed across the whole chain, as an operator sees it in Jaeger: `park` runs
//! with the standard OpenTelemetry variables pointing at an OTLP receiver inside this test, a
//! client applies for a cleaning and cancels it with its own `traceparent`, and the spans that
//! arrive must form two traces:
//!
//! - apply: the gRPC call (a child of the client's span) -> its call to payment -> payment's
//!   own span -> the appends -> the projector's work on each event it wrote (linked to the
//!   batch that committed it);
//! - cancel: the gRPC call -> the append -> the refund policy's reaction to that event -> the
//!   `CancelPayment` command it sends -> that append -> the projector's work on the refund.
//!
//! A query to the query side joins its caller's trace as well. No span carries the customer's
//! name or place, nor a token.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;

use common::{park_token, Ports};

/// An OTLP receiver: what the exporters send, kept for the test to look at.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Received {
    fn trace(&self, trace_id: &[u8]) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .map(|(_, s)| s.clone())
            .collect()
    }
    fn by_id(&self, span_id: &[u8]) -> Option<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .find(|(_, s)| s.span_id == span_id)
            .map(|(_, s)| s.clone())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

/// The one span of `trace` named `name`, waiting for it to arrive.
async fn span(received: &Received, trace: &[u8], name: &str) -> Span {
    for _ in 0..300 {
        let found: Vec<Span> = received
            .trace(trace)
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        if let Some(span) = found.into_iter().next() {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = received
        .trace(trace)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    panic!("no span {name} in trace {}: {names:?}", hex(trace));
}

/// The span of `trace` named `name` whose parent is `parent`.
async fn child(received: &Received, trace: &[u8], name: &str, parent: &Span) -> Span {
    for _ in 0..300 {
        if let Some(span) = received
            .trace(trace)
            .into_iter()
            .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found: Vec<(String, String)> = received
        .trace(trace)
        .iter()
        .map(|s| (s.name.clone(), hex(&s.parent_span_id)))
        .collect();
    panic!(
        "no {name} under {} ({}) in {found:?}",
        parent.name,
        hex(&parent.span_id)
    );
}

/// A request carrying the caller's own trace context.
fn traced<T>(message: T, trace: &[u8; 16], parent: &[u8; 8]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let header = format!("00-{}-{}-01", hex(trace), hex(parent));
    request
        .metadata_mut()
        .insert("traceparent", header.parse().unwrap());
    request
}

/// The projector's work on `event_type` under `append`, linked to the batch that committed it.
async fn projected(received: &Received, trace: &[u8], event_type: &str, append: &Span) {
    let project = child(received, trace, &format!("project {event_type}"), append).await;
    assert_eq!(project.kind, SpanKind::Consumer as i32);
    assert_eq!(project.links.len(), 1, "{project:?}");
    let batch = &project.links[0];
    let mut found = None;
    for _ in 0..100 {
        found = received.by_id(&batch.span_id);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let batch = found.expect("the linked batch span arrives");
    assert_eq!(batch.name, "projector batch");
    assert_ne!(batch.trace_id, trace, "a batch is its own trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_reservation_through_payment_the_log_the_projector_and_the_refund() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let data = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let (commands, queries, issuer) = (ports.commands, ports.queries, ports.issuer);
    let mut park = common::park(data.path(), &ports);
    park.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut park = park.spawn().unwrap();
    // Up once its query side answers (park makes its issuer's keys before that).
    let ready = format!("http://127.0.0.1:{queries}/readyz");
    for _ in 0..600 {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let token = park_token(data.path(), issuer, &["--role", "admin"]).await;
    let mut channel = None;
    for _ in 0..300 {
        let endpoint =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{commands}")).unwrap();
        if let Ok(connected) = endpoint.connect().await {
            channel = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = access::client::WithToken::new(
        channel.expect("park's command side"),
        access::client::Credentials::Bearer(token.clone().into()),
    );
    let mut reservations = ReservationServiceClient::new(channel);

    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(3))
        .format("%Y-%m-%d")
        .to_string();
    let (apply_trace, apply_parent) = (*uuid::Uuid::new_v4().as_bytes(), [7u8; 8]);
    let customer = uuid::Uuid::new_v4().to_string();
    let mut applied = None;
    for _ in 0..100 {
        // Until park is ready (its first calls may meet a store still opening).
        let request = ApplyReservationRequest {
            request_id: "0b6a5b6e-5d1c-4f7e-9a51-3c2f4e1a7d20".into(),
            customer_id: customer.clone(),
            customer_name: "Ada Lovelace".into(),
            place: "12 Analytical Row".into(),
            request_date: date.clone(),
            price_cents: 12_500,
            paymethod_kind: "credit_card".into(),
        };
        match reservations
            .apply_reservation(traced(request, &apply_trace, &apply_parent))
            .await
        {
            Ok(reply) => {
                applied = Some(reply.into_inner());
                break;
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let applied = applied.expect("park answers");
    let (cancel_trace, cancel_parent) = (*uuid::Uuid::new_v4().as_bytes(), [9u8; 8]);
    reservations
        .cancel_reservation(traced(
            CancelReservationRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                reservation_id: applied.id.clone(),
                reason: "moved".into(),
            },
            &cancel_trace,
            &cancel_parent,
        ))
        .await
        .unwrap();

    // Apply: the call, payment, the appends, the projector.
    let call = span(
        &received,
        &apply_trace,
        "cleaning.v1.ReservationService/ApplyReservation",
    )
    .await;
    assert_eq!(
        call.parent_span_id, apply_parent,
        "continues the caller's span"
    );
    assert_eq!(call.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&call, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    let pay = child(
        &received,
        &apply_trace,
        "cleaning.v1.PaymentService/Pay",
        &call,
    )
    .await;
    assert_eq!(pay.kind, SpanKind::Client as i32);
    let paid = child(
        &received,
        &apply_trace,
        "cleaning.v1.PaymentService/Pay",
        &pay,
    )
    .await;
    assert_eq!(paid.kind, SpanKind::Server as i32);
    let payment_append = child(&received, &apply_trace, "streams.append", &paid).await;
    assert_eq!(
        attribute(&payment_append, "db.kurrentdb.event_types").as_deref(),
        Some("PaymentApproved")
    );
    let reservation_append = child(&received, &apply_trace, "streams.append", &call).await;
    assert_eq!(
        attribute(&reservation_append, "db.kurrentdb.stream"),
        Some(format!("reservation-{}", applied.id))
    );
    projected(&received, &apply_trace, "PaymentApproved", &payment_append).await;
    projected(
        &received,
        &apply_trace,
        "CleaningRequested",
        &reservation_append,
    )
    .await;

    // Cancel: the call, its append, the refund policy, its command, the refund's append.
    let call = span(
        &received,
        &cancel_trace,
        "cleaning.v1.ReservationService/CancelReservation",
    )
    .await;
    assert_eq!(call.parent_span_id, cancel_parent);
    let append = child(&received, &cancel_trace, "streams.append", &call).await;
    projected(&received, &cancel_trace, "ReservationCancelled", &append).await;
    let policy = child(
        &received,
        &cancel_trace,
        "policy:refund-on-cancel ReservationCancelled",
        &append,
    )
    .await;
    let refund = child(
        &received,
        &cancel_trace,
        "cleaning.v1.PaymentService/CancelPayment",
        &policy,
    )
    .await;
    let refund_append = child(&received, &cancel_trace, "streams.append", &refund).await;
    projected(&received, &cancel_trace, "PaymentCancelled", &refund_append).await;

    // A query continues its caller's trace too, named by its route.
    let (query_trace, query_parent) = (*uuid::Uuid::new_v4().as_bytes(), [5u8; 8]);
    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{queries}/dashboard/{}",
            applied.id
        ))
        .bearer_auth(&token)
        .header(
            "traceparent",
            format!("00-{}-{}-01", hex(&query_trace), hex(&query_parent)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let query = span(&received, &query_trace, "GET /dashboard/{reservation_id}").await;
    assert_eq!(query.parent_span_id, query_parent);
    assert_eq!(query.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&query, "http.response.status_code").as_deref(),
        Some("200")
    );

    // Nothing personal, nothing secret, in any span.
    let everything = format!("{:?}", received.spans.lock().unwrap());
    for secret in [
        "Ada Lovelace",
        "12 Analytical Row",
        token.as_str(),
        "Bearer",
    ] {
        assert!(!everything.contains(secret), "a span holds {secret:?}");
    }
    let services: std::collections::BTreeSet<String> = received
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(service, _)| service.clone())
        .collect();
    assert_eq!(services.into_iter().collect::<Vec<_>>(), vec!["park"]);

    park.start_kill().unwrap();
    let _ = park.wait().await;
}
