//! The README's first command, as a new user runs it: `park` with no database given starts its
//! own PostgreSQL, and the business scenario runs end to end through gRPC and HTTP: apply, see
//! it on the dashboard, start and complete the cleaning, cancel another and watch the refund and
//! the messages; then Ctrl-C stops everything cleanly. Every call carries a token printed by
//! `park token`, as the README tells a person to get one: the customer applies, cancels and
//! reads their own, a cleaner starts and completes.

mod common;

use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use serde_json::Value;
use tokio::process::Command;

use common::{park_token, Ports};

/// A gRPC channel whose calls carry `token`.
fn with_token(
    channel: &tonic::transport::Channel,
    token: &str,
) -> access::client::AuthorizedChannel {
    access::client::WithToken::new(
        channel.clone(),
        access::client::Credentials::Bearer(token.into()),
    )
}

static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn get(url: &str) -> (u16, Value) {
    let request = reqwest::Client::new().get(url);
    let request = match TOKEN.get() {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `url` until `done` says yes (the read side is eventually consistent).
async fn until(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (status, body) = get(url).await;
        if status == 200 && done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never showed what was expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_business_scenario_on_parks_own_defaults() {
    let data = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let (commands, queries, issuer) = (ports.commands, ports.queries, ports.issuer);
    let mut park = common::park(data.path(), &ports);
    let mut park = park.spawn().unwrap();
    let http = format!("http://127.0.0.1:{queries}");
    until(&format!("{http}/readyz"), |_| true).await;

    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{commands}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let customer = uuid::Uuid::new_v4().to_string();
    let customer_token = park_token(
        data.path(),
        issuer,
        &["--role", "customer", "--customer-id", &customer],
    )
    .await;
    let cleaner_token = park_token(data.path(), issuer, &["--role", "cleaner"]).await;
    TOKEN.set(customer_token.clone()).unwrap();
    let mut reservations = ReservationServiceClient::new(with_token(&channel, &customer_token));
    let mut cleaners = ReservationServiceClient::new(with_token(&channel, &cleaner_token));
    // Without a token nothing is served.
    let refused = ReservationServiceClient::new(channel.clone())
        .start_cleaning(StartCleaningRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(3))
        .format("%Y-%m-%d")
        .to_string();
    let apply = |price_cents| ApplyReservationRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        customer_id: customer.clone(),
        customer_name: "Ada Lovelace".into(),
        place: "12 Analytical Row".into(),
        request_date: date.clone(),
        price_cents,
        paymethod_kind: "credit_card".into(),
    };

    // Apply, and see it on the dashboard (waiting for this very write).
    let kept = reservations
        .apply_reservation(apply(12_500))
        .await
        .unwrap()
        .into_inner();
    let (status, row) = get(&format!(
        "{http}/dashboard/{}?min_position={}",
        kept.id, kept.position
    ))
    .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["status"], "requested");
    assert_eq!(row["customer_name"], "Ada Lovelace");
    assert_eq!(row["payment_status"], "approved");

    // The cleaning company starts and completes it.
    cleaners
        .start_cleaning(StartCleaningRequest {
            request_id: String::new(),
            reservation_id: kept.id.clone(),
            cleaner: "Team B".into(),
        })
        .await
        .unwrap();
    let done = cleaners
        .complete_cleaning(CompleteCleaningRequest {
            request_id: String::new(),
            reservation_id: kept.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, row) = get(&format!(
        "{http}/dashboard/{}?min_position={}",
        kept.id, done.position
    ))
    .await;
    assert_eq!(row["status"], "cleaning_completed");

    // Another, cancelled: the refund and the messages follow by themselves.
    let other = reservations
        .apply_reservation(apply(4_000))
        .await
        .unwrap()
        .into_inner();
    reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: other.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap();
    until(&format!("{http}/dashboard/{}", other.id), |row| {
        row["status"] == "cancelled" && row["payment_status"] == "refunded"
    })
    .await;
    let messages = until(&format!("{http}/messages?customer_id={customer}"), |page| {
        page["items"]
            .as_array()
            .is_some_and(|items| items.len() >= 6)
    })
    .await;
    let causes: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["cause"].as_str())
        .collect();
    for cause in [
        "PaymentApproved",
        "CleaningStarted",
        "CleaningCompleted",
        "ReservationCancelled",
        "PaymentCancelled",
    ] {
        assert!(causes.contains(&cause), "no {cause} message in {causes:?}");
    }
    let timeline = until(&format!("{http}/reservations/{}/timeline", other.id), |t| {
        t["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event_type"] == "PaymentCancelled"))
    })
    .await;
    assert!(
        timeline["events"].as_array().unwrap().len() >= 4,
        "{timeline}"
    );

    // Ctrl-C stops everything, the database last.
    let pid = park.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(60), park.wait())
        .await
        .expect("park did not stop")
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        get(&format!("{http}/healthz")).await.0,
        0,
        "still answering after stopping"
    );
}
