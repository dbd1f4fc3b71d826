//! The embedded store driven through the official `kurrentdb` client, item by item of the
//! protocol: discovery, appends and their concurrency checks, reads, deletes and metadata.

mod common;

use common::{event, stream_name, TestStore};
use kurrentdb::{
    AppendToStreamOptions, CurrentRevision, DeleteStreamOptions, Error, EventData, Position,
    ReadAllOptions, ReadStreamOptions, StreamMetadata, StreamMetadataResult, StreamPosition,
    StreamState, SubscriptionFilter, TombstoneStreamOptions,
};

/// What a test looks at in a read event.
#[derive(Debug)]
struct Seen {
    n: u64,
    revision: u64,
    position: Position,
    event_type: String,
    is_json: bool,
    stream: String,
    created: chrono::DateTime<chrono::Utc>,
}

async fn read_all_of(
    client: &kurrentdb::Client,
    stream: &str,
    options: ReadStreamOptions,
) -> kurrentdb::Result<Vec<Seen>> {
    let mut read = client.read_stream(stream, &options).await?;
    let mut out = Vec::new();
    while let Some(e) = read.next().await? {
        let e = e.get_original_event();
        out.push(Seen {
            n: e.as_json::<serde_json::Value>().unwrap()["n"]
                .as_u64()
                .unwrap(),
            revision: e.revision,
            position: e.position,
            event_type: e.event_type.clone(),
            is_json: e.is_json,
            stream: e.stream_id().to_string(),
            created: e.created,
        });
    }
    Ok(out)
}

fn numbers(events: &[Seen]) -> Vec<u64> {
    events.iter().map(|e| e.n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_a_modern_version_and_only_what_it_serves() {
    let s = TestStore::start().await;
    let info = s.client.server_info().await.expect("server info");
    assert!(info.version() >= (24, 10), "version {}", info.version());
    // The batch-append feature is checked by `batch_append_writes_and_checks_each_batch`: the
    // client refuses to batch unless the server lists it.
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_a_stream_both_ways() {
    let s = TestStore::start().await;
    let stream = stream_name("order");
    let events: Vec<EventData> = (0..10).map(|n| event("Happened", n)).collect();
    let written = s
        .client
        .append_to_stream(
            stream.as_str(),
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            events,
        )
        .await
        .expect("append");
    assert_eq!(written.next_expected_version, 9);

    let all = read_all_of(&s.client, &stream, ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(numbers(&all), (0..10).collect::<Vec<_>>());
    assert_eq!(
        all.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(all
        .iter()
        .all(|e| e.event_type == "Happened" && e.is_json && e.stream == stream));
    // The last event's position is what append returned; created is now-ish.
    assert_eq!(all[9].position, written.position);
    let age = chrono::Utc::now() - all[0].created;
    assert!(age.num_seconds().abs() < 60, "created {}", all[0].created);

    let from_4 = read_all_of(
        &s.client,
        &stream,
        ReadStreamOptions::default()
            .position(StreamPosition::Position(4))
            .max_count(3),
    )
    .await
    .unwrap();
    assert_eq!(numbers(&from_4), vec![4, 5, 6]);
    let backwards = read_all_of(
        &s.client,
        &stream,
        ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(4),
    )
    .await
    .unwrap();
    assert_eq!(numbers(&backwards), vec![9, 8, 7, 6]);
    let back_from_2 = read_all_of(
        &s.client,
        &stream,
        ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::Position(2)),
    )
    .await
    .unwrap();
    assert_eq!(numbers(&back_from_2), vec![2, 1, 0]);
    let past_end = read_all_of(
        &s.client,
        &stream,
        ReadStreamOptions::default().position(StreamPosition::Position(10)),
    )
    .await
    .unwrap();
    assert!(past_end.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_not_found() {
    let s = TestStore::start().await;
    let result = read_all_of(&s.client, "never-written", ReadStreamOptions::default()).await;
    assert!(matches!(result, Err(Error::ResourceNotFound)), "{result:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expected_revision_form_is_checked() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("acct");
    let with = |state| AppendToStreamOptions::default().stream_state(state);

    let err = c
        .append_to_stream(
            stream.as_str(),
            &with(StreamState::StreamExists),
            vec![event("E", 0)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                expected: StreamState::StreamExists,
                current: CurrentRevision::NoStream
            }
        ),
        "{err:?}"
    );
    let err = c
        .append_to_stream(
            stream.as_str(),
            &with(StreamState::StreamRevision(0)),
            vec![event("E", 0)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                expected: StreamState::StreamRevision(0),
                current: CurrentRevision::NoStream
            }
        ),
        "{err:?}"
    );

    assert_eq!(
        c.append_to_stream(
            stream.as_str(),
            &with(StreamState::NoStream),
            vec![event("E", 0)]
        )
        .await
        .unwrap()
        .next_expected_version,
        0
    );
    let err = c
        .append_to_stream(
            stream.as_str(),
            &with(StreamState::NoStream),
            vec![event("E", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                expected: StreamState::NoStream,
                current: CurrentRevision::Current(0)
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        c.append_to_stream(
            stream.as_str(),
            &with(StreamState::StreamExists),
            vec![event("E", 1)]
        )
        .await
        .unwrap()
        .next_expected_version,
        1
    );
    assert_eq!(
        c.append_to_stream(
            stream.as_str(),
            &with(StreamState::StreamRevision(1)),
            vec![event("E", 2)]
        )
        .await
        .unwrap()
        .next_expected_version,
        2
    );
    let err = c
        .append_to_stream(
            stream.as_str(),
            &with(StreamState::StreamRevision(1)),
            vec![event("E", 3)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                expected: StreamState::StreamRevision(1),
                current: CurrentRevision::Current(2)
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        c.append_to_stream(
            stream.as_str(),
            &with(StreamState::Any),
            vec![event("E", 3)]
        )
        .await
        .unwrap()
        .next_expected_version,
        3
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_returns_the_original_result() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("retry");
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    let batch = || {
        ids.iter()
            .enumerate()
            .map(|(n, id)| event("E", n as u64).id(*id))
            .collect::<Vec<_>>()
    };
    let no_stream = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = c
        .append_to_stream(stream.as_str(), &no_stream, batch())
        .await
        .unwrap();
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        vec![event("E", 9)],
    )
    .await
    .unwrap();
    // Same ids at the same expected revision: the original answer, nothing written.
    let again = c
        .append_to_stream(stream.as_str(), &no_stream, batch())
        .await
        .unwrap();
    assert_eq!(
        (again.next_expected_version, again.position),
        (first.next_expected_version, first.position)
    );
    // With `any`, too.
    let again = c
        .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), batch())
        .await
        .unwrap();
    assert_eq!(again.next_expected_version, 2);
    let all = read_all_of(c, &stream, ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(numbers(&all), vec![0, 1, 2, 9]);
    // A retry that matches only in part is refused.
    let partial = vec![event("E", 0).id(ids[0]), event("E", 7)];
    let err = c
        .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), partial)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }), "{err:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_all_forwards_and_backwards_from_any_position() {
    let s = TestStore::start_without_projections().await;
    let c = &s.client;
    let mut positions = Vec::new();
    for n in 0..6 {
        let stream = format!("all-{}", n % 2);
        positions.push(
            c.append_to_stream(
                stream,
                &AppendToStreamOptions::default(),
                vec![event("E", n)],
            )
            .await
            .unwrap()
            .position,
        );
    }
    let read = |options: ReadAllOptions| async move {
        let mut r = c.read_all(&options).await.unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next().await.unwrap() {
            out.push(e.get_original_event().position);
        }
        out
    };
    assert_eq!(read(ReadAllOptions::default()).await, positions);
    // From a position includes it; backwards from a position excludes it.
    assert_eq!(
        read(
            ReadAllOptions::default()
                .position(StreamPosition::Position(positions[2]))
                .max_count(2)
        )
        .await,
        positions[2..4].to_vec()
    );
    let mut before: Vec<Position> = positions[..2].to_vec();
    before.reverse();
    assert_eq!(
        read(
            ReadAllOptions::default()
                .backwards()
                .position(StreamPosition::Position(positions[2]))
        )
        .await,
        before
    );
    let mut newest: Vec<Position> = positions[3..].to_vec();
    newest.reverse();
    assert_eq!(
        read(
            ReadAllOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(3)
        )
        .await,
        newest
    );
    assert!(read(
        ReadAllOptions::default()
            .position(StreamPosition::End)
            .forwards()
    )
    .await
    .is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_all_on_the_server() {
    let s = TestStore::start_without_projections().await;
    let c = &s.client;
    for n in 0..20 {
        let (stream, kind) = if n % 4 == 0 {
            ("invoice-1", "InvoiceSent")
        } else {
            ("order-1", "OrderPlaced")
        };
        c.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            vec![event(kind, n)],
        )
        .await
        .unwrap();
    }
    c.append_to_stream(
        "$system-ish",
        &AppendToStreamOptions::default(),
        vec![event("$internal", 99)],
    )
    .await
    .unwrap();
    let read = |filter: SubscriptionFilter| async move {
        let mut r = c
            .read_all(&ReadAllOptions::default().filter(filter))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next().await.unwrap() {
            out.push(
                e.get_original_event()
                    .as_json::<serde_json::Value>()
                    .unwrap()["n"]
                    .as_u64()
                    .unwrap(),
            );
        }
        out
    };
    let invoices: Vec<u64> = (0..20).filter(|n| n % 4 == 0).collect();
    assert_eq!(
        read(SubscriptionFilter::on_stream_name().add_prefix("invoice-")).await,
        invoices
    );
    assert_eq!(
        read(SubscriptionFilter::on_event_type().regex("^Invoice")).await,
        invoices
    );
    assert_eq!(
        read(
            SubscriptionFilter::on_event_type()
                .add_prefix("Order")
                .add_prefix("Invoice")
        )
        .await,
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(
        read(SubscriptionFilter::on_event_type().exclude_system_events())
            .await
            .len(),
        20
    );
    assert_eq!(
        read(SubscriptionFilter::on_stream_name().regex("^\\$")).await,
        vec![99]
    );
    // Filters are .NET regular expressions: the Python client's default, a negative
    // look-ahead, excludes system events; look-behind works too.
    assert_eq!(
        read(
            SubscriptionFilter::on_event_type().regex(r"^(?!(\$.+$|PersistentConfig\d+$|Result$))")
        )
        .await,
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(
        read(SubscriptionFilter::on_stream_name().regex(r"(?<=^invoice)-1$")).await,
        invoices
    );
    assert_eq!(
        read(SubscriptionFilter::on_event_type().regex(r"^(\w)\w*(?<!Sent)$")).await,
        (0..20).filter(|n| n % 4 != 0).collect::<Vec<_>>()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_hides_the_stream_until_it_is_written_again() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("soft");
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        (0..3).map(|n| event("E", n)).collect::<Vec<_>>(),
    )
    .await
    .unwrap();

    let err = c
        .delete_stream(
            stream.as_str(),
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(7)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Grpc {
                code: tonic::Code::FailedPrecondition,
                ..
            }
        ),
        "{err:?}"
    );
    let deleted_at = c
        .delete_stream(
            stream.as_str(),
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(2)),
        )
        .await
        .unwrap();
    assert!(deleted_at.is_some());
    assert!(matches!(
        read_all_of(c, &stream, ReadStreamOptions::default()).await,
        Err(Error::ResourceNotFound)
    ));

    // Writing again continues the revisions and shows only the new events.
    let written = c
        .append_to_stream(
            stream.as_str(),
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            vec![event("E", 3)],
        )
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 3);
    let visible = read_all_of(c, &stream, ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!((numbers(&visible), visible[0].revision), (vec![3], 3));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstoned_stream_is_gone_for_good() {
    let s = TestStore::start_without_projections().await;
    let c = &s.client;
    let stream = stream_name("hard");
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        vec![event("E", 0)],
    )
    .await
    .unwrap();
    c.tombstone_stream(stream.as_str(), &TombstoneStreamOptions::default())
        .await
        .unwrap();

    assert!(matches!(
        read_all_of(c, &stream, ReadStreamOptions::default()).await,
        Err(Error::ResourceDeleted)
    ));
    let err = c
        .append_to_stream(
            stream.as_str(),
            &AppendToStreamOptions::default(),
            vec![event("E", 1)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "{err:?}");
    let err = c
        .tombstone_stream(stream.as_str(), &TombstoneStreamOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "{err:?}");
    // The tombstone itself shows in $all.
    let mut r = c
        .read_all(
            &ReadAllOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(1),
        )
        .await
        .unwrap();
    let last = r.next().await.unwrap().unwrap();
    assert_eq!(
        (
            last.get_original_event().event_type.as_str(),
            last.get_original_event().revision
        ),
        ("$streamDeleted", i64::MAX as u64)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_is_written_and_read_back() {
    let s = TestStore::start().await;
    let c = &s.client;
    let stream = stream_name("meta");
    let latest = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    assert!(matches!(
        c.get_stream_metadata(stream.as_str(), &latest)
            .await
            .unwrap(),
        StreamMetadataResult::NotFound
    ));
    c.append_to_stream(
        stream.as_str(),
        &AppendToStreamOptions::default(),
        (0..5).map(|n| event("E", n)).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let meta = StreamMetadata::builder().max_count(2).build();
    c.set_stream_metadata(stream.as_str(), &AppendToStreamOptions::default(), &meta)
        .await
        .unwrap();
    let meta = StreamMetadata::builder().max_count(3).build();
    c.set_stream_metadata(stream.as_str(), &AppendToStreamOptions::default(), &meta)
        .await
        .unwrap();
    match c
        .get_stream_metadata(stream.as_str(), &latest)
        .await
        .unwrap()
    {
        StreamMetadataResult::Success(m) => {
            assert_eq!((m.metadata().max_count, m.version()), (Some(3), 1))
        }
        other => panic!("{other:?}"),
    }
    // $maxCount hides the older events from reads.
    assert_eq!(
        numbers(
            &read_all_of(c, &stream, ReadStreamOptions::default())
                .await
                .unwrap()
        ),
        vec![2, 3, 4]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_append_writes_and_checks_each_batch() {
    let s = TestStore::start().await;
    let c = &s.client;
    let batch = c
        .batch_append(&Default::default())
        .await
        .expect("batch append");
    let stream = stream_name("batch");
    let ok = batch
        .append_to_stream(
            stream.clone(),
            StreamState::NoStream,
            (0..4).map(|n| event("E", n)).collect(),
        )
        .await
        .unwrap();
    assert_eq!(ok.current_revision(), Some(3));
    let refused = batch
        .append_to_stream(stream.clone(), StreamState::NoStream, vec![event("E", 4)])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        numbers(
            &read_all_of(c, &stream, ReadStreamOptions::default())
                .await
                .unwrap()
        ),
        vec![0, 1, 2, 3]
    );
    s.stop().await;
}
