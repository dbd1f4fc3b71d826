//! The payment process killed while reservations are being applied: the command side's circuit
//! opens, callers get UNAVAILABLE at once, nothing is half-applied (no reservation without its
//! approved payment, none for a refused call), and it recovers when payment returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_contract::reservation_service_client::ReservationServiceClient;
use tokio::process::{Child, Command};
use tonic::Code;

/// The payment binary, as deployed: a process of its own, on `port`.
fn start_payment(port: u16, event_store_url: &str, issuer: &dev_issuer::Issuer) -> Child {
    Command::new(env!("CARGO_BIN_EXE_payment"))
        .env("PAYMENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("EVENT_STORE_URL", event_store_url)
        .env("AUTH_ISSUER", issuer.url())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("the payment binary starts")
}

/// What one `ApplyReservation` came to.
#[derive(Debug)]
struct Outcome {
    request_id: uuid::Uuid,
    code: Code,
    message: String,
    took: Duration,
    at: Instant,
}

/// The event types in a stream, with the first event's data.
async fn stream(client: &kurrentdb::Client, name: &str) -> (Vec<String>, serde_json::Value) {
    let mut types = Vec::new();
    let mut first = serde_json::Value::Null;
    let Ok(mut read) = client.read_stream(name, &Default::default()).await else {
        return (types, first);
    };
    while let Ok(Some(event)) = read.next().await {
        let event = event.get_original_event();
        if types.is_empty() {
            first = serde_json::from_slice(&event.data).unwrap_or_default();
        }
        types.push(event.event_type.clone());
    }
    (types, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_killed_under_load_opens_the_circuit_leaves_nothing_half_applied_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = event_store::storage::Store::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let event_store_url = format!("esdb://{}?tls=false", listener.local_addr().unwrap());
    tokio::spawn(event_store::server::serve(
        listener,
        store,
        Default::default(),
        std::future::pending(),
    ));
    let issuer = testkit::issuer().await;
    let payment_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut payment = start_payment(payment_port, &event_store_url, &issuer);

    let mut config = testkit::command_config(&issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let commands = listener.local_addr().unwrap();
    config.server.listen = commands;
    config.server.event_store_url = event_store_url.clone();
    config.payment_endpoint = format!("http://127.0.0.1:{payment_port}");
    config.payment_timeout = Duration::from_millis(500);
    config.breaker_failures = 3;
    config.breaker_open = Duration::from_millis(500);
    let keys = Arc::new(events::InMemoryKeys::default());
    tokio::spawn(command_side::serve(
        config,
        keys,
        listener,
        std::future::pending(),
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{commands}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ReservationServiceClient::new(testkit::as_admin(&channel, &issuer));

    // Eight clients apply without pause until told to stop.
    let running = Arc::new(AtomicBool::new(true));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (mut client, running, outcomes) = (client.clone(), running.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let request = testkit::apply_request(&uuid::Uuid::new_v4().to_string(), 2_000);
                let request_id = request.request_id.parse().unwrap();
                let started = Instant::now();
                let (code, message) = match client.apply_reservation(request).await {
                    Ok(_) => (Code::Ok, String::new()),
                    Err(status) => (status.code(), status.message().to_string()),
                };
                outcomes.lock().unwrap().push(Outcome {
                    request_id,
                    code,
                    message,
                    took: started.elapsed(),
                    at: Instant::now(),
                });
                if code != Code::Ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let count = |code: Code, since: Instant| {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.code == code && o.at >= since)
            .count()
    };
    let began = Instant::now();
    let deadline = began + Duration::from_secs(30);
    while count(Code::Ok, began) < 20 {
        assert!(Instant::now() < deadline, "no reservations were applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Payment dies at once, with calls in flight.
    payment.start_kill().unwrap();
    payment.wait().await.unwrap();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_until = Instant::now();

    // Payment comes back on the same address; applications succeed again by themselves.
    let _payment = start_payment(payment_port, &event_store_url, &issuer);
    let back = Instant::now();
    while count(Code::Ok, back) < 20 {
        assert!(
            Instant::now() < back + Duration::from_secs(30),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    // Every failure is UNAVAILABLE with a retry hint in its message, never anything else.
    for o in outcomes.iter().filter(|o| o.code != Code::Ok) {
        assert_eq!(o.code, Code::Unavailable, "{o:?}");
        assert!(o.message.contains("try again later"), "{o:?}");
    }
    // While payment was down, callers were told so fast: each within the payment deadline and
    // a little, and once the circuit opened, without calling at all.
    let down: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.at > killed + Duration::from_millis(600) && o.at < down_until)
        .collect();
    assert!(!down.is_empty());
    assert!(
        down.iter().all(|o| o.code == Code::Unavailable),
        "a call succeeded while payment was down"
    );
    assert!(
        down.iter().all(|o| o.took < Duration::from_millis(1_500)),
        "slow refusals: {:?}",
        down.iter().map(|o| o.took).max()
    );
    assert!(
        down.iter().any(|o| o.message.contains("circuit open")),
        "the circuit never opened"
    );

    // Nothing half-applied: an acknowledged application has its reservation and its approved
    // payment; a refused one has no reservation (its payment, if it was approved before payment
    // died, is an orphan that the policies refund: policies/tests/notify_and_orphans.rs).
    let client = kurrentdb::Client::new(event_store_url.parse().unwrap()).unwrap();
    let mut tally = BTreeMap::new();
    for o in &outcomes {
        let reservation = uuid::Uuid::new_v5(&o.request_id, b"reservation");
        let payment = uuid::Uuid::new_v5(&o.request_id, b"payment");
        let (reservation_events, first) =
            stream(&client, &format!("reservation-{reservation}")).await;
        let (payment_events, _) = stream(&client, &format!("payment-{payment}")).await;
        if o.code == Code::Ok {
            assert_eq!(reservation_events, ["CleaningRequested"], "{o:?}");
            assert_eq!(first["payment_id"], payment.to_string());
            assert_eq!(payment_events, ["PaymentApproved"], "{o:?}");
        } else {
            assert!(reservation_events.is_empty(), "half-applied: {o:?}");
            assert!(
                payment_events.is_empty() || payment_events == ["PaymentApproved"],
                "{o:?}: {payment_events:?}"
            );
        }
        let kind = match (o.code, payment_events.is_empty()) {
            (Code::Ok, _) => "applied",
            (_, true) => "refused, nothing written",
            (_, false) => "refused, payment approved (an orphan to refund)",
        };
        *tally.entry(kind).or_insert(0) += 1;
    }
    println!("{tally:?}");
}
