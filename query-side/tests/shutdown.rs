//! SIGTERM on the real binary under a steady load: `/readyz` turns false first, every request
//! sent meanwhile (as a load balancer would, until it notices) succeeds, a slow request in
//! flight finishes, and the process exits cleanly.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_then_drains_without_failing_a_request() {
    let (database, _pool) = testkit::fresh_named_database().await;
    let issuer = testkit::issuer().await;
    let token = issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(600))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_query-side"))
        .env("QUERY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PGDATABASE", &database)
        .env_remove("DATABASE_URL")
        .env("SHUTDOWN_DRAIN_DELAY_MS", "1500")
        .env("READ_YOUR_WRITES_WAIT_MS", "2500")
        .env("AUTH_ISSUER", issuer.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The load: four clients in a loop, until they have seen readiness fail for 500 ms (a
    // load balancer's reaction time, shorter than the drain delay).
    let unready_since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, base, unready_since) = (http.clone(), base.clone(), unready_since.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            loop {
                if unready_since
                    .lock()
                    .unwrap()
                    .is_some_and(|t| t.elapsed() > Duration::from_millis(500))
                {
                    return (ok, failed);
                }
                match http.get(format!("{base}/dashboard?limit=5")).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
        }));
    }
    let readiness = {
        let (http, base, unready_since, done) = (
            http.clone(),
            base.clone(),
            unready_since.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                    if r.status() == 503 {
                        unready_since
                            .lock()
                            .unwrap()
                            .get_or_insert_with(Instant::now);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // A slow request in flight: it waits 2.5 s for a position the read model never reaches,
    // so it is still running when the drain delay ends and the server stops accepting.
    let slow = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/dashboard?min_position=999999999"))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());

    let mut served = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during the drain: {failed:?}"
        );
        served += ok;
    }
    assert!(served > 0);
    readiness.await.unwrap();
    let unready_after = unready_since.lock().unwrap().unwrap() - signalled;
    assert!(
        unready_after < Duration::from_millis(1000),
        "readiness took {unready_after:?} to drop"
    );
    let slow = slow.await.unwrap().expect("the slow request was cut off");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.headers()["x-read-model-consistent"], "false");

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process did not exit")
        .unwrap();
    assert!(status.success(), "{status}");
    done.store(true, Ordering::SeqCst);
}
