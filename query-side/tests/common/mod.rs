//! The read side under test: the real projector and the query side over a running system, as
//! every HTTP test of the query side needs them.

use std::time::Duration;

use projector::{BatchSettings, Projector};

/// The projector (into a fresh database) and the query side trusting `running`'s issuer, on a
/// loopback port, both until the test ends. Returns the query side's base URL.
pub async fn read_side(running: &testkit::Running, max_wait: Duration) -> String {
    let (name, pool) = testkit::fresh_named_database().await;
    let mut database = read_models::config_from_env().expect("database settings");
    database.dbname(&name);
    let projector = Projector {
        client: running.event_store_client(),
        pool: pool.clone(),
        keys: running.keys.clone(),
        batches: BatchSettings::default(),
        on_poison: Default::default(),
    };
    tokio::spawn(async move { projector.run(std::future::pending()).await });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    let verifier = access::Verifier::new(running.issuer.auth_settings()).unwrap();
    let app = query_side::router(
        query_side::AppState::new(pool, max_wait, verifier, dev_issuer::PAGE_CLIENT_ID)
            .with_live_changes(database),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    http
}
