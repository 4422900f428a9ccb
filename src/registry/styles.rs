//! Styles registered by key and by name (`RegisterStyle`), so requests can send the key or
//! a name instead of the image. A key is the hex sha256 of the style's file as sent, so an
//! entry never goes stale; a name points at one key and may be re-pointed. This replica
//! keeps recently used styles in memory (bounded by bytes, least recently used first out),
//! and with a shared store every replica resolves every key and name.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::names::{
    Listing, LocalBook, NameBook, NameRecord, Naming, StyleFacts, check_prefix, now_ms,
};
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
    /// Names and facts: this process's, or the shared store's.
    book: Arc<dyn NameBook>,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub key: String,
    /// The key the name pointed at before this registration re-pointed it.
    pub previous_key: Option<String>,
}

/// A registered style as listed or looked up: its name (if asked by one), key, labels and
/// facts (`None` if the store lost them).
#[derive(Debug, Clone)]
pub struct Described {
    pub name: Option<String>,
    pub key: String,
    pub record: Option<NameRecord>,
    pub facts: Option<StyleFacts>,
}

/// One page of names and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page {
    pub styles: Vec<Described>,
    /// The last name looked at, if there may be more.
    pub next: Option<String>,
}

/// Names looked at for one page at most, whatever the label filter keeps: a page may come
/// back short with a token to go on, never scan a huge registry in one call.
const MAX_SCANNED_PER_PAGE: usize = 10_000;

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
            book: Arc::new(LocalBook::default()),
        }
    }

    /// A registry whose entries live in `store`, with up to `budget_bytes` of them kept here.
    pub fn shared(budget_bytes: usize, store: Arc<SharedStore>) -> Self {
        Self {
            book: store.clone(),
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

    /// Refuses `naming` at once if its name points at a style other than `encoded`'s and
    /// it does not replace it, before a registration spends its precompute.
    pub fn check_naming(&self, naming: &Naming, encoded: &[u8]) -> Result<()> {
        if naming.replace {
            return Ok(());
        }
        let probe = NameRecord {
            key: Self::key_of(encoded),
            labels: naming.labels.clone(),
            named_at_ms: 0,
        };
        let current = self.book.name(&naming.name)?;
        super::names::may_point("name", &naming.name, current.as_ref(), &probe, false).map(drop)
    }

    /// Keeps `image`, decoded from `encoded`, with its facts, points `naming`'s name at it,
    /// and returns its key. With a shared store the file is written there first: a key is
    /// returned only once every replica can use it.
    pub fn register(
        &self,
        encoded: &[u8],
        image: Arc<image::RgbImage>,
        naming: Option<&Naming>,
    ) -> Result<Registered> {
        let facts = StyleFacts {
            file_bytes: encoded.len() as u64,
            width: image.width(),
            height: image.height(),
            pixels_sha256: hex::encode(stylize_core::cache::image_digest(&image)),
            registered_at_ms: now_ms(),
            last_used_ms: 0,
        };
        let key = self.keep_style(encoded, image)?;
        self.book.record_facts(&key, &facts)?;
        let previous_key = match naming {
            Some(naming) => {
                let record = NameRecord {
                    key: key.clone(),
                    labels: naming.labels.clone(),
                    named_at_ms: now_ms(),
                };
                self.book
                    .point("name", &naming.name, &record, naming.replace)?
            }
            None => None,
        };
        Ok(Registered { key, previous_key })
    }

    fn keep_style(&self, encoded: &[u8], image: Arc<image::RgbImage>) -> Result<String> {
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
    /// `decode`; a use renews the stored entry's time to live and is noted as its last use.
    pub fn resolve(
        &self,
        key: &str,
        decode: impl FnOnce(&[u8]) -> Result<image::RgbImage>,
    ) -> Result<Option<Arc<image::RgbImage>>> {
        let found = self.resolve_key(key, decode)?;
        if found.is_some() {
            self.book.mark_used(key, None);
        }
        Ok(found)
    }

    /// The key `name` points at, if it is a registered name.
    pub fn key_of_name(&self, name: &str) -> Result<Option<String>> {
        Ok(self.book.name(name)?.map(|record| record.key))
    }

    /// The style `name` points at: its key and image. `Ok(Err(key))` if the name points
    /// at a key no longer registered (expired or evicted), `None` if it is not a name.
    #[allow(clippy::type_complexity)]
    pub fn resolve_name(
        &self,
        name: &str,
        decode: impl FnOnce(&[u8]) -> Result<image::RgbImage>,
    ) -> Result<Option<std::result::Result<(String, Arc<image::RgbImage>), String>>> {
        let Some(key) = self.key_of_name(name)? else {
            return Ok(None);
        };
        Ok(Some(match self.resolve_key(&key, decode)? {
            Some(image) => {
                self.book.mark_used(&key, Some(name));
                Ok((key, image))
            }
            None => Err(key),
        }))
    }

    /// A style by name: what it points at and the style's facts; `None` if not a name.
    pub fn describe_name(&self, name: &str) -> Result<Option<Described>> {
        let Some(record) = self.book.name(name)? else {
            return Ok(None);
        };
        Ok(Some(self.described(Some(name.to_string()), record)?))
    }

    /// A style by key: its facts; `None` if no replica registered it (or they expired).
    pub fn describe_key(&self, key: &str) -> Result<Option<Described>> {
        Ok(self.book.facts(key)?.map(|facts| Described {
            name: None,
            key: key.to_string(),
            record: None,
            facts: Some(facts),
        }))
    }

    fn described(&self, name: Option<String>, record: NameRecord) -> Result<Described> {
        Ok(Described {
            name,
            key: record.key.clone(),
            facts: self.book.facts(&record.key)?,
            record: Some(record),
        })
    }

    /// One page of names, in byte order, that `listing` wants.
    pub fn list(&self, listing: &Listing) -> Result<Page> {
        check_prefix("name_prefix", &listing.prefix)?;
        let batch = listing.page_size.max(100);
        let mut after = listing.after.clone();
        let (mut styles, mut scanned) = (Vec::new(), 0);
        loop {
            let names = self.book.names(&listing.prefix, after.as_deref(), batch)?;
            let exhausted = names.len() < batch;
            for (name, record) in names {
                scanned += 1;
                after = Some(name.clone());
                let Some(record) = record.filter(|record| listing.wants(record)) else {
                    continue;
                };
                styles.push(self.described(Some(name), record)?);
                if styles.len() == listing.page_size {
                    return Ok(Page {
                        styles,
                        next: after,
                    });
                }
            }
            if exhausted {
                return Ok(Page { styles, next: None });
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok(Page {
                    styles,
                    next: after,
                });
            }
        }
    }

    fn resolve_key(
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
        let key = registry.register(b"file", image(4), None).unwrap().key;
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
        let a = registry.register(b"a....", image(16), None).unwrap().key;
        let b = registry.register(b"b....", image(16), None).unwrap().key;
        registry.resolve(&a, |_| unreachable!()).unwrap();
        registry.register(b"c....", image(16), None).unwrap();
        assert!(registry.resolve(&a, |_| unreachable!()).unwrap().is_some());
        assert!(registry.resolve(&b, |_| unreachable!()).unwrap().is_none());
        assert!(registry.register(b"big", image(32), None).is_err());
    }

    #[test]
    fn only_lowercase_hex_of_the_right_length_is_a_key() {
        assert!(!StyleRegistry::is_key(&"A".repeat(64)));
        assert!(!StyleRegistry::is_key(&"a".repeat(63)));
        assert!(!StyleRegistry::is_key(&"g".repeat(64)));
    }
}
