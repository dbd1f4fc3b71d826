//! A message to a customer, sent once.

use crate::aggregate::Aggregate;
use crate::values::{CustomerId, MessageId, Personal, ReservationId};

pub const MAX_RECIPIENT: usize = 320;
pub const MAX_TEXT: usize = 2_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SendMessage {
    pub message_id: MessageId,
    pub customer_id: CustomerId,
    pub recipient: Personal<String>,
    pub reservation_id: Option<ReservationId>,
    pub text: Personal<String>,
    /// The event type that caused it, or `SendMessage` when a person sent it.
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessageEvent {
    MessageSent {
        message_id: MessageId,
        customer_id: CustomerId,
        recipient: Personal<String>,
        reservation_id: Option<ReservationId>,
        text: Personal<String>,
        cause: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the message has already been sent")]
    AlreadySent,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Message {
    pub sent: bool,
}

impl Aggregate for Message {
    type Command = SendMessage;
    type Event = MessageEvent;
    type Error = MessageError;

    fn decide(&self, command: &SendMessage) -> Result<Vec<MessageEvent>, MessageError> {
        if self.sent {
            return Err(MessageError::AlreadySent);
        }
        Ok(vec![MessageEvent::MessageSent {
            message_id: command.message_id,
            customer_id: command.customer_id,
            recipient: command.recipient.clone(),
            reservation_id: command.reservation_id,
            text: command.text.clone(),
            cause: command.cause.clone(),
        }])
    }

    fn apply(&mut self, event: &MessageEvent) {
        match event {
            MessageEvent::MessageSent { .. } => self.sent = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn send() -> SendMessage {
        SendMessage {
            message_id: MessageId::parse("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9").unwrap(),
            customer_id: CustomerId::parse("0b7f3c1a-5d2e-4f6a-8b9c-1d2e3f4a5b6c").unwrap(),
            recipient: Personal::text("ada@example.org", MAX_RECIPIENT).unwrap(),
            reservation_id: None,
            text: Personal::text("Your cleaning is booked.", MAX_TEXT).unwrap(),
            cause: "PaymentApproved".into(),
        }
    }

    fn sent() -> MessageEvent {
        let s = send();
        MessageEvent::MessageSent {
            message_id: s.message_id,
            customer_id: s.customer_id,
            recipient: s.recipient,
            reservation_id: s.reservation_id,
            text: s.text,
            cause: s.cause,
        }
    }

    #[test]
    fn a_message_is_sent_once() {
        given::<Message>([]).when(send()).then_events([sent()]);
        given::<Message>([sent()])
            .when(send())
            .then_refused(MessageError::AlreadySent);
    }
}
