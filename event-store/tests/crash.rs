//! The real binary as a process: kill -9 at a random moment under concurrent appends loses no
//! acknowledged event and leaves no append in part; SIGTERM stops it cleanly, live
//! subscriptions and all.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kurrentdb::{AppendToStreamOptions, EventData, ReadStreamOptions};
use tokio::process::Command;

use common::{start_binary as start, start_binary_with};

const PER_APPEND: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let (mut child, client) = start(dir.path()).await;
        let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let mut writers = Vec::new();
        for w in 0..16u64 {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            writers.push(tokio::spawn(async move {
                let stream = format!("crash-{round}-{w}");
                for batch in 0u64.. {
                    let events: Vec<EventData> = (0..PER_APPEND)
                        .map(|i| {
                            EventData::json(
                                "Written",
                                &serde_json::json!({ "batch": batch, "i": i }),
                            )
                            .unwrap()
                        })
                        .collect();
                    match client
                        .append_to_stream(
                            stream.as_str(),
                            &AppendToStreamOptions::default(),
                            events,
                        )
                        .await
                    {
                        Ok(r) => acknowledged
                            .lock()
                            .unwrap()
                            .push((stream.clone(), r.next_expected_version)),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let a few hundred appends through, then pull the plug mid-flight.
        tokio::time::sleep(Duration::from_millis(700 + round * 300)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for w in writers {
            let _ = w.await;
        }
        let acknowledged = acknowledged.lock().unwrap().clone();
        assert!(
            acknowledged.len() > 10,
            "too few appends before the kill: {}",
            acknowledged.len()
        );

        let (mut child, client) = start(dir.path()).await;
        for w in 0..16u64 {
            let stream = format!("crash-{round}-{w}");
            let mut events = Vec::new();
            if let Ok(mut read) = client
                .read_stream(stream.as_str(), &ReadStreamOptions::default())
                .await
            {
                while let Ok(Some(e)) = read.next().await {
                    let e = e.get_original_event();
                    events.push((e.revision, e.as_json::<serde_json::Value>().unwrap()));
                }
            }
            // Whole appends only: revisions are contiguous and each batch is complete.
            assert_eq!(
                events.len() as u64 % PER_APPEND,
                0,
                "{stream}: a partial append survived"
            );
            for (index, (revision, data)) in events.iter().enumerate() {
                assert_eq!(*revision, index as u64);
                assert_eq!(data["batch"], index as u64 / PER_APPEND);
                assert_eq!(data["i"], index as u64 % PER_APPEND);
            }
            let last = events.last().map(|(r, _)| *r);
            for (_, acked) in acknowledged.iter().filter(|(s, _)| *s == stream) {
                assert!(
                    last >= Some(*acked),
                    "{stream}: acknowledged revision {acked} lost (found up to {last:?})"
                );
            }
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}

/// Appends larger than the journal (they commit to the database directly) between small ones
/// (journaled), with the journal filling and starting again: after `kill -9`, every one of them
/// is there, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_journaled_and_direct_commits_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let small_journal = ["--journal-mib", "1"];
    let (mut child, client) = start_binary_with(dir.path(), &small_journal).await;
    let mut expected = Vec::new();
    for n in 0..300u64 {
        // Every 50th is 2 MiB, twice the journal; the others fill it about every 100.
        let size = if n % 50 == 25 { 2 << 20 } else { 10 << 10 };
        let event = EventData::json(
            "Sized",
            &serde_json::json!({ "n": n, "filler": "x".repeat(size) }),
        )
        .unwrap();
        client
            .append_to_stream("sized", &AppendToStreamOptions::default(), event)
            .await
            .unwrap();
        expected.push(n);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (_child, client) = start_binary_with(dir.path(), &small_journal).await;
    let mut read = client
        .read_stream("sized", &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        let e = e.get_original_event();
        let data: serde_json::Value = e.as_json().unwrap();
        assert_eq!(e.revision, found.len() as u64);
        found.push(data["n"].as_u64().unwrap());
    }
    assert_eq!(found, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_it_cleanly_even_with_live_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, client) = start(dir.path()).await;
    client
        .append_to_stream(
            "before-stop",
            &AppendToStreamOptions::default(),
            EventData::json("E", &1).unwrap(),
        )
        .await
        .unwrap();
    let mut subscription = client.subscribe_to_all(&Default::default()).await;
    let _ = subscription.next_subscription_event().await.unwrap();
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not stop")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // The data is all there on the next start.
    let (mut child, client) = start(dir.path()).await;
    let mut read = client
        .read_stream("before-stop", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(read.next().await.unwrap().is_some());
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
