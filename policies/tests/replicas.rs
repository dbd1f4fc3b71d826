//! Three `policies` replicas as one consumer group, one of them killed with SIGKILL and started
//! again while the business goes on: the same effects as one replica, each exactly once (every
//! cancellation refunded once, every step told to its customer once), and the work shared.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::CancelReservationRequest;
use kurrentdb::{ReadAllOptions, StreamPosition};
use policies::Policy;

/// One `policies` process on the shared store, command side and database.
fn replica(running: &testkit::Running, database: &str) -> tokio::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    common::policies(running, database)
        .env("METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap()
}

/// Every event of the given types in `$all`, as (type, JSON data).
async fn all_of(running: &testkit::Running, types: &[&str]) -> Vec<(String, serde_json::Value)> {
    let client = running.event_store_client();
    let mut read = client
        .read_all(
            &ReadAllOptions::default()
                .position(StreamPosition::Start)
                .max_count(usize::MAX),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(event)) = read.next().await {
        let e = event.get_original_event();
        if types.contains(&e.event_type.as_str()) {
            out.push((
                e.event_type.clone(),
                serde_json::from_slice(&e.data).unwrap_or_default(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_a_kill_have_the_effects_of_one() {
    let running = testkit::Running::start().await;
    let (database, _pool) = testkit::fresh_named_database().await;
    let mut replicas: Vec<_> = (0..3).map(|_| replica(&running, &database)).collect();
    let client = running.event_store_client();
    // All three members of the refund group before the business starts.
    for _ in 0..300 {
        let members = client
            .get_persistent_subscription_info_to_all(
                policies::REFUND_ON_CANCEL,
                &Default::default(),
            )
            .await
            .map_or(0, |i| i.connections.len());
        if members == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let mut applied = Vec::new();
    for i in 0..12 {
        if i == 6 {
            // One replica dies mid-way, whatever it held goes to the others; it comes back.
            replicas[0].start_kill().unwrap();
            let _ = replicas[0].wait().await;
            replicas[0] = replica(&running, &database);
        }
        let reply = reservations
            .apply_reservation(testkit::apply_request(
                &uuid::Uuid::new_v4().to_string(),
                4_000 + i,
            ))
            .await
            .unwrap()
            .into_inner();
        if i % 2 == 0 {
            reservations
                .cancel_reservation(CancelReservationRequest {
                    request_id: String::new(),
                    reservation_id: reply.id.clone(),
                    reason: "moved".into(),
                })
                .await
                .unwrap();
        }
        applied.push(reply.id);
    }

    // Each reservation: its approval told; each cancelled one also its cancellation and refund.
    let expected_messages = 12 + 6 * 2;
    for _ in 0..300 {
        if all_of(&running, &["MessageSent"]).await.len() >= expected_messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything late would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = all_of(&running, &["MessageSent"]).await;
    let mut told: HashMap<(String, String), usize> = HashMap::new();
    for (_, data) in &messages {
        let key = (
            data["reservation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            data["cause"].as_str().unwrap_or_default().to_string(),
        );
        *told.entry(key).or_default() += 1;
    }
    assert_eq!(messages.len(), expected_messages, "{told:?}");
    assert!(
        told.values().all(|&n| n == 1),
        "a step told twice: {told:?}"
    );
    for (i, id) in applied.iter().enumerate() {
        assert_eq!(told.get(&(id.clone(), "PaymentApproved".into())), Some(&1));
        let cancelled = i % 2 == 0;
        for cause in ["ReservationCancelled", "PaymentCancelled"] {
            let expected = cancelled.then_some(&1);
            assert_eq!(
                told.get(&(id.clone(), cause.into())),
                expected,
                "{id} {cause}"
            );
        }
    }
    let refunds = all_of(&running, &["PaymentCancelled"]).await;
    assert_eq!(refunds.len(), 6, "each cancellation refunded once");

    // The work was shared: more than one member handed events by the refund group.
    let info = client
        .get_persistent_subscription_info_to_all(
            policies::NotifyCustomer::NAME,
            &Default::default(),
        )
        .await
        .unwrap();
    let busy = info
        .connections
        .iter()
        .filter(|c| c.total_items > 0)
        .count();
    assert!(
        busy >= 2,
        "one member did everything: {:?}",
        info.connections
    );
}
