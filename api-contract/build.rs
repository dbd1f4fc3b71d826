//! Generates the `cleaning.v1` services and the descriptor set that server reflection serves.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out.join("cleaning_v1_descriptor.bin"))
        .compile_protos(
            &["../proto/cleaning/v1/commands.proto"],
            &[std::path::Path::new("../proto"), include.as_path()],
        )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
