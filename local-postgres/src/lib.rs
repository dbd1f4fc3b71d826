//! A local PostgreSQL of its own under a directory, for `park` when the user gives no database
//! and for the chaos run (which kills, pauses and restarts it): started with the server binaries
//! Debian's `postgresql` package installs. PostgreSQL refuses to run as root, so under root the
//! cluster belongs to (and runs as) the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub struct LocalPostgres {
    bindir: PathBuf,
    /// Where the cluster's data lives.
    pub dir: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl LocalPostgres {
    /// Initialises the cluster on first use, then starts it on `port` (loopback only).
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<LocalPostgres> {
        let bindir = bindir()?;
        let mut dir = std::path::absolute(dir)?;
        let as_postgres = is_root();
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            chown_to_postgres(&dir)?;
            if !postgres_can_use(&dir) {
                // Under a directory only root may enter (such as /root): keep the cluster where
                // the postgres user can, one per data directory.
                let name = dir
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .replace('/', "_");
                dir = PathBuf::from("/var/lib/postgresql/cleaning-service-park").join(name);
                std::fs::create_dir_all(&dir)?;
                chown_to_postgres(&dir)?;
                println!(
                    "PostgreSQL data: {} (the postgres user cannot enter the data directory)",
                    dir.display()
                );
            }
        }
        let local = LocalPostgres {
            bindir,
            dir,
            as_postgres,
            port,
        };
        local.start_server()?;
        Ok(local)
    }

    /// Starts the server again (after [`LocalPostgres::stop`] or a crash: it recovers first).
    pub fn start_server(&self) -> anyhow::Result<()> {
        let local = self;
        let port = self.port;
        if !local.dir.join("PG_VERSION").exists() {
            let mut initdb = local.tool("initdb");
            initdb.arg("-D").arg(&local.dir).args([
                "-U",
                "park",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ]);
            local.run(&mut initdb, true).context("initdb failed")?;
        }
        local.clear_stale_lock();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            local.dir.display()
        );
        let mut pg_ctl = local.tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&local.dir)
            .arg("-l")
            .arg(local.dir.join("server.log"))
            .args(["-o", &options, "-w", "start"]);
        local.run(&mut pg_ctl, true).with_context(|| {
            format!(
                "PostgreSQL did not start; see {}",
                local.dir.join("server.log").display()
            )
        })?;
        Ok(())
    }

    /// Sends `signal` to the server and every process it started: `Kill` is a crash of the
    /// whole server, `Stop` and `Cont` pause and resume it.
    pub fn signal(&self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        let postmaster = self.postmaster()?;
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                // A backend may have exited meanwhile: that is no error.
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
        Ok(())
    }

    /// After a crash the lock file names a server that is gone, or a zombie nobody reaped (in
    /// a container whose first process does not reap orphans): PostgreSQL would take it for a
    /// running server and refuse to start, so a lock of a dead server is removed.
    fn clear_stale_lock(&self) {
        if let Ok(pid) = self.postmaster() {
            if !process_alive(pid) {
                let socket = format!(".s.PGSQL.{}", self.port);
                for stale in [
                    "postmaster.pid".to_string(),
                    format!("{socket}.lock"),
                    socket,
                ] {
                    let _ = std::fs::remove_file(self.dir.join(stale));
                }
            }
        }
    }

    /// The server's process id, from its lock file.
    pub fn postmaster(&self) -> anyhow::Result<i32> {
        let lock = std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .context("PostgreSQL is not running (no postmaster.pid)")?;
        lock.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .context("postmaster.pid has no process id")
    }

    /// Settings to reach it: user `park`, trusted on loopback.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("park")
            .dbname(dbname);
        config
    }

    pub fn stop(&self) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"]);
        if let Err(e) = self.run(&mut pg_ctl, true) {
            eprintln!("stopping PostgreSQL: {e:#}");
        }
    }

    /// A server tool, run as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        if self.as_postgres {
            as_postgres(program)
        } else {
            Command::new(program)
        }
    }

    fn run(&self, command: &mut Command, quiet: bool) -> anyhow::Result<()> {
        if quiet {
            command.stdout(std::process::Stdio::null());
        }
        let status = command
            .status()
            .with_context(|| format!("cannot run {command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed: {status}");
        }
        Ok(())
    }
}

/// `program` run as the postgres user, from a directory it may enter.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(program)
        .current_dir("/");
    command
}

/// Whether `pid` runs: a zombie has exited, only its parent has yet to collect it.
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The processes whose parent is `parent` (the server's backends and workers).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // After the command name in parentheses: state, then the parent's id.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

fn chown_to_postgres(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "cannot give {} to the postgres user",
        dir.display()
    );
    Ok(())
}

fn postgres_can_use(dir: &Path) -> bool {
    as_postgres("test")
        .arg("-w")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where the server binaries are: `pg_config --bindir`, else the newest Debian install.
fn bindir() -> anyhow::Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").exists())
        .context("PostgreSQL's server binaries were not found: apt-get install postgresql, or set DATABASE_URL")
}
