//! The event store going away: commands fail fast with UNAVAILABLE and a retry hint (no hang,
//! nothing half written), and once it is back the same request goes through exactly once,
//! also for a command side that was started while it was away.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_outage_fails_fast_with_a_retry_hint_then_recovers() {
    let store = EventStoreUnderTest::start().await;
    let link = testkit::Link::to(store.port).await;
    let linked = format!("esdb://127.0.0.1:{}?tls=false", link.port);
    let issuer = testkit::issuer().await;
    let commands = CommandSide::start(&store, &issuer, 0, |c| {
        c.commands.server.event_store_url = linked
    })
    .await;
    let channel = commands.channel().await;
    let mut admin = Clients::new(testkit::as_admin(&channel, &issuer));
    admin
        .reservations
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap();

    link.cut();
    let request = apply_request(&new_id(), 1_000);
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        admin.reservations.apply_reservation(request.clone()),
    )
    .await
    .expect("the call hung while the event store was away")
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("event store"), "{refused:?}");
    assert!(refused.get_details_retry_info().is_some(), "{refused:?}");

    link.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match admin.reservations.apply_reservation(request.clone()).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "no recovery: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let stream = format!("reservation-{}", reply.id);
    let client = store.client();
    let mut read = client
        .read_stream(stream.as_str(), &Default::default())
        .await
        .unwrap();
    let mut events = 0;
    while read.next().await.unwrap().is_some() {
        events += 1;
    }
    assert_eq!(events, 1, "the retried request was recorded exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_side_started_while_the_event_store_is_away_serves_once_it_is_back() {
    let store = EventStoreUnderTest::start().await;
    let link = testkit::Link::to(store.port).await;
    let linked = format!("esdb://127.0.0.1:{}?tls=false", link.port);
    // Away before the command side makes its first call to it.
    link.cut();
    let issuer = testkit::issuer().await;
    let commands = CommandSide::start(&store, &issuer, 0, |c| {
        c.commands.server.event_store_url = linked
    })
    .await;
    let channel = commands.channel().await;
    let mut admin = Clients::new(testkit::as_admin(&channel, &issuer));
    let request = apply_request(&new_id(), 1_000);
    for _ in 0..2 {
        let refused = admin
            .reservations
            .apply_reservation(request.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    }

    // The official client gives up for good when its first connection fails; the command
    // side must not keep that client.
    link.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.reservations.apply_reservation(request.clone()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "never served: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
