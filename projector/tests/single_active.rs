//! Two projectors on one database (two replicas): one projects, the other waits, and takes over
//! when the first stops.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use projector::{BatchSettings, Projector};
use tokio::sync::oneshot;

async fn rows(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM dashboard", &[])
        .await
        .unwrap()
        .get(0)
}

async fn waiting_for_the_lock(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_projector_waits_until_the_first_stops() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let projector = || {
        Arc::new(Projector {
            client: running.event_store_client(),
            pool: pool.clone(),
            keys: running.keys.clone(),
            batches: BatchSettings::default(),
            on_poison: Default::default(),
        })
    };
    let reservations = ReservationServiceClient::new(running.commands.clone());
    let customer = uuid::Uuid::new_v4().to_string();
    let apply = || {
        let request = testkit::apply_request(&customer, 1_000);
        let mut reservations = reservations.clone();
        async move {
            reservations
                .apply_reservation(request)
                .await
                .unwrap()
                .into_inner()
        }
    };

    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let first = projector();
    let first_task = tokio::spawn(async move {
        first
            .run(async {
                let _ = first_stopped.await;
            })
            .await
    });
    apply().await;
    let wait_until = |count: i64| {
        let pool = pool.clone();
        async move {
            for _ in 0..500 {
                if rows(&pool).await == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("never reached {count} rows");
        }
    };
    wait_until(1).await;

    let second = projector();
    let second_task = tokio::spawn(async move { second.run(std::future::pending()).await });
    for _ in 0..100 {
        if waiting_for_the_lock(&pool).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        waiting_for_the_lock(&pool).await,
        1,
        "the second projector is not waiting"
    );

    // The first stops; the second takes over and projects what comes next.
    let _ = stop_first.send(());
    first_task.await.unwrap().unwrap();
    apply().await;
    wait_until(2).await;
    assert!(!second_task.is_finished());
    assert_eq!(waiting_for_the_lock(&pool).await, 0);
    second_task.abort();
}
