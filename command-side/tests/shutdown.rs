//! SIGTERM on the real binary: readiness turns false first, in-flight calls finish, then it
//! exits cleanly.

mod common;

use std::process::Stdio;
use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use common::*;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_then_exits() {
    let store = EventStoreUnderTest::start().await;
    let issuer = issuer().await;
    let service = issuer.service_client();
    // Every payment takes a second, so that calls are in flight when the signal comes.
    let payment = CommandSide::payment(&store, &issuer, 0, |c| {
        c.provider.latency = Duration::from_secs(1)
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_command-side"))
        .env("COMMAND_LISTEN", format!("127.0.0.1:{port}"))
        .env("EVENT_STORE_URL", store.url())
        .env("AUTH_ISSUER", issuer.url())
        .env("AUTH_CLIENT_ID", &service.client_id)
        .env("AUTH_CLIENT_SECRET", &service.client_secret)
        .env(
            "PAYMENT_ENDPOINT",
            format!("http://127.0.0.1:{}", payment.port),
        )
        .env("PAYMENT_TIMEOUT_MS", "5000")
        .env("SHUTDOWN_DRAIN_DELAY_MS", "500")
        .env(
            "RUST_LOG",
            std::env::var("CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(if std::env::var_os("CHILD_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel = loop {
        match tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut client = ReservationServiceClient::new(testkit::as_admin(&channel, &issuer));
        calls.push(tokio::spawn(async move {
            client
                .apply_reservation(apply_request(&new_id(), 2_000))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());

    // Readiness turns false first, while the server still answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("still answering while draining")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );

    for call in calls {
        let reply = call
            .await
            .unwrap()
            .expect("an in-flight call failed during shutdown");
        assert_eq!(reply.into_inner().revision, 0);
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not exit")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}
