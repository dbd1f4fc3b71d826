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

/// Variables for the third-party images (KurrentDB, PostgreSQL, Keycloak), not for our code.
fn third_party(name: &str) -> bool {
    name.starts_with("KURRENTDB_")
        || name.starts_with("POSTGRES_")
        || name.starts_with("KC_")
        || name == "PGDATA"
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
