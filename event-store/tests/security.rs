//! TLS and basic authentication, both off by default.

mod common;

use common::{connect, event, TestStore};
use event_store::server::{Credentials, ServerOptions};
use kurrentdb::{AppendToStreamOptions, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authentication_lets_only_the_configured_user_in() {
    let options = ServerOptions {
        credentials: Some(Credentials::parse("admin:changeit").unwrap()),
        ..Default::default()
    };
    let s = TestStore::start_with(options, "admin:changeit@").await;
    s.client
        .append_to_stream(
            "guarded",
            &AppendToStreamOptions::default(),
            vec![event("E", 1)],
        )
        .await
        .expect("the user gets in");

    let anonymous = s.connect("");
    let err = anonymous
        .append_to_stream(
            "guarded",
            &AppendToStreamOptions::default(),
            vec![event("E", 2)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied), "{err:?}");
    let wrong = connect(&format!(
        "esdb://admin:wrong@127.0.0.1:{}?tls=false",
        s.port
    ));
    let err = wrong
        .append_to_stream(
            "guarded",
            &AppendToStreamOptions::default(),
            vec![event("E", 3)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied), "{err:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A CA, and a certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let options = ServerOptions {
        tls: Some((cert_path, key_path)),
        ..Default::default()
    };
    let s = TestStore::start_with(options, "").await;
    let secure = connect(&format!(
        "esdb://127.0.0.1:{}?tls=true&tlsCAFile={}",
        s.port,
        ca_path.display()
    ));
    let written = secure
        .append_to_stream(
            "over-tls",
            &AppendToStreamOptions::default(),
            vec![event("E", 1)],
        )
        .await
        .expect("append over TLS");
    assert_eq!(written.next_expected_version, 0);
    s.stop().await;
}
