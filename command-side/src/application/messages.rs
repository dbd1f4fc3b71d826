//! Messages: sent on a person's request or by a notification policy.

use std::sync::Arc;

use command_core::errors::CommandError;
use command_core::execute::{Executor, Target};
use command_core::request::derived_id;
use command_core::store::{RequestContext, Written};
use domain::message::{Message, MessageError, SendMessage};
use domain::{CustomerId, MessageId, Personal, ReservationId};
use events::KeyStore;

pub struct Messages<K> {
    pub executor: Arc<Executor<K>>,
}

/// A message to send, its fields checked.
pub struct NewMessage {
    pub customer_id: CustomerId,
    pub recipient: Personal<String>,
    pub text: Personal<String>,
    pub reservation_id: Option<ReservationId>,
    /// The type of the event that caused it, or `SendMessage`.
    pub cause: String,
}

impl<K: KeyStore> Messages<K> {
    pub async fn send(
        &self,
        context: &RequestContext,
        new: NewMessage,
    ) -> Result<(MessageId, Written), CommandError> {
        let message_id = MessageId::from(derived_id(context, "message"));
        let command = SendMessage {
            message_id,
            customer_id: new.customer_id,
            recipient: new.recipient,
            reservation_id: new.reservation_id,
            text: new.text,
            cause: new.cause,
        };
        let target = Target::<Message> {
            stream: events::streams::message(message_id),
            safe_to_repeat: false,
            owner: None,
        };
        let written = self
            .executor
            .execute(&target, &command, context, |e: MessageError| {
                CommandError::Refused(e.to_string())
            })
            .await?;
        Ok((message_id, written))
    }
}
