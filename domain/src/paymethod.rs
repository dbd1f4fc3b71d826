//! A customer's payment method: registered once, changed any number of times. Only masked
//! numbers exist here; the full number was checked and dropped when the command was made.

use crate::aggregate::Aggregate;
use crate::values::{CustomerId, MaskedNumber, PaymethodId, PaymethodKind, Personal};

#[derive(Debug, Clone, PartialEq)]
pub enum PaymethodCommand {
    Register {
        paymethod_id: PaymethodId,
        customer_id: CustomerId,
        customer_name: Personal<String>,
        kind: PaymethodKind,
        masked_number: MaskedNumber,
    },
    Change {
        kind: PaymethodKind,
        masked_number: MaskedNumber,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymethodEvent {
    PaymethodRegistered {
        paymethod_id: PaymethodId,
        customer_id: CustomerId,
        customer_name: Personal<String>,
        kind: PaymethodKind,
        masked_number: MaskedNumber,
    },
    PaymethodChanged {
        paymethod_id: PaymethodId,
        kind: PaymethodKind,
        masked_number: MaskedNumber,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymethodError {
    #[error("the payment method is already registered")]
    AlreadyRegistered,
    #[error("there is no such payment method")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Paymethod {
    pub registered: bool,
    pub paymethod_id: PaymethodId,
    pub customer_id: CustomerId,
    pub kind: Option<PaymethodKind>,
    pub masked_number: Option<MaskedNumber>,
}

impl Aggregate for Paymethod {
    type Command = PaymethodCommand;
    type Event = PaymethodEvent;
    type Error = PaymethodError;

    fn decide(&self, command: &PaymethodCommand) -> Result<Vec<PaymethodEvent>, PaymethodError> {
        match command {
            PaymethodCommand::Register { .. } if self.registered => {
                Err(PaymethodError::AlreadyRegistered)
            }
            PaymethodCommand::Register {
                paymethod_id,
                customer_id,
                customer_name,
                kind,
                masked_number,
            } => Ok(vec![PaymethodEvent::PaymethodRegistered {
                paymethod_id: *paymethod_id,
                customer_id: *customer_id,
                customer_name: customer_name.clone(),
                kind: *kind,
                masked_number: masked_number.clone(),
            }]),
            PaymethodCommand::Change { .. } if !self.registered => Err(PaymethodError::NotFound),
            // Changing to what it already is changes nothing.
            PaymethodCommand::Change {
                kind,
                masked_number,
            } if self.kind == Some(*kind) && self.masked_number.as_ref() == Some(masked_number) => {
                Ok(vec![])
            }
            PaymethodCommand::Change {
                kind,
                masked_number,
            } => Ok(vec![PaymethodEvent::PaymethodChanged {
                paymethod_id: self.paymethod_id,
                kind: *kind,
                masked_number: masked_number.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &PaymethodEvent) {
        match event {
            PaymethodEvent::PaymethodRegistered {
                paymethod_id,
                customer_id,
                kind,
                masked_number,
                ..
            } => {
                self.registered = true;
                self.paymethod_id = *paymethod_id;
                self.customer_id = *customer_id;
                self.kind = Some(*kind);
                self.masked_number = Some(masked_number.clone());
            }
            PaymethodEvent::PaymethodChanged {
                kind,
                masked_number,
                ..
            } => {
                self.kind = Some(*kind);
                self.masked_number = Some(masked_number.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn id() -> PaymethodId {
        PaymethodId::parse("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d").unwrap()
    }

    fn card(number: &str) -> MaskedNumber {
        MaskedNumber::mask(PaymethodKind::CreditCard, number).unwrap()
    }

    fn register() -> PaymethodCommand {
        PaymethodCommand::Register {
            paymethod_id: id(),
            customer_id: CustomerId::parse("0b7f3c1a-5d2e-4f6a-8b9c-1d2e3f4a5b6c").unwrap(),
            customer_name: Personal::text("Ada Lovelace", 200).unwrap(),
            kind: PaymethodKind::CreditCard,
            masked_number: card("4111111111111111"),
        }
    }

    fn registered() -> PaymethodEvent {
        let PaymethodCommand::Register {
            paymethod_id,
            customer_id,
            customer_name,
            kind,
            masked_number,
        } = register()
        else {
            unreachable!()
        };
        PaymethodEvent::PaymethodRegistered {
            paymethod_id,
            customer_id,
            customer_name,
            kind,
            masked_number,
        }
    }

    #[test]
    fn registers_once_then_changes() {
        given::<Paymethod>([])
            .when(register())
            .then_events([registered()]);
        given::<Paymethod>([registered()])
            .when(register())
            .then_refused(PaymethodError::AlreadyRegistered);
        let account =
            MaskedNumber::mask(PaymethodKind::BankAccount, "DE89370400440532013000").unwrap();
        let state = given::<Paymethod>([registered()])
            .when(PaymethodCommand::Change {
                kind: PaymethodKind::BankAccount,
                masked_number: account.clone(),
            })
            .then_events([PaymethodEvent::PaymethodChanged {
                paymethod_id: id(),
                kind: PaymethodKind::BankAccount,
                masked_number: account,
            }]);
        assert_eq!(state.masked_number.unwrap().as_str(), "****3000");
    }

    #[test]
    fn a_change_needs_a_registration_and_a_difference() {
        let change = PaymethodCommand::Change {
            kind: PaymethodKind::CreditCard,
            masked_number: card("4111111111111111"),
        };
        given::<Paymethod>([])
            .when(change.clone())
            .then_refused(PaymethodError::NotFound);
        given::<Paymethod>([registered()])
            .when(change)
            .then_events([]);
    }
}
