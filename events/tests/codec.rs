//! Every event round-trips; personal data never appears in a payload; a destroyed key erases
//! exactly the personal fields.

use chrono::NaiveDate;
use domain::customer::CustomerEvent;
use domain::message::MessageEvent;
use domain::payment::PaymentEvent;
use domain::paymethod::PaymethodEvent;
use domain::reservation::{CleaningRequested, ReservationEvent};
use domain::*;
use events::sealing::CustomerKey;
use events::{decode, encode, sealing_key_id, CodecError, Event};

fn all_events(customer_id: CustomerId) -> Vec<Event> {
    let reservation_id = ReservationId::new();
    let payment_id = PaymentId::new();
    let paymethod_id = PaymethodId::new();
    let amount = Money::from_cents(12_500).unwrap();
    let masked = MaskedNumber::mask(PaymethodKind::CreditCard, "4111111111111111").unwrap();
    vec![
        Event::Reservation(ReservationEvent::CleaningRequested(CleaningRequested {
            reservation_id,
            customer_id,
            customer_name: Personal::new("Ada Lovelace".into()),
            place: Personal::new("12 Analytical Row".into()),
            request_date: NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(),
            price: amount,
            payment_id,
        })),
        Event::Reservation(ReservationEvent::CleaningStarted {
            reservation_id,
            cleaner: Some("Team B".into()),
        }),
        Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id }),
        Event::Reservation(ReservationEvent::ReservationCancelled {
            reservation_id,
            reason: "moved".into(),
        }),
        Event::Payment(PaymentEvent::PaymentApproved {
            payment_id,
            reservation_id,
            amount,
            paymethod_kind: Some(PaymethodKind::DebitCard),
        }),
        Event::Payment(PaymentEvent::PaymentDeclined {
            payment_id,
            reservation_id,
            amount,
            reason: "insufficient funds".into(),
        }),
        Event::Payment(PaymentEvent::PaymentCancelled {
            payment_id,
            reservation_id,
            amount,
        }),
        Event::Paymethod(PaymethodEvent::PaymethodRegistered {
            paymethod_id,
            customer_id,
            customer_name: Personal::new("Ada Lovelace".into()),
            kind: PaymethodKind::CreditCard,
            masked_number: masked.clone(),
        }),
        Event::Paymethod(PaymethodEvent::PaymethodChanged {
            paymethod_id,
            kind: PaymethodKind::CreditCard,
            masked_number: masked,
        }),
        Event::Message(MessageEvent::MessageSent {
            message_id: MessageId::new(),
            customer_id,
            recipient: Personal::new("ada@example.org".into()),
            reservation_id: Some(reservation_id),
            text: Personal::new(
                "Dear Ada Lovelace, your cleaning at 12 Analytical Row is booked.".into(),
            ),
            cause: "PaymentApproved".into(),
        }),
        Event::Customer(CustomerEvent::CustomerForgotten { customer_id }),
    ]
}

#[test]
fn every_event_round_trips_under_its_stable_name() {
    let customer = CustomerId::new();
    let key = CustomerKey::generate(customer);
    let events = all_events(customer);
    let names: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(names, events::EVENT_TYPES.to_vec());
    for event in events {
        let encoded = encode(&event, Some(&key)).unwrap();
        assert_eq!(encoded.event_type, event.event_type());
        let key_id = sealing_key_id(encoded.event_type, &encoded.data);
        assert_eq!(key_id.is_some(), event.sealing_customer().is_some());
        let decoded = decode(
            encoded.event_type,
            encoded.version,
            &encoded.data,
            Some(&key),
        )
        .unwrap();
        assert_eq!(decoded, event);
    }
}

#[test]
fn no_personal_data_and_no_full_number_in_any_payload() {
    let customer = CustomerId::new();
    let key = CustomerKey::generate(customer);
    for event in all_events(customer) {
        let text = String::from_utf8(encode(&event, Some(&key)).unwrap().data).unwrap();
        for secret in [
            "Ada",
            "Lovelace",
            "Analytical",
            "ada@example.org",
            "4111111111111111",
        ] {
            assert!(
                !text.contains(secret),
                "{} leaks {secret}: {text}",
                event.event_type()
            );
        }
    }
}

#[test]
fn without_the_key_personal_fields_are_erased_and_the_rest_stays() {
    let customer = CustomerId::new();
    let key = CustomerKey::generate(customer);
    for event in all_events(customer) {
        let encoded = encode(&event, Some(&key)).unwrap();
        let decoded = decode(encoded.event_type, encoded.version, &encoded.data, None).unwrap();
        match (&event, &decoded) {
            (
                Event::Reservation(ReservationEvent::CleaningRequested(before)),
                Event::Reservation(ReservationEvent::CleaningRequested(after)),
            ) => {
                assert!(after.customer_name.is_erased() && after.place.is_erased());
                assert_eq!(
                    (after.price, after.request_date, after.payment_id),
                    (before.price, before.request_date, before.payment_id)
                );
            }
            (
                Event::Message(MessageEvent::MessageSent { cause, .. }),
                Event::Message(MessageEvent::MessageSent {
                    recipient,
                    text,
                    cause: after_cause,
                    ..
                }),
            ) => {
                assert!(recipient.is_erased() && text.is_erased());
                assert_eq!(cause, after_cause);
            }
            (
                Event::Paymethod(PaymethodEvent::PaymethodRegistered { masked_number, .. }),
                Event::Paymethod(PaymethodEvent::PaymethodRegistered {
                    customer_name,
                    masked_number: after,
                    ..
                }),
            ) => {
                assert!(customer_name.is_erased());
                assert_eq!(masked_number, after);
            }
            _ => assert_eq!(&decoded, &event, "events without personal data need no key"),
        }
    }
}

#[test]
fn personal_events_cannot_be_written_without_a_key() {
    let event = all_events(CustomerId::new()).remove(0);
    assert!(matches!(
        encode(&event, None),
        Err(CodecError::KeyRequired("CleaningRequested"))
    ));
}

#[test]
fn unknown_types_versions_and_payloads_are_errors_not_panics() {
    assert!(matches!(
        decode("Nope", 1, b"{}", None),
        Err(CodecError::UnknownType(_))
    ));
    assert!(matches!(
        decode("CleaningCompleted", 9, b"{}", None),
        Err(CodecError::UnknownVersion { .. })
    ));
    assert!(matches!(
        decode("CleaningCompleted", 1, b"{not json", None),
        Err(CodecError::Malformed { .. })
    ));
    assert!(matches!(
        decode("PaymentApproved", 1, br#"{"payment_id":"x"}"#, None),
        Err(CodecError::Malformed { .. })
    ));
}

/// `CleaningRequested` as version 1 stored it (`price_cents`), from today's payload.
fn as_version_1(data: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
    let fields = v.as_object_mut().unwrap();
    let price = fields.remove("price").unwrap();
    fields.insert("price_cents".into(), price["cents"].clone());
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_version_1_cleaning_requested_reads_as_the_same_event() {
    let customer = CustomerId::new();
    let key = CustomerKey::generate(customer);
    let event = all_events(customer).remove(0);
    let encoded = encode(&event, Some(&key)).unwrap();
    assert_eq!(
        (encoded.event_type, encoded.version),
        ("CleaningRequested", 2)
    );
    let stored = as_version_1(&encoded.data);
    assert!(!String::from_utf8_lossy(&stored).contains("currency"));
    assert_eq!(
        decode("CleaningRequested", 1, &stored, Some(&key)).unwrap(),
        event
    );
    assert_eq!(
        decode("CleaningRequested", 2, &encoded.data, Some(&key)).unwrap(),
        event
    );
    // A version-1 payload read as version 2, or a version never written, is an error.
    assert!(matches!(
        decode("CleaningRequested", 2, &stored, Some(&key)),
        Err(CodecError::Malformed { .. })
    ));
    assert!(matches!(
        decode("CleaningRequested", 3, &encoded.data, Some(&key)),
        Err(CodecError::UnknownVersion { version: 3, .. })
    ));
}

#[test]
fn a_price_in_a_currency_the_business_does_not_use_is_refused() {
    let customer = CustomerId::new();
    let key = CustomerKey::generate(customer);
    let encoded = encode(&all_events(customer).remove(0), Some(&key)).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&encoded.data).unwrap();
    v["price"]["currency"] = "USD".into();
    let error = decode(
        "CleaningRequested",
        2,
        &serde_json::to_vec(&v).unwrap(),
        Some(&key),
    )
    .unwrap_err();
    assert!(error.to_string().contains("USD"), "{error}");
}

#[test]
fn event_ids_are_deterministic_per_request_stream_and_index() {
    let request = uuid::Uuid::new_v4();
    assert_eq!(
        events::event_id(request, "reservation-1", 0),
        events::event_id(request, "reservation-1", 0)
    );
    assert_ne!(
        events::event_id(request, "reservation-1", 0),
        events::event_id(request, "reservation-1", 1)
    );
    assert_ne!(
        events::event_id(request, "reservation-1", 0),
        events::event_id(request, "payment-1", 0)
    );
}
