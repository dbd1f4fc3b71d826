//! What checking tokens costs: `ApplyReservation` and `GET /dashboard/{id}` against the release
//! builds, which check every call's bearer token, and against the same services built with
//! `no-auth-baseline` (every call let through unchecked), alternated run by run so that both
//! see the same machine. Both get the same tokens and the same issuer; only the check differs.

use std::path::PathBuf;

use crate::processes::{admin_token, auth_env, beside, free_port, issuer, start_binary};
use crate::stats::{median, report};

#[derive(clap::Args)]
pub struct Options {
    /// Seconds each measurement lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Customers the commands are spread over (returning customers: the key store's first
    /// write per customer is not what is measured here).
    #[arg(long, default_value_t = 1_000)]
    customers: usize,
    /// Reservations in the dashboard the queries read.
    #[arg(long, default_value_t = 100_000)]
    rows: i64,
    /// wrk's open connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// The directory of `command-side` and `query-side` built with
    /// `--features no-auth-baseline`.
    #[arg(long, default_value = "target/no-auth/release")]
    baseline: PathBuf,
}

fn rate(results: &[(f64, f64, f64)]) -> f64 {
    median(&mut results.iter().map(|r| r.0).collect::<Vec<_>>())
}

fn compare(label: &str, unit: &str, checked: &[(f64, f64, f64)], baseline: &[(f64, f64, f64)]) {
    report(&format!("{label}, tokens checked"), unit, checked);
    report(&format!("{label}, baseline      "), unit, baseline);
    println!(
        "{label}: with tokens checked at {:.1}% of the baseline's rate",
        100.0 * rate(checked) / rate(baseline)
    );
}

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    for name in ["command-side", "query-side"] {
        anyhow::ensure!(
            options.baseline.join(name).exists(),
            "{} is missing: build it with `cargo build --release -p command-side -p query-side --features no-auth-baseline --target-dir target/no-auth`",
            options.baseline.join(name).display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (checked_commands, baseline_commands) = (
        beside("command-side")?,
        options.baseline.join("command-side"),
    );
    runtime.block_on(async {
        println!(
            "ApplyReservation, tokens checked and not: median of {runs} runs, {} s each",
            options.seconds
        );
        for concurrency in [1usize, 16, 64] {
            let (mut checked, mut baseline) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                checked.push(
                    crate::commands_bench::measure(
                        &checked_commands,
                        concurrency,
                        options.seconds,
                        options.customers,
                    )
                    .await?,
                );
                baseline.push(
                    crate::commands_bench::measure(
                        &baseline_commands,
                        concurrency,
                        options.seconds,
                        options.customers,
                    )
                    .await?,
                );
            }
            compare(
                &format!("ApplyReservation, concurrency {concurrency:>2}"),
                "commands/s",
                &checked,
                &baseline,
            );
        }
        anyhow::Ok(())
    })?;

    let database = "bench_auth";
    runtime.block_on(crate::queries_bench::fill(database, options.rows))?;
    let issuer = runtime.block_on(issuer())?;
    let token = admin_token(&issuer)?;
    let script = crate::queries_bench::random_rows_script(options.rows)?;
    println!(
        "GET /dashboard/{{id}} over {} rows, wrk {} connections, tokens checked and not: median of {runs} runs, {} s each",
        options.rows, options.connections, options.seconds
    );
    let (mut checked, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (binary, results) in [
            (beside("query-side")?, &mut checked),
            (options.baseline.join("query-side"), &mut baseline),
        ] {
            let port = free_port()?;
            let mut env = auth_env(&issuer);
            env.push(("QUERY_LISTEN", format!("127.0.0.1:{port}")));
            env.push(("PGDATABASE", database.to_string()));
            let (_query_side, _) = start_binary(&binary, &[], &env, port)?;
            let url = format!("http://127.0.0.1:{port}");
            // Warm up (connections, prepared statements, the issuer's keys), then measure.
            crate::queries_bench::wrk(&url, Some(script.path()), &token, options.connections, 1)?;
            results.push(crate::queries_bench::wrk(
                &url,
                Some(script.path()),
                &token,
                options.connections,
                options.seconds,
            )?);
        }
    }
    compare("GET /dashboard/{id}", "requests/s", &checked, &baseline);
    Ok(())
}
