//! Bad input gets the real server's errors, never a panic or a hang; many concurrent writers
//! keep every stream consistent.

mod common;

use std::collections::{HashMap, HashSet};

use common::{event, stream_name, TestStore};
use event_store::proto::shared::{uuid, Empty, StreamIdentifier, Uuid};
use event_store::proto::streams::streams_client::StreamsClient;
use event_store::proto::streams::{append_req, read_req, AppendReq, ReadReq};
use event_store::server::{AppendLimits, ServerOptions};
use kurrentdb::{
    AppendToStreamOptions, Error, EventData, ReadAllOptions, ReadStreamOptions, StreamState,
    SubscriptionFilter,
};
use tonic::Code;

async fn raw(s: &TestStore) -> StreamsClient<tonic::transport::Channel> {
    StreamsClient::connect(format!("http://127.0.0.1:{}", s.port))
        .await
        .expect("raw client")
}

fn options(stream: &str) -> AppendReq {
    AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: Some(StreamIdentifier {
                stream_name: stream.as_bytes().to_vec().into(),
            }),
            expected_stream_revision: Some(append_req::options::ExpectedStreamRevision::Any(
                Empty {},
            )),
        })),
    }
}

fn proposed(metadata: &[(&str, &str)]) -> AppendReq {
    AppendReq {
        content: Some(append_req::Content::ProposedMessage(
            append_req::ProposedMessage {
                id: Some(Uuid {
                    value: Some(uuid::Value::String(::uuid::Uuid::new_v4().to_string())),
                }),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                custom_metadata: Default::default(),
                data: b"{}".to_vec().into(),
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_type_or_content_type_are_refused() {
    let s = TestStore::start().await;
    let mut client = raw(&s).await;
    let no_type = client
        .append(futures::stream::iter(vec![
            options("x-1"),
            proposed(&[("content-type", "application/json")]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(no_type.code(), Code::InvalidArgument);
    assert_eq!(
        no_type.metadata().get("exception").unwrap(),
        "missing-required-metadata-property"
    );
    assert!(
        no_type.message().contains("'type'"),
        "{}",
        no_type.message()
    );
    let no_content_type = client
        .append(futures::stream::iter(vec![
            options("x-1"),
            proposed(&[("type", "T")]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(no_content_type.code(), Code::InvalidArgument);
    assert!(no_content_type.message().contains("'content-type'"));
    // Events before options, or nothing at all, are malformed.
    let events_first = client
        .append(futures::stream::iter(vec![proposed(&[
            ("type", "T"),
            ("content-type", "application/json"),
        ])]))
        .await
        .unwrap_err();
    assert_eq!(events_first.code(), Code::Unknown);
    let empty = client
        .append(futures::stream::iter(Vec::<AppendReq>::new()))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::Unknown);
    // Nothing was written.
    let read = read_stream(&s.client, "x-1").await;
    assert!(matches!(read, Err(Error::ResourceNotFound)), "{read:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reads_are_invalid_arguments() {
    let s = TestStore::start().await;
    let mut client = raw(&s).await;
    let no_options = client.read(ReadReq { options: None }).await.unwrap_err();
    assert_eq!(no_options.code(), Code::InvalidArgument);

    use read_req::options::*;
    let base = read_req::Options {
        stream_option: Some(StreamOption::All(AllOptions {
            all_option: Some(all_options::AllOption::Start(Empty {})),
        })),
        read_direction: ReadDirection::Backwards as i32,
        resolve_links: false,
        count_option: Some(CountOption::Subscription(SubscriptionOptions {})),
        filter_option: Some(FilterOption::NoFilter(Empty {})),
        uuid_option: Some(UuidOption {
            content: Some(uuid_option::Content::String(Empty {})),
        }),
        control_option: None,
    };
    let backwards_subscription = client
        .read(ReadReq {
            options: Some(base.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(backwards_subscription.code(), Code::InvalidArgument);
    let no_uuid_option = client
        .read(ReadReq {
            options: Some(read_req::Options {
                uuid_option: None,
                read_direction: 0,
                ..base.clone()
            }),
        })
        .await
        .unwrap_err();
    assert!(no_uuid_option.message().contains("uuidOption"));
    let bad_regex = read_req::Options {
        read_direction: 0,
        count_option: Some(CountOption::Count(10)),
        filter_option: Some(FilterOption::Filter(FilterOptions {
            filter: Some(filter_options::Filter::EventType(
                filter_options::Expression {
                    regex: "(unclosed".into(),
                    prefix: vec![],
                },
            )),
            window: Some(filter_options::Window::Count(Empty {})),
            checkpoint_interval_multiplier: 1,
        })),
        ..base
    };
    let bad_regex = client
        .read(ReadReq {
            options: Some(bad_regex),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_regex.code(), Code::InvalidArgument);
    s.stop().await;
}

async fn read_stream(
    client: &kurrentdb::Client,
    stream: &str,
) -> kurrentdb::Result<Vec<(u64, bytes::Bytes)>> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await?;
    let mut out = Vec::new();
    while let Some(e) = read.next().await? {
        let e = e.get_original_event();
        out.push((e.revision, e.data.clone()));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_stream_names_round_trip_and_bad_ones_are_refused() {
    let s = TestStore::start().await;
    for name in [
        "with space",
        "ünïcødé-流",
        "a/b\\c:d",
        "$$$",
        "emoji-🧹",
        "x".repeat(2000).as_str(),
    ] {
        s.client
            .append_to_stream(name, &AppendToStreamOptions::default(), vec![event("E", 1)])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            read_stream(&s.client, name).await.unwrap().len(),
            1,
            "{name}"
        );
    }
    for bad in ["", "$all"] {
        let err = s
            .client
            .append_to_stream(bad, &AppendToStreamOptions::default(), vec![event("E", 1)])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Grpc {
                    code: Code::InvalidArgument,
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }
    let too_long = "y".repeat(5000);
    let err = s
        .client
        .append_to_stream(
            too_long.as_str(),
            &AppendToStreamOptions::default(),
            vec![event("E", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Grpc {
                code: Code::InvalidArgument,
                ..
            }
        ),
        "{err:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_events_and_appends_are_refused_whole() {
    let limits = AppendLimits {
        max_event_size: 64 * 1024,
        max_append_size: 256 * 1024,
    };
    let s = TestStore::start_with(
        ServerOptions {
            limits,
            ..Default::default()
        },
        "",
    )
    .await;
    let big = |size: usize| EventData::binary("Blob", vec![7u8; size].into());
    let err = s
        .client
        .append_to_stream(
            "blobs",
            &AppendToStreamOptions::default(),
            vec![big(100 * 1024)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Grpc { code: Code::InvalidArgument, ref message } if message.contains("Maximum Append Event Size")),
        "{err:?}"
    );
    let err = s
        .client
        .append_to_stream(
            "blobs",
            &AppendToStreamOptions::default(),
            (0..5).map(|_| big(60 * 1024)).collect::<Vec<_>>(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Grpc { code: Code::InvalidArgument, ref message } if message.contains("Maximum Append Size")),
        "{err:?}"
    );
    // Far beyond the transport limit: still a clean error, and the server lives on.
    let err = s
        .client
        .append_to_stream(
            "blobs",
            &AppendToStreamOptions::default(),
            vec![big(8 * 1024 * 1024)],
        )
        .await
        .unwrap_err();
    assert!(
        !matches!(err, Error::WrongExpectedVersion { .. }),
        "{err:?}"
    );
    assert!(matches!(
        read_stream(&s.client, "blobs").await,
        Err(Error::ResourceNotFound)
    ));
    s.client
        .append_to_stream("blobs", &AppendToStreamOptions::default(), vec![big(1024)])
        .await
        .unwrap();
    s.stop().await;
}

/// Many writers race on one stream with exact expected revisions: each revision is won once,
/// the losers see the wrong-expected-version answer, and retrying gets everything in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_stream_never_overwrite() {
    let s = TestStore::start().await;
    let stream = stream_name("contended");
    const WRITERS: u64 = 16;
    const EACH: u64 = 10;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (c, stream) = (s.client.clone(), stream.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..EACH {
                loop {
                    let current = match read_stream(&c, &stream).await {
                        Ok(events) => StreamState::StreamRevision(events.len() as u64 - 1),
                        Err(Error::ResourceNotFound) => StreamState::NoStream,
                        Err(e) => panic!("{e}"),
                    };
                    let options = AppendToStreamOptions::default().stream_state(current);
                    match c
                        .append_to_stream(stream.as_str(), &options, vec![event("E", w * 1000 + i)])
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::WrongExpectedVersion { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let events = read_stream(&s.client, &stream).await.unwrap();
    assert_eq!(events.len() as u64, WRITERS * EACH);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, (rev, _))| *rev == i as u64));
    let payloads: HashSet<_> = events.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(
        payloads.len() as u64,
        WRITERS * EACH,
        "an event was written twice"
    );
    assert!(conflicts > 0, "the race never happened");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_many_streams_all_land_once() {
    let s = TestStore::start().await;
    const WRITERS: u64 = 64;
    const EACH: u64 = 20;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for i in 0..EACH {
                let options = AppendToStreamOptions::default().stream_state(if i == 0 {
                    StreamState::NoStream
                } else {
                    StreamState::StreamRevision(i - 1)
                });
                positions.push(
                    c.append_to_stream(format!("many-{w}"), &options, vec![event("E", i)])
                        .await
                        .unwrap()
                        .position,
                );
            }
            positions
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = acknowledged.iter().map(|p| p.commit).collect();
    assert_eq!(
        unique.len() as u64,
        WRITERS * EACH,
        "two appends share a position"
    );

    let mut read = s
        .client
        .read_all(
            &ReadAllOptions::default()
                .filter(SubscriptionFilter::on_stream_name().add_prefix("many-")),
        )
        .await
        .unwrap();
    let mut per_stream: HashMap<String, Vec<u64>> = HashMap::new();
    let mut count = 0;
    while let Some(e) = read.next().await.unwrap() {
        let e = e.get_original_event();
        per_stream
            .entry(e.stream_id().to_string())
            .or_default()
            .push(e.revision);
        count += 1;
    }
    assert_eq!(count, WRITERS * EACH);
    assert!(per_stream
        .values()
        .all(|revs| *revs == (0..EACH).collect::<Vec<_>>()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_what_is_served_and_one_leader() {
    use event_store::proto::gossip::{gossip_client::GossipClient, member_info::VNodeState};
    use event_store::proto::server_features::server_features_client::ServerFeaturesClient;
    let s = TestStore::start().await;
    let url = format!("http://127.0.0.1:{}", s.port);
    let features = ServerFeaturesClient::connect(url.clone())
        .await
        .unwrap()
        .get_supported_methods(Empty {})
        .await
        .unwrap()
        .into_inner();
    let methods: HashSet<(String, String)> = features
        .methods
        .iter()
        .map(|m| (m.service_name.clone(), m.method_name.clone()))
        .collect();
    for method in ["read", "append", "delete", "tombstone", "batchappend"] {
        assert!(
            methods.contains(&(
                "event_store.client.streams.streams".to_string(),
                method.to_string()
            )),
            "{method}"
        );
    }
    // Persistent subscriptions with both sources, so that the clients use gRPC for all of it.
    let persistent = "event_store.client.persistent_subscriptions.persistentsubscriptions";
    for method in [
        "create",
        "getinfo",
        "replayparked",
        "list",
        "restartsubsystem",
    ] {
        let listed = features
            .methods
            .iter()
            .find(|m| m.service_name == persistent && m.method_name == method)
            .unwrap_or_else(|| panic!("{method} is not listed"));
        assert_eq!(listed.features, vec!["stream", "all"]);
    }
    // The system projections' service, every method, as the real server lists it.
    let projections = "event_store.client.projections.projections";
    for method in [
        "create",
        "update",
        "delete",
        "statistics",
        "disable",
        "enable",
        "reset",
        "state",
        "result",
        "restartsubsystem",
    ] {
        let listed = features
            .methods
            .iter()
            .find(|m| m.service_name == projections && m.method_name == method)
            .unwrap_or_else(|| panic!("projections {method} is not listed"));
        let expected: Vec<String> = if method == "create" {
            vec!["track_emitted_streams".into()]
        } else {
            Vec::new()
        };
        assert_eq!(listed.features, expected);
    }
    // Nothing that is not served: every service listed answers.
    let served = [
        "streams.streams",
        "gossip.gossip",
        "server_features.serverfeatures",
        "projections.projections",
        "operations.operations",
        "monitoring.monitoring",
    ];
    assert!(
        methods.iter().all(
            |(service, _)| service == persistent || served.iter().any(|s| service.ends_with(s))
        ),
        "{methods:?}"
    );
    assert!(features.event_store_server_version.split('.').count() == 3);

    let cluster = GossipClient::connect(url)
        .await
        .unwrap()
        .read(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.members.len(), 1);
    let leader = &cluster.members[0];
    assert_eq!(
        (leader.state, leader.is_alive),
        (VNodeState::Leader as i32, true)
    );
    assert_eq!(leader.http_end_point.as_ref().unwrap().port, s.port as u32);
    s.stop().await;
}
