//! ReservationService through a real gRPC client against the real event store.

mod common;

use command_side::proto::*;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_pays_then_records_the_reservation() {
    let mut s = System::start().await;
    let customer = new_id();
    let mut request = tonic::Request::new(apply_request(&customer, 12_500));
    let correlation = new_id();
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.parse().unwrap());
    let response = s.reservations.apply_reservation(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-correlation-id").unwrap(),
        correlation.as_str()
    );
    let reply = response.into_inner();
    assert_eq!(
        (reply.revision, reply.correlation_id.as_str()),
        (0, correlation.as_str())
    );
    assert!(reply.position > 0);

    let reservation = s.stream(&format!("reservation-{}", reply.id)).await;
    assert_eq!(reservation.len(), 1);
    let (kind, data, metadata) = &reservation[0];
    assert_eq!(kind, "CleaningRequested");
    assert_eq!(
        data["price"],
        serde_json::json!({ "cents": 12_500, "currency": "EUR" })
    );
    assert_eq!(data["customer_id"], customer.as_str());
    assert_eq!(metadata["correlation_id"], correlation.as_str());
    // CleaningRequested is written in its second version.
    assert_eq!(metadata["schema_version"], 2);
    // Personal data is sealed, never in the clear.
    let raw = data.to_string();
    assert!(!raw.contains("Ada") && !raw.contains("Analytical"), "{raw}");
    assert!(data["customer_name"]["data"].is_string());

    // The payment it made, under the same correlation.
    let payment = s
        .stream(&format!("payment-{}", data["payment_id"].as_str().unwrap()))
        .await;
    assert_eq!(payment[0].0, "PaymentApproved");
    assert_eq!(payment[0].2["correlation_id"], correlation.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_runs_in_order_and_refuses_everything_else() {
    let mut s = System::start().await;
    let id = s
        .reservations
        .apply_reservation(apply_request(&new_id(), 9_000))
        .await
        .unwrap()
        .into_inner()
        .id;
    let start = |id: &str| StartCleaningRequest {
        request_id: new_id(),
        reservation_id: id.into(),
        cleaner: "Team B".into(),
    };
    let complete = |id: &str| CompleteCleaningRequest {
        request_id: new_id(),
        reservation_id: id.into(),
    };
    let cancel = |id: &str| CancelReservationRequest {
        request_id: new_id(),
        reservation_id: id.into(),
        reason: "moved".into(),
    };

    let err = s
        .reservations
        .complete_cleaning(complete(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("not started"), "{}", err.message());

    let started = s
        .reservations
        .start_cleaning(start(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.revision, 1);
    let err = s.reservations.start_cleaning(start(&id)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "cleaning has already started")
    );
    let err = s
        .reservations
        .cancel_reservation(cancel(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let completed = s
        .reservations
        .complete_cleaning(complete(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completed.revision, 2);
    assert!(completed.position > started.position);
    let err = s.reservations.start_cleaning(start(&id)).await.unwrap_err();
    assert_eq!(err.message(), "cleaning is already completed");

    // Cancel a fresh one; nothing after that.
    let other = s
        .reservations
        .apply_reservation(apply_request(&new_id(), 9_000))
        .await
        .unwrap()
        .into_inner()
        .id;
    s.reservations
        .cancel_reservation(cancel(&other))
        .await
        .unwrap();
    let err = s
        .reservations
        .start_cleaning(start(&other))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "the reservation is cancelled");
    let kinds: Vec<String> = s
        .stream(&format!("reservation-{other}"))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(kinds, ["CleaningRequested", "ReservationCancelled"]);

    // An unknown reservation.
    let err = s
        .reservations
        .start_cleaning(start(&new_id()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_every_field_and_writes_nothing() {
    let mut s = System::start().await;
    let request = ApplyReservationRequest {
        request_id: "not-a-uuid".into(),
        customer_id: "".into(),
        customer_name: " ".into(),
        place: "x".repeat(501),
        request_date: "31/12/2026".into(),
        price_cents: -5,
        paymethod_kind: "cash".into(),
    };
    let err = s.reservations.apply_reservation(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "customer_id",
            "customer_name",
            "paymethod_kind",
            "place",
            "price_cents",
            "request_date",
            "request_id"
        ]
    );

    let mut past = apply_request(&new_id(), 100);
    past.request_date = "2020-01-01".into();
    let err = s.reservations.apply_reservation(past).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["request_date"]);

    let err = s
        .reservations
        .start_cleaning(StartCleaningRequest {
            request_id: new_id(),
            reservation_id: "42".into(),
            cleaner: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violated_fields(&err)),
        (Code::InvalidArgument, vec!["reservation_id".to_string()])
    );
    // Nothing reached the store.
    let client = s.store.client();
    let mut all = client.read_all(&Default::default()).await.unwrap();
    assert!(all.next().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_returns_the_original_result() {
    let mut s = System::start().await;
    let request = apply_request(&new_id(), 7_000);
    let first = s
        .reservations
        .apply_reservation(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = s
        .reservations
        .apply_reservation(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.id.as_str(), again.revision, again.position),
        (first.id.as_str(), first.revision, first.position)
    );

    let start = StartCleaningRequest {
        request_id: new_id(),
        reservation_id: first.id.clone(),
        cleaner: String::new(),
    };
    let started = s
        .reservations
        .start_cleaning(start.clone())
        .await
        .unwrap()
        .into_inner();
    let again = s
        .reservations
        .start_cleaning(start)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.revision, again.position),
        (started.revision, started.position)
    );
    let kinds: Vec<String> = s
        .stream(&format!("reservation-{}", first.id))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(kinds, ["CleaningRequested", "CleaningStarted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_reservation_apply_once() {
    let mut s = System::start().await;
    let id = s
        .reservations
        .apply_reservation(apply_request(&new_id(), 5_000))
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let mut client = s.reservations.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .start_cleaning(StartCleaningRequest {
                    request_id: new_id(),
                    reservation_id: id,
                    cleaner: String::new(),
                })
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                "{status:?}"
            ),
        }
    }
    assert_eq!(won, 1);
    let kinds: Vec<String> = s
        .stream(&format!("reservation-{id}"))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(kinds, ["CleaningRequested", "CleaningStarted"]);
}
