//! An event that cannot be applied is recorded with its position and error, counted in the
//! metrics, and then stops the projection or is parked, as configured; never skipped silently.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use kurrentdb::{AppendToStreamOptions, EventData};
use projector::{BatchSettings, OnPoison, Projector, ProjectorError};

/// A valid reservation, a malformed `CleaningRequested`, another valid reservation.
async fn log_with_poison(running: &testkit::Running) -> (String, u64, String) {
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let customer = uuid::Uuid::new_v4().to_string();
    let before = reservations
        .apply_reservation(testkit::apply_request(&customer, 3_000))
        .await
        .unwrap()
        .into_inner();
    let poison =
        EventData::json("CleaningRequested", &serde_json::json!({"price": "a lot"})).unwrap();
    let written = running
        .event_store_client()
        .append_to_stream(
            format!("reservation-{}", uuid::Uuid::new_v4()),
            &AppendToStreamOptions::default(),
            poison,
        )
        .await
        .unwrap();
    let after = reservations
        .apply_reservation(testkit::apply_request(&customer, 4_000))
        .await
        .unwrap()
        .into_inner();
    (before.id, written.position.commit, after.id)
}

fn projector(
    running: &testkit::Running,
    pool: &deadpool_postgres::Pool,
    on_poison: OnPoison,
) -> Projector<customer_keys::PostgresKeys> {
    Projector {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings::default(),
        on_poison,
    }
}

async fn reservation_ids(pool: &deadpool_postgres::Pool) -> Vec<String> {
    let rows = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT reservation_id::text FROM dashboard ORDER BY requested_position",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn poison_rows(pool: &deadpool_postgres::Pool) -> Vec<(i64, String, bool)> {
    let rows = pool
        .get()
        .await
        .unwrap()
        .query("SELECT position, error, parked FROM poison_events", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_records_the_poison_and_stays_before_it() {
    lifecycle::metrics();
    let running = testkit::Running::start().await;
    let (before, poison_at, _after) = log_with_poison(&running).await;
    let pool = testkit::fresh_database().await;
    let projector = projector(&running, &pool, OnPoison::Stop);
    let stopped = tokio::time::timeout(
        Duration::from_secs(20),
        projector.run(std::future::pending()),
    )
    .await
    .expect("the projector did not stop");
    match stopped {
        Err(ProjectorError::Poison { position, reason }) => {
            assert_eq!(position, poison_at);
            assert!(reason.contains("CleaningRequested"), "{reason}");
        }
        other => panic!("expected a poison stop, got {other:?}"),
    }
    assert_eq!(reservation_ids(&pool).await, [before]);
    assert!(projector.checkpoint().await.unwrap().unwrap() < poison_at);
    let poison = poison_rows(&pool).await;
    assert_eq!(poison.len(), 1);
    assert_eq!((poison[0].0, poison[0].2), (poison_at as i64, false));
    assert!(lifecycle::render_metrics().contains("projector_poison_events_total"));

    // Restarted without a fix, it stops at the same place again, and records it once.
    let again = projector.run(std::future::pending()).await;
    assert!(matches!(again, Err(ProjectorError::Poison { position, .. }) if position == poison_at));
    assert_eq!(poison_rows(&pool).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_records_the_poison_and_goes_on() {
    let running = testkit::Running::start().await;
    let (before, poison_at, after) = log_with_poison(&running).await;
    let pool = testkit::fresh_database().await;
    let projector = Arc::new(projector(&running, &pool, OnPoison::Park));
    let task = tokio::spawn({
        let projector = projector.clone();
        async move { projector.run(std::future::pending()).await }
    });
    for _ in 0..500 {
        if reservation_ids(&pool).await.len() == 2 {
            break;
        }
        assert!(!task.is_finished(), "the projector stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reservation_ids(&pool).await, [before, after]);
    let poison = poison_rows(&pool).await;
    assert_eq!(poison.len(), 1);
    assert_eq!((poison[0].0, poison[0].2), (poison_at as i64, true));
    assert!(!poison[0].1.is_empty());
    task.abort();
}
