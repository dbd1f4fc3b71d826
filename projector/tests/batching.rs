//! The dashboard writes a batch's new reservations once each, in their latest state, instead
//! of inserting and then updating them event by event. This checks that doing so changes
//! nothing: a log where every kind of event follows a reservation requested just before it
//! (its payment refunded, a message about it, its customer forgotten, its payment method
//! changed), projected one event per batch and all in one batch, gives the same tables; and
//! so does a second batch whose payments change rows an earlier batch wrote.

use std::sync::Arc;
use std::time::Duration;

use customer_keys::PostgresKeys;
use deadpool_postgres::Pool;
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::{CleaningRequested, ReservationEvent};
use domain::{
    CustomerId, MaskedNumber, MessageId, Money, PaymentId, PaymethodId, PaymethodKind, Personal,
    ReservationId,
};
use events::{Event, KeyStore, Metadata};
use kurrentdb::{AppendToStreamOptions, EventData};
use projector::{BatchSettings, Projector};

/// Appends `event` to `stream`, sealed with `customer`'s key where it carries personal data;
/// returns its position.
async fn append(
    running: &testkit::Running,
    stream: String,
    event: Event,
    customer: Option<CustomerId>,
) -> u64 {
    let key = match customer {
        Some(customer) => Some(running.keys.key_for_writing(customer).await.unwrap()),
        None => None,
    };
    let encoded = events::encode(&event, key.as_ref()).unwrap();
    let data: serde_json::Value = serde_json::from_slice(&encoded.data).unwrap();
    let metadata = Metadata {
        schema_version: encoded.version,
        ..Metadata::new(uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), None)
    };
    running
        .event_store_client()
        .append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            EventData::json(encoded.event_type, &data)
                .unwrap()
                .metadata_as_json(&metadata)
                .unwrap(),
        )
        .await
        .unwrap()
        .position
        .commit
}

fn requested(r: ReservationId, customer: CustomerId, payment: PaymentId) -> Event {
    Event::Reservation(ReservationEvent::CleaningRequested(CleaningRequested {
        reservation_id: r,
        customer_id: customer,
        customer_name: Personal::new("Ada Lovelace".to_string()),
        place: Personal::new("12 Analytical Row".to_string()),
        request_date: chrono::Utc::now().date_naive(),
        price: Money::from_stored_cents(12_500),
        payment_id: payment,
    }))
}

fn approved(payment: PaymentId, r: ReservationId, kind: PaymethodKind) -> Event {
    Event::Payment(PaymentEvent::PaymentApproved {
        payment_id: payment,
        reservation_id: r,
        amount: Money::from_stored_cents(12_500),
        paymethod_kind: Some(kind),
    })
}

fn started(r: ReservationId, cleaner: Option<&str>) -> Event {
    Event::Reservation(ReservationEvent::CleaningStarted {
        reservation_id: r,
        cleaner: cleaner.map(str::to_string),
    })
}

/// A message to `customer` about reservation `r`.
async fn notify(
    s: &testkit::Running,
    customer: CustomerId,
    r: ReservationId,
    cause: &str,
    text: &str,
) {
    let message_id = MessageId::new();
    let sent = MessageEvent::MessageSent {
        message_id,
        customer_id: customer,
        recipient: Personal::new("ada@example.com".to_string()),
        reservation_id: Some(r),
        text: Personal::new(text.to_string()),
        cause: cause.into(),
    };
    append(
        s,
        events::streams::message(message_id),
        Event::Message(sent),
        Some(customer),
    )
    .await;
}

/// Projects the log into `pool` up to `last`, `max_events` at a time.
async fn project(running: &testkit::Running, pool: &Pool, max_events: usize, last: u64) {
    let projector = Arc::new(Projector::<PostgresKeys> {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings {
            max_events,
            max_wait: Duration::from_millis(50),
        },
        on_poison: Default::default(),
    });
    let running = projector.clone();
    let task = tokio::spawn(async move { running.run(std::future::pending()).await });
    for _ in 0..500 {
        if projector
            .checkpoint()
            .await
            .unwrap()
            .is_some_and(|p| p >= last)
        {
            task.abort();
            let _ = task.await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the projection never reached position {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_and_one_event_per_batch_give_the_same_tables() {
    let s = testkit::Running::start().await;
    let (ada, bob, cy) = (CustomerId::new(), CustomerId::new(), CustomerId::new());
    let (r1, r2, r3, r4, r5) = (
        ReservationId::new(),
        ReservationId::new(),
        ReservationId::new(),
        ReservationId::new(),
        ReservationId::new(),
    );
    let (p1, p2, p3, p4, p5) = (
        PaymentId::new(),
        PaymentId::new(),
        PaymentId::new(),
        PaymentId::new(),
        PaymentId::new(),
    );
    let method = PaymethodId::new();
    let card = |kind| MaskedNumber::mask(kind, "4111111111111111").unwrap();
    use events::streams::{customer, payment, paymethod, reservation};

    // Two reservations interleaved: one cleaned and messaged about, one cancelled and
    // refunded after its request (a payment event on a row held in memory).
    append(
        &s,
        payment(p1),
        approved(p1, r1, PaymethodKind::CreditCard),
        None,
    )
    .await;
    append(
        &s,
        payment(p2),
        approved(p2, r2, PaymethodKind::CreditCard),
        None,
    )
    .await;
    append(&s, reservation(r1), requested(r1, ada, p1), Some(ada)).await;
    append(&s, reservation(r2), requested(r2, ada, p2), Some(ada)).await;
    append(&s, reservation(r1), started(r1, Some("Ann")), None).await;
    let cancelled = ReservationEvent::ReservationCancelled {
        reservation_id: r2,
        reason: "plans changed".into(),
    };
    append(&s, reservation(r2), Event::Reservation(cancelled), None).await;
    let completed = ReservationEvent::CleaningCompleted { reservation_id: r1 };
    append(&s, reservation(r1), Event::Reservation(completed), None).await;
    let refunded = PaymentEvent::PaymentCancelled {
        payment_id: p2,
        reservation_id: r2,
        amount: Money::from_stored_cents(12_500),
    };
    append(&s, payment(p2), Event::Payment(refunded), None).await;
    notify(&s, ada, r1, "cleaning_completed", "Your place is clean").await;

    // A payment method changed while a reservation paid with it is held in memory.
    let registered = PaymethodEvent::PaymethodRegistered {
        paymethod_id: method,
        customer_id: bob,
        customer_name: Personal::new("Bob".to_string()),
        kind: PaymethodKind::DebitCard,
        masked_number: card(PaymethodKind::DebitCard),
    };
    append(
        &s,
        paymethod(method),
        Event::Paymethod(registered),
        Some(bob),
    )
    .await;
    append(
        &s,
        payment(p3),
        approved(p3, r3, PaymethodKind::DebitCard),
        None,
    )
    .await;
    append(&s, reservation(r3), requested(r3, bob, p3), Some(bob)).await;
    let changed = PaymethodEvent::PaymethodChanged {
        paymethod_id: method,
        kind: PaymethodKind::CreditCard,
        masked_number: card(PaymethodKind::CreditCard),
    };
    append(&s, paymethod(method), Event::Paymethod(changed), None).await;
    append(&s, reservation(r3), started(r3, None), None).await;

    // A customer forgotten while their reservation is held in memory, and a declined payment
    // whose reservation never came.
    append(
        &s,
        payment(p4),
        approved(p4, r4, PaymethodKind::CreditCard),
        None,
    )
    .await;
    append(&s, reservation(r4), requested(r4, cy, p4), Some(cy)).await;
    let forgotten = CustomerEvent::CustomerForgotten { customer_id: cy };
    append(&s, customer(cy), Event::Customer(forgotten), None).await;
    append(&s, reservation(r4), started(r4, Some("Ann")), None).await;
    let declined = PaymentEvent::PaymentDeclined {
        payment_id: p5,
        reservation_id: r5,
        amount: Money::from_stored_cents(900),
        reason: "insufficient funds".into(),
    };
    let last = append(&s, payment(p5), Event::Payment(declined), None).await;

    let (one_by_one, all_at_once) = (
        testkit::fresh_database().await,
        testkit::fresh_database().await,
    );
    project(&s, &one_by_one, 1, last).await;
    project(&s, &all_at_once, 500, last).await;

    // Then payments of rows written by an earlier batch, each followed by a change of the same
    // row: the two must reach it in log order.
    let refund = |p, r| {
        Event::Payment(PaymentEvent::PaymentCancelled {
            payment_id: p,
            reservation_id: r,
            amount: Money::from_stored_cents(12_500),
        })
    };
    append(&s, payment(p1), refund(p1, r1), None).await;
    notify(&s, ada, r1, "payment_refunded", "Your money is back").await;
    append(&s, payment(p3), refund(p3, r3), None).await;
    let cancelled = ReservationEvent::ReservationCancelled {
        reservation_id: r3,
        reason: "no longer needed".into(),
    };
    let last = append(&s, reservation(r3), Event::Reservation(cancelled), None).await;
    project(&s, &one_by_one, 1, last).await;
    project(&s, &all_at_once, 500, last).await;
    let tables = projector::rebuild::all_tables();
    let expected = testkit::dump(&one_by_one, &tables).await;
    assert_eq!(testkit::dump(&all_at_once, &tables).await, expected);

    // And what they agree on is right.
    let row = |r: ReservationId| {
        let pool = all_at_once.clone();
        async move {
            pool.get()
                .await
                .unwrap()
                .query_one(
                    "SELECT status, cleaner, payment_status, payment_kind, personal_erased,
                            last_notification
                     FROM dashboard WHERE reservation_id = $1",
                    &[&r.uuid()],
                )
                .await
                .unwrap()
        }
    };
    let r = row(r1).await;
    assert_eq!(r.get::<_, String>(0), "cleaning_completed");
    assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("Ann"));
    assert_eq!(r.get::<_, String>(2), "refunded");
    assert!(r.get::<_, String>(5).contains("Your money is back"));
    let r = row(r2).await;
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(2)),
        ("cancelled".into(), "refunded".into())
    );
    let r = row(r3).await;
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        ("cancelled".into(), "refunded".into(), "credit_card".into())
    );
    let r = row(r4).await;
    assert_eq!(r.get::<_, String>(0), "cleaning_started");
    assert!(r.get::<_, bool>(4));
    let counts = all_at_once
        .get()
        .await
        .unwrap()
        .query(
            "SELECT status, reservations FROM reservations_by_status WHERE reservations <> 0
             ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(
        counts,
        [
            ("cancelled".to_string(), 2),
            ("cleaning_completed".to_string(), 1),
            ("cleaning_started".to_string(), 1)
        ]
    );
}
