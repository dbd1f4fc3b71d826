//! A payment: the provider approves or declines it once; an approved payment can be cancelled
//! (refunded) once.

use crate::aggregate::Aggregate;
use crate::values::{Money, PaymentId, PaymethodKind, ReservationId};

pub const MAX_REASON: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    /// Records what the payment provider answered.
    Record(ProviderAnswer),
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderAnswer {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub amount: Money,
    pub paymethod_kind: Option<PaymethodKind>,
    pub outcome: ProviderOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    Approved,
    Declined { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentEvent {
    PaymentApproved {
        payment_id: PaymentId,
        reservation_id: ReservationId,
        amount: Money,
        paymethod_kind: Option<PaymethodKind>,
    },
    PaymentDeclined {
        payment_id: PaymentId,
        reservation_id: ReservationId,
        amount: Money,
        reason: String,
    },
    /// The refund.
    PaymentCancelled {
        payment_id: PaymentId,
        reservation_id: ReservationId,
        amount: Money,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment has already been decided")]
    AlreadyDecided,
    #[error("there is no such payment")]
    NotFound,
    #[error("a declined payment cannot be cancelled")]
    Declined,
    #[error("the payment is already cancelled")]
    AlreadyCancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PaymentStatus {
    #[default]
    None,
    Approved,
    Declined,
    Cancelled,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Payment {
    pub status: PaymentStatus,
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub amount: Money,
    pub paymethod_kind: Option<PaymethodKind>,
    pub decline_reason: Option<String>,
}

impl Aggregate for Payment {
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn decide(&self, command: &PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        use PaymentStatus as S;
        match (command, self.status) {
            (PaymentCommand::Record(answer), S::None) => Ok(vec![match &answer.outcome {
                ProviderOutcome::Approved => PaymentEvent::PaymentApproved {
                    payment_id: answer.payment_id,
                    reservation_id: answer.reservation_id,
                    amount: answer.amount,
                    paymethod_kind: answer.paymethod_kind,
                },
                ProviderOutcome::Declined { reason } => PaymentEvent::PaymentDeclined {
                    payment_id: answer.payment_id,
                    reservation_id: answer.reservation_id,
                    amount: answer.amount,
                    reason: reason.clone(),
                },
            }]),
            (PaymentCommand::Record(_), _) => Err(PaymentError::AlreadyDecided),
            (PaymentCommand::Cancel, S::None) => Err(PaymentError::NotFound),
            (PaymentCommand::Cancel, S::Declined) => Err(PaymentError::Declined),
            (PaymentCommand::Cancel, S::Cancelled) => Err(PaymentError::AlreadyCancelled),
            (PaymentCommand::Cancel, S::Approved) => Ok(vec![PaymentEvent::PaymentCancelled {
                payment_id: self.payment_id,
                reservation_id: self.reservation_id,
                amount: self.amount,
            }]),
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentApproved {
                payment_id,
                reservation_id,
                amount,
                paymethod_kind,
            } => {
                self.status = PaymentStatus::Approved;
                self.payment_id = *payment_id;
                self.reservation_id = *reservation_id;
                self.amount = *amount;
                self.paymethod_kind = *paymethod_kind;
            }
            PaymentEvent::PaymentDeclined {
                payment_id,
                reservation_id,
                amount,
                reason,
            } => {
                self.status = PaymentStatus::Declined;
                self.payment_id = *payment_id;
                self.reservation_id = *reservation_id;
                self.amount = *amount;
                self.decline_reason = Some(reason.clone());
            }
            PaymentEvent::PaymentCancelled { .. } => self.status = PaymentStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn answer(outcome: ProviderOutcome) -> ProviderAnswer {
        ProviderAnswer {
            payment_id: PaymentId::parse("f3a2b1c0-9d8e-4f7a-b6c5-d4e3f2a1b0c9").unwrap(),
            reservation_id: ReservationId::parse("8d1c4a8e-2f7b-4a4e-9a51-3f8e1c2b7d10").unwrap(),
            amount: Money::from_cents(9_900).unwrap(),
            paymethod_kind: Some(PaymethodKind::CreditCard),
            outcome,
        }
    }

    fn approved() -> PaymentEvent {
        let a = answer(ProviderOutcome::Approved);
        PaymentEvent::PaymentApproved {
            payment_id: a.payment_id,
            reservation_id: a.reservation_id,
            amount: a.amount,
            paymethod_kind: a.paymethod_kind,
        }
    }

    fn declined() -> PaymentEvent {
        let a = answer(ProviderOutcome::Approved);
        PaymentEvent::PaymentDeclined {
            payment_id: a.payment_id,
            reservation_id: a.reservation_id,
            amount: a.amount,
            reason: "insufficient funds".into(),
        }
    }

    fn cancelled() -> PaymentEvent {
        let a = answer(ProviderOutcome::Approved);
        PaymentEvent::PaymentCancelled {
            payment_id: a.payment_id,
            reservation_id: a.reservation_id,
            amount: a.amount,
        }
    }

    #[test]
    fn the_provider_decides_once() {
        given::<Payment>([])
            .when(PaymentCommand::Record(answer(ProviderOutcome::Approved)))
            .then_events([approved()]);
        let decline = ProviderOutcome::Declined {
            reason: "insufficient funds".into(),
        };
        given::<Payment>([])
            .when(PaymentCommand::Record(answer(decline.clone())))
            .then_events([declined()]);
        for decided in [approved(), declined()] {
            given::<Payment>([decided])
                .when(PaymentCommand::Record(answer(ProviderOutcome::Approved)))
                .then_refused(PaymentError::AlreadyDecided);
        }
    }

    #[test]
    fn only_an_approved_payment_is_refunded_and_only_once() {
        let state = given::<Payment>([approved()])
            .when(PaymentCommand::Cancel)
            .then_events([cancelled()]);
        assert_eq!(state.status, PaymentStatus::Cancelled);
        given::<Payment>([])
            .when(PaymentCommand::Cancel)
            .then_refused(PaymentError::NotFound);
        given::<Payment>([declined()])
            .when(PaymentCommand::Cancel)
            .then_refused(PaymentError::Declined);
        given::<Payment>([approved(), cancelled()])
            .when(PaymentCommand::Cancel)
            .then_refused(PaymentError::AlreadyCancelled);
    }
}
