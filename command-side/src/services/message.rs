//! `MessageService`: a message sent on a person's request or by a notification policy.

use std::sync::Arc;

use domain::message::{Message, MessageError, SendMessage, MAX_RECIPIENT, MAX_TEXT};
use domain::{CustomerId, MessageId, Personal, ReservationId};
use events::KeyStore;
use tonic::Request;

use access::Action;

use api_contract::message_service_server::MessageService;
use api_contract::*;
use command_core::errors::{CommandError, Violations};
use command_core::execute::{Executor, Target};
use command_core::request::{authorize, derived_id, reply, Reply};

pub struct Messages<K> {
    pub executor: Arc<Executor<K>>,
}

pub fn target(id: MessageId) -> Target<Message> {
    Target {
        stream: events::streams::message(id),
        safe_to_repeat: false,
        owner: None,
    }
}

#[tonic::async_trait]
impl<K: KeyStore> MessageService for Messages<K> {
    async fn send_message(&self, request: Request<SendMessageRequest>) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::SendMessage, &r.request_id, &mut v)?;
        let customer_id = v.check("customer_id", CustomerId::parse(&r.customer_id));
        let recipient = v.check("recipient", Personal::text(&r.recipient, MAX_RECIPIENT));
        let text = v.check("text", Personal::text(&r.text, MAX_TEXT));
        let cause = match r.cause.trim() {
            "" => "SendMessage".to_string(),
            cause if events::EventType::from_name(cause).is_some() => cause.to_string(),
            _ => {
                v.add(
                    "cause",
                    "must be empty or the type of the event that caused the message",
                );
                String::new()
            }
        };
        let reservation_id = match r.reservation_id.trim() {
            "" => None,
            id => v.check("reservation_id", ReservationId::parse(id)),
        };
        v.finish()?;
        let (Some(customer_id), Some(recipient), Some(text)) = (customer_id, recipient, text)
        else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };
        let message_id = MessageId::from(derived_id(&context, "message"));
        let command = SendMessage {
            message_id,
            customer_id,
            recipient,
            reservation_id,
            text,
            cause,
        };
        let written = self
            .executor
            .execute(
                &target(message_id),
                &command,
                &context,
                |e: MessageError| CommandError::Refused(e.to_string()),
            )
            .await?;
        Ok(reply(message_id, written, &context))
    }
}
