//! `umadb-load <url> <appenders> <seconds>`: conditional single-event appends to UmaDB, one
//! consistency boundary (a tag) per appender, the same JSON payload as the embedded store gets,
//! through UmaDB's own Rust client (one client shared by every appender, as the embedded store's
//! kurrentdb client is). Each append is conditional on nothing newer than the appender's last
//! event in its boundary: DCB's form of "expected revision". Prints one line:
//! `<events per second> <p99 milliseconds>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use umadb_client::UmaDbClient;
use umadb_dcb::{DcbAppendCondition, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, appenders, seconds] = args.as_slice() else {
        return Err("usage: umadb-load <url> <appenders> <seconds>".into());
    };
    let appenders: usize = appenders.parse()?;
    let length = Duration::from_secs(seconds.parse()?);
    let client = Arc::new(UmaDbClient::new(url.clone()).connect_async().await?);

    // Warm up: the connection, and one event written.
    client.append(vec![event("warm-up", 0)], None, None).await?;

    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("bench-{a}");
            let boundary = DcbQuery::new().item(DcbQueryItem::new().tags([tag.clone()]));
            let mut last: Option<u64> = None;
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut condition = DcbAppendCondition::new(boundary.clone());
                if let Some(last) = last {
                    condition = condition.after(Some(last));
                }
                let begun = Instant::now();
                let position = client
                    .append(vec![event(&tag, n)], Some(condition), None)
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(begun.elapsed());
                last = Some(position);
                n += 1;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    println!(
        "{:.1} {:.3}",
        latencies.len() as f64 / elapsed,
        p99.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The bench's payload, as JSON bytes, tagged with the appender's boundary.
fn event(tag: &str, n: u64) -> DcbEvent {
    let payload = serde_json::json!({ "n": n, "customer": "c-42", "amount": 12_500 });
    DcbEvent::default()
        .event_type("BenchEvent")
        .tags([tag.to_string()])
        .data(payload.to_string().into_bytes())
        .uuid(uuid::Uuid::new_v4())
}
