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

/// Slow clients (slowloris) and idle connections: a connection that does not send its
/// request's headers in time is closed, and while hundreds sit idle the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_the_rest_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let verifier = access::Verifier::new(running.issuer.auth_settings()).unwrap();
    let state = query_side::AppState::new(pool, Duration::from_millis(100), verifier, "page");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = query_side::Serving {
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    tokio::spawn(query_side::serve(
        listener,
        state,
        std::future::pending(),
        serving,
    ));

    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile a well-behaved client is served.
    let started = Instant::now();
    let health = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_millis(400));

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut buffer = [0u8; 256];
    let closed = |read: std::io::Result<usize>, buffer: &[u8]| match read {
        Ok(0) | Err(_) => true,
        Ok(n) => String::from_utf8_lossy(&buffer[..n]).contains(" 408 "),
    };
    let read = tokio::time::timeout(Duration::from_secs(2), slow.read(&mut buffer))
        .await
        .expect("the slow connection was left open");
    assert!(closed(read, &buffer), "the slow connection got an answer");
    for connection in idle.iter_mut().take(5) {
        let read = tokio::time::timeout(Duration::from_secs(2), connection.read(&mut buffer))
            .await
            .expect("an idle connection was left open");
        assert!(closed(read, &buffer));
    }
}
