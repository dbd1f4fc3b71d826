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
            ],
            &[std::path::Path::new("proto"), include.as_path()],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
