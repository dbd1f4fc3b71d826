//! A headless Chromium driven over the DevTools protocol: a page stays open while the test
//! changes things through gRPC, and the test reads what the page shows then, as a person
//! watching it would.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Debian's Chromium, or `CHROMIUM`.
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Headless, in a container (no sandbox, no GPU, small /dev/shm), and quiet: nothing fetched
/// but the page.
pub const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Chromium with one tab open at `url`.
    pub async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut process = tokio::process::Command::new(chromium())
            .args(HEADLESS)
            .args([
                "--window-size=1200,800",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium is not installed (apt-get install chromium, as .ci/run does)");
        // It says where its DevTools listen.
        let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_string();
                }
            }
            panic!("chromium exited without its DevTools address");
        })
        .await
        .expect("chromium did not start");
        // The rest of its output is not needed, but must not fill the pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(address.as_str())
            .await
            .unwrap();
        let mut browser = Browser {
            _process: process,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// One DevTools call; its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("chromium did not answer")
                .unwrap()
                .unwrap();
            let Message::Text(text) = answer else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// `expression`'s value in the page.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = self
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page (checked every 50 ms, for up to `within`);
    /// how long it took.
    pub async fn until(&mut self, expression: &str, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        loop {
            if self.evaluate(expression).await == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "never true within {within:?}: {expression}\n{}",
                self.evaluate("document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of what the tab shows.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let session = self.session.clone();
        let shot = self
            .call(
                Some(&session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}
