//! The messages read model: what was sent to whom. Idempotent per event, like the dashboard.

use crate::params;
use crate::statements::Statements;
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use events::Event;

use crate::Applied;

/// What a batch's events change, in log order.
pub fn apply_all(out: &mut Statements, events: &[Applied<'_>]) {
    for applied in events {
        apply(out, applied);
    }
}

fn apply(out: &mut Statements, applied: &Applied<'_>) {
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
        Event::Customer(CustomerEvent::CustomerForgotten { customer_id }) => {
            out.push(
                "UPDATE messages SET recipient = NULL, text = NULL, personal_erased = true
                 WHERE customer_id = $1",
                params![customer_id.uuid()],
            );
        }
        Event::Reservation(_) | Event::Payment(_) | Event::Paymethod(_) => {}
    }
}
