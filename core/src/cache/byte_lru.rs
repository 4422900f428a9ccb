//! A least-recently-used map bounded by the bytes its values hold: what the style cache and
//! the registry both keep.

use std::borrow::Borrow;
use std::hash::Hash;

pub struct ByteLru<K: Hash + Eq, V> {
    entries: lru::LruCache<K, V>,
    bytes: usize,
    budget: usize,
    size: fn(&V) -> usize,
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    /// Holds values of at most `budget` bytes in all, each weighed by `size`.
    pub fn new(budget: usize, size: fn(&V) -> usize) -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            bytes: 0,
            budget,
            size,
        }
    }

    /// Keeps `value` under `key` (replacing what was there), dropping least-recently-used
    /// entries until it fits; a value larger than the whole budget is not kept. Returns how
    /// many other entries were dropped.
    pub fn put(&mut self, key: K, value: V) -> usize {
        let size = (self.size)(&value);
        if size > self.budget {
            return 0;
        }
        if let Some(old) = self.entries.pop(&key) {
            self.bytes -= (self.size)(&old);
        }
        let mut evicted = 0;
        while self.bytes + size > self.budget {
            match self.entries.pop_lru() {
                Some((_, dropped)) => {
                    self.bytes -= (self.size)(&dropped);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.bytes += size;
        self.entries.put(key, value);
        evicted
    }

    /// The value under `key`, now the most recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The keys held, most recently used first; looking does not count as a use.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(key, _)| key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_to_fit_and_refuses_the_oversized() {
        let mut lru = ByteLru::new(10, |v: &Vec<u8>| v.len());
        assert_eq!(lru.put("a", vec![0; 4]), 0);
        assert_eq!(lru.put("b", vec![0; 4]), 0);
        lru.get(&"a");
        assert_eq!(
            lru.put("c", vec![0; 4]),
            1,
            "b, the least recently used, goes"
        );
        assert!(lru.get(&"b").is_none() && lru.get(&"a").is_some());
        assert_eq!(lru.put("a", vec![0; 2]), 0, "a replaced, not evicted");
        assert_eq!((lru.bytes(), lru.len()), (6, 2));
        assert_eq!(lru.put("huge", vec![0; 11]), 0);
        assert!(lru.get(&"huge").is_none());
        assert_eq!(lru.bytes(), 6);
    }
}
