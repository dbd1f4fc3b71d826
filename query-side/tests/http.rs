//! Every endpoint over HTTP, against a PostgreSQL filled by the real projector from the real
//! event store, written by the real command side (run under `pg_virtualenv`).

mod common;

use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use query_side::{DashboardEntry, Page};
use serde_json::Value;

struct System {
    http: String,
    /// An administrator's token: these tests read everything.
    admin: String,
    reservations: ReservationServiceClient<access::client::AuthorizedChannel>,
    _running: testkit::Running,
}

/// Event store, command side, projector and query side, each on its own loopback port.
async fn start(max_wait: Duration) -> System {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, max_wait).await;
    let admin = running
        .issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(3600))
        .unwrap();
    System {
        http,
        admin,
        reservations: ReservationServiceClient::new(running.commands.clone()),
        _running: running,
    }
}

impl System {
    fn reservations_channel(&self) -> access::client::AuthorizedChannel {
        self._running.commands.clone()
    }

    /// An HTTP client sending the administrator's token.
    fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.admin).parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    async fn get(&self, url: String) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.client().get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
}

fn apply_request(customer_id: &str) -> ApplyReservationRequest {
    testkit::apply_request(customer_id, 8_800)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reservation_read_your_writes_and_errors() {
    let mut s = start(Duration::from_millis(300)).await;
    let customer = uuid::Uuid::new_v4().to_string();
    let reply = s
        .reservations
        .apply_reservation(apply_request(&customer))
        .await
        .unwrap()
        .into_inner();

    // Asking for the position of the write waits until the read model has it.
    let (status, headers, body) = s
        .get(format!(
            "{}/dashboard/{}?min_position={}",
            s.http, reply.id, reply.position
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-read-model-consistent"], "true");
    let entry: DashboardEntry = serde_json::from_value(body).unwrap();
    assert_eq!(entry.reservation_id.to_string(), reply.id);
    assert_eq!(entry.customer_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(entry.place.as_deref(), Some("12 Analytical Row"));
    assert_eq!(
        (
            entry.status.as_str(),
            entry.payment_kind.as_str(),
            entry.payment_status.as_str()
        ),
        ("requested", "debit_card", "approved")
    );
    assert_eq!(entry.price_cents, 8_800);

    // A position the read model has not reached: answered after the bound, and said so.
    let client = s.client();
    let response = client
        .get(format!("{}/dashboard/{}", s.http, reply.id))
        .header("x-min-position", (reply.position + 1_000_000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-read-model-consistent"], "false");

    // Errors as problem+json, naming the parameter.
    let response = s
        .client()
        .get(format!("{}/dashboard/{}", s.http, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, _, body) = s.get(format!("{}/dashboard/not-a-uuid", s.http)).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("reservation_id"))
    );
    let (status, _, body) = s
        .get(format!(
            "{}/dashboard/{}?min_position=soon",
            s.http, reply.id
        ))
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("min_position"))
    );
    let (status, _, _) = s.get(format!("{}/nowhere", s.http)).await;
    assert_eq!(status, 404);

    let (status, _, _) = s.get(format!("{}/healthz", s.http)).await;
    assert_eq!(status, 200);
    let response = s
        .client()
        .get(format!("{}/readyz", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_filters_the_dashboard() {
    let mut s = start(Duration::from_secs(5)).await;
    let ada = uuid::Uuid::new_v4().to_string();
    let bob = uuid::Uuid::new_v4().to_string();
    let mut last = 0;
    let mut ids = Vec::new();
    for i in 0..7 {
        let customer = if i % 2 == 0 { &ada } else { &bob };
        let reply = s
            .reservations
            .apply_reservation(apply_request(customer))
            .await
            .unwrap()
            .into_inner();
        last = reply.position;
        ids.push(reply.id);
    }
    last = s
        .reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: ids[0].clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .position
        .max(last);

    // Three pages of at most 3, newest first, nothing twice or missing.
    let mut seen = Vec::new();
    let mut url = format!("{}/dashboard?limit=3&min_position={last}", s.http);
    let mut pages = 0;
    loop {
        let (status, _, body) = s.get(url.clone()).await;
        assert_eq!(status, 200, "{body}");
        let page: Page<DashboardEntry> = serde_json::from_value(body).unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|e| e.reservation_id.to_string()));
        pages += 1;
        match page.next {
            Some(next) => url = format!("{}/dashboard?limit=3&after={next}", s.http),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let (_, _, body) = s
        .get(format!("{}/dashboard?customer_id={ada}", s.http))
        .await;
    let page: Page<DashboardEntry> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items.len(), 4);
    assert!(page.items.iter().all(|e| e.customer_id.to_string() == ada));
    let (_, _, body) = s
        .get(format!("{}/dashboard?status=cancelled", s.http))
        .await;
    let page: Page<DashboardEntry> = serde_json::from_value(body).unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|e| e.reservation_id.to_string())
            .collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );

    for (query, parameter, status) in [
        ("limit=abc", "limit", 400),
        ("limit=0", "limit", 422),
        ("limit=201", "limit", 422),
        ("status=lost", "status", 422),
        ("customer_id=42", "customer_id", 400),
        ("after=%%%", "after", 400),
    ] {
        let (got, _, body) = s.get(format!("{}/dashboard?{query}", s.http)).await;
        assert_eq!(
            (got, body["parameter"].as_str()),
            (status, Some(parameter)),
            "{query}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_every_event_with_its_request() {
    let mut s = start(Duration::from_secs(5)).await;
    let mut request = tonic::Request::new(apply_request(&uuid::Uuid::new_v4().to_string()));
    let correlation = uuid::Uuid::new_v4();
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.to_string().parse().unwrap());
    let applied = s
        .reservations
        .apply_reservation(request)
        .await
        .unwrap()
        .into_inner();
    let started = s
        .reservations
        .start_cleaning(StartCleaningRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            reservation_id: applied.id.clone(),
            cleaner: "Team B".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let (status, _, body) = s
        .get(format!(
            "{}/reservations/{}/timeline?min_position={}",
            s.http, applied.id, started.position
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let timeline: query_side::Timeline = serde_json::from_value(body).unwrap();
    let kinds: Vec<&str> = timeline
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["PaymentApproved", "CleaningRequested", "CleaningStarted"]
    );
    // The payment and the reservation came from one request: one correlation id.
    assert_eq!(timeline.events[0].correlation_id, Some(correlation));
    assert_eq!(timeline.events[1].correlation_id, Some(correlation));
    assert_ne!(timeline.events[2].correlation_id, Some(correlation));
    assert!(timeline
        .events
        .windows(2)
        .all(|w| w[0].position < w[1].position));
    assert_eq!(timeline.events[2].summary, "Cleaning started by Team B");
    assert!(
        timeline.events.iter().all(|e| !e.summary.contains("Ada")),
        "no personal data"
    );

    let (status, _, _) = s
        .get(format!(
            "{}/reservations/{}/timeline",
            s.http,
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(status, 404);
    let (status, _, body) = s
        .get(format!("{}/reservations/nope/timeline", s.http))
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("reservation_id"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_paymethods_and_payments_page_and_filter() {
    use command_side::proto::message_service_client::MessageServiceClient;
    use command_side::proto::payment_service_client::PaymentServiceClient;
    use command_side::proto::paymethod_service_client::PaymethodServiceClient;
    use query_side::{Message, Payment, Paymethod};

    let mut s = start(Duration::from_secs(5)).await;
    let channel = s.reservations_channel();
    let (ada, bob) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let mut reservations = Vec::new();
    for customer in [&ada, &ada, &bob] {
        let reply = s
            .reservations
            .apply_reservation(apply_request(customer))
            .await
            .unwrap()
            .into_inner();
        reservations.push(reply.id);
    }
    let declined = s
        .reservations
        .apply_reservation(testkit::apply_request(&ada, 500_000))
        .await
        .unwrap_err();
    assert_eq!(declined.code(), tonic::Code::FailedPrecondition);

    let mut paymethods = PaymethodServiceClient::new(channel.clone());
    let mut registered = Vec::new();
    for (customer, number) in [
        (&ada, "4111111111111111"),
        (&ada, "5555555555554444"),
        (&bob, "4012888888881881"),
    ] {
        let reply = paymethods
            .register_paymethod(RegisterPaymethodRequest {
                request_id: String::new(),
                customer_id: customer.clone(),
                customer_name: "Ada Lovelace".into(),
                kind: "credit_card".into(),
                number: number.into(),
            })
            .await
            .unwrap()
            .into_inner();
        registered.push(reply.id);
    }
    paymethods
        .change_paymethod(ChangePaymethodRequest {
            request_id: String::new(),
            paymethod_id: registered[0].clone(),
            kind: "debit_card".into(),
            number: "4000056655665556".into(),
        })
        .await
        .unwrap();

    let mut messages = MessageServiceClient::new(channel.clone());
    for (customer, reservation, text) in [
        (&ada, reservations[0].clone(), "See you Monday"),
        (&ada, String::new(), "Welcome"),
        (&bob, reservations[2].clone(), "See you Tuesday"),
    ] {
        messages
            .send_message(SendMessageRequest {
                request_id: String::new(),
                customer_id: customer.clone(),
                recipient: "someone@example.org".into(),
                reservation_id: reservation,
                text: text.into(),
                cause: String::new(),
            })
            .await
            .unwrap();
    }
    // The first reservation's payment is refunded.
    let (_, _, first) = s
        .get(format!(
            "{}/dashboard/{}?min_position=1",
            s.http, reservations[0]
        ))
        .await;
    let refunded = PaymentServiceClient::new(channel.clone())
        .cancel_payment(CancelPaymentRequest {
            request_id: String::new(),
            payment_id: first["payment_id"].as_str().unwrap().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let last = refunded.position;

    // Messages: newest first, by customer and by reservation, paged one at a time.
    let (status, headers, body) = s
        .get(format!(
            "{}/messages?customer_id={ada}&min_position={last}",
            s.http
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-read-model-consistent"], "true");
    let page: Page<Message> = serde_json::from_value(body).unwrap();
    let texts: Vec<_> = page.items.iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, ["Welcome", "See you Monday"]);
    assert!(page
        .items
        .iter()
        .all(|m| m.recipient.as_deref() == Some("someone@example.org")));
    assert_eq!(page.items[0].reservation_id, None);
    let (_, _, body) = s
        .get(format!(
            "{}/messages?reservation_id={}",
            s.http, reservations[2]
        ))
        .await;
    let page: Page<Message> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].customer_id.to_string(), bob);
    let mut seen = Vec::new();
    let mut url = format!("{}/messages?limit=1", s.http);
    loop {
        let (_, _, body) = s.get(url).await;
        let page: Page<Message> = serde_json::from_value(body).unwrap();
        seen.extend(page.items.into_iter().map(|m| m.text.unwrap()));
        match page.next {
            Some(next) => url = format!("{}/messages?limit=1&after={next}", s.http),
            None => break,
        }
    }
    assert_eq!(seen, ["See you Tuesday", "Welcome", "See you Monday"]);

    // Payment methods: masked numbers only, the change applied.
    let (_, _, body) = s
        .get(format!("{}/paymethods?customer_id={ada}", s.http))
        .await;
    let text = body.to_string();
    let page: Page<Paymethod> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items.len(), 2);
    let changed = page
        .items
        .iter()
        .find(|p| p.paymethod_id.to_string() == registered[0])
        .unwrap();
    assert_eq!(changed.kind, "debit_card");
    assert!(
        changed.masked_number.ends_with("5556"),
        "{}",
        changed.masked_number
    );
    for number in [
        "4111111111111111",
        "5555555555554444",
        "4000056655665556",
        "411111",
    ] {
        assert!(!text.contains(number), "{text}");
    }
    let (_, _, body) = s.get(format!("{}/paymethods?limit=1", s.http)).await;
    let page: Page<Paymethod> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items[0].paymethod_id.to_string(), registered[2]);
    assert!(page.next.is_some());

    // Payments: by status, customer and reservation.
    let (_, _, body) = s.get(format!("{}/payments?status=declined", s.http)).await;
    let page: Page<Payment> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].amount_cents, 500_000);
    assert!(page.items[0].decline_reason.is_some());
    assert_eq!(page.items[0].customer_id, None);
    let (_, _, body) = s
        .get(format!("{}/payments?customer_id={ada}", s.http))
        .await;
    let page: Page<Payment> = serde_json::from_value(body).unwrap();
    let statuses: Vec<_> = page.items.iter().map(|p| p.status.as_str()).collect();
    assert_eq!(statuses, ["approved", "refunded"]);
    let (_, _, body) = s
        .get(format!(
            "{}/payments?reservation_id={}",
            s.http, reservations[2]
        ))
        .await;
    let page: Page<Payment> = serde_json::from_value(body).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        page.items[0].customer_id.map(|c| c.to_string()),
        Some(bob.clone())
    );

    for (path, parameter, status) in [
        ("messages?status=sent", "status", 400),
        ("messages?reservation_id=7", "reservation_id", 400),
        ("messages?limit=1&limit=2", "limit", 400),
        ("paymethods?customer_id=x", "customer_id", 400),
        ("paymethods?limit=500", "limit", 422),
        ("payments?status=lost", "status", 422),
        ("payments?after=zzz", "after", 400),
    ] {
        let (got, headers, body) = s.get(format!("{}/{path}", s.http)).await;
        assert_eq!(
            (got, body["parameter"].as_str()),
            (status, Some(parameter)),
            "{path}: {body}"
        );
        assert_eq!(headers["content-type"], "application/problem+json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_metrics_and_correlation_ids() {
    let s = start(Duration::from_secs(1)).await;
    let (status, _, doc) = s.get(format!("{}/openapi.json", s.http)).await;
    assert_eq!(status, 200);
    for path in [
        "/dashboard",
        "/dashboard/{reservation_id}",
        "/reservations/{reservation_id}/timeline",
        "/messages",
        "/paymethods",
        "/payments",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["DashboardEntry"].is_object());

    // A correlation id given is returned; one is made when none is given.
    let client = s.client();
    let response = client
        .get(format!("{}/dashboard", s.http))
        .header("x-correlation-id", "order-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "order-42");
    let response = client
        .get(format!("{}/healthz", s.http))
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");

    let metrics = client
        .get(format!("{}/metrics", s.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{route="/dashboard",status="200"}"#),
        "{metrics}"
    );
}
