//! The faults: one at a time, at moments and on parts drawn from the run's seed, each ended
//! (restarted, resumed) before the next begins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::system::{Part, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `kill -9`, then a start after a pause: a crash.
    Kill,
    /// SIGTERM (a fast shutdown for PostgreSQL), then a start: a deployment or an eviction.
    Stop,
    /// SIGSTOP for longer than the clients' timeouts, then SIGCONT: a stalled machine.
    Pause,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill -9",
            Kind::Stop => "SIGTERM",
            Kind::Pause => "SIGSTOP",
        }
    }
}

/// The parts a fault may hit: all of them.
const TARGETS: [Part; Part::ALL.len()] = Part::ALL;

/// What happened, for the report.
#[derive(Debug, Default)]
pub struct FaultTally {
    pub by_kind: BTreeMap<Kind, u32>,
    pub by_part: BTreeMap<Part, u32>,
    /// How long each part took to accept connections again after a crash or a stop.
    pub restart_times: Vec<(Part, Duration)>,
    /// Parts that exited without being told to, with how.
    pub unexpected_exits: Vec<String>,
}

/// Injects `count` faults drawn from `rng`.
pub async fn inject(
    system: &mut System,
    rng: &mut fastrand::Rng,
    count: usize,
    quiet: bool,
) -> anyhow::Result<FaultTally> {
    let mut tally = FaultTally::default();
    let mut journal = Journal::open(&system.dir.join("faults.log"))?;
    for n in 1..=count {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        notice_exits(system, &mut tally).await?;
        let part = TARGETS[rng.usize(..TARGETS.len())];
        let kind = match rng.u32(0..10) {
            0..=4 => Kind::Kill,
            5..=7 => Kind::Stop,
            _ => Kind::Pause,
        };
        let line = format!(
            "{} fault {n}/{count}: {} {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            kind.name(),
            part.name()
        );
        if !quiet {
            eprintln!("{line}");
        }
        journal.push(line);
        *tally.by_kind.entry(kind).or_default() += 1;
        *tally.by_part.entry(part).or_default() += 1;
        match kind {
            Kind::Kill => {
                system.signal(part, Signal::KILL)?;
                anyhow::ensure!(
                    system.wait_for_exit(part, Duration::from_secs(10)).await?,
                    "{} survived kill -9",
                    part.name()
                );
                tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
                restart(system, part, &mut tally).await?;
            }
            Kind::Stop => {
                let signal = match part {
                    // PostgreSQL's SIGTERM waits for every client to leave; SIGINT is the
                    // fast shutdown that `pg_ctl stop` and its container images use.
                    Part::Postgres => Signal::INT,
                    _ => Signal::TERM,
                };
                system.signal_main(part, signal)?;
                if !system.wait_for_exit(part, Duration::from_secs(30)).await? {
                    tally.unexpected_exits.push(format!(
                        "{} did not stop within 30 s of {}; killed",
                        part.name(),
                        kind.name()
                    ));
                    system.signal(part, Signal::KILL)?;
                    system.wait_for_exit(part, Duration::from_secs(10)).await?;
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
                restart(system, part, &mut tally).await?;
            }
            Kind::Pause => {
                system.signal(part, Signal::STOP)?;
                tokio::time::sleep(Duration::from_millis(rng.u64(2_000..12_000))).await;
                system.signal(part, Signal::CONT)?;
            }
        }
    }
    notice_exits(system, &mut tally).await?;
    Ok(tally)
}

async fn restart(system: &mut System, part: Part, tally: &mut FaultTally) -> anyhow::Result<()> {
    let started = Instant::now();
    system.start_part(part)?;
    system.wait_until_up(part).await?;
    tally.restart_times.push((part, started.elapsed()));
    Ok(())
}

/// A service that exited by itself is a finding: it is recorded and started again.
pub async fn notice_exits(system: &mut System, tally: &mut FaultTally) -> anyhow::Result<()> {
    for part in Part::ALL {
        if let Some(status) = system.exited(part)? {
            tally.unexpected_exits.push(format!(
                "{} exited by itself ({status}); see {}",
                part.name(),
                system.log_of(part).display()
            ));
            system.start_part(part)?;
            system.wait_until_up(part).await?;
        }
    }
    Ok(())
}

/// The faults, one line each with its time, beside the processes' logs.
struct Journal(std::fs::File);

impl Journal {
    fn open(path: &std::path::Path) -> anyhow::Result<Journal> {
        Ok(Journal(std::fs::File::create(path)?))
    }

    fn push(&mut self, line: String) {
        use std::io::Write;
        let _ = writeln!(self.0, "{line}");
    }
}
