//! NotifyCustomer: every step of DOMAIN.md's list becomes a message to the customer
//! (`MessageService.SendMessage`, with the event type as its cause).
//!
//! Events name a reservation, payment or payment method, not always the customer: the customer
//! is read from the first event of that reservation or payment method in the event store,
//! which is there before anything that follows from it. A payment is approved before its
//! reservation is recorded, so the approval is told when the reservation is: its message is
//! the approval's (its request id derives from the approval event), whoever sends it.

use access::client::AuthorizedChannel;
use api_contract::message_service_client::MessageServiceClient;
use api_contract::SendMessageRequest;
use chrono::NaiveDate;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::ReservationEvent;
use domain::{CustomerId, Money, ReservationId};
use events::{Event, EventType};
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::consumer::{request, until_answered, Policy, Trigger};
use crate::store;
use crate::PolicyError;

#[derive(Clone)]
pub struct NotifyCustomer {
    pub events: kurrentdb::Client,
    pub messages: MessageServiceClient<AuthorizedChannel>,
}

/// A message to send: to whom, about what, why, and for which request.
struct Note {
    customer: Uuid,
    reservation: Option<Uuid>,
    text: String,
    cause: EventType,
    /// The event being told: the request id derives from it (exactly once).
    event: Uuid,
    correlation: Uuid,
}

impl Policy for NotifyCustomer {
    const NAME: &'static str = "policy:notify-customer";
    const EVENT_TYPES: &'static [EventType] = &[
        EventType::CleaningRequested,
        EventType::PaymentApproved,
        EventType::PaymentCancelled,
        EventType::CleaningStarted,
        EventType::CleaningCompleted,
        EventType::ReservationCancelled,
        EventType::PaymethodRegistered,
        EventType::PaymethodChanged,
    ];

    async fn react<'a>(
        &'a self,
        t: &'a Trigger,
        _tx: &'a Transaction<'a>,
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
                self.tell_approval(r.payment_id, r.customer_id, r.request_date)
                    .await?;
            }
            Event::Payment(PaymentEvent::PaymentCancelled {
                reservation_id,
                amount,
                ..
            }) => {
                if let Some(customer) = self.customer_of_reservation(*reservation_id).await? {
                    let text = format!("Your payment of {} was refunded.", money(*amount));
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        EventType::PaymentCancelled,
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::CleaningStarted { reservation_id, .. }) => {
                if let Some(customer) = self.customer_of_reservation(*reservation_id).await? {
                    let text = "Your cleaning has started.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        EventType::CleaningStarted,
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
                if let Some(customer) = self.customer_of_reservation(*reservation_id).await? {
                    let text = "Your cleaning is complete.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        EventType::CleaningCompleted,
                    ))
                    .await;
                }
            }
            Event::Reservation(ReservationEvent::ReservationCancelled {
                reservation_id, ..
            }) => {
                if let Some(customer) = self.customer_of_reservation(*reservation_id).await? {
                    let text =
                        "Your reservation was cancelled; its payment will be refunded.".to_string();
                    self.send(note(
                        customer,
                        Some(reservation_id.uuid()),
                        text,
                        EventType::ReservationCancelled,
                    ))
                    .await;
                }
            }
            Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                customer_id,
                kind,
                masked_number,
                ..
            }) => {
                let text = format!(
                    "Your {} {} was registered.",
                    kind.as_str().replace('_', " "),
                    masked_number.as_str()
                );
                self.send(note(
                    customer_id.uuid(),
                    None,
                    text,
                    EventType::PaymethodRegistered,
                ))
                .await;
            }
            Event::Paymethod(PaymethodEvent::PaymethodChanged {
                paymethod_id,
                kind,
                masked_number,
            }) => {
                let stream = events::streams::paymethod(*paymethod_id);
                let customer = match store::first(&self.events, &stream).await? {
                    Some(store::Stored {
                        event:
                            Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                                customer_id, ..
                            }),
                        ..
                    }) => Some(customer_id.uuid()),
                    _ => None,
                };
                if let Some(customer) = customer {
                    let text = format!(
                        "Your payment method is now {} {}.",
                        kind.as_str().replace('_', " "),
                        masked_number.as_str()
                    );
                    self.send(note(customer, None, text, EventType::PaymethodChanged))
                        .await;
                }
            }
            // Told with its reservation, which always comes after it.
            Event::Payment(PaymentEvent::PaymentApproved { .. })
            | Event::Payment(PaymentEvent::PaymentDeclined { .. })
            | Event::Message(MessageEvent::MessageSent { .. })
            | Event::Customer(_) => {}
        }
        Ok(())
    }
}

impl NotifyCustomer {
    /// Tells a payment's approval, from the payment's own stream, once its reservation is.
    async fn tell_approval(
        &self,
        payment_id: domain::PaymentId,
        customer: CustomerId,
        date: NaiveDate,
    ) -> Result<(), PolicyError> {
        let stream = events::streams::payment(payment_id);
        let approval = store::read(&self.events, &stream, 16)
            .await?
            .into_iter()
            .find_map(|stored| match &stored.event {
                Event::Payment(PaymentEvent::PaymentApproved {
                    reservation_id,
                    amount,
                    ..
                }) => Some((stored.id, stored.correlation_id(), *reservation_id, *amount)),
                _ => None,
            });
        let Some((event, correlation, reservation, amount)) = approval else {
            return Ok(());
        };
        self.send(Note {
            customer: customer.uuid(),
            reservation: Some(reservation.uuid()),
            text: format!(
                "Your payment of {} for the cleaning on {date} was approved.",
                money(amount)
            ),
            cause: EventType::PaymentApproved,
            event,
            correlation,
        })
        .await;
        Ok(())
    }

    /// A reservation's customer, from its first event.
    async fn customer_of_reservation(
        &self,
        reservation_id: ReservationId,
    ) -> Result<Option<Uuid>, PolicyError> {
        let stream = events::streams::reservation(reservation_id);
        let customer = match store::first(&self.events, &stream).await? {
            Some(store::Stored {
                event: Event::Reservation(ReservationEvent::CleaningRequested(r)),
                ..
            }) => Some(r.customer_id.uuid()),
            _ => None,
        };
        if customer.is_none() {
            tracing::warn!(%reservation_id, "no reservation recorded under this id; not notified");
        }
        Ok(customer)
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

fn money(amount: Money) -> String {
    format!("{}.{:02}", amount.cents() / 100, amount.cents() % 100)
}
