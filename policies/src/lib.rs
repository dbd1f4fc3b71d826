//! The process managers of DOMAIN.md: events that cause commands.
//!
//! Each policy is a consumer group of the event store ([`consumer`]): a persistent subscription
//! to `$all`, filtered on the server to the events it reacts to, shared by every replica of
//! `policies`. It acts through the command side's gRPC API, so that the same rules, checks and
//! idempotency apply as for any client. Acting exactly once rests on two facts: the request id
//! of each command derives from the triggering event's id (a repeat returns the original
//! result), and an event is acknowledged only once its commands were answered and the policy's
//! own state committed; one not acknowledged is handed out again. What an event does not say
//! (whose reservation it is) is read from the event store ([`store`]), never from a replica's
//! memory, so that the order in which replicas handle neighbouring events does not matter.
//! Commands carry the triggering event's correlation id, and the event itself as their cause.
//!
//! - [`RefundOnCancel`]: ReservationCancelled -> cancel (refund) its payment.
//! - [`NotifyCustomer`]: every step a customer hears about -> a message.
//! - [`RefundOrphanedPayments`]: an approved payment without a reservation -> refund.

pub mod consumer;
mod notify;
mod orphans;
pub mod store;

use access::client::AuthorizedChannel;
use api_contract::payment_service_client::PaymentServiceClient;
use api_contract::CancelPaymentRequest;
use domain::reservation::ReservationEvent;
use events::{Event, EventType};
use tokio_postgres::Transaction;
use uuid::Uuid;

pub use consumer::{consume, Policy, Trigger};
pub use notify::NotifyCustomer;
pub use orphans::RefundOrphanedPayments;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("event store: {0}")]
    EventStore(String),
    #[error("database: {0}")]
    Database(String),
}

/// ReservationCancelled -> cancel (refund) its payment.
#[derive(Clone)]
pub struct RefundOnCancel {
    pub events: kurrentdb::Client,
    pub payments: PaymentServiceClient<AuthorizedChannel>,
}

/// The checkpoint name of the refund policy.
pub const REFUND_ON_CANCEL: &str = "policy:refund-on-cancel";

impl Policy for RefundOnCancel {
    const NAME: &'static str = REFUND_ON_CANCEL;
    const EVENT_TYPES: &'static [EventType] = &[EventType::ReservationCancelled];

    async fn react<'a>(
        &'a self,
        t: &'a Trigger,
        _tx: &'a Transaction<'a>,
    ) -> Result<(), PolicyError> {
        let Event::Reservation(ReservationEvent::ReservationCancelled { reservation_id, .. }) =
            &t.event
        else {
            return Ok(());
        };
        let Some(payment_id) = self.payment_of(*reservation_id).await? else {
            tracing::error!(%reservation_id, "cancelled reservation without a recorded request");
            return Ok(());
        };
        let cancel = CancelPaymentRequest {
            request_id: Uuid::new_v5(&t.id, b"refund").to_string(),
            payment_id: payment_id.to_string(),
        };
        // Already refunded, or never approved, is an answer too: nothing (more) to do.
        consumer::until_answered("refund a cancelled reservation", || {
            let request = consumer::request(cancel.clone(), t.correlation_id(), t.id);
            let mut payments = self.payments.clone();
            async move { payments.cancel_payment(request).await }
        })
        .await;
        Ok(())
    }
}

impl RefundOnCancel {
    /// The payment of a reservation, from its first event.
    async fn payment_of(
        &self,
        reservation_id: domain::ReservationId,
    ) -> Result<Option<domain::PaymentId>, PolicyError> {
        let stream = events::streams::reservation(reservation_id);
        Ok(match store::first(&self.events, &stream).await? {
            Some(store::Stored {
                event: Event::Reservation(ReservationEvent::CleaningRequested(requested)),
                ..
            }) => Some(requested.payment_id),
            _ => None,
        })
    }
}
