//! The Kubernetes overlays promise frame sizes (CPU nodes: 1920x1080; GPU nodes: 4096x2160):
//! each overlay's memory limit, less what `serve` keeps back, must fit such a frame under the
//! memory model with a server-chosen plan, and its `STYLIZE_MAX_PIXELS` must admit it.

use std::path::Path;

use stylize::engine::footprint::Footprint;
use stylize::memory::RESERVE_BYTES;
use stylize::render::{RenderOptions, RenderRequest, plan_memory};

/// The value after `key:` on the first line holding it after `after`, in a manifest.
fn field_after(text: &str, after: &str, key: &str) -> String {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("`{after}` not in the manifest"));
    text[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("`{key}` not after `{after}`"))
        .trim()
        .trim_matches('"')
        .to_string()
}

fn manifest(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// A request as a render farm sends it: one frame, one style, contract defaults.
fn frame(width: u32, height: u32) -> RenderRequest {
    RenderRequest {
        content: image::RgbImage::new(width, height).into(),
        styles: vec![image::RgbImage::new(1280, 1014)],
        blend: vec![],
        options: RenderOptions {
            size: width.max(height),
            ..Default::default()
        },
    }
}

fn check(overlay: &str, limit: &str, max_pixels: &str, (width, height): (u32, u32)) {
    let base = manifest("deploy/k8s/base/deployment.yaml");
    let cache: u64 = field_after(&base, "STYLIZE_CACHE_BYTES", "value:")
        .parse()
        .unwrap();
    let registry = 256 << 20; // serve's default --registry-bytes
    // As the server reads its byte flags: Kubernetes units.
    let limit = limit.parse::<bytesize::ByteSize>().unwrap().as_u64();
    let resident = Footprint::ORT_CPU.resident;
    let for_jobs = limit - RESERVE_BYTES - cache - registry - resident;
    let request = frame(width, height);
    let plan = plan_memory(&request, &Footprint::ORT_CPU, Some(for_jobs))
        .unwrap_or_else(|e| panic!("{overlay}: {width}x{height} does not fit {limit} bytes: {e}"));
    assert!(plan.estimate <= for_jobs);
    let max_pixels: u64 = max_pixels.parse().unwrap();
    let longest = width.max(height) as u64;
    assert!(
        longest * longest <= max_pixels,
        "{overlay}: STYLIZE_MAX_PIXELS {max_pixels} refuses {width}x{height}"
    );
    eprintln!(
        "{overlay}: {width}x{height} in {} MiB: {} tiles ({:?}-px cores, {} stages kept), history {}, estimate {} MiB of {} MiB",
        limit >> 20,
        plan.tiles,
        plan.tile_side,
        plan.kept_stages,
        plan.history,
        plan.estimate >> 20,
        for_jobs >> 20
    );
}

#[test]
fn cpu_nodes_fit_1920x1080() {
    let base = manifest("deploy/k8s/base/deployment.yaml");
    let limit = field_after(&base, "limits:", "memory:");
    let max_pixels = field_after(&base, "STYLIZE_MAX_PIXELS", "value:");
    check("cpu", &limit, &max_pixels, (1920, 1080));
}

#[test]
fn gpu_nodes_fit_4096x2160() {
    let gpu = manifest("deploy/k8s/overlays/gpu/gpu.yaml");
    let limit = field_after(&gpu, "limits:", "memory:");
    let max_pixels = field_after(&gpu, "STYLIZE_MAX_PIXELS", "value:");
    check("gpu", &limit, &max_pixels, (4096, 2160));
}
