//! Events are kept for ever, so a log holds every shape an event ever had. Here it holds
//! `CleaningRequested` in both its versions: one written as version 1 stored it (`price_cents`,
//! as the code before version 2 wrote it), one written today (version 2, `price` with its
//! currency). The command side cancels the old one, the policies refund its payment and tell the
//! customer, the projector shows both, and a projection from scratch equals the live one.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use domain::reservation::{CleaningRequested, ReservationEvent};
use domain::{Money, Personal};
use events::{Event, KeyStore, Metadata};
use kurrentdb::{AppendToStreamOptions, EventData, StreamState};
use projector::rebuild::all_tables;
use projector::{BatchSettings, Projector};

mod common;

/// `CleaningRequested` as version 1 stored it, from today's payload.
fn as_version_1(data: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
    let fields = v.as_object_mut().unwrap();
    let price = fields.remove("price").unwrap();
    fields.insert("price_cents".into(), price["cents"].clone());
    v
}

fn projector(
    running: &testkit::Running,
    pool: &deadpool_postgres::Pool,
) -> Arc<Projector<customer_keys::PostgresKeys>> {
    Arc::new(Projector {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings {
            max_events: 5,
            max_wait: Duration::from_millis(2),
        },
        on_poison: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_versions_of_an_event_are_read_alike_by_every_part() {
    let running = testkit::Running::start().await;
    let (database, pool) = testkit::fresh_named_database().await;
    let mut policies = common::policies(&running, &database).spawn().unwrap();
    let live = projector(&running, &pool);
    let live_task = tokio::spawn({
        let live = live.clone();
        async move { live.run(std::future::pending()).await }
    });

    // Today's shape, through the command side.
    let customer = uuid::Uuid::new_v4();
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let today = reservations
        .apply_reservation(testkit::apply_request(&customer.to_string(), 12_500))
        .await
        .unwrap()
        .into_inner();

    // The old shape, as the code before version 2 stored it: a paid reservation.
    let (reservation_id, payment_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let paid = PaymentServiceClient::new(running.commands.clone())
        .pay(PayRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            payment_id: payment_id.to_string(),
            reservation_id: reservation_id.to_string(),
            amount_cents: 4_000,
            paymethod_kind: "debit_card".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paid.approved);
    let event = Event::Reservation(ReservationEvent::CleaningRequested(CleaningRequested {
        reservation_id: reservation_id.into(),
        customer_id: customer.into(),
        customer_name: Personal::new("Ada Lovelace".into()),
        place: Personal::new("12 Analytical Row".into()),
        request_date: chrono::Utc::now().date_naive() + chrono::Days::new(5),
        price: Money::from_stored_cents(4_000),
        payment_id: payment_id.into(),
    }));
    let key = running.keys.key_for_writing(customer.into()).await.unwrap();
    let encoded = events::encode(&event, Some(&key)).unwrap();
    assert_eq!(encoded.version, 2, "today's shape is version 2");
    let correlation = uuid::Uuid::new_v4();
    let metadata = Metadata::new(correlation, correlation, None);
    assert_eq!(metadata.schema_version, 1);
    running
        .event_store_client()
        .append_to_stream(
            format!("reservation-{reservation_id}"),
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            EventData::json("CleaningRequested", &as_version_1(&encoded.data))
                .unwrap()
                .metadata_as_json(&metadata)
                .unwrap(),
        )
        .await
        .unwrap();

    // The command side reads the old shape to decide; the policies react to what follows.
    let cancelled = reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: reservation_id.to_string(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.position > today.position);

    let client = pool.get().await.unwrap();
    let mut rows = Vec::new();
    for _ in 0..300 {
        rows = client
            .query(
                "SELECT price_cents, customer_name, status, payment_status FROM dashboard
                 ORDER BY price_cents",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                )
            })
            .collect::<Vec<_>>();
        let told = client
            .query_one(
                "SELECT count(*) FROM messages WHERE reservation_id = $1 AND cause = 'PaymentCancelled'",
                &[&reservation_id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if rows.len() == 2 && rows[0].3 == "refunded" && told == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ada = Some("Ada Lovelace".to_string());
    assert_eq!(
        rows,
        vec![
            (4_000, ada.clone(), "cancelled".into(), "refunded".into()),
            (12_500, ada, "requested".into(), "approved".into()),
        ]
    );

    // A projection from scratch reads both shapes to the same rows.
    let fresh_pool = testkit::fresh_database().await;
    let fresh = projector(&running, &fresh_pool);
    let head = live.checkpoint().await.unwrap().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        fresh.catch_up(&projector::ReadModel::ALL, &|_, _| {}),
    )
    .await
    .expect("caught up")
    .unwrap();
    assert!(fresh.checkpoint().await.unwrap().unwrap() >= head);
    assert_eq!(
        testkit::dump(&fresh_pool, &all_tables()).await,
        testkit::dump(&pool, &all_tables()).await
    );

    live_task.abort();
    policies.start_kill().unwrap();
}
