//! The system projections through the official client: `$ce-<category>`, `$et-<type>`,
//! `$streams` and `$category-<category>` are written as the real server writes them, read with
//! resolved links and followed live; the `Projections` service reports and controls the four
//! built-ins, refuses user projections with the reason, and a `kill -9` under concurrent appends
//! neither loses a link nor writes one twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{start_binary_with, TestStore};

const WITH_PROJECTIONS: &[&str] = &["--system-projections", "true"];
use event_store::server::ServerOptions;
use kurrentdb::{
    AppendToStreamOptions, Client, DeleteStreamOptions, EventData, ProjectionClient,
    ProjectionStatus, ReadStreamOptions, ResolvedEvent, StreamMetadata, StreamPosition,
    SubscribeToStreamOptions, SubscriptionEvent, TombstoneStreamOptions,
};
use tonic::Code;

/// Every event of a stream, links resolved; none for a stream that does not exist.
async fn read(client: &Client, stream: &str) -> Vec<ResolvedEvent> {
    let options = ReadStreamOptions::default().resolve_link_tos();
    let mut out = Vec::new();
    let Ok(mut events) = client.read_stream(stream, &options).await else {
        return out;
    };
    loop {
        match events.next().await {
            Ok(Some(event)) => out.push(event),
            Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => return out,
            Err(e) => panic!("reading {stream}: {e}"),
        }
    }
}

/// Reads `stream` until it holds at least `count` events.
async fn wait_for(client: &Client, stream: &str, count: usize) -> Vec<ResolvedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = read(client, stream).await;
        if events.len() >= count {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} has {} events, expected {count}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn append(client: &Client, stream: &str, events: Vec<EventData>) -> u64 {
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e}"))
        .position
        .commit
}

fn json(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &serde_json::json!({ "n": n })).expect("json")
}

fn link_metadata(event: &ResolvedEvent) -> serde_json::Value {
    let link = event.link.as_ref().expect("a link");
    serde_json::from_slice(&link.custom_metadata).expect("link metadata is JSON")
}

fn link_data(event: &ResolvedEvent) -> String {
    let link = event.link.as_ref().expect("a link");
    String::from_utf8(link.data.to_vec()).expect("link data is text")
}

/// The link or reference events of a stream, as their text, without resolving anything.
async fn link_texts(client: &Client, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut events) = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await
    else {
        return out;
    };
    loop {
        match events.next().await {
            Ok(Some(event)) => {
                let event = event.get_original_event();
                out.push(String::from_utf8(event.data.to_vec()).expect("text"));
            }
            Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => return out,
            Err(e) => panic!("reading {stream}: {e}"),
        }
    }
}

async fn status(projections: &ProjectionClient, name: &str) -> ProjectionStatus {
    projections
        .get_status(name, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"))
        .unwrap_or_else(|| panic!("no status for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_linked_into_category_type_and_stream_indexes() {
    let s = TestStore::start().await;
    let c = &s.client;
    let placed = EventData::json("OrderPlaced", &serde_json::json!({ "n": 0 }))
        .unwrap()
        .metadata_as_json(&serde_json::json!({ "$correlationId": "corr-1" }))
        .unwrap();
    append(c, "order-1", vec![placed, json("OrderShipped", 1)]).await;
    append(c, "order-2", vec![json("OrderPlaced", 2)]).await;
    append(c, "invoice-7", vec![json("InvoiceIssued", 3)]).await;
    append(c, "nodash", vec![json("OrderPlaced", 4)]).await;
    let sources: HashMap<(String, u64), (uuid::Uuid, u64)> = {
        let mut map = HashMap::new();
        for stream in ["order-1", "order-2", "invoice-7", "nodash"] {
            for e in read(c, stream).await {
                let e = e.get_original_event();
                map.insert((stream.to_string(), e.revision), (e.id, e.position.commit));
            }
        }
        map
    };

    // `$ce-order`: each event of the category, in order, resolved to the event itself.
    let category = wait_for(c, "$ce-order", 3).await;
    let resolved: Vec<(String, u64, String)> = category
        .iter()
        .map(|e| {
            let event = e.event.as_ref().expect("resolved");
            (
                event.stream_id().to_string(),
                event.revision,
                event.event_type.clone(),
            )
        })
        .collect();
    assert_eq!(
        resolved,
        vec![
            ("order-1".into(), 0, "OrderPlaced".into()),
            ("order-1".into(), 1, "OrderShipped".into()),
            ("order-2".into(), 0, "OrderPlaced".into()),
        ]
    );
    for (revision, e) in category.iter().enumerate() {
        let link = e.link.as_ref().expect("a link");
        assert_eq!(link.stream_id(), "$ce-order");
        assert_eq!(link.revision, revision as u64);
        assert_eq!(link.event_type, "$>");
        assert!(!link.is_json);
        let event = e.event.as_ref().unwrap();
        assert_eq!(
            link_data(e),
            format!("{}@{}", event.revision, event.stream_id())
        );
        let (id, position) = sources[&(event.stream_id().to_string(), event.revision)];
        let metadata = link_metadata(e);
        assert_eq!(metadata["$v"], "3:-1:1:4", "{metadata}");
        assert_eq!(metadata["$c"], position);
        assert_eq!(metadata["$p"], position);
        assert_eq!(metadata["$o"], event.stream_id());
        assert_eq!(metadata["$causedBy"], id.to_string());
    }
    assert_eq!(link_metadata(&category[0])["$correlationId"], "corr-1");
    assert!(link_metadata(&category[1]).get("$correlationId").is_none());
    let invoices = wait_for(c, "$ce-invoice", 1).await;
    assert_eq!(link_data(&invoices[0]), "0@invoice-7");

    // `$et-<type>`: every event of a type, whatever its stream (`nodash` included).
    let placed = wait_for(c, "$et-OrderPlaced", 3).await;
    assert_eq!(
        placed.iter().map(link_data).collect::<Vec<_>>(),
        vec!["0@order-1", "0@order-2", "0@nodash"]
    );
    assert_eq!(link_metadata(&placed[0])["$v"], "4:-1:1:4");
    assert!(link_metadata(&placed[0]).get("$o").is_none());
    assert_eq!(wait_for(c, "$et-OrderShipped", 1).await.len(), 1);

    // `$streams`: the first event of every stream; `$category-<c>`: the names of its streams.
    let streams = wait_for(c, "$streams", 4).await;
    assert_eq!(
        streams.iter().map(link_data).collect::<Vec<_>>(),
        vec!["0@order-1", "0@order-2", "0@invoice-7", "0@nodash"]
    );
    assert_eq!(streams[0].event.as_ref().unwrap().event_type, "OrderPlaced");
    let order_streams = wait_for(c, "$category-order", 2).await;
    let references: Vec<(String, String)> = order_streams
        .iter()
        .map(|e| {
            let reference = e.get_original_event();
            (
                reference.event_type.clone(),
                String::from_utf8(reference.data.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        references,
        vec![
            ("$@".to_string(), "order-1".to_string()),
            ("$@".to_string(), "order-2".to_string())
        ]
    );
    assert_eq!(wait_for(c, "$category-invoice", 1).await.len(), 1);
    // No category for a stream without a dash, and system streams are not indexed.
    assert!(read(c, "$ce-nodash").await.is_empty());
    assert!(read(c, "$et-$>").await.is_empty());
    assert!(read(c, "$ce-$ce").await.is_empty());
    s.stop().await;
}

async fn next_appeared(subscription: &mut kurrentdb::Subscription) -> ResolvedEvent {
    loop {
        let event = tokio::time::timeout(
            Duration::from_secs(10),
            subscription.next_subscription_event(),
        )
        .await
        .expect("the subscription stalled")
        .expect("the subscription failed");
        if let SubscriptionEvent::EventAppeared(e) = event {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_subscription_with_resolved_links_sees_new_events_live() {
    let s = TestStore::start().await;
    let c = &s.client;
    append(c, "order-1", vec![json("OrderPlaced", 0)]).await;
    let options = SubscribeToStreamOptions::default()
        .start_from(StreamPosition::Start)
        .resolve_link_tos();
    let mut subscription = c.subscribe_to_stream("$ce-order", &options).await;
    let first = next_appeared(&mut subscription).await;
    assert_eq!(first.event.as_ref().unwrap().stream_id(), "order-1");
    append(c, "order-2", vec![json("OrderPlaced", 1)]).await;
    let live = next_appeared(&mut subscription).await;
    let event = live.event.as_ref().expect("resolved");
    assert_eq!((event.stream_id(), event.revision), ("order-2", 0));
    assert_eq!(event.as_json::<serde_json::Value>().unwrap()["n"], 1);
    assert_eq!(live.link.as_ref().unwrap().stream_id(), "$ce-order");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_linked_as_the_real_server_links_them() {
    let s = TestStore::start().await;
    let c = &s.client;
    append(c, "order-1", vec![json("OrderPlaced", 0)]).await;
    append(c, "order-2", vec![json("OrderPlaced", 1)]).await;
    c.delete_stream("order-1", &DeleteStreamOptions::default())
        .await
        .expect("soft delete");
    c.tombstone_stream("order-2", &TombstoneStreamOptions::default())
        .await
        .expect("tombstone");
    let category = wait_for(c, "$ce-order", 4).await;
    let soft = link_metadata(&category[2]);
    assert_eq!(link_data(&category[2]), "0@$$order-1");
    assert_eq!(soft["$o"], "order-1");
    assert_eq!(soft["$deleted"], -1);
    assert_eq!(
        link_data(&category[3]),
        format!("{}@order-2", i64::MAX),
        "the tombstone"
    );
    assert_eq!(link_metadata(&category[3])["$deleted"], -1);
    let deleted = wait_for(c, "$et-$deleted", 2).await;
    assert_eq!(
        deleted.iter().map(link_data).collect::<Vec<_>>(),
        vec!["0@order-1".to_string(), format!("{}@order-2", i64::MAX)]
    );
    assert_eq!(link_metadata(&deleted[0])["$deleted"], -1);
    // Other metadata of a user stream is indexed under its type.
    c.set_stream_metadata(
        "order-3",
        &AppendToStreamOptions::default(),
        &StreamMetadata::builder().max_count(5).build(),
    )
    .await
    .expect("metadata");
    let metadata = wait_for(c, "$et-$metadata", 1).await;
    assert_eq!(link_data(&metadata[0]), "0@$$order-3");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reports_the_four_built_ins_running() {
    let s = TestStore::start().await;
    let c = &s.client;
    let last = append(c, "order-1", vec![json("OrderPlaced", 0)]).await;
    wait_for(c, "$ce-order", 1).await;
    let projections = ProjectionClient::from(c.clone());
    let mut listed = Vec::new();
    let mut stream = projections.list(&Default::default()).await.expect("list");
    while let Some(status) = futures::StreamExt::next(&mut stream).await {
        listed.push(status.expect("a status"));
    }
    let mut names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "$by_category",
            "$by_event_type",
            "$stream_by_category",
            "$streams"
        ]
    );
    for p in &listed {
        assert_eq!(p.status, "Running", "{p:?}");
        assert_eq!(p.mode, "Continuous");
        assert_eq!(p.effective_name, p.name);
        assert_eq!((p.epoch, p.version), (-1, 1));
    }
    // Caught up: its position is at least the source event's, in the real server's format.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let by_category = status(&projections, "$by_category").await;
        let position: u64 = by_category
            .position
            .strip_prefix("C:")
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("a C:x/P:x position");
        if position >= last && by_category.progress == 100.0 {
            assert!(by_category.last_checkpoint.starts_with("C:"));
            assert!(by_category.events_processed_after_restart >= 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{by_category:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = projections.get_status("nope", &Default::default()).await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
    // The built-ins keep no state: an empty object, as from the real server.
    let state: serde_json::Value = projections
        .get_state("$by_category", &Default::default())
        .await
        .expect("state")
        .expect("JSON");
    assert_eq!(state, serde_json::json!({}));
    let result: serde_json::Value = projections
        .get_result("$streams", &Default::default())
        .await
        .expect("result")
        .expect("JSON");
    assert_eq!(result, serde_json::json!({}));
    projections
        .restart_subsystem(&Default::default())
        .await
        .expect("restart");
    append(c, "order-2", vec![json("OrderPlaced", 1)]).await;
    wait_for(c, "$ce-order", 2).await;
    assert_eq!(status(&projections, "$by_category").await.status, "Running");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_projections_stop_linking_until_enabled_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestStore::start_in(dir.path()).await;
    let c = &s.client;
    append(c, "order-1", vec![json("OrderPlaced", 0)]).await;
    wait_for(c, "$ce-order", 1).await;
    let projections = ProjectionClient::from(c.clone());
    projections
        .disable("$by_category", &Default::default())
        .await
        .expect("disable");
    assert_eq!(status(&projections, "$by_category").await.status, "Stopped");
    append(c, "order-2", vec![json("WhileDisabled", 1)]).await;
    // The others go on: once `$by_event_type` has linked it, `$by_category` would have too.
    wait_for(c, "$et-WhileDisabled", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(c, "$ce-order").await.len(), 1);
    s.stop().await;

    let s = TestStore::start_in(dir.path()).await;
    let c = &s.client;
    let projections = ProjectionClient::from(c.clone());
    let stopped = status(&projections, "$by_category").await;
    assert_eq!((stopped.status.as_str(), stopped.version), ("Stopped", 2));
    append(c, "order-3", vec![json("AfterRestart", 2)]).await;
    wait_for(c, "$et-AfterRestart", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(c, "$ce-order").await.len(), 1);

    projections
        .enable("$by_category", &Default::default())
        .await
        .expect("enable");
    // It catches up on what it missed, in order.
    let caught_up = wait_for(c, "$ce-order", 3).await;
    assert_eq!(
        caught_up.iter().map(link_data).collect::<Vec<_>>(),
        vec!["0@order-1", "0@order-2", "0@order-3"]
    );
    let running = status(&projections, "$by_category").await;
    assert_eq!((running.status.as_str(), running.version), ("Running", 3));
    // Enabling a running projection changes nothing; aborting reads as such.
    projections
        .enable("$by_category", &Default::default())
        .await
        .expect("enable again");
    projections
        .abort("$streams", &Default::default())
        .await
        .expect("abort");
    assert_eq!(status(&projections, "$streams").await.status, "Aborted");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_links_again_from_the_start_and_hides_the_old_links() {
    let s = TestStore::start().await;
    let c = &s.client;
    append(
        c,
        "order-1",
        vec![json("OrderPlaced", 0), json("OrderShipped", 1)],
    )
    .await;
    append(c, "order-2", vec![json("OrderPlaced", 2)]).await;
    let before = wait_for(c, "$ce-order", 3).await;
    let projections = ProjectionClient::from(c.clone());
    projections
        .reset("$by_category", &Default::default())
        .await
        .expect("reset");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let events = read(c, "$ce-order").await;
        if events.len() == 3 && events.iter().all(|e| link_metadata(e)["$v"] == "3:2:2:4") {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "not re-linked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The same targets, linked anew after the old links, which are hidden, not rewritten.
    assert_eq!(
        after.iter().map(link_data).collect::<Vec<_>>(),
        before.iter().map(link_data).collect::<Vec<_>>()
    );
    assert_eq!(
        after
            .iter()
            .map(|e| e.link.as_ref().unwrap().revision)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let reset = status(&projections, "$by_category").await;
    assert_eq!(
        (reset.status.as_str(), reset.epoch, reset.version),
        ("Running", 2, 2)
    );
    // New events carry on after the re-linked ones.
    append(c, "order-3", vec![json("OrderPlaced", 3)]).await;
    assert_eq!(
        link_data(&wait_for(c, "$ce-order", 4).await[3]),
        "0@order-3"
    );
    s.stop().await;
}

fn grpc_code(result: &kurrentdb::Result<()>) -> Option<(Code, String)> {
    match result {
        Err(kurrentdb::Error::Grpc { code, message }) => Some((*code, message.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_projections_are_refused_with_the_reason() {
    let s = TestStore::start().await;
    let projections = ProjectionClient::from(s.client.clone());
    let query = "fromAll().when({ $any: function (s, e) { return s; } })".to_string();
    let created = projections
        .create("counter", query.clone(), &Default::default())
        .await;
    let (code, message) = grpc_code(&created).expect("a gRPC refusal");
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("no JavaScript engine"), "{message}");
    let duplicate = projections
        .create("$by_category", query.clone(), &Default::default())
        .await;
    assert!(
        matches!(duplicate, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{duplicate:?}"
    );
    let update = projections
        .update("$by_category", query, &Default::default())
        .await;
    assert_eq!(
        grpc_code(&update).map(|c| c.0),
        Some(Code::FailedPrecondition)
    );
    let delete = projections.delete("$streams", &Default::default()).await;
    let (code, message) = grpc_code(&delete).expect("a gRPC refusal");
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("System Projections"), "{message}");
    for missing in [
        projections.delete("counter", &Default::default()).await,
        projections.enable("counter", &Default::default()).await,
        projections.disable("counter", &Default::default()).await,
        projections.reset("counter", &Default::default()).await,
    ] {
        assert!(
            matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
            "{missing:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_as_on_the_real_server_nothing_is_linked_and_the_service_is_absent() {
    let s = TestStore::start_with(ServerOptions::default(), "").await;
    let c = &s.client;
    append(c, "order-1", vec![json("OrderPlaced", 0)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for stream in [
        "$ce-order",
        "$et-OrderPlaced",
        "$streams",
        "$category-order",
    ] {
        assert!(read(c, stream).await.is_empty(), "{stream} exists");
    }
    let projections = ProjectionClient::from(c.clone());
    let listed = projections.list(&Default::default()).await.map(|_| ());
    assert!(
        matches!(listed, Err(kurrentdb::Error::UnsupportedFeature)),
        "{listed:?}"
    );
    s.stop().await;
}

/// Events of the crash test: which category and type each writer uses.
const CATEGORIES: [&str; 3] = ["alpha", "beta", "gamma"];
const TYPES: [&str; 2] = ["Tick", "Tock"];
const WRITERS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_appends_links_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = 3u64;
    for round in 0..rounds {
        let (mut child, client) = start_binary_with(dir.path(), WITH_PROJECTIONS).await;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let client = client.clone();
            writers.push(tokio::spawn(async move {
                let stream = format!("{}-{round}-{w}", CATEGORIES[w as usize % 3]);
                let event_type = TYPES[w as usize % 2];
                for batch in 0u64.. {
                    let events: Vec<EventData> =
                        (0..1 + batch % 3).map(|i| json(event_type, i)).collect();
                    if client
                        .append_to_stream(stream.as_str(), &Default::default(), events)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(600 + round * 350)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for writer in writers {
            let _ = writer.await;
        }
    }

    let (mut child, client) = start_binary_with(dir.path(), WITH_PROJECTIONS).await;
    // What is in the log after the kills: every link must name these, once each.
    let mut by_category: HashMap<String, Vec<String>> = HashMap::new();
    let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
    let mut first_events = Vec::new();
    let mut total = 0;
    for round in 0..rounds {
        for w in 0..WRITERS {
            let category = CATEGORIES[w as usize % 3];
            let stream = format!("{category}-{round}-{w}");
            let events = link_texts(&client, &stream).await;
            for revision in 0..events.len() {
                let target = format!("{revision}@{stream}");
                by_category
                    .entry(format!("$ce-{category}"))
                    .or_default()
                    .push(target.clone());
                by_type
                    .entry(format!("$et-{}", TYPES[w as usize % 2]))
                    .or_default()
                    .push(target);
                total += 1;
            }
            if !events.is_empty() {
                first_events.push(format!("0@{stream}"));
            }
        }
    }
    assert!(total > 50, "too few events before the kills: {total}");
    let mut expected = by_category;
    expected.extend(by_type);
    expected.insert("$streams".into(), first_events);
    for (index, mut targets) in expected {
        targets.sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut links = loop {
            let links = link_texts(&client, &index).await;
            if links.len() >= targets.len() || tokio::time::Instant::now() > deadline {
                break links;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let unique: HashSet<&String> = links.iter().collect();
        assert_eq!(unique.len(), links.len(), "{index}: a link written twice");
        links.sort();
        assert_eq!(links, targets, "{index}: links and events differ");
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
