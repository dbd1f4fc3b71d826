//! Starting the release binaries as separate processes, as they run in production.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A release binary beside this one.
pub fn beside(name: &str) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

/// Starts `name` (a binary beside this one) and waits until `port` accepts connections.
/// Returns how long that took.
pub fn start(
    name: &str,
    args: &[&str],
    env: &[(&str, String)],
    port: u16,
) -> anyhow::Result<(Process, Duration)> {
    start_binary(&beside(name)?, args, env, port)
}

pub fn start_binary(
    binary: &Path,
    args: &[&str],
    env: &[(&str, String)],
    port: u16,
) -> anyhow::Result<(Process, Duration)> {
    let name = binary.display();
    anyhow::ensure!(
        binary.exists(),
        "{name} is missing: build it with `cargo build --release -p event-store -p command-side -p bench`",
    );
    let spawned = Instant::now();
    let mut command = Command::new(binary);
    command.args(args).env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let process = Process(command.spawn()?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((process, spawned.elapsed()))
}

pub fn start_event_store(dir: &Path) -> anyhow::Result<(Process, u16, Duration)> {
    let port = free_port()?;
    let dir = dir.to_string_lossy().to_string();
    let (process, took) = start(
        "event-store",
        &["--listen", &format!("127.0.0.1:{port}"), "--data-dir", &dir],
        &[],
        port,
    )?;
    Ok((process, port, took))
}
