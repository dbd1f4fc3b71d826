//! Overload: more data requests at once than the instance serves are refused at once with 503
//! and `Retry-After`, while what orchestrators poll still answers.

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_limit_are_refused_at_once() {
    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let verifier = access::Verifier::new(running.issuer.auth_settings()).unwrap();
    let state = query_side::AppState::new(pool, Duration::from_millis(1_500), verifier, "page")
        .with_request_limit(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, query_side::router(state)).await });
    let token = running
        .issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(60))
        .unwrap();
    let client = reqwest::Client::new();

    // One slow request holds the only place: it waits for a position never reached.
    let slow = tokio::spawn({
        let (client, http, token) = (client.clone(), http.clone(), token.clone());
        async move {
            client
                .get(format!("{http}/dashboard?min_position=999999999"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = client
        .get(format!("{http}/dashboard"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_millis(500));
    let health = client.get(format!("{http}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    assert_eq!(slow.await.unwrap(), 200);
    let served = client
        .get(format!("{http}/dashboard"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
}
