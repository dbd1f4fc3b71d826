//! The dashboard read model: what each event changes in the `dashboard`, `payments` and
//! `paymethods` tables (the payment methods on file, masked numbers only) and the summary's
//! counters.
//! A batch commits with its checkpoint, so after a crash it is replayed whole; its statements
//! change nothing twice (inserts of existing rows do nothing, and rows remember the last
//! position applied).

use std::collections::{HashMap, HashSet};

use crate::params;
use crate::statements::Statements;
use crate::Applied;
use chrono::{DateTime, Utc};
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::{ReservationEvent, ReservationStatus};
use events::Event;

/// What a batch's events change, in log order. Two kinds of change wait in memory and are
/// written together, one statement for all of a kind, instead of one or more per event:
/// - a reservation requested in the batch, while the events after it only move it along
///   (started, completed, cancelled): its row is written once, in its latest state;
/// - payment events, one per payment: the payment, the day's totals and the dashboard row.
///
/// What waits is written, payments first, before any event that reads or changes it (a second
/// event of the same payment, a payment of a new row, a message or status change of a row a
/// payment waits for, a forgotten customer, a changed payment method), so every statement
/// sees the tables as the per-event order would have left them.
pub fn apply_all(out: &mut Statements, events: &[Applied<'_>]) {
    let mut new_rows = NewRows::default();
    let mut payments = PaymentChanges::default();
    for applied in events {
        if let Event::Payment(payment) = applied.event {
            let change = PaymentChange::of(payment, applied);
            if payments.holds(change.payment_id) || new_rows.touched_by(applied.event) {
                payments.write(out);
                new_rows.write(out);
            }
            payments.push(change);
            continue;
        }
        if new_rows.absorb(applied) {
            continue;
        }
        if new_rows.touched_by(applied.event) || payments.touched_by(applied.event) {
            payments.write(out);
            new_rows.write(out);
        }
        apply(out, applied);
    }
    // A new row reads its payment: payments first.
    payments.write(out);
    new_rows.write(out);
}

/// One field of every held item, as the array a statement `unnest`s.
macro_rules! column {
    ($items:expr, $field:ident) => {
        $items
            .iter()
            .map(|item| item.$field.clone())
            .collect::<Vec<_>>()
    };
}

/// A payment event, as the dashboard's tables take it.
struct PaymentChange {
    payment_id: uuid::Uuid,
    reservation_id: uuid::Uuid,
    amount_cents: i64,
    /// The method's kind, when the event names it.
    kind: Option<&'static str>,
    status: &'static str,
    decline_reason: Option<String>,
    position: i64,
    at: DateTime<Utc>,
}

impl PaymentChange {
    fn of(event: &PaymentEvent, applied: &Applied<'_>) -> PaymentChange {
        let (payment_id, reservation_id, amount, kind, status, decline_reason) = match event {
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
        PaymentChange {
            payment_id: payment_id.uuid(),
            reservation_id: reservation_id.uuid(),
            amount_cents: amount.cents() as i64,
            kind,
            status,
            decline_reason,
            position: applied.position,
            at: applied.created,
        }
    }
}

/// Payment events of this batch not written yet, at most one per payment.
#[derive(Default)]
struct PaymentChanges {
    changes: Vec<PaymentChange>,
    payments: HashSet<uuid::Uuid>,
    reservations: HashSet<uuid::Uuid>,
}

impl PaymentChanges {
    fn holds(&self, payment_id: uuid::Uuid) -> bool {
        self.payments.contains(&payment_id)
    }

    fn push(&mut self, change: PaymentChange) {
        self.payments.insert(change.payment_id);
        self.reservations.insert(change.reservation_id);
        self.changes.push(change);
    }

    /// Whether `event` (not a payment event) changes a dashboard row a waiting payment
    /// changes too: the two must run in log order.
    fn touched_by(&self, event: &Event) -> bool {
        if self.changes.is_empty() {
            return false;
        }
        match touches(event) {
            Touches::Nothing => false,
            Touches::Reservation(id) => self.reservations.contains(&id),
            Touches::Many => true,
        }
    }

    /// Counts the day's approvals and refunds (each once: only when its payment's row has not
    /// applied it yet and is not in that status already), writes the payments, then their
    /// dashboard rows; then holds nothing.
    fn write(&mut self, out: &mut Statements) {
        if self.changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        self.payments.clear();
        self.reservations.clear();
        out.push(
            "INSERT INTO payments_by_day (day, approved, approved_cents, refunded, refunded_cents)
             SELECT (c.at AT TIME ZONE 'UTC')::date,
                    count(*) FILTER (WHERE c.status = 'approved'),
                    coalesce(sum(c.amount) FILTER (WHERE c.status = 'approved'), 0)::bigint,
                    count(*) FILTER (WHERE c.status = 'refunded'),
                    coalesce(sum(c.amount) FILTER (WHERE c.status = 'refunded'), 0)::bigint
             FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[])
                  AS c (payment_id, status, amount, at, position)
             WHERE c.status IN ('approved', 'refunded')
               AND NOT EXISTS (SELECT 1 FROM payments p
                               WHERE p.payment_id = c.payment_id
                                 AND (p.last_position >= c.position OR p.status = c.status))
             GROUP BY 1
             ON CONFLICT (day) DO UPDATE SET
                 approved = payments_by_day.approved + excluded.approved,
                 approved_cents = payments_by_day.approved_cents + excluded.approved_cents,
                 refunded = payments_by_day.refunded + excluded.refunded,
                 refunded_cents = payments_by_day.refunded_cents + excluded.refunded_cents",
            params![
                column!(changes, payment_id),
                column!(changes, status),
                column!(changes, amount_cents),
                column!(changes, at),
                column!(changes, position)
            ],
        );
        // A kind is only ever 'unknown' when the event named none: the row keeps its own.
        out.push(
            "INSERT INTO payments (payment_id, reservation_id, amount_cents, paymethod_kind, status,
                 decline_reason, last_position, first_position, updated_at)
             SELECT c.payment_id, c.reservation_id, c.amount, coalesce(c.kind, 'unknown'), c.status,
                    c.reason, c.position, c.position, c.at
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::timestamptz[])
                  AS c (payment_id, reservation_id, amount, kind, status, reason, position, at)
             ON CONFLICT (payment_id) DO UPDATE SET
                 status = excluded.status,
                 paymethod_kind = CASE WHEN excluded.paymethod_kind = 'unknown'
                                       THEN payments.paymethod_kind ELSE excluded.paymethod_kind END,
                 decline_reason = coalesce(excluded.decline_reason, payments.decline_reason),
                 last_position = excluded.last_position,
                 updated_at = excluded.updated_at
             WHERE payments.last_position < excluded.last_position",
            params![
                column!(changes, payment_id),
                column!(changes, reservation_id),
                column!(changes, amount_cents),
                column!(changes, kind),
                column!(changes, status),
                column!(changes, decline_reason),
                column!(changes, position),
                column!(changes, at)
            ],
        );
        out.push(
            "UPDATE dashboard d SET payment_status = c.status,
                 payment_kind = coalesce(c.kind, d.payment_kind), updated_at = c.at,
                 last_position = c.position
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
                  AS c (payment_id, status, kind, at, position)
             WHERE d.payment_id = c.payment_id AND d.last_position < c.position",
            params![
                column!(changes, payment_id),
                column!(changes, status),
                column!(changes, kind),
                column!(changes, at),
                column!(changes, position)
            ],
        );
    }
}

/// Dashboard rows of reservations requested in this batch, not written yet.
#[derive(Default)]
struct NewRows {
    rows: Vec<NewRow>,
    by_reservation: HashMap<uuid::Uuid, usize>,
    payments: HashSet<uuid::Uuid>,
}

/// A reservation's row as its events so far in the batch leave it.
struct NewRow {
    reservation_id: uuid::Uuid,
    customer_id: uuid::Uuid,
    customer_name: Option<String>,
    place: Option<String>,
    personal_erased: bool,
    request_date: chrono::NaiveDate,
    price_cents: i64,
    status: &'static str,
    cleaner: Option<String>,
    cancel_reason: Option<String>,
    payment_id: uuid::Uuid,
    requested_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_position: i64,
    requested_position: i64,
}

impl NewRows {
    /// Takes a reservation's request, or a change to a row requested in this batch, into
    /// memory; `false` for every other event.
    fn absorb(&mut self, applied: &Applied<'_>) -> bool {
        let (p, at) = (applied.position, applied.created);
        let Event::Reservation(event) = applied.event else {
            return false;
        };
        match event {
            ReservationEvent::CleaningRequested(r) => {
                self.hold(r, p, at);
                true
            }
            ReservationEvent::CleaningStarted {
                reservation_id,
                cleaner,
            } => self.change(reservation_id.uuid(), p, at, |row| {
                row.status = ReservationStatus::CleaningStarted.as_str();
                row.cleaner = cleaner.clone();
            }),
            ReservationEvent::CleaningCompleted { reservation_id } => {
                self.change(reservation_id.uuid(), p, at, |row| {
                    row.status = ReservationStatus::CleaningCompleted.as_str();
                })
            }
            ReservationEvent::ReservationCancelled {
                reservation_id,
                reason,
            } => self.change(reservation_id.uuid(), p, at, |row| {
                row.status = ReservationStatus::Cancelled.as_str();
                row.cancel_reason = Some(reason.clone());
            }),
        }
    }

    /// A new reservation's row. Requested twice: the second changes nothing, as its insert
    /// would not.
    fn hold(&mut self, r: &domain::reservation::CleaningRequested, p: i64, at: DateTime<Utc>) {
        let id = r.reservation_id.uuid();
        if self.by_reservation.contains_key(&id) {
            return;
        }
        self.by_reservation.insert(id, self.rows.len());
        self.payments.insert(r.payment_id.uuid());
        self.rows.push(NewRow {
            reservation_id: id,
            customer_id: r.customer_id.uuid(),
            customer_name: r.customer_name.expose().cloned(),
            place: r.place.expose().cloned(),
            personal_erased: r.customer_name.is_erased() || r.place.is_erased(),
            request_date: r.request_date,
            price_cents: r.price.cents() as i64,
            status: ReservationStatus::Requested.as_str(),
            cleaner: None,
            cancel_reason: None,
            payment_id: r.payment_id.uuid(),
            requested_at: at,
            updated_at: at,
            last_position: p,
            requested_position: p,
        });
    }

    /// Applies `change` to the held row of `reservation`; `false` when none is held.
    fn change(
        &mut self,
        reservation: uuid::Uuid,
        p: i64,
        at: DateTime<Utc>,
        change: impl FnOnce(&mut NewRow),
    ) -> bool {
        let Some(&i) = self.by_reservation.get(&reservation) else {
            return false;
        };
        let row = &mut self.rows[i];
        change(row);
        row.updated_at = at;
        row.last_position = p;
        true
    }

    /// Whether `event`'s statements read or change a row held here.
    fn touched_by(&self, event: &Event) -> bool {
        if self.rows.is_empty() {
            return false;
        }
        match event {
            Event::Payment(
                PaymentEvent::PaymentApproved { payment_id, .. }
                | PaymentEvent::PaymentDeclined { payment_id, .. }
                | PaymentEvent::PaymentCancelled { payment_id, .. },
            ) => self.payments.contains(&payment_id.uuid()),
            Event::Message(MessageEvent::MessageSent {
                reservation_id: Some(reservation_id),
                ..
            }) => self.by_reservation.contains_key(&reservation_id.uuid()),
            Event::Message(MessageEvent::MessageSent {
                reservation_id: None,
                ..
            }) => false,
            Event::Customer(CustomerEvent::CustomerForgotten { .. })
            | Event::Paymethod(PaymethodEvent::PaymethodChanged { .. }) => true,
            Event::Paymethod(PaymethodEvent::PaymethodRegistered { .. }) => false,
            // Absorbed, or about a reservation not held here.
            Event::Reservation(_) => false,
        }
    }

    /// Counts the rows in their statuses and inserts them, each only while its row does not
    /// exist yet (as the per-event statements did); then holds nothing.
    fn write(&mut self, out: &mut Statements) {
        if self.rows.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        self.by_reservation.clear();
        self.payments.clear();
        out.push(
            "INSERT INTO reservations_by_status (status, reservations)
             SELECT r.status, count(*) FROM unnest($1::uuid[], $2::text[]) AS r (reservation_id, status)
             WHERE NOT EXISTS (SELECT 1 FROM dashboard d WHERE d.reservation_id = r.reservation_id)
             GROUP BY r.status
             ON CONFLICT (status) DO UPDATE SET reservations = reservations_by_status.reservations + excluded.reservations",
            params![column!(rows, reservation_id), column!(rows, status)],
        );
        out.push(
            "INSERT INTO dashboard (reservation_id, customer_id, customer_name, place, personal_erased,
                 request_date, price_cents, status, cleaner, cancel_reason, payment_id, payment_kind,
                 payment_status, requested_at, updated_at, last_position, requested_position)
             SELECT r.reservation_id, r.customer_id, r.customer_name, r.place, r.personal_erased,
                    r.request_date, r.price_cents, r.status, r.cleaner, r.cancel_reason, r.payment_id,
                    coalesce(p.paymethod_kind, 'unknown'), coalesce(p.status, 'pending'),
                    r.requested_at, r.updated_at, r.last_position, r.requested_position
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::date[],
                         $7::bigint[], $8::text[], $9::text[], $10::text[], $11::uuid[],
                         $12::timestamptz[], $13::timestamptz[], $14::bigint[], $15::bigint[])
                  AS r (reservation_id, customer_id, customer_name, place, personal_erased,
                        request_date, price_cents, status, cleaner, cancel_reason, payment_id,
                        requested_at, updated_at, last_position, requested_position)
             LEFT JOIN payments p ON p.payment_id = r.payment_id
             ON CONFLICT (reservation_id) DO NOTHING",
            params![
                column!(rows, reservation_id),
                column!(rows, customer_id),
                column!(rows, customer_name),
                column!(rows, place),
                column!(rows, personal_erased),
                column!(rows, request_date),
                column!(rows, price_cents),
                column!(rows, status),
                column!(rows, cleaner),
                column!(rows, cancel_reason),
                column!(rows, payment_id),
                column!(rows, requested_at),
                column!(rows, updated_at),
                column!(rows, last_position),
                column!(rows, requested_position)
            ],
        );
        // The payment was recorded before its reservation: it learns whose it is.
        out.push(
            "UPDATE payments p SET customer_id = r.customer_id
             FROM unnest($1::uuid[], $2::uuid[]) AS r (payment_id, customer_id)
             WHERE p.payment_id = r.payment_id",
            params![column!(rows, payment_id), column!(rows, customer_id)],
        );
    }
}

fn apply(out: &mut Statements, applied: &Applied<'_>) {
    let (p, at) = (applied.position, applied.created);
    match applied.event {
        // Every request is held by `NewRows::absorb` and written with the batch's new rows.
        Event::Reservation(ReservationEvent::CleaningRequested(_)) => {}
        Event::Reservation(ReservationEvent::CleaningStarted {
            reservation_id,
            cleaner,
        }) => {
            set_status(
                out,
                reservation_id.uuid(),
                ReservationStatus::CleaningStarted,
                p,
                at,
            );
            out.push(
                "UPDATE dashboard SET cleaner = $2 WHERE reservation_id = $1",
                params![reservation_id.uuid(), cleaner.clone()],
            );
        }
        Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
            set_status(
                out,
                reservation_id.uuid(),
                ReservationStatus::CleaningCompleted,
                p,
                at,
            );
        }
        Event::Reservation(ReservationEvent::ReservationCancelled {
            reservation_id,
            reason,
        }) => {
            set_status(
                out,
                reservation_id.uuid(),
                ReservationStatus::Cancelled,
                p,
                at,
            );
            out.push(
                "UPDATE dashboard SET cancel_reason = $2 WHERE reservation_id = $1",
                params![reservation_id.uuid(), reason.clone()],
            );
        }
        // Every payment event is held by `PaymentChanges` and written with the batch's others.
        Event::Payment(_) => {}
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
            // The position moves too, so that open pages hear of the erasure.
            out.push(
                "UPDATE dashboard SET customer_name = NULL, place = NULL, personal_erased = true,
                     last_notification = CASE WHEN last_notification = 'none' THEN 'none' ELSE '(erased)' END,
                     last_position = greatest(last_position, $2)
                 WHERE customer_id = $1",
                params![customer_id.uuid(), p],
            );
            out.push(
                "UPDATE paymethods SET customer_name = NULL, personal_erased = true
                 WHERE customer_id = $1",
                params![customer_id.uuid()],
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
            // The customer's open reservations paid with the method's kind so far are charged and
            // refunded through it from now on: they show its new kind. This runs before the
            // `paymethods` row takes the change, so that row still holds the old kind, and its
            // position guards a replayed batch.
            out.push(
                "UPDATE dashboard d SET payment_kind = $2, updated_at = $3, last_position = $4
                 FROM paymethods m
                 WHERE m.paymethod_id = $1 AND m.last_position < $4 AND m.kind <> $2
                   AND d.customer_id = m.customer_id AND d.payment_kind = m.kind
                   AND d.status IN ($5, $6) AND d.last_position < $4",
                params![
                    paymethod_id.uuid(),
                    kind.as_str(),
                    at,
                    p,
                    ReservationStatus::Requested.as_str(),
                    ReservationStatus::CleaningStarted.as_str()
                ],
            );
            out.push(
                "UPDATE paymethods SET kind = $2, masked_number = $3, updated_at = $4, last_position = $5
                 WHERE paymethod_id = $1 AND last_position < $5",
                params![paymethod_id.uuid(), kind.as_str(), masked_number.as_str().to_string(), at, p],
            );
        }
    }
}

fn set_status(
    out: &mut Statements,
    reservation_id: uuid::Uuid,
    status: ReservationStatus,
    position: i64,
    at: DateTime<Utc>,
) {
    let status = status.as_str();
    // The count moves from the old status to the new, under the same condition as the update
    // below, which has not run yet.
    out.push(
        "INSERT INTO reservations_by_status (status, reservations)
         SELECT moved.status, moved.delta FROM dashboard,
                LATERAL (VALUES (dashboard.status, -1), ($2::text, 1)) AS moved (status, delta)
         WHERE reservation_id = $1 AND last_position < $3 AND dashboard.status <> $2
         ON CONFLICT (status) DO UPDATE SET reservations = reservations_by_status.reservations + excluded.reservations",
        params![reservation_id, status, position],
    );
    out.push(
        "UPDATE dashboard SET status = $2, updated_at = $3, last_position = $4
         WHERE reservation_id = $1 AND last_position < $4",
        params![reservation_id, status, at, position],
    );
}

/// Which dashboard rows an event changes, for the notice open pages hear (see
/// [`crate::Changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches {
    Nothing,
    /// One reservation's row.
    Reservation(uuid::Uuid),
    /// Rows not known here (all of a customer's).
    Many,
}

pub fn touches(event: &Event) -> Touches {
    match event {
        Event::Reservation(reservation) => Touches::Reservation(
            match reservation {
                ReservationEvent::CleaningRequested(r) => r.reservation_id,
                ReservationEvent::CleaningStarted { reservation_id, .. }
                | ReservationEvent::CleaningCompleted { reservation_id }
                | ReservationEvent::ReservationCancelled { reservation_id, .. } => *reservation_id,
            }
            .uuid(),
        ),
        Event::Payment(
            PaymentEvent::PaymentApproved { reservation_id, .. }
            | PaymentEvent::PaymentDeclined { reservation_id, .. }
            | PaymentEvent::PaymentCancelled { reservation_id, .. },
        ) => Touches::Reservation(reservation_id.uuid()),
        Event::Message(MessageEvent::MessageSent {
            reservation_id: Some(reservation_id),
            ..
        }) => Touches::Reservation(reservation_id.uuid()),
        Event::Message(MessageEvent::MessageSent {
            reservation_id: None,
            ..
        }) => Touches::Nothing,
        Event::Customer(CustomerEvent::CustomerForgotten { .. })
        | Event::Paymethod(PaymethodEvent::PaymethodChanged { .. }) => Touches::Many,
        Event::Paymethod(PaymethodEvent::PaymethodRegistered { .. }) => Touches::Nothing,
    }
}
