//! NotifyCustomer: every step of DOMAIN.md's list becomes a message to the customer
//! (`MessageService.SendMessage`, with the event type as its cause).
//!
//! Events name a reservation, payment or payment method, not always the customer, so the policy
//! remembers which customer each belongs to. A payment is approved before its reservation is
//! recorded: the approval is told once the reservation (and so the customer) is known.

use access::client::AuthorizedChannel;
use chrono::NaiveDate;
use command_side::proto::message_service_client::MessageServiceClient;
use command_side::proto::SendMessageRequest;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::ReservationEvent;
use domain::{CustomerId, Money, ReservationId};
use events::Event;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::follow::{database, request, until_answered, Policy, Trigger};
use crate::PolicyError;

pub struct NotifyCustomer {
    pub messages: MessageServiceClient<AuthorizedChannel>,
}

/// A message to send: to whom, about what, why, and for which request.
struct Note {
    customer: Uuid,
    reservation: Option<Uuid>,
    text: String,
    cause: &'static str,
    /// The event being told: the request id derives from it (exactly once).
    event: Uuid,
    correlation: Uuid,
}

impl Policy for NotifyCustomer {
    const NAME: &'static str = "policy:notify-customer";
    const EVENT_TYPES: &'static [&'static str] = &[
        "CleaningRequested",
        "PaymentApproved",
        "PaymentCancelled",
        "CleaningStarted",
        "CleaningCompleted",
        "ReservationCancelled",
        "PaymethodRegistered",
        "PaymethodChanged",
    ];

    async fn react<'a>(
        &'a self,
        t: &'a Trigger,
        tx: &'a Transaction<'a>,
    ) -> Result<(), PolicyError> {
        let note = |customer: Uuid, reservation: Option<Uuid>, text: String, cause| Note {
            customer,
            reservation,
            text,
            cause,
            event: t.id,
            correlation: t.correlation_id(),
        };
        match &t.event {
            Event::Reservation(ReservationEvent::CleaningRequested(r)) => {
                tx.execute(
                    "INSERT INTO notify_reservations (reservation_id, customer_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&r.reservation_id.uuid(), &r.customer_id.uuid()],
                )
                .await
                .map_err(database)?;
                self.tell_approval(
                    tx,
                    r.payment_id.uuid(),
                    Some((r.customer_id, r.request_date)),
                )
                .await?;
            }
            Event::Payment(PaymentEvent::PaymentApproved {
                payment_id,
                reservation_id,
                amount,
                ..
            }) => {
                tx.execute(
                    "INSERT INTO notify_payments (payment_id, reservation_id, amount_cents, approved_event, correlation_id)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&payment_id.uuid(), &reservation_id.uuid(), &(amount.cents() as i64), &t.id, &t.correlation_id()],
                )
                .await
                .map_err(database)?;
                self.tell_approval(tx, payment_id.uuid(), None).await?;
            }
            Event::Payment(PaymentEvent::PaymentCancelled {
                reservation_id,
                amount,
                ..
            }) => {
                if let Some(customer) = customer_of_reservation(tx, *reservation_id).await? {
                    let text = format!("Your payment of {} was refunded.", money(*amount));
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        "PaymentCancelled",
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::CleaningStarted { reservation_id, .. }) => {
                if let Some(customer) = customer_of_reservation(tx, *reservation_id).await? {
                    let text = "Your cleaning has started.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        "CleaningStarted",
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
                if let Some(customer) = customer_of_reservation(tx, *reservation_id).await? {
                    let text = "Your cleaning is complete.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        "CleaningCompleted",
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::ReservationCancelled {
                reservation_id, ..
            }) => {
                if let Some(customer) = customer_of_reservation(tx, *reservation_id).await? {
                    let text =
                        "Your reservation was cancelled; its payment will be refunded.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        "ReservationCancelled",
                    ))
                    .await;
                }
            }
            Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                paymethod_id,
                customer_id,
                kind,
                masked_number,
                ..
            }) => {
                tx.execute(
                    "INSERT INTO notify_paymethods (paymethod_id, customer_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&paymethod_id.uuid(), &customer_id.uuid()],
                )
                .await
                .map_err(database)?;
                let text = format!(
                    "Your {} {} was registered.",
                    kind.as_str().replace('_', " "),
                    masked_number.as_str()
                );
                self.send(note(customer_id.uuid(), None, text, "PaymethodRegistered"))
                    .await;
            }
            Event::Paymethod(PaymethodEvent::PaymethodChanged {
                paymethod_id,
                kind,
                masked_number,
            }) => {
                let customer = tx
                    .query_opt(
                        "SELECT customer_id FROM notify_paymethods WHERE paymethod_id = $1",
                        &[&paymethod_id.uuid()],
                    )
                    .await
                    .map_err(database)?
                    .map(|r| r.get::<_, Uuid>(0));
                if let Some(customer) = customer {
                    let text = format!(
                        "Your payment method is now {} {}.",
                        kind.as_str().replace('_', " "),
                        masked_number.as_str()
                    );
                    self.send(note(customer, None, text, "PaymethodChanged"))
                        .await;
                }
            }
            Event::Payment(PaymentEvent::PaymentDeclined { .. })
            | Event::Message(MessageEvent::MessageSent { .. })
            | Event::Customer(_) => {}
        }
        Ok(())
    }
}

impl NotifyCustomer {
    /// Tells a payment's approval once both the approval and the reservation are known, then
    /// forgets that it is pending.
    async fn tell_approval(
        &self,
        tx: &Transaction<'_>,
        payment_id: Uuid,
        known: Option<(CustomerId, NaiveDate)>,
    ) -> Result<(), PolicyError> {
        let Some(row) = tx
            .query_opt(
                "SELECT p.reservation_id, p.amount_cents, p.approved_event, p.correlation_id, r.customer_id
                 FROM notify_payments p JOIN notify_reservations r USING (reservation_id)
                 WHERE p.payment_id = $1 AND p.approved_event IS NOT NULL",
                &[&payment_id],
            )
            .await
            .map_err(database)?
        else {
            return Ok(());
        };
        let amount = Money::from_stored_cents(row.get::<_, i64>(1) as u64);
        let text = match known {
            Some((_, date)) => format!(
                "Your payment of {} for the cleaning on {date} was approved.",
                money(amount)
            ),
            None => format!("Your payment of {} was approved.", money(amount)),
        };
        let event: Uuid = row.get(2);
        self.send(Note {
            customer: row.get(4),
            reservation: Some(row.get(0)),
            text,
            cause: "PaymentApproved",
            event,
            correlation: row.get::<_, Option<Uuid>>(3).unwrap_or(event),
        })
        .await;
        tx.execute(
            "UPDATE notify_payments SET approved_event = NULL WHERE payment_id = $1",
            &[&payment_id],
        )
        .await
        .map_err(database)?;
        Ok(())
    }

    /// Sends until the command side answers; a refusal (a forgotten customer) is an answer.
    async fn send(&self, note: Note) {
        let message = SendMessageRequest {
            request_id: Uuid::new_v5(&note.event, b"notify").to_string(),
            customer_id: note.customer.to_string(),
            // Messages go to the customer's in-app inbox.
            recipient: format!("inbox:{}", note.customer),
            reservation_id: note.reservation.map(|r| r.to_string()).unwrap_or_default(),
            text: note.text,
            cause: note.cause.to_string(),
        };
        until_answered("notify the customer", || {
            let request = request(message.clone(), note.correlation, note.event);
            let mut messages = self.messages.clone();
            async move { messages.send_message(request).await }
        })
        .await;
    }
}

async fn customer_of_reservation(
    tx: &Transaction<'_>,
    reservation_id: ReservationId,
) -> Result<Option<Uuid>, PolicyError> {
    let row = tx
        .query_opt(
            "SELECT customer_id FROM notify_reservations WHERE reservation_id = $1",
            &[&reservation_id.uuid()],
        )
        .await
        .map_err(database)?;
    if row.is_none() {
        tracing::warn!(%reservation_id, "no customer known for this reservation; not notified");
    }
    Ok(row.map(|r| r.get(0)))
}

fn money(amount: Money) -> String {
    format!("{}.{:02}", amount.cents() / 100, amount.cents() % 100)
}
