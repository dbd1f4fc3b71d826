//! The invariants, checked once the faults have ended and the system has settled: each one a
//! line of the report, with its figure and the first few violations.

use std::collections::{HashMap, HashSet};

use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::ReservationEvent;
use events::{Event, Metadata};
use uuid::Uuid;

use crate::workload::{Call, Outcome, Record};

/// One line of the report.
pub struct Finding {
    pub invariant: &'static str,
    pub figure: String,
    pub violations: Vec<String>,
}

impl Finding {
    fn new(invariant: &'static str) -> Finding {
        Finding {
            invariant,
            figure: String::new(),
            violations: Vec::new(),
        }
    }

    pub fn print(&self) {
        let mark = if self.violations.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        println!(
            "{mark} {}: {}{}",
            self.invariant,
            self.figure,
            if self.violations.is_empty() {
                String::new()
            } else {
                format!(" ({} violations)", self.violations.len())
            }
        );
        for violation in self.violations.iter().take(10) {
            println!("       {violation}");
        }
    }
}

/// An event of the log, decoded without keys (the checks need ids, not personal data).
pub struct LogEvent {
    pub id: Uuid,
    pub stream: String,
    pub event_type: String,
    pub position: u64,
    pub causation: Option<Uuid>,
    pub event: Option<Event>,
}

/// The whole log, in order, without the store's own `$` streams.
pub async fn read_log(client: &kurrentdb::Client) -> anyhow::Result<Vec<LogEvent>> {
    let options = kurrentdb::ReadAllOptions::default()
        .forwards()
        .position(kurrentdb::StreamPosition::Start);
    let mut read = client
        .read_all(&options)
        .await
        .map_err(|e| anyhow::anyhow!("reading $all: {e}"))?;
    let mut log = Vec::new();
    while let Some(resolved) = read
        .next()
        .await
        .map_err(|e| anyhow::anyhow!("reading $all: {e}"))?
    {
        let recorded = resolved.get_original_event();
        if recorded.stream_id().starts_with('$') || recorded.event_type.starts_with('$') {
            continue;
        }
        let metadata = serde_json::from_slice::<Metadata>(&recorded.custom_metadata).ok();
        let event = metadata.as_ref().and_then(|m| {
            events::decode(&recorded.event_type, m.schema_version, &recorded.data, None).ok()
        });
        log.push(LogEvent {
            id: recorded.id,
            stream: recorded.stream_id().to_string(),
            event_type: recorded.event_type.clone(),
            position: recorded.position.commit,
            causation: metadata.map(|m| m.causation_id),
            event,
        });
    }
    Ok(log)
}

/// Whether `call`, acknowledged at `position` without an event of its own, is a change of a
/// payment method to what it already was (the only command the domain answers with no
/// events): its reply is then the position of its stream's last event.
fn changed_nothing(call: &Call, position: u64, log: &[LogEvent]) -> bool {
    let Call::Change(change) = call else {
        return false;
    };
    let stream = format!("paymethod-{}", change.paymethod_id);
    log.iter()
        .any(|e| e.stream == stream && e.position == position)
}

/// The commands' side: acknowledged ones are in the log exactly once, refused ones not at all,
/// and none was left without an answer.
pub fn commands(ledger: &[Record], log: &[LogEvent]) -> Vec<Finding> {
    let mut by_cause: HashMap<Uuid, Vec<&LogEvent>> = HashMap::new();
    for event in log {
        if let Some(cause) = event.causation {
            by_cause.entry(cause).or_default().push(event);
        }
    }
    let mut once = Finding::new("acknowledged commands' events are in the log exactly once");
    let mut ids = HashSet::new();
    for event in log {
        if !ids.insert(event.id) {
            once.violations.push(format!(
                "event {} ({} in {}) is in the log twice",
                event.id, event.event_type, event.stream
            ));
        }
        if event.event.is_none() {
            once.violations.push(format!(
                "event {} ({} in {}) cannot be decoded",
                event.id, event.event_type, event.stream
            ));
        }
    }
    let mut refused = Finding::new("no event exists for a refused command");
    let mut answered = Finding::new("every command was answered");
    let (mut acknowledged, mut their_events, mut refusals, mut no_ops) = (0, 0, 0, 0);
    for record in ledger {
        let request = record.call.request_id();
        let caused = by_cause.get(&request).map_or(&[][..], |v| v.as_slice());
        match &record.outcome {
            Outcome::Acknowledged(reply) => {
                acknowledged += 1;
                their_events += caused.len();
                if caused.is_empty() && changed_nothing(&record.call, reply.position, log) {
                    // A payment method changed to what it already was: acknowledged, and
                    // rightly nothing written; the reply names where its stream stood.
                    no_ops += 1;
                } else if caused.is_empty() {
                    once.violations.push(format!(
                        "{} {request} was acknowledged but none of its events is in the log",
                        record.call.name()
                    ));
                } else if !caused.iter().any(|e| e.position == reply.position) {
                    once.violations.push(format!(
                        "{} {request} answered position {}, which is not one of its events",
                        record.call.name(),
                        reply.position
                    ));
                }
            }
            Outcome::Refused { code, message } => {
                refusals += 1;
                if !caused.is_empty() {
                    refused.violations.push(format!(
                        "{} {request} was refused ({code:?}: {message}) but wrote {} events",
                        record.call.name(),
                        caused.len()
                    ));
                }
            }
            Outcome::Unresolved(why) => answered.violations.push(format!(
                "{} {request} had no answer after {} attempts: {why}",
                record.call.name(),
                record.attempts
            )),
        }
    }
    once.figure = format!(
        "{acknowledged} commands ({no_ops} of them changing nothing), {their_events} events, {} events in the log",
        log.len()
    );
    refused.figure = format!("{refusals} refused");
    let retried = ledger.iter().filter(|r| r.attempts > 1).count();
    answered.figure = format!(
        "{} commands, {retried} of them retried after a failure",
        ledger.len()
    );
    let internal: u32 = ledger.iter().map(|r| r.internal_errors).sum();
    let mut errors = Finding::new("no call answered INTERNAL");
    errors.figure = format!("{internal} INTERNAL answers");
    if internal > 0 {
        errors.violations.push(format!(
            "{internal} attempts were answered INTERNAL (see the logs)"
        ));
    }
    vec![once, refused, answered, errors]
}

/// What the log says about each reservation and payment.
#[derive(Default)]
struct Saga {
    /// Reservation -> (payment, customer, position of its request).
    requested: HashMap<Uuid, (Uuid, Uuid, u64)>,
    by_payment: HashMap<Uuid, Uuid>,
    cancelled: HashSet<Uuid>,
    approved: HashSet<Uuid>,
    declined: HashSet<Uuid>,
    refunds: HashMap<Uuid, u32>,
    paymethods: HashMap<Uuid, Uuid>,
    forgotten: HashSet<Uuid>,
}

impl Saga {
    fn of(log: &[LogEvent]) -> Saga {
        let mut saga = Saga::default();
        for e in log {
            match &e.event {
                Some(Event::Reservation(ReservationEvent::CleaningRequested(r))) => {
                    saga.requested.insert(
                        r.reservation_id.uuid(),
                        (r.payment_id.uuid(), r.customer_id.uuid(), e.position),
                    );
                    saga.by_payment
                        .insert(r.payment_id.uuid(), r.reservation_id.uuid());
                }
                Some(Event::Reservation(ReservationEvent::ReservationCancelled {
                    reservation_id,
                    ..
                })) => {
                    saga.cancelled.insert(reservation_id.uuid());
                }
                Some(Event::Payment(PaymentEvent::PaymentApproved { payment_id, .. })) => {
                    saga.approved.insert(payment_id.uuid());
                }
                Some(Event::Payment(PaymentEvent::PaymentDeclined { payment_id, .. })) => {
                    saga.declined.insert(payment_id.uuid());
                }
                Some(Event::Payment(PaymentEvent::PaymentCancelled { payment_id, .. })) => {
                    *saga.refunds.entry(payment_id.uuid()).or_default() += 1;
                }
                Some(Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                    paymethod_id,
                    customer_id,
                    ..
                })) => {
                    saga.paymethods
                        .insert(paymethod_id.uuid(), customer_id.uuid());
                }
                Some(Event::Customer(domain::customer::CustomerEvent::CustomerForgotten {
                    customer_id,
                })) => {
                    saga.forgotten.insert(customer_id.uuid());
                }
                _ => {}
            }
        }
        saga
    }
}

/// The money: refunds and orphans.
pub fn payments(log: &[LogEvent]) -> Vec<Finding> {
    let saga = Saga::of(log);
    let mut refunded =
        Finding::new("every cancellation of a paid reservation is refunded exactly once");
    let mut paid_cancellations = 0;
    for reservation in &saga.cancelled {
        let Some((payment, ..)) = saga.requested.get(reservation) else {
            continue;
        };
        if !saga.approved.contains(payment) {
            continue;
        }
        paid_cancellations += 1;
        let refunds = saga.refunds.get(payment).copied().unwrap_or(0);
        if refunds != 1 {
            refunded.violations.push(format!(
                "reservation {reservation} was cancelled; its payment {payment} was refunded {refunds} times"
            ));
        }
    }
    for (payment, n) in &saga.refunds {
        if *n > 1 {
            refunded
                .violations
                .push(format!("payment {payment} was refunded {n} times"));
        }
    }
    refunded.figure = format!(
        "{paid_cancellations} paid reservations cancelled, {} refunds in all",
        saga.refunds.values().sum::<u32>()
    );

    let mut orphans =
        Finding::new("no approved payment is left without its reservation or a refund");
    for payment in &saga.approved {
        let reservation = saga.by_payment.get(payment);
        let refunds = saga.refunds.get(payment).copied().unwrap_or(0);
        match reservation {
            None if refunds == 0 => orphans.violations.push(format!(
                "payment {payment} was approved, has no reservation and was not refunded"
            )),
            Some(r) if refunds > 0 && !saga.cancelled.contains(r) => orphans.violations.push(
                format!("reservation {r} stands on payment {payment}, which was refunded"),
            ),
            _ => {}
        }
    }
    for (reservation, (payment, ..)) in &saga.requested {
        if !saga.approved.contains(payment) {
            orphans.violations.push(format!(
                "reservation {reservation} was recorded without an approved payment"
            ));
        }
    }
    let orphaned = saga
        .approved
        .iter()
        .filter(|p| !saga.by_payment.contains_key(p))
        .count();
    orphans.figure = format!(
        "{} approved ({orphaned} without a reservation, refunded), {} declined",
        saga.approved.len(),
        saga.declined.len()
    );
    vec![refunded, orphans]
}

/// The notifications: one message for each step a customer is told about.
pub fn notifications(log: &[LogEvent]) -> Finding {
    let saga = Saga::of(log);
    let mut finding = Finding::new("each notification is sent exactly once per step");
    let mut sent: HashMap<Uuid, u32> = HashMap::new();
    for e in log {
        if let (Some(Event::Message(MessageEvent::MessageSent { .. })), Some(cause)) =
            (&e.event, e.causation)
        {
            *sent.entry(cause).or_default() += 1;
        }
    }
    let mut steps: HashSet<Uuid> = HashSet::new();
    let (mut exact, mut at_most) = (0, 0);
    for e in log {
        // The customer told, and whether the policy can know them when it meets this event.
        let told: Option<(Uuid, bool)> = match &e.event {
            Some(Event::Payment(PaymentEvent::PaymentApproved { reservation_id, .. })) => saga
                .requested
                .get(&reservation_id.uuid())
                .map(|(_, customer, _)| (*customer, true)),
            Some(Event::Payment(PaymentEvent::PaymentCancelled { reservation_id, .. })) => saga
                .requested
                .get(&reservation_id.uuid())
                .map(|(_, customer, at)| (*customer, *at < e.position)),
            Some(Event::Reservation(
                ReservationEvent::CleaningStarted { reservation_id, .. }
                | ReservationEvent::CleaningCompleted { reservation_id }
                | ReservationEvent::ReservationCancelled { reservation_id, .. },
            )) => saga
                .requested
                .get(&reservation_id.uuid())
                .map(|(_, customer, _)| (*customer, true)),
            Some(Event::Paymethod(PaymethodEvent::PaymethodRegistered { customer_id, .. })) => {
                Some((customer_id.uuid(), true))
            }
            Some(Event::Paymethod(PaymethodEvent::PaymethodChanged { paymethod_id, .. })) => saga
                .paymethods
                .get(&paymethod_id.uuid())
                .map(|customer| (*customer, true)),
            _ => None,
        };
        let Some((customer, known)) = told else {
            continue;
        };
        // A policy's command records the event it reacted to as its cause.
        steps.insert(e.id);
        let n = sent.get(&e.id).copied().unwrap_or(0);
        // A forgotten customer is not told; a step the policy met before the reservation it
        // is about may not be.
        if known && !saga.forgotten.contains(&customer) {
            exact += 1;
            if n != 1 {
                finding.violations.push(format!(
                    "{} {} (in {}) was told {n} times",
                    e.event_type, e.id, e.stream
                ));
            }
        } else {
            at_most += 1;
            if n > 1 {
                finding.violations.push(format!(
                    "{} {} (in {}) was told {n} times",
                    e.event_type, e.id, e.stream
                ));
            }
        }
    }
    for (cause, n) in &sent {
        if !steps.contains(cause) {
            finding.violations.push(format!(
                "{n} messages were caused by {cause}, which is no step"
            ));
        }
    }
    finding.figure = format!(
        "{} messages; {exact} steps told exactly once, {at_most} of forgotten customers or unknown reservations at most once",
        sent.values().sum::<u32>()
    );
    finding
}

/// The customers the log says were forgotten.
pub fn forgotten(log: &[LogEvent]) -> HashSet<Uuid> {
    Saga::of(log).forgotten
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_contract::{ChangePaymethodRequest, CommandReply};

    fn change(paymethod: Uuid, position: u64) -> Record {
        Record {
            call: Call::Change(ChangePaymethodRequest {
                request_id: Uuid::new_v4().to_string(),
                paymethod_id: paymethod.to_string(),
                kind: "credit_card".into(),
                number: "4111111111111111".into(),
            }),
            token: "token".into(),
            customer: None,
            outcome: Outcome::Acknowledged(CommandReply {
                id: paymethod.to_string(),
                revision: 0,
                position,
                correlation_id: String::new(),
            }),
            attempts: 1,
            internal_errors: 0,
        }
    }

    #[test]
    fn a_change_to_what_it_was_is_no_lost_event_but_an_unanswered_position_is() {
        let paymethod = Uuid::new_v4();
        let log = vec![LogEvent {
            id: Uuid::new_v4(),
            stream: format!("paymethod-{paymethod}"),
            event_type: "PaymethodRegistered".into(),
            position: 100,
            causation: Some(Uuid::new_v4()),
            // Any decoded event: this check looks at ids and positions only.
            event: Some(Event::Customer(
                domain::customer::CustomerEvent::CustomerForgotten {
                    customer_id: domain::CustomerId::new(),
                },
            )),
        }];
        let at_its_stream = commands(&[change(paymethod, 100)], &log);
        assert!(
            at_its_stream[0].violations.is_empty(),
            "{:?}",
            at_its_stream[0].violations
        );
        let elsewhere = commands(&[change(paymethod, 200)], &log);
        assert_eq!(elsewhere[0].violations.len(), 1);
    }
}
