//! The event store going away under a running projector (the real binary): it stays up,
//! reports not ready, reconnects with backoff and resumes from its checkpoint when the store
//! returns, losing nothing written meanwhile. The outage is a proxy between the two that cuts
//! every connection and refuses new ones, then lets them through again (`testkit::Link`).

use std::time::Duration;

use domain::payment::PaymentEvent;
use domain::{Money, PaymentId, ReservationId};
use events::Event;
use kurrentdb::{AppendToStreamOptions, EventData};

async fn approve(client: &kurrentdb::Client, cents: i64) -> uuid::Uuid {
    let payment = uuid::Uuid::new_v4();
    let event = Event::Payment(PaymentEvent::PaymentApproved {
        payment_id: PaymentId::from(payment),
        reservation_id: ReservationId::from(uuid::Uuid::new_v4()),
        amount: Money::from_cents(cents).unwrap(),
        paymethod_kind: None,
    });
    let encoded = events::encode(&event, None).unwrap();
    let data = EventData::json(
        encoded.event_type,
        &serde_json::from_slice::<serde_json::Value>(&encoded.data).unwrap(),
    )
    .unwrap();
    client
        .append_to_stream(
            format!("payment-{payment}"),
            &AppendToStreamOptions::default(),
            data,
        )
        .await
        .unwrap();
    payment
}

async fn projected(pool: &deadpool_postgres::Pool, payment: uuid::Uuid) -> bool {
    let client = pool.get().await.unwrap();
    client
        .query_opt("SELECT 1 FROM payments WHERE payment_id = $1", &[&payment])
        .await
        .unwrap()
        .is_some()
}

async fn ready(metrics: &str) -> Option<u16> {
    reqwest::get(format!("{metrics}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Polls `check` for up to 30 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

/// An embedded event store in this process; its port and a client straight to it.
async fn event_store(dir: &std::path::Path) -> (u16, kurrentdb::Client) {
    let store = event_store::storage::Store::open(dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(event_store::server::serve(
        listener,
        store,
        Default::default(),
        std::future::pending(),
    ));
    let direct = kurrentdb::Client::new(
        format!("esdb://127.0.0.1:{port}?tls=false")
            .parse()
            .unwrap(),
    )
    .unwrap();
    (port, direct)
}

/// The projector binary on the store behind `link` and the database `database`; its
/// operations address.
fn projector(link: &testkit::Link, database: &str) -> (tokio::process::Child, String) {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .env(
            "EVENT_STORE_URL",
            format!("esdb://127.0.0.1:{}?tls=false", link.port),
        )
        .env("PGDATABASE", database)
        .env_remove("DATABASE_URL")
        .env_remove("KEY_STORE_URL")
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{metrics_port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_waits_out_an_event_store_outage_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (store_port, direct) = event_store(dir.path()).await;
    let link = testkit::Link::to(store_port).await;
    let (database, pool) = testkit::fresh_named_database().await;
    let (mut child, metrics) = projector(&link, &database);

    let before = approve(&direct, 1_000).await;
    eventually("the first event projected", || projected(&pool, before)).await;
    eventually("ready", || async { ready(&metrics).await == Some(200) }).await;

    // The store goes away: the projector stays up and says it is not ready.
    link.cut();
    eventually("not ready during the outage", || async {
        ready(&metrics).await == Some(503)
    })
    .await;
    let during = approve(&direct, 2_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the projector exited");
    assert!(!projected(&pool, during).await);

    // It comes back: the projector reconnects by itself and catches up.
    link.restore();
    eventually("the event written during the outage projected", || {
        projected(&pool, during)
    })
    .await;
    eventually("ready again", || async {
        ready(&metrics).await == Some(200)
    })
    .await;
    assert!(child.try_wait().unwrap().is_none());
    let rows: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "nothing lost, nothing doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_started_while_the_event_store_is_away_projects_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store_port, direct) = event_store(dir.path()).await;
    let link = testkit::Link::to(store_port).await;
    let (database, pool) = testkit::fresh_named_database().await;
    // Away before the projector makes its first call to it.
    link.cut();
    let (mut child, _) = projector(&link, &database);
    let written = approve(&direct, 1_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the projector exited");

    // The official client gives up for good when its first connection fails; the projector
    // must not keep that client.
    link.restore();
    eventually("the event projected", || projected(&pool, written)).await;
}

/// The cluster's port, as the environment (`pg_virtualenv`) gives it.
fn cluster_port() -> u16 {
    let env = read_models::config_from_env().expect("database settings");
    env.get_ports().first().copied().unwrap_or(5432)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_waits_out_a_postgresql_outage_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = event_store::storage::Store::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_port = listener.local_addr().unwrap().port();
    tokio::spawn(event_store::server::serve(
        listener,
        store,
        Default::default(),
        std::future::pending(),
    ));
    let events = kurrentdb::Client::new(
        format!("esdb://127.0.0.1:{store_port}?tls=false")
            .parse()
            .unwrap(),
    )
    .unwrap();
    let (database, pool) = testkit::fresh_named_database().await;
    let link = testkit::Link::to(cluster_port()).await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    // Its database (read models, checkpoint and keys) only through the link.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .env(
            "EVENT_STORE_URL",
            format!("esdb://127.0.0.1:{store_port}?tls=false"),
        )
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", link.port.to_string())
        .env("PGDATABASE", &database)
        .env_remove("DATABASE_URL")
        .env_remove("KEY_STORE_URL")
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let before = approve(&events, 1_000).await;
    eventually("the first event projected", || projected(&pool, before)).await;
    eventually("ready", || async { ready(&metrics).await == Some(200) }).await;

    // PostgreSQL goes away while events keep coming: the projector stays up, not ready.
    link.cut();
    let during = approve(&events, 2_000).await;
    eventually("not ready during the outage", || async {
        ready(&metrics).await == Some(503)
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the projector exited");

    // It comes back: the projector resumes from its checkpoint by itself.
    link.restore();
    eventually("the event written during the outage projected", || {
        projected(&pool, during)
    })
    .await;
    eventually("ready again", || async {
        ready(&metrics).await == Some(200)
    })
    .await;
    let rows: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "nothing lost, nothing doubled");
}
