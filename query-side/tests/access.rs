//! Who may read what, over HTTP against the running query side: every data route for every
//! role as `access::rules` says (403 where a role may not read at all), a customer sees only
//! their own (someone else's is 404 or an empty list, as if it did not exist), a missing or
//! bad token is 401 with the RFC 6750 challenge, and what orchestrators poll stays open.

mod common;

use std::time::Duration;

use access::rules::rule;
use access::{Action, Role, Scope};
use command_side::proto::message_service_client::MessageServiceClient;
use command_side::proto::paymethod_service_client::PaymethodServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use serde_json::Value;

struct Setup {
    http: String,
    issuer: dev_issuer::Issuer,
    ada: String,
    reservation: String,
    _running: testkit::Running,
}

async fn start() -> Setup {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, Duration::from_secs(5)).await;

    // Ada's reservation, payment method and a message, applied by Ada herself.
    let ada = uuid::Uuid::new_v4().to_string();
    let as_ada = running.commands_as(Role::Customer, &ada);
    let reservation = ReservationServiceClient::new(as_ada.clone())
        .apply_reservation(testkit::apply_request(&ada, 5_000))
        .await
        .unwrap()
        .into_inner();
    PaymethodServiceClient::new(as_ada)
        .register_paymethod(RegisterPaymethodRequest {
            request_id: String::new(),
            customer_id: String::new(),
            customer_name: "Ada Lovelace".into(),
            kind: "credit_card".into(),
            number: "4111 1111 1111 1111".into(),
        })
        .await
        .unwrap();
    let last = MessageServiceClient::new(running.commands.clone())
        .send_message(SendMessageRequest {
            request_id: String::new(),
            customer_id: ada.clone(),
            recipient: "ada@example.org".into(),
            reservation_id: reservation.id.clone(),
            text: "See you".into(),
            cause: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let setup = Setup {
        http,
        issuer: running.issuer.clone(),
        ada,
        reservation: reservation.id,
        _running: running,
    };
    let (status, _) = setup
        .get(
            Some(Role::Admin),
            "admin-1",
            &format!("/dashboard?min_position={}", last.position),
        )
        .await;
    assert_eq!(status, 200);
    setup
}

impl Setup {
    async fn get(&self, role: Option<Role>, subject: &str, path: &str) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.http));
        if let Some(role) = role {
            let token = self
                .issuer
                .token(subject, &[role], Duration::from_secs(60))
                .unwrap();
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every data route, with the action the rule table knows it by.
    fn routes(&self) -> Vec<(Action, String)> {
        vec![
            (Action::ReadDashboard, "/dashboard".into()),
            (
                Action::ReadDashboard,
                format!("/dashboard/{}", self.reservation),
            ),
            (
                Action::ReadTimeline,
                format!("/reservations/{}/timeline", self.reservation),
            ),
            (Action::ReadMessages, "/messages".into()),
            (Action::ReadPayments, "/payments".into()),
            (Action::ReadPaymethods, "/paymethods".into()),
            (Action::ReadSummary, "/summary".into()),
        ]
    }
}

fn items(body: &Value) -> usize {
    body["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role_as_the_table_says() {
    let s = start().await;
    for (action, path) in s.routes() {
        for (index, role) in Role::ALL.into_iter().enumerate() {
            let subject = if role == Role::Customer {
                s.ada.clone()
            } else {
                format!("{role}-1")
            };
            let (status, body) = s.get(Some(role), &subject, &path).await;
            match rule(action)[index] {
                Scope::Nothing => {
                    assert_eq!(status, 403, "{role} {path}: {body}");
                    assert!(body["detail"].as_str().unwrap().contains(role.as_str()));
                }
                Scope::Own | Scope::Everything => {
                    assert_eq!(status, 200, "{role} {path}: {body}");
                    // Ada's own data is there for her, and for staff who may see it.
                    if body.get("items").is_some() {
                        assert!(items(&body) >= 1, "{role} {path}: {body}");
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customer_finds_nothing_of_adas() {
    let s = start().await;
    let bob = uuid::Uuid::new_v4().to_string();
    let customer = Some(Role::Customer);
    // Of the routes a customer may use at all.
    for (_, path) in s
        .routes()
        .into_iter()
        .filter(|(action, _)| rule(*action)[0] != Scope::Nothing)
    {
        let (status, body) = s.get(customer, &bob, &path).await;
        if body.get("items").is_some() {
            assert_eq!((status, items(&body)), (200, 0), "{path}: {body}");
        } else {
            assert_eq!(status, 404, "{path}: {body}");
        }
    }
    // Asking by name for Ada's lists finds nothing either; the same as a made-up reservation.
    for list in ["dashboard", "messages", "payments", "paymethods"] {
        let (status, body) = s
            .get(customer, &bob, &format!("/{list}?customer_id={}", s.ada))
            .await;
        assert_eq!((status, items(&body)), (200, 0), "{list}: {body}");
    }
    let (_, theirs) = s
        .get(customer, &bob, &format!("/dashboard/{}", s.reservation))
        .await;
    let (_, nobodys) = s
        .get(
            customer,
            &bob,
            &format!("/dashboard/{}", uuid::Uuid::new_v4()),
        )
        .await;
    assert_eq!(theirs["title"], nobodys["title"]);
    // Ada sees hers, and the timeline says she applied herself and the command side paid
    // with its own identity.
    let (status, timeline) = s
        .get(
            customer,
            &s.ada,
            &format!("/reservations/{}/timeline", s.reservation),
        )
        .await;
    assert_eq!(status, 200);
    let actor = |event_type: &str| {
        timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == event_type)
            .map(|e| e["actor"].clone())
    };
    assert_eq!(
        actor("CleaningRequested"),
        Some(serde_json::json!({"subject": s.ada, "role": "customer"}))
    );
    assert_eq!(
        actor("PaymentApproved"),
        Some(serde_json::json!({"subject": "cleaning-park-services", "role": "service"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_it_is_401_with_a_challenge_and_the_operations_stay_open() {
    let s = start().await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/dashboard", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"cleaning-park\""
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let expired = s
        .issuer
        .sign_claims(&serde_json::json!({
            "iss": s.issuer.url(), "aud": "cleaning-park", "sub": "admin-1", "roles": ["admin"],
            "exp": 1_000_000_000u64,
        }))
        .unwrap();
    let response = client
        .get(format!("{}/payments", s.http))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("expired"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 401);

    for open in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/auth/config",
    ] {
        let response = client
            .get(format!("{}{open}", s.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{open}");
    }
    let config: Value = client
        .get(format!("{}/auth/config", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["issuer"], s.issuer.url());
    assert_eq!(config["client_id"], "cleaning-park-page");
}
