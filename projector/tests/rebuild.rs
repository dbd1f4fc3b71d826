//! A rebuild replays the whole log into tables beside the live ones while commands keep coming,
//! then switches over atomically: the result equals a projection from scratch, the live
//! projector goes on into the new tables, and nothing of the rebuild is left behind. One read
//! model can be rebuilt alone: only its tables and its checkpoint are replaced.

use std::sync::Arc;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use projector::rebuild::all_tables;
use projector::{BatchSettings, Projector, ReadModel};

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

/// The settings that reach `pool`'s database.
async fn database_of(pool: &deadpool_postgres::Pool) -> tokio_postgres::Config {
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
    let database = database_of(&pool).await;
    let reported = std::sync::Mutex::new(Vec::new());
    let rebuilt = projector::rebuild::rebuild(
        &ReadModel::ALL,
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
        testkit::dump(&pool, &all_tables()).await,
        testkit::dump(&fresh_pool, &all_tables()).await,
    );
    assert_eq!(rebuilt_rows.len(), fresh_rows.len());
    assert_eq!(rebuilt_rows, fresh_rows);
    live_task.abort();
    fresh_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_read_model_is_rebuilt_alone() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let live = projector(&running, &pool);
    let live_task = tokio::spawn({
        let live = live.clone();
        async move { live.run(std::future::pending()).await }
    });
    let before = apply_some(&running, 6).await;
    caught_up(&live, before).await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
        }
    };
    let entries = count("SELECT count(*) FROM timeline").await;
    assert!(entries >= 6 * 2);
    // Damage both the timeline and the dashboard.
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM timeline WHERE event_type = 'CleaningRequested';
             UPDATE dashboard SET status = 'damaged'",
        )
        .await
        .unwrap();
    drop(client);

    let rebuilt = projector::rebuild::rebuild(
        &[ReadModel::Timeline],
        running.event_store_client(),
        pool.clone(),
        database_of(&pool).await,
        running.keys.clone(),
        BatchSettings::default(),
        Default::default(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert!(rebuilt.position >= before, "{rebuilt:?}");
    // The timeline is whole again; the dashboard, not rebuilt, is as it was left.
    assert_eq!(count("SELECT count(*) FROM timeline").await, entries);
    assert_eq!(
        count("SELECT count(*) FROM dashboard WHERE status = 'damaged'").await,
        6
    );
    assert_eq!(
        live.checkpoint_of(ReadModel::Timeline).await.unwrap(),
        Some(rebuilt.position)
    );
    // The live projector goes on into the rebuilt timeline.
    let after = apply_some(&running, 1).await;
    caught_up(&live, after).await;
    assert!(count("SELECT count(*) FROM timeline").await > entries);
    assert!(!live_task.is_finished(), "the live projector stopped");
    live_task.abort();
}
