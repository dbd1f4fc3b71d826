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
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
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

/// Both projectors live at once: the first's lock connection is cut (as when PostgreSQL
/// restarts) and it goes on, not knowing, while the second takes the lock. Every event is then
/// applied by both, and the read models, counters included, must still equal one projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_applying_at_once_count_each_event_once() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let projector = |pool: &deadpool_postgres::Pool| {
        Arc::new(Projector {
            client: running.event_store_client(),
            pool: pool.clone(),
            keys: running.keys.clone(),
            batches: BatchSettings {
                max_events: 2,
                max_wait: Duration::from_millis(1),
            },
            on_poison: Default::default(),
        })
    };
    let first = projector(&pool);
    let first_task = tokio::spawn(async move { first.run(std::future::pending()).await });
    let second = projector(&pool);
    let second_task = tokio::spawn(async move { second.run(std::future::pending()).await });
    for _ in 0..100 {
        if waiting_for_the_lock(&pool).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The holder's lock connection goes; the waiting one gets the lock.
    pool.get()
        .await
        .unwrap()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();

    // Reservations applied, started and cancelled, concurrently.
    let mut last = 0;
    let mut work = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut reservations = ReservationServiceClient::new(running.commands.clone());
        work.spawn(async move {
            let mut last = 0;
            for _ in 0..10 {
                let customer = uuid::Uuid::new_v4().to_string();
                let applied = reservations
                    .apply_reservation(testkit::apply_request(&customer, 1_000))
                    .await
                    .unwrap()
                    .into_inner();
                let cancelled = reservations
                    .cancel_reservation(command_side::proto::CancelReservationRequest {
                        request_id: String::new(),
                        reservation_id: applied.id,
                        reason: "moved".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                last = cancelled.position;
            }
            last
        });
    }
    while let Some(position) = work.join_next().await {
        last = last.max(position.unwrap());
    }
    let counts = |pool: deadpool_postgres::Pool| async move {
        let client = pool.get().await.unwrap();
        client
            .query(
                "SELECT status, reservations FROM reservations_by_status WHERE reservations <> 0 ORDER BY status",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
    };
    for _ in 0..500 {
        let checkpoint: Option<i64> = pool
            .get()
            .await
            .unwrap()
            .query_opt(
                "SELECT commit_position FROM checkpoints WHERE projection = 'dashboard'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if checkpoint.is_some_and(|c| c as u64 >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both may still be finishing a batch: let them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counts(pool.clone()).await,
        vec![("cancelled".to_string(), 80)]
    );
    first_task.abort();
    second_task.abort();
}
