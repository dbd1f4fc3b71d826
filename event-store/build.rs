//! Generates the server side of the KurrentDB protocol subset from `proto/`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so that a fresh machine needs nothing installed.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    tonic_build::configure()
        .build_client(true)
        .bytes(["."])
        .compile_protos(
            &[
                "proto/shared.proto",
                "proto/status.proto",
                "proto/streams.proto",
                "proto/serverfeatures.proto",
                "proto/gossip.proto",
                "proto/persistent.proto",
                "proto/projections.proto",
                "proto/operations.proto",
                "proto/monitoring.proto",
            ],
            &[std::path::Path::new("proto"), include.as_path()],
        )?;
    println!("cargo:rerun-if-changed=proto");
    official_client_sources();
    Ok(())
}

/// Where the official client's published sources are, so that a test can run the client's own
/// test suites against this store (`tests/official_client.rs`).
fn official_client_sources() {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(registry) = home.map(|h| h.join("registry").join("src")) else {
        return;
    };
    let Ok(indexes) = std::fs::read_dir(&registry) else {
        return;
    };
    for index in indexes.flatten() {
        let candidate = index.path().join("kurrentdb-1.2.0");
        if candidate.join("tests").is_dir() {
            println!(
                "cargo:rustc-env=KURRENTDB_CLIENT_SRC={}",
                candidate.display()
            );
            return;
        }
    }
}
