//! The `messages` and `paymethods` read models: what was sent to whom, and the payment methods
//! on file (masked numbers only). Idempotent per event, like the dashboard.

use crate::params;
use crate::statements::Statements;
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::paymethod::PaymethodEvent;
use events::Event;

use crate::dashboard::Applied;

pub fn apply(out: &mut Statements, applied: &Applied<'_>) {
    let (p, at) = (applied.position, applied.created);
    match applied.event {
        Event::Message(MessageEvent::MessageSent {
            message_id,
            customer_id,
            recipient,
            reservation_id,
            text,
            cause,
        }) => {
            out.push(
                "INSERT INTO messages (message_id, customer_id, reservation_id, recipient, text,
                     cause, personal_erased, sent_at, position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (message_id) DO NOTHING",
                params![
                    message_id.uuid(),
                    customer_id.uuid(),
                    reservation_id.map(|r| r.uuid()),
                    recipient.expose().cloned(),
                    text.expose().cloned(),
                    cause.clone(),
                    recipient.is_erased() || text.is_erased(),
                    at,
                    p
                ],
            );
        }
        Event::Paymethod(PaymethodEvent::PaymethodRegistered {
            paymethod_id,
            customer_id,
            customer_name,
            kind,
            masked_number,
        }) => {
            out.push(
                "INSERT INTO paymethods (paymethod_id, customer_id, customer_name, personal_erased,
                     kind, masked_number, registered_at, updated_at, registered_position, last_position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $8)
                 ON CONFLICT (paymethod_id) DO NOTHING",
                params![paymethod_id.uuid(), customer_id.uuid(), customer_name.expose().cloned(), customer_name.is_erased(), kind.as_str(), masked_number.as_str().to_string(), at, p],
            );
        }
        Event::Paymethod(PaymethodEvent::PaymethodChanged {
            paymethod_id,
            kind,
            masked_number,
        }) => {
            out.push(
                "UPDATE paymethods SET kind = $2, masked_number = $3, updated_at = $4, last_position = $5
                 WHERE paymethod_id = $1 AND last_position < $5",
                params![paymethod_id.uuid(), kind.as_str(), masked_number.as_str().to_string(), at, p],
            );
        }
        Event::Customer(CustomerEvent::CustomerForgotten { customer_id }) => {
            out.push(
                "UPDATE messages SET recipient = NULL, text = NULL, personal_erased = true
                 WHERE customer_id = $1",
                params![customer_id.uuid()],
            );
            out.push(
                "UPDATE paymethods SET customer_name = NULL, personal_erased = true
                 WHERE customer_id = $1",
                params![customer_id.uuid()],
            );
        }
        Event::Reservation(_) | Event::Payment(_) => {}
    }
}
