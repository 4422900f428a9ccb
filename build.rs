//! Build script: rebuild when the embedded demo images change.
fn main() {
    println!("cargo:rerun-if-changed=assets");
}
