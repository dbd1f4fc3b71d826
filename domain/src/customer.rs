//! A customer as far as privacy goes: they can ask to be forgotten, once.
//!
//! Forgetting destroys the key that seals the customer's personal data (crypto-shredding); the
//! event that records it carries no personal data.

use crate::aggregate::Aggregate;
use crate::values::CustomerId;

#[derive(Debug, Clone, PartialEq)]
pub struct ForgetCustomer {
    pub customer_id: CustomerId,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    CustomerForgotten { customer_id: CustomerId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("the customer has already been forgotten")]
    AlreadyForgotten,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Customer {
    pub forgotten: bool,
}

impl Aggregate for Customer {
    type Command = ForgetCustomer;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn decide(&self, command: &ForgetCustomer) -> Result<Vec<CustomerEvent>, CustomerError> {
        if self.forgotten {
            return Err(CustomerError::AlreadyForgotten);
        }
        Ok(vec![CustomerEvent::CustomerForgotten {
            customer_id: command.customer_id,
        }])
    }

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerForgotten { .. } => self.forgotten = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    #[test]
    fn a_customer_is_forgotten_once() {
        let customer_id = CustomerId::new();
        let forgotten = CustomerEvent::CustomerForgotten { customer_id };
        given::<Customer>([])
            .when(ForgetCustomer { customer_id })
            .then_events([forgotten.clone()]);
        given::<Customer>([forgotten])
            .when(ForgetCustomer { customer_id })
            .then_refused(CustomerError::AlreadyForgotten);
    }
}
