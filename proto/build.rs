//! Compiles `proto/rollcall/v1/*.proto` with protox (pure Rust, no system protoc) and generates tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/rollcall/v1/agent.proto",
        "proto/rollcall/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
