//! One consumer group at work: it reads its source from storage, hands each event to one of its
//! consumers, takes their acknowledgements, hands out again what times out or is refused, parks
//! what keeps failing, and checkpoints how far everything before is done.
//!
//! A group is one task that owns all of its state; consumers and the management calls talk to
//! it by message, so there is no lock to reason about. Everything it must remember goes to the
//! store itself (checkpoint and parked streams), where an acknowledged write survives `kill -9`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::settings::{GroupConfig, Source, StartFrom, Strategy};
use super::PersistentError;
use crate::server::filter::EventFilter;
use crate::storage::{
    Direction, ExpectedRevision, ProposedEvent, Recorded, Snapshot, Store, StoreError,
};

/// How often timeouts, the checkpoint timer and the rates are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Events a filtered read of `$all` examines at most before it yields to the group's mail.
const SCAN: usize = 4096;
/// Pages read in a row before the group looks at its mail again.
const PAGES_PER_TURN: usize = 8;
/// The most events one consumer may hold unacknowledged, whatever it asks for.
pub const MAX_CONSUMER_SLOTS: u32 = 10_000;

/// An event handed to a consumer. With `resolve_links`, a link arrives with its target in
/// `event` (absent if the target is gone) and itself in `link`.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: Option<Recorded>,
    pub link: Option<Recorded>,
    pub retry_count: u32,
}

/// What a consumer's connection receives from its group.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // nearly every message is an event
pub enum ToConsumer {
    Event(Delivery),
    Dropped(DropReason),
}

/// Why a group let its consumers go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Deleted,
    Updated,
    Restarted,
    ShuttingDown,
}

/// A consumer joining a group.
pub struct Consumer {
    pub tx: mpsc::Sender<ToConsumer>,
    /// How many events it may hold unacknowledged.
    pub slots: u32,
    pub from: String,
    pub username: String,
    pub connection_name: String,
}

/// What a consumer can say of an event it will not acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Treated as `Retry`, as the real server does.
    Unknown,
    Park,
    Retry,
    Skip,
    /// Treated as `Skip`, as the real server does.
    Stop,
}

pub(super) enum Command {
    Connect {
        consumer: Consumer,
        reply: oneshot::Sender<Result<u64, PersistentError>>,
    },
    /// Any consumer of the group may acknowledge any event, as on the real server.
    Ack {
        ids: Vec<u128>,
    },
    Nack {
        ids: Vec<u128>,
        action: NackAction,
        reason: String,
    },
    Disconnect {
        consumer: u64,
    },
    Info {
        reply: oneshot::Sender<GroupInfo>,
    },
    ReplayParked {
        stop_at: Option<u64>,
        reply: oneshot::Sender<Result<(), PersistentError>>,
    },
    Stop {
        reason: DropReason,
        done: oneshot::Sender<()>,
    },
}

/// A group's state and figures, as `GetInfo` and `List` report them.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub config: GroupConfig,
    pub status: &'static str,
    pub consumers: Vec<ConsumerInfo>,
    pub average_per_second: u32,
    pub total_items: u64,
    pub count_since_last_measurement: u64,
    pub last_checkpointed: Option<u64>,
    pub last_known: Option<u64>,
    pub read_buffer_count: usize,
    pub live_buffer_count: usize,
    pub retry_buffer_count: usize,
    pub in_flight: usize,
    pub parked_count: u64,
}

#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub from: String,
    pub username: String,
    pub connection_name: String,
    pub average_items_per_second: u32,
    pub total_items: u64,
    pub count_since_last_measurement: u64,
    pub available_slots: u32,
    pub in_flight: u32,
}

/// An event on its way through the group.
#[derive(Clone, Debug)]
struct Message {
    /// What the consumer acknowledges: the link's id when a link was read, else the event's.
    id: u128,
    /// Its place in the source (revision or position); none for a replayed parked event,
    /// which lies behind the checkpoint already.
    key: Option<u64>,
    /// Its revision in the parked stream, while it is being replayed from there.
    parked_revision: Option<u64>,
    event: Option<Recorded>,
    link: Option<Recorded>,
    retry_count: u32,
}

impl Message {
    /// The stream that pins an event to a consumer: the resolved event's own.
    fn stream(&self) -> &str {
        self.event
            .as_ref()
            .or(self.link.as_ref())
            .map_or("", |r| r.event.stream.as_str())
    }
}

struct Outstanding {
    message: Message,
    consumer: u64,
    deadline: Option<Instant>,
}

struct ConsumerState {
    id: u64,
    tx: mpsc::Sender<ToConsumer>,
    slots: u32,
    in_flight: u32,
    from: String,
    username: String,
    connection_name: String,
    meter: Meter,
}

impl ConsumerState {
    fn free(&self) -> u32 {
        self.slots.saturating_sub(self.in_flight)
    }
}

/// Items per second over the last full second.
#[derive(Default)]
struct Meter {
    total: u64,
    since_measurement: u64,
    per_second: u32,
}

impl Meter {
    fn add(&mut self) {
        self.total += 1;
        self.since_measurement += 1;
    }

    fn measure(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        self.per_second = (self.since_measurement as f64 / secs).round() as u32;
        self.since_measurement = 0;
    }
}

/// A group's task: start it with [`spawn`], talk to it through the returned sender.
pub(super) struct Group {
    config: GroupConfig,
    filter: Option<EventFilter>,
    store: Store,
    consumers: Vec<ConsumerState>,
    next_consumer: u64,
    round_robin: usize,
    /// The last place read (or scanned past) in the source.
    cursor: Option<u64>,
    /// The last read reached the end of the source: wait for the log to grow.
    at_end: bool,
    /// The group has been at the end of its source at least once.
    live: bool,
    buffer: VecDeque<Message>,
    retries: VecDeque<Message>,
    outstanding: HashMap<u128, Outstanding>,
    /// Places read but not yet done: the checkpoint stays below the lowest.
    pending: BTreeSet<u64>,
    last_checkpoint: Option<u64>,
    checkpoint_stream_exists: bool,
    processed_since_checkpoint: u64,
    last_checkpoint_time: Instant,
    /// Parked stream: its next revision, where reading it starts (`$tb`), what is replaying.
    parked_next: u64,
    parked_truncated_before: u64,
    replaying: BTreeSet<u64>,
    replay_next: u64,
    meter: Meter,
    last_measurement: Instant,
    read_failed_at: Option<Instant>,
}

pub(super) fn spawn(
    config: GroupConfig,
    store: Store,
    shutdown: watch::Receiver<bool>,
) -> Result<(mpsc::Sender<Command>, tokio::task::JoinHandle<()>), PersistentError> {
    let filter = config.filter.as_ref().map(|f| f.compile()).transpose()?;
    let (tx, rx) = mpsc::channel(1024);
    let group = Group {
        config,
        filter,
        store,
        consumers: Vec::new(),
        next_consumer: 1,
        round_robin: 0,
        cursor: None,
        at_end: false,
        live: false,
        buffer: VecDeque::new(),
        retries: VecDeque::new(),
        outstanding: HashMap::new(),
        pending: BTreeSet::new(),
        last_checkpoint: None,
        checkpoint_stream_exists: false,
        processed_since_checkpoint: 0,
        last_checkpoint_time: Instant::now(),
        parked_next: 0,
        parked_truncated_before: 0,
        replaying: BTreeSet::new(),
        replay_next: 0,
        meter: Meter::default(),
        last_measurement: Instant::now(),
        read_failed_at: None,
    };
    let task = tokio::spawn(group.run(rx, shutdown));
    Ok((tx, task))
}

/// Runs blocking storage reads off the async threads, on a fresh snapshot.
async fn on_snapshot<T, F>(store: &Store, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Snapshot) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store.snapshot()?))
        .await
        .map_err(|_| StoreError::Storage("a read task failed".into()))?
}

/// What a group reads back at start.
struct Loaded {
    checkpoint: Option<u64>,
    checkpoint_stream_exists: bool,
    parked_next: u64,
    parked_truncated_before: u64,
    /// The source's last place now, for a group that starts at the end.
    end: Option<u64>,
}

fn last_event(s: &Snapshot, stream: &str) -> Result<Option<Recorded>, StoreError> {
    let Some(info) = s.stream(stream)? else {
        return Ok(None);
    };
    let Some(last) = info.last_revision else {
        return Ok(None);
    };
    Ok(s.read_stream(stream, &info, last, Direction::Backwards, 1)?
        .into_iter()
        .next())
}

impl Group {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut head = self.store.watch_head();
        // Storage may be reopening after a failed write: try again until it answers.
        loop {
            match self.load().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(group = %self.config.id.subscription_id(), error = %e, "cannot load the group; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let more_to_read = self.fill(&mut head).await;
            self.push();
            self.checkpoint_if_due(false).await;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop { reason, done }) => {
                        self.stop(reason).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                changed = head.changed(), if self.at_end => {
                    if changed.is_err() {
                        return;
                    }
                    self.at_end = false;
                }
                _ = tick.tick() => self.on_tick().await,
                _ = shutdown.changed() => {
                    self.stop(DropReason::ShuttingDown).await;
                    return;
                }
                _ = std::future::ready(()), if more_to_read => {}
            }
        }
    }

    fn id(&self) -> String {
        self.config.id.subscription_id()
    }

    async fn load(&mut self) -> Result<(), StoreError> {
        let id = self.config.id.clone();
        let starts_at_end = self.config.settings.start_from == StartFrom::End;
        let loaded = on_snapshot(&self.store, move |s| {
            let checkpoint_stream = id.checkpoint_stream();
            let checkpoint = last_event(s, &checkpoint_stream)?.and_then(|e| {
                id.source
                    .parse_place(&String::from_utf8_lossy(&e.event.data))
            });
            let parked = s.stream(&id.parked_stream())?;
            let (parked_next, parked_truncated_before) = match &parked {
                Some(info) => (
                    info.last_revision.map_or(0, |r| r + 1),
                    info.first_visible(&id.parked_stream()),
                ),
                None => (0, 0),
            };
            let end = match (&id.source, starts_at_end && checkpoint.is_none()) {
                (_, false) => None,
                (Source::All, true) => Some(s.head()?).filter(|&h| h > 0),
                (Source::Stream(name), true) => s.stream(name)?.and_then(|i| i.last_revision),
            };
            Ok(Loaded {
                checkpoint,
                checkpoint_stream_exists: s.stream(&checkpoint_stream)?.is_some(),
                parked_next,
                parked_truncated_before: parked_truncated_before.min(parked_next),
                end,
            })
        })
        .await?;
        self.checkpoint_stream_exists = loaded.checkpoint_stream_exists;
        self.parked_next = loaded.parked_next;
        self.parked_truncated_before = loaded.parked_truncated_before;
        self.replay_next = loaded.parked_truncated_before;
        self.last_checkpoint = loaded.checkpoint;
        self.cursor = match (loaded.checkpoint, self.config.settings.start_from) {
            (Some(checkpoint), _) => Some(checkpoint),
            (None, StartFrom::Start) => None,
            (None, StartFrom::At(place)) => place.checked_sub(1),
            (None, StartFrom::End) => loaded.end,
        };
        // A group made to start at the end keeps the end it first saw, across restarts: the
        // real server looks for the end again, and would skip what came in between.
        if let (None, Some(end)) = (loaded.checkpoint, loaded.end) {
            self.write_checkpoint(end).await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Reading

    fn capacity(&self) -> usize {
        let settings = &self.config.settings;
        if self.live {
            settings.live_buffer_size as usize
        } else {
            settings.history_buffer_size as usize
        }
    }

    /// Reads pages until the buffer is full or the source ends; true if there is more to read
    /// right away.
    async fn fill(&mut self, head: &mut watch::Receiver<u64>) -> bool {
        if let Some(failed) = self.read_failed_at {
            if failed.elapsed() < Duration::from_secs(1) {
                return false;
            }
            self.read_failed_at = None;
        }
        for _ in 0..PAGES_PER_TURN {
            let room = self.capacity().saturating_sub(self.buffer.len());
            if self.at_end || room == 0 {
                return false;
            }
            // Seen before reading: an append after this wakes the group.
            head.borrow_and_update();
            let limit = room
                .min(self.config.settings.read_batch_size as usize)
                .max(1);
            match self.read_page(limit).await {
                Ok(page) => {
                    for message in page.messages {
                        if let Some(key) = message.key {
                            self.pending.insert(key);
                        }
                        self.buffer.push_back(message);
                    }
                    if page.cursor.is_some() {
                        self.cursor = page.cursor;
                    }
                    if page.at_end {
                        self.at_end = true;
                        self.live = true;
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %self.id(), error = %e, "cannot read the source; trying again");
                    self.read_failed_at = Some(Instant::now());
                    return false;
                }
            }
        }
        true
    }

    async fn read_page(&self, limit: usize) -> Result<Page, StoreError> {
        let source = self.config.id.source.clone();
        let from = self.cursor.map_or(0, |c| c + 1);
        let resolve = self.config.settings.resolve_links;
        let filter = self.filter.clone();
        on_snapshot(&self.store, move |s| {
            let (events, cursor, at_end) = match &source {
                Source::Stream(name) => {
                    let events = match s.stream(name)? {
                        Some(info) if !info.tombstoned => {
                            s.read_stream(name, &info, from, Direction::Forwards, limit)?
                        }
                        _ => Vec::new(),
                    };
                    let cursor = events.last().map(|e| e.event.revision);
                    let at_end = events.len() < limit;
                    (events, cursor, at_end)
                }
                Source::All => {
                    let keep = |e: &crate::storage::StoredEvent| {
                        filter.as_ref().is_none_or(|f| f.matches(e))
                    };
                    let page = s.read_all(from, Direction::Forwards, limit, SCAN, &keep)?;
                    (page.events, page.scanned_to, page.exhausted)
                }
            };
            let mut messages = Vec::with_capacity(events.len());
            for recorded in events {
                let key = match &source {
                    Source::Stream(_) => recorded.event.revision,
                    Source::All => recorded.position,
                };
                let message = if resolve && recorded.event.event_type == "$>" {
                    Message {
                        id: recorded.event.id_u128(),
                        key: Some(key),
                        parked_revision: None,
                        event: crate::server::read::resolve_link(s, &recorded)?,
                        link: Some(recorded),
                        retry_count: 0,
                    }
                } else {
                    Message {
                        id: recorded.event.id_u128(),
                        key: Some(key),
                        parked_revision: None,
                        event: Some(recorded),
                        link: None,
                        retry_count: 0,
                    }
                };
                messages.push(message);
            }
            Ok(Page {
                messages,
                cursor,
                at_end,
            })
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Handing out

    /// Hands out what it can: retries first, then new events, each to a consumer with room.
    fn push(&mut self) {
        loop {
            let gone = self.push_once();
            if gone.is_empty() {
                return;
            }
            // A consumer whose connection closed gives its events back; try again without it.
            for consumer in gone {
                self.disconnect(consumer);
            }
        }
    }

    /// One pass; returns the consumers found gone.
    fn push_once(&mut self) -> Vec<u64> {
        let mut gone = Vec::new();
        // Pinned: once one event of a stream must wait, the later ones of it wait too.
        let mut blocked: HashSet<String> = HashSet::new();
        for from_retries in [true, false] {
            let queue = if from_retries {
                std::mem::take(&mut self.retries)
            } else {
                std::mem::take(&mut self.buffer)
            };
            let mut kept = VecDeque::with_capacity(queue.len());
            let mut queue = queue.into_iter();
            while let Some(message) = queue.next() {
                if self.consumers.iter().all(|c| c.free() == 0) {
                    kept.push_back(message);
                    kept.extend(queue.by_ref());
                    break;
                }
                if self.outstanding.contains_key(&message.id) {
                    // The same id is out already (a replay of it, or a duplicate id in `$all`):
                    // it waits, since an acknowledgement could not tell the two apart.
                    kept.push_back(message);
                    continue;
                }
                let Some(index) = self.choose(&message, &blocked) else {
                    if self.config.settings.strategy == Strategy::Pinned {
                        blocked.insert(message.stream().to_string());
                    }
                    kept.push_back(message);
                    continue;
                };
                if let Err(message) = self.send(index, message, &mut gone) {
                    kept.push_back(message);
                }
            }
            if from_retries {
                self.retries = kept;
            } else {
                self.buffer = kept;
            }
        }
        gone
    }

    fn choose(&mut self, message: &Message, blocked: &HashSet<String>) -> Option<usize> {
        let n = self.consumers.len();
        match self.config.settings.strategy {
            Strategy::RoundRobin => {
                let found = (0..n)
                    .map(|k| (self.round_robin + k) % n)
                    .find(|&i| self.consumers[i].free() > 0)?;
                self.round_robin = (found + 1) % n;
                Some(found)
            }
            Strategy::DispatchToSingle => self.consumers.iter().position(|c| c.free() > 0),
            Strategy::Pinned => {
                let stream = message.stream();
                if n == 0 || blocked.contains(stream) {
                    return None;
                }
                let index = (stable_hash(stream) % n as u64) as usize;
                (self.consumers[index].free() > 0).then_some(index)
            }
        }
    }

    /// Gives the message back when it could not be handed out (moved, not copied, either way).
    #[allow(clippy::result_large_err)]
    fn send(&mut self, index: usize, message: Message, gone: &mut Vec<u64>) -> Result<(), Message> {
        let consumer = &mut self.consumers[index];
        let delivery = Delivery {
            event: message.event.clone(),
            link: message.link.clone(),
            retry_count: message.retry_count,
        };
        match consumer.tx.try_send(ToConsumer::Event(delivery)) {
            Ok(()) => {
                consumer.in_flight += 1;
                consumer.meter.add();
                self.meter.add();
                let timeout = self.config.settings.message_timeout;
                let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
                self.outstanding.insert(
                    message.id,
                    Outstanding {
                        message,
                        consumer: consumer.id,
                        deadline,
                    },
                );
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Its connection is behind on writing: it has no room after all.
                consumer.slots = consumer.in_flight;
                Err(message)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                consumer.slots = 0;
                gone.push(consumer.id);
                Err(message)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Mail

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Connect { consumer, reply } => {
                let _ = reply.send(self.connect(consumer));
            }
            Command::Ack { ids } => {
                for id in ids {
                    if let Some(out) = self.take_outstanding(id) {
                        self.done(out.message);
                    }
                }
            }
            Command::Nack {
                ids,
                action,
                reason,
            } => {
                for id in ids {
                    let Some(out) = self.take_outstanding(id) else {
                        continue;
                    };
                    match action {
                        NackAction::Park => {
                            let why = format!("Client explicitly NAK'ed message.\n{reason}");
                            self.park(out.message, &why).await
                        }
                        NackAction::Retry | NackAction::Unknown => self.retry(out.message).await,
                        NackAction::Skip | NackAction::Stop => self.done(out.message),
                    }
                }
            }
            Command::Disconnect { consumer } => self.disconnect(consumer),
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::ReplayParked { stop_at, reply } => {
                let _ = reply.send(self.replay_parked(stop_at).await);
            }
            Command::Stop { .. } => {}
        }
    }

    fn connect(&mut self, consumer: Consumer) -> Result<u64, PersistentError> {
        let max = self.config.settings.max_subscriber_count;
        if max > 0 && self.consumers.len() >= max as usize {
            return Err(PersistentError::MaximumSubscribersReached(
                self.config.id.clone(),
            ));
        }
        let id = self.next_consumer;
        self.next_consumer += 1;
        self.consumers.push(ConsumerState {
            id,
            tx: consumer.tx,
            slots: consumer.slots.clamp(1, MAX_CONSUMER_SLOTS),
            in_flight: 0,
            from: consumer.from,
            username: consumer.username,
            connection_name: consumer.connection_name,
            meter: Meter::default(),
        });
        Ok(id)
    }

    fn take_outstanding(&mut self, id: u128) -> Option<Outstanding> {
        let out = self.outstanding.remove(&id)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == out.consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(out)
    }

    /// An event is dealt with: acknowledged, skipped, or safely parked.
    fn done(&mut self, message: Message) {
        if let Some(key) = message.key {
            self.pending.remove(&key);
            self.processed_since_checkpoint += 1;
        }
        if let Some(revision) = message.parked_revision {
            self.replaying.remove(&revision);
        }
    }

    /// Hands an event out again later, or parks it once it has been retried enough.
    async fn retry(&mut self, mut message: Message) {
        let max = self.config.settings.max_retry_count;
        if message.retry_count >= max {
            self.park(message, &format!("Reached retry count of {max}"))
                .await;
        } else {
            message.retry_count += 1;
            self.requeue(message);
        }
    }

    /// Retries wait in the order of the source, before any new event.
    fn requeue(&mut self, message: Message) {
        let order = |m: &Message| (m.key.is_none(), m.key, m.parked_revision);
        let at = self
            .retries
            .iter()
            .rposition(|m| order(m) <= order(&message))
            .map_or(0, |i| i + 1);
        self.retries.insert(at, message);
    }

    /// Links the event into the parked stream; it counts as done once that write is durable.
    async fn park(&mut self, message: Message, reason: &str) {
        let Some(target) = message.event.as_ref().or(message.link.as_ref()) else {
            self.done(message);
            return;
        };
        let data = format!("{}@{}", target.event.revision, target.event.stream);
        let original = message.link.as_ref().or(message.event.as_ref());
        let metadata = serde_json::json!({
            "added": chrono_like_now(),
            "reason": reason,
            "subscriptionEventNumber": original.map_or(0, |r| r.event.revision),
        });
        let event = ProposedEvent {
            id: uuid::Uuid::new_v4().as_u128(),
            event_type: "$>".into(),
            content_type: "application/octet-stream".into(),
            custom_metadata: Bytes::from(metadata.to_string()),
            data: Bytes::from(data),
        };
        let stream = self.config.id.parked_stream();
        match self
            .store
            .append(stream, ExpectedRevision::Any, vec![event])
            .await
        {
            Ok(outcome) => {
                if let Some(revision) = outcome.current_revision {
                    self.parked_next = self.parked_next.max(revision + 1);
                }
                self.done(message);
            }
            Err(e) => {
                tracing::error!(group = %self.id(), error = %e, "cannot park an event; it is handed out again");
                self.requeue(message);
            }
        }
    }

    /// A consumer left (or its connection closed): what it held is handed out again, counted
    /// as a retry but never parked for it, as on the real server.
    fn disconnect(&mut self, consumer: u64) {
        self.consumers.retain(|c| c.id != consumer);
        let mut lost: Vec<Message> = Vec::new();
        self.outstanding.retain(|_, out| {
            if out.consumer == consumer {
                lost.push(out.message.clone());
                false
            } else {
                true
            }
        });
        for mut message in lost {
            message.retry_count += 1;
            self.requeue(message);
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<u128> = self
            .outstanding
            .iter()
            .filter(|(_, out)| out.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(out) = self.take_outstanding(id) {
                self.retry(out.message).await;
            }
        }
        // A zero `checkpoint_after` turns the timer off, as on the real server.
        let after = self.config.settings.checkpoint_after;
        if !after.is_zero() && self.last_checkpoint_time.elapsed() >= after {
            self.checkpoint_if_due(true).await;
            self.last_checkpoint_time = Instant::now();
            self.truncate_replayed().await;
        }
        let elapsed = self.last_measurement.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.meter.measure(elapsed);
            for consumer in &mut self.consumers {
                consumer.meter.measure(elapsed);
            }
            self.last_measurement = Instant::now();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Checkpoints

    /// Everything up to this place is done.
    fn done_through(&self) -> Option<u64> {
        match self.pending.first() {
            Some(&lowest) => lowest.checked_sub(1),
            None => self.cursor,
        }
    }

    /// The real server's rule: on the timer once `min` events are done, at once at `max`.
    async fn checkpoint_if_due(&mut self, timer: bool) {
        let Some(through) = self.done_through() else {
            return;
        };
        if self.last_checkpoint.is_some_and(|c| c >= through) {
            return;
        }
        let settings = &self.config.settings;
        let count = self.processed_since_checkpoint;
        let due = (timer && count >= settings.min_checkpoint_count as u64)
            || count >= settings.max_checkpoint_count as u64;
        if due {
            if let Err(e) = self.write_checkpoint(through).await {
                tracing::warn!(group = %self.id(), error = %e, "cannot write the checkpoint; will try again");
            }
        }
    }

    async fn write_checkpoint(&mut self, through: u64) -> Result<(), StoreError> {
        let stream = self.config.id.checkpoint_stream();
        if !self.checkpoint_stream_exists {
            // Only the newest checkpoint matters, as on the real server.
            self.write_metadata(&stream, serde_json::json!({ "$maxCount": 1 }))
                .await?;
            self.checkpoint_stream_exists = true;
        }
        let text = serde_json::Value::String(self.config.id.source.format_place(through));
        let event = ProposedEvent {
            id: uuid::Uuid::new_v4().as_u128(),
            event_type: "$SubscriptionCheckpoint".into(),
            content_type: "application/json".into(),
            custom_metadata: Bytes::new(),
            data: Bytes::from(text.to_string()),
        };
        self.store
            .append(stream, ExpectedRevision::Any, vec![event])
            .await?;
        self.last_checkpoint = Some(through);
        self.processed_since_checkpoint = 0;
        self.last_checkpoint_time = Instant::now();
        Ok(())
    }

    async fn write_metadata(
        &self,
        stream: &str,
        metadata: serde_json::Value,
    ) -> Result<(), StoreError> {
        let event = ProposedEvent {
            id: uuid::Uuid::new_v4().as_u128(),
            event_type: "$metadata".into(),
            content_type: "application/json".into(),
            custom_metadata: Bytes::new(),
            data: Bytes::from(metadata.to_string()),
        };
        self.store
            .append(format!("$${stream}"), ExpectedRevision::Any, vec![event])
            .await
            .map(|_| ())
    }

    // -----------------------------------------------------------------------------------------
    // Parked events

    /// Puts parked events (those before revision `stop_at` of the parked stream, or all) back in
    /// line. They leave the parked stream (`$tb` moves past them) only once each is done, so
    /// that a crash during a replay loses none.
    async fn replay_parked(&mut self, stop_at: Option<u64>) -> Result<(), PersistentError> {
        let stream = self.config.id.parked_stream();
        let from = self.replay_next.max(self.parked_truncated_before);
        let until = stop_at.map_or(self.parked_next, |s| s.min(self.parked_next));
        if from >= until {
            return Ok(());
        }
        let links = on_snapshot(&self.store, move |s| {
            let Some(info) = s.stream(&stream)? else {
                return Ok(Vec::new());
            };
            let limit = (until - from) as usize;
            let links = s.read_stream(&stream, &info, from, Direction::Forwards, limit)?;
            let mut out = Vec::with_capacity(links.len());
            for link in links {
                let target = crate::server::read::resolve_link(s, &link)?;
                out.push((link.event.revision, link, target));
            }
            Ok(out)
        })
        .await?;
        for (revision, link, target) in links {
            self.replay_next = self.replay_next.max(revision + 1);
            // An event deleted since it was parked has nothing left to hand out.
            let Some(target) = target else { continue };
            self.replaying.insert(revision);
            // As on the real server: the event with its parked link, acknowledged by the link.
            self.requeue(Message {
                id: link.event.id_u128(),
                key: None,
                parked_revision: Some(revision),
                event: Some(target),
                link: Some(link),
                retry_count: 0,
            });
        }
        self.truncate_replayed().await;
        Ok(())
    }

    /// Moves the parked stream's `$tb` past the replayed events that are done.
    async fn truncate_replayed(&mut self) {
        let done_before = self.replaying.first().copied().unwrap_or(self.replay_next);
        if done_before <= self.parked_truncated_before {
            return;
        }
        let stream = self.config.id.parked_stream();
        match self
            .write_metadata(&stream, serde_json::json!({ "$tb": done_before }))
            .await
        {
            Ok(()) => self.parked_truncated_before = done_before,
            Err(e) => {
                tracing::warn!(group = %self.id(), error = %e, "cannot truncate the parked stream; will try again")
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reporting and stopping

    fn status(&self) -> &'static str {
        if !self.replaying.is_empty() {
            "ReplayingParkedMessages"
        } else if self.live && self.buffer.len() < self.capacity() {
            "Live"
        } else {
            "Behind"
        }
    }

    fn info(&self) -> GroupInfo {
        let (read_buffer_count, live_buffer_count) = if self.live {
            (0, self.buffer.len())
        } else {
            (self.buffer.len(), 0)
        };
        GroupInfo {
            config: self.config.clone(),
            status: self.status(),
            consumers: self
                .consumers
                .iter()
                .map(|c| ConsumerInfo {
                    from: c.from.clone(),
                    username: c.username.clone(),
                    connection_name: c.connection_name.clone(),
                    average_items_per_second: c.meter.per_second,
                    total_items: c.meter.total,
                    count_since_last_measurement: c.meter.since_measurement,
                    available_slots: c.free(),
                    in_flight: c.in_flight,
                })
                .collect(),
            average_per_second: self.meter.per_second,
            total_items: self.meter.total,
            count_since_last_measurement: self.meter.since_measurement,
            last_checkpointed: self.last_checkpoint,
            last_known: self.cursor,
            read_buffer_count,
            live_buffer_count,
            retry_buffer_count: self.retries.len(),
            in_flight: self.outstanding.len(),
            parked_count: self
                .parked_next
                .saturating_sub(self.parked_truncated_before),
        }
    }

    /// Lets the consumers go with the reason, and saves what is done unless the group is gone.
    async fn stop(&mut self, reason: DropReason) {
        for consumer in self.consumers.drain(..) {
            let _ = consumer.tx.try_send(ToConsumer::Dropped(reason));
        }
        if reason != DropReason::Deleted {
            if let Some(through) = self.done_through() {
                if self.last_checkpoint.is_none_or(|c| c < through)
                    && self.processed_since_checkpoint > 0
                {
                    let _ = self.write_checkpoint(through).await;
                }
            }
            self.truncate_replayed().await;
        }
    }
}

struct Page {
    messages: Vec<Message>,
    cursor: Option<u64>,
    at_end: bool,
}

/// FNV-1a: the same stream goes to the same consumer slot on every run.
fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Now as an ISO 8601 UTC time, for the parked events' metadata.
pub(super) fn chrono_like_now() -> String {
    let ticks = crate::storage::now_ticks();
    let secs = ticks / 10_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }

    #[test]
    fn a_stream_always_hashes_alike() {
        assert_eq!(stable_hash("orders-1"), stable_hash("orders-1"));
        assert_ne!(stable_hash("orders-1"), stable_hash("orders-2"));
    }
}
