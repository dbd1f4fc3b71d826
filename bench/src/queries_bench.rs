//! The query side under `wrk`: `GET /dashboard/{id}` (random rows) and a deep page of
//! `GET /dashboard`, against the release `query-side` binary over a dashboard of a million
//! reservations in PostgreSQL.

use std::process::Command;

use crate::processes::{free_port, start};
use crate::stats::report;

#[derive(clap::Args)]
pub struct Options {
    /// Reservations in the dashboard.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Seconds each wrk run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
}

/// The id of the i-th generated reservation: predictable, so that wrk's script can pick any.
const ID_PATTERN: &str = "00000000-0000-4000-8000-";

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is missing: apt-get install wrk"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let database = "bench_queries";
    runtime.block_on(fill(database, options.rows))?;

    let port = free_port()?;
    let issuer = runtime.block_on(crate::processes::issuer())?;
    let token = crate::processes::admin_token(&issuer)?;
    let mut env = crate::processes::auth_env(&issuer);
    env.push(("QUERY_LISTEN", format!("127.0.0.1:{port}")));
    env.push(("PGDATABASE", database.to_string()));
    let (_query_side, _) = start("query-side", &[], &env, port)?;
    let base = format!("http://127.0.0.1:{port}");
    let script = random_rows_script(options.rows)?;
    // The cursor of a page nine tenths of the way down (newest first).
    let deep = (options.rows / 10).max(1);
    let cursor = base64_url(&format!("p{deep}"));
    println!(
        "query side over {} reservations, wrk {} connections, 2 threads, {} s, median of {runs} runs",
        options.rows, options.connections, options.seconds
    );
    for (label, url, script) in [
        (
            "GET /dashboard/{id} (random rows)",
            base.clone(),
            Some(script.path()),
        ),
        (
            "GET /dashboard?limit=50&after=<90% deep>",
            format!("{base}/dashboard?limit=50&after={cursor}"),
            None,
        ),
    ] {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push(wrk(
                &url,
                script,
                &token,
                options.connections,
                options.seconds,
            )?);
        }
        report(label, "requests/s", &results);
    }
    Ok(())
}

/// A wrk script asking for random rows of the generated dashboard.
pub(crate) fn random_rows_script(rows: i64) -> anyhow::Result<tempfile::NamedTempFile> {
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        format!(
            "math.randomseed(os.time())\n\
             request = function()\n\
               return wrk.format(nil, string.format(\"/dashboard/{ID_PATTERN}%012x\", math.random(1, {rows})))\n\
             end\n"
        ),
    )?;
    Ok(script)
}

/// One wrk run with `token`: requests/s, p50 and p99 in ms. Every answer must be 2xx.
pub(crate) fn wrk(
    url: &str,
    script: Option<&std::path::Path>,
    token: &str,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut wrk = Command::new("wrk");
    wrk.args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-t2", &format!("-c{connections}")])
        .args([format!("-d{seconds}s"), "--latency".into()]);
    if let Some(script) = script {
        wrk.arg("-s").arg(script);
    }
    let output = wrk.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        !text.contains("Non-2xx"),
        "{url}: some answers were not 2xx:\n{text}"
    );
    Ok((
        field(&text, "Requests/sec:")?,
        latency_ms(&text, "50%")?,
        latency_ms(&text, "99%")?,
    ))
}

/// A fresh database with the read-model schema and `rows` dashboard rows, made in SQL.
pub(crate) async fn fill(database: &str, rows: i64) -> anyhow::Result<()> {
    let admin = read_models::config_from_env()?;
    let (client, connection) = admin.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let mut config = admin.clone();
    config.dbname(database);
    let pool = read_models::pool(config, 2)?;
    read_models::migrate(&pool).await?;
    let started = std::time::Instant::now();
    pool.get()
        .await?
        .batch_execute(&format!(
            "INSERT INTO dashboard (reservation_id, customer_id, customer_name, place, request_date,
                 price_cents, status, payment_id, payment_kind, payment_status, last_notification,
                 requested_at, updated_at, last_position, requested_position)
             SELECT ('{ID_PATTERN}' || lpad(to_hex(i), 12, '0'))::uuid,
                    ('00000000-0000-4000-9000-' || lpad(to_hex(i % 50000), 12, '0'))::uuid,
                    'Customer ' || i, i || ' Analytical Row', date '2030-01-01' + (i % 365),
                    1000 + i % 90000,
                    (ARRAY['requested','cleaning_started','cleaning_completed','cancelled'])[1 + i % 4],
                    ('00000000-0000-4000-a000-' || lpad(to_hex(i), 12, '0'))::uuid,
                    'credit_card', 'approved', 'PaymentApproved: approved',
                    now(), now(), i, i
             FROM generate_series(1, {rows}) AS i;
             ANALYZE dashboard;"
        ))
        .await?;
    println!(
        "filled {rows} dashboard rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn field(text: &str, name: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in wrk's output:\n{text}"))
}

/// wrk's latency distribution line, e.g. "99%    3.21ms", in milliseconds.
fn latency_ms(text: &str, percentile: &str) -> anyhow::Result<f64> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(percentile).map(str::trim))
        .ok_or_else(|| anyhow::anyhow!("no {percentile} line in wrk's output:\n{text}"))?;
    let (number, factor) = if let Some(us) = value.strip_suffix("us") {
        (us, 0.001)
    } else if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000.0)
    } else {
        anyhow::bail!("cannot read latency {value:?}")
    };
    Ok(number.parse::<f64>()? * factor)
}

fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
