//! What every policy does alike: follow `$all` from its own checkpoint, filtered on the server
//! to the events it reacts to, and move the checkpoint past an event in the same transaction as
//! the state its reaction wrote, once its commands were answered.

use std::future::Future;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use events::{Event, Metadata};
use kurrentdb::{
    Position, StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};
use tokio_postgres::Transaction;
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
    /// Its checkpoint's name.
    const NAME: &'static str;
    /// The event types it reacts to.
    const EVENT_TYPES: &'static [&'static str];

    /// Reacts to one event: commands first (idempotent), then its own state in `tx`.
    fn react<'a>(
        &'a self,
        trigger: &'a Trigger,
        tx: &'a Transaction<'a>,
    ) -> impl Future<Output = Result<(), PolicyError>> + Send + 'a;
}

/// Runs `policy` until `shutdown` (between two events) or a failure.
pub async fn follow<P: Policy>(
    policy: &P,
    events: &kurrentdb::Client,
    pool: &Pool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PolicyError> {
    tokio::pin!(shutdown);
    let start = match checkpoint(pool, P::NAME).await? {
        Some(p) => StreamPosition::Position(Position {
            commit: p,
            prepare: p,
        }),
        None => StreamPosition::Start,
    };
    let filter =
        SubscriptionFilter::on_event_type().regex(format!("^({})$", P::EVENT_TYPES.join("|")));
    let mut subscription = events
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(start)
                .filter(filter),
        )
        .await;
    let mut reported = false;
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            next = subscription.next_subscription_event() => next,
        };
        if next.is_ok() && !reported {
            // The event store answers (PostgreSQL did, for the checkpoint).
            lifecycle::mark_ready(P::NAME, true);
            reported = true;
        }
        let event = match next {
            Ok(SubscriptionEvent::EventAppeared(event)) => event,
            Ok(_) => continue,
            Err(e) => return Err(PolicyError::EventStore(e.to_string())),
        };
        let recorded = event.get_original_event();
        let metadata = serde_json::from_slice::<Metadata>(&recorded.custom_metadata).ok();
        let version = metadata
            .as_ref()
            .map_or(events::SCHEMA_VERSION, |m| m.schema_version);
        let mut client = pool.get().await.map_err(database)?;
        let tx = client.transaction().await.map_err(database)?;
        // Personal data is not needed to react, so nothing is unsealed here.
        match events::decode(&recorded.event_type, version, &recorded.data, None) {
            Ok(event) => {
                let trigger = Trigger {
                    event,
                    id: recorded.id,
                    position: recorded.position.commit,
                    created: recorded.created,
                    metadata,
                };
                policy.react(&trigger, &tx).await?;
            }
            Err(e) => tracing::error!(
                policy = P::NAME,
                position = recorded.position.commit,
                error = %e,
                "cannot read an event; passed over"
            ),
        }
        tx.execute(
            "INSERT INTO checkpoints (projection, commit_position) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE SET commit_position = excluded.commit_position",
            &[&P::NAME, &(recorded.position.commit as i64)],
        )
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
    }
}

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
    let mut backoff = std::time::Duration::from_millis(100);
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
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

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
