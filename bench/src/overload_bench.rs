//! Overload: the command side (and, in [`run_queries`], the query side) driven open-loop (requests sent on a schedule, whether or not
//! earlier ones have been answered, as real clients arrive) at 1x, 2x and 4x the rate it
//! sustains. It must shed what it cannot serve (RESOURCE_EXHAUSTED, at once) instead of
//! queueing it: accepted throughput stays at capacity, accepted calls keep their latency, and
//! memory stays bounded. Each load level runs on a fresh event store and command side, so that
//! the peak memory (`VmHWM`) is that level's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_contract::reservation_service_client::ReservationServiceClient;
use api_contract::ApplyReservationRequest;
use tonic::transport::Channel;

use crate::processes::{beside, free_port, start_binary, start_event_store};
use crate::stats::{median, ms, percentile};

#[derive(clap::Args)]
pub struct Options {
    /// Seconds each load level lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How long a client waits for an answer before it counts the call as failed.
    #[arg(long, default_value_t = 2_000)]
    deadline_ms: u64,
}

/// One load level's figures.
struct Level {
    offered: f64,
    accepted: f64,
    shed_share: f64,
    /// Calls neither accepted nor shed: the deadline passed, or another error.
    failed_share: f64,
    /// Of the calls, those the load generator could not send before their deadline.
    unsent_share: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_mib: f64,
    /// The p99 the server itself measured for the accepted calls (from its `/metrics`), which
    /// leaves out any wait in the load generator; NaN where not measured.
    server_p99_ms: f64,
}

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Capacity: what 64 clients in a closed loop get through (as `bench commands`).
        let command_side = beside("command-side")?;
        let mut rates = Vec::new();
        for _ in 0..runs {
            rates.push(
                crate::commands_bench::measure(&command_side, 64, options.seconds.min(5), 0)
                    .await?
                    .0,
            );
        }
        let capacity = median(&mut rates);
        println!(
            "ApplyReservation, open loop, {} s per level, client deadline {} ms; capacity {capacity:.0}/s (closed loop, 64 clients, median of {runs})",
            options.seconds, options.deadline_ms
        );
        println!("  load  offered/s  accepted/s  shed    failed  p50 ms  p99 ms  peak RSS MiB");
        for factor in [1.0, 2.0, 4.0] {
            let mut levels = Vec::new();
            for _ in 0..runs {
                levels.push(level(&command_side, capacity * factor, &options).await?);
            }
            let pick = |f: fn(&Level) -> f64| median(&mut levels.iter().map(f).collect::<Vec<_>>());
            println!(
                "  {factor:.0}x  {:>9.0}  {:>10.0}  {:>3.0}%  {:>8.1}%  {:>6.1}  {:>6.1}  {:>12.0}",
                pick(|l| l.offered),
                pick(|l| l.accepted),
                100.0 * pick(|l| l.shed_share),
                100.0 * pick(|l| l.failed_share),
                pick(|l| l.p50_ms),
                pick(|l| l.p99_ms),
                pick(|l| l.peak_mib),
            );
        }
        Ok(())
    })
}

/// One load level on a fresh system.
async fn level(
    command_side: &std::path::Path,
    rate: f64,
    options: &Options,
) -> anyhow::Result<Level> {
    let dir = tempfile::tempdir_in(".")?;
    let (_store, store_port, _) = start_event_store(dir.path())?;
    let port = free_port()?;
    let issuer = crate::processes::issuer().await?;
    let mut env = crate::processes::auth_env(&issuer);
    env.push(("COMMAND_LISTEN", format!("127.0.0.1:{port}")));
    env.push((
        "EVENT_STORE_URL",
        format!("esdb://127.0.0.1:{store_port}?tls=false"),
    ));
    let (_payment, endpoint) = crate::processes::start_payment(&env)?;
    env.push(endpoint);
    let (commands, _) = start_binary(command_side, &[], &env, port)?;
    let pid = commands.0.id();
    // Several connections, as many clients would open.
    let mut channels = Vec::new();
    for _ in 0..8 {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        channels.push(crate::processes::as_admin(channel, &issuer)?);
    }
    // Warm up at the capacity's rate for a second.
    drive(&channels, rate.min(500.0), Duration::from_secs(1), options).await;
    let outcome = drive(
        &channels,
        rate,
        Duration::from_secs(options.seconds),
        options,
    )
    .await;
    Ok(level_of(outcome, options, peak_rss_kib(pid)))
}

struct Outcome {
    sent: u64,
    shed: u64,
    failed: u64,
    /// Of the failed, those whose deadline passed before the generator had a connection free to
    /// send them on: the load generator's limit, not the server's.
    unsent: u64,
    latencies: Vec<Duration>,
}

/// Sends `rate` calls per second for `length`, each on its own task, then waits for the last
/// answers (each within the deadline).
async fn drive(
    channels: &[access::client::AuthorizedChannel],
    rate: f64,
    length: Duration,
    options: &Options,
) -> Outcome {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(7))
        .format("%Y-%m-%d")
        .to_string();
    let deadline = Duration::from_millis(options.deadline_ms);
    let shed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < length {
        tick.tick().await;
        // As many as the schedule says should have gone by now.
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let mut client =
                ReservationServiceClient::new(channels[sent as usize % channels.len()].clone());
            let request = ApplyReservationRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                customer_id: uuid::Uuid::new_v4().to_string(),
                customer_name: "Ada Lovelace".into(),
                place: "12 Analytical Row".into(),
                request_date: date.clone(),
                price_cents: 12_500,
                paymethod_kind: "credit_card".into(),
            };
            let (shed, failed, latencies) = (shed.clone(), failed.clone(), latencies.clone());
            tasks.spawn(async move {
                let began = Instant::now();
                let mut call = tonic::Request::new(request);
                call.set_timeout(deadline);
                match tokio::time::timeout(deadline, client.apply_reservation(call)).await {
                    Ok(Ok(_)) => {
                        if let Ok(mut l) = latencies.lock() {
                            l.push(began.elapsed());
                        }
                    }
                    Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            sent += 1;
        }
        // Collect finished tasks as we go, so that the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    Outcome {
        sent,
        shed: shed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        unsent: 0,
        latencies,
    }
}

/// The process's peak resident memory so far, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The query side's half: `GET /dashboard/{id}` (random rows of a filled dashboard) open-loop at
/// 1x, 2x and 4x the rate `wrk` gets through with 64 connections; past its concurrency limit it
/// must answer 503 with `Retry-After` at once.
pub fn run_queries(options: Options, rows: i64, runs: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok(),
        "wrk is missing: apt-get install wrk"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let database = "bench_overload_queries";
    runtime.block_on(crate::queries_bench::fill(database, rows))?;
    let issuer = runtime.block_on(crate::processes::issuer())?;
    let token = crate::processes::admin_token(&issuer)?;
    let start_query_side = || -> anyhow::Result<(crate::processes::Process, u16)> {
        let port = free_port()?;
        let mut env = crate::processes::auth_env(&issuer);
        env.push(("QUERY_LISTEN", format!("127.0.0.1:{port}")));
        env.push(("PGDATABASE", database.to_string()));
        let (process, _) = crate::processes::start("query-side", &[], &env, port)?;
        Ok((process, port))
    };
    // Capacity as this generator sees it (it shares the two cores with the server, and costs
    // more per request than wrk): 64 requests in flight in a closed loop.
    let mut rates = Vec::new();
    for _ in 0..runs {
        let (_process, port) = start_query_side()?;
        let base = format!("http://127.0.0.1:{port}");
        rates.push(runtime.block_on(closed_loop_http(
            &base,
            &token,
            rows,
            64,
            Duration::from_secs(options.seconds.min(5)),
        ))?);
    }
    let capacity = median(&mut rates);
    println!(
        "GET /dashboard/{{id}}, open loop over {rows} rows, {} s per level, client deadline {} ms, at most {HTTP_CONNECTIONS} connections; capacity {capacity:.0}/s (closed loop, 64 in flight, median of {runs})",
        options.seconds, options.deadline_ms
    );
    println!("  load  offered/s  accepted/s  shed    failed  (unsent)  p50 ms  p99 ms  server p99 ms  peak RSS MiB");
    runtime.block_on(async {
        for factor in [1.0, 2.0, 4.0] {
            let mut levels = Vec::new();
            for _ in 0..runs {
                let (process, port) = start_query_side()?;
                let base = format!("http://127.0.0.1:{port}");
                // Warm up: connections open, statements prepared.
                drive_http(
                    &base,
                    &token,
                    rows,
                    capacity.min(500.0),
                    Duration::from_secs(1),
                    &options,
                )
                .await;
                let outcome = drive_http(
                    &base,
                    &token,
                    rows,
                    capacity * factor,
                    Duration::from_secs(options.seconds),
                    &options,
                )
                .await;
                let mut level = level_of(outcome, &options, peak_rss_kib(process.0.id()));
                level.server_p99_ms = server_p99_ms(&base).await.unwrap_or(f64::NAN);
                levels.push(level);
            }
            let pick = |f: fn(&Level) -> f64| median(&mut levels.iter().map(f).collect::<Vec<_>>());
            println!(
                "  {factor:.0}x  {:>9.0}  {:>10.0}  {:>3.0}%  {:>8.1}%  {:>7.1}%  {:>6.1}  {:>6.1}  {:>13.1}  {:>12.0}",
                pick(|l| l.offered),
                pick(|l| l.accepted),
                100.0 * pick(|l| l.shed_share),
                100.0 * pick(|l| l.failed_share),
                100.0 * pick(|l| l.unsent_share),
                pick(|l| l.p50_ms),
                pick(|l| l.p99_ms),
                pick(|l| l.server_p99_ms),
                pick(|l| l.peak_mib),
            );
        }
        Ok(())
    })
}

fn level_of(outcome: Outcome, options: &Options, peak_kib: Option<u64>) -> Level {
    let seconds = options.seconds as f64;
    let sent = outcome.sent.max(1) as f64;
    let mut latencies = outcome.latencies;
    latencies.sort();
    Level {
        offered: outcome.sent as f64 / seconds,
        accepted: latencies.len() as f64 / seconds,
        shed_share: outcome.shed as f64 / sent,
        failed_share: outcome.failed as f64 / sent,
        unsent_share: outcome.unsent as f64 / sent,
        p50_ms: ms(percentile(&latencies, 50.0)),
        p99_ms: ms(percentile(&latencies, 99.0)),
        peak_mib: peak_kib.unwrap_or(0) as f64 / 1024.0,
        server_p99_ms: f64::NAN,
    }
}

/// Requests per second `in_flight` clients get through, each sending its next request when
/// the last is answered (200 only; anything else is an error: capacity is measured unloaded).
async fn closed_loop_http(
    base: &str,
    token: &str,
    rows: i64,
    in_flight: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let authorization = format!("Bearer {token}");
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for first in 0..in_flight as u64 {
        let (client, base, authorization) =
            (client.clone(), base.to_string(), authorization.clone());
        clients.spawn(async move {
            let mut done = 0u64;
            let mut n = first;
            while started.elapsed() < length {
                let row = (n.wrapping_mul(2_654_435_761) % rows as u64) + 1;
                n += in_flight as u64;
                let response = client
                    .get(format!(
                        "{base}/dashboard/00000000-0000-4000-8000-{row:012x}"
                    ))
                    .header("authorization", &authorization)
                    .send()
                    .await?
                    .error_for_status()?;
                response.bytes().await?;
                done += 1;
            }
            Ok::<_, reqwest::Error>(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = clients.join_next().await {
        done += joined??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The query side's own p99 of `GET /dashboard/{id}` answered 200, from its Prometheus summary.
async fn server_p99_ms(base: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("http_request_duration_seconds{")?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains("route=\"/dashboard/{reservation_id}\"")
            && labels.contains("status=\"200\"")
            && labels.contains("quantile=\"0.99\""))
        .then(|| value.trim().parse::<f64>().ok().map(|s| s * 1000.0))?
    })
}

/// Connections the HTTP load generator keeps open at most, as `wrk2 -c` does: a request due
/// while all are busy waits for one, and that wait counts in its latency (measured from when it
/// was due, so a slow server cannot hide behind a slow client). Without a cap each waiting
/// request opened its own connection and the generator ran out of file descriptors before the
/// server ran out of anything.
const HTTP_CONNECTIONS: usize = 256;

/// Sends `rate` GETs per second for `length`, each on its own task: 200 is accepted, 503 with
/// `Retry-After` is shed, anything else (or the deadline, counted from when it was due) failed.
async fn drive_http(
    base: &str,
    token: &str,
    rows: i64,
    rate: f64,
    length: Duration,
    options: &Options,
) -> Outcome {
    let deadline = Duration::from_millis(options.deadline_ms);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(HTTP_CONNECTIONS)
        .build()
        .unwrap_or_default();
    let connections = Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS));
    let unsent = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let authorization = format!("Bearer {token}");
    while started.elapsed() < length {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            // A row spread over the table, as wrk's script picks them.
            let row = (sent.wrapping_mul(2_654_435_761) % rows as u64) + 1;
            let url = format!("{base}/dashboard/00000000-0000-4000-8000-{row:012x}");
            let request = client.get(url).header("authorization", &authorization);
            let (shed, failed, latencies) = (shed.clone(), failed.clone(), latencies.clone());
            let (connections, unsent) = (connections.clone(), unsent.clone());
            tasks.spawn(async move {
                let began = Instant::now();
                let on_the_wire = std::sync::atomic::AtomicBool::new(false);
                let answer = tokio::time::timeout(deadline, async {
                    let _connection = connections.acquire().await;
                    on_the_wire.store(true, Ordering::Relaxed);
                    let response = request.send().await?;
                    let status = response.status();
                    let shed = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && response.headers().contains_key("retry-after");
                    response.bytes().await?;
                    Ok::<_, reqwest::Error>((status, shed))
                })
                .await;
                match answer {
                    Ok(Ok((reqwest::StatusCode::OK, _))) => {
                        if let Ok(mut l) = latencies.lock() {
                            l.push(began.elapsed());
                        }
                    }
                    Ok(Ok((_, true))) => {
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if !on_the_wire.load(Ordering::Relaxed) {
                            unsent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            sent += 1;
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    Outcome {
        sent,
        shed: shed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        unsent: unsent.load(Ordering::Relaxed),
        latencies,
    }
}
