//! What every policy does alike: it is a consumer group of the event store (a persistent
//! subscription to `$all`, filtered on the server to the events it reacts to), so that any
//! number of replicas share its work. The store hands each event to one member; the member
//! reacts (commands first, then its own state in one transaction) and acknowledges. A member
//! that dies holds nothing: what it had not acknowledged goes to another. An event that cannot
//! be read is parked, where it is visible and can be replayed, instead of stopping everyone.
//!
//! Reacting twice is harmless, which is what makes redelivery safe: each command's request id
//! derives from the event's id (the command side answers a repeat with the original result),
//! and the policies' own state changes are idempotent.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use events::{Event, EventType, Metadata};
use kurrentdb::{
    NakAction, PersistentSubscriptionToAllOptions, Position, StreamPosition,
    SubscribeToPersistentSubscriptionOptions, SubscriptionFilter, SystemConsumerStrategy,
};
use tokio_postgres::Transaction;
use tracing::Instrument;
use uuid::Uuid;

use crate::PolicyError;

/// An event a policy reacts to.
pub struct Trigger {
    pub event: Event,
    /// The stored event's id: commands derive their request id from it, so a repeat of the
    /// reaction is recognised by the command side.
    pub id: Uuid,
    pub position: u64,
    pub created: DateTime<Utc>,
    pub metadata: Option<Metadata>,
}

impl Trigger {
    /// The request that started the chain: carried on by everything the policy causes.
    pub fn correlation_id(&self) -> Uuid {
        self.metadata.as_ref().map_or(self.id, |m| m.correlation_id)
    }
}

/// A process manager.
pub trait Policy: Send + Sync {
    /// Its consumer group's name (and its old checkpoint's).
    const NAME: &'static str;
    /// The event types it reacts to (its consumer group's filter).
    const EVENT_TYPES: &'static [EventType];

    /// Reacts to one event: commands first (idempotent), then its own state in `tx`.
    fn react<'a>(
        &'a self,
        trigger: &'a Trigger,
        tx: &'a Transaction<'a>,
    ) -> impl Future<Output = Result<(), PolicyError>> + Send + 'a;
}

/// Events a member may hold unacknowledged: it reacts to one at a time, the rest wait ready.
const MEMBER_BUFFER: usize = 8;

/// How the group is made the first time a member starts. An event a member holds longer than
/// the message timeout goes to another: longer than a command's deadline and its retries.
fn group_options<P: Policy>(start: StreamPosition<Position>) -> PersistentSubscriptionToAllOptions {
    let filter = SubscriptionFilter::on_event_type().regex(EventType::filter_regex(P::EVENT_TYPES));
    let mut options = PersistentSubscriptionToAllOptions::default()
        .start_from(start)
        .filter(filter);
    let settings = options.settings_mut();
    settings.consumer_strategy_name = SystemConsumerStrategy::RoundRobin;
    settings.message_timeout = Duration::from_secs(60);
    settings.max_retry_count = 10;
    // Progress saved each second: a restarted store hands out again little that was done.
    settings.checkpoint_after = Duration::from_secs(1);
    settings.checkpoint_lower_bound = 1;
    options
}

/// Makes the policy's consumer group unless a member (on any replica) already has. A policy
/// that ran before on a catch-up subscription starts after its old checkpoint.
pub async fn ensure_group<P: Policy>(
    events: &kurrentdb::Client,
    pool: &Pool,
) -> Result<(), PolicyError> {
    let start = match checkpoint(pool, P::NAME).await? {
        Some(p) => StreamPosition::Position(Position {
            commit: p + 1,
            prepare: p + 1,
        }),
        None => StreamPosition::Start,
    };
    match events
        .create_persistent_subscription_to_all(P::NAME, &group_options::<P>(start))
        .await
    {
        Ok(()) | Err(kurrentdb::Error::ResourceAlreadyExists) => Ok(()),
        Err(e) => Err(PolicyError::EventStore(e.to_string())),
    }
}

/// Runs `policy` as one member of its consumer group until `shutdown` (between two events) or
/// a failure of the event store or PostgreSQL, which the caller waits out and retries.
pub async fn consume<P: Policy>(
    policy: &P,
    events: &kurrentdb::Client,
    pool: &Pool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PolicyError> {
    tokio::pin!(shutdown);
    ensure_group::<P>(events, pool).await?;
    let mut subscription = events
        .subscribe_to_persistent_subscription_to_all(
            P::NAME,
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(MEMBER_BUFFER),
        )
        .await
        .map_err(|e| PolicyError::EventStore(e.to_string()))?;
    // The event store answers (PostgreSQL did, for the old checkpoint).
    lifecycle::mark_ready(P::NAME, true);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            next = subscription.next() => next,
        };
        let event = next.map_err(|e| PolicyError::EventStore(e.to_string()))?;
        let recorded = event.get_original_event();
        // Personal data is not needed to react, so nothing is unsealed here.
        let stored = events::decode_stored(
            &recorded.event_type,
            &recorded.data,
            &recorded.custom_metadata,
            None,
        );
        let (decoded, metadata) = match stored {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(
                    policy = P::NAME,
                    position = recorded.position.commit,
                    error = %e,
                    "cannot read an event; parked"
                );
                metrics::counter!("policy_events_parked_total", "policy" => P::NAME).increment(1);
                subscription
                    .nack(&event, NakAction::Park, e.to_string())
                    .await
                    .map_err(|e| PolicyError::EventStore(e.to_string()))?;
                continue;
            }
        };
        let trigger = Trigger {
            event: decoded,
            id: recorded.id,
            position: recorded.position.commit,
            created: recorded.created,
            metadata,
        };
        // A failure here leaves the event unacknowledged: leaving the group hands it to
        // another member (or to this one once it is back). So does a shutdown in the middle
        // of a reaction (one waiting for a command side that is down can take long): the
        // transaction rolls back, and reacting again is harmless.
        let span = reaction_span(P::NAME, &trigger, recorded.stream_id());
        let handled = async {
            let mut client = pool.get().await.map_err(database)?;
            let tx = client.transaction().await.map_err(database)?;
            policy.react(&trigger, &tx).await?;
            tx.commit().await.map_err(database)?;
            subscription
                .ack(&event)
                .await
                .map_err(|e| PolicyError::EventStore(e.to_string()))
        }
        .instrument(span);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            handled = handled => handled?,
        }
        metrics::counter!("policy_events_handled_total", "policy" => P::NAME).increment(1);
        // How old the event was when the policy had reacted to it.
        let lag = (Utc::now() - trigger.created).as_seconds_f64().max(0.0);
        metrics::gauge!("policy_lag_seconds", "policy" => P::NAME).set(lag);
    }
}

/// Where a policy that followed `$all` on its own got to: its new group starts after it.
pub async fn checkpoint(pool: &Pool, name: &str) -> Result<Option<u64>, PolicyError> {
    let client = pool.get().await.map_err(database)?;
    let row = client
        .query_opt(
            "SELECT commit_position FROM checkpoints WHERE projection = $1",
            &[&name],
        )
        .await
        .map_err(database)?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

pub fn database(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Database(e.to_string())
}

/// Sends `call` until the command side answers: retried with backoff while it is unavailable,
/// so that a policy never moves past an event whose command was lost. `Ok(None)`: refused for
/// good (the reason is logged), which is an answer too.
pub async fn until_answered<T, F, Fut>(what: &str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = COMMAND_RETRY_FIRST;
    loop {
        match call().await {
            Ok(answer) => return Some(answer),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::NotFound
                        | tonic::Code::InvalidArgument
                        | tonic::Code::AlreadyExists
                ) =>
            {
                tracing::info!(what, reason = status.message(), "refused; nothing to do");
                return None;
            }
            Err(status) => {
                tracing::warn!(what, error = %status, "command failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(COMMAND_RETRY_LONGEST);
            }
        }
    }
}

/// The pause before a command is sent again, doubling up to the longest: soon after a blip,
/// and no more than a few calls a minute at a command side that is down.
const COMMAND_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const COMMAND_RETRY_LONGEST: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a policy's command may take before it is given up and sent again: a command
/// side that stalls (a paused machine) must not hold the policy up for longer.
pub const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A gRPC request carrying the chain's correlation id and what caused it, with a deadline.
pub fn request<T>(message: T, correlation: Uuid, causation: Uuid) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(COMMAND_DEADLINE);
    if let Ok(value) = correlation.to_string().parse() {
        request.metadata_mut().insert("x-correlation-id", value);
    }
    if let Ok(value) = causation.to_string().parse() {
        request.metadata_mut().insert("x-causation-id", value);
    }
    request
}

/// A policy's reaction to one event, in the trace of the request that wrote the event (its
/// metadata's `$traceId`/`$spanId`): the commands it sends continue that trace.
pub fn reaction_span(policy: &str, trigger: &Trigger, stream: &str) -> tracing::Span {
    let event_type = trigger.event.event_type();
    let span = tracing::info_span!(
        "policy",
        otel.name = %format_args!("{policy} {event_type}"),
        otel.kind = "consumer",
        policy,
        db.kurrentdb.stream = %stream,
        event_type,
        position = trigger.position,
    );
    if let Some(Metadata {
        trace_id: Some(trace_id),
        span_id: Some(span_id),
        ..
    }) = &trigger.metadata
    {
        lifecycle::telemetry::follow(&span, trace_id, span_id);
    }
    span
}
