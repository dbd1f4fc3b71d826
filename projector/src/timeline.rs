//! The per-reservation timeline: every event a reservation caused, with its correlation and
//! causation ids, in log order.

use crate::params;
use crate::statements::Statements;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::reservation::ReservationEvent;
use domain::ReservationId;
use events::Event;

use crate::dashboard::Applied;

/// The reservation an event belongs to, and a summary without personal data.
fn entry(event: &Event) -> Option<(ReservationId, String)> {
    let cents = |c: u64| format!("{}.{:02}", c / 100, c % 100);
    Some(match event {
        Event::Reservation(ReservationEvent::CleaningRequested(r)) => (
            r.reservation_id,
            format!(
                "Cleaning requested for {} at {}",
                r.request_date,
                cents(r.price.cents())
            ),
        ),
        Event::Reservation(ReservationEvent::CleaningStarted {
            reservation_id,
            cleaner,
        }) => (
            *reservation_id,
            match cleaner {
                Some(cleaner) => format!("Cleaning started by {cleaner}"),
                None => "Cleaning started".into(),
            },
        ),
        Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
            (*reservation_id, "Cleaning completed".into())
        }
        Event::Reservation(ReservationEvent::ReservationCancelled {
            reservation_id,
            reason,
        }) => (*reservation_id, format!("Reservation cancelled: {reason}")),
        Event::Payment(PaymentEvent::PaymentApproved {
            reservation_id,
            amount,
            paymethod_kind,
            ..
        }) => (
            *reservation_id,
            format!(
                "Payment of {} approved ({})",
                cents(amount.cents()),
                paymethod_kind.map_or("unknown method", |k| k.as_str())
            ),
        ),
        Event::Payment(PaymentEvent::PaymentDeclined {
            reservation_id,
            amount,
            reason,
            ..
        }) => (
            *reservation_id,
            format!("Payment of {} declined: {reason}", cents(amount.cents())),
        ),
        Event::Payment(PaymentEvent::PaymentCancelled {
            reservation_id,
            amount,
            ..
        }) => (
            *reservation_id,
            format!("Payment of {} refunded", cents(amount.cents())),
        ),
        Event::Message(MessageEvent::MessageSent {
            reservation_id: Some(reservation_id),
            cause,
            ..
        }) => (*reservation_id, format!("Customer notified ({cause})")),
        _ => return None,
    })
}

pub fn apply(out: &mut Statements, applied: &Applied<'_>) {
    let Some((reservation_id, summary)) = entry(applied.event) else {
        return;
    };
    out.push(
        "INSERT INTO timeline (reservation_id, position, event_type, stream, occurred_at,
             correlation_id, causation_id, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (reservation_id, position) DO NOTHING",
        params![
            reservation_id.uuid(),
            applied.position,
            applied.event.event_type(),
            applied.stream.to_string(),
            applied.created,
            applied.metadata.map(|m| m.correlation_id),
            applied.metadata.map(|m| m.causation_id),
            summary
        ],
    );
}
