//! A rebuild replays the whole log into tables beside the live ones while commands keep coming,
//! then switches over atomically: the result equals a projection from scratch, the live
//! projector goes on into the new tables, and nothing of the rebuild is left behind.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use projector::rebuild::READ_MODEL_TABLES;
use projector::{BatchSettings, Projector};

fn projector(
    running: &testkit::Running,
    pool: &deadpool_postgres::Pool,
) -> Arc<Projector<customer_keys::PostgresKeys>> {
    Arc::new(Projector {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings {
            max_events: 7,
            max_wait: Duration::from_millis(2),
        },
        on_poison: Default::default(),
    })
}

async fn caught_up(projector: &Projector<customer_keys::PostgresKeys>, position: u64) {
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
    panic!("never reached {position}");
}

async fn apply_some(running: &testkit::Running, count: usize) -> u64 {
    let mut reservations = ReservationServiceClient::new(running.commands.clone());
    let mut last = 0;
    for i in 0..count {
        let reply = reservations
            .apply_reservation(testkit::apply_request(
                &uuid::Uuid::new_v4().to_string(),
                1_000 + i as i64,
            ))
            .await
            .unwrap()
            .into_inner();
        last = reply.position;
        if i % 3 == 0 {
            last = reservations
                .cancel_reservation(CancelReservationRequest {
                    request_id: String::new(),
                    reservation_id: reply.id,
                    reason: "changed plans".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .position;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_switches_over_to_tables_equal_to_a_fresh_projection() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let live = projector(&running, &pool);
    let live_task = tokio::spawn({
        let live = live.clone();
        async move { live.run(std::future::pending()).await }
    });
    let before = apply_some(&running, 12).await;
    caught_up(&live, before).await;
    // Damage a live row: the rebuild must not carry it over.
    pool.get()
        .await
        .unwrap()
        .execute("UPDATE dashboard SET status = 'damaged'", &[])
        .await
        .unwrap();

    // Commands keep coming while the rebuild runs.
    let during = tokio::spawn({
        let running_commands = running.commands.clone();
        async move {
            let mut reservations = ReservationServiceClient::new(running_commands);
            let mut last = 0;
            for i in 0..15 {
                last = reservations
                    .apply_reservation(testkit::apply_request(
                        &uuid::Uuid::new_v4().to_string(),
                        2_000 + i,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .position;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        }
    });
    let database = {
        let mut config = read_models::config_from_env().unwrap();
        let name: String = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0);
        config.dbname(&name);
        config
    };
    let reported = std::sync::Mutex::new(Vec::new());
    let rebuilt = projector::rebuild::rebuild(
        running.event_store_client(),
        pool.clone(),
        database,
        running.keys.clone(),
        BatchSettings {
            max_events: 5,
            max_wait: Duration::from_millis(2),
        },
        Default::default(),
        &|position, _| reported.lock().unwrap().push(position),
    )
    .await
    .unwrap();
    assert!(rebuilt.events >= 12 + 4 + 12, "{rebuilt:?}");
    let reported = reported.into_inner().unwrap();
    assert!(reported.windows(2).all(|w| w[0] < w[1]) && !reported.is_empty());

    let after = during.await.unwrap();
    let last = apply_some(&running, 2).await.max(after);
    caught_up(&live, last).await;
    assert!(!live_task.is_finished(), "the live projector stopped");
    let damaged: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM dashboard WHERE status = 'damaged'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(damaged, 0);
    let leftovers: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%' OR nspname LIKE 'retired_%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);

    // The same tables as a projection from scratch.
    let fresh_pool = testkit::fresh_database().await;
    let fresh = projector(&running, &fresh_pool);
    let fresh_task = tokio::spawn({
        let fresh = fresh.clone();
        async move { fresh.run(std::future::pending()).await }
    });
    caught_up(&fresh, last).await;
    let (rebuilt_rows, fresh_rows) = (
        testkit::dump(&pool, &READ_MODEL_TABLES).await,
        testkit::dump(&fresh_pool, &READ_MODEL_TABLES).await,
    );
    assert_eq!(rebuilt_rows.len(), fresh_rows.len());
    assert_eq!(rebuilt_rows, fresh_rows);
    live_task.abort();
    fresh_task.abort();
}
