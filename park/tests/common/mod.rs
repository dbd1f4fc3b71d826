//! `park` as a new user starts it: on free loopback ports, with a data directory of its own
//! and no database named, so that it starts its own PostgreSQL.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use tokio::process::Command;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where one `park` listens.
pub struct Ports {
    pub store: u16,
    pub commands: u16,
    pub queries: u16,
    pub pg: u16,
    pub issuer: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            store: free_port(),
            commands: free_port(),
            queries: free_port(),
            pg: free_port(),
            issuer: free_port(),
        }
    }
}

/// `park` on `data` and `ports`, not yet started; callers add their own settings.
pub fn park(data: &std::path::Path, ports: &Ports) -> Command {
    // The postgres user (park runs PostgreSQL as it when run as root) must reach the directory.
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut park = Command::new(env!("CARGO_BIN_EXE_park"));
    park.arg("--data-dir")
        .arg(data)
        .args(["--event-store", &format!("127.0.0.1:{}", ports.store)])
        .args(["--commands", &format!("127.0.0.1:{}", ports.commands)])
        .args(["--queries", &format!("127.0.0.1:{}", ports.queries)])
        .args(["--pg-port", &ports.pg.to_string()])
        .args(["--issuer", &format!("127.0.0.1:{}", ports.issuer)])
        .stdout(Stdio::null())
        .kill_on_drop(true);
    // As on a fresh machine: no database named, so park starts its own; no trace settings
    // but the test's own.
    for name in [
        "DATABASE_URL",
        "KEY_STORE_URL",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_TRACES_SAMPLER",
    ] {
        park.env_remove(name);
    }
    park
}

/// A bearer token from `park token`, as a person at the terminal gets one.
pub async fn park_token(data: &std::path::Path, issuer: u16, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_park"))
        .arg("--data-dir")
        .arg(data)
        .args(["--issuer", &format!("127.0.0.1:{issuer}"), "token"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.matches('.').count(), 2, "one bare JWT: {token}");
    token
}
