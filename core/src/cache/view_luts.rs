//! Studio views sent on the wire, parsed and checked once: kept by the sha256 of their two
//! files and the interpolation, bounded by bytes with least-recently-used eviction, so the
//! frames of a shot and every request that shares a view reuse one parsed pair.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::byte_lru::ByteLru;
use crate::colour::{CubeLut, Interpolation, LutPair};
use crate::error::{Error, Result};

/// Default byte budget: a dozen 65³ pairs.
pub const DEFAULT_VIEW_LUT_BYTES: usize = 128 << 20;

/// A parsed pair and the bytes its files took (what the cache weighs it by).
struct Entry {
    pair: Arc<LutPair>,
    bytes: usize,
}

/// Whether a lookup found the pair parsed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Cached,
    Parsed,
}

pub struct ViewLutCache {
    entries: Mutex<ByteLru<[u8; 32], Entry>>,
}

impl Default for ViewLutCache {
    fn default() -> Self {
        Self::new(DEFAULT_VIEW_LUT_BYTES)
    }
}

impl ViewLutCache {
    pub fn new(budget: usize) -> Self {
        Self {
            entries: Mutex::new(ByteLru::new(budget, |entry: &Entry| entry.bytes)),
        }
    }

    /// The pair `forward` and `inverse` (`.cube` text) make with `interpolation`, parsed and
    /// checked the first time (refusals name `field.forward line N`, `field.inverse line N`,
    /// or `field` when the two do not invert each other), then taken from the cache.
    pub fn pair(
        &self,
        field: &str,
        forward: &[u8],
        inverse: &[u8],
        interpolation: Interpolation,
    ) -> Result<(Arc<LutPair>, Found)> {
        let key = key(forward, inverse, interpolation);
        if let Some(entry) = self.lock().get(&key) {
            return Ok((entry.pair.clone(), Found::Cached));
        }
        let parse = |name: &str, bytes: &[u8]| -> Result<CubeLut> {
            let field = format!("{field}.{name}");
            if bytes.is_empty() {
                return Err(Error::invalid(field, "no LUT: give the .cube file's bytes"));
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|e| Error::invalid(&field, format!("not text: {e}")))?;
            CubeLut::parse(&field, text)
        };
        let pair = Arc::new(LutPair::new(
            field,
            parse("forward", forward)?,
            parse("inverse", inverse)?,
            interpolation,
        )?);
        let bytes = forward.len() + inverse.len();
        self.lock().put(
            key,
            Entry {
                pair: pair.clone(),
                bytes,
            },
        );
        Ok((pair, Found::Parsed))
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByteLru<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// sha256 over both files (each length-prefixed) and the interpolation.
fn key(forward: &[u8], inverse: &[u8], interpolation: Interpolation) -> [u8; 32] {
    let mut hash = Sha256::new();
    for file in [forward, inverse] {
        hash.update((file.len() as u64).to_le_bytes());
        hash.update(file);
    }
    hash.update([interpolation as u8]);
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2³ identity lattice: its own inverse.
    const IDENTITY: &str =
        "LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n";

    #[test]
    fn a_pair_is_parsed_once_and_refusals_name_the_file_and_line() {
        let cache = ViewLutCache::new(1 << 20);
        let lut = IDENTITY.as_bytes();
        let (first, found) = cache
            .pair("view_lut", lut, lut, Interpolation::Tetrahedral)
            .unwrap();
        assert_eq!(found, Found::Parsed);
        let (again, found) = cache
            .pair("view_lut", lut, lut, Interpolation::Tetrahedral)
            .unwrap();
        assert_eq!(found, Found::Cached);
        assert!(Arc::ptr_eq(&first, &again));
        // Another interpolation is another entry.
        let (_, found) = cache
            .pair("view_lut", lut, lut, Interpolation::Trilinear)
            .unwrap();
        assert_eq!(found, Found::Parsed);
        assert_eq!(cache.len(), 2);
        let cut = &IDENTITY.as_bytes()[..IDENTITY.len() - 8];
        let error = cache
            .pair("view_lut", lut, cut, Interpolation::Tetrahedral)
            .unwrap_err()
            .to_string();
        assert!(error.contains("view_lut.inverse line"), "{error}");
        let error = cache
            .pair("view_lut", b"", lut, Interpolation::Tetrahedral)
            .unwrap_err()
            .to_string();
        assert!(error.contains("view_lut.forward"), "{error}");
        assert_eq!(cache.len(), 2);
    }
}
