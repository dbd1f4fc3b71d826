//! `Store::commit`, the atomic write the system projections rely on: appends to several streams
//! and records, all written in one transaction or none of it, and durable across a reopen.

use bytes::Bytes;
use event_store::storage::{
    Direction, ExpectedRevision, ProposedEvent, Store, StoreError, StreamAppend,
};

fn event(kind: &str) -> ProposedEvent {
    ProposedEvent {
        id: uuid::Uuid::new_v4().as_u128(),
        event_type: kind.into(),
        content_type: "application/json".into(),
        custom_metadata: Bytes::new(),
        data: Bytes::from_static(b"{}"),
    }
}

fn append(stream: &str, expected: ExpectedRevision, count: usize) -> StreamAppend {
    StreamAppend {
        stream: stream.into(),
        expected,
        events: (0..count).map(|_| event("E")).collect(),
    }
}

fn revisions(store: &Store, stream: &str) -> Vec<u64> {
    let snapshot = store.snapshot().unwrap();
    let Some(info) = snapshot.stream(stream).unwrap() else {
        return Vec::new();
    };
    snapshot
        .read_stream(stream, &info, 0, Direction::Forwards, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.event.revision)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_writes_every_append_and_record_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append("a".into(), ExpectedRevision::Any, vec![event("E")])
        .await
        .unwrap();
    let head = store.head();

    // A refused append refuses the whole commit: nothing of the others, no record.
    let refused = store
        .commit(
            vec![
                append("b", ExpectedRevision::Any, 1),
                append("a", ExpectedRevision::Exact(5), 1),
            ],
            vec![("k".into(), Bytes::from_static(b"v"))],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::WrongExpectedVersion {
                current: Some(0),
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(revisions(&store, "b").is_empty());
    assert_eq!(store.record("k").unwrap(), None);
    assert_eq!(store.head(), head);

    // Each append is checked against the streams as the ones before it leave them.
    let twice_new = store
        .commit(
            vec![
                append("c", ExpectedRevision::NoStream, 1),
                append("c", ExpectedRevision::NoStream, 1),
            ],
            Vec::new(),
        )
        .await;
    assert!(twice_new.is_err(), "{twice_new:?}");
    assert!(revisions(&store, "c").is_empty());

    let outcomes = store
        .commit(
            vec![
                append("b", ExpectedRevision::NoStream, 2),
                append("a", ExpectedRevision::Exact(0), 1),
                append("b", ExpectedRevision::Exact(1), 1),
                append("b", ExpectedRevision::Any, 0),
            ],
            vec![("k".into(), Bytes::from_static(b"v1"))],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes
            .iter()
            .map(|o| o.current_revision)
            .collect::<Vec<_>>(),
        vec![Some(1), Some(1), Some(2), Some(2)]
    );
    assert_eq!(outcomes[2].position, Some(head + 4));
    assert_eq!(outcomes[3].position, None, "an empty append writes nothing");
    assert_eq!(revisions(&store, "b"), vec![0, 1, 2]);
    assert_eq!(revisions(&store, "a"), vec![0, 1]);
    assert_eq!(store.head(), head + 4);
    assert_eq!(store.record("k").unwrap(), Some(Bytes::from_static(b"v1")));

    // A tombstoned stream refuses the commit too.
    store
        .delete("gone".into(), ExpectedRevision::Any, true)
        .await
        .unwrap();
    let deleted = store
        .commit(
            vec![
                append("d", ExpectedRevision::Any, 1),
                append("gone", ExpectedRevision::Any, 1),
            ],
            vec![("k".into(), Bytes::from_static(b"v2"))],
        )
        .await;
    assert!(
        matches!(deleted, Err(StoreError::StreamDeleted(ref s)) if s == "gone"),
        "{deleted:?}"
    );
    assert!(revisions(&store, "d").is_empty());
    drop(store);

    // What was committed is there after a reopen, records included.
    // The writer closes the file once the last handle is gone; wait for that.
    let mut tries = 0;
    let reopened = loop {
        match Store::open(dir.path()) {
            Ok(store) => break store,
            Err(e) if tries < 250 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    assert_eq!(revisions(&reopened, "b"), vec![0, 1, 2]);
    assert_eq!(
        reopened.record("k").unwrap(),
        Some(Bytes::from_static(b"v1"))
    );
}
