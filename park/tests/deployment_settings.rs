//! The deployment files and the code agree: every environment variable that
//! docker-compose.yml, the Dockerfile or a k8s manifest sets is one the code reads (a typo there
//! would otherwise be ignored in silence and a default used). Schema validation of the same
//! files is in `.ci/run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !["target", "data", ".git", "tests"].contains(&name.as_str()) {
                files(&path, extension, found);
            }
        } else if name.ends_with(extension) {
            found.push(path);
        }
    }
}

/// Every upper-case string literal in the deployables' sources: the names they read with
/// `std::env::var`, clap's `env = ...` and the settings helpers.
fn names_the_code_reads() -> BTreeSet<String> {
    let literal = regex::Regex::new(r#""([A-Z][A-Z0-9_]{2,})""#).unwrap();
    let mut sources = Vec::new();
    files(&repository(), ".rs", &mut sources);
    let mut names = BTreeSet::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        names.extend(literal.captures_iter(&text).map(|c| c[1].to_string()));
    }
    // Read by libraries rather than by name in our code.
    names.insert("RUST_LOG".into());
    names
}

/// Upper-case keys set in a file: `NAME: value`, `- name: NAME`, `NAME=value`, `ENV NAME=...`.
fn names_set_in(text: &str) -> BTreeSet<String> {
    let patterns = [
        r"(?m)^\s+([A-Z][A-Z0-9_]+):",
        r"(?m)name: ([A-Z][A-Z0-9_]+)\b",
        r"(?m)^\s+- ([A-Z][A-Z0-9_]+)=",
        r"(?m)(?:^ENV |\s)([A-Z][A-Z0-9_]+)=",
    ];
    let mut names = BTreeSet::new();
    for pattern in patterns {
        let re = regex::Regex::new(pattern).unwrap();
        names.extend(re.captures_iter(text).map(|c| c[1].to_string()));
    }
    names
}

/// Variables for the third-party images (KurrentDB, PostgreSQL, Keycloak, Grafana), not for our
/// code.
fn third_party(name: &str) -> bool {
    name.starts_with("KURRENTDB_")
        || name.starts_with("POSTGRES_")
        || name.starts_with("KC_")
        || name.starts_with("GF_")
        || name == "PGDATA"
        // Read by the OpenTelemetry SDK itself: the standard variables the files use.
        || [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
        ]
        .contains(&name)
}

#[test]
fn every_variable_the_deployment_sets_is_read_by_the_code() {
    let read = names_the_code_reads();
    let mut deployment = vec![
        repository().join("docker-compose.yml"),
        repository().join("Dockerfile"),
    ];
    files(&repository().join("k8s"), ".yaml", &mut deployment);
    assert!(deployment.len() > 5, "manifests not found: {deployment:?}");
    let mut unknown = Vec::new();
    let mut checked = 0;
    for path in &deployment {
        let text = std::fs::read_to_string(path).unwrap();
        for name in names_set_in(&text) {
            checked += 1;
            if !third_party(&name) && !read.contains(&name) {
                unknown.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(checked > 20, "suspiciously few variables found ({checked})");
    assert!(unknown.is_empty(), "set but never read: {unknown:#?}");
}

#[test]
fn the_check_catches_a_misspelt_variable() {
    let read = names_the_code_reads();
    assert!(read.contains("EVENT_STORE_URL") && read.contains("SHUTDOWN_DRAIN_DELAY_MS"));
    let set = names_set_in("    env:\n      - { name: EVENT_STORE_ULR, value: x }\n");
    assert!(set.contains("EVENT_STORE_ULR") && !read.contains("EVENT_STORE_ULR"));
}

/// Every metric name the code records: `counter!("name"`, `gauge!(...)`, `histogram!(...)`.
fn metrics_the_code_records() -> BTreeSet<String> {
    let recorded =
        regex::Regex::new(r#"(?:counter|gauge|histogram)!\(\s*"([a-z_][a-z0-9_]*)""#).unwrap();
    let mut sources = Vec::new();
    files(&repository(), ".rs", &mut sources);
    let mut names = BTreeSet::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        names.extend(recorded.captures_iter(&text).map(|c| c[1].to_string()));
    }
    names
}

/// The metric names a PromQL expression reads: its identifiers once label matchers, `by (...)`
/// lists, ranges and strings are taken out, less PromQL's own words.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let stripped = regex::Regex::new(r#"\{[^}]*\}|\[[^\]]*\]|(?:by|without)\s*\([^)]*\)|"[^"]*""#)
        .unwrap()
        .replace_all(expr, " ");
    let identifier = regex::Regex::new(r"[A-Za-z_][A-Za-z0-9_:]*").unwrap();
    let promql = [
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
        "topk",
        "bottomk",
        "abs",
        "clamp_min",
        "clamp_max",
        "delta",
        "deriv",
        "time",
        "vector",
        "scalar",
    ];
    identifier
        .find_iter(&stripped)
        .map(|m| m.as_str().to_string())
        .filter(|name| !promql.contains(&name.as_str()))
        .collect()
}

fn expressions(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, found)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboards_query_is_one_the_code_records() {
    let recorded = metrics_the_code_records();
    let mut dashboards = Vec::new();
    files(
        &repository().join("observability/grafana/dashboards"),
        ".json",
        &mut dashboards,
    );
    assert!(!dashboards.is_empty(), "no dashboards found");
    for path in dashboards {
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        let mut found = Vec::new();
        expressions(&dashboard, &mut found);
        assert!(found.len() > 10, "{}: too few queries", path.display());
        for expr in found {
            let names = metrics_in(&expr);
            assert!(!names.is_empty(), "{expr}: reads no metric");
            for name in names {
                // Summaries and histograms are also read through their parts.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| recorded.contains(*base))
                    .unwrap_or(&name);
                assert!(
                    recorded.contains(base),
                    "{}: {expr} reads {name}, which no code records (recorded: {recorded:?})",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn promql_names_its_metrics_and_not_its_own_words() {
    let recorded = metrics_the_code_records();
    assert!(recorded.contains("grpc_server_calls_total"), "{recorded:?}");
    let names = metrics_in(
        r#"max by (method) (grpc_server_call_duration_seconds{quantile="0.99"}) - sum(rate(no_such_metric_total[1m]))"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["grpc_server_call_duration_seconds", "no_such_metric_total"]
    );
    assert!(!recorded.contains("no_such_metric_total"));
}

/// Prometheus (the compose observability profile) scrapes every service at the port it serves
/// its metrics on there.
#[test]
fn prometheus_scrapes_every_service_where_compose_serves_its_metrics() {
    let prometheus =
        std::fs::read_to_string(repository().join("observability/prometheus.yml")).unwrap();
    let compose = std::fs::read_to_string(repository().join("docker-compose.yml")).unwrap();
    for (service, port) in [
        ("command-side", "9093"),
        ("payment", "9094"),
        ("projector", "9091"),
        ("policies", "9092"),
        ("query-side", "8080"),
    ] {
        assert!(
            prometheus.contains(&format!("\"{service}:{port}\"")),
            "prometheus.yml does not scrape {service}:{port}"
        );
        assert!(
            compose.contains(&format!("0.0.0.0:{port}")),
            "compose does not serve {service} on {port}"
        );
        assert!(
            compose.contains(&format!("OTEL_SERVICE_NAME: {service}")),
            "compose does not name {service}'s traces"
        );
    }
}
