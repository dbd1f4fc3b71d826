//! Persistent subscriptions through the official client: every management call, delivery with
//! acknowledgements, retries, timeouts, parking and replay, the three consumer strategies,
//! filters and links on `$all`, and groups that come back as they were after a restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{event, stream_name, TestStore};
use kurrentdb::{
    AppendToStreamOptions, Client, DeletePersistentSubscriptionOptions, EventData, NakAction,
    PersistentSubscription, PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions,
    ReplayParkedMessagesOptions, ResolvedEvent, StreamPosition,
    SubscribeToPersistentSubscriptionOptions, SubscriptionFilter, SystemConsumerStrategy,
};

const WAIT: Duration = Duration::from_secs(10);

async fn append(client: &Client, stream: &str, events: Vec<EventData>) {
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .expect("append");
}

fn numbered(kind: &str, range: std::ops::Range<u64>) -> Vec<EventData> {
    range.map(|n| event(kind, n)).collect()
}

fn n(event: &ResolvedEvent) -> u64 {
    event
        .get_original_event()
        .as_json::<serde_json::Value>()
        .ok()
        .and_then(|v| v["n"].as_u64())
        .or_else(|| {
            event
                .event
                .as_ref()
                .and_then(|e| e.as_json::<serde_json::Value>().ok())
                .and_then(|v| v["n"].as_u64())
        })
        .expect("a numbered event")
}

async fn next(sub: &mut PersistentSubscription) -> ResolvedEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("nothing delivered in time")
        .expect("the subscription failed")
}

/// Next delivery with its retry count.
async fn next_counted(sub: &mut PersistentSubscription) -> (ResolvedEvent, usize) {
    loop {
        let event = tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("nothing delivered in time")
            .expect("the subscription failed");
        if let kurrentdb::PersistentSubscriptionEvent::EventAppeared { event, retry_count } = event
        {
            return (event, retry_count);
        }
    }
}

/// Nothing is delivered for a while.
async fn quiet(sub: &mut PersistentSubscription, wait: Duration) {
    if let Ok(Ok(event)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("unexpected delivery of {:?}", n(&event));
    }
}

fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default().start_from(StreamPosition::Start)
}

async fn subscribe(
    client: &Client,
    stream: &str,
    group: &str,
    slots: usize,
) -> PersistentSubscription {
    client
        .subscribe_to_persistent_subscription(
            stream,
            group,
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(slots),
        )
        .await
        .expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_calls_answer_as_the_real_server_does() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-manage");
    let options = PersistentSubscriptionOptions::default();
    c.create_persistent_subscription(stream.as_str(), "g1", &options)
        .await
        .expect("create");
    let again = c
        .create_persistent_subscription(stream.as_str(), "g1", &options)
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let mut updated = options.clone();
    updated.settings_mut().max_retry_count = 1_000;
    c.update_persistent_subscription(stream.as_str(), "g1", &updated)
        .await
        .expect("update");
    let info = c
        .get_persistent_subscription_info(stream.as_str(), "g1", &Default::default())
        .await
        .expect("info");
    assert_eq!(info.event_source, stream);
    assert_eq!(info.group_name, "g1");
    let settings = info.settings.expect("settings");
    assert_eq!(settings.max_retry_count, 1_000);
    assert_eq!(settings.start_from, StreamPosition::End);
    assert_eq!(
        settings.consumer_strategy_name,
        SystemConsumerStrategy::RoundRobin
    );

    let missing = c
        .update_persistent_subscription(stream.as_str(), "nobody", &options)
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
    let missing = c
        .get_persistent_subscription_info(stream.as_str(), "nobody", &Default::default())
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );

    // Lists: everything, one stream, `$all`.
    c.create_persistent_subscription(stream.as_str(), "g2", &options)
        .await
        .expect("create g2");
    let all_options = PersistentSubscriptionToAllOptions::default();
    c.create_persistent_subscription_to_all("everything", &all_options)
        .await
        .expect("create to all");
    let listed: HashSet<(String, String)> = c
        .list_all_persistent_subscriptions(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|i| (i.event_source, i.group_name))
        .collect();
    for expected in [
        (&stream, "g1"),
        (&stream, "g2"),
        (&"$all".to_string(), "everything"),
    ] {
        assert!(
            listed.contains(&(expected.0.clone(), expected.1.to_string())),
            "{listed:?}"
        );
    }
    let for_stream: Vec<String> = c
        .list_persistent_subscriptions_for_stream(stream.as_str(), &Default::default())
        .await
        .expect("list for stream")
        .into_iter()
        .map(|i| i.group_name)
        .collect();
    assert_eq!(for_stream, vec!["g1", "g2"]);
    let to_all = c
        .list_persistent_subscriptions_to_all(&Default::default())
        .await
        .expect("list to all");
    assert_eq!(to_all.len(), 1);
    let info = c
        .get_persistent_subscription_info_to_all("everything", &Default::default())
        .await
        .expect("info to all");
    assert_eq!(
        info.settings.expect("settings").start_from,
        StreamPosition::End
    );

    // Names with slashes and colons travel intact.
    let odd_stream = format!("/{}/foo", stream_name("odd"));
    c.create_persistent_subscription(odd_stream.as_str(), "/group/foo", &options)
        .await
        .expect("create odd names");
    let info = c
        .get_persistent_subscription_info(odd_stream.as_str(), "/group/foo", &Default::default())
        .await
        .expect("info odd names");
    assert_eq!(
        (info.event_source, info.group_name),
        (odd_stream, "/group/foo".to_string())
    );

    // Delete, then it is gone.
    c.delete_persistent_subscription(
        stream.as_str(),
        "g2",
        &DeletePersistentSubscriptionOptions::default(),
    )
    .await
    .expect("delete");
    c.delete_persistent_subscription_to_all("everything", &Default::default())
        .await
        .expect("delete to all");
    let gone = c
        .delete_persistent_subscription(stream.as_str(), "g2", &Default::default())
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    c.restart_persistent_subscription_subsystem(&Default::default())
        .await
        .expect("restart");
    let groups: Vec<String> = c
        .list_persistent_subscriptions_for_stream(stream.as_str(), &Default::default())
        .await
        .expect("list after restart")
        .into_iter()
        .map(|i| i.group_name)
        .collect();
    assert_eq!(groups, vec!["g1"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_real_server_refuses_are_refused() {
    let s = TestStore::start().await;
    let stream = stream_name("ps-refused");
    let mut options = PersistentSubscriptionOptions::default();
    options.settings_mut().read_batch_size = 200;
    options.settings_mut().history_buffer_size = 100;
    let refused = s
        .client
        .create_persistent_subscription(stream.as_str(), "g", &options)
        .await;
    match refused {
        Err(kurrentdb::Error::ServerError(message)) => {
            assert!(
                message.contains("ReadBatchSize may not be greater than or equal to BufferSize"),
                "{message}"
            )
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_and_acknowledged_once() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-deliver");
    c.create_persistent_subscription(
        stream.as_str(),
        "g",
        &PersistentSubscriptionOptions::default(),
    )
    .await
    .expect("create");
    append(c, &stream, numbered("E", 0..5)).await;
    // Created at the end: what came before the first connection after it is still delivered,
    // since the end is fixed when the group is made.
    let mut sub = subscribe(c, &stream, "g", 10).await;
    append(c, &stream, numbered("E", 5..10)).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let e = next(&mut sub).await;
        seen.push(n(&e));
        sub.ack(&e).await.expect("ack");
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    quiet(&mut sub, Duration::from_millis(500)).await;

    // The figures the real server reports.
    let info = c
        .get_persistent_subscription_info(stream.as_str(), "g", &Default::default())
        .await
        .expect("info");
    assert_eq!(info.connections.len(), 1);
    assert_eq!(info.stats.total_items, 10);
    assert_eq!(info.stats.total_in_flight_messages, 0);
    assert_eq!(info.stats.last_known_event_revision, Some(9));
    assert_eq!(info.status, "Live");
    assert_eq!(info.connections[0].available_slots, 10);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_all_delivers_what_its_filter_keeps() {
    let s = TestStore::start().await;
    let c = &s.client;
    let prefix = stream_name("kept");
    append(c, &format!("{prefix}-a"), numbered("E", 0..3)).await;
    append(c, &stream_name("other"), numbered("E", 100..103)).await;
    append(c, &format!("{prefix}-b"), numbered("E", 3..6)).await;
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix(&prefix));
    c.create_persistent_subscription_to_all("filtered", &options)
        .await
        .expect("create");
    let mut sub = c
        .subscribe_to_persistent_subscription_to_all("filtered", &Default::default())
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let e = next(&mut sub).await;
        assert!(e.get_original_event().stream_id().starts_with(&prefix));
        seen.push(n(&e));
        sub.ack(&e).await.expect("ack");
    }
    assert_eq!(seen, (0..6).collect::<Vec<_>>());
    quiet(&mut sub, Duration::from_millis(500)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_resolved_and_acknowledged_by_the_link() {
    let s = TestStore::start().await;
    let c = &s.client;
    let target = stream_name("target");
    let links = stream_name("links");
    append(c, &target, numbered("E", 0..2)).await;
    let link_events: Vec<EventData> = (0..2)
        .map(|r| EventData::binary("$>", format!("{r}@{target}").into_bytes().into()))
        .collect();
    append(c, &links, link_events).await;
    let mut options = from_start();
    options.settings_mut().resolve_link_tos = true;
    options.settings_mut().max_retry_count = 0;
    c.create_persistent_subscription(links.as_str(), "g", &options)
        .await
        .expect("create");
    let mut sub = subscribe(c, &links, "g", 10).await;
    let first = next(&mut sub).await;
    let event = first.event.as_ref().expect("resolved event");
    assert_eq!(event.stream_id(), target);
    assert_eq!(first.link.as_ref().expect("the link").stream_id(), links);
    sub.ack(&first).await.expect("ack by the link's id");
    let second = next(&mut sub).await;
    assert_eq!(n(&second), 1);
    // Nothing more, and the first does not come back: it was acknowledged by the link's id.
    sub.ack(&second).await.expect("ack");
    quiet(&mut sub, Duration::from_millis(500)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_up_then_the_event_is_parked_and_can_be_replayed() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-retry");
    let mut options = from_start();
    options.settings_mut().max_retry_count = 2;
    c.create_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("create");
    append(c, &stream, numbered("E", 0..2)).await;
    let mut sub = subscribe(c, &stream, "g", 10).await;
    // Event 0 is refused three times (retry counts 0, 1, 2); the third refusal parks it.
    let mut counts = Vec::new();
    loop {
        let (e, retry_count) = next_counted(&mut sub).await;
        if n(&e) == 1 {
            sub.ack(&e).await.expect("ack");
            continue;
        }
        counts.push(retry_count);
        sub.nack(&e, NakAction::Retry, "not now")
            .await
            .expect("nack");
        if counts.len() == 3 {
            break;
        }
    }
    assert_eq!(counts, vec![0, 1, 2]);
    quiet(&mut sub, Duration::from_millis(500)).await;
    let parked = format!("$persistentsubscription-{stream}::g-parked");
    let info = wait_for_info(c, &stream, "g", |i| i.stats.parked_message_count == 1).await;
    assert_eq!(info.stats.parked_message_count, 1);
    // The parked stream holds a link to it, with the reason.
    let mut read = c
        .read_stream(parked.as_str(), &Default::default())
        .await
        .expect("read parked");
    let link = read.next().await.expect("read").expect("a parked link");
    let link = link.get_original_event();
    assert_eq!(link.event_type, "$>");
    assert_eq!(&link.data[..], format!("0@{stream}").as_bytes());
    let metadata: serde_json::Value = serde_json::from_slice(&link.custom_metadata).expect("json");
    assert_eq!(metadata["reason"], "Reached retry count of 2");

    // Replayed: delivered again with its parked link, acknowledged by the link.
    c.replay_parked_messages(
        stream.as_str(),
        "g",
        &ReplayParkedMessagesOptions::default(),
    )
    .await
    .expect("replay");
    let (replayed, retry_count) = next_counted(&mut sub).await;
    assert_eq!(retry_count, 0);
    assert_eq!(n(&replayed), 0);
    assert_eq!(
        replayed.link.as_ref().expect("the parked link").stream_id(),
        parked
    );
    sub.ack(&replayed).await.expect("ack");
    let info = wait_for_info(c, &stream, "g", |i| i.stats.parked_message_count == 0).await;
    assert_eq!(info.stats.parked_message_count, 0);
    quiet(&mut sub, Duration::from_millis(500)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_park_parks_at_once_and_skip_drops() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-park");
    c.create_persistent_subscription(stream.as_str(), "g", &from_start())
        .await
        .expect("create");
    append(c, &stream, numbered("E", 0..3)).await;
    let mut sub = subscribe(c, &stream, "g", 10).await;
    let e0 = next(&mut sub).await;
    sub.nack(&e0, NakAction::Park, "poison")
        .await
        .expect("park");
    let e1 = next(&mut sub).await;
    sub.nack(&e1, NakAction::Skip, "not mine")
        .await
        .expect("skip");
    let e2 = next(&mut sub).await;
    sub.ack(&e2).await.expect("ack");
    assert_eq!((n(&e0), n(&e1), n(&e2)), (0, 1, 2));
    quiet(&mut sub, Duration::from_millis(500)).await;
    let info = wait_for_info(c, &stream, "g", |i| i.stats.parked_message_count == 1).await;
    assert_eq!(info.stats.parked_message_count, 1);
    let parked = format!("$persistentsubscription-{stream}::g-parked");
    let mut read = c
        .read_stream(parked.as_str(), &Default::default())
        .await
        .expect("read");
    let link = read.next().await.expect("read").expect("parked");
    let metadata: serde_json::Value =
        serde_json::from_slice(&link.get_original_event().custom_metadata).expect("json");
    assert_eq!(
        metadata["reason"],
        "Client explicitly NAK'ed message.\npoison"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_acknowledged_in_time_is_handed_out_again() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-timeout");
    let mut options = from_start();
    options.settings_mut().message_timeout = Duration::from_millis(500);
    c.create_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("create");
    append(c, &stream, numbered("E", 0..1)).await;
    let mut sub = subscribe(c, &stream, "g", 10).await;
    let (first, count) = next_counted(&mut sub).await;
    assert_eq!((n(&first), count), (0, 0));
    let (again, count) = next_counted(&mut sub).await;
    assert_eq!((n(&again), count), (0, 1));
    sub.ack(&again).await.expect("ack");
    quiet(&mut sub, Duration::from_millis(1500)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_consumers_events_go_to_another() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-departed");
    c.create_persistent_subscription(stream.as_str(), "g", &from_start())
        .await
        .expect("create");
    append(c, &stream, numbered("E", 0..4)).await;
    let mut first = subscribe(c, &stream, "g", 10).await;
    for expected in 0..4 {
        assert_eq!(n(&next(&mut first).await), expected);
    }
    let mut second = subscribe(c, &stream, "g", 10).await;
    drop(first);
    let mut redelivered = Vec::new();
    for _ in 0..4 {
        let (e, count) = next_counted(&mut second).await;
        assert_eq!(count, 1);
        redelivered.push(n(&e));
        second.ack(&e).await.expect("ack");
    }
    assert_eq!(redelivered, vec![0, 1, 2, 3]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_limit_is_kept() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-limit");
    let mut options = PersistentSubscriptionOptions::default();
    options.settings_mut().max_subscriber_count = 1;
    c.create_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("create");
    let mut first = subscribe(c, &stream, "g", 10).await;
    let refused = c
        .subscribe_to_persistent_subscription(stream.as_str(), "g", &Default::default())
        .await;
    match refused {
        Err(kurrentdb::Error::Grpc { code, message }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert!(
                message.starts_with("Maximum subscriptions reached"),
                "{message}"
            );
        }
        other => panic!("expected the limit, got {:?}", other.is_ok()),
    }
    append(c, &stream, numbered("E", 0..1)).await;
    assert_eq!(n(&next(&mut first).await), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_let_go_when_their_group_changes() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("ps-dropped");
    let options = PersistentSubscriptionOptions::default();
    c.create_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("create");
    let mut sub = subscribe(c, &stream, "g", 10).await;
    // Wait until it is connected.
    wait_for_info(c, &stream, "g", |i| i.connections.len() == 1).await;
    c.update_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("update");
    let dropped = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an answer");
    assert!(
        matches!(dropped, Err(kurrentdb::Error::IllegalStateError(_))),
        "{:?}",
        dropped.map(|e| n(&e))
    );
    let mut sub = subscribe(c, &stream, "g", 10).await;
    wait_for_info(c, &stream, "g", |i| i.connections.len() == 1).await;
    c.delete_persistent_subscription(stream.as_str(), "g", &Default::default())
        .await
        .expect("delete");
    let dropped = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an answer");
    assert!(
        matches!(dropped, Err(kurrentdb::Error::IllegalStateError(_))),
        "{:?}",
        dropped.map(|e| n(&e))
    );
    let missing = c
        .subscribe_to_persistent_subscription(stream.as_str(), "g", &Default::default())
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{:?}",
        missing.is_ok()
    );
    s.stop().await;
}

/// Which consumer got which events of which stream.
async fn share(
    c: &Client,
    strategy: SystemConsumerStrategy,
    streams: usize,
    per_stream: u64,
    slots: usize,
) -> Vec<HashMap<String, Vec<u64>>> {
    let prefix = stream_name("share");
    let mut options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix(&prefix));
    options.settings_mut().consumer_strategy_name = strategy;
    let group = format!("{prefix}-group");
    c.create_persistent_subscription_to_all(group.as_str(), &options)
        .await
        .expect("create");
    let mut consumers = Vec::new();
    for _ in 0..2 {
        consumers.push(
            c.subscribe_to_persistent_subscription_to_all(
                group.as_str(),
                &SubscribeToPersistentSubscriptionOptions::default().buffer_size(slots),
            )
            .await
            .expect("subscribe"),
        );
    }
    // Both connected before anything is there to hand out.
    for _ in 0..100 {
        let info = c
            .get_persistent_subscription_info_to_all(group.as_str(), &Default::default())
            .await
            .expect("info");
        if info.connections.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 0..per_stream {
        for s in 0..streams {
            append(c, &format!("{prefix}-{s}"), vec![event("E", round)]).await;
        }
    }
    let total = streams as u64 * per_stream;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, mut sub) in consumers.into_iter().enumerate() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(Ok(e)) = tokio::time::timeout(WAIT, sub.next()).await else {
                    return;
                };
                let stream = e.get_original_event().stream_id().to_string();
                let _ = tx.send((index, stream, n(&e)));
                sub.ack(&e).await.expect("ack");
            }
        }));
    }
    let mut got = vec![HashMap::<String, Vec<u64>>::new(), HashMap::new()];
    for _ in 0..total {
        let (index, stream, n) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("all delivered")
            .expect("a delivery");
        got[index].entry(stream).or_default().push(n);
    }
    for task in tasks {
        task.abort();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_shares_among_consumers() {
    let s = TestStore::start().await;
    let got = share(&s.client, SystemConsumerStrategy::RoundRobin, 4, 10, 10).await;
    let counts: Vec<usize> = got.iter().map(|m| m.values().map(Vec::len).sum()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 40);
    assert!(
        counts.iter().all(|&c| c > 0),
        "both consumers get events: {counts:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_to_single_fills_one_consumer_first() {
    let s = TestStore::start().await;
    // Slots of 50 hold everything: the first consumer takes it all.
    let got = share(
        &s.client,
        SystemConsumerStrategy::DispatchToSingle,
        2,
        10,
        50,
    )
    .await;
    let counts: Vec<usize> = got.iter().map(|m| m.values().map(Vec::len).sum()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 20);
    assert!(counts.contains(&20), "one consumer takes all: {counts:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_keeps_each_stream_with_one_consumer_in_order() {
    let s = TestStore::start().await;
    let got = share(&s.client, SystemConsumerStrategy::Pinned, 8, 10, 3).await;
    let mut streams_seen = HashSet::new();
    for consumer in &got {
        for (stream, ns) in consumer {
            assert!(
                streams_seen.insert(stream.clone()),
                "{stream} went to both consumers"
            );
            assert_eq!(ns, &(0..10).collect::<Vec<_>>(), "{stream} out of order");
        }
    }
    assert_eq!(streams_seen.len(), 8);
    s.stop().await;
}

async fn wait_for_info(
    c: &Client,
    stream: &str,
    group: &str,
    done: impl Fn(&kurrentdb::PersistentSubscriptionInfo<u64>) -> bool,
) -> kurrentdb::PersistentSubscriptionInfo<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = c
            .get_persistent_subscription_info(stream, group, &Default::default())
            .await
            .expect("info");
        if done(&info) || tokio::time::Instant::now() > deadline {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_store_resumes_each_group_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let stream = stream_name("ps-resume");
    {
        let s = TestStore::start_in(dir.path()).await;
        let c = &s.client;
        let mut options = from_start();
        options.settings_mut().checkpoint_lower_bound = 1;
        options.settings_mut().checkpoint_upper_bound = 1;
        c.create_persistent_subscription(stream.as_str(), "g", &options)
            .await
            .expect("create");
        append(c, &stream, numbered("E", 0..10)).await;
        let mut sub = subscribe(c, &stream, "g", 10).await;
        for _ in 0..10 {
            let e = next(&mut sub).await;
            if n(&e) < 5 {
                sub.ack(&e).await.expect("ack");
            }
        }
        let info = wait_for_info(c, &stream, "g", |i| {
            i.stats.last_checkpointed_event_revision == Some(4)
        })
        .await;
        assert_eq!(info.stats.last_checkpointed_event_revision, Some(4));
        s.stop().await;
    }
    let s = TestStore::start_in(dir.path()).await;
    let mut sub = subscribe(&s.client, &stream, "g", 10).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = next(&mut sub).await;
        seen.push(n(&e));
        sub.ack(&e).await.expect("ack");
    }
    assert_eq!(seen, vec![5, 6, 7, 8, 9]);
    quiet(&mut sub, Duration::from_millis(500)).await;
    s.stop().await;
}

/// The real binary, killed with SIGKILL: acknowledged and checkpointed events do not come back,
/// unacknowledged ones do, and parked ones stay parked and can be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let stream = stream_name("ps-kill");
    let (mut child, c) = common::start_binary(dir.path()).await;
    let mut options = from_start();
    options.settings_mut().checkpoint_lower_bound = 1;
    options.settings_mut().checkpoint_upper_bound = 1;
    c.create_persistent_subscription(stream.as_str(), "g", &options)
        .await
        .expect("create");
    append(&c, &stream, numbered("E", 0..10)).await;
    let mut sub = subscribe(&c, &stream, "g", 10).await;
    for _ in 0..10 {
        let e = next(&mut sub).await;
        match n(&e) {
            0..=4 => sub.ack(&e).await.expect("ack"),
            5 => sub.nack(&e, NakAction::Park, "poison").await.expect("park"),
            _ => {} // held, never acknowledged
        }
    }
    // Acknowledged and parked count as done once durable: the checkpoint passes them.
    let info = wait_for_info(&c, &stream, "g", |i| {
        i.stats.last_checkpointed_event_revision == Some(5) && i.stats.parked_message_count == 1
    })
    .await;
    assert_eq!(info.stats.last_checkpointed_event_revision, Some(5));
    child.kill().await.expect("kill -9");
    let _ = child.wait().await;

    let (_child, c) = common::start_binary(dir.path()).await;
    let mut sub = subscribe(&c, &stream, "g", 10).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next(&mut sub).await;
        seen.push(n(&e));
        sub.ack(&e).await.expect("ack");
    }
    assert_eq!(seen, vec![6, 7, 8, 9]);
    quiet(&mut sub, Duration::from_millis(500)).await;
    let info = c
        .get_persistent_subscription_info(stream.as_str(), "g", &Default::default())
        .await
        .expect("info");
    assert_eq!(info.stats.parked_message_count, 1);
    c.replay_parked_messages(stream.as_str(), "g", &Default::default())
        .await
        .expect("replay");
    let replayed = next(&mut sub).await;
    assert_eq!(n(&replayed), 5);
    sub.ack(&replayed).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_live_answers_over_http_1_1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestStore::start().await;
    for (request, expected) in [
        (
            "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "204",
        ),
        (
            "GET /health/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
            .await
            .expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{answer}"
        );
    }
    s.stop().await;
}
