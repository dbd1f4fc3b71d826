//! A local PostgreSQL for `park`, when the user gives none: a cluster of its own under the data
//! directory, started with the server binaries Debian's `postgresql` package installs, and
//! stopped with `park`. PostgreSQL refuses to run as root, so under root the cluster belongs to
//! (and runs as) the `postgres` system user.

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
        Ok(local)
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
