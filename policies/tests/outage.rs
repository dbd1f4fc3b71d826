//! The event store going away under the running `policies` binary: it stays up, reports not
//! ready, reconnects with backoff and resumes from its checkpoints when the store returns; a
//! cancellation made during the outage is refunded afterwards, once.

mod common;

use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::CancelReservationRequest;

/// Applies and cancels a reservation; returns its payment's stream.
async fn cancelled(running: &testkit::Running) -> String {
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let applied = reservations
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            5_000,
        ))
        .await
        .unwrap()
        .into_inner();
    reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: applied.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap();
    let first = running
        .event_store_client()
        .read_stream(format!("reservation-{}", applied.id), &Default::default())
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let data: serde_json::Value = serde_json::from_slice(&first.get_original_event().data).unwrap();
    format!("payment-{}", data["payment_id"].as_str().unwrap())
}

/// The event store's port, from its URL.
fn store_port(running: &testkit::Running) -> u16 {
    running
        .event_store_url
        .trim_start_matches("esdb://127.0.0.1:")
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn refunds(running: &testkit::Running, stream: &str) -> usize {
    let mut read = running
        .event_store_client()
        .read_stream(stream, &Default::default())
        .await
        .unwrap();
    let mut count = 0;
    while let Ok(Some(event)) = read.next().await {
        count += usize::from(event.get_original_event().event_type == "PaymentCancelled");
    }
    count
}

async fn ready(operations: &str) -> Option<u16> {
    reqwest::get(format!("{operations}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policies_wait_out_an_event_store_outage_and_resume() {
    let running = testkit::Running::start().await;
    let link = testkit::Link::to(store_port(&running)).await;
    let (database, _pool) = testkit::fresh_named_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let operations = format!("http://127.0.0.1:{port}");
    let mut child = common::policies(&running, &database)
        .env(
            "EVENT_STORE_URL",
            format!("esdb://127.0.0.1:{}?tls=false", link.port),
        )
        .env("METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();

    let before = cancelled(&running).await;
    eventually("the first cancellation refunded", || async {
        refunds(&running, &before).await == 1
    })
    .await;
    eventually("ready", || async { ready(&operations).await == Some(200) }).await;

    link.cut();
    eventually("not ready during the outage", || async {
        ready(&operations).await == Some(503)
    })
    .await;
    let during = cancelled(&running).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the policies exited");
    assert_eq!(refunds(&running, &during).await, 0);

    link.restore();
    eventually(
        "the cancellation made during the outage refunded",
        || async { refunds(&running, &during).await == 1 },
    )
    .await;
    eventually("ready again", || async {
        ready(&operations).await == Some(200)
    })
    .await;
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(refunds(&running, &before).await, 1, "refunded once");
}

/// The cluster's port, as the environment (`pg_virtualenv`) gives it.
fn cluster_port() -> u16 {
    let env = read_models::config_from_env().expect("database settings");
    env.get_ports().first().copied().unwrap_or(5432)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policies_wait_out_a_postgresql_outage_and_resume() {
    let running = testkit::Running::start().await;
    let (database, _pool) = testkit::fresh_named_database().await;
    let link = testkit::Link::to(cluster_port()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let operations = format!("http://127.0.0.1:{port}");
    // Their checkpoints and state only through the link.
    let mut child = common::policies(&running, &database)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", link.port.to_string())
        .env("METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();

    let before = cancelled(&running).await;
    eventually("the first cancellation refunded", || async {
        refunds(&running, &before).await == 1
    })
    .await;
    eventually("ready", || async { ready(&operations).await == Some(200) }).await;

    // PostgreSQL goes away while cancellations keep coming.
    link.cut();
    let during = cancelled(&running).await;
    eventually("not ready during the outage", || async {
        ready(&operations).await == Some(503)
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the policies exited");

    link.restore();
    eventually(
        "the cancellation made during the outage refunded",
        || async { refunds(&running, &during).await == 1 },
    )
    .await;
    eventually("ready again", || async {
        ready(&operations).await == Some(200)
    })
    .await;
    assert_eq!(refunds(&running, &before).await, 1, "refunded once");
    assert_eq!(refunds(&running, &during).await, 1, "refunded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_policies_while_a_command_waits_for_an_answer() {
    let running = testkit::Running::start().await;
    let command_port: u16 = running
        .command_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let link = testkit::Link::to(command_port).await;
    let (database, _pool) = testkit::fresh_named_database().await;
    let start = || {
        common::policies(&running, &database)
            .env(
                "COMMAND_ENDPOINT",
                format!("http://127.0.0.1:{}", link.port),
            )
            .env(
                "PAYMENT_ENDPOINT",
                format!("http://127.0.0.1:{}", link.port),
            )
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let before = cancelled(&running).await;
    eventually("the first cancellation refunded", || async {
        refunds(&running, &before).await == 1
    })
    .await;

    // The command side cannot be reached: the refund of the next cancellation is retried...
    link.cut();
    let during = cancelled(&running).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(refunds(&running, &during).await, 0);
    // ...and SIGTERM stops the process all the same, without waiting for an answer.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the policies did not stop within 10 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    // What it had not finished is done, once, by the next one.
    link.restore();
    let mut next = start();
    eventually("the interrupted refund made", || async {
        refunds(&running, &during).await == 1
    })
    .await;
    assert!(next.try_wait().unwrap().is_none());
    assert_eq!(refunds(&running, &before).await, 1, "refunded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_started_while_the_event_store_is_away_work_once_it_is_back() {
    let running = testkit::Running::start().await;
    let link = testkit::Link::to(store_port(&running)).await;
    let (database, _pool) = testkit::fresh_named_database().await;
    // Away before the policies make their first call to it.
    link.cut();
    let mut child = common::policies(&running, &database)
        .env(
            "EVENT_STORE_URL",
            format!("esdb://127.0.0.1:{}?tls=false", link.port),
        )
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the policies exited");

    // The official client gives up for good when its first connection fails; the policies
    // must not keep that client.
    link.restore();
    let cancelled = cancelled(&running).await;
    eventually("the cancellation refunded", || async {
        refunds(&running, &cancelled).await == 1
    })
    .await;
}
