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

impl Process {
    /// The most memory it has held resident so far (`VmHWM`), in MiB; `None` where `/proc`
    /// does not say.
    pub fn peak_resident_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
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
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p event-store -p command-side -p payment -p bench`",
        binary.display()
    );
    let mut command = Command::new(binary);
    command.args(args).env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    start_command(command, port)
}

/// Starts a peer's server (`bench peers`), whose banner on standard output would break up
/// the bench's table.
pub fn start_peer(binary: &Path, args: &[&str], port: u16) -> anyhow::Result<Process> {
    let mut command = Command::new(binary);
    command.args(args).stdout(std::process::Stdio::null());
    Ok(start_command(command, port)?.0)
}

/// Spawns `command` and waits until `port` accepts connections; returns how long that took.
fn start_command(mut command: Command, port: u16) -> anyhow::Result<(Process, Duration)> {
    let name = command.get_program().to_string_lossy().to_string();
    let spawned = Instant::now();
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

/// The payment service (the binary beside this one) with `env` (who issues tokens, where the
/// event store is), as the command side calls it in production: a process of its own. Returns
/// it with the `PAYMENT_ENDPOINT` setting a command side needs to call it.
pub fn start_payment(env: &[(&str, String)]) -> anyhow::Result<(Process, (&'static str, String))> {
    let port = free_port()?;
    let mut env = env.to_vec();
    env.push(("PAYMENT_LISTEN", format!("127.0.0.1:{port}")));
    let (process, _) = start("payment", &[], &env, port)?;
    Ok((
        process,
        ("PAYMENT_ENDPOINT", format!("http://127.0.0.1:{port}")),
    ))
}

/// The development issuer, served on this process's runtime: the services under test trust
/// it as they would the company's, so every figure includes checking tokens.
pub async fn issuer() -> anyhow::Result<dev_issuer::Issuer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = dev_issuer::Issuer::ephemeral(
        format!("http://{}", listener.local_addr()?),
        access::DEFAULT_AUDIENCE,
    );
    tokio::spawn(dev_issuer::serve(
        listener,
        issuer.clone(),
        std::future::pending(),
    ));
    Ok(issuer)
}

/// The settings a service under test needs to trust `issuer` and to act as a service.
pub fn auth_env(issuer: &dev_issuer::Issuer) -> Vec<(&'static str, String)> {
    let client = issuer.service_client();
    vec![
        ("AUTH_ISSUER", issuer.url().to_string()),
        ("AUTH_CLIENT_ID", client.client_id),
        ("AUTH_CLIENT_SECRET", client.client_secret),
    ]
}

/// An administrator's token, valid for the longest run.
pub fn admin_token(issuer: &dev_issuer::Issuer) -> anyhow::Result<String> {
    Ok(issuer.token(
        "admin-1",
        &[access::Role::Admin],
        Duration::from_secs(6 * 3600),
    )?)
}

/// `channel` calling as an administrator.
pub fn as_admin(
    channel: tonic::transport::Channel,
    issuer: &dev_issuer::Issuer,
) -> anyhow::Result<access::client::AuthorizedChannel> {
    Ok(access::client::WithToken::new(
        channel,
        access::client::Credentials::Bearer(admin_token(issuer)?.into()),
    ))
}
