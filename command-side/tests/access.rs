//! Who may do what, through the real gRPC interface: every RPC for every role, allowed or
//! refused as the table in `access::rules` says; a customer reaches only what is theirs, and
//! someone else's answers exactly as if it did not exist; calls without a valid token are
//! UNAUTHENTICATED; every event records who caused it.

mod common;

use std::time::Duration;

use access::rules::rule;
use access::{Action, Role, Scope};
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use common::*;
use tonic::Code;

/// Who calls in each column of the table.
fn subject(role: Role, customer: &str) -> String {
    match role {
        Role::Customer => customer.to_string(),
        other => format!("{other}-1"),
    }
}

fn column(role: Role) -> usize {
    Role::ALL.iter().position(|r| *r == role).unwrap()
}

/// Makes what `action` needs (as an administrator), then calls it as `clients`, with requests
/// that succeed whenever the caller may make them.
async fn call(
    s: &mut System,
    clients: &mut Clients,
    action: Action,
    customer: &str,
) -> Result<(), tonic::Status> {
    let reservation = |s: &mut System| {
        let mut admin = s.reservations.clone();
        let request = apply_request(customer, 1_000);
        async move {
            admin
                .apply_reservation(request)
                .await
                .unwrap()
                .into_inner()
                .id
        }
    };
    let register = RegisterPaymethodRequest {
        request_id: new_id(),
        customer_id: customer.to_string(),
        customer_name: "Ada Lovelace".into(),
        kind: "credit_card".into(),
        number: "4111 1111 1111 1111".into(),
    };
    match action {
        Action::ApplyReservation => {
            clients
                .reservations
                .apply_reservation(apply_request(customer, 1_000))
                .await?;
        }
        Action::CancelReservation => {
            let id = reservation(s).await;
            clients
                .reservations
                .cancel_reservation(CancelReservationRequest {
                    request_id: new_id(),
                    reservation_id: id,
                    reason: "moved".into(),
                })
                .await?;
        }
        Action::StartCleaning | Action::CompleteCleaning => {
            let id = reservation(s).await;
            if action == Action::CompleteCleaning {
                s.reservations
                    .start_cleaning(StartCleaningRequest {
                        request_id: new_id(),
                        reservation_id: id.clone(),
                        cleaner: String::new(),
                    })
                    .await
                    .unwrap();
                clients
                    .reservations
                    .complete_cleaning(CompleteCleaningRequest {
                        request_id: new_id(),
                        reservation_id: id,
                    })
                    .await?;
            } else {
                clients
                    .reservations
                    .start_cleaning(StartCleaningRequest {
                        request_id: new_id(),
                        reservation_id: id,
                        cleaner: "Team B".into(),
                    })
                    .await?;
            }
        }
        Action::Pay => {
            clients
                .payments
                .pay(PayRequest {
                    request_id: new_id(),
                    payment_id: new_id(),
                    reservation_id: new_id(),
                    amount_cents: 1_000,
                    paymethod_kind: String::new(),
                })
                .await?;
        }
        Action::CancelPayment => {
            let payment = new_id();
            s.payments
                .pay(PayRequest {
                    request_id: new_id(),
                    payment_id: payment.clone(),
                    reservation_id: new_id(),
                    amount_cents: 1_000,
                    paymethod_kind: String::new(),
                })
                .await
                .unwrap();
            clients
                .payments
                .cancel_payment(CancelPaymentRequest {
                    request_id: new_id(),
                    payment_id: payment,
                })
                .await?;
        }
        Action::VerifyPaymethod => {
            clients
                .payments
                .verify_paymethod(VerifyPaymethodRequest {
                    kind: "credit_card".into(),
                    number: "4111 1111 1111 1111".into(),
                })
                .await?;
        }
        Action::RegisterPaymethod => {
            clients.paymethods.register_paymethod(register).await?;
        }
        Action::ChangePaymethod => {
            let id = s
                .paymethods
                .register_paymethod(register)
                .await
                .unwrap()
                .into_inner()
                .id;
            clients
                .paymethods
                .change_paymethod(ChangePaymethodRequest {
                    request_id: new_id(),
                    paymethod_id: id,
                    kind: "debit_card".into(),
                    number: "5555 5555 5555 4444".into(),
                })
                .await?;
        }
        Action::SendMessage => {
            clients
                .messages
                .send_message(SendMessageRequest {
                    request_id: new_id(),
                    customer_id: customer.to_string(),
                    recipient: "ada@example.org".into(),
                    reservation_id: String::new(),
                    text: "Hello".into(),
                    cause: String::new(),
                })
                .await?;
        }
        Action::ForgetCustomer => {
            clients
                .customers
                .forget_customer(ForgetCustomerRequest {
                    request_id: new_id(),
                    customer_id: customer.to_string(),
                })
                .await?;
        }
        // The query side's; tested there.
        Action::ReadDashboard
        | Action::ReadTimeline
        | Action::ReadMessages
        | Action::ReadPayments
        | Action::ReadPaymethods
        | Action::ReadSummary => {}
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_role_is_allowed_or_refused_as_the_table_says() {
    let mut s = System::start().await;
    let mut checked = 0;
    let queries = [
        Action::ReadDashboard,
        Action::ReadTimeline,
        Action::ReadMessages,
        Action::ReadPayments,
        Action::ReadPaymethods,
        Action::ReadSummary,
    ];
    for &action in Action::ALL.iter().filter(|a| !queries.contains(a)) {
        for role in Role::ALL {
            // A new customer each time: forgetting one must not spoil the next call.
            let customer = new_id();
            let mut clients = s.as_role(role, &subject(role, &customer));
            let outcome = call(&mut s, &mut clients, action, &customer).await;
            match rule(action)[column(role)] {
                Scope::Nothing => {
                    let status = outcome.expect_err(&format!("{role} may not {action:?}"));
                    assert_eq!(
                        status.code(),
                        Code::PermissionDenied,
                        "{role} {action:?}: {status:?}"
                    );
                    assert!(
                        status.message().contains(role.as_str()),
                        "{}",
                        status.message()
                    );
                }
                Scope::Own | Scope::Everything => {
                    outcome.unwrap_or_else(|e| panic!("{role} may {action:?}: {e:?}"));
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, (Action::ALL.len() - queries.len()) * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reaches_only_their_own_and_the_rest_does_not_exist_for_them() {
    let mut s = System::start().await;
    let (ada, bob) = (new_id(), new_id());
    let ada_reservation = s
        .reservations
        .apply_reservation(apply_request(&ada, 1_000))
        .await
        .unwrap()
        .into_inner()
        .id;
    let ada_paymethod = s
        .paymethods
        .register_paymethod(RegisterPaymethodRequest {
            request_id: new_id(),
            customer_id: ada.clone(),
            customer_name: "Ada".into(),
            kind: "credit_card".into(),
            number: "4111 1111 1111 1111".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut bob_clients = s.as_role(Role::Customer, &bob);

    // Someone else's reservation answers exactly like one that does not exist.
    let cancel = |id: &str| CancelReservationRequest {
        request_id: new_id(),
        reservation_id: id.to_string(),
        reason: "not mine".into(),
    };
    let theirs = bob_clients
        .reservations
        .cancel_reservation(cancel(&ada_reservation))
        .await
        .unwrap_err();
    let nobodys = bob_clients
        .reservations
        .cancel_reservation(cancel(&new_id()))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(
        (theirs.code(), theirs.message()),
        (nobodys.code(), nobodys.message())
    );
    let change = |id: &str| ChangePaymethodRequest {
        request_id: new_id(),
        paymethod_id: id.to_string(),
        kind: "debit_card".into(),
        number: "5555 5555 5555 4444".into(),
    };
    let theirs = bob_clients
        .paymethods
        .change_paymethod(change(&ada_paymethod))
        .await
        .unwrap_err();
    let nobodys = bob_clients
        .paymethods
        .change_paymethod(change(&new_id()))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(theirs.message(), nobodys.message());

    // Acting in someone else's name is refused; leaving the customer out means oneself.
    let err = bob_clients
        .reservations
        .apply_reservation(apply_request(&ada, 1_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("customer_id"), "{}", err.message());
    let err = bob_clients
        .customers
        .forget_customer(ForgetCustomerRequest {
            request_id: new_id(),
            customer_id: ada.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let own = bob_clients
        .reservations
        .apply_reservation(apply_request("", 1_000))
        .await
        .unwrap()
        .into_inner();
    let events = s.stream(&format!("reservation-{}", own.id)).await;
    assert_eq!(events[0].1["customer_id"], bob.as_str());

    // Ada's reservation is untouched, and Ada herself may cancel it.
    let mut ada_clients = s.as_role(Role::Customer, &ada);
    ada_clients
        .reservations
        .cancel_reservation(cancel(&ada_reservation))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_records_who_caused_it_and_payment_acts_as_the_service() {
    let s = System::start().await;
    let ada = new_id();
    let mut ada_clients = s.as_role(Role::Customer, &ada);
    let mut request = tonic::Request::new(apply_request(&ada, 1_000));
    let correlation = new_id();
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.parse().unwrap());
    let applied = ada_clients
        .reservations
        .apply_reservation(request)
        .await
        .unwrap()
        .into_inner();
    let reservation = s.stream(&format!("reservation-{}", applied.id)).await;
    let payment_id = reservation[0].1["payment_id"].as_str().unwrap().to_string();
    assert_eq!(
        reservation[0].2["actor"],
        serde_json::json!({"subject": ada, "role": "customer"})
    );
    assert_eq!(reservation[0].2["correlation_id"], correlation.as_str());
    // The command side paid with its own identity, never the customer's token.
    let payment = s.stream(&format!("payment-{payment_id}")).await;
    assert_eq!(payment[0].0, "PaymentApproved");
    assert_eq!(
        payment[0].2["actor"],
        serde_json::json!({"subject": "cleaning-park-services", "role": "service"})
    );
    assert_eq!(payment[0].2["correlation_id"], correlation.as_str());

    s.as_role(Role::Cleaner, "cleaner-9")
        .reservations
        .start_cleaning(StartCleaningRequest {
            request_id: new_id(),
            reservation_id: applied.id.clone(),
            cleaner: String::new(),
        })
        .await
        .unwrap();
    let reservation = s.stream(&format!("reservation-{}", applied.id)).await;
    assert_eq!(
        reservation[1].2["actor"],
        serde_json::json!({"subject": "cleaner-9", "role": "cleaner"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_with_a_challenge() {
    let s = System::start().await;
    let mut anonymous = ReservationServiceClient::new(s.channel.clone());
    let err = anonymous
        .apply_reservation(apply_request(&new_id(), 1_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.metadata().get("www-authenticate").unwrap(),
        "Bearer realm=\"cleaning-park\""
    );

    let expired = s
        .issuer
        .sign_claims(&serde_json::json!({
            "iss": s.issuer.url(), "aud": "cleaning-park", "sub": "admin-1", "roles": ["admin"],
            "exp": jsonwebtoken_now() - 3600,
        }))
        .unwrap();
    let stranger = dev_issuer::Issuer::ephemeral(s.issuer.url(), "cleaning-park")
        .token("admin-1", &[Role::Admin], Duration::from_secs(60))
        .unwrap();
    for (token, why) in [
        (expired.as_str(), "the token has expired"),
        (stranger.as_str(), "the token is signed with an unknown key"),
        ("not-a-token", "not a signed JWT"),
    ] {
        let mut request = tonic::Request::new(apply_request(&new_id(), 1_000));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let err = anonymous.apply_reservation(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains(why), "{}", err.message());
        let challenge = err
            .metadata()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        // The refusal never repeats the token.
        assert!(!err.message().contains(token) || token.len() < 12);
    }
}

fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_switched_off() {
    let s = System::start_with(|c| c.commands.server.reflection = false).await;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let err = ServerReflectionClient::new(s.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}
