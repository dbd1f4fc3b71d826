//! Replicas start together against a fresh database (as Kubernetes starts them): each migrates
//! at start, and none may fail on a table another has just created.

#[tokio::test]
async fn replicas_migrating_a_fresh_database_together_all_succeed() {
    let admin = read_models::config_from_env().expect("database settings");
    let name = format!("migrations_{}", std::process::id());
    read_models::create_database(&admin, &name)
        .await
        .expect("create database");
    let mut config = admin.clone();
    config.dbname(&name);
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let pool = read_models::pool(config.clone(), 1).expect("pool");
            tokio::spawn(async move { read_models::migrate(&pool).await })
        })
        .collect();
    for replica in replicas {
        replica.await.expect("task").expect("migrations");
    }
    let pool = read_models::pool(config, 1).expect("pool");
    let client = pool.get().await.expect("connection");
    let applied: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .expect("history")
        .get(0);
    assert!(applied >= 9, "every migration applied once: {applied}");
}
