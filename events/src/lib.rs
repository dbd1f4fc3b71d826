//! The stored event contract of Cleaning Service Park.
//!
//! Every event is written as JSON under a stable type name (`CleaningRequested`, ...), in the
//! stream of its aggregate (`reservation-{id}`, ...), with metadata that records its payload's
//! schema version and the request that caused it ([`Metadata`]). Personal fields are sealed with
//! their customer's key ([`sealing`]); forgetting the customer destroys the key.

pub mod codec;
pub mod sealing;
pub mod types;

use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::ReservationEvent;
use domain::CustomerId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use codec::{
    decode, decode_stored, encode, sealing_key_id, CodecError, Encoded, SCHEMA_VERSION,
};
pub use sealing::{CustomerKey, InMemoryKeys, KeyError, KeyStore, NoKeys};
pub use types::{EventType, EVENT_TYPES};

/// Declares [`Event`] with one variant per aggregate, and the conversions between each
/// aggregate's events and it: the command side stores and loads through them, so a new
/// aggregate needs no mapping of its own anywhere else.
macro_rules! system_events {
    ($($variant:ident($events:ty)),* $(,)?) => {
        /// Any event of the system.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($variant($events),)*
        }

        $(
            impl From<$events> for Event {
                fn from(event: $events) -> Event {
                    Event::$variant(event)
                }
            }

            /// The aggregate's event, or the event back when it is another aggregate's.
            impl TryFrom<Event> for $events {
                type Error = Event;

                fn try_from(event: Event) -> Result<$events, Event> {
                    match event {
                        Event::$variant(event) => Ok(event),
                        other => Err(other),
                    }
                }
            }
        )*
    };
}

system_events! {
    Reservation(ReservationEvent),
    Payment(PaymentEvent),
    Paymethod(PaymethodEvent),
    Message(MessageEvent),
    Customer(CustomerEvent),
}

impl Event {
    /// Its stored type's name.
    pub fn event_type(&self) -> &'static str {
        self.kind().name()
    }

    /// Its stored type.
    pub fn kind(&self) -> EventType {
        use EventType as T;
        match self {
            Event::Reservation(e) => match e {
                ReservationEvent::CleaningRequested(_) => T::CleaningRequested,
                ReservationEvent::CleaningStarted { .. } => T::CleaningStarted,
                ReservationEvent::CleaningCompleted { .. } => T::CleaningCompleted,
                ReservationEvent::ReservationCancelled { .. } => T::ReservationCancelled,
            },
            Event::Payment(e) => match e {
                PaymentEvent::PaymentApproved { .. } => T::PaymentApproved,
                PaymentEvent::PaymentDeclined { .. } => T::PaymentDeclined,
                PaymentEvent::PaymentCancelled { .. } => T::PaymentCancelled,
            },
            Event::Paymethod(e) => match e {
                PaymethodEvent::PaymethodRegistered { .. } => T::PaymethodRegistered,
                PaymethodEvent::PaymethodChanged { .. } => T::PaymethodChanged,
            },
            Event::Message(MessageEvent::MessageSent { .. }) => T::MessageSent,
            Event::Customer(CustomerEvent::CustomerForgotten { .. }) => T::CustomerForgotten,
        }
    }

    /// The customer whose key seals this event's personal data, if it carries any.
    pub fn sealing_customer(&self) -> Option<CustomerId> {
        match self {
            Event::Reservation(ReservationEvent::CleaningRequested(r)) => Some(r.customer_id),
            Event::Paymethod(PaymethodEvent::PaymethodRegistered { customer_id, .. }) => {
                Some(*customer_id)
            }
            Event::Message(MessageEvent::MessageSent { customer_id, .. }) => Some(*customer_id),
            _ => None,
        }
    }
}

/// Stream names: one stream per aggregate instance.
pub mod streams {
    use domain::{CustomerId, MessageId, PaymentId, PaymethodId, ReservationId};

    pub fn reservation(id: ReservationId) -> String {
        format!("reservation-{id}")
    }
    pub fn payment(id: PaymentId) -> String {
        format!("payment-{id}")
    }
    pub fn paymethod(id: PaymethodId) -> String {
        format!("paymethod-{id}")
    }
    pub fn message(id: MessageId) -> String {
        format!("message-{id}")
    }
    pub fn customer(id: CustomerId) -> String {
        format!("customer-{id}")
    }
}

/// What every event records beside its payload (the client's "custom metadata").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub schema_version: u32,
    /// The request that started the chain; policies pass it on.
    pub correlation_id: Uuid,
    /// What caused this event directly: the command's request id, or the event a policy
    /// reacted to.
    pub causation_id: Uuid,
    /// Who caused it; absent on events written before callers were identified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The trace and span that appended the event (W3C ids in hex), under the keys
    /// KurrentDB's own clients use, so that work done on the event later, in another process,
    /// joins the trace. Absent when traces are off.
    #[serde(rename = "$traceId", default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(rename = "$spanId", default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// Who caused an event: the caller's token subject (an opaque id, never personal data) and
/// the role the action was allowed through. An audit trail for free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    /// customer, cleaner, admin or service.
    pub role: String,
}

impl Metadata {
    pub fn new(correlation_id: Uuid, causation_id: Uuid, actor: Option<Actor>) -> Metadata {
        Metadata {
            schema_version: SCHEMA_VERSION,
            correlation_id,
            causation_id,
            actor,
            trace_id: None,
            span_id: None,
        }
    }

    /// The same, written inside the span `ids` names ([`Metadata::trace_id`]).
    pub fn in_trace(self, ids: Option<(String, String)>) -> Metadata {
        let (trace_id, span_id) = ids.unzip();
        Metadata {
            trace_id,
            span_id,
            ..self
        }
    }
}

/// A deterministic event id: the same request writing the same event to the same stream
/// always gets the same id, so the store recognises a retry and does not write twice.
pub fn event_id(request_id: Uuid, stream: &str, index: usize) -> Uuid {
    Uuid::new_v5(&request_id, format!("{stream}#{index}").as_bytes())
}
