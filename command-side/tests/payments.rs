//! Payment declined means no reservation; payment slow or down means UNAVAILABLE at once, a
//! circuit that opens, and recovery by itself.

mod common;

use std::time::{Duration, Instant};

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_means_no_reservation() {
    let mut s = System::start_with(|c| c.provider.decline_over_cents = 10_000).await;
    let request = apply_request(&new_id(), 10_001);
    let err = s.reservations.apply_reservation(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().starts_with("payment declined"),
        "{}",
        err.message()
    );

    let client = s.store.client();
    let mut all = client.read_all(&Default::default()).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = all.next().await.unwrap() {
        let recorded = e.get_original_event();
        // The store's system projections link what is written into `$` streams.
        if !recorded.stream_id().starts_with('$') {
            kinds.push(recorded.event_type.clone());
        }
    }
    assert_eq!(kinds, ["PaymentDeclined"], "only the decline is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_and_refund_directly() {
    let mut s = System::start().await;
    let payment_id = new_id();
    let pay = PayRequest {
        request_id: new_id(),
        payment_id: payment_id.clone(),
        reservation_id: new_id(),
        amount_cents: 4_200,
        paymethod_kind: "debit_card".into(),
    };
    let paid = s.payments.pay(pay.clone()).await.unwrap().into_inner();
    assert!(paid.approved);
    // Asking again answers with the recorded decision.
    let again = s
        .payments
        .pay(PayRequest {
            request_id: new_id(),
            ..pay
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.result.unwrap().position,
        paid.result.unwrap().position
    );

    let cancel = CancelPaymentRequest {
        request_id: new_id(),
        payment_id: payment_id.clone(),
    };
    let refunded = s
        .payments
        .cancel_payment(cancel)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refunded.revision, 1);
    let err = s
        .payments
        .cancel_payment(CancelPaymentRequest {
            request_id: new_id(),
            payment_id,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "the payment is already cancelled")
    );
    let err = s
        .payments
        .cancel_payment(CancelPaymentRequest {
            request_id: new_id(),
            payment_id: new_id(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// The reservation side calls the payment service apart, which is slow, then gone, then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_down_fails_fast_opens_the_circuit_and_recovers() {
    let store = EventStoreUnderTest::start().await;
    let issuer = issuer().await;
    let slow_payments = CommandSide::payment(&store, &issuer, 0, |c| {
        c.provider.latency = Duration::from_secs(3)
    })
    .await;
    let payment_port = slow_payments.port;
    let reservations = CommandSide::start_alone(&store, &issuer, |c| {
        c.payment_endpoint = format!("http://127.0.0.1:{payment_port}");
        c.payment_timeout = Duration::from_millis(300);
        c.breaker_failures = 2;
        c.breaker_open = Duration::from_millis(800);
    })
    .await;
    let mut client =
        ReservationServiceClient::new(testkit::as_admin(&reservations.channel().await, &issuer));

    // Slow: each call gives up at the deadline, with a retry hint.
    for _ in 0..2 {
        let started = Instant::now();
        let err = client
            .apply_reservation(apply_request(&new_id(), 1_000))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("try again later"));
        assert!(err.get_details_retry_info().is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "did not fail fast: {:?}",
            started.elapsed()
        );
    }
    // Now the circuit is open: refused at once, without calling.
    let started = Instant::now();
    let err = client
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap_err();
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_millis(200));

    // The payment service is replaced by a healthy one on the same port; the circuit closes
    // again by itself: after each pause one trial call goes through.
    slow_payments.stop().await;
    let healthy = CommandSide::payment(&store, &issuer, payment_port, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        match client
            .apply_reservation(apply_request(&new_id(), 1_000))
            .await
        {
            Ok(reply) => break reply.into_inner(),
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("never recovered: {status:?}"),
        }
    };
    assert_eq!(recovered.revision, 0);
    healthy.stop().await;
    reservations.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_is_unavailable_not_a_decline() {
    let mut s = System::start_with(|c| c.provider.failure_rate = 1.0).await;
    let err = s
        .reservations
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let client = s.store.client();
    let mut all = client.read_all(&Default::default()).await.unwrap();
    assert!(all.next().await.unwrap().is_none(), "nothing recorded");
}

/// A client retrying `ApplyReservation` long after its first try: if the payment of that try
/// was refunded as an orphan (its reservation never recorded), the retry is refused with the
/// reason instead of recording a reservation on refunded money; a retry of a request whose
/// reservation was recorded (and cancelled and refunded since) still gets its original answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunded_payment_is_never_reused_by_a_retry() {
    let mut s = System::start().await;
    let first_try = apply_request(&new_id(), 3_000);
    let request_id = uuid::Uuid::parse_str(&first_try.request_id).unwrap();
    let derived = |what: &str| uuid::Uuid::new_v5(&request_id, what.as_bytes()).to_string();
    // The first try paid, then the command side stopped before recording; the orphan policy
    // refunded the payment.
    s.payments
        .pay(PayRequest {
            request_id: derived("pay"),
            payment_id: derived("payment"),
            reservation_id: derived("reservation"),
            amount_cents: 3_000,
            paymethod_kind: "credit_card".into(),
        })
        .await
        .unwrap();
    s.payments
        .cancel_payment(CancelPaymentRequest {
            request_id: new_id(),
            payment_id: derived("payment"),
        })
        .await
        .unwrap();
    let err = s
        .reservations
        .apply_reservation(first_try)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("refunded"), "{}", err.message());
    assert!(s
        .stream(&format!("reservation-{}", derived("reservation")))
        .await
        .is_empty());

    // Recorded, cancelled and refunded: a late retry answers as the first time.
    let request = apply_request(&new_id(), 3_000);
    let recorded = s
        .reservations
        .apply_reservation(request.clone())
        .await
        .unwrap()
        .into_inner();
    s.reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: new_id(),
            reservation_id: recorded.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap();
    let events = s.stream(&format!("reservation-{}", recorded.id)).await;
    let payment_id = events[0].1["payment_id"].as_str().unwrap().to_string();
    s.payments
        .cancel_payment(CancelPaymentRequest {
            request_id: new_id(),
            payment_id,
        })
        .await
        .unwrap();
    let again = s
        .reservations
        .apply_reservation(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.id, again.revision), (recorded.id, recorded.revision));
}
