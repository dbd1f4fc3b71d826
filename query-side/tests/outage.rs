//! PostgreSQL going away: data requests answer 503 with `Retry-After` and readiness fails
//! while it is gone; once it is back, both recover by themselves.

use std::time::{Duration, Instant};

/// The throwaway cluster's settings for `database`, reached through `port` on loopback.
fn through(port: u16, database: &str) -> tokio_postgres::Config {
    let env = read_models::config_from_env().expect("database settings");
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .dbname(database)
        .connect_timeout(Duration::from_secs(1));
    if let Some(user) = env.get_user() {
        config.user(user);
    }
    if let Some(password) = env.get_password() {
        config.password(password);
    }
    config
}

fn cluster_port() -> u16 {
    let env = read_models::config_from_env().expect("database settings");
    env.get_ports().first().copied().unwrap_or(5432)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_with_retry_after_then_recovers() {
    let running = testkit::Running::start().await;
    let (database, _) = testkit::fresh_named_database().await;
    let link = testkit::Link::to(cluster_port()).await;
    let pool = read_models::pool(through(link.port, &database), 4).unwrap();
    let verifier = access::Verifier::new(running.issuer.auth_settings()).unwrap();
    let state = query_side::AppState::new(pool, Duration::from_millis(500), verifier, "page");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, query_side::router(state)).await });
    let token = running
        .issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(60))
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let dashboard = || {
        client
            .get(format!("{http}/dashboard"))
            .bearer_auth(&token)
            .send()
    };
    let ready = || client.get(format!("{http}/readyz")).send();
    assert_eq!(dashboard().await.unwrap().status().as_u16(), 200);
    assert_eq!(ready().await.unwrap().status().as_u16(), 200);

    link.cut();
    let refused = dashboard().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let not_ready = ready().await.unwrap();
    assert_eq!(not_ready.status().as_u16(), 503);
    let health = client.get(format!("{http}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "alive, only not ready");

    link.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = dashboard().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the query side did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready().await.unwrap().status().as_u16(), 200);
}
