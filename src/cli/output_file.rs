//! Output files a killed run never leaves half-written: each is written beside its final
//! name, then renamed into place, so a file under its final name is always whole (resumes
//! trust that).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The temporary name `path` is written under: `frame_0001.partial.png` for
/// `frame_0001.png` (the extension kept for whatever reads it by name).
fn partial_path(path: &Path) -> PathBuf {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("out");
    path.with_extension(format!("partial.{extension}"))
}

/// Creates `path`'s folder, has `write` write the file under its temporary name, then
/// renames it to `path`.
pub fn write_whole(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let partial = partial_path(path);
    write(&partial)?;
    std::fs::rename(&partial, path).with_context(|| path.display().to_string())
}

/// Writes `bytes` whole to `path`.
pub fn write_bytes_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    write_whole(path, |partial| {
        std::fs::write(partial, bytes).with_context(|| partial.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appears_whole_under_its_name_and_nothing_else_is_left() {
        let dir = std::env::temp_dir().join(format!("stylize-whole-{}", std::process::id()));
        let path = dir.join("deep/frame_0007.png");
        write_bytes_whole(&path, b"frame").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"frame");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            partial_path(&path).file_name().unwrap(),
            "frame_0007.partial.png"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
