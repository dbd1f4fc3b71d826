//! A cancelled reservation's payment is refunded once, with the request's correlation id and
//! the cancellation as its cause, even when the policy runs its events again.

use std::time::Duration;

use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::CancelReservationRequest;
use policies::RefundOnCancel;

async fn payment_events(
    client: &kurrentdb::Client,
    payment_id: &str,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut read = client
        .read_stream(format!("payment-{payment_id}"), &Default::default())
        .await
        .unwrap();
    while let Some(e) = read.next().await.unwrap() {
        let e = e.get_original_event();
        out.push((
            e.event_type.clone(),
            serde_json::from_slice(&e.custom_metadata).unwrap(),
        ));
    }
    out
}

fn policy(running: &testkit::Running) -> RefundOnCancel {
    RefundOnCancel {
        events: running.event_store_client(),
        payments: PaymentServiceClient::new(running.commands.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_refunds_its_payment_exactly_once() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let first = policy(&running);
    let (events, policy_pool) = (running.event_store_client(), pool.clone());
    let task = tokio::spawn(async move {
        policies::consume(&first, &events, &policy_pool, std::future::pending()).await
    });

    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let applied = reservations
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            6_000,
        ))
        .await
        .unwrap()
        .into_inner();
    let correlation = uuid::Uuid::new_v4();
    let mut cancel = tonic::Request::new(CancelReservationRequest {
        request_id: String::new(),
        reservation_id: applied.id.clone(),
        reason: "moved".into(),
    });
    cancel
        .metadata_mut()
        .insert("x-correlation-id", correlation.to_string().parse().unwrap());
    reservations.cancel_reservation(cancel).await.unwrap();

    let client = running.event_store_client();
    let mut reservation = client
        .read_stream(format!("reservation-{}", applied.id), &Default::default())
        .await
        .unwrap();
    let requested = reservation.next().await.unwrap().unwrap();
    let payment_id =
        serde_json::from_slice::<serde_json::Value>(&requested.get_original_event().data).unwrap()
            ["payment_id"]
            .as_str()
            .unwrap()
            .to_string();
    let cancelled_id = reservation
        .next()
        .await
        .unwrap()
        .unwrap()
        .get_original_event()
        .id;

    let mut events = Vec::new();
    for _ in 0..250 {
        events = payment_events(&client, &payment_id).await;
        if events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["PaymentApproved", "PaymentCancelled"]);
    assert_eq!(events[1].1["correlation_id"], correlation.to_string());
    assert_eq!(events[1].1["causation_id"], cancelled_id.to_string());
    task.abort();

    // Run the policy again from the beginning (its group made anew): it acts on the same
    // event, and nothing changes.
    client
        .delete_persistent_subscription_to_all(policies::REFUND_ON_CANCEL, &Default::default())
        .await
        .unwrap();
    let again = policy(&running);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (events, policy_pool) = (running.event_store_client(), pool.clone());
    let task = tokio::spawn(async move {
        policies::consume(&again, &events, &policy_pool, async {
            let _ = stopped.await;
        })
        .await
    });
    for _ in 0..250 {
        let handled = client
            .get_persistent_subscription_info_to_all(
                policies::REFUND_ON_CANCEL,
                &Default::default(),
            )
            .await
            .is_ok_and(|i| i.stats.total_items >= 1 && i.stats.total_in_flight_messages == 0);
        if handled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(
        payment_events(&client, &payment_id).await.len(),
        2,
        "refunded twice"
    );
}
