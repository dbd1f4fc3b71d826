//! The system under test, as it is deployed: each service a separate process of its release
//! (or test) binary, on loopback ports of its own, with its log in the run's directory; and the
//! PostgreSQL cluster the chaos run starts for itself, with fsync on.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use local_postgres::LocalPostgres;
use rustix::process::Signal;

/// Where a service's port is, and how long to wait for it after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a service process is, so that the faults and the checks can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    EventStore,
    Payment,
    Commands1,
    Commands2,
    Projector1,
    Projector2,
    Policies1,
    Policies2,
    QuerySide,
    Postgres,
}

impl Part {
    /// Every part, in the order they start.
    pub const ALL: [Part; 10] = [
        Part::Postgres,
        Part::EventStore,
        Part::Payment,
        Part::Commands1,
        Part::Commands2,
        Part::Projector1,
        Part::Projector2,
        Part::Policies1,
        Part::Policies2,
        Part::QuerySide,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Part::EventStore => "event-store",
            Part::Payment => "payment",
            Part::Commands1 => "command-side-1",
            Part::Commands2 => "command-side-2",
            Part::Projector1 => "projector-1",
            Part::Projector2 => "projector-2",
            Part::Policies1 => "policies-1",
            Part::Policies2 => "policies-2",
            Part::QuerySide => "query-side",
            Part::Postgres => "postgresql",
        }
    }
}

/// A service process: how to start it, and the running child.
struct Service {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The port that accepts once it is up.
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("cannot start {}", self.binary.display()))?,
        );
        Ok(())
    }

    fn pid(&self) -> Option<rustix::process::Pid> {
        self.child
            .as_ref()
            .and_then(|c| rustix::process::Pid::from_raw(c.id() as i32))
    }
}

/// The whole system: PostgreSQL and every service, with the ports they listen on.
pub struct System {
    pub dir: PathBuf,
    postgres: LocalPostgres,
    services: BTreeMap<Part, Service>,
    stopped: bool,
    pub ports: Ports,
    _balancer: Arc<crate::balancer::Balancer>,
}

/// The loopback ports of the run.
#[derive(Debug, Clone)]
pub struct Ports {
    pub postgres: u16,
    pub event_store: u16,
    pub payment: u16,
    pub commands: [u16; 2],
    /// The port the clients and the policies call: a balancer over both command sides, like a
    /// Kubernetes Service.
    pub balancer: u16,
    pub projectors: [u16; 2],
    /// Two replicas of one consumer group per policy: they share the work.
    pub policies: [u16; 2],
    pub query_side: u16,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The database every service shares, and the one a fresh projector rebuilds into.
pub const DATABASE: &str = "chaos";
pub const REBUILD_DATABASE: &str = "chaos_rebuild";

/// Settings for a run's processes.
pub struct Settings {
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// The issuer whose tokens the services accept, and their own identity.
    pub auth: Vec<(String, String)>,
    /// How long an approved payment may wait for its reservation before it is refunded.
    pub orphan_after: Duration,
}

impl System {
    /// Starts PostgreSQL, then every service, and waits until each accepts connections.
    pub async fn start(dir: &Path, settings: &Settings) -> anyhow::Result<System> {
        let ports = Ports {
            postgres: free_port()?,
            event_store: free_port()?,
            payment: free_port()?,
            commands: [free_port()?, free_port()?],
            balancer: free_port()?,
            projectors: [free_port()?, free_port()?],
            policies: [free_port()?, free_port()?],
            query_side: free_port()?,
        };
        std::fs::create_dir_all(dir.join("logs"))?;
        let postgres = LocalPostgres::start(&dir.join("postgres"), ports.postgres)?;
        for name in [DATABASE, REBUILD_DATABASE] {
            read_models::create_database(&postgres.config("postgres"), name).await?;
        }
        let balancer = crate::balancer::Balancer::start(ports.balancer, ports.commands.to_vec())
            .await
            .context("the balancer")?;
        let mut system = System {
            dir: dir.to_path_buf(),
            postgres,
            services: BTreeMap::new(),
            stopped: false,
            ports,
            _balancer: balancer,
        };
        system.define(settings)?;
        // PostgreSQL is up already.
        for part in Part::ALL.into_iter().filter(|p| *p != Part::Postgres) {
            system.start_part(part)?;
        }
        for part in Part::ALL {
            system.wait_until_up(part).await?;
        }
        Ok(system)
    }

    /// The database settings a service reads (`DATABASE_URL`).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgresql://park@127.0.0.1:{}/{name}", self.ports.postgres)
    }

    pub fn database(&self, name: &str) -> tokio_postgres::Config {
        self.postgres.config(name)
    }

    pub fn event_store_url(&self) -> String {
        format!("esdb://127.0.0.1:{}?tls=false", self.ports.event_store)
    }

    fn define(&mut self, settings: &Settings) -> anyhow::Result<()> {
        let p = self.ports.clone();
        let store = self.event_store_url();
        let database = self.database_url(DATABASE);
        let with = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut env: Vec<(String, String)> = settings.auth.clone();
            env.push(("DATABASE_URL".into(), database.clone()));
            env.push(("KEY_STORE_URL".into(), database.clone()));
            env.push(("EVENT_STORE_URL".into(), store.clone()));
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            env
        };
        let listen = |port: u16| format!("127.0.0.1:{port}");
        let command_side = |port: u16, payment: u16| {
            with(&[
                ("COMMAND_LISTEN", listen(port)),
                ("PAYMENT_ENDPOINT", format!("http://127.0.0.1:{payment}")),
                ("SHUTDOWN_DRAIN_DELAY_MS", "0".into()),
            ])
        };
        let policies = |port: u16, part: Part| {
            let env = with(&[
                ("METRICS_LISTEN", listen(port)),
                (
                    "COMMAND_ENDPOINT",
                    format!("http://127.0.0.1:{}", p.balancer),
                ),
                (
                    "PAYMENT_ENDPOINT",
                    format!("http://127.0.0.1:{}", p.payment),
                ),
                (
                    "ORPHAN_AFTER_MS",
                    settings.orphan_after.as_millis().to_string(),
                ),
            ]);
            (part, "policies", Vec::new(), env, port)
        };
        let data = self.dir.join("event-store").to_string_lossy().to_string();
        let definitions: Vec<(Part, &str, Vec<String>, Vec<(String, String)>, u16)> = vec![
            (
                Part::EventStore,
                "event-store",
                vec![
                    "--listen".into(),
                    listen(p.event_store),
                    "--data-dir".into(),
                    data,
                ],
                Vec::new(),
                p.event_store,
            ),
            (
                Part::Payment,
                "payment",
                Vec::new(),
                with(&[
                    ("PAYMENT_LISTEN", listen(p.payment)),
                    ("SHUTDOWN_DRAIN_DELAY_MS", "0".into()),
                ]),
                p.payment,
            ),
            (
                Part::Commands1,
                "command-side",
                Vec::new(),
                command_side(p.commands[0], p.payment),
                p.commands[0],
            ),
            (
                Part::Commands2,
                "command-side",
                Vec::new(),
                command_side(p.commands[1], p.payment),
                p.commands[1],
            ),
            (
                Part::Projector1,
                "projector",
                Vec::new(),
                with(&[("METRICS_LISTEN", listen(p.projectors[0]))]),
                p.projectors[0],
            ),
            (
                Part::Projector2,
                "projector",
                Vec::new(),
                with(&[("METRICS_LISTEN", listen(p.projectors[1]))]),
                p.projectors[1],
            ),
            policies(p.policies[0], Part::Policies1),
            policies(p.policies[1], Part::Policies2),
            (
                Part::QuerySide,
                "query-side",
                Vec::new(),
                with(&[("QUERY_LISTEN", listen(p.query_side))]),
                p.query_side,
            ),
        ];
        for (part, binary, args, env, port) in definitions {
            let binary = settings.bin_dir.join(binary);
            anyhow::ensure!(
                binary.exists(),
                "{} is missing: build the services first (cargo build --release -p event-store \
                 -p command-side -p payment -p projector -p policies -p query-side -p chaos)",
                binary.display()
            );
            self.services.insert(
                part,
                Service {
                    binary,
                    args,
                    env,
                    port,
                    child: None,
                    log: self.dir.join("logs").join(format!("{}.log", part.name())),
                },
            );
        }
        Ok(())
    }

    /// A fresh projector into the rebuild database: what the read models must equal.
    pub fn start_rebuild(&mut self, settings: &Settings) -> anyhow::Result<RebuildProjector> {
        let port = free_port()?;
        let mut env: Vec<(String, String)> = settings.auth.clone();
        env.push(("DATABASE_URL".into(), self.database_url(REBUILD_DATABASE)));
        env.push(("KEY_STORE_URL".into(), self.database_url(DATABASE)));
        env.push(("EVENT_STORE_URL".into(), self.event_store_url()));
        env.push(("METRICS_LISTEN".into(), format!("127.0.0.1:{port}")));
        let mut service = Service {
            binary: settings.bin_dir.join("projector"),
            args: Vec::new(),
            env,
            port,
            child: None,
            log: self.dir.join("logs").join("projector-rebuild.log"),
        };
        service.spawn()?;
        Ok(RebuildProjector(service))
    }

    pub fn start_part(&mut self, part: Part) -> anyhow::Result<()> {
        if part == Part::Postgres {
            return self.postgres.start_server();
        }
        self.service(part)?.spawn()
    }

    fn service(&mut self, part: Part) -> anyhow::Result<&mut Service> {
        self.services
            .get_mut(&part)
            .with_context(|| format!("{} is not defined", part.name()))
    }

    /// Waits until the part accepts connections again.
    pub async fn wait_until_up(&mut self, part: Part) -> anyhow::Result<()> {
        let port = match part {
            Part::Postgres => self.ports.postgres,
            other => self.service(other)?.port,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.exited(part)? {
                anyhow::bail!(
                    "{} exited at start ({status}); see {}",
                    part.name(),
                    self.log_of(part).display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not come up within {START_TIMEOUT:?}; see {}",
                part.name(),
                self.log_of(part).display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_of(&self, part: Part) -> PathBuf {
        match part {
            Part::Postgres => self.postgres.dir.join("server.log"),
            other => self.dir.join("logs").join(format!("{}.log", other.name())),
        }
    }

    /// Sends `signal` to the part (to all of PostgreSQL's processes for PostgreSQL).
    pub fn signal(&mut self, part: Part, signal: Signal) -> anyhow::Result<()> {
        if part == Part::Postgres {
            return self.postgres.signal(signal);
        }
        if let Some(pid) = self.service(part)?.pid() {
            rustix::process::kill_process(pid, signal)
                .with_context(|| format!("cannot signal {}", part.name()))?;
        }
        Ok(())
    }

    /// Sends `signal` to the part's main process only (PostgreSQL's postmaster, which then
    /// shuts its backends down itself).
    pub fn signal_main(&mut self, part: Part, signal: Signal) -> anyhow::Result<()> {
        if part == Part::Postgres {
            let pid = rustix::process::Pid::from_raw(self.postgres.postmaster()?)
                .context("no postmaster")?;
            return Ok(rustix::process::kill_process(pid, signal)?);
        }
        self.signal(part, signal)
    }

    /// Waits (up to `limit`) for the part to exit after a signal; PostgreSQL is gone once its
    /// port refuses connections.
    pub async fn wait_for_exit(&mut self, part: Part, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            let gone = match part {
                Part::Postgres => {
                    self.postgres.postmaster().is_err()
                        || !local_postgres::process_alive(self.postgres.postmaster()?)
                }
                other => self.exited(other)?.is_some(),
            };
            if gone {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How the part exited, if it has (never for PostgreSQL, whose server is not our child).
    pub fn exited(&mut self, part: Part) -> anyhow::Result<Option<std::process::ExitStatus>> {
        if part == Part::Postgres {
            return Ok(None);
        }
        let service = self.service(part)?;
        match service.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// Every process stopped: the services killed, PostgreSQL stopped cleanly.
    pub fn stop_all(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        for service in self.services.values_mut() {
            if let Some(mut child) = service.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.postgres.signal(Signal::CONT);
        self.postgres.stop();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The projector that rebuilds from the whole log, killed when dropped.
pub struct RebuildProjector(Service);

impl Drop for RebuildProjector {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
