//! The per-reservation timeline: every event a reservation caused, with its correlation and
//! causation ids, in log order.

use crate::params;
use crate::statements::Statements;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::reservation::ReservationEvent;
use domain::ReservationId;
use events::Event;

use crate::Applied;

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

/// A batch's timeline entries, written by one statement.
#[derive(Default)]
struct TimelineRows {
    reservation_ids: Vec<uuid::Uuid>,
    positions: Vec<i64>,
    event_types: Vec<&'static str>,
    streams: Vec<String>,
    occurred: Vec<chrono::DateTime<chrono::Utc>>,
    correlation_ids: Vec<Option<uuid::Uuid>>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    actor_subjects: Vec<Option<String>>,
    actor_roles: Vec<Option<String>>,
    summaries: Vec<String>,
}

/// What a batch's events add: one statement for them all.
pub fn apply_all(out: &mut Statements, events: &[Applied<'_>]) {
    let mut rows = TimelineRows::default();
    for applied in events {
        apply(&mut rows, applied);
    }
    rows.write(out);
}

fn apply(rows: &mut TimelineRows, applied: &Applied<'_>) {
    let Some((reservation_id, summary)) = entry(applied.event) else {
        return;
    };
    rows.reservation_ids.push(reservation_id.uuid());
    rows.positions.push(applied.position);
    rows.event_types.push(applied.event.event_type());
    rows.streams.push(applied.stream.to_string());
    rows.occurred.push(applied.created);
    rows.correlation_ids
        .push(applied.metadata.map(|m| m.correlation_id));
    rows.causation_ids
        .push(applied.metadata.map(|m| m.causation_id));
    let actor = applied.metadata.and_then(|m| m.actor.as_ref());
    rows.actor_subjects.push(actor.map(|a| a.subject.clone()));
    rows.actor_roles.push(actor.map(|a| a.role.clone()));
    rows.summaries.push(summary);
}

impl TimelineRows {
    /// The one statement that writes them all.
    fn write(self, out: &mut Statements) {
        if self.positions.is_empty() {
            return;
        }
        out.push(
            "INSERT INTO timeline (reservation_id, position, event_type, stream, occurred_at,
                 correlation_id, causation_id, summary, actor_subject, actor_role)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[],
                 $5::timestamptz[], $6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::text[])
             ON CONFLICT (reservation_id, position) DO NOTHING",
            params![
                self.reservation_ids,
                self.positions,
                self.event_types,
                self.streams,
                self.occurred,
                self.correlation_ids,
                self.causation_ids,
                self.summaries,
                self.actor_subjects,
                self.actor_roles
            ],
        );
    }
}
