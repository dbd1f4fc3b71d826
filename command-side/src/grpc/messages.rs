//! `MessageService`.

use std::sync::Arc;

use access::Action;
use command_core::errors::{checked, Violations};
use command_core::request::{authorize, reply, Reply};
use domain::message::{MAX_RECIPIENT, MAX_TEXT};
use domain::{CustomerId, Personal, ReservationId};
use events::KeyStore;
use tonic::Request;

use crate::application::messages::{Messages, NewMessage};
use crate::proto::message_service_server::MessageService;
use crate::proto::*;

pub struct MessagesOverGrpc<K>(pub Arc<Messages<K>>);

#[tonic::async_trait]
impl<K: KeyStore> MessageService for MessagesOverGrpc<K> {
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
        let new = NewMessage {
            customer_id: checked(customer_id)?,
            recipient: checked(recipient)?,
            text: checked(text)?,
            reservation_id,
            cause,
        };
        let (id, written) = self.0.send(&context, new).await?;
        Ok(reply(id, written, &context))
    }
}
