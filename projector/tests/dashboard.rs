//! The dashboard built by the real projector from the real event store into a real PostgreSQL
//! (run the tests under `pg_virtualenv`, as the README says), driven by the real command side.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use customer_keys::PostgresKeys;
use deadpool_postgres::Pool;
use projector::{BatchSettings, Projector};
use tokio::sync::oneshot;

struct System {
    running: testkit::Running,
    reservations: ReservationServiceClient<access::client::AuthorizedChannel>,
}

async fn start_system() -> System {
    let running = testkit::Running::start().await;
    let reservations = ReservationServiceClient::new(running.commands.clone());
    System {
        running,
        reservations,
    }
}

fn projector(system: &System, pool: &Pool, batches: BatchSettings) -> Projector<PostgresKeys> {
    Projector {
        client: system.running.event_store_client(),
        pool: pool.clone(),
        keys: system.running.keys.clone(),
        batches,
        on_poison: Default::default(),
    }
}

/// Waits until the dashboard has applied `position`.
async fn caught_up(projector: &Projector<PostgresKeys>, position: u64) {
    for _ in 0..500 {
        if projector
            .checkpoint()
            .await
            .unwrap()
            .is_some_and(|p| p >= position)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the dashboard never reached position {position}");
}

async fn row(pool: &Pool, reservation_id: &str) -> tokio_postgres::Row {
    let id = uuid::Uuid::parse_str(reservation_id).unwrap();
    pool.get()
        .await
        .unwrap()
        .query_one("SELECT * FROM dashboard WHERE reservation_id = $1", &[&id])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_follows_each_kind_of_event() {
    let pool = testkit::fresh_database().await;
    let mut s = start_system().await;
    let projector = Arc::new(projector(&s, &pool, BatchSettings::default()));
    let running = projector.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        running
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    let customer = uuid::Uuid::new_v4().to_string();
    let applied = s
        .reservations
        .apply_reservation(testkit::apply_request(&customer, 12_500))
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, applied.position).await;
    let r = row(&pool, &applied.id).await;
    assert_eq!(
        r.get::<_, Option<String>>("customer_name").as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(
        r.get::<_, Option<String>>("place").as_deref(),
        Some("12 Analytical Row")
    );
    assert_eq!(r.get::<_, i64>("price_cents"), 12_500);
    assert_eq!(r.get::<_, String>("status"), "requested");
    assert_eq!(r.get::<_, String>("payment_kind"), "debit_card");
    assert_eq!(r.get::<_, String>("payment_status"), "approved");
    assert_eq!(r.get::<_, String>("last_notification"), "none");
    assert_eq!(r.get::<_, uuid::Uuid>("customer_id").to_string(), customer);
    assert!(!r.get::<_, bool>("personal_erased"));

    let started = s
        .reservations
        .start_cleaning(StartCleaningRequest {
            request_id: String::new(),
            reservation_id: applied.id.clone(),
            cleaner: "Team B".into(),
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, started.position).await;
    let r = row(&pool, &applied.id).await;
    assert_eq!(
        (
            r.get::<_, String>("status"),
            r.get::<_, Option<String>>("cleaner")
        ),
        ("cleaning_started".to_string(), Some("Team B".to_string()))
    );
    let completed = s
        .reservations
        .complete_cleaning(CompleteCleaningRequest {
            request_id: String::new(),
            reservation_id: applied.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, completed.position).await;
    assert_eq!(
        row(&pool, &applied.id).await.get::<_, String>("status"),
        "cleaning_completed"
    );

    let other = s
        .reservations
        .apply_reservation(testkit::apply_request(&customer, 4_000))
        .await
        .unwrap()
        .into_inner();
    let cancelled = s
        .reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: other.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, cancelled.position).await;
    let r = row(&pool, &other.id).await;
    assert_eq!(
        (
            r.get::<_, String>("status"),
            r.get::<_, Option<String>>("cancel_reason")
        ),
        ("cancelled".to_string(), Some("moved".to_string()))
    );

    // Forgetting the customer erases the personal fields of existing rows; the rest stays.
    let mut customers = command_side::proto::customer_service_client::CustomerServiceClient::new(
        s.running.commands.clone(),
    );
    let forgotten = customers
        .forget_customer(ForgetCustomerRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, forgotten.position).await;
    for id in [&applied.id, &other.id] {
        let r = row(&pool, id).await;
        assert_eq!(r.get::<_, Option<String>>("customer_name"), None);
        assert_eq!(r.get::<_, Option<String>>("place"), None);
        assert!(r.get::<_, bool>("personal_erased"));
    }
    assert_eq!(
        row(&pool, &applied.id).await.get::<_, i64>("price_cents"),
        12_500
    );

    // A rebuild from the log into a fresh database cannot bring the personal data back.
    let rebuilt_pool = testkit::fresh_database().await;
    let rebuilt = Arc::new(self::projector(&s, &rebuilt_pool, BatchSettings::default()));
    let running = rebuilt.clone();
    let rebuilding = tokio::spawn(async move { running.run(std::future::pending()).await });
    caught_up(&rebuilt, forgotten.position).await;
    rebuilding.abort();
    for id in [&applied.id, &other.id] {
        let r = row(&rebuilt_pool, id).await;
        assert_eq!(r.get::<_, Option<String>>("customer_name"), None);
        assert_eq!(r.get::<_, Option<String>>("place"), None);
        assert!(r.get::<_, bool>("personal_erased"));
    }
    assert_eq!(
        row(&rebuilt_pool, &other.id)
            .await
            .get::<_, String>("status"),
        "cancelled"
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// DOMAIN.md requirement 6: a customer's change of payment method reaches the payment kind of
/// their open reservations paid with it; closed ones keep the kind they were paid with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_payment_method_reaches_the_open_reservations_payment_kind() {
    let pool = testkit::fresh_database().await;
    let mut s = start_system().await;
    let projector = Arc::new(projector(&s, &pool, BatchSettings::default()));
    let running = projector.clone();
    let projecting = tokio::spawn(async move { running.run(std::future::pending()).await });
    let mut paymethods = command_side::proto::paymethod_service_client::PaymethodServiceClient::new(
        s.running.commands.clone(),
    );
    let customer = uuid::Uuid::new_v4().to_string();
    let method = paymethods
        .register_paymethod(RegisterPaymethodRequest {
            request_id: String::new(),
            customer_id: customer.clone(),
            customer_name: "Ada Lovelace".into(),
            kind: "debit_card".into(),
            number: "4111 1111 1111 1111".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut applied = Vec::new();
    for price in [3_000, 4_000, 5_000] {
        let request = testkit::apply_request(&customer, price);
        applied.push(
            s.reservations
                .apply_reservation(request)
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let [open, started, closed] = <[_; 3]>::try_from(applied).unwrap();
    s.reservations
        .start_cleaning(StartCleaningRequest {
            request_id: String::new(),
            reservation_id: started.id.clone(),
            cleaner: String::new(),
        })
        .await
        .unwrap();
    s.reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: closed.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap();
    // Someone else's reservation, paid by debit card too, is not theirs to change.
    let stranger = s
        .reservations
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            6_000,
        ))
        .await
        .unwrap()
        .into_inner();
    let changed = paymethods
        .change_paymethod(ChangePaymethodRequest {
            request_id: String::new(),
            paymethod_id: method.id.clone(),
            kind: "credit_card".into(),
            number: "5555 5555 5555 4444".into(),
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&projector, changed.position).await;
    let kind = |id: String| {
        let pool = pool.clone();
        async move { row(&pool, &id).await.get::<_, String>("payment_kind") }
    };
    assert_eq!(kind(open.id.clone()).await, "credit_card");
    assert_eq!(kind(started.id.clone()).await, "credit_card");
    assert_eq!(kind(closed.id.clone()).await, "debit_card");
    assert_eq!(kind(stranger.id.clone()).await, "debit_card");

    // A rebuild from the log comes to the same.
    let rebuilt_pool = testkit::fresh_database().await;
    let rebuilt = Arc::new(self::projector(&s, &rebuilt_pool, BatchSettings::default()));
    let running = rebuilt.clone();
    let rebuilding = tokio::spawn(async move { running.run(std::future::pending()).await });
    caught_up(&rebuilt, changed.position).await;
    rebuilding.abort();
    for (id, expected) in [(&open.id, "credit_card"), (&closed.id, "debit_card")] {
        let r = row(&rebuilt_pool, id).await;
        assert_eq!(r.get::<_, String>("payment_kind"), expected);
    }
    projecting.abort();
}

async fn dump(pool: &Pool) -> Vec<String> {
    testkit::dump(pool, &projector::rebuild::all_tables()).await
}

/// A projector stopped at arbitrary moments and restarted ends with exactly the tables of one
/// that ran without interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_projection_equals_an_uninterrupted_one() {
    let mut s = start_system().await;
    let mut last = 0;
    let mut ids = Vec::new();
    for i in 0..40 {
        let reply = s
            .reservations
            .apply_reservation(testkit::apply_request(
                &uuid::Uuid::new_v4().to_string(),
                1_000 + i,
            ))
            .await
            .unwrap()
            .into_inner();
        last = reply.position;
        ids.push(reply.id);
    }
    for id in ids.iter().step_by(3) {
        last = s
            .reservations
            .start_cleaning(StartCleaningRequest {
                request_id: String::new(),
                reservation_id: id.clone(),
                cleaner: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .position;
    }

    let steady_pool = testkit::fresh_database().await;
    let steady = Arc::new(projector(&s, &steady_pool, BatchSettings::default()));
    let running = steady.clone();
    let steady_task = tokio::spawn(async move { running.run(std::future::pending()).await });
    caught_up(&steady, last).await;
    steady_task.abort();

    // Small batches, killed (task aborted mid-flight) again and again.
    let interrupted_pool = testkit::fresh_database().await;
    let batches = BatchSettings {
        max_events: 3,
        max_wait: Duration::from_millis(1),
    };
    for round in 0..50 {
        let p = projector(&s, &interrupted_pool, batches);
        if p.checkpoint().await.unwrap().is_some_and(|c| c >= last) {
            break;
        }
        let task = tokio::spawn(async move { p.run(std::future::pending()).await });
        tokio::time::sleep(Duration::from_millis(5 + (round % 7) * 3)).await;
        task.abort();
        let _ = task.await;
    }
    let finisher = projector(&s, &interrupted_pool, batches);
    let finisher = Arc::new(finisher);
    let running = finisher.clone();
    let task = tokio::spawn(async move { running.run(std::future::pending()).await });
    caught_up(&finisher, last).await;
    task.abort();

    assert_eq!(dump(&interrupted_pool).await, dump(&steady_pool).await);
    // 40 dashboard rows, 40 payments, and 40 x 2 + 14 timeline entries; two statuses counted
    // (requested, cleaning_started) and one day of payments.
    assert_eq!(dump(&steady_pool).await.len(), 40 + 40 + 94 + 2 + 1);
}
