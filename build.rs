//! Build script: compiles the ONNX subset the project encodes (proto/onnx) with protox,
//! so no system `protoc` is needed, and rebuilds when the demo images change.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=assets");
    let descriptors = protox::compile(["onnx/onnx_subset.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
