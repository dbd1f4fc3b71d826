//! Medians and percentiles over plain samples.

use std::time::Duration;

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The `p`-th percentile (0..=100) of durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line for several runs of a measurement: the median rate, p50 and p99, and every run's
/// rate and p99 so that the spread shows. `results` holds (rate, p50 ms, p99 ms) per run.
pub fn report(label: &str, unit: &str, results: &[(f64, f64, f64)]) {
    let rates: Vec<f64> = results.iter().map(|r| r.0).collect();
    let mut p50s: Vec<f64> = results.iter().map(|r| r.1).collect();
    let p99s: Vec<f64> = results.iter().map(|r| r.2).collect();
    let list = |values: &[f64], digits: usize| {
        values
            .iter()
            .map(|v| format!("{v:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{label}: {:>7.0} {unit} (runs: {}), p50 {:.2} ms, p99 {:.2} ms (p99 runs: {})",
        median(&mut rates.clone()),
        list(&rates, 0),
        median(&mut p50s),
        median(&mut p99s.clone()),
        list(&p99s, 2),
    );
}
