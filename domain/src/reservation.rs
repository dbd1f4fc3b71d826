//! A reservation: requested (and paid), then cleaning starts and completes; or it is cancelled
//! before cleaning starts. Every other step is refused with the reason.

use chrono::NaiveDate;

use crate::aggregate::Aggregate;
use crate::values::{CustomerId, Money, PaymentId, Personal, ReservationId};

/// Longest customer name and place accepted, in characters.
pub const MAX_NAME: usize = 200;
pub const MAX_PLACE: usize = 500;
pub const MAX_REASON: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum ReservationCommand {
    /// Records a reservation whose payment was approved.
    Request(RequestCleaning),
    StartCleaning {
        cleaner: Option<String>,
    },
    CompleteCleaning,
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestCleaning {
    pub reservation_id: ReservationId,
    pub customer_id: CustomerId,
    pub customer_name: Personal<String>,
    pub place: Personal<String>,
    pub request_date: NaiveDate,
    pub price: Money,
    pub payment_id: PaymentId,
    /// The caller's today: a cleaning is booked for today or later.
    pub today: NaiveDate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReservationEvent {
    CleaningRequested(CleaningRequested),
    CleaningStarted {
        reservation_id: ReservationId,
        cleaner: Option<String>,
    },
    CleaningCompleted {
        reservation_id: ReservationId,
    },
    ReservationCancelled {
        reservation_id: ReservationId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleaningRequested {
    pub reservation_id: ReservationId,
    pub customer_id: CustomerId,
    pub customer_name: Personal<String>,
    pub place: Personal<String>,
    pub request_date: NaiveDate,
    pub price: Money,
    pub payment_id: PaymentId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    #[error("the reservation already exists")]
    AlreadyExists,
    #[error("there is no such reservation")]
    NotFound,
    #[error("the cleaning date is in the past")]
    DateInThePast,
    #[error("cleaning has already started")]
    AlreadyStarted,
    #[error("cleaning has not started yet")]
    NotStarted,
    #[error("cleaning is already completed")]
    AlreadyCompleted,
    #[error("the reservation is cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReservationStatus {
    #[default]
    None,
    Requested,
    CleaningStarted,
    CleaningCompleted,
    Cancelled,
}

impl ReservationStatus {
    /// The statuses a recorded reservation has, in the order of its life.
    pub const RECORDED: [ReservationStatus; 4] = [
        ReservationStatus::Requested,
        ReservationStatus::CleaningStarted,
        ReservationStatus::CleaningCompleted,
        ReservationStatus::Cancelled,
    ];

    /// Their names: what the read models store and the query API accepts and shows.
    pub const NAMES: [&'static str; 4] = [
        Self::RECORDED[0].as_str(),
        Self::RECORDED[1].as_str(),
        Self::RECORDED[2].as_str(),
        Self::RECORDED[3].as_str(),
    ];

    /// The status's name where it leaves the domain (read models, the API).
    pub const fn as_str(&self) -> &'static str {
        match self {
            ReservationStatus::None => "none",
            ReservationStatus::Requested => "requested",
            ReservationStatus::CleaningStarted => "cleaning_started",
            ReservationStatus::CleaningCompleted => "cleaning_completed",
            ReservationStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reservation {
    pub status: ReservationStatus,
    pub reservation_id: ReservationId,
    pub customer_id: CustomerId,
    pub payment_id: PaymentId,
    pub price: Money,
}

impl Aggregate for Reservation {
    type Command = ReservationCommand;
    type Event = ReservationEvent;
    type Error = ReservationError;

    fn decide(
        &self,
        command: &ReservationCommand,
    ) -> Result<Vec<ReservationEvent>, ReservationError> {
        use ReservationError as E;
        use ReservationStatus as S;
        let id = self.reservation_id;
        match (command, self.status) {
            (ReservationCommand::Request(request), S::None) => {
                if request.request_date < request.today {
                    return Err(E::DateInThePast);
                }
                Ok(vec![ReservationEvent::CleaningRequested(
                    CleaningRequested {
                        reservation_id: request.reservation_id,
                        customer_id: request.customer_id,
                        customer_name: request.customer_name.clone(),
                        place: request.place.clone(),
                        request_date: request.request_date,
                        price: request.price,
                        payment_id: request.payment_id,
                    },
                )])
            }
            (ReservationCommand::Request(_), _) => Err(E::AlreadyExists),
            (_, S::None) => Err(E::NotFound),
            (_, S::Cancelled) => Err(E::Cancelled),
            (_, S::CleaningCompleted) => Err(E::AlreadyCompleted),

            (ReservationCommand::StartCleaning { cleaner }, S::Requested) => {
                Ok(vec![ReservationEvent::CleaningStarted {
                    reservation_id: id,
                    cleaner: cleaner.clone(),
                }])
            }
            (ReservationCommand::StartCleaning { .. }, S::CleaningStarted) => {
                Err(E::AlreadyStarted)
            }

            (ReservationCommand::CompleteCleaning, S::CleaningStarted) => {
                Ok(vec![ReservationEvent::CleaningCompleted {
                    reservation_id: id,
                }])
            }
            (ReservationCommand::CompleteCleaning, S::Requested) => Err(E::NotStarted),

            (ReservationCommand::Cancel { reason }, S::Requested) => {
                Ok(vec![ReservationEvent::ReservationCancelled {
                    reservation_id: id,
                    reason: reason.clone(),
                }])
            }
            (ReservationCommand::Cancel { .. }, S::CleaningStarted) => Err(E::AlreadyStarted),
        }
    }

    fn apply(&mut self, event: &ReservationEvent) {
        match event {
            ReservationEvent::CleaningRequested(requested) => {
                self.status = ReservationStatus::Requested;
                self.reservation_id = requested.reservation_id;
                self.customer_id = requested.customer_id;
                self.payment_id = requested.payment_id;
                self.price = requested.price;
            }
            ReservationEvent::CleaningStarted { .. } => {
                self.status = ReservationStatus::CleaningStarted
            }
            ReservationEvent::CleaningCompleted { .. } => {
                self.status = ReservationStatus::CleaningCompleted
            }
            ReservationEvent::ReservationCancelled { .. } => {
                self.status = ReservationStatus::Cancelled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use ReservationCommand as C;
    use ReservationError as E;

    fn date(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, day).unwrap()
    }

    fn request() -> RequestCleaning {
        RequestCleaning {
            reservation_id: ReservationId::parse("8d1c4a8e-2f7b-4a4e-9a51-3f8e1c2b7d10").unwrap(),
            customer_id: CustomerId::parse("0b7f3c1a-5d2e-4f6a-8b9c-1d2e3f4a5b6c").unwrap(),
            customer_name: Personal::text("Ada Lovelace", MAX_NAME).unwrap(),
            place: Personal::text("12 Analytical Row", MAX_PLACE).unwrap(),
            request_date: date(10),
            price: Money::from_cents(12_500).unwrap(),
            payment_id: PaymentId::parse("f3a2b1c0-9d8e-4f7a-b6c5-d4e3f2a1b0c9").unwrap(),
            today: date(1),
        }
    }

    fn requested() -> ReservationEvent {
        let r = request();
        ReservationEvent::CleaningRequested(CleaningRequested {
            reservation_id: r.reservation_id,
            customer_id: r.customer_id,
            customer_name: r.customer_name,
            place: r.place,
            request_date: r.request_date,
            price: r.price,
            payment_id: r.payment_id,
        })
    }

    fn id() -> ReservationId {
        request().reservation_id
    }

    fn started() -> ReservationEvent {
        ReservationEvent::CleaningStarted {
            reservation_id: id(),
            cleaner: Some("Team B".into()),
        }
    }

    fn completed() -> ReservationEvent {
        ReservationEvent::CleaningCompleted {
            reservation_id: id(),
        }
    }

    fn cancelled() -> ReservationEvent {
        ReservationEvent::ReservationCancelled {
            reservation_id: id(),
            reason: "moved out".into(),
        }
    }

    fn cancel() -> C {
        C::Cancel {
            reason: "moved out".into(),
        }
    }

    fn start() -> C {
        C::StartCleaning {
            cleaner: Some("Team B".into()),
        }
    }

    #[test]
    fn a_paid_request_becomes_a_reservation() {
        let state = given::<Reservation>([])
            .when(C::Request(request()))
            .then_events([requested()]);
        assert_eq!(state.status, ReservationStatus::Requested);
        assert_eq!(state.price.cents(), 12_500);
    }

    #[test]
    fn a_date_in_the_past_is_refused() {
        let mut late = request();
        late.request_date = date(1).pred_opt().unwrap();
        given::<Reservation>([])
            .when(C::Request(late))
            .then_refused(E::DateInThePast);
        let mut today = request();
        today.request_date = today.today;
        given::<Reservation>([])
            .when(C::Request(today))
            .then_events([{
                let mut e = requested();
                if let ReservationEvent::CleaningRequested(r) = &mut e {
                    r.request_date = date(1);
                }
                e
            }]);
    }

    #[test]
    fn the_happy_path_starts_then_completes() {
        given::<Reservation>([requested()])
            .when(start())
            .then_events([started()]);
        let state = given::<Reservation>([requested(), started()])
            .when(C::CompleteCleaning)
            .then_events([completed()]);
        assert_eq!(state.status, ReservationStatus::CleaningCompleted);
    }

    #[test]
    fn a_requested_reservation_can_be_cancelled() {
        let state = given::<Reservation>([requested()])
            .when(cancel())
            .then_events([cancelled()]);
        assert_eq!(state.status, ReservationStatus::Cancelled);
    }

    #[test]
    fn every_other_transition_is_refused() {
        // Nothing exists yet.
        for command in [start(), C::CompleteCleaning, cancel()] {
            given::<Reservation>([])
                .when(command)
                .then_refused(E::NotFound);
        }
        // Requested twice.
        given::<Reservation>([requested()])
            .when(C::Request(request()))
            .then_refused(E::AlreadyExists);
        // Complete before start.
        given::<Reservation>([requested()])
            .when(C::CompleteCleaning)
            .then_refused(E::NotStarted);
        // Start twice; cancel after start.
        given::<Reservation>([requested(), started()])
            .when(start())
            .then_refused(E::AlreadyStarted);
        given::<Reservation>([requested(), started()])
            .when(cancel())
            .then_refused(E::AlreadyStarted);
        // Anything after completion.
        for command in [start(), C::CompleteCleaning, cancel()] {
            given::<Reservation>([requested(), started(), completed()])
                .when(command)
                .then_refused(E::AlreadyCompleted);
        }
        // Anything after cancellation.
        for command in [start(), C::CompleteCleaning, cancel()] {
            given::<Reservation>([requested(), cancelled()])
                .when(command)
                .then_refused(E::Cancelled);
        }
    }
}
