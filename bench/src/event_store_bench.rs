//! The event store under load, through the official client, with durable (fsync) commits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kurrentdb::{
    AppendToStreamOptions, Client, EventData, PersistentSubscriptionOptions, ReadAllOptions,
    StreamPosition, SubscribeToAllOptions, SubscribeToPersistentSubscriptionOptions,
    SubscriptionEvent, SubscriptionFilter,
};

use crate::stats::{median, ms, percentile};

#[derive(clap::Args)]
pub struct Options {
    /// Seconds each append measurement lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Events in the log for the `$all` read measurement.
    #[arg(long, default_value_t = 200_000)]
    read_events: u64,
    /// Events whose delivery latency is measured.
    #[arg(long, default_value_t = 2_000)]
    latency_events: usize,
    /// Where the data goes (a temporary directory on the same disk by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// The release `event-store` binary, started as a separate process on a fresh data directory,
/// as it runs in production.
struct Served {
    client: Client,
    child: crate::processes::Process,
    dir: tempfile::TempDir,
    /// From spawning the process to its first accepted connection.
    started_in: Duration,
}

impl Served {
    fn start(data_dir: &Option<std::path::PathBuf>) -> anyhow::Result<Served> {
        let dir = match data_dir {
            Some(parent) => tempfile::tempdir_in(parent)?,
            None => tempfile::tempdir_in(".")?,
        };
        let (child, client, started_in) = spawn(dir.path())?;
        Ok(Served {
            client,
            child,
            dir,
            started_in,
        })
    }

    /// Kills the process with SIGKILL and starts it again on the same data.
    fn crash_and_restart(mut self) -> anyhow::Result<Served> {
        self.child.0.kill()?;
        self.child.0.wait()?;
        let (child, client, started_in) = spawn(self.dir.path())?;
        self.child = child;
        self.client = client;
        self.started_in = started_in;
        Ok(self)
    }

    /// Resident memory of the server process, in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn spawn(dir: &std::path::Path) -> anyhow::Result<(crate::processes::Process, Client, Duration)> {
    let (process, port, started_in) = crate::processes::start_event_store(dir)?;
    let settings = format!("esdb://127.0.0.1:{port}?tls=false").parse()?;
    let client = Client::new(settings).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((process, client, started_in))
}

fn payload(n: u64) -> EventData {
    EventData::json("BenchEvent", &payload_json(n)).expect("json")
}

/// What every append benchmark writes, ours and the peers'.
pub(crate) fn payload_json(n: u64) -> serde_json::Value {
    serde_json::json!({ "n": n, "customer": "c-42", "amount": 12_500 })
}

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        println!("event store benchmark: median of {runs} runs, durable commits (fsync)");
        for appenders in [1usize, 16, 64] {
            let mut rates = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..runs {
                let served = Served::start(&options.data_dir)?;
                let (rate, p99) = appends(&served.client, appenders, Duration::from_secs(options.seconds)).await?;
                rates.push(rate);
                p99s.push(p99);
            }
            println!(
                "append, {appenders:>2} appenders, 1 event each: {:>9.0} events/s (runs: {}), p99 {:.2} ms",
                median(&mut rates.clone()),
                rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
                median(&mut p99s)
            );
        }

        let served = Served::start(&options.data_dir)?;
        println!(
            "start-up, empty log: {:.0} ms to the first connection, {:.1} MiB resident",
            ms(served.started_in),
            served.rss_mib()
        );
        fill(&served.client, options.read_events).await?;
        let served = served.crash_and_restart()?;
        println!(
            "start-up after kill -9 with {} events: {:.0} ms to the first connection, {:.1} MiB resident",
            options.read_events,
            ms(served.started_in),
            served.rss_mib()
        );
        let mut rates = Vec::new();
        for _ in 0..runs {
            rates.push(read_all(&served.client, options.read_events).await?);
        }
        println!(
            "read $all forwards, {} events: {:>9.0} events/s (runs: {})",
            options.read_events,
            median(&mut rates.clone()),
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
        );

        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..runs {
            let (p50, p99) = delivery_latency(&served.client, options.latency_events).await?;
            p50s.push(p50);
            p99s.push(p99);
        }
        println!(
            "live subscription delivery (append call -> event received), {} events: p50 {:.2} ms, p99 {:.2} ms (p99 runs: {})",
            options.latency_events,
            median(&mut p50s),
            median(&mut p99s.clone()),
            p99s.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
        );
        Ok(())
    })
}

/// Appends single events from `appenders` concurrent tasks for `length`; events/s and p99 ms.
async fn appends(
    client: &Client,
    appenders: usize,
    length: Duration,
) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                client
                    .append_to_stream(
                        format!("bench-{a}"),
                        &AppendToStreamOptions::default(),
                        payload(n),
                    )
                    .await?;
                latencies.push(started.elapsed());
                n += 1;
            }
            Ok::<_, kurrentdb::Error>(latencies)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 99.0)),
    ))
}

async fn fill(client: &Client, events: u64) -> anyhow::Result<()> {
    let client = Arc::new(client.clone());
    let mut tasks = Vec::new();
    const BATCH: u64 = 500;
    for chunk in 0..events.div_ceil(BATCH) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<EventData> = (0..BATCH).map(|i| payload(chunk * BATCH + i)).collect();
            client
                .append_to_stream(
                    format!("fill-{}", chunk % 100),
                    &AppendToStreamOptions::default(),
                    batch,
                )
                .await
        }));
        if tasks.len() >= 16 {
            for t in tasks.drain(..) {
                t.await??;
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn read_all(client: &Client, expected: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut read = client
        .read_all(&ReadAllOptions::default().max_count(usize::MAX))
        .await?;
    let mut count = 0u64;
    while read.next().await?.is_some() {
        count += 1;
    }
    anyhow::ensure!(count >= expected, "read {count} of {expected} events");
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One appender writes an event every 2 ms; a live `$all` subscription receives them.
/// Returns p50 and p99 in ms from the start of the append call to receipt.
async fn delivery_latency(client: &Client, events: usize) -> anyhow::Result<(f64, f64)> {
    let filter = SubscriptionFilter::on_stream_name().add_prefix("latency-");
    let mut sub = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::End)
                .filter(filter),
        )
        .await;
    loop {
        if let SubscriptionEvent::CaughtUp(_) = sub.next_subscription_event().await? {
            break;
        }
    }
    let origin = Instant::now();
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0..events as u64 {
                let sent = origin.elapsed().as_micros() as u64;
                let event =
                    EventData::json("Latency", &serde_json::json!({ "n": n, "sent_us": sent }))
                        .expect("json");
                client
                    .append_to_stream("latency-1", &AppendToStreamOptions::default(), event)
                    .await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, kurrentdb::Error>(())
        })
    };
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        if let SubscriptionEvent::EventAppeared(e) = sub.next_subscription_event().await? {
            let received = origin.elapsed().as_micros() as u64;
            let sent = e.get_original_event().as_json::<serde_json::Value>()?["sent_us"]
                .as_u64()
                .unwrap_or(received);
            latencies.push(Duration::from_micros(received.saturating_sub(sent)));
        }
    }
    writer.await??;
    latencies.sort();
    Ok((
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    ))
}

#[derive(clap::Args)]
pub struct PersistentOptions {
    /// Events in the group's stream for the throughput measurement.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Events whose delivery latency is measured.
    #[arg(long, default_value_t = 2_000)]
    latency_events: usize,
    /// Where the data goes (a temporary directory on the same disk by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// Persistent subscriptions (consumer groups): events acknowledged per second with 1 and 4
/// consumers, and live delivery latency, beside the catch-up figures of `event-store`.
pub fn run_persistent(options: PersistentOptions, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        println!("persistent subscription benchmark: median of {runs} runs, durable commits (fsync)");
        let served = Served::start(&options.data_dir)?;
        for consumers in [1usize, 4] {
            let mut rates = Vec::new();
            for run in 0..runs {
                let stream = format!("ps-bench-{consumers}-{run}");
                let batch: Vec<EventData> = (0..options.events).map(payload).collect();
                for chunk in batch.chunks(1000) {
                    served
                        .client
                        .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), chunk.to_vec())
                        .await?;
                }
                rates.push(acknowledged(&served.client, &stream, consumers, options.events).await?);
            }
            println!(
                "persistent subscription, {consumers} consumer(s), {} events from the start, each acknowledged: {:>9.0} events/s (runs: {})",
                options.events,
                median(&mut rates.clone()),
                rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
            );
        }
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for run in 0..runs {
            let (p50, p99) =
                persistent_latency(&served.client, &format!("ps-latency-{run}"), options.latency_events).await?;
            p50s.push(p50);
            p99s.push(p99);
        }
        println!(
            "persistent subscription live delivery (append call -> event received), {} events: p50 {:.2} ms, p99 {:.2} ms (p99 runs: {})",
            options.latency_events,
            median(&mut p50s),
            median(&mut p99s.clone()),
            p99s.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
        );
        println!("event store resident memory at the end: {:.1} MiB", served.rss_mib());
        Ok(())
    })
}

/// A group from the start of `stream`, `consumers` members acknowledging every event; the
/// rate from the first connection to the last acknowledgement received by the group.
async fn acknowledged(
    client: &Client,
    stream: &str,
    consumers: usize,
    events: u64,
) -> anyhow::Result<f64> {
    let mut options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    // The clients' defaults but for the start; a buffer that keeps each consumer busy.
    options.settings_mut().history_buffer_size = 500;
    client
        .create_persistent_subscription(stream, "bench", &options)
        .await?;
    let started = Instant::now();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut sub = client
            .subscribe_to_persistent_subscription(
                stream,
                "bench",
                &SubscribeToPersistentSubscriptionOptions::default().buffer_size(100),
            )
            .await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            while received.load(std::sync::atomic::Ordering::Relaxed) < events {
                let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
                let Ok(event) = next else { break };
                sub.ack(&event?).await?;
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, kurrentdb::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let count = received.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(count >= events, "acknowledged {count} of {events} events");
    // Everything acknowledged reached the group: nothing is in flight any more.
    loop {
        let info = client
            .get_persistent_subscription_info(stream, "bench", &Default::default())
            .await?;
        if info.stats.total_in_flight_messages == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One appender writes an event every 2 ms to a stream with a group; one member receives and
/// acknowledges them. p50 and p99 in ms from the start of the append call to receipt.
async fn persistent_latency(
    client: &Client,
    stream: &str,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    client
        .create_persistent_subscription(
            stream,
            "latency",
            &PersistentSubscriptionOptions::default(),
        )
        .await?;
    let mut sub = client
        .subscribe_to_persistent_subscription(stream, "latency", &Default::default())
        .await?;
    let origin = Instant::now();
    let writer = {
        let (client, stream) = (client.clone(), stream.to_string());
        tokio::spawn(async move {
            for n in 0..events as u64 {
                let sent = origin.elapsed().as_micros() as u64;
                let event =
                    EventData::json("Latency", &serde_json::json!({ "n": n, "sent_us": sent }))
                        .expect("json");
                client
                    .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), event)
                    .await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, kurrentdb::Error>(())
        })
    };
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        let event = sub.next().await?;
        let received = origin.elapsed().as_micros() as u64;
        let sent = event.get_original_event().as_json::<serde_json::Value>()?["sent_us"]
            .as_u64()
            .unwrap_or(received);
        latencies.push(Duration::from_micros(received.saturating_sub(sent)));
        sub.ack(&event).await?;
    }
    writer.await??;
    latencies.sort();
    Ok((
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    ))
}
