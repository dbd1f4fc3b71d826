//! Starts a fresh event store on a free loopback port and connects the official client to it.
#![allow(dead_code)]

use std::time::Duration;

use event_store::server::{self, ServerOptions};
use event_store::storage::Store;
use kurrentdb::{Client, ClientSettings, EventData};
use tokio::sync::oneshot;

pub struct TestStore {
    pub client: Client,
    pub port: u16,
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// The system projections running (`--system-projections true`), so that `$all` holds their
/// links beside what a test writes, as on a server that runs them.
fn with_projections() -> ServerOptions {
    ServerOptions {
        system_projections: true,
        ..ServerOptions::default()
    }
}

impl TestStore {
    pub async fn start() -> TestStore {
        Self::start_with(with_projections(), "").await
    }

    /// `userinfo` is put in the connection string, e.g. `admin:changeit@`.
    pub async fn start_with(options: ServerOptions, userinfo: &str) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut started = Self::serve(dir.path(), options, userinfo).await;
        started._dir = Some(dir);
        started
    }

    /// A store without the system projections: `$all` holds only what the test writes, for
    /// tests of `$all` itself (positions, filters, the last event).
    pub async fn start_without_projections() -> TestStore {
        Self::start_with(ServerOptions::default(), "").await
    }

    /// A store on data that outlives it: stop it, then start another on the same `dir`.
    pub async fn start_in(dir: &std::path::Path) -> TestStore {
        Self::serve(dir, with_projections(), "").await
    }

    /// On data that outlives it, without the system projections' links (to count events).
    pub async fn start_in_without_projections(dir: &std::path::Path) -> TestStore {
        Self::serve(dir, ServerOptions::default(), "").await
    }

    async fn serve(dir: &std::path::Path, options: ServerOptions, userinfo: &str) -> TestStore {
        // A store stopped just before may still be closing its file.
        let mut tries = 0;
        let store = loop {
            match Store::open(dir) {
                Ok(store) => break store,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open store: {e}"),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = store.clone();
        let server = tokio::spawn(async move {
            server::serve(listener, serving, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("server failed");
        });
        let client = connect(&format!("esdb://{userinfo}127.0.0.1:{port}?tls=false"));
        TestStore {
            client,
            port,
            store,
            stop: Some(stop),
            server: Some(server),
            _dir: None,
        }
    }

    pub fn connect(&self, query: &str) -> Client {
        connect(&format!("esdb://127.0.0.1:{}?tls=false{query}", self.port))
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

pub fn connect(url: &str) -> Client {
    let settings: ClientSettings = url.parse().expect("connection string");
    Client::new(settings).expect("client")
}

pub fn event(kind: &str, n: u64) -> EventData {
    EventData::json(kind, &serde_json::json!({ "n": n })).expect("json")
}

pub fn stream_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The real binary on `dir`, started and accepting connections; killed when dropped.
pub async fn start_binary(dir: &std::path::Path) -> (tokio::process::Child, Client) {
    start_binary_with(dir, &[]).await
}

/// The real binary on `dir` with further command-line arguments.
pub async fn start_binary_with(
    dir: &std::path::Path,
    args: &[&str],
) -> (tokio::process::Child, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-store"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start event-store");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (
                child,
                connect(&format!("esdb://127.0.0.1:{port}?tls=false")),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event-store did not start");
}

/// A stream name no other test uses (the name the official client's suites call it by).
pub fn fresh_stream_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// `count` JSON events of one type, numbered from 1 (the official client's suites use these).
pub fn generate_events(event_type: impl AsRef<str>, count: usize) -> Vec<EventData> {
    (1..=count)
        .map(|i| {
            EventData::json(
                event_type.as_ref(),
                &serde_json::json!({ "event_index": i }),
            )
            .expect("json")
        })
        .collect()
}
