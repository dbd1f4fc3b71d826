//! `Streams.Read`: counted reads of a stream or of `$all`, and catch-up subscriptions that go
//! live.
//!
//! A subscription reads committed events from storage until it reaches the head, says it has
//! caught up, then waits for the head to move and reads again. Because every delivery comes from
//! storage and the cursor only moves forward, there is neither a gap nor a duplicate at the
//! hand-over, however appends interleave; a slow client slows only its own reads.

use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::convert::{identifier, recorded_event, UuidFormat};
use super::errors;
use super::filter::EventFilter;
use crate::proto::streams::read_req::options::{
    self as opts, all_options::AllOption, stream_options::RevisionOption, CountOption,
    ReadDirection, StreamOption,
};
use crate::proto::streams::read_req::Options;
use crate::proto::streams::read_resp::{
    self, read_event, CaughtUp, Checkpoint, Content, ReadEvent, StreamNotFound,
    SubscriptionConfirmation,
};
use crate::proto::streams::ReadResp;
use crate::storage::{
    Direction, Recorded, Snapshot, Store, StoreError, StreamInfo, TOMBSTONE_REVISION,
};

/// Events per storage read: large enough to amortise a snapshot, small enough to stream.
const PAGE: usize = 256;
/// How many non-matching events a filtered page examines before it yields.
const SCAN: usize = 4096;

pub type Sender = mpsc::Sender<Result<ReadResp, Status>>;

/// A parsed, validated read request.
pub struct Plan {
    source: Source,
    direction: Direction,
    resolve_links: bool,
    count: Option<u64>,
    filter: Option<EventFilter>,
    uuid: UuidFormat,
    compatibility: u32,
}

enum Source {
    Stream { name: String, from: From<u64> },
    All { from: From<u64> },
}

#[derive(Clone, Copy)]
enum From<T> {
    Start,
    End,
    At(T),
}

impl Plan {
    pub fn parse(options: Option<Options>) -> Result<Plan, Status> {
        let options = options.ok_or_else(|| errors::required("options"))?;
        let uuid = match options.uuid_option.and_then(|u| u.content) {
            Some(opts::uuid_option::Content::Structured(_)) => UuidFormat::Structured,
            Some(opts::uuid_option::Content::String(_)) => UuidFormat::String,
            None => return Err(errors::required("uuidOption")),
        };
        let direction = match ReadDirection::try_from(options.read_direction) {
            Ok(ReadDirection::Forwards) => Direction::Forwards,
            Ok(ReadDirection::Backwards) => Direction::Backwards,
            Err(_) => return Err(Status::invalid_argument("'readDirection' is not valid")),
        };
        let count = match options.count_option {
            Some(CountOption::Count(n)) => Some(n),
            Some(CountOption::Subscription(_)) => None,
            None => return Err(errors::required("countOption")),
        };
        if count.is_none() && direction == Direction::Backwards {
            return Err(Status::invalid_argument(
                "The combination of (Backwards, Subscription) is invalid.",
            ));
        }
        let source = match options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let name = super::convert::stream_name(s.stream_identifier)?;
                let from = match s.revision_option {
                    Some(RevisionOption::Start(_)) => From::Start,
                    Some(RevisionOption::End(_)) => From::End,
                    Some(RevisionOption::Revision(u64::MAX)) => From::End,
                    Some(RevisionOption::Revision(r)) => From::At(r),
                    None => return Err(errors::required("revisionOption")),
                };
                Source::Stream { name, from }
            }
            Some(StreamOption::All(a)) => {
                let from = match a.all_option {
                    Some(AllOption::Start(_)) => From::Start,
                    Some(AllOption::End(_)) => From::End,
                    Some(AllOption::Position(p)) if p.commit_position == u64::MAX => From::End,
                    Some(AllOption::Position(p)) => {
                        if p.prepare_position > p.commit_position {
                            return Err(Status::invalid_argument(
                                "Trying to read from an invalid position.",
                            ));
                        }
                        From::At(p.commit_position)
                    }
                    None => return Err(errors::required("allOption")),
                };
                Source::All { from }
            }
            None => return Err(errors::required("streamOption")),
        };
        let filter = match source {
            Source::All { .. } => EventFilter::from_proto(options.filter_option)?,
            Source::Stream { .. } => None,
        };
        Ok(Plan {
            source,
            direction,
            resolve_links: options.resolve_links,
            count,
            filter,
            uuid,
            compatibility: options.control_option.map_or(0, |c| c.compatibility),
        })
    }
}

/// Runs blocking storage work off the async threads, on a fresh snapshot.
async fn on_snapshot<T, F>(store: &Store, work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&Snapshot) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let snapshot = store.snapshot()?;
        work(&snapshot)
    })
    .await
    .map_err(|_| Status::internal("a read task failed"))?
    .map_err(errors::from_store)
}

/// The client went away: stop producing.
struct Gone;

async fn send(tx: &Sender, content: Content) -> Result<(), Gone> {
    tx.send(Ok(ReadResp {
        content: Some(content),
    }))
    .await
    .map_err(|_| Gone)
}

/// Checks made before the first message: a tombstoned stream is an error status, not a message.
pub async fn precheck(store: &Store, plan: &Plan) -> Result<(), Status> {
    let Source::Stream { name, .. } = &plan.source else {
        return Ok(());
    };
    let name = name.clone();
    let deleted = on_snapshot(store, move |s| {
        let own = s.stream(&name)?.is_some_and(|i| i.tombstoned);
        let parent = match name.strip_prefix("$$") {
            Some(parent) => s.stream(parent)?.is_some_and(|i| i.tombstoned),
            None => false,
        };
        Ok(own || parent)
    })
    .await?;
    match (&plan.source, deleted) {
        (Source::Stream { name, .. }, true) => Err(errors::stream_deleted(name)),
        _ => Ok(()),
    }
}

/// Produces the whole response of a read into `tx`, ending it with an error status if one occurs.
pub async fn run(store: Store, plan: Plan, tx: Sender, shutdown: watch::Receiver<bool>) {
    let result = match (&plan.source, plan.count) {
        (Source::Stream { name, from }, Some(count)) => {
            read_stream(&store, &plan, name, *from, count, &tx).await
        }
        (Source::All { from }, Some(count)) => read_all(&store, &plan, *from, count, &tx).await,
        (Source::Stream { name, from }, None) => {
            subscribe_stream(&store, &plan, name, *from, &tx, shutdown).await
        }
        (Source::All { from }, None) => subscribe_all(&store, &plan, *from, &tx, shutdown).await,
    };
    if let Ok(Err(status)) = result {
        let _ = tx.send(Err(status)).await;
    }
}

type Outcome = Result<Result<(), Status>, Gone>;

/// Turns stored events into protocol messages, resolving `$>` links when asked.
fn to_messages(
    snapshot: &Snapshot,
    events: Vec<Recorded>,
    resolve_links: bool,
    uuid: UuidFormat,
) -> Result<Vec<ReadEvent>, StoreError> {
    let mut out = Vec::with_capacity(events.len());
    for recorded in events {
        let position = Some(read_event::Position::CommitPosition(recorded.position));
        if resolve_links && recorded.event.event_type == "$>" {
            let target = resolve_link(snapshot, &recorded)?;
            out.push(ReadEvent {
                event: target.map(|t| recorded_event(&t, uuid)),
                link: Some(recorded_event(&recorded, uuid)),
                position,
            });
        } else {
            out.push(ReadEvent {
                event: Some(recorded_event(&recorded, uuid)),
                link: None,
                position,
            });
        }
    }
    Ok(out)
}

/// A link's data is `revision@stream`; its target, if still visible.
pub(crate) fn resolve_link(
    snapshot: &Snapshot,
    link: &Recorded,
) -> Result<Option<Recorded>, StoreError> {
    let text = String::from_utf8_lossy(&link.event.data);
    let Some((revision, stream)) = text.split_once('@') else {
        return Ok(None);
    };
    let Ok(revision) = revision.trim().parse::<u64>() else {
        return Ok(None);
    };
    match snapshot.stream(stream)? {
        Some(info) if revision >= info.first_visible(stream) => Ok(snapshot
            .stream_event(&info, revision)?
            .filter(|e| !info.is_expired(&e.event, crate::storage::now_ticks()))),
        _ => Ok(None),
    }
}

async fn read_stream(
    store: &Store,
    plan: &Plan,
    name: &str,
    from: From<u64>,
    count: u64,
    tx: &Sender,
) -> Outcome {
    let stream = name.to_string();
    let info = match on_snapshot(store, move |s| s.stream(&stream)).await {
        Ok(info) => info,
        Err(status) => return Ok(Err(status)),
    };
    let info = match info {
        Some(info) if info.last_revision.is_some() && !info.is_soft_deleted() => info,
        _ => {
            send(
                tx,
                Content::StreamNotFound(StreamNotFound {
                    stream_identifier: Some(identifier(name)),
                }),
            )
            .await?;
            return Ok(Ok(()));
        }
    };
    let last = info.last_revision.unwrap_or(0);
    let first_visible = info.first_visible(name);
    let forwards = plan.direction == Direction::Forwards;
    let mut next = match (from, forwards) {
        (From::Start, _) => Some(0),
        (From::End, true) => None,
        (From::End, false) => Some(last),
        (From::At(r), _) => Some(r),
    };
    if plan.compatibility >= 1 && forwards && next.is_some_and(|n| n < first_visible) {
        send(tx, Content::FirstStreamPosition(first_visible)).await?;
    }
    let mut remaining = count;
    while let (Some(from), true) = (next, remaining > 0) {
        let limit = remaining.min(PAGE as u64) as usize;
        let (stream, direction, resolve, uuid) = (
            name.to_string(),
            plan.direction,
            plan.resolve_links,
            plan.uuid,
        );
        let page = on_snapshot(store, move |s| {
            let Some(info) = s.stream(&stream)? else {
                return Ok(Vec::new());
            };
            let events = s.read_stream(&stream, &info, from, direction, limit)?;
            let revisions: Vec<u64> = events.iter().map(|e| e.event.revision).collect();
            let messages = to_messages(s, events, resolve, uuid)?;
            Ok(revisions.into_iter().zip(messages).collect::<Vec<_>>())
        })
        .await;
        let page = match page {
            Ok(page) => page,
            Err(status) => return Ok(Err(status)),
        };
        let Some(&(last_read, _)) = page.last() else {
            break;
        };
        remaining -= page.len() as u64;
        for (_, event) in page {
            send(tx, Content::Event(event)).await?;
        }
        next = if forwards {
            last_read.checked_add(1)
        } else {
            last_read.checked_sub(1)
        };
    }
    if plan.compatibility >= 1 {
        send(tx, Content::LastStreamPosition(last)).await?;
    }
    Ok(Ok(()))
}

async fn read_all(store: &Store, plan: &Plan, from: From<u64>, count: u64, tx: &Sender) -> Outcome {
    let head = store.head();
    let forwards = plan.direction == Direction::Forwards;
    let mut next = match (from, forwards) {
        (From::Start, true) => Some(0),
        (From::Start, false) => None,
        (From::End, true) => None,
        (From::End, false) => Some(head),
        (From::At(p), true) => Some(p),
        // Backwards from a position excludes that position.
        (From::At(p), false) => p.checked_sub(1),
    };
    let mut remaining = count;
    while let (Some(from), true) = (next, remaining > 0) {
        let limit = remaining.min(PAGE as u64) as usize;
        let page = read_all_page(store, plan, from, limit, SCAN).await;
        let (messages, scanned_to, exhausted) = match page {
            Ok(page) => page,
            Err(status) => return Ok(Err(status)),
        };
        remaining -= messages.len() as u64;
        for event in messages {
            send(tx, Content::Event(event)).await?;
        }
        next = match (exhausted, scanned_to) {
            (false, Some(p)) if forwards => p.checked_add(1),
            (false, Some(p)) => p.checked_sub(1),
            _ => None,
        };
    }
    Ok(Ok(()))
}

/// One page of `$all` as protocol messages, with how far it scanned and whether it hit the end.
async fn read_all_page(
    store: &Store,
    plan: &Plan,
    from: u64,
    limit: usize,
    max_scan: usize,
) -> Result<(Vec<ReadEvent>, Option<u64>, bool), Status> {
    let (direction, resolve, uuid, filter) = (
        plan.direction,
        plan.resolve_links,
        plan.uuid,
        plan.filter.clone(),
    );
    on_snapshot(store, move |s| {
        let keep = |e: &crate::storage::StoredEvent| filter.as_ref().is_none_or(|f| f.matches(e));
        let page = s.read_all(from, direction, limit, max_scan, &keep)?;
        let messages = to_messages(s, page.events, resolve, uuid)?;
        Ok((messages, page.scanned_to, page.exhausted))
    })
    .await
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn confirmation() -> Content {
    Content::Confirmation(SubscriptionConfirmation {
        subscription_id: uuid::Uuid::new_v4().hyphenated().to_string(),
    })
}

/// What a live subscription waits for next.
enum Wake {
    HeadMoved,
    Stop(Option<Status>),
}

async fn wait(
    head: &mut watch::Receiver<u64>,
    tx: &Sender,
    shutdown: &mut watch::Receiver<bool>,
) -> Wake {
    if *shutdown.borrow() {
        return Wake::Stop(Some(Status::unavailable("Server Is Shutting Down")));
    }
    tokio::select! {
        changed = head.changed() => match changed {
            Ok(()) => Wake::HeadMoved,
            Err(_) => Wake::Stop(Some(Status::unavailable("Server Is Shutting Down"))),
        },
        _ = tx.closed() => Wake::Stop(None),
        _ = shutdown.changed() => Wake::Stop(Some(Status::unavailable("Server Is Shutting Down"))),
    }
}

async fn subscribe_all(
    store: &Store,
    plan: &Plan,
    from: From<u64>,
    tx: &Sender,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let mut head = store.watch_head();
    // The cursor is the last position dealt with: a subscription from a position excludes it.
    let mut cursor = match from {
        From::Start => None,
        From::End => Some(*head.borrow_and_update()),
        From::At(p) => Some(p),
    };
    send(tx, confirmation()).await?;
    let mut last_sent: Option<u64> = None;
    let mut considered = 0u64;
    let mut last_checkpoint = None;
    let mut caught_up = false;
    // A filtered subscription examines one checkpoint interval per page, so that it can say
    // how far it got at that cadence.
    let max_scan = plan
        .filter
        .as_ref()
        .map_or(SCAN, |f| (f.checkpoint_interval as usize).clamp(1, SCAN));
    loop {
        let target = *head.borrow_and_update();
        while cursor.is_none_or(|c| c < target) {
            let from = cursor.map_or(0, |c| c + 1);
            let page = match read_all_page(store, plan, from, PAGE, max_scan).await {
                Ok(page) => page,
                Err(status) => return Ok(Err(status)),
            };
            let (messages, scanned_to, _) = page;
            let Some(scanned_to) = scanned_to else { break };
            for event in messages {
                last_sent = event.event.as_ref().map(|e| e.commit_position);
                send(tx, Content::Event(event)).await?;
            }
            considered += scanned_to - cursor.unwrap_or(0);
            cursor = Some(scanned_to);
            if let Some(filter) = &plan.filter {
                if considered >= filter.checkpoint_interval {
                    considered %= filter.checkpoint_interval;
                    checkpoint(tx, scanned_to, &mut last_checkpoint).await?;
                }
            }
        }
        if !caught_up {
            caught_up = true;
            if plan.filter.is_some() {
                checkpoint(tx, cursor.unwrap_or(0), &mut last_checkpoint).await?;
            }
            send(
                tx,
                Content::CaughtUp(CaughtUp {
                    timestamp: Some(now()),
                    stream_revision: None,
                    position: last_sent.map(|p| read_resp::Position {
                        commit_position: p,
                        prepare_position: p,
                    }),
                }),
            )
            .await?;
        }
        match wait(&mut head, tx, &mut shutdown).await {
            Wake::HeadMoved => {}
            Wake::Stop(status) => return Ok(status.map_or(Ok(()), Err)),
        }
    }
}

async fn checkpoint(tx: &Sender, position: u64, last: &mut Option<u64>) -> Result<(), Gone> {
    if last.is_some_and(|l| l >= position) {
        return Ok(());
    }
    *last = Some(position);
    send(
        tx,
        Content::Checkpoint(Checkpoint {
            commit_position: position,
            prepare_position: position,
            timestamp: Some(now()),
        }),
    )
    .await
}

async fn subscribe_stream(
    store: &Store,
    plan: &Plan,
    name: &str,
    from: From<u64>,
    tx: &Sender,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let mut head = store.watch_head();
    head.borrow_and_update();
    let stream = name.to_string();
    let info = match on_snapshot(store, move |s| s.stream(&stream)).await {
        Ok(info) => info,
        Err(status) => return Ok(Err(status)),
    };
    // The next revision to deliver.
    let mut next = match from {
        From::Start => 0,
        From::End => info.and_then(|i| i.last_revision).map_or(0, |r| r + 1),
        From::At(r) => r.saturating_add(1),
    };
    send(tx, confirmation()).await?;
    let mut last_sent: Option<u64> = None;
    let mut caught_up = false;
    loop {
        loop {
            let (stream, resolve, uuid) = (name.to_string(), plan.resolve_links, plan.uuid);
            let page =
                on_snapshot(store, move |s| stream_page(s, &stream, next, resolve, uuid)).await;
            let page = match page {
                Ok(page) => page,
                Err(status) => return Ok(Err(status)),
            };
            let StreamPage { events, tombstone } = page;
            let more = events.len() == PAGE;
            for (revision, event) in events {
                send(tx, Content::Event(event)).await?;
                last_sent = Some(revision);
                next = revision + 1;
            }
            if let Some(tombstone) = tombstone {
                send(tx, Content::Event(tombstone)).await?;
                return Ok(Err(errors::stream_deleted(name)));
            }
            if !more {
                break;
            }
        }
        if !caught_up {
            caught_up = true;
            send(
                tx,
                Content::CaughtUp(CaughtUp {
                    timestamp: Some(now()),
                    stream_revision: last_sent.map(|r| r as i64),
                    position: None,
                }),
            )
            .await?;
        }
        match wait(&mut head, tx, &mut shutdown).await {
            Wake::HeadMoved => {}
            Wake::Stop(status) => return Ok(status.map_or(Ok(()), Err)),
        }
    }
}

struct StreamPage {
    events: Vec<(u64, ReadEvent)>,
    tombstone: Option<ReadEvent>,
}

fn stream_page(
    s: &Snapshot,
    name: &str,
    next: u64,
    resolve: bool,
    uuid: UuidFormat,
) -> Result<StreamPage, StoreError> {
    let Some(info) = s.stream(name)? else {
        return Ok(StreamPage {
            events: Vec::new(),
            tombstone: None,
        });
    };
    let events = s.read_stream(name, &info, next, Direction::Forwards, PAGE)?;
    let revisions: Vec<u64> = events.iter().map(|e| e.event.revision).collect();
    let messages = to_messages(s, events, resolve, uuid)?;
    let tombstone = if info.tombstoned && revisions.len() < PAGE {
        tombstone_event(s, &info, uuid)?
    } else {
        None
    };
    Ok(StreamPage {
        events: revisions.into_iter().zip(messages).collect(),
        tombstone,
    })
}

fn tombstone_event(
    s: &Snapshot,
    info: &StreamInfo,
    uuid: UuidFormat,
) -> Result<Option<ReadEvent>, StoreError> {
    Ok(s.stream_event(info, TOMBSTONE_REVISION)?
        .map(|t| ReadEvent {
            position: Some(read_event::Position::CommitPosition(t.position)),
            event: Some(recorded_event(&t, uuid)),
            link: None,
        }))
}
