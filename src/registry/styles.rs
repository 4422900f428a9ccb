//! Styles registered by key (`RegisterStyle`), so requests can send the key instead of the
//! image. A key is the hex sha256 of the style's file as sent, so an entry never goes stale:
//! this replica keeps recently used styles in memory (bounded by bytes, least recently used
//! first out), and with a shared store every replica resolves every key.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::shared::{Entry, SharedStore};
use crate::error::{Error, Result};
use stylize_core::cache::byte_lru::ByteLru;

/// Hex digits in a key.
pub const KEY_LENGTH: usize = 64;

/// One style as this replica holds it.
#[derive(Clone)]
struct Held {
    image: Arc<image::RgbImage>,
    /// The file it was decoded from, to put back if the shared store lost it.
    encoded: Arc<[u8]>,
}

impl Held {
    fn bytes(&self) -> usize {
        self.image.as_raw().len() + self.encoded.len()
    }
}

fn held_bytes(held: &Held) -> usize {
    held.bytes()
}

pub struct StyleRegistry {
    budget: usize,
    state: Mutex<ByteLru<String, Held>>,
    shared: Option<Arc<SharedStore>>,
}

fn poisoned() -> Error {
    Error::StylePrecompute("style registry lock poisoned".into())
}

impl StyleRegistry {
    /// A registry local to this process (one replica).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            state: Mutex::new(ByteLru::new(budget_bytes, held_bytes)),
            shared: None,
        }
    }

    /// A registry whose entries live in `store`, with up to `budget_bytes` of them kept here.
    pub fn shared(budget_bytes: usize, store: Arc<SharedStore>) -> Self {
        Self {
            shared: Some(store),
            ..Self::new(budget_bytes)
        }
    }

    /// The key of a style: the hex sha256 of its encoded file as sent. It is also the
    /// routing key (`x-stylize-style-key`) a client computes for the same bytes, so a
    /// registration and the requests that use it, by key or by bytes, hash alike.
    pub fn key_of(encoded: &[u8]) -> String {
        hex::encode(Sha256::digest(encoded))
    }

    /// Whether `key` has the form of a key (64 lowercase hex digits).
    pub fn is_key(key: &str) -> bool {
        key.len() == KEY_LENGTH && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Keeps `image`, decoded from `encoded`, and returns its key. With a shared store the
    /// file is written there first: a key is returned only once every replica can use it.
    pub fn register(&self, encoded: &[u8], image: Arc<image::RgbImage>) -> Result<String> {
        let key = Self::key_of(encoded);
        let held = Held {
            image,
            encoded: Arc::from(encoded),
        };
        if held.bytes() > self.budget {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} bytes (file and decoded pixels) exceed the registry's budget of {}",
                    held.bytes(),
                    self.budget
                ),
            ));
        }
        if let Some(store) = &self.shared {
            store.put(Entry::Style(&key), encoded)?;
        }
        self.keep(key.clone(), held)?;
        Ok(key)
    }

    /// The style registered under `key`, or `None` if no replica registered it (or it
    /// expired). Styles not held here are read from the shared store and decoded by
    /// `decode`; a use renews the stored entry's time to live.
    pub fn resolve(
        &self,
        key: &str,
        decode: impl FnOnce(&[u8]) -> Result<image::RgbImage>,
    ) -> Result<Option<Arc<image::RgbImage>>> {
        let local = self.state.lock().map_err(|_| poisoned())?.get(key).cloned();
        let Some(store) = &self.shared else {
            return Ok(local.map(|held| held.image));
        };
        if let Some(held) = local {
            // The local copy serves even if the store is down; a store that lost the
            // entry (expired, evicted) gets it back so other replicas keep resolving it.
            // Both in the background: a stalled store does not delay the request.
            store.renew_later(Entry::Style(key), Some(&held.encoded));
            return Ok(Some(held.image));
        }
        // Only a file that hashes to `key` comes back; anything else under it is deleted
        // and this is a miss (not registered), not an outage.
        let Some(encoded) = store.get(Entry::Style(key))? else {
            return Ok(None);
        };
        let held = Held {
            image: Arc::new(decode(&encoded)?),
            encoded: Arc::from(encoded),
        };
        // Kept here unless it alone exceeds the budget.
        self.keep(key.to_string(), held.clone())?;
        Ok(Some(held.image))
    }

    fn keep(&self, key: String, held: Held) -> Result<()> {
        self.state.lock().map_err(|_| poisoned())?.put(key, held);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(side: u32) -> Arc<image::RgbImage> {
        Arc::new(image::RgbImage::new(side, side))
    }

    #[test]
    fn keys_are_the_files_digest_and_resolve_locally() {
        let registry = StyleRegistry::new(1 << 20);
        let key = registry.register(b"file", image(4)).unwrap();
        assert_eq!(key, StyleRegistry::key_of(b"file"));
        assert!(StyleRegistry::is_key(&key));
        let found = registry.resolve(&key, |_| unreachable!()).unwrap();
        assert_eq!(found.unwrap().width(), 4);
        assert!(
            registry
                .resolve(&"0".repeat(64), |_| unreachable!())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_budget_evicts_least_recently_used_and_refuses_the_oversized() {
        // 16x16 RGB = 768 bytes, plus a 5-byte file.
        let registry = StyleRegistry::new(1600);
        let a = registry.register(b"a....", image(16)).unwrap();
        let b = registry.register(b"b....", image(16)).unwrap();
        registry.resolve(&a, |_| unreachable!()).unwrap();
        registry.register(b"c....", image(16)).unwrap();
        assert!(registry.resolve(&a, |_| unreachable!()).unwrap().is_some());
        assert!(registry.resolve(&b, |_| unreachable!()).unwrap().is_none());
        assert!(registry.register(b"big", image(32)).is_err());
    }

    #[test]
    fn only_lowercase_hex_of_the_right_length_is_a_key() {
        assert!(!StyleRegistry::is_key(&"A".repeat(64)));
        assert!(!StyleRegistry::is_key(&"a".repeat(63)));
        assert!(!StyleRegistry::is_key(&"g".repeat(64)));
    }
}
