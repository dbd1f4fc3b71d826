//! RefundOrphanedPayments: a payment approved whose reservation was never recorded (the command
//! side stopped between the two) is found and refunded.
//!
//! The policy notes every approval and strikes it off when its reservation is recorded; a sweep
//! refunds what stays noted longer than `orphan_after`, after checking the event store that the
//! reservation really does not exist.
//!
//! A reservation may still land after that check (a client retrying at that very moment): the
//! sweep notes each refund before making it and checks again after, and a reservation recorded
//! on a refunded payment is cancelled, by whichever of the two sees it first (with one request
//! id, so once). The saga ends consistent either way: no reservation stands on refunded money.

use std::future::Future;
use std::time::Duration;

use access::client::AuthorizedChannel;
use api_contract::payment_service_client::PaymentServiceClient;
use api_contract::reservation_service_client::ReservationServiceClient;
use api_contract::{CancelPaymentRequest, CancelReservationRequest};
use deadpool_postgres::Pool;
use domain::payment::PaymentEvent;
use domain::reservation::ReservationEvent;
use events::{Event, EventType};
use kurrentdb::ReadStreamOptions;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::consumer::{consume, database, request, until_answered, Policy, Trigger};
use crate::PolicyError;

#[derive(Clone)]
pub struct RefundOrphanedPayments {
    pub events: kurrentdb::Client,
    pub payments: PaymentServiceClient<AuthorizedChannel>,
    /// To cancel a reservation recorded on a payment already refunded.
    pub reservations: ReservationServiceClient<AuthorizedChannel>,
    pub pool: Pool,
    /// How long an approval may wait for its reservation: far longer than a command takes.
    pub orphan_after: Duration,
}

impl Policy for RefundOrphanedPayments {
    const NAME: &'static str = "policy:refund-orphaned-payments";
    const EVENT_TYPES: &'static [EventType] =
        &[EventType::PaymentApproved, EventType::CleaningRequested];

    async fn react<'a>(
        &'a self,
        t: &'a Trigger,
        tx: &'a Transaction<'a>,
    ) -> Result<(), PolicyError> {
        match &t.event {
            Event::Payment(PaymentEvent::PaymentApproved {
                payment_id,
                reservation_id,
                ..
            }) => {
                tx.execute(
                    "INSERT INTO orphan_candidates (payment_id, reservation_id, approved_at, approved_event, correlation_id)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&payment_id.uuid(), &reservation_id.uuid(), &t.created, &t.id, &t.correlation_id()],
                )
                .await
                .map_err(database)?;
            }
            Event::Reservation(ReservationEvent::CleaningRequested(r)) => {
                tx.execute(
                    "DELETE FROM orphan_candidates WHERE payment_id = $1",
                    &[&r.payment_id.uuid()],
                )
                .await
                .map_err(database)?;
                let refunded = tx
                    .query_opt(
                        "SELECT 1 FROM orphan_refunds WHERE payment_id = $1",
                        &[&r.payment_id.uuid()],
                    )
                    .await
                    .map_err(database)?
                    .is_some();
                if refunded {
                    self.cancel_reservation(
                        r.payment_id.uuid(),
                        r.reservation_id.uuid(),
                        t.correlation_id(),
                        t.id,
                    )
                    .await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl RefundOrphanedPayments {
    /// Takes its share of the events and sweeps, until `shutdown`. Every replica sweeps: two
    /// refunding the same payment send the same request, which is refunded once.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), PolicyError> {
        tokio::pin!(shutdown);
        let sweep_every = (self.orphan_after / 2).max(Duration::from_millis(200));
        let sweeping = async {
            loop {
                tokio::time::sleep(sweep_every).await;
                self.sweep().await?;
            }
        };
        tokio::select! {
            result = consume(self, &self.events, &self.pool, &mut shutdown) => result,
            result = sweeping => result,
        }
    }

    /// Refunds every approval older than `orphan_after` whose reservation does not exist.
    pub async fn sweep(&self) -> Result<(), PolicyError> {
        let client = self.pool.get().await.map_err(database)?;
        let rows = client
            .query(
                "SELECT payment_id, reservation_id, approved_event, correlation_id
                 FROM orphan_candidates
                 WHERE approved_at < now() - make_interval(secs => $1)
                 ORDER BY approved_at LIMIT 100",
                &[&self.orphan_after.as_secs_f64()],
            )
            .await
            .map_err(database)?;
        for row in rows {
            let (payment_id, reservation_id, approved_event): (Uuid, Uuid, Uuid) =
                (row.get(0), row.get(1), row.get(2));
            let correlation: Uuid = row.get::<_, Option<Uuid>>(3).unwrap_or(approved_event);
            if self.reservation_exists(reservation_id).await? {
                // Recorded after all; the subscription will strike it off too.
            } else {
                tracing::warn!(%payment_id, %reservation_id, "orphaned payment; refunding");
                // Noted before it is made: a reservation landing from now on is cancelled.
                client
                    .execute(
                        "INSERT INTO orphan_refunds (payment_id, reservation_id) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&payment_id, &reservation_id],
                    )
                    .await
                    .map_err(database)?;
                let cancel = CancelPaymentRequest {
                    request_id: Uuid::new_v5(&approved_event, b"orphan-refund").to_string(),
                    payment_id: payment_id.to_string(),
                };
                until_answered("refund an orphaned payment", || {
                    let request = request(cancel.clone(), correlation, approved_event);
                    let mut payments = self.payments.clone();
                    async move { payments.cancel_payment(request).await }
                })
                .await;
                metrics::counter!("policy_orphaned_payments_refunded_total").increment(1);
                // One that landed between the check and the refund.
                if self.reservation_exists(reservation_id).await? {
                    self.cancel_reservation(
                        payment_id,
                        reservation_id,
                        correlation,
                        approved_event,
                    )
                    .await;
                }
            }
            client
                .execute(
                    "DELETE FROM orphan_candidates WHERE payment_id = $1",
                    &[&payment_id],
                )
                .await
                .map_err(database)?;
        }
        Ok(())
    }

    /// Cancels a reservation recorded on a refunded payment; the same request whoever asks.
    async fn cancel_reservation(
        &self,
        payment_id: Uuid,
        reservation_id: Uuid,
        correlation: Uuid,
        cause: Uuid,
    ) {
        tracing::warn!(%payment_id, %reservation_id, "reservation recorded on a refunded payment; cancelling it");
        let cancel = CancelReservationRequest {
            request_id: Uuid::new_v5(&payment_id, b"cancel-on-refunded-payment").to_string(),
            reservation_id: reservation_id.to_string(),
            reason: "its payment was refunded before the reservation was recorded".into(),
        };
        until_answered("cancel a reservation on a refunded payment", || {
            let request = request(cancel.clone(), correlation, cause);
            let mut reservations = self.reservations.clone();
            async move { reservations.cancel_reservation(request).await }
        })
        .await;
    }

    async fn reservation_exists(&self, reservation_id: Uuid) -> Result<bool, PolicyError> {
        let stream = events::streams::reservation(domain::ReservationId::from(reservation_id));
        match self
            .events
            .read_stream(stream.as_str(), &ReadStreamOptions::default().max_count(1))
            .await
        {
            Ok(mut read) => match read.next().await {
                Ok(first) => Ok(first.is_some()),
                Err(kurrentdb::Error::ResourceNotFound) => Ok(false),
                Err(e) => Err(PolicyError::EventStore(e.to_string())),
            },
            Err(kurrentdb::Error::ResourceNotFound) => Ok(false),
            Err(e) => Err(PolicyError::EventStore(e.to_string())),
        }
    }
}
