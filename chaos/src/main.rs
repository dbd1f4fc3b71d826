//! `chaos`: the whole system as separate processes under a business workload, while faults hit
//! every part of it; then the invariants it promises, checked one by one.
//!
//! It starts PostgreSQL (fsync on), the event store, payment, two command-side replicas behind
//! a balancer, two projectors (one active, one waiting for its lock), the policies and the
//! query side; drives customers, a cleaner and dashboard readers from the seed; kills (`kill
//! -9`), stops (SIGTERM) or pauses (SIGSTOP past the clients' timeouts) a part at random
//! moments and starts or resumes it; then lets the system settle and prints one line per
//! invariant. The exit status is 0 only when every invariant holds.
//!
//! `chaos --seed 7 --faults 20` is a short run; RELIABILITY.md has long ones. The seed fixes
//! what is done and what is hit, in which order; the timing, and so the exact figures, vary
//! with the machine. The service binaries are taken from beside this one (`--bin-dir`).

mod balancer;
mod checks;
mod faults;
mod system;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use events::KeyStore;

use crate::checks::Finding;
use crate::system::{Settings, System, DATABASE, REBUILD_DATABASE};
use crate::workload::{Call, Outcome, Workload};

#[derive(Parser, Debug)]
#[command(about = "Faults under load, then the invariants")]
struct Args {
    /// What is done and what is hit, in which order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many faults to inject.
    #[arg(long, default_value_t = 20)]
    faults: usize,
    /// Concurrent clients sending commands.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Commands per second, all clients together (each is sent when the one before is
    /// answered, so fewer go out while the system is down).
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Customers they act for.
    #[arg(long, default_value_t = 40)]
    customers: usize,
    /// How long an approved payment may wait for its reservation before the orphan policy
    /// refunds it.
    #[arg(long, default_value_t = 10_000)]
    orphan_after_ms: u64,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the run's directory (data and every process's log) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Print each fault as it happens.
    #[arg(long)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_path_buf(),
    };
    // Kept unless the run passes: its data and logs are what explains a failure.
    let dir = tempfile::Builder::new().prefix("chaos-").tempdir()?.keep();
    // PostgreSQL runs as the postgres user under root: it must be able to enter the run's
    // directory.
    std::fs::set_permissions(
        dir.as_path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let issuer = dev_issuer::Issuer::on_loopback(access::DEFAULT_AUDIENCE).await?;
    let client = issuer.service_client();
    let settings = Settings {
        bin_dir,
        auth: vec![
            ("AUTH_ISSUER".into(), issuer.url().to_string()),
            ("AUTH_CLIENT_ID".into(), client.client_id),
            ("AUTH_CLIENT_SECRET".into(), client.client_secret),
        ],
        orphan_after: Duration::from_millis(args.orphan_after_ms),
    };
    let mut system = System::start(dir.as_path(), &settings).await?;
    println!(
        "chaos seed {}: the system is up in {:.1} s (data and logs in {})",
        args.seed,
        started.elapsed().as_secs_f64(),
        dir.as_path().display()
    );
    let outcome = run(&args, &mut system, &settings, &issuer).await;
    system.stop_all();
    if args.keep || !matches!(outcome, Ok(0)) {
        println!("kept {} (data and logs)", dir.display());
    } else {
        std::fs::remove_dir_all(&dir)?;
    }
    match outcome {
        Ok(0) => {
            println!("0 violations in {:.0} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(n) => anyhow::bail!("{n} invariants violated"),
        Err(e) => Err(e),
    }
}

/// The run: load and faults, then the checks. Returns how many invariants failed.
async fn run(
    args: &Args,
    system: &mut System,
    settings: &Settings,
    issuer: &dev_issuer::Issuer,
) -> anyhow::Result<usize> {
    let workload = Arc::new(Workload::new(
        issuer,
        args.customers,
        args.seed,
        format!("http://127.0.0.1:{}", system.ports.balancer),
        format!("http://127.0.0.1:{}", system.ports.query_side),
    )?);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for n in 0..args.clients {
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(n as u64);
        let pace = Duration::from_secs_f64(args.clients as f64 / args.rate.max(0.1));
        clients.push(tokio::spawn(workload.clone().client(
            seed,
            pace,
            stop.clone(),
        )));
    }
    let reader = tokio::spawn(workload.clone().reader(args.seed, stop.clone()));

    let mut rng = fastrand::Rng::with_seed(args.seed);
    let loaded = Instant::now();
    let tally = faults::inject(system, &mut rng, args.faults, !args.verbose).await?;
    let faulted = loaded.elapsed();
    // The faults are over: the clients finish what they have started (retrying as needed).
    let _ = stop_tx.send(true);
    for client in clients {
        client.await??;
    }
    reader.await??;
    let ledger = workload
        .ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let acknowledged = ledger
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Acknowledged(_)))
        .count();
    println!(
        "{} faults in {:.0} s ({}); {} commands, {acknowledged} acknowledged; restarts took {} (median)",
        args.faults,
        faulted.as_secs_f64(),
        tally
            .by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", "),
        ledger.len(),
        median(&tally.restart_times.iter().map(|(_, d)| *d).collect::<Vec<_>>())
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
    );
    // From the start of the process (or of pg_ctl, which waits for recovery) until its port
    // accepts connections again.
    let mut restarts: std::collections::BTreeMap<system::Part, Vec<Duration>> = Default::default();
    for (part, took) in &tally.restart_times {
        restarts.entry(*part).or_default().push(*took);
    }
    println!(
        "    back up after a restart (median / max): {}",
        restarts
            .iter()
            .map(|(part, times)| {
                let max = times.iter().max().copied().unwrap_or_default();
                let mid = median(times).unwrap_or_default();
                format!(
                    "{} {:.2} / {:.2} s",
                    part.name(),
                    mid.as_secs_f64(),
                    max.as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "    by part: {}",
        tally
            .by_part
            .iter()
            .map(|(p, n)| format!("{} {n}", p.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let events = kurrentdb::Client::new(system.event_store_url().parse()?)
        .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let rebuild = system.start_rebuild(settings)?;
    let log = settle(system, &events, settings.orphan_after).await?;

    let mut findings = Vec::new();
    let mut alive = Finding {
        invariant: "no process exited by itself",
        figure: format!("{} unexpected exits", tally.unexpected_exits.len()),
        violations: tally.unexpected_exits.clone(),
    };
    let mut after = faults::FaultTally::default();
    faults::notice_exits(system, &mut after).await?;
    alive.violations.extend(after.unexpected_exits);
    findings.push(alive);
    findings.extend(checks::commands(&ledger, &log));
    findings.push(read_models_equal_rebuild(system).await?);
    findings.extend(checks::payments(&log));
    findings.push(checks::notifications(&log));
    findings.push(forgotten_erased(system, &workload, &log).await?);
    findings.push(retries_answer_the_same(&workload, &ledger).await?);
    findings.push(queries(&workload));
    drop(rebuild);
    for finding in &findings {
        finding.print();
    }
    Ok(findings.iter().filter(|f| !f.violations.is_empty()).count())
}

fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// Waits until the policies have reacted to everything and both projectors (the live one and
/// the fresh rebuild) stand at the same place, with nothing new coming; returns the log.
async fn settle(
    system: &System,
    events: &kurrentdb::Client,
    orphan_after: Duration,
) -> anyhow::Result<Vec<checks::LogEvent>> {
    // Given up when nothing has moved for this long (an orphaned payment waits its delay).
    let patience = orphan_after + Duration::from_secs(30);
    let began = Instant::now();
    let live = read_models::pool(system.database(DATABASE), 2)?;
    let fresh = read_models::pool(system.database(REBUILD_DATABASE), 2)?;
    let mut last = None;
    let mut moved = Instant::now();
    loop {
        let log = checks::read_log(events).await?;
        let live_at = checkpoint(&live).await;
        let fresh_at = checkpoint(&fresh).await;
        let sagas_done = checks::payments(&log)
            .iter()
            .chain(std::iter::once(&checks::notifications(&log)))
            .all(|f| f.violations.is_empty());
        let now = (log.len(), live_at, fresh_at);
        if sagas_done && last == Some(now) && live_at.is_some() && live_at == fresh_at {
            println!(
                "settled in {:.0} s: {} events in the log",
                began.elapsed().as_secs_f64(),
                log.len()
            );
            return Ok(log);
        }
        if last != Some(now) {
            moved = Instant::now();
        }
        if moved.elapsed() > patience {
            println!(
                "the system did not settle: nothing moved for {} s (sagas done: {sagas_done}, live projector at {live_at:?}, rebuild at {fresh_at:?})",
                patience.as_secs()
            );
            return Ok(log);
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where every read model stands (the one furthest back), 0 until each has applied something.
async fn checkpoint(pool: &deadpool_postgres::Pool) -> Option<i64> {
    let client = pool.get().await.ok()?;
    client
        .query_opt(
            read_models::models::APPLIED_POSITION,
            &[&read_models::models::names()],
        )
        .await
        .ok()?
        .map(|row| row.get(0))
}

/// Every table of the read models, row by row, as JSON text in a stable order.
async fn dump(pool: &deadpool_postgres::Pool) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await?;
    let mut rows = Vec::new();
    for table in projector::rebuild::all_tables() {
        let query =
            format!("SELECT '{table} ' || row_to_json(t)::text AS row FROM {table} t ORDER BY row");
        for row in client.query(&query, &[]).await? {
            rows.push(row.get::<_, String>(0));
        }
    }
    Ok(rows)
}

async fn read_models_equal_rebuild(system: &System) -> anyhow::Result<Finding> {
    let live = dump(&read_models::pool(system.database(DATABASE), 1)?).await?;
    let fresh = dump(&read_models::pool(system.database(REBUILD_DATABASE), 1)?).await?;
    let mut finding = Finding {
        invariant: "every read model equals a fresh rebuild from the log, row by row",
        figure: format!("{} rows live, {} rebuilt", live.len(), fresh.len()),
        violations: Vec::new(),
    };
    let fresh_set: std::collections::HashSet<&String> = fresh.iter().collect();
    let live_set: std::collections::HashSet<&String> = live.iter().collect();
    for row in live.iter().filter(|r| !fresh_set.contains(r)) {
        finding.violations.push(format!("only live: {row}"));
    }
    for row in fresh.iter().filter(|r| !live_set.contains(r)) {
        finding.violations.push(format!("only rebuilt: {row}"));
    }
    Ok(finding)
}

/// A forgotten customer's name and place are nowhere in the read models, the query side shows
/// their reservations erased, and their key is gone.
async fn forgotten_erased(
    system: &System,
    workload: &Workload,
    log: &[checks::LogEvent],
) -> anyhow::Result<Finding> {
    let forgotten = checks::forgotten(log);
    let pool = read_models::pool(system.database(DATABASE), 1)?;
    let rows = dump(&pool).await?;
    let keys = customer_keys::PostgresKeys::with_pool(pool).await?;
    let mut finding = Finding {
        invariant: "a forgotten customer's data is erased everywhere",
        figure: String::new(),
        violations: Vec::new(),
    };
    let customers: Vec<(uuid::Uuid, String, String)> = workload
        .customers
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .filter(|c| forgotten.contains(&c.id))
        .map(|c| (c.id, c.name.clone(), c.place.clone()))
        .collect();
    let mut reservations = 0;
    for (id, name, place) in &customers {
        if let Some(row) = rows.iter().find(|r| r.contains(name) || r.contains(place)) {
            finding.violations.push(format!(
                "customer {id} was forgotten, yet a row holds their data: {row}"
            ));
        }
        if !keys.is_forgotten(domain::CustomerId::from(*id)).await? {
            finding
                .violations
                .push(format!("customer {id} was forgotten, yet their key is not"));
        }
        let page: serde_json::Value = workload
            .http()
            .get(format!(
                "{}/dashboard?customer_id={id}&limit=100",
                workload.query_url()
            ))
            .bearer_auth(&*workload.admin_token())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for item in page["items"].as_array().into_iter().flatten() {
            reservations += 1;
            if item["personal_data_erased"] != serde_json::Value::Bool(true)
                || !item["customer_name"].is_null()
            {
                finding.violations.push(format!(
                    "the query side shows forgotten customer {id}'s reservation unerased: {item}"
                ));
            }
        }
    }
    finding.figure = format!(
        "{} customers forgotten, {reservations} of their reservations shown erased, {} rows searched",
        customers.len(),
        rows.len()
    );
    Ok(finding)
}

/// Every acknowledged command, sent again with its request id, gets its original answer.
async fn retries_answer_the_same(
    workload: &Arc<Workload>,
    ledger: &[workload::Record],
) -> anyhow::Result<Finding> {
    let mut finding = Finding {
        invariant: "idempotent retries returned the original answer",
        figure: String::new(),
        violations: Vec::new(),
    };
    let acknowledged: Vec<&workload::Record> = ledger
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Acknowledged(_)))
        .collect();
    let channel = workload.channel()?;
    let mut sent = 0;
    let mut by_name: HashMap<&'static str, u32> = HashMap::new();
    for chunk in acknowledged.chunks(32) {
        let answers = futures::future::join_all(chunk.iter().map(|record| {
            let workload = workload.clone();
            let mut channel = channel.clone();
            let call: Call = record.call.clone();
            let token = record.token.clone();
            async move {
                workload
                    .run(call, token, None, &mut channel)
                    .await
                    .map(|again| again.outcome)
            }
        }))
        .await;
        for (record, again) in chunk.iter().zip(answers) {
            sent += 1;
            *by_name.entry(record.call.name()).or_default() += 1;
            let (Outcome::Acknowledged(first), again) = (&record.outcome, again?) else {
                continue;
            };
            let same = match &again {
                Outcome::Acknowledged(reply) => {
                    reply.id == first.id
                        && reply.revision == first.revision
                        && reply.position == first.position
                }
                _ => false,
            };
            if !same {
                finding.violations.push(format!(
                    "{} {} first answered {first:?}, then {again:?}",
                    record.call.name(),
                    record.call.request_id()
                ));
            }
        }
    }
    let mut names: Vec<_> = by_name.into_iter().collect();
    names.sort();
    finding.figure = format!(
        "{sent} acknowledged commands sent again ({})",
        names
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(finding)
}

fn queries(workload: &Workload) -> Finding {
    let tally = workload
        .queries
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    Finding {
        invariant: "every dashboard read answered 200, or 503 with Retry-After, and only with the reader's own",
        figure: format!(
            "{} answered, {} 503 during outages, {} while the query side was down",
            tally.ok, tally.unavailable, tally.unreachable
        ),
        violations: tally.wrong,
    }
}
