//! Frame file patterns as farms and renderers write them: a run of `#` (`frame_####.exr`),
//! printf's `%04d` (any width, or `%d`) and Houdini's `$F4` (or `$F`), in the file name.
//! A pattern names frame N's file and lists the numbers that exist on disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::exit::Usage;

/// A parsed pattern: the text around the frame number and its zero-padded width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramePattern {
    /// The flag that gave it, for errors.
    flag: String,
    prefix: String,
    /// Digits at least (padded with zeros); 1 is unpadded.
    width: usize,
    suffix: String,
}

/// The number's token at the start of `rest`: its length in bytes and the width it pads to.
fn token_at(rest: &str) -> Option<(usize, usize)> {
    if rest.starts_with('#') {
        let run = rest.chars().take_while(|&c| c == '#').count();
        return Some((run, run));
    }
    if let Some(spec) = rest.strip_prefix('%') {
        let digits = spec.chars().take_while(char::is_ascii_digit).count();
        if spec[digits..].starts_with('d') {
            let width = spec[..digits].parse::<usize>().unwrap_or(1).max(1);
            return Some((digits + 2, width));
        }
    }
    if let Some(spec) = rest.strip_prefix("$F") {
        let digits = spec.chars().take_while(char::is_ascii_digit).count();
        // `$Frame` is another variable, not the frame number.
        if spec[digits..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let width = spec[..digits].parse::<usize>().unwrap_or(1).max(1);
        return Some((digits + 2, width));
    }
    None
}

impl FramePattern {
    /// Parses `pattern`, given by `--flag`: its file name must hold one frame-number token.
    pub fn parse(flag: &str, pattern: &str) -> Result<Self> {
        let name_start = pattern.rfind('/').map_or(0, |i| i + 1);
        let name = &pattern[name_start..];
        let found = name
            .char_indices()
            .find_map(|(i, _)| token_at(&name[i..]).map(|(len, width)| (i, len, width)));
        let refuse = |why: &str| Err(Usage(format!("--{flag}: `{pattern}` {why}")).into());
        let Some((start, len, width)) = found else {
            return refuse("has no frame number in its file name (`####`, `%04d` or `$F4`)");
        };
        let after = &name[start + len..];
        if after
            .char_indices()
            .any(|(i, _)| token_at(&after[i..]).is_some())
        {
            return refuse("has more than one frame number in its file name");
        }
        if width > 18 {
            return refuse(&format!(
                "pads the frame number to {width} digits (at most 18)"
            ));
        }
        Ok(Self {
            flag: flag.to_string(),
            prefix: pattern[..name_start + start].to_string(),
            width,
            suffix: after.to_string(),
        })
    }

    /// The flag that gave the pattern.
    pub fn flag(&self) -> &str {
        &self.flag
    }

    /// Frame `number`'s file.
    pub fn path(&self, number: u64) -> PathBuf {
        let width = self.width;
        PathBuf::from(format!("{}{number:0width$}{}", self.prefix, self.suffix))
    }

    /// Whether the file name ends with `extension` (lower case, without the dot).
    pub fn has_extension(&self, extension: &str) -> bool {
        self.suffix
            .to_ascii_lowercase()
            .ends_with(&format!(".{extension}"))
    }

    /// The numbers of the files that exist, ascending (none is an error naming the flag).
    pub fn existing(&self) -> Result<Vec<u64>> {
        let flag = &self.flag;
        let dir = Path::new(&self.prefix)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name_prefix = self.prefix.rsplit('/').next().unwrap_or(&self.prefix);
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("--{flag}: {}", dir.display()))?;
        let mut numbers = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let digits = name
                .strip_prefix(name_prefix)
                .and_then(|rest| rest.strip_suffix(self.suffix.as_str()));
            if let Some(digits) = digits
                && !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && let Ok(number) = digits.parse::<u64>()
                && self.path(number).file_name() == Some(name.as_ref())
            {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        if numbers.is_empty() {
            bail!("--{flag}: no file matches `{}`", self.path_text());
        }
        Ok(numbers)
    }

    /// The pattern as `####` text, for messages.
    fn path_text(&self) -> String {
        format!("{}{}{}", self.prefix, "#".repeat(self.width), self.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(pattern: &str, number: u64) -> String {
        FramePattern::parse("out", pattern)
            .unwrap()
            .path(number)
            .display()
            .to_string()
    }

    #[test]
    fn every_farm_spelling_names_the_same_files() {
        assert_eq!(path("out/f_####.png", 7), "out/f_0007.png");
        assert_eq!(path("out/f_%04d.png", 7), "out/f_0007.png");
        assert_eq!(path("out/f_$F4.png", 7), "out/f_0007.png");
        assert_eq!(path("out/f_%d.png", 1001), "out/f_1001.png");
        assert_eq!(path("out/f_$F.exr", 12), "out/f_12.exr");
        assert_eq!(path("out/f_%06d.exr", 12), "out/f_000012.exr");
        // Wider numbers than the padding print whole; `#` in a folder is not a token.
        assert_eq!(path("a#b/f_##.exr", 123), "a#b/f_123.exr");
        assert_eq!(path("v%03d/shot.$F3.exr", 5), "v%03d/shot.005.exr");
    }

    #[test]
    fn patterns_without_one_frame_number_are_refused_naming_the_flag() {
        for bad in [
            "out/frame.png",
            "out/f_%s.png",
            "out/f_####_%04d.png",
            "$Frame",
        ] {
            let error = FramePattern::parse("out", bad).unwrap_err().to_string();
            assert!(error.starts_with("--out: "), "{bad}: {error}");
        }
    }

    #[test]
    fn existing_files_are_found_by_their_exact_padding() {
        let dir = std::env::temp_dir().join(format!("stylize-pattern-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "f_0001.png",
            "f_0012.png",
            "f_12.png",
            "f_0003.jpg",
            "f_1234567.png",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let pattern = FramePattern::parse("frames", &format!("{}/f_%04d.png", dir.display()));
        assert_eq!(pattern.unwrap().existing().unwrap(), vec![1, 12, 1234567]);
        let none = FramePattern::parse("frames", &format!("{}/g_####.png", dir.display()));
        let error = none.unwrap().existing().unwrap_err().to_string();
        assert!(error.contains("--frames: no file matches"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
