//! ONNX Runtime's shared library on disk: the two PyPI builds we use (`onnxruntime` for the
//! CPU, `onnxruntime-gpu` for CUDA 13), each pinned by the wheel's and every member's sha256;
//! fetching one into the models directory and finding it (`$ORT_DYLIB_PATH` first).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::fetch::{PinnedWheel, download_wheel, downloads_dir, wheel_member};

const MANYLINUX_CP311: &[&str] = &[
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux_2_28_x86_64",
];

/// File name of the main library inside a flavour's directory.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Which build of the library: the CPU one, or the one with the CUDA execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Cpu,
    Cuda,
}

/// A file taken out of a wheel: its path inside, its digest, its name on disk.
struct Member {
    path: &'static str,
    sha256: &'static str,
    file: &'static str,
}

impl Flavor {
    /// The build this binary pairs with: CUDA builds run ONNX Runtime's CUDA provider.
    pub fn for_build() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else {
            Self::Cpu
        }
    }

    fn wheel(self) -> PinnedWheel {
        match self {
            Self::Cpu => PinnedWheel {
                requirement: "onnxruntime==1.31.1",
                sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
                platform_args: MANYLINUX_CP311,
            },
            Self::Cuda => PinnedWheel {
                requirement: "onnxruntime-gpu==1.31.1",
                sha256: "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
                platform_args: MANYLINUX_CP311,
            },
        }
    }

    /// The main library first; the CUDA provider is loaded by ONNX Runtime from the main
    /// library's directory.
    fn members(self) -> &'static [Member] {
        match self {
            Self::Cpu => &[Member {
                path: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
                file: LIBRARY_FILE,
            }],
            Self::Cuda => &[
                Member {
                    path: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                    sha256: "5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303",
                    file: LIBRARY_FILE,
                },
                Member {
                    path: "onnxruntime/capi/libonnxruntime_providers_shared.so",
                    sha256: "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
                    file: "libonnxruntime_providers_shared.so",
                },
                Member {
                    path: "onnxruntime/capi/libonnxruntime_providers_cuda.so",
                    sha256: "d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137",
                    file: "libonnxruntime_providers_cuda.so",
                },
            ],
        }
    }

    /// Where `fetch` installs this flavour, inside the models directory.
    pub fn directory(self, models_dir: &Path) -> PathBuf {
        match self {
            Self::Cpu => models_dir.join("libs"),
            Self::Cuda => models_dir.join("libs").join("cuda"),
        }
    }
}

impl FromStr for Flavor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(Error::invalid(
                "flavor",
                format!("`{other}` is not cpu or cuda"),
            )),
        }
    }
}

/// Where `fetch` puts the main library of `flavor`.
pub fn bundled_library(models_dir: &Path, flavor: Flavor) -> PathBuf {
    flavor.directory(models_dir).join(LIBRARY_FILE)
}

/// The library to load: `$ORT_DYLIB_PATH` when set, else the fetched copy if present.
pub fn locate(models_dir: &Path, flavor: Flavor) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(path));
    }
    let bundled = bundled_library(models_dir, flavor);
    flavor
        .members()
        .iter()
        .all(|m| bundled.with_file_name(m.file).exists())
        .then_some(bundled)
}

/// Downloads the pinned wheel (or reuses a verified cached copy), checks every member's
/// sha256 and writes them to the flavour's directory; returns the main library's path.
pub fn fetch(models_dir: &Path, flavor: Flavor) -> Result<PathBuf> {
    let wheel = download_wheel(&flavor.wheel(), &downloads_dir(models_dir))?;
    let dir = flavor.directory(models_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // The main library last: `locate` treats the set as present once all files exist, and
    // each file appears whole (written aside, then renamed).
    for member in flavor.members().iter().rev() {
        let bytes = wheel_member(&wheel, member.path, member.sha256)?;
        let path = dir.join(member.file);
        let partial = path.with_extension(format!("partial.{}", std::process::id()));
        std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(bundled_library(models_dir, flavor))
}

/// The library if present, else fetched.
pub fn ensure(models_dir: &Path, flavor: Flavor) -> Result<PathBuf> {
    match locate(models_dir, flavor) {
        Some(path) => Ok(path),
        None => fetch(models_dir, flavor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_parse_and_live_apart() {
        assert_eq!("cpu".parse::<Flavor>().unwrap(), Flavor::Cpu);
        assert_eq!("cuda".parse::<Flavor>().unwrap(), Flavor::Cuda);
        let err = "rocm".parse::<Flavor>().unwrap_err().to_string();
        assert!(err.contains("flavor") && err.contains("rocm"), "{err}");
        let models = Path::new("m");
        assert_ne!(
            bundled_library(models, Flavor::Cpu),
            bundled_library(models, Flavor::Cuda)
        );
    }

    #[test]
    fn the_cuda_flavour_is_incomplete_without_its_provider() {
        let models = tempfile::tempdir().unwrap();
        let dir = Flavor::Cuda.directory(models.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LIBRARY_FILE), b"x").unwrap();
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            assert_eq!(locate(models.path(), Flavor::Cuda), None);
        }
    }
}
