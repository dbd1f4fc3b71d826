//! The query side over HTTPS, as the production overlay runs it: it serves TLS from
//! certificate files, and a client that trusts the company's CA reads from it.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_side_serves_https_from_certificate_files() {
    lifecycle::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let running = testkit::Running::start().await;
    let pool = testkit::fresh_database().await;
    let verifier = access::Verifier::new(running.issuer.auth_settings()).unwrap();
    let state = query_side::AppState::new(pool, Duration::from_secs(1), verifier, "page");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = query_side::TlsFiles {
        cert: cert_path,
        key: key_path,
    };
    let serving = query_side::Serving {
        tls: Some(tls),
        ..Default::default()
    };
    tokio::spawn(query_side::serve(
        listener,
        state,
        std::future::pending(),
        serving,
    ));

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let token = running
        .issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(60))
        .unwrap();
    let url = format!("https://localhost:{port}");
    let mut answered = None;
    for _ in 0..100 {
        match trusting
            .get(format!("{url}/dashboard"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(response) => {
                answered = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let response = answered.expect("the query side never answered over TLS");
    assert_eq!(response.status().as_u16(), 200);

    // A client that does not trust the CA is refused, and plain HTTP gets no answer.
    let untrusting = reqwest::Client::new();
    assert!(untrusting
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}
