//! What orchestrators poll: served over HTTPS when the process has certificate files, as every
//! listener of the system can be.

#[tokio::test]
async fn the_operations_endpoints_serve_https_from_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    // This test runs in a process of its own (nextest), so the environment is its alone.
    std::env::set_var("TLS_CERT_FILE", &cert_path);
    std::env::set_var("TLS_KEY_FILE", &key_path);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    lifecycle::serve_operations(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    lifecycle::mark_ready("the test", true);

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for path in ["healthz", "readyz", "metrics"] {
        let response = trusting
            .get(format!("https://localhost:{port}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    // Not ready while a part does not reach what it depends on.
    lifecycle::mark_ready("the test", false);
    let response = trusting
        .get(format!("https://localhost:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let plain = reqwest::get(format!("http://localhost:{port}/healthz")).await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

/// A connection that never sends its request (slowloris, or just idle) is closed after the
/// header timeout, and meanwhile everyone else is answered.
#[tokio::test]
async fn idle_connections_to_the_operations_endpoints_are_closed() {
    use tokio::io::AsyncReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    lifecycle::serve_operations(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let wait = lifecycle::OPERATIONS_HEADER_TIMEOUT + std::time::Duration::from_secs(3);
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(wait, idle[0].read(&mut buffer))
        .await
        .expect("an idle connection was left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
