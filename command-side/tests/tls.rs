//! TLS everywhere, as the production overlay runs it: the embedded event store in secure mode
//! (TLS and basic credentials), the command side serving TLS, its call to payment verified
//! against the company's CA, and a client that trusts only that CA.

mod common;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use common::*;
use event_store::server::{Credentials, ServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_side_works_over_tls_against_a_secure_event_store() {
    lifecycle::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    // A CA, and a certificate for this machine signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_issuer)
            .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    // The event store in secure mode.
    let store = event_store::storage::Store::open(&dir.path().join("store")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_port = listener.local_addr().unwrap().port();
    let options = ServerOptions {
        tls: Some((cert_path.clone(), key_path.clone())),
        credentials: Some(Credentials {
            username: "park".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    };
    tokio::spawn(event_store::server::serve(
        listener,
        store,
        options,
        std::future::pending(),
    ));

    let issuer = issuer().await;
    let event_store_url = format!(
        "esdb://park:s3cret@127.0.0.1:{store_port}?tls=true&tlsCAFile={}",
        ca_path.display()
    );
    let tls = command_core::settings::TlsFiles {
        cert: cert_path,
        key: key_path,
    };
    // Payment on its own, over TLS too.
    let mut payment = testkit::payment_config(&issuer);
    let payment_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let payment_port = payment_listener.local_addr().unwrap().port();
    payment.server.event_store_url = event_store_url.clone();
    payment.server.tls = Some(tls.clone());
    tokio::spawn(payment::serve(
        payment,
        payment_listener,
        std::future::pending(),
    ));

    let mut config = testkit::command_config(&issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    config.server.listen = listener.local_addr().unwrap();
    config.server.event_store_url = event_store_url;
    config.server.tls = Some(tls);
    config.payment_endpoint = format!("https://localhost:{payment_port}");
    config.server.auth.ca_file = Some(ca_path.clone());
    let keys = std::sync::Arc::new(events::InMemoryKeys::default());
    tokio::spawn(command_side::serve(
        config,
        keys,
        listener,
        std::future::pending(),
    ));

    // A client that trusts the CA: the whole chain (pay over TLS, append over TLS with
    // credentials) answers.
    let url = format!("https://localhost:{port}");
    let endpoint = access::client::grpc_endpoint(&url, Some(&ca_path)).unwrap();
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let reply = ReservationServiceClient::new(testkit::as_admin(&channel, &issuer))
        .apply_reservation(apply_request(&new_id(), 2_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.revision, 0);

    // Plain text is not served, and a client that does not trust the CA is refused.
    let plain = tonic::transport::Channel::from_shared(format!("http://localhost:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let err = ReservationServiceClient::new(testkit::as_admin(&plain, &issuer))
            .apply_reservation(apply_request(&new_id(), 2_000))
            .await
            .unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok);
    }
    let untrusting = access::client::grpc_endpoint(&url, None)
        .unwrap()
        .connect()
        .await;
    assert!(
        untrusting.is_err(),
        "a server certificate of an unknown CA was accepted"
    );
}
