// Generates kilnd's gRPC API (server and client) from builder/proto.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/kiln/v1/control.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().compile_protos(&[proto], &["proto"])?;
    Ok(())
}
