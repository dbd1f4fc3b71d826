//! The dashboard read model: what each event changes in the `dashboard` and `payments` tables.
//! Every statement is idempotent for a given event, and rows remember the last position applied,
//! so replaying a batch after a crash changes nothing twice.

use crate::params;
use crate::statements::Statements;
use chrono::{DateTime, Utc};
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::reservation::ReservationEvent;
use events::Event;

/// One event with where and when it was written, and what caused it.
pub struct Applied<'a> {
    pub event: &'a Event,
    pub stream: &'a str,
    pub position: i64,
    pub created: DateTime<Utc>,
    pub metadata: Option<&'a events::Metadata>,
}

pub fn apply(out: &mut Statements, applied: &Applied<'_>) {
    let (p, at) = (applied.position, applied.created);
    match applied.event {
        Event::Reservation(ReservationEvent::CleaningRequested(r)) => {
            out.push(
                "INSERT INTO dashboard (reservation_id, customer_id, customer_name, place, personal_erased,
                     request_date, price_cents, status, payment_id, payment_kind, payment_status,
                     requested_at, updated_at, last_position, requested_position)
                 SELECT $1, $2, $3, $4, $5, $6, $7, 'requested', $8,
                        coalesce(p.paymethod_kind, 'unknown'), coalesce(p.status, 'pending'), $9, $9, $10, $10
                 FROM (SELECT 1) AS one LEFT JOIN payments p ON p.payment_id = $8
                 ON CONFLICT (reservation_id) DO NOTHING",
                params![r.reservation_id.uuid(), r.customer_id.uuid(), r.customer_name.expose().cloned(), r.place.expose().cloned(), r.customer_name.is_erased() || r.place.is_erased(), r.request_date, r.price.cents() as i64, r.payment_id.uuid(), at, p],
            );
            out.push(
                "UPDATE payments SET customer_id = $2 WHERE payment_id = $1",
                params![r.payment_id.uuid(), r.customer_id.uuid()],
            );
        }
        Event::Reservation(ReservationEvent::CleaningStarted {
            reservation_id,
            cleaner,
        }) => {
            set_status(out, reservation_id.uuid(), "cleaning_started", p, at);
            out.push(
                "UPDATE dashboard SET cleaner = $2 WHERE reservation_id = $1",
                params![reservation_id.uuid(), cleaner.clone()],
            );
        }
        Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
            set_status(out, reservation_id.uuid(), "cleaning_completed", p, at);
        }
        Event::Reservation(ReservationEvent::ReservationCancelled {
            reservation_id,
            reason,
        }) => {
            set_status(out, reservation_id.uuid(), "cancelled", p, at);
            out.push(
                "UPDATE dashboard SET cancel_reason = $2 WHERE reservation_id = $1",
                params![reservation_id.uuid(), reason.clone()],
            );
        }
        Event::Payment(payment) => {
            let (payment_id, reservation_id, amount, kind, status, reason) = match payment {
                PaymentEvent::PaymentApproved {
                    payment_id,
                    reservation_id,
                    amount,
                    paymethod_kind,
                } => (
                    payment_id,
                    reservation_id,
                    amount,
                    paymethod_kind.map(|k| k.as_str()),
                    "approved",
                    None,
                ),
                PaymentEvent::PaymentDeclined {
                    payment_id,
                    reservation_id,
                    amount,
                    reason,
                } => (
                    payment_id,
                    reservation_id,
                    amount,
                    None,
                    "declined",
                    Some(reason.clone()),
                ),
                PaymentEvent::PaymentCancelled {
                    payment_id,
                    reservation_id,
                    amount,
                } => (payment_id, reservation_id, amount, None, "refunded", None),
            };
            out.push(
                "INSERT INTO payments (payment_id, reservation_id, amount_cents, paymethod_kind, status,
                     decline_reason, last_position, first_position, updated_at)
                 VALUES ($1, $2, $3, coalesce($4, 'unknown'), $5, $6, $7, $7, $8)
                 ON CONFLICT (payment_id) DO UPDATE SET
                     status = excluded.status,
                     paymethod_kind = CASE WHEN $4::text IS NULL THEN payments.paymethod_kind ELSE excluded.paymethod_kind END,
                     decline_reason = coalesce(excluded.decline_reason, payments.decline_reason),
                     last_position = excluded.last_position,
                     updated_at = excluded.updated_at
                 WHERE payments.last_position < excluded.last_position",
                params![payment_id.uuid(), reservation_id.uuid(), amount.cents() as i64, kind, status, reason, p, at],
            );
            out.push(
                "UPDATE dashboard SET payment_status = $2,
                     payment_kind = coalesce($3, payment_kind), updated_at = $4, last_position = $5
                 WHERE payment_id = $1 AND last_position < $5",
                params![payment_id.uuid(), status, kind, at, p],
            );
        }
        Event::Message(MessageEvent::MessageSent {
            reservation_id: Some(reservation_id),
            text,
            cause,
            ..
        }) => {
            let note = match text.expose() {
                Some(text) => format!("{cause}: {text}"),
                None => format!("{cause}: (erased)"),
            };
            out.push(
                "UPDATE dashboard SET last_notification = $2, updated_at = $3, last_position = $4
                 WHERE reservation_id = $1 AND last_position < $4",
                params![reservation_id.uuid(), note, at, p],
            );
        }
        Event::Message(MessageEvent::MessageSent {
            reservation_id: None,
            ..
        }) => {}
        Event::Customer(CustomerEvent::CustomerForgotten { customer_id }) => {
            // Existing rows lose the personal data; a rebuild could not bring it back either.
            out.push(
                "UPDATE dashboard SET customer_name = NULL, place = NULL, personal_erased = true,
                     last_notification = CASE WHEN last_notification = 'none' THEN 'none' ELSE '(erased)' END
                 WHERE customer_id = $1",
                params![customer_id.uuid()],
            );
        }
        Event::Paymethod(_) => {}
    }
}

fn set_status(
    out: &mut Statements,
    reservation_id: uuid::Uuid,
    status: &'static str,
    position: i64,
    at: DateTime<Utc>,
) {
    out.push(
        "UPDATE dashboard SET status = $2, updated_at = $3, last_position = $4
         WHERE reservation_id = $1 AND last_position < $4",
        params![reservation_id, status, at, position],
    );
}
