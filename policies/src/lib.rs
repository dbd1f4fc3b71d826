//! The process managers: events that cause commands.
//!
//! Each policy follows `$all` (filtered on the server to the events it reacts to) from its own
//! checkpoint, and acts through the command side's gRPC API, so that the same rules, checks and
//! idempotency apply as for any client. Acting exactly once rests on two facts: the request id
//! of each command derives from the triggering event's id (a repeat returns the original
//! result), and the checkpoint only moves past an event once its command has been answered.
//! Commands carry the triggering event's correlation id, and the event itself as their cause.

use std::future::Future;
use std::time::Duration;

use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::CancelPaymentRequest;
use deadpool_postgres::Pool;
use domain::reservation::ReservationEvent;
use events::{Event, Metadata};
use kurrentdb::{
    Position, ReadStreamOptions, StreamPosition, SubscribeToAllOptions, SubscriptionEvent,
    SubscriptionFilter,
};
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("event store: {0}")]
    EventStore(String),
    #[error("database: {0}")]
    Database(String),
}

/// ReservationCancelled -> cancel (refund) its payment.
pub struct RefundOnCancel {
    pub events: kurrentdb::Client,
    pub payments: PaymentServiceClient<Channel>,
    pub pool: Pool,
}

/// The checkpoint name of the refund policy.
pub const REFUND_ON_CANCEL: &str = "policy:refund-on-cancel";

impl RefundOnCancel {
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), PolicyError> {
        tokio::pin!(shutdown);
        let start = match checkpoint(&self.pool, REFUND_ON_CANCEL).await? {
            Some(p) => StreamPosition::Position(Position {
                commit: p,
                prepare: p,
            }),
            None => StreamPosition::Start,
        };
        let filter = SubscriptionFilter::on_event_type().regex("^ReservationCancelled$");
        let mut subscription = self
            .events
            .subscribe_to_all(
                &SubscribeToAllOptions::default()
                    .position(start)
                    .filter(filter),
            )
            .await;
        loop {
            let next = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                next = subscription.next_subscription_event() => next,
            };
            let event = match next {
                Ok(SubscriptionEvent::EventAppeared(event)) => event,
                Ok(_) => continue,
                Err(e) => return Err(PolicyError::EventStore(e.to_string())),
            };
            let recorded = event.get_original_event();
            let metadata = serde_json::from_slice::<Metadata>(&recorded.custom_metadata).ok();
            let decoded = events::decode(
                &recorded.event_type,
                metadata.map_or(events::SCHEMA_VERSION, |m| m.schema_version),
                &recorded.data,
                None,
            );
            if let Ok(Event::Reservation(ReservationEvent::ReservationCancelled {
                reservation_id,
                ..
            })) = decoded
            {
                self.refund(reservation_id, recorded.id, metadata).await?;
            } else {
                tracing::error!(
                    position = recorded.position.commit,
                    "unreadable ReservationCancelled; skipped"
                );
            }
            save_checkpoint(&self.pool, REFUND_ON_CANCEL, recorded.position.commit).await?;
        }
    }

    /// Asks for the refund until the payment service has answered (retrying while it is down).
    async fn refund(
        &self,
        reservation_id: domain::ReservationId,
        cause: Uuid,
        metadata: Option<Metadata>,
    ) -> Result<(), PolicyError> {
        let Some(payment_id) = self.payment_of(reservation_id).await? else {
            tracing::error!(%reservation_id, "cancelled reservation without a recorded request");
            return Ok(());
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut request = tonic::Request::new(CancelPaymentRequest {
                request_id: Uuid::new_v5(&cause, b"refund").to_string(),
                payment_id: payment_id.to_string(),
            });
            let correlation = metadata.map_or(cause, |m| m.correlation_id);
            if let Ok(value) = correlation.to_string().parse() {
                request.metadata_mut().insert("x-correlation-id", value);
            }
            if let Ok(value) = cause.to_string().parse() {
                request.metadata_mut().insert("x-causation-id", value);
            }
            match self.payments.clone().cancel_payment(request).await {
                Ok(_) => return Ok(()),
                // Already refunded, or never approved: nothing (more) to do.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::NotFound
                    ) =>
                {
                    tracing::info!(%payment_id, reason = status.message(), "no refund needed");
                    return Ok(());
                }
                Err(status) => {
                    tracing::warn!(%payment_id, error = %status, "refund failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The payment of a reservation, from its first event.
    async fn payment_of(
        &self,
        reservation_id: domain::ReservationId,
    ) -> Result<Option<domain::PaymentId>, PolicyError> {
        let stream = events::streams::reservation(reservation_id);
        let mut read = match self
            .events
            .read_stream(stream.as_str(), &ReadStreamOptions::default().max_count(1))
            .await
        {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(None),
            Err(e) => return Err(PolicyError::EventStore(e.to_string())),
        };
        let Some(first) = read
            .next()
            .await
            .map_err(|e| PolicyError::EventStore(e.to_string()))?
        else {
            return Ok(None);
        };
        let recorded = first.get_original_event();
        Ok(
            match events::decode(
                &recorded.event_type,
                events::SCHEMA_VERSION,
                &recorded.data,
                None,
            ) {
                Ok(Event::Reservation(ReservationEvent::CleaningRequested(requested))) => {
                    Some(requested.payment_id)
                }
                _ => None,
            },
        )
    }
}

async fn checkpoint(pool: &Pool, name: &str) -> Result<Option<u64>, PolicyError> {
    let client = pool
        .get()
        .await
        .map_err(|e| PolicyError::Database(e.to_string()))?;
    let row = client
        .query_opt(
            "SELECT commit_position FROM checkpoints WHERE projection = $1",
            &[&name],
        )
        .await
        .map_err(|e| PolicyError::Database(e.to_string()))?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

async fn save_checkpoint(pool: &Pool, name: &str, position: u64) -> Result<(), PolicyError> {
    let client = pool
        .get()
        .await
        .map_err(|e| PolicyError::Database(e.to_string()))?;
    client
        .execute(
            "INSERT INTO checkpoints (projection, commit_position) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE SET commit_position = excluded.commit_position",
            &[&name, &(position as i64)],
        )
        .await
        .map_err(|e| PolicyError::Database(e.to_string()))?;
    Ok(())
}
