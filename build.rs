//! Build script: compiles the protobuf sources with protox (no system `protoc`): the gRPC
//! contract (tonic), the contract's file descriptor set for server reflection, and the ONNX
//! subset as prost types, which `tests/onnx_encoding.rs` decodes the core's models with.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=assets");
    let onnx = protox::compile(["onnx/onnx_subset.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(onnx)?;

    let service = protox::compile(["stylize/v1/stylize.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("stylize_v1_descriptor.bin"),
        service.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(service)?;
    Ok(())
}
