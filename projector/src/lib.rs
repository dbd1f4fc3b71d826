//! The projector: a catch-up subscription to `$all` (filtered on the server to this system's
//! event types) that builds the PostgreSQL read models.
//!
//! Events are applied in batches, one transaction per batch, and the batch's last position is
//! written as the checkpoint in that same transaction: after a crash at any moment the
//! projection resumes exactly after the last committed batch, neither losing nor doubling an
//! update. A batch waits at most `max_wait` for more events.

pub mod dashboard;
pub mod messages;
pub mod rebuild;
pub mod statements;
pub mod timeline;

use statements::Statements;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use domain::customer::CustomerEvent;
use events::{CustomerKey, Event, KeyStore, Metadata};
use kurrentdb::{
    Position, StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use read_models::DbError;

pub use read_models::ReadModel;

/// What to do with an event that cannot be applied. Either way it is recorded in
/// `poison_events`, logged and counted (`projector_poison_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPoison {
    /// Stop before it: the read models stay exactly at the event before, until someone fixes
    /// the cause (an upcaster, a code fix) and restarts. The safe default.
    #[default]
    Stop,
    /// Record it and go on: the read models miss that one event.
    Park,
}

impl std::str::FromStr for OnPoison {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stop" => Ok(OnPoison::Stop),
            "park" => Ok(OnPoison::Park),
            other => Err(format!("{other:?} is neither \"stop\" nor \"park\"")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Events per transaction at most.
    pub max_events: usize,
    /// How long a batch waits for more events once it has one.
    pub max_wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_events: 500,
            max_wait: Duration::from_millis(5),
        }
    }
}

/// The part of the process `/readyz` names for the projector.
pub const READINESS: &str = "projector";

/// Why projecting stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("event store: {0}")]
    EventStore(String),
    #[error("cannot apply the event at position {position}: {reason}")]
    Poison { position: u64, reason: String },
}

impl From<tokio_postgres::Error> for ProjectorError {
    fn from(e: tokio_postgres::Error) -> Self {
        ProjectorError::Db(DbError::Postgres(e))
    }
}

impl From<deadpool_postgres::PoolError> for ProjectorError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ProjectorError::Db(DbError::Pool(e))
    }
}

/// What every read model is given: one event with where and when it was written, and what
/// caused it.
pub struct Applied<'a> {
    pub event: &'a Event,
    pub stream: &'a str,
    pub position: i64,
    pub created: DateTime<Utc>,
    pub metadata: Option<&'a events::Metadata>,
}

/// A decoded event, where it sits in the log, and what caused it.
struct Received {
    event: Event,
    stream: String,
    position: u64,
    created: DateTime<Utc>,
    metadata: Option<Metadata>,
}

/// An event that could not be decoded, and why.
struct Poison {
    stream: String,
    event_type: String,
    position: u64,
    reason: String,
}

/// What the reader hands over, in log order.
// Nearly every delivery is an event: boxing it would allocate once per event to shrink the
// rare others.
#[allow(clippy::large_enum_variant)]
enum Delivery {
    Event(Received),
    Poison(Poison),
    /// The subscription failed.
    Failed(ProjectorError),
    /// The subscription reached the head of the log.
    CaughtUp,
}

pub struct Projector<K> {
    pub client: kurrentdb::Client,
    pub pool: Pool,
    pub keys: Arc<K>,
    pub batches: BatchSettings,
    pub on_poison: OnPoison,
}

impl<K: KeyStore> Projector<K> {
    /// The position every read model has applied, if each has applied something.
    pub async fn checkpoint(&self) -> Result<Option<u64>, ProjectorError> {
        let checkpoints = self.checkpoints(&ReadModel::ALL).await?;
        Ok(checkpoints.iter().map(|(_, at)| *at).min().flatten())
    }

    /// The position `model` has applied, if any.
    pub async fn checkpoint_of(&self, model: ReadModel) -> Result<Option<u64>, ProjectorError> {
        Ok(self.checkpoints(&[model]).await?[0].1)
    }

    /// Where each of `models` stands.
    async fn checkpoints(
        &self,
        models: &[ReadModel],
    ) -> Result<Vec<(ReadModel, Option<u64>)>, ProjectorError> {
        let client = self.pool.get().await?;
        let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
        let rows = client
            .query(
                "SELECT projection, commit_position FROM checkpoints WHERE projection = ANY($1)",
                &[&names],
            )
            .await?;
        Ok(models
            .iter()
            .map(|model| {
                let at = rows
                    .iter()
                    .find(|r| r.get::<_, &str>(0) == model.name())
                    .map(|r| r.get::<_, i64>(1) as u64);
                (*model, at)
            })
            .collect())
    }

    /// Projects until `shutdown` completes (after the batch in hand) or a failure stops it.
    /// Only one projector works on a database at a time: another one waits here (a standby
    /// replica) until the first stops or its connection drops.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        tokio::pin!(shutdown);
        let _active = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            lock = self.become_the_active_one() => lock?,
        };
        let head = tokio::spawn(watch_head(self.client.clone()));
        let result = self
            .project(Mode::Live, &ReadModel::ALL, shutdown, &|_, _| {})
            .await;
        head.abort();
        result
    }

    /// Projects `models` from their checkpoints until the head of the log as it is when the
    /// subscription gets there, then returns; `progress` hears each batch's last position and
    /// size. For rebuilds: it neither waits for the projector lock nor takes the switch lock.
    pub async fn catch_up(
        &self,
        models: &[ReadModel],
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), ProjectorError> {
        self.project(Mode::CatchUp, models, std::future::pending(), progress)
            .await
    }

    async fn project(
        &self,
        mode: Mode,
        models: &[ReadModel],
        shutdown: impl Future<Output = ()>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), ProjectorError> {
        tokio::pin!(shutdown);
        // Each model applies only what it has not yet; reading starts at the one furthest back.
        let mut applied_to = self.checkpoints(models).await?;
        let start = match applied_to.iter().map(|(_, at)| *at).min().flatten() {
            Some(p) => StreamPosition::Position(Position {
                commit: p,
                prepare: p,
            }),
            None => StreamPosition::Start,
        };
        let (tx, mut rx) = mpsc::channel(self.batches.max_events * 2);
        let mut reader = tokio::spawn(read(self.client.clone(), self.keys.clone(), start, tx));
        let result = loop {
            let first = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                received = rx.recv() => received,
            };
            let Some(first) = first else {
                // The reader stopped: say why.
                break match (&mut reader).await {
                    Ok(Err(e)) => Err(e),
                    _ => Err(ProjectorError::EventStore("the subscription ended".into())),
                };
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.batches.max_wait;
            while batch.len() < self.batches.max_events
                && !matches!(batch.last(), Some(Delivery::CaughtUp))
            {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    Ok(None) | Err(_) => break,
                }
            }
            let caught_up = matches!(batch.last(), Some(Delivery::CaughtUp));
            match self.apply(batch, mode, &mut applied_to).await {
                Ok(Some((last, events))) => progress(last, events),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if caught_up && mode == Mode::CatchUp {
                break Ok(());
            }
        };
        reader.abort();
        result
    }

    /// Waits for this database's projector lock: a PostgreSQL advisory lock held by a
    /// connection of its own, taken out of the pool so that it is released exactly when this
    /// projector stops (dropped) or dies (the connection closes).
    async fn become_the_active_one(
        &self,
    ) -> Result<deadpool_postgres::ClientWrapper, ProjectorError> {
        let connection = deadpool_postgres::Object::take(self.pool.get().await?);
        // PostgreSQL answers: a standby waiting for its turn is ready to take over.
        lifecycle::mark_ready(READINESS, true);
        connection
            .execute(
                "SELECT pg_advisory_lock(hashtext('cleaning-park projector'))",
                &[],
            )
            .await?;
        Ok(connection)
    }

    /// One transaction: each read model's rows for the events it has not applied yet, any
    /// poison the batch met, and each model's checkpoint.
    async fn apply(
        &self,
        batch: Vec<Delivery>,
        mode: Mode,
        applied_to: &mut [(ReadModel, Option<u64>)],
    ) -> Result<Option<(u64, u64)>, ProjectorError> {
        let mut out = Statements::default();
        if mode == Mode::Live {
            // A rebuild switching the tables over holds this too: no live batch lands in the
            // middle of the switch. Exclusive, so that live batches never overlap either: a
            // projector whose lock connection dropped (PostgreSQL restarted) does not know it,
            // and goes on beside the one that took the lock over. Row updates tolerate that
            // (each row keeps its last position), but the summary's counters would count an
            // event twice if two transactions applied it at once; one after the other, the
            // second sees the first's rows and counts nothing.
            out.push(
                "SELECT pg_advisory_xact_lock(hashtext('cleaning-park read-model switch'))",
                vec![],
            );
        }
        let behind =
            |model_at: &Option<u64>, position: u64| model_at.is_none_or(|at| at < position);
        // Traced live: the batch, and each event's share of it in the trace that wrote it.
        let batch_span = match mode {
            Mode::Live => tracing::info_span!(
                "projector batch",
                otel.name = "projector batch",
                projections = PROJECTIONS,
                events = tracing::field::Empty,
                last_position = tracing::field::Empty,
            ),
            Mode::CatchUp => tracing::Span::none(),
        };
        let mut event_spans = Vec::new();
        let mut received = Vec::new();
        let mut last = None;
        let mut failure = None;
        let mut newest: Option<DateTime<Utc>> = None;
        // The dashboard rows this batch changes; `None` once one change names no row.
        let mut touched: Option<Vec<uuid::Uuid>> = Some(Vec::new());
        for delivery in batch {
            match delivery {
                Delivery::Event(event) => {
                    match dashboard::touches(&event.event) {
                        dashboard::Touches::Nothing => {}
                        dashboard::Touches::Reservation(id) => {
                            if let Some(ids) = touched.as_mut() {
                                if !ids.contains(&id) {
                                    ids.push(id);
                                }
                            }
                        }
                        dashboard::Touches::Many => touched = None,
                    }
                    if mode == Mode::Live {
                        event_spans.extend(event_span(&event, &batch_span));
                    }
                    last = Some(event.position);
                    newest = Some(event.created);
                    received.push(event);
                }
                Delivery::Poison(poison) => {
                    let parked = self.on_poison == OnPoison::Park;
                    tracing::error!(
                        position = poison.position,
                        stream = %poison.stream,
                        event_type = %poison.event_type,
                        error = %poison.reason,
                        parked,
                        "cannot apply an event"
                    );
                    metrics::counter!("projector_poison_events_total").increment(1);
                    // Recorded once, naming the read models it is missing from.
                    let missing: Vec<&str> = applied_to
                        .iter()
                        .filter(|(_, at)| behind(at, poison.position))
                        .map(|(model, _)| model.name())
                        .collect();
                    out.push(
                        "INSERT INTO poison_events (projection, position, stream, event_type, error, parked)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error, parked = excluded.parked",
                        params![missing.join(","), poison.position as i64, poison.stream, poison.event_type, poison.reason.clone(), parked],
                    );
                    if !parked {
                        failure = Some(ProjectorError::Poison {
                            position: poison.position,
                            reason: poison.reason,
                        });
                        break;
                    }
                    last = Some(poison.position);
                }
                Delivery::Failed(e) => {
                    failure = Some(e);
                    break;
                }
                Delivery::CaughtUp => {}
            }
        }
        let applied: Vec<Applied<'_>> = received
            .iter()
            .map(|r| Applied {
                event: &r.event,
                stream: &r.stream,
                position: r.position as i64,
                created: r.created,
                metadata: r.metadata.as_ref(),
            })
            .collect();
        for (model, at) in applied_to.iter() {
            let from = applied.partition_point(|a| !behind(at, a.position as u64));
            apply_all(*model)(&mut out, &applied[from..]);
        }
        let applied_events = applied.len() as u64;
        if let Some(position) = last {
            for (model, at) in applied_to.iter() {
                if behind(at, position) {
                    out.push(
                        "INSERT INTO checkpoints (projection, commit_position) VALUES ($1, $2)
                         ON CONFLICT (projection) DO UPDATE SET commit_position = excluded.commit_position
                         WHERE checkpoints.commit_position < excluded.commit_position",
                        params![model.name(), position as i64],
                    );
                }
            }
            if mode == Mode::Live {
                // Open pages hear of it when, and only if, this transaction commits.
                let notice = read_models::changes::Changed::new(position as i64, touched);
                out.push(
                    "SELECT pg_notify($1, $2)",
                    params![
                        read_models::changes::CHANNEL,
                        serde_json::to_string(&notice).unwrap_or_default()
                    ],
                );
            }
        }
        batch_span.record("events", applied_events);
        if let Some(position) = last {
            batch_span.record("last_position", position);
        }
        async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            out.run(&tx).await?;
            tx.commit().await?;
            Ok::<(), ProjectorError>(())
        }
        .instrument(batch_span)
        .await?;
        // The events' spans end with the commit that made their rows visible.
        drop(event_spans);
        if let Some(position) = last {
            for (_, at) in applied_to.iter_mut() {
                *at = Some(at.map_or(position, |at| at.max(position)));
            }
            metrics::gauge!("projector_applied_position").set(position as f64);
            if let Some(created) = newest {
                // How old the newest event of the batch was when it landed in the read models.
                let lag = (Utc::now() - created).as_seconds_f64().max(0.0);
                metrics::gauge!("projector_lag_seconds").set(lag);
            }
            metrics::counter!("projector_events_applied_total").increment(applied_events);
            metrics::histogram!("projector_batch_events").record(applied_events as f64);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(last.map(|position| (position, applied_events))),
        }
    }
}

/// What each read model makes of a batch's events (those it has not applied yet), in log
/// order. A new read model is a module with its `apply_all`, a [`ReadModel`] variant (its name
/// and tables) and its line here: the compiler finds a forgotten one.
fn apply_all(model: ReadModel) -> fn(&mut Statements, &[Applied<'_>]) {
    match model {
        ReadModel::Dashboard => dashboard::apply_all,
        ReadModel::Messages => messages::apply_all,
        ReadModel::Timeline => timeline::apply_all,
    }
}

/// What a batch applies each event to, as spans name it.
const PROJECTIONS: &str = "dashboard,messages,timeline";

/// An event's share of a live batch: a child of the span that appended the event (its
/// metadata's `$traceId`/`$spanId`), so it shows in that request's trace, linked to the batch
/// that committed it. `None` for an event written outside a trace.
fn event_span(received: &Received, batch: &tracing::Span) -> Option<tracing::Span> {
    let metadata = received.metadata.as_ref()?;
    let (Some(trace_id), Some(span_id)) = (&metadata.trace_id, &metadata.span_id) else {
        return None;
    };
    let event_type = received.event.event_type();
    let span = tracing::info_span!(
        parent: None,
        "project",
        otel.name = %format_args!("project {event_type}"),
        otel.kind = "consumer",
        projections = PROJECTIONS,
        db.kurrentdb.stream = %received.stream,
        event_type,
        position = received.position,
    );
    lifecycle::telemetry::follow(&span, trace_id, span_id);
    lifecycle::telemetry::link(&span, batch);
    Some(span)
}

/// How a projector runs: live (one active per database, batches wait for a switch in
/// progress) or catching up into a rebuild's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    CatchUp,
}

/// Samples the head of `$all` every second (`projector_head_position`), so that the lag behind
/// it shows in positions beside `projector_applied_position`.
async fn watch_head(client: kurrentdb::Client) {
    let options = kurrentdb::ReadAllOptions::default()
        .position(StreamPosition::End)
        .backwards()
        .max_count(1);
    loop {
        if let Ok(mut read) = client.read_all(&options).await {
            if let Ok(Some(event)) = read.next().await {
                let head = event.get_original_event().position.commit;
                metrics::gauge!("projector_head_position").set(head as f64);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads the subscription, decodes (unsealing with the customer's key when there is one) and
/// hands events over in order. Ends with the error that stopped it.
async fn read<K: KeyStore>(
    client: kurrentdb::Client,
    keys: Arc<K>,
    start: StreamPosition<Position>,
    tx: mpsc::Sender<Delivery>,
) -> Result<(), ProjectorError> {
    let filter = SubscriptionFilter::on_event_type()
        .regex(events::EventType::filter_regex(events::EventType::ALL));
    let options = SubscribeToAllOptions::default()
        .position(start)
        .filter(filter);
    let mut subscription = client.subscribe_to_all(&options).await;
    let mut known_keys = KnownKeys::default();
    let mut reported = false;
    loop {
        let next = subscription.next_subscription_event().await;
        if next.is_ok() && !reported {
            // The event store answers.
            lifecycle::mark_ready(READINESS, true);
            reported = true;
        }
        let event = match next {
            Ok(SubscriptionEvent::EventAppeared(event)) => event,
            Ok(SubscriptionEvent::CaughtUp(_)) => {
                if tx.send(Delivery::CaughtUp).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = tx
                    .send(Delivery::Failed(ProjectorError::EventStore(e.to_string())))
                    .await;
                return Err(ProjectorError::EventStore(e.to_string()));
            }
        };
        let recorded = event.get_original_event();
        let position = recorded.position.commit;
        let key = match events::sealing_key_id(&recorded.event_type, &recorded.data) {
            Some(id) => known_keys.get(&id, keys.as_ref()).await,
            None => None,
        };
        let decoded = events::decode_stored(
            &recorded.event_type,
            &recorded.data,
            &recorded.custom_metadata,
            key.as_ref(),
        );
        let delivery = match decoded {
            Ok((event, metadata)) => {
                if let Event::Customer(CustomerEvent::CustomerForgotten { customer_id }) = &event {
                    known_keys.forgotten(*customer_id);
                }
                Delivery::Event(Received {
                    event,
                    stream: recorded.stream_id().to_string(),
                    position,
                    created: recorded.created,
                    metadata,
                })
            }
            Err(e) => Delivery::Poison(Poison {
                stream: recorded.stream_id().to_string(),
                event_type: recorded.event_type.clone(),
                position,
                reason: e.to_string(),
            }),
        };
        if tx.send(delivery).await.is_err() {
            return Ok(());
        }
    }
}

/// The keys this reader has looked up, so that a replay asks the key store once per customer,
/// not once per event. A customer's `CustomerForgotten` drops their key here too, so nothing
/// later in the log opens with a key that has since been destroyed.
#[derive(Default)]
struct KnownKeys {
    keys: HashMap<String, Option<CustomerKey>>,
}

impl KnownKeys {
    /// Enough for every active customer; past it, the cache starts again rather than grow.
    const MAX: usize = 100_000;

    async fn get<K: KeyStore>(&mut self, key_id: &str, store: &K) -> Option<CustomerKey> {
        if let Some(key) = self.keys.get(key_id) {
            return key.clone();
        }
        // An unreachable key store pauses projection (retrying) instead of showing data as
        // erased that is not: the lag metric shows the pause.
        let mut pause = Duration::from_millis(100);
        let key = loop {
            match store.key_for_reading(key_id).await {
                Ok(key) => break key,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "key store unavailable");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        if self.keys.len() >= Self::MAX {
            self.keys.clear();
        }
        self.keys.insert(key_id.to_string(), key.clone());
        key
    }

    fn forgotten(&mut self, customer: domain::CustomerId) {
        self.keys.insert(events::sealing::key_id(customer), None);
    }
}
