//! The PostgreSQL key store against a real PostgreSQL (run under `pg_virtualenv`).

use customer_keys::PostgresKeys;
use domain::CustomerId;
use events::{KeyError, KeyStore};

#[tokio::test]
async fn a_customer_has_one_key_until_forgotten_and_never_again() {
    let pool = testkit::fresh_database().await;
    let keys = PostgresKeys::with_pool(pool.clone()).await.unwrap();
    let customer = CustomerId::new();

    // First use from many places at once: one key wins, everyone gets it.
    let mut racing = Vec::new();
    for _ in 0..8 {
        let keys = keys.clone();
        racing.push(tokio::spawn(
            async move { keys.key_for_writing(customer).await },
        ));
    }
    let mut seen = Vec::new();
    for task in racing {
        seen.push(task.await.unwrap().unwrap());
    }
    assert!(seen.iter().all(|k| k.bytes() == seen[0].bytes()));

    // Another process (a new store on the same database, migrations again) reads the same key.
    let again = PostgresKeys::with_pool(pool.clone()).await.unwrap();
    let read = again
        .key_for_reading(&seen[0].key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.bytes(), seen[0].bytes());

    // Forgetting destroys it: unreadable, and no new key is ever made for this customer.
    assert!(keys.forget(customer).await.unwrap());
    assert!(again
        .key_for_reading(&seen[0].key_id)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        again.key_for_writing(customer).await,
        Err(KeyError::Forgotten)
    ));
    assert!(
        !keys.forget(customer).await.unwrap(),
        "nothing left to destroy"
    );
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT key IS NULL, forgotten_at IS NOT NULL FROM customer_keys WHERE key_id = $1",
            &[&seen[0].key_id],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));

    // Other customers are untouched.
    let other = CustomerId::new();
    let key = keys.key_for_writing(other).await.unwrap();
    assert_eq!(
        keys.key_for_reading(&key.key_id)
            .await
            .unwrap()
            .unwrap()
            .bytes(),
        key.bytes()
    );
}

#[tokio::test]
async fn forgetting_a_customer_who_never_had_a_key_still_refuses_their_data() {
    let keys = PostgresKeys::with_pool(testkit::fresh_database().await)
        .await
        .unwrap();
    let customer = CustomerId::new();
    assert!(!keys.forget(customer).await.unwrap());
    assert!(matches!(
        keys.key_for_writing(customer).await,
        Err(KeyError::Forgotten)
    ));
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_panic() {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(1)
        .user("nobody")
        .dbname("none");
    config.connect_timeout(std::time::Duration::from_secs(2));
    assert!(PostgresKeys::connect(config, 1).await.is_err());
}
