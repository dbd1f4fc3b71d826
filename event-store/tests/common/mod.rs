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
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub async fn start() -> TestStore {
        Self::start_with(ServerOptions::default(), "").await
    }

    /// `userinfo` is put in the connection string, e.g. `admin:changeit@`.
    pub async fn start_with(options: ServerOptions, userinfo: &str) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
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
            _dir: dir,
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
