//! TLS to PostgreSQL, against the throwaway cluster `pg_virtualenv` makes: Debian's clusters
//! serve TLS with the machine's "snakeoil" certificate (issued for `localhost`). With
//! `sslmode=require` the server must be verified: refused when its certificate does not prove
//! the host connected to, encrypted when it does.

use std::path::Path;

use tokio_postgres::config::SslMode;

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The cluster's settings, reached at `host` with TLS required.
fn require_tls_at(host: &str) -> tokio_postgres::Config {
    let env = read_models::config_from_env().expect("database settings");
    let mut config = tokio_postgres::Config::new();
    config.host(host).ssl_mode(SslMode::Require);
    if let Some(port) = env.get_ports().first() {
        config.port(*port);
    }
    if let Some(user) = env.get_user() {
        config.user(user);
    }
    if let Some(password) = env.get_password() {
        config.password(password);
    }
    config.dbname(env.get_dbname().unwrap_or("postgres"));
    config
}

fn require_tls() -> tokio_postgres::Config {
    require_tls_at("localhost")
}

#[tokio::test]
async fn sslmode_require_refuses_a_server_it_cannot_verify() {
    // Trusted certificate, but not for this name: as a server that is not the one asked for.
    let config = require_tls_at("127.0.0.1");
    let pool = read_models::pool_with_ca(config, 1, Some(Path::new(SNAKEOIL))).unwrap();
    let err = pool
        .get()
        .await
        .expect_err("an untrusted server was accepted");
    let text = format!("{err:?}");
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "{text}"
    );
}

#[tokio::test]
async fn sslmode_require_encrypts_when_the_server_is_trusted() {
    let pool = read_models::pool_with_ca(require_tls(), 1, Some(Path::new(SNAKEOIL))).unwrap();
    let client = pool.get().await.expect("a trusted server over TLS");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the connection is not encrypted");
}

#[tokio::test]
async fn without_sslmode_the_default_stays_plain() {
    let config = read_models::config_from_env().expect("database settings");
    let pool = read_models::pool_with_ca(config, 1, None).unwrap();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
}
