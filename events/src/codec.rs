//! Domain events to stored events and back: stable type names, versioned JSON payloads, and
//! personal fields sealed with the customer's key.

use std::borrow::Cow;

use chrono::NaiveDate;
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::{CleaningRequested, ReservationEvent};
use domain::{CustomerId, MaskedNumber, Money, PaymethodKind, Personal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sealing::{open, seal, Context, CustomerKey, Sealed};
use crate::{Event, EventType};

/// The payload version of an event whose metadata does not say (the first). Each type's
/// current version is [`EventType::version`]; [`decode`] upcasts older ones.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("{event_type} has no schema version {version}")]
    UnknownVersion { event_type: String, version: u32 },
    #[error("malformed {event_type} payload: {error}")]
    Malformed {
        event_type: String,
        error: serde_json::Error,
    },
    #[error("{0} holds personal data and needs its customer's key")]
    KeyRequired(&'static str),
}

/// An event ready to append: its type name, JSON payload and the payload's version (which
/// the metadata records).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub event_type: &'static str,
    pub version: u32,
    pub data: Vec<u8>,
}

// The stored shapes (version 1). Field names are the contract: change them only with a new
// version and an upgrade in `decode`.

#[derive(Serialize, Deserialize)]
struct CleaningRequestedV2 {
    reservation_id: Uuid,
    customer_id: Uuid,
    customer_name: Sealed,
    place: Sealed,
    request_date: NaiveDate,
    price: PriceV2,
    payment_id: Uuid,
}

/// A price with its currency: the business prices in euros; a stored price in any other
/// currency is refused rather than read as euros.
#[derive(Serialize, Deserialize)]
struct PriceV2 {
    cents: u64,
    currency: String,
}

/// The one currency the business prices in.
const CURRENCY: &str = "EUR";

#[derive(Serialize, Deserialize)]
struct CleaningStartedV1 {
    reservation_id: Uuid,
    cleaner: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ReservationOnlyV1 {
    reservation_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct ReservationCancelledV1 {
    reservation_id: Uuid,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct PaymentV1 {
    payment_id: Uuid,
    reservation_id: Uuid,
    amount_cents: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paymethod_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct PaymethodRegisteredV1 {
    paymethod_id: Uuid,
    customer_id: Uuid,
    customer_name: Sealed,
    kind: String,
    masked_number: String,
}

#[derive(Serialize, Deserialize)]
struct PaymethodChangedV1 {
    paymethod_id: Uuid,
    kind: String,
    masked_number: String,
}

#[derive(Serialize, Deserialize)]
struct MessageSentV1 {
    message_id: Uuid,
    customer_id: Uuid,
    recipient: Sealed,
    reservation_id: Option<Uuid>,
    text: Sealed,
    cause: String,
}

#[derive(Serialize, Deserialize)]
struct CustomerForgottenV1 {
    customer_id: Uuid,
}

/// Encodes `event`; `key` must be the key of [`Event::sealing_customer`] when there is one.
pub fn encode(event: &Event, key: Option<&CustomerKey>) -> Result<Encoded, CodecError> {
    let event_type = event.event_type();
    let sealer = |field: &str, value: &Personal<String>| -> Result<Sealed, CodecError> {
        let key = key.ok_or(CodecError::KeyRequired(event_type))?;
        Ok(seal(
            key,
            Context { event_type, field },
            value.expose().map(String::as_str).unwrap_or_default(),
        ))
    };
    let json = match event {
        Event::Reservation(ReservationEvent::CleaningRequested(r)) => {
            serde_json::to_vec(&CleaningRequestedV2 {
                reservation_id: r.reservation_id.uuid(),
                customer_id: r.customer_id.uuid(),
                customer_name: sealer("customer_name", &r.customer_name)?,
                place: sealer("place", &r.place)?,
                request_date: r.request_date,
                price: PriceV2 {
                    cents: r.price.cents(),
                    currency: CURRENCY.into(),
                },
                payment_id: r.payment_id.uuid(),
            })
        }
        Event::Reservation(ReservationEvent::CleaningStarted {
            reservation_id,
            cleaner,
        }) => serde_json::to_vec(&CleaningStartedV1 {
            reservation_id: reservation_id.uuid(),
            cleaner: cleaner.clone(),
        }),
        Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }) => {
            serde_json::to_vec(&ReservationOnlyV1 {
                reservation_id: reservation_id.uuid(),
            })
        }
        Event::Reservation(ReservationEvent::ReservationCancelled {
            reservation_id,
            reason,
        }) => serde_json::to_vec(&ReservationCancelledV1 {
            reservation_id: reservation_id.uuid(),
            reason: reason.clone(),
        }),
        Event::Payment(p) => serde_json::to_vec(&match p {
            PaymentEvent::PaymentApproved {
                payment_id,
                reservation_id,
                amount,
                paymethod_kind,
            } => PaymentV1 {
                payment_id: payment_id.uuid(),
                reservation_id: reservation_id.uuid(),
                amount_cents: amount.cents(),
                paymethod_kind: paymethod_kind.map(|k| k.as_str().to_string()),
                reason: None,
            },
            PaymentEvent::PaymentDeclined {
                payment_id,
                reservation_id,
                amount,
                reason,
            } => PaymentV1 {
                payment_id: payment_id.uuid(),
                reservation_id: reservation_id.uuid(),
                amount_cents: amount.cents(),
                paymethod_kind: None,
                reason: Some(reason.clone()),
            },
            PaymentEvent::PaymentCancelled {
                payment_id,
                reservation_id,
                amount,
            } => PaymentV1 {
                payment_id: payment_id.uuid(),
                reservation_id: reservation_id.uuid(),
                amount_cents: amount.cents(),
                paymethod_kind: None,
                reason: None,
            },
        }),
        Event::Paymethod(PaymethodEvent::PaymethodRegistered {
            paymethod_id,
            customer_id,
            customer_name,
            kind,
            masked_number,
        }) => serde_json::to_vec(&PaymethodRegisteredV1 {
            paymethod_id: paymethod_id.uuid(),
            customer_id: customer_id.uuid(),
            customer_name: sealer("customer_name", customer_name)?,
            kind: kind.as_str().to_string(),
            masked_number: masked_number.as_str().to_string(),
        }),
        Event::Paymethod(PaymethodEvent::PaymethodChanged {
            paymethod_id,
            kind,
            masked_number,
        }) => serde_json::to_vec(&PaymethodChangedV1 {
            paymethod_id: paymethod_id.uuid(),
            kind: kind.as_str().to_string(),
            masked_number: masked_number.as_str().to_string(),
        }),
        Event::Message(MessageEvent::MessageSent {
            message_id,
            customer_id,
            recipient,
            reservation_id,
            text,
            cause,
        }) => serde_json::to_vec(&MessageSentV1 {
            message_id: message_id.uuid(),
            customer_id: customer_id.uuid(),
            recipient: sealer("recipient", recipient)?,
            reservation_id: reservation_id.map(|r| r.uuid()),
            text: sealer("text", text)?,
            cause: cause.clone(),
        }),
        Event::Customer(CustomerEvent::CustomerForgotten { customer_id }) => {
            serde_json::to_vec(&CustomerForgottenV1 {
                customer_id: customer_id.uuid(),
            })
        }
    };
    let data = json.map_err(|error| CodecError::Malformed {
        event_type: event_type.to_string(),
        error,
    })?;
    Ok(Encoded {
        event_type,
        version: event.kind().version(),
        data,
    })
}

/// The id of the key that sealed a stored event's personal data, if it has any, so that the
/// reader can fetch it before [`decode`].
pub fn sealing_key_id(event_type: &str, data: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        customer_id: Option<Uuid>,
    }
    if !EventType::from_name(event_type).is_some_and(EventType::is_sealed) {
        return None;
    }
    serde_json::from_slice::<Probe>(data)
        .ok()
        .and_then(|p| p.customer_id)
        .map(|c| crate::sealing::key_id(CustomerId::from(c)))
}

/// Decodes a stored event as the event store hands it over: its type, its payload and its
/// metadata, which says the payload's version (an event without readable metadata is taken
/// as today's version, and comes back without metadata). The one way every reader (the command
/// side's loads, the projector, the policies) reads the log.
pub fn decode_stored(
    event_type: &str,
    data: &[u8],
    metadata: &[u8],
    key: Option<&CustomerKey>,
) -> Result<(Event, Option<crate::Metadata>), CodecError> {
    let metadata = serde_json::from_slice::<crate::Metadata>(metadata).ok();
    let version = metadata
        .as_ref()
        .map_or(SCHEMA_VERSION, |m| m.schema_version);
    Ok((decode(event_type, version, data, key)?, metadata))
}

/// Decodes a stored event. Personal fields whose key is missing (the customer was forgotten)
/// come back erased; everything else is intact.
pub fn decode(
    event_type: &str,
    version: u32,
    data: &[u8],
    key: Option<&CustomerKey>,
) -> Result<Event, CodecError> {
    let Some(stored) = EventType::from_name(event_type) else {
        return Err(CodecError::UnknownType(event_type.to_string()));
    };
    let data = upcast(stored, version, data)?;
    let data = data.as_ref();
    let malformed = |error| CodecError::Malformed {
        event_type: event_type.to_string(),
        error,
    };
    let opener = |field: &str, sealed: &Sealed| -> Personal<String> {
        match open(key, Context { event_type, field }, sealed) {
            Some(plain) => Personal::new(plain),
            None => Personal::erased(),
        }
    };
    let kind = |text: &str| {
        PaymethodKind::parse(text).map_err(|_| {
            malformed(serde::de::Error::custom(format!(
                "unknown paymethod kind {text}"
            )))
        })
    };
    // One arm per stored type: a type without its decoding does not compile.
    use EventType as T;
    Ok(match stored {
        T::CleaningRequested => {
            let v: CleaningRequestedV2 = serde_json::from_slice(data).map_err(malformed)?;
            if v.price.currency != CURRENCY {
                return Err(malformed(serde::de::Error::custom(format!(
                    "a price in {}, not {CURRENCY}",
                    v.price.currency
                ))));
            }
            Event::Reservation(ReservationEvent::CleaningRequested(CleaningRequested {
                reservation_id: v.reservation_id.into(),
                customer_id: v.customer_id.into(),
                customer_name: opener("customer_name", &v.customer_name),
                place: opener("place", &v.place),
                request_date: v.request_date,
                price: Money::from_stored_cents(v.price.cents),
                payment_id: v.payment_id.into(),
            }))
        }
        T::CleaningStarted => {
            let v: CleaningStartedV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Reservation(ReservationEvent::CleaningStarted {
                reservation_id: v.reservation_id.into(),
                cleaner: v.cleaner,
            })
        }
        T::CleaningCompleted => {
            let v: ReservationOnlyV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Reservation(ReservationEvent::CleaningCompleted {
                reservation_id: v.reservation_id.into(),
            })
        }
        T::ReservationCancelled => {
            let v: ReservationCancelledV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Reservation(ReservationEvent::ReservationCancelled {
                reservation_id: v.reservation_id.into(),
                reason: v.reason,
            })
        }
        T::PaymentApproved | T::PaymentDeclined | T::PaymentCancelled => {
            let v: PaymentV1 = serde_json::from_slice(data).map_err(malformed)?;
            let (payment_id, reservation_id, amount) = (
                v.payment_id.into(),
                v.reservation_id.into(),
                Money::from_stored_cents(v.amount_cents),
            );
            Event::Payment(match stored {
                T::PaymentApproved => PaymentEvent::PaymentApproved {
                    payment_id,
                    reservation_id,
                    amount,
                    paymethod_kind: v.paymethod_kind.as_deref().map(kind).transpose()?,
                },
                T::PaymentDeclined => PaymentEvent::PaymentDeclined {
                    payment_id,
                    reservation_id,
                    amount,
                    reason: v.reason.unwrap_or_default(),
                },
                _ => PaymentEvent::PaymentCancelled {
                    payment_id,
                    reservation_id,
                    amount,
                },
            })
        }
        T::PaymethodRegistered => {
            let v: PaymethodRegisteredV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                paymethod_id: v.paymethod_id.into(),
                customer_id: v.customer_id.into(),
                customer_name: opener("customer_name", &v.customer_name),
                kind: kind(&v.kind)?,
                masked_number: MaskedNumber::from_masked(v.masked_number),
            })
        }
        T::PaymethodChanged => {
            let v: PaymethodChangedV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Paymethod(PaymethodEvent::PaymethodChanged {
                paymethod_id: v.paymethod_id.into(),
                kind: kind(&v.kind)?,
                masked_number: MaskedNumber::from_masked(v.masked_number),
            })
        }
        T::MessageSent => {
            let v: MessageSentV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Message(MessageEvent::MessageSent {
                message_id: v.message_id.into(),
                customer_id: v.customer_id.into(),
                recipient: opener("recipient", &v.recipient),
                reservation_id: v.reservation_id.map(Into::into),
                text: opener("text", &v.text),
                cause: v.cause,
            })
        }
        T::CustomerForgotten => {
            let v: CustomerForgottenV1 = serde_json::from_slice(data).map_err(malformed)?;
            Event::Customer(CustomerEvent::CustomerForgotten {
                customer_id: v.customer_id.into(),
            })
        }
    })
}

/// A stored payload of `version` in the shape of its type's current version. The one place
/// where old shapes are known: every reader goes through [`decode`], so the rest of the system
/// only ever sees the current one. To change a payload: declare the new version on its type
/// (`@ v3`), write the new shape in [`encode`] and [`decode`], and add the step from the
/// previous version here; stored events are never rewritten.
fn upcast(stored: EventType, version: u32, data: &[u8]) -> Result<Cow<'_, [u8]>, CodecError> {
    let current = stored.version();
    if version == 0 || version > current {
        return Err(CodecError::UnknownVersion {
            event_type: stored.name().to_string(),
            version,
        });
    }
    if version == current {
        return Ok(Cow::Borrowed(data));
    }
    let malformed = |error| CodecError::Malformed {
        event_type: stored.name().to_string(),
        error,
    };
    let mut payload: serde_json::Value = serde_json::from_slice(data).map_err(malformed)?;
    for from in version..current {
        payload = match (stored, from) {
            // v1 -> v2: `price_cents` becomes `price: {cents, currency}`; v1 prices were euros.
            (EventType::CleaningRequested, 1) => {
                let mut fields = match payload {
                    serde_json::Value::Object(fields) => fields,
                    _ => return Err(malformed(serde::de::Error::custom("not an object"))),
                };
                let cents = fields
                    .remove("price_cents")
                    .ok_or_else(|| malformed(serde::de::Error::missing_field("price_cents")))?;
                fields.insert(
                    "price".into(),
                    serde_json::json!({ "cents": cents, "currency": CURRENCY }),
                );
                serde_json::Value::Object(fields)
            }
            _ => {
                return Err(CodecError::UnknownVersion {
                    event_type: stored.name().to_string(),
                    version: from,
                })
            }
        };
    }
    serde_json::to_vec(&payload)
        .map(Cow::Owned)
        .map_err(malformed)
}
