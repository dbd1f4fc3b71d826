//! A disk that fills up: the real binary on a small file system made for the test (a tmpfs,
//! so the test runs as root, as the suite does). Appends then fail with RESOURCE_EXHAUSTED
//! naming the full disk, reads go on, and once there is space again appends resume; nothing
//! acknowledged is lost, across a kill -9 too.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadStreamOptions, StreamPosition};
use tokio::process::{Child, Command};

/// A small file system of its own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a small file system needs root (the suite runs as root, under pg_virtualenv)"
        );
        SmallDisk(dir)
    }

    fn grow(&self, mib: u32) {
        let status = StdCommand::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.0.path())
            .status()
            .expect("remount");
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg(self.0.path()).status();
    }
}

async fn start(dir: &Path) -> (Child, Client) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_event-store"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        // A journal that leaves most of the 8 MiB disk to the database.
        .args(["--cache-mib", "4", "--journal-mib", "1"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start event-store");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the event store did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = Client::new(
        format!("esdb://127.0.0.1:{port}?tls=false")
            .parse()
            .unwrap(),
    )
    .unwrap();
    (child, client)
}

fn event(n: usize) -> EventData {
    // 32 KiB of payload each: a few hundred fill the small disk.
    let payload = serde_json::json!({ "n": n, "filler": "x".repeat(32 * 1024) });
    EventData::json("Filled", &payload).unwrap()
}

async fn append(client: &Client, n: usize) -> Result<(), kurrentdb::Error> {
    client
        .append_to_stream(
            format!("disk-{}", n % 10),
            &AppendToStreamOptions::default(),
            event(n),
        )
        .await
        .map(|_| ())
}

/// Every acknowledged event, read back by its number.
async fn read_numbers(client: &Client) -> Vec<usize> {
    let mut numbers = Vec::new();
    for stream in 0..10 {
        let options = ReadStreamOptions::default().position(StreamPosition::Start);
        let mut read = client
            .read_stream(format!("disk-{stream}"), &options)
            .await
            .expect("read");
        while let Some(e) = read.next().await.expect("read") {
            let value: serde_json::Value = e.get_original_event().as_json().unwrap();
            numbers.push(value["n"].as_u64().unwrap() as usize);
        }
    }
    numbers.sort();
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_keeps_reads_and_resumes_with_space() {
    let disk = SmallDisk::mount(8);
    let data = disk.0.path().join("store");
    let (mut store, client) = start(&data).await;

    // Fill it: appends go through until the disk is full, then fail with a clear error.
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let n = acknowledged.len();
        assert!(n < 2_000, "the disk never filled up");
        match append(&client, n).await {
            Ok(()) => acknowledged.push(n),
            Err(e) => break e,
        }
    };
    assert!(
        acknowledged.len() > 10,
        "{} appends went in",
        acknowledged.len()
    );
    let message = refusal.to_string();
    assert!(
        message.contains("resource has been exhausted") && message.contains("disk is full"),
        "{message}"
    );
    // It keeps refusing, it does not crash, and reads go on.
    assert!(append(&client, 9_999).await.is_err());
    assert!(store.try_wait().unwrap().is_none(), "the store exited");
    assert_eq!(read_numbers(&client).await, acknowledged);

    // Space returns: appends resume by themselves.
    disk.grow(64);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = acknowledged.len();
    loop {
        match append(&client, next).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "appends did not resume: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acknowledged.push(next);
    for _ in 0..20 {
        next += 1;
        append(&client, next).await.unwrap();
        acknowledged.push(next);
    }
    assert_eq!(read_numbers(&client).await, acknowledged);

    // And a crash afterwards loses none of it.
    store.kill().await.unwrap();
    let (_store, client) = start(&data).await;
    assert_eq!(read_numbers(&client).await, acknowledged);
}
