//! Crypto-shredding end to end: the real command side seals with the PostgreSQL key store, the
//! raw log (read with the `kurrentdb` client) never holds personal data in plain text, and after
//! `ForgetCustomer` nothing in the log can be opened again while every other fact still projects.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::customer_service_client::CustomerServiceClient;
use command_side::proto::message_service_client::MessageServiceClient;
use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::paymethod_service_client::PaymethodServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use events::KeyStore;
use kurrentdb::ReadAllOptions;
use projector::{BatchSettings, Projector};

const NAME: &str = "Grace Hopper";
const PLACE: &str = "7 Compiler Lane";
const CARD: &str = "4111111111111111";
const RECIPIENT: &str = "grace@example.org";
const TEXT: &str = "The cleaner arrives at nine";

/// Every stored event of ours: (type, data, metadata).
async fn raw_events(running: &testkit::Running) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let client = running.event_store_client();
    let mut stream = client
        .read_all(&ReadAllOptions::default().max_count(usize::MAX))
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some(event) = stream.next().await.unwrap() {
        let recorded = event.get_original_event();
        if !recorded.event_type.starts_with('$') {
            found.push((
                recorded.event_type.clone(),
                recorded.data.to_vec(),
                recorded.custom_metadata.to_vec(),
            ));
        }
    }
    found
}

fn assert_no_plaintext(events: &[(String, Vec<u8>, Vec<u8>)]) {
    for (event_type, data, metadata) in events {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(metadata)
        );
        for secret in [NAME, PLACE, CARD, RECIPIENT, TEXT, "Grace", "Compiler"] {
            assert!(
                !text.contains(secret),
                "{event_type} holds {secret:?} in plain text: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_cannot_be_read_back_from_any_event() {
    let running = testkit::Running::start().await;
    let customer = uuid::Uuid::new_v4().to_string();
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let mut paymethods = PaymethodServiceClient::new(running.commands.clone());
    let mut messages = MessageServiceClient::new(running.commands.clone());

    // One of every event that carries personal data, and the others around it.
    let mut request = testkit::apply_request(&customer, 9_900);
    request.customer_name = NAME.into();
    request.place = PLACE.into();
    let kept = reservations
        .apply_reservation(request.clone())
        .await
        .unwrap()
        .into_inner();
    request.request_id = uuid::Uuid::new_v4().to_string();
    let cancelled = reservations
        .apply_reservation(request)
        .await
        .unwrap()
        .into_inner();
    reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: cancelled.id.clone(),
            reason: "plans changed".into(),
        })
        .await
        .unwrap();
    reservations
        .start_cleaning(StartCleaningRequest {
            request_id: String::new(),
            reservation_id: kept.id.clone(),
            cleaner: "Team A".into(),
        })
        .await
        .unwrap();
    reservations
        .complete_cleaning(CompleteCleaningRequest {
            request_id: String::new(),
            reservation_id: kept.id.clone(),
        })
        .await
        .unwrap();
    // A declined payment (over the simulated provider's limit) and a refunded one.
    let mut declined = testkit::apply_request(&customer, 500_000);
    declined.customer_name = NAME.into();
    let declined = reservations.apply_reservation(declined).await.unwrap_err();
    assert_eq!(declined.code(), tonic::Code::FailedPrecondition);
    let mut payments = PaymentServiceClient::new(running.commands.clone());
    let payment_id = uuid::Uuid::new_v4().to_string();
    payments
        .pay(PayRequest {
            request_id: String::new(),
            payment_id: payment_id.clone(),
            reservation_id: uuid::Uuid::new_v4().to_string(),
            amount_cents: 1_000,
            paymethod_kind: "bank_account".into(),
        })
        .await
        .unwrap();
    payments
        .cancel_payment(CancelPaymentRequest {
            request_id: String::new(),
            payment_id,
        })
        .await
        .unwrap();
    let paymethod = paymethods
        .register_paymethod(RegisterPaymethodRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
            customer_name: NAME.into(),
            kind: "credit_card".into(),
            number: CARD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    paymethods
        .change_paymethod(ChangePaymethodRequest {
            request_id: String::new(),
            paymethod_id: paymethod.id.clone(),
            kind: "debit_card".into(),
            number: "5555555555554444".into(),
        })
        .await
        .unwrap();
    messages
        .send_message(SendMessageRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
            recipient: RECIPIENT.into(),
            reservation_id: kept.id.clone(),
            text: TEXT.into(),
            cause: String::new(),
        })
        .await
        .unwrap();

    let before = raw_events(&running).await;
    let types: std::collections::BTreeSet<&str> =
        before.iter().map(|(t, _, _)| t.as_str()).collect();
    for expected in [
        "CleaningRequested",
        "CleaningStarted",
        "CleaningCompleted",
        "ReservationCancelled",
        "PaymentApproved",
        "PaymentDeclined",
        "PaymentCancelled",
        "PaymethodRegistered",
        "PaymethodChanged",
        "MessageSent",
    ] {
        assert!(types.contains(expected), "no {expected} in {types:?}");
    }
    assert_no_plaintext(&before);

    // The sealed events name this customer's key, and the key store opens them until forgotten.
    let sealed_with: Vec<String> = before
        .iter()
        .filter_map(|(t, data, _)| events::sealing_key_id(t, data))
        .collect();
    assert_eq!(sealed_with.len(), 4, "two requests, a paymethod, a message");
    assert!(running
        .keys
        .key_for_reading(&sealed_with[0])
        .await
        .unwrap()
        .is_some());

    let forgotten = CustomerServiceClient::new(running.commands.clone())
        .forget_customer(ForgetCustomerRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // The log is unchanged (events are immutable) and still holds nothing readable; no key
    // opens it any more.
    let after = raw_events(&running).await;
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.last().unwrap().0, "CustomerForgotten");
    assert_no_plaintext(&after);
    for key_id in &sealed_with {
        assert!(running
            .keys
            .key_for_reading(key_id)
            .await
            .unwrap()
            .is_none());
    }
    for (event_type, data, metadata) in &after {
        let metadata: events::Metadata = serde_json::from_slice(metadata).unwrap();
        let event = events::decode(event_type, metadata.schema_version, data, None).unwrap();
        let shown = format!("{event:?}");
        assert!(
            !shown.contains("Grace") && !shown.contains("grace@"),
            "{shown}"
        );
    }

    // New personal data for them is refused, with the reason.
    let refused = MessageServiceClient::new(running.commands.clone())
        .send_message(SendMessageRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
            recipient: RECIPIENT.into(),
            reservation_id: String::new(),
            text: "again".into(),
            cause: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("forgotten"),
        "{}",
        refused.message()
    );

    // A fresh projection from the whole log (a rebuild): no crash on the destroyed key, the
    // personal fields erased, and the statuses and amounts intact.
    let pool = testkit::fresh_database().await;
    let projector = Arc::new(Projector {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings::default(),
        on_poison: Default::default(),
    });
    let projecting = tokio::spawn({
        let projector = projector.clone();
        async move { projector.run(std::future::pending()).await }
    });
    for _ in 0..500 {
        if projector
            .checkpoint()
            .await
            .unwrap()
            .is_some_and(|p| p >= forgotten.position)
        {
            break;
        }
        assert!(!projecting.is_finished(), "the projector stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT reservation_id::text, status, price_cents, customer_name, place, personal_erased
             FROM dashboard ORDER BY status",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, i64, Option<String>, Option<String>, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                cancelled.id.clone(),
                "cancelled".into(),
                9_900,
                None,
                None,
                true
            ),
            (
                kept.id.clone(),
                "cleaning_completed".into(),
                9_900,
                None,
                None,
                true
            ),
        ]
    );
    projecting.abort();
}
