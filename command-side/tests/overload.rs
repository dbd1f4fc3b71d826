//! Overload: more calls at once than the instance serves are refused at once with
//! RESOURCE_EXHAUSTED and a retry hint, the accepted ones complete, and health still answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_refused_at_once_and_the_rest_succeed() {
    let s = System::start_with(|c| {
        c.commands.server.max_concurrent_calls = 2;
        // Every payment takes a while, so that calls overlap.
        c.provider.latency = Duration::from_millis(600);
        c.commands.payment_timeout = Duration::from_secs(5);
    })
    .await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut reservations = s.reservations.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = reservations
                    .apply_reservation(apply_request(&new_id(), 1_000))
                    .await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    // While the house is full, health still answers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    let (mut accepted, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            (Ok(_), _) => accepted += 1,
            (Err(status), took) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.get_details_retry_info().is_some());
                assert!(
                    took < Duration::from_millis(500),
                    "not refused at once: {took:?}"
                );
                shed += 1;
            }
        }
    }
    assert!(accepted >= 2, "accepted {accepted}");
    assert!(shed >= 1, "nothing was shed");
    assert_eq!(accepted + shed, 8);
    // The house empties: calls are served again.
    s.reservations
        .clone()
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_decoding_and_harms_no_one() {
    let mut s = System::start().await;
    let mut huge = apply_request(&new_id(), 1_000);
    huge.customer_name = "x".repeat(command_core::MAX_MESSAGE_BYTES + 1);
    let refused = s.reservations.apply_reservation(huge).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    // The connection and everyone else carry on.
    s.reservations
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap();
}
