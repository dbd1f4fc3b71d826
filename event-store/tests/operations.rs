//! The `Operations` and `Monitoring` services through the official client: a scavenge removes
//! what deleted streams and `$maxCount` left behind (readers see no difference, the space is
//! used again), stopping and the single-node calls answer, stats stream, and a shutdown request
//! stops the real binary cleanly.

mod common;

use std::time::Duration;

use common::{stream_name, TestStore};
use kurrentdb::operations::{self, ScavengeStatus, StatsOptions};
use kurrentdb::{
    AppendToStreamOptions, Client, DeleteStreamOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamMetadata, StreamPosition,
};

fn big(n: u64) -> EventData {
    EventData::json(
        "Big",
        &serde_json::json!({ "n": n, "pad": "x".repeat(4096) }),
    )
    .expect("json")
}

async fn append(c: &Client, stream: &str, range: std::ops::Range<u64>) {
    let events: Vec<EventData> = range.map(big).collect();
    for chunk in events.chunks(100) {
        c.append_to_stream(stream, &AppendToStreamOptions::default(), chunk.to_vec())
            .await
            .expect("append");
    }
}

/// How many events of `stream` `$all` holds.
async fn in_all(c: &Client, stream: &str) -> usize {
    let mut read = c
        .read_all(
            &ReadAllOptions::default()
                .position(StreamPosition::Start)
                .max_count(usize::MAX),
        )
        .await
        .expect("read $all");
    let mut count = 0;
    while let Some(e) = read.next().await.expect("read") {
        count += usize::from(e.get_original_event().stream_id() == stream);
    }
    count
}

async fn revisions(c: &Client, stream: &str) -> Vec<u64> {
    let mut read = c
        .read_stream(stream, &ReadStreamOptions::default().max_count(usize::MAX))
        .await
        .expect("read");
    let mut out = Vec::new();
    while let Ok(Some(e)) = read.next().await {
        out.push(e.get_original_event().revision);
    }
    out
}

fn file_size(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("events.redb")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_removes_what_no_reader_sees_and_its_space_is_used_again() {
    let dir = tempfile::tempdir().expect("dir");
    let s = TestStore::start_in_without_projections(dir.path()).await;
    let c = &s.client;
    let ops = operations::Client::from(c.clone());
    let deleted = stream_name("deleted");
    let capped = stream_name("capped");
    append(c, &deleted, 0..1000).await;
    append(c, &capped, 0..50).await;
    c.set_stream_metadata(
        capped.as_str(),
        &Default::default(),
        &StreamMetadata::builder().max_count(10).build(),
    )
    .await
    .expect("metadata");
    c.delete_stream(deleted.as_str(), &DeleteStreamOptions::default())
        .await
        .expect("delete");
    let capped_before = revisions(c, &capped).await;
    assert_eq!(in_all(c, &deleted).await, 1000);

    let started = ops
        .start_scavenge(1, 0, &Default::default())
        .await
        .expect("start");
    assert_eq!(started.status(), ScavengeStatus::Started);
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = in_all(c, &deleted).await;
        if left <= 1 && in_all(c, &capped).await == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The newest event stays: it holds the stream's revision.
    assert_eq!(left, 1);
    // The scavenge's commits are durable: the file holds everything written so far.
    let grown = file_size(dir.path());
    assert_eq!(in_all(c, &capped).await, 10);
    // Readers see what they saw before.
    assert_eq!(revisions(c, &capped).await, capped_before);
    assert!(revisions(c, &deleted).await.is_empty());
    // Written again, each continues its revisions.
    let outcome = c
        .append_to_stream(capped.as_str(), &AppendToStreamOptions::default(), big(50))
        .await
        .expect("append after scavenge");
    assert_eq!(outcome.next_expected_version, 50);
    let outcome = c
        .append_to_stream(
            deleted.as_str(),
            &AppendToStreamOptions::default(),
            big(1000),
        )
        .await
        .expect("append to the deleted stream");
    assert_eq!(outcome.next_expected_version, 1000);
    // As much written again fits in the space the scavenge freed.
    append(c, &stream_name("again"), 0..900).await;
    // Stopped, the store checkpoints: the file then holds the new events too.
    s.stop().await;
    let reopened = TestStore::start_in_without_projections(dir.path()).await;
    let after = file_size(dir.path());
    assert!(
        after < grown + grown / 4,
        "the freed space was not used again: {grown} bytes before, {after} after"
    );
    reopened.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_node_calls_answer_as_a_lone_real_node_does() {
    let s = TestStore::start().await;
    let ops = operations::Client::from(s.client.clone());
    let started = ops
        .start_scavenge(1, 0, &Default::default())
        .await
        .expect("start");
    let stopped = ops
        .stop_scavenge(started.id(), &Default::default())
        .await
        .expect("stop");
    assert_eq!(stopped.status(), ScavengeStatus::Stopped);
    let unknown = ops
        .stop_scavenge("no-such-scavenge", &Default::default())
        .await;
    assert!(
        matches!(unknown, Err(kurrentdb::Error::ResourceNotFound)),
        "{unknown:?}"
    );
    let refused = ops.start_scavenge(0, 0, &Default::default()).await;
    assert!(refused.is_err(), "a scavenge without threads was started");
    ops.merge_indexes(&Default::default())
        .await
        .expect("merge indexes");
    ops.resign_node(&Default::default()).await.expect("resign");
    ops.set_node_priority(1, &Default::default())
        .await
        .expect("priority");
    ops.restart_persistent_subscriptions(&Default::default())
        .await
        .expect("restart persistent subscriptions");

    let mut stats = ops
        .stats(&StatsOptions::default().refresh_time(Duration::from_millis(100)))
        .await
        .expect("stats");
    for _ in 0..2 {
        let figures = tokio::time::timeout(Duration::from_secs(5), stats.next())
            .await
            .expect("a refresh in time")
            .expect("stats")
            .0;
        assert!(
            figures
                .get("proc-mem")
                .is_some_and(|m| m.parse::<u64>().is_ok()),
            "{figures:?}"
        );
        assert!(figures.contains_key("es-checksum"), "{figures:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_request_stops_the_binary_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, c) = common::start_binary(dir.path()).await;
    c.append_to_stream("before-shutdown", &AppendToStreamOptions::default(), big(1))
        .await
        .expect("append");
    operations::Client::from(c.clone())
        .shutdown(&Default::default())
        .await
        .expect("shutdown");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stopped in time")
        .expect("status");
    assert!(status.success(), "{status:?}");
    // What was written is there after the restart.
    let (_child, c) = common::start_binary(dir.path()).await;
    assert_eq!(revisions(&c, "before-shutdown").await, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_hides_old_events_and_a_scavenge_removes_them() {
    let s = TestStore::start_without_projections().await;
    let c = &s.client;
    let stream = stream_name("aged");
    append(c, &stream, 0..5).await;
    // `$maxAge` is in seconds on the real server; this client writes milliseconds there, so the
    // metadata is written as the real server reads it.
    let metadata =
        EventData::json("$metadata", &serde_json::json!({ "$maxAge": 1 })).expect("json");
    c.append_to_stream(
        format!("$${stream}"),
        &AppendToStreamOptions::default(),
        metadata,
    )
    .await
    .expect("metadata");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), big(5))
        .await
        .expect("append");
    // Only the young event is there for readers; `$all` still holds the old ones.
    assert_eq!(revisions(c, &stream).await, vec![5]);
    assert_eq!(in_all(c, &stream).await, 6);
    let ops = operations::Client::from(c.clone());
    ops.start_scavenge(1, 0, &Default::default())
        .await
        .expect("start");
    for _ in 0..200 {
        if in_all(c, &stream).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(in_all(c, &stream).await, 1);
    assert_eq!(revisions(c, &stream).await, vec![5]);
    s.stop().await;
}
