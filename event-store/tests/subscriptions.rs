//! Catch-up subscriptions through the official client: confirmation, catch-up, the caught-up
//! signal, then live events, with no gap and no duplicate at the hand-over.

mod common;

use std::time::Duration;

use common::{event, stream_name, TestStore};
use kurrentdb::{
    AppendToStreamOptions, Position, StreamPosition, SubscribeToAllOptions,
    SubscribeToStreamOptions, SubscriptionEvent, SubscriptionFilter, TombstoneStreamOptions,
};

async fn next(sub: &mut kurrentdb::Subscription) -> SubscriptionEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
        .await
        .expect("subscription stalled")
        .expect("subscription failed")
}

/// What a test keeps of a delivered event (`RecordedEvent` is not `Clone`).
#[derive(Debug)]
struct Got {
    n: Option<u64>,
    revision: u64,
    position: Position,
    event_type: String,
}

async fn next_event(sub: &mut kurrentdb::Subscription) -> Got {
    loop {
        if let SubscriptionEvent::EventAppeared(e) = next(sub).await {
            let e = e.get_original_event();
            return Got {
                n: e.as_json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v["n"].as_u64()),
                revision: e.revision,
                position: e.position,
                event_type: e.event_type.clone(),
            };
        }
    }
}

fn n(e: &Got) -> u64 {
    e.n.expect("a numbered test event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_catches_up_then_goes_live() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("sub");
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        (0..3).map(|i| event("E", i)).collect::<Vec<_>>(),
    )
    .await
    .unwrap();

    let from_start = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut sub = c.subscribe_to_stream(stream.as_str(), &from_start).await;
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Confirmed(_)
    ));
    for i in 0..3 {
        assert_eq!(n(&next_event(&mut sub).await), i);
    }
    match next(&mut sub).await {
        SubscriptionEvent::CaughtUp(Some(info)) => assert_eq!(info.stream_revision, Some(2)),
        other => panic!("expected caught up, got {other:?}"),
    }
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        vec![event("E", 3)],
    )
    .await
    .unwrap();
    let live = next_event(&mut sub).await;
    assert_eq!((n(&live), live.revision), (3, 3));

    // From a revision: exclusive.
    let mut from_1 = c
        .subscribe_to_stream(
            stream.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(1)),
        )
        .await;
    assert_eq!(n(&next_event(&mut from_1).await), 2);
    // From the end: only what comes next.
    let mut from_end = c
        .subscribe_to_stream(
            stream.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::End),
        )
        .await;
    assert!(matches!(
        next(&mut from_end).await,
        SubscriptionEvent::Confirmed(_)
    ));
    assert!(matches!(
        next(&mut from_end).await,
        SubscriptionEvent::CaughtUp(_)
    ));
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        vec![event("E", 4)],
    )
    .await
    .unwrap();
    assert_eq!(n(&next_event(&mut from_end).await), 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_a_missing_stream_waits_for_it() {
    let s = TestStore::start().await;
    let stream = stream_name("later");
    let mut sub = s
        .client
        .subscribe_to_stream(stream.as_str(), &SubscribeToStreamOptions::default())
        .await;
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Confirmed(_)
    ));
    assert!(
        matches!(next(&mut sub).await, SubscriptionEvent::CaughtUp(Some(ref c)) if c.stream_revision.is_none())
    );
    s.client
        .append_to_stream(
            stream.as_str(),
            &AppendToStreamOptions::default(),
            vec![event("E", 7)],
        )
        .await
        .unwrap();
    assert_eq!(n(&next_event(&mut sub).await), 7);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_ends_a_stream_subscription() {
    let s = TestStore::start().await;
    let stream = stream_name("ending");
    s.client
        .append_to_stream(
            stream.as_str(),
            &AppendToStreamOptions::default(),
            vec![event("E", 0)],
        )
        .await
        .unwrap();
    let from_start = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut sub = s
        .client
        .subscribe_to_stream(stream.as_str(), &from_start)
        .await;
    assert_eq!(n(&next_event(&mut sub).await), 0);
    s.client
        .tombstone_stream(stream.as_str(), &TombstoneStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.event_type, "$streamDeleted");
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
        .await
        .unwrap();
    assert!(
        matches!(end, Err(kurrentdb::Error::ResourceDeleted)),
        "{end:?}"
    );
    // Subscribing to it afterwards fails at once.
    let mut late = s
        .client
        .subscribe_to_stream(stream.as_str(), &from_start)
        .await;
    let refused = tokio::time::timeout(Duration::from_secs(10), late.next_subscription_event())
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(kurrentdb::Error::ResourceDeleted)),
        "{refused:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_subscription_from_a_position_excludes_it() {
    let s = TestStore::start_without_projections().await;
    let c = &s.client;
    let mut positions = Vec::new();
    for i in 0..5 {
        positions.push(
            c.append_to_stream(
                format!("s-{i}"),
                &AppendToStreamOptions::default(),
                vec![event("E", i)],
            )
            .await
            .unwrap()
            .position,
        );
    }
    let mut sub = c
        .subscribe_to_all(
            &SubscribeToAllOptions::default().position(StreamPosition::Position(positions[1])),
        )
        .await;
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Confirmed(_)
    ));
    for expected in &positions[2..] {
        assert_eq!(next_event(&mut sub).await.position, *expected);
    }
    match next(&mut sub).await {
        SubscriptionEvent::CaughtUp(Some(info)) => assert_eq!(info.position, Some(positions[4])),
        other => panic!("expected caught up, got {other:?}"),
    }
    let live = c
        .append_to_stream(
            "s-live",
            &AppendToStreamOptions::default(),
            vec![event("E", 5)],
        )
        .await
        .unwrap()
        .position;
    assert_eq!(next_event(&mut sub).await.position, live);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_all_subscription_sends_checkpoints_through_what_it_skips() {
    let s = TestStore::start().await;
    let c = &s.client;
    for i in 0..100 {
        let stream = if i % 10 == 0 { "wanted-1" } else { "noise-1" };
        c.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            vec![event("E", i)],
        )
        .await
        .unwrap();
    }
    let filter = SubscriptionFilter::on_stream_name()
        .add_prefix("wanted-")
        .max(8);
    let mut sub = c
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(filter))
        .await;
    let mut seen = Vec::new();
    let mut checkpoints: Vec<Position> = Vec::new();
    loop {
        match next(&mut sub).await {
            SubscriptionEvent::EventAppeared(e) => seen.push(
                e.get_original_event()
                    .as_json::<serde_json::Value>()
                    .unwrap()["n"]
                    .as_u64()
                    .unwrap(),
            ),
            SubscriptionEvent::Checkpoint(p) => checkpoints.push(p),
            SubscriptionEvent::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(seen, (0..100).step_by(10).collect::<Vec<_>>());
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "{checkpoints:?}"
    );
    // The last checkpoint before caught-up covers everything stored.
    let head = c
        .append_to_stream(
            "noise-1",
            &AppendToStreamOptions::default(),
            vec![event("E", 100)],
        )
        .await
        .unwrap()
        .position;
    assert!(checkpoints.last().unwrap().commit < head.commit);
    s.stop().await;
}

/// Appenders keep writing while a subscription catches up and goes live: every event arrives
/// exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_over_loses_and_repeats_nothing_under_load() {
    let s = TestStore::start().await;
    let c = s.client.clone();
    for i in 0..500 {
        c.append_to_stream(
            format!("pre-{}", i % 7),
            &AppendToStreamOptions::default(),
            vec![event("E", i)],
        )
        .await
        .unwrap();
    }
    const WRITERS: u64 = 8;
    const EACH: u64 = 150;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for i in 0..EACH {
                let r = c
                    .append_to_stream(
                        format!("load-{w}"),
                        &AppendToStreamOptions::default(),
                        vec![event("E", 1000 + w * EACH + i)],
                    )
                    .await
                    .unwrap();
                positions.push(r.position);
            }
            positions
        }));
    }
    let filter = SubscriptionFilter::on_stream_name()
        .add_prefix("load-")
        .add_prefix("pre-");
    let mut sub = c
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(filter))
        .await;
    let mut expected = Vec::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    let total = 500 + (WRITERS * EACH) as usize;
    let mut received = Vec::with_capacity(total);
    while received.len() < total {
        received.push(next_event(&mut sub).await.position);
    }
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    let live_part: Vec<Position> = received[500..].to_vec();
    assert_eq!(live_part, expected_sorted);
    // Nothing more arrives.
    let extra =
        tokio::time::timeout(Duration::from_millis(300), sub.next_subscription_event()).await;
    assert!(!matches!(
        extra,
        Ok(Ok(SubscriptionEvent::EventAppeared(_)))
    ));
    s.stop().await;
}
