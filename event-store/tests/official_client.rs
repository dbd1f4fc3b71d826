//! The official Rust client's own persistent-subscription test suite, as published with the
//! client (kurrentdb 1.2.0, `tests/api/persistent_subscriptions.rs`), run unchanged against
//! this store: what the client's authors check against a real server holds here too.

mod common;

mod suite {
    include!(concat!(
        env!("KURRENTDB_CLIENT_SRC"),
        "/tests/api/persistent_subscriptions.rs"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_persistent_subscription_suite_passes() {
    let s = common::TestStore::start().await;
    suite::tests(s.client.clone())
        .await
        .expect("the client's own persistent-subscription tests");
    s.stop().await;
}

// The suite is the client's code as published; its lints are not this project's.
#[allow(clippy::needless_borrows_for_generic_args)]
mod streams_suite {
    include!(concat!(
        env!("KURRENTDB_CLIENT_SRC"),
        "/tests/api/streams.rs"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_streams_suite_passes() {
    let s = common::TestStore::start().await;
    streams_suite::tests(s.client.clone())
        .await
        .expect("the client's own streams tests");
    s.stop().await;
}
