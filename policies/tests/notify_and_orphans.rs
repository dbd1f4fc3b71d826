//! The notification policy tells the customer every step once, with the request's correlation
//! id; the orphaned-payment policy refunds an approved payment that never got its reservation,
//! and only that one, and cancels a reservation that lands on a payment it had refunded.

use std::collections::BTreeMap;
use std::time::Duration;

use command_side::proto::message_service_client::MessageServiceClient;
use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::paymethod_service_client::PaymethodServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use domain::message::MessageEvent;
use events::{Event, KeyStore, Metadata};
use kurrentdb::ReadAllOptions;
use policies::{NotifyCustomer, RefundOnCancel, RefundOrphanedPayments};

/// Every message in the log: (cause, customer, reservation, text, correlation id).
async fn messages(
    running: &testkit::Running,
) -> Vec<(String, String, Option<String>, String, String)> {
    let client = running.event_store_client();
    let mut read = client
        .read_all(&ReadAllOptions::default().max_count(usize::MAX))
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        let recorded = event.get_original_event();
        if recorded.event_type != "MessageSent" {
            continue;
        }
        let metadata: Metadata = serde_json::from_slice(&recorded.custom_metadata).unwrap();
        let key_id = events::sealing_key_id(&recorded.event_type, &recorded.data).unwrap();
        let key = running.keys.key_for_reading(&key_id).await.unwrap();
        let decoded =
            events::decode(&recorded.event_type, 1, &recorded.data, key.as_ref()).unwrap();
        let Event::Message(MessageEvent::MessageSent {
            customer_id,
            reservation_id,
            text,
            cause,
            ..
        }) = decoded
        else {
            unreachable!()
        };
        found.push((
            cause,
            customer_id.to_string(),
            reservation_id.map(|r| r.to_string()),
            text.expose().cloned().unwrap_or_default(),
            metadata.correlation_id.to_string(),
        ));
    }
    found
}

fn with_correlation<T>(message: T, correlation: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_told_to_the_customer_once() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let spawn_policies = || {
        let notify = NotifyCustomer {
            events: running.event_store_client(),
            messages: MessageServiceClient::new(running.commands.clone()),
        };
        let refunds = RefundOnCancel {
            events: running.event_store_client(),
            payments: PaymentServiceClient::new(running.commands.clone()),
        };
        let (events, pool) = (running.event_store_client(), pool.clone());
        tokio::spawn(async move {
            tokio::try_join!(
                policies::consume(&notify, &events, &pool, std::future::pending()),
                policies::consume(&refunds, &events, &pool, std::future::pending()),
            )
        })
    };
    let task = spawn_policies();

    let customer = uuid::Uuid::new_v4().to_string();
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let kept = reservations
        .apply_reservation(with_correlation(
            testkit::apply_request(&customer, 12_500),
            "11111111-1111-1111-1111-111111111111",
        ))
        .await
        .unwrap()
        .into_inner();
    for step in 0..2 {
        let id = kept.id.clone();
        if step == 0 {
            reservations
                .start_cleaning(StartCleaningRequest {
                    request_id: String::new(),
                    reservation_id: id,
                    cleaner: String::new(),
                })
                .await
                .unwrap();
        } else {
            reservations
                .complete_cleaning(CompleteCleaningRequest {
                    request_id: String::new(),
                    reservation_id: id,
                })
                .await
                .unwrap();
        }
    }
    let cancelled = reservations
        .apply_reservation(testkit::apply_request(&customer, 4_000))
        .await
        .unwrap()
        .into_inner();
    reservations
        .cancel_reservation(with_correlation(
            CancelReservationRequest {
                request_id: String::new(),
                reservation_id: cancelled.id.clone(),
                reason: "moved".into(),
            },
            "22222222-2222-2222-2222-222222222222",
        ))
        .await
        .unwrap();
    let mut paymethods = PaymethodServiceClient::new(running.commands.clone());
    let paymethod = paymethods
        .register_paymethod(RegisterPaymethodRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
            customer_name: "Ada Lovelace".into(),
            kind: "credit_card".into(),
            number: "4111111111111111".into(),
        })
        .await
        .unwrap()
        .into_inner();
    paymethods
        .change_paymethod(ChangePaymethodRequest {
            request_id: String::new(),
            paymethod_id: paymethod.id,
            kind: "debit_card".into(),
            number: "5555555555554444".into(),
        })
        .await
        .unwrap();

    let expected = 8;
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen = messages(&running).await;
        if seen.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
    for (cause, who, _, _, _) in &seen {
        *causes.entry(cause.as_str()).or_default() += 1;
        assert_eq!(who, &customer);
    }
    assert_eq!(
        causes,
        BTreeMap::from([
            ("CleaningCompleted", 1),
            ("CleaningStarted", 1),
            ("PaymentApproved", 2),
            ("PaymentCancelled", 1),
            ("PaymethodChanged", 1),
            ("PaymethodRegistered", 1),
            ("ReservationCancelled", 1),
        ])
    );
    let approval = seen
        .iter()
        .find(|m| m.0 == "PaymentApproved" && m.2.as_deref() == Some(kept.id.as_str()))
        .unwrap();
    assert!(approval.3.contains("125.00"), "{}", approval.3);
    assert_eq!(approval.4, "11111111-1111-1111-1111-111111111111");
    let refund = seen.iter().find(|m| m.0 == "PaymentCancelled").unwrap();
    assert_eq!(refund.2.as_deref(), Some(cancelled.id.as_str()));
    assert_eq!(
        refund.4, "22222222-2222-2222-2222-222222222222",
        "the chain keeps its correlation"
    );
    let registered = seen.iter().find(|m| m.0 == "PaymethodRegistered").unwrap();
    assert!(
        registered.3.contains("1111") && !registered.3.contains("4111111111111111"),
        "{}",
        registered.3
    );

    // From the beginning again (a lost checkpoint): nothing is told twice.
    task.abort();
    pool.get()
        .await
        .unwrap()
        .execute("DELETE FROM checkpoints", &[])
        .await
        .unwrap();
    let again = spawn_policies();
    for _ in 0..250 {
        let caught_up = pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM checkpoints WHERE projection LIKE 'policy:%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if caught_up == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        messages(&running).await.len(),
        expected,
        "a message was sent twice"
    );
    again.abort();
}

async fn payment_event_types(running: &testkit::Running, payment_id: &str) -> Vec<String> {
    let mut read = running
        .event_store_client()
        .read_stream(format!("payment-{payment_id}"), &Default::default())
        .await
        .unwrap();
    let mut types = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        types.push(e.get_original_event().event_type.clone());
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_payment_is_refunded_and_nothing_else() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let orphans = RefundOrphanedPayments {
        events: running.event_store_client(),
        payments: PaymentServiceClient::new(running.commands.clone()),
        reservations: ReservationServiceClient::new(running.commands.clone()),
        pool: pool.clone(),
        orphan_after: Duration::from_millis(500),
    };
    // A payment approved, then nothing (as if the command side stopped before recording the
    // reservation), and a reservation made the normal way.
    let orphan = uuid::Uuid::new_v4().to_string();
    PaymentServiceClient::new(running.commands.clone())
        .pay(PayRequest {
            request_id: String::new(),
            payment_id: orphan.clone(),
            reservation_id: uuid::Uuid::new_v4().to_string(),
            amount_cents: 9_000,
            paymethod_kind: "debit_card".into(),
        })
        .await
        .unwrap();
    let kept = ReservationServiceClient::new(running.commands.clone())
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            7_000,
        ))
        .await
        .unwrap()
        .into_inner();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = orphans
            .run(async {
                let _ = stopped.await;
            })
            .await;
        (orphans, result)
    });
    for _ in 0..250 {
        if payment_event_types(&running, &orphan).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        payment_event_types(&running, &orphan).await,
        ["PaymentApproved", "PaymentCancelled"]
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let _ = stop.send(());
    let (orphans, result) = task.await.unwrap();
    result.unwrap();
    // Sweeping again changes nothing; the recorded reservation's payment was never touched.
    orphans.sweep().await.unwrap();
    assert_eq!(payment_event_types(&running, &orphan).await.len(), 2);
    let dashboard_payment = running
        .event_store_client()
        .read_stream(format!("reservation-{}", kept.id), &Default::default())
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let payment_id =
        serde_json::from_slice::<serde_json::Value>(&dashboard_payment.get_original_event().data)
            .unwrap()["payment_id"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(
        payment_event_types(&running, &payment_id).await,
        ["PaymentApproved"]
    );
    let left: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orphan_candidates", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// The race the orphan policy must win: a client's retry records its reservation just after the
/// sweep decided the payment was an orphan and refunded it. The reservation is cancelled, so
/// that none stands on refunded money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_recorded_on_a_refunded_payment_is_cancelled() {
    use domain::reservation::{CleaningRequested, ReservationEvent};
    use domain::{CustomerId, Money, PaymentId, Personal, ReservationId};

    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let orphans = RefundOrphanedPayments {
        events: running.event_store_client(),
        payments: PaymentServiceClient::new(running.commands.clone()),
        reservations: ReservationServiceClient::new(running.commands.clone()),
        pool: pool.clone(),
        orphan_after: Duration::from_millis(300),
    };
    let (payment, reservation) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    PaymentServiceClient::new(running.commands.clone())
        .pay(PayRequest {
            request_id: String::new(),
            payment_id: payment.to_string(),
            reservation_id: reservation.to_string(),
            amount_cents: 4_200,
            paymethod_kind: "credit_card".into(),
        })
        .await
        .unwrap();
    let task = tokio::spawn(async move { orphans.run(std::future::pending()).await });
    for _ in 0..250 {
        if payment_event_types(&running, &payment.to_string())
            .await
            .len()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        payment_event_types(&running, &payment.to_string()).await,
        ["PaymentApproved", "PaymentCancelled"]
    );

    // The late reservation, appended as the command side would have.
    let store =
        command_core::store::EventStore::new(running.event_store_client(), running.keys.clone());
    let requested = CleaningRequested {
        reservation_id: ReservationId::from(reservation),
        customer_id: CustomerId::from(uuid::Uuid::new_v4()),
        customer_name: Personal::text("Ada Lovelace", 100).unwrap(),
        place: Personal::text("12 Analytical Row", 100).unwrap(),
        request_date: chrono::Utc::now().date_naive() + chrono::Days::new(3),
        price: Money::from_cents(4_200).unwrap(),
        payment_id: PaymentId::from(payment),
    };
    let context = command_core::store::RequestContext {
        request_id: uuid::Uuid::new_v4(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: uuid::Uuid::new_v4(),
        grant: access::Grant {
            subject: "cleaning-park-services".into(),
            role: access::Role::Service,
            only: None,
        },
    };
    store
        .append(
            &format!("reservation-{reservation}"),
            None,
            &[Event::Reservation(ReservationEvent::CleaningRequested(
                requested,
            ))],
            &context,
        )
        .await
        .unwrap();

    let stream = format!("reservation-{reservation}");
    let mut types = Vec::new();
    for _ in 0..250 {
        types = event_types(&running, &stream).await;
        if types.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(types, ["CleaningRequested", "ReservationCancelled"]);
    // Refunded once, not twice.
    assert_eq!(
        payment_event_types(&running, &payment.to_string()).await,
        ["PaymentApproved", "PaymentCancelled"]
    );
    task.abort();
}

async fn event_types(running: &testkit::Running, stream: &str) -> Vec<String> {
    let Ok(mut read) = running
        .event_store_client()
        .read_stream(stream, &Default::default())
        .await
    else {
        return Vec::new();
    };
    let mut types = Vec::new();
    while let Ok(Some(event)) = read.next().await {
        types.push(event.get_original_event().event_type.clone());
    }
    types
}
