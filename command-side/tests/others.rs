//! PaymethodService, MessageService and CustomerService, and what grpcurl needs: reflection
//! (both protocol versions) and health.

mod common;

use command_side::proto::*;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_methods_are_checked_masked_and_changed() {
    let mut s = System::start().await;
    let customer = new_id();
    let register = RegisterPaymethodRequest {
        request_id: new_id(),
        customer_id: customer.clone(),
        customer_name: "Ada Lovelace".into(),
        kind: "credit_card".into(),
        number: "4111 1111 1111 1111".into(),
    };
    let registered = s
        .paymethods
        .register_paymethod(register)
        .await
        .unwrap()
        .into_inner();
    let events = s.stream(&format!("paymethod-{}", registered.id)).await;
    assert_eq!(events[0].0, "PaymethodRegistered");
    assert_eq!(events[0].1["masked_number"], "****1111");
    assert!(!events[0].1.to_string().contains("4111111111111111"));

    let change = ChangePaymethodRequest {
        request_id: new_id(),
        paymethod_id: registered.id.clone(),
        kind: "bank_account".into(),
        number: "DE89 3704 0044 0532 0130 00".into(),
    };
    let changed = s
        .paymethods
        .change_paymethod(change)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.revision, 1);
    assert_eq!(
        s.stream(&format!("paymethod-{}", registered.id)).await[1].1["masked_number"],
        "****3000"
    );

    // The provider refuses numbers ending in 0000 (the simulated rule); bad numbers are invalid.
    let refused = RegisterPaymethodRequest {
        request_id: new_id(),
        customer_id: customer.clone(),
        customer_name: "Ada".into(),
        kind: "bank_account".into(),
        number: "NL91ABNA0417160000".into(),
    };
    let err = s.paymethods.register_paymethod(refused).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let invalid = RegisterPaymethodRequest {
        request_id: new_id(),
        customer_id: customer,
        customer_name: "Ada".into(),
        kind: "credit_card".into(),
        number: "4111 1111 1111 1112".into(),
    };
    let err = s.paymethods.register_paymethod(invalid).await.unwrap_err();
    assert_eq!(
        (err.code(), violated_fields(&err)),
        (Code::InvalidArgument, vec!["number".to_string()])
    );
    let err = s
        .paymethods
        .change_paymethod(ChangePaymethodRequest {
            request_id: new_id(),
            paymethod_id: new_id(),
            kind: "credit_card".into(),
            number: "4111111111111111".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sent_once_per_request() {
    let mut s = System::start().await;
    let send = SendMessageRequest {
        request_id: new_id(),
        customer_id: new_id(),
        recipient: "ada@example.org".into(),
        reservation_id: String::new(),
        text: "Your cleaning is tomorrow.".into(),
        cause: String::new(),
    };
    let sent = s
        .messages
        .send_message(send.clone())
        .await
        .unwrap()
        .into_inner();
    let again = s.messages.send_message(send).await.unwrap().into_inner();
    assert_eq!((again.id, again.position), (sent.id.clone(), sent.position));
    let events = s.stream(&format!("message-{}", sent.id)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["cause"], "SendMessage");
    assert!(!events[0].1.to_string().contains("ada@example.org"));
    let err = s
        .messages
        .send_message(SendMessageRequest {
            request_id: new_id(),
            customer_id: new_id(),
            recipient: String::new(),
            reservation_id: "x".into(),
            text: String::new(),
            cause: "Gossip".into(),
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["cause", "recipient", "reservation_id", "text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_is_refused_new_commands() {
    let mut s = System::start().await;
    let customer = new_id();
    let applied = apply_request(&customer, 3_000);
    let first = s
        .reservations
        .apply_reservation(applied.clone())
        .await
        .unwrap()
        .into_inner();
    let forgotten = s
        .customers
        .forget_customer(ForgetCustomerRequest {
            request_id: new_id(),
            customer_id: customer.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forgotten.id, customer);
    let events = s.stream(&format!("customer-{customer}")).await;
    assert_eq!(events[0].0, "CustomerForgotten");
    // A retry of a request recorded before the forgetting still gets its original answer.
    let again = s
        .reservations
        .apply_reservation(applied)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.id, again.revision, again.position),
        (first.id, first.revision, first.position)
    );

    let err = s
        .reservations
        .apply_reservation(apply_request(&customer, 3_000))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "the customer has been forgotten")
    );
    let err = s
        .customers
        .forget_customer(ForgetCustomerRequest {
            request_id: new_id(),
            customer_id: customer,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_serve_grpcurl() {
    let s = System::start().await;
    let channel = s.commands.channel().await;

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "ReservationService",
        "PaymentService",
        "PaymethodService",
        "MessageService",
        "CustomerService",
    ] {
        assert!(
            names.contains(&format!("cleaning.v1.{service}")),
            "{names:?}"
        );
    }
    assert!(names.contains(&"grpc.health.v1.Health".to_string()));

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut responses = AlphaClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        responses.message().await.unwrap().is_some(),
        "v1alpha answers too"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cleaning.v1.ReservationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
