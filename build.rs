//! Build script: compiles the protobuf sources with protox (no system `protoc`): the gRPC
//! contract (tonic), the contract's file descriptor set for server reflection, and the ONNX
//! subset as prost types, which `tests/onnx_encoding.rs` decodes the core's models with;
//! and the git commit the binary is built from (`STYLIZE_GIT_COMMIT`), which ServerInfo and
//! the build-info metric report.
use prost::Message;

/// The commit being built: `STYLIZE_GIT_COMMIT` when the builder sets it (an image built
/// from a tree without `.git`), else git's HEAD, else "unknown".
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=STYLIZE_GIT_COMMIT");
    if let Ok(given) = std::env::var("STYLIZE_GIT_COMMIT")
        && !given.trim().is_empty()
    {
        return given.trim().to_string();
    }
    // HEAD moves on every commit: its file (a branch name) and the branch refs, wherever
    // git keeps them (a worktree's `.git` is a file naming another directory).
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", watched])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

/// What `git args` prints, trimmed; `None` without git, outside a checkout, or on failure.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=assets");
    println!("cargo:rustc-env=STYLIZE_GIT_COMMIT={}", git_commit());
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
