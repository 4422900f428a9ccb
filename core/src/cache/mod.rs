//! The style-target cache shared by all requests: per-style Gram matrices keyed by
//! everything that changes them, bounded by bytes with least-recently-used eviction, and
//! single-flight, so concurrent requests for the same uncached style compute it once.
//! With a [`TargetStore`] (the server's shared registry) targets computed on any replica are
//! read from there before they are computed here. It stores and returns host data; it never
//! runs a network itself. Its counters are read with [`StyleCache::stats`].

pub mod byte_lru;
pub mod targets;
pub mod view_luts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::Layer;
use crate::net::{Gram, TargetIdentity};
use byte_lru::ByteLru;

/// Default byte budget (512 MiB: ~200 styles' Grams at the default layers).
pub const DEFAULT_BUDGET_BYTES: usize = 512 << 20;

/// Everything that determines one style's Grams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StyleKey {
    /// sha256 of the decoded style image (dimensions and RGB pixels).
    pub image_sha256: [u8; 32],
    /// Longest side the style is rendered at (size x style scale, per scale).
    pub longest_side: u32,
    pub layers: Vec<Layer>,
    /// Weights fingerprint (values and input convention, hence colour mode), pooling and
    /// Gram normalisation.
    pub identity: TargetIdentity,
}

/// sha256 over an image's dimensions and pixels.
pub fn image_digest(image: &image::RgbImage) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(image.width().to_le_bytes());
    hasher.update(image.height().to_le_bytes());
    hasher.update(image.as_raw());
    hasher.finalize().into()
}

/// A store other replicas read and write style targets through, by the name
/// [`targets::target_id`] gives them, holding [`targets::encode`]'s bytes. The cache only asks;
/// a store that is down, slow or holds something unusable answers `None` and the targets are
/// computed here.
pub trait TargetStore: Send + Sync {
    /// The stored bytes of the targets named `id`, if the store has usable ones.
    fn read_targets(&self, id: &str) -> Option<Vec<u8>>;
    /// Whether computed targets should be written back (not all stores accept them).
    fn shares_targets(&self) -> bool;
    /// Writes targets in the background; a failure is the store's to log, never the caller's.
    fn write_targets_later(&self, id: &str, bytes: &[u8]);
}

/// How a lookup was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// Computed by this call.
    Miss,
    /// Another call was computing it; this one waited for its result.
    Joined,
    /// Not held here, read from the shared store (another replica computed it).
    Shared,
}

impl Lookup {
    /// How traces and logs say it: `hit`, `miss`, `joined`, `shared`.
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Joined => "joined",
            Lookup::Shared => "shared",
        }
    }
}

/// Counters for Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub joined: u64,
    /// Misses served from the shared store instead of computed.
    pub shared: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub entries: u64,
}

pub type StyleGrams = Arc<Vec<Gram>>;

// Why not a concurrent cache crate: moka 0.12 (`sync::Cache` with a byte weigher, the LRU
// policy and `try_get_with`, measured 2026-12-02 on the 2-core EPYC, release build) keeps
// the byte budget, LRU order and single flight, but
// - cannot tell a caller that waited for another's computation (`Lookup::Joined`, which the
//   wire's `style_cache` and the counters report) from a hit;
// - counts lazily: after 20 inserts into 4 places it reported 0 entries and 0 evictions
//   until `run_pending_tasks` (then 4 and 16, as here), while the exporter publishes the
//   counters right after each job;
// - counts an entry larger than the whole budget as an eviction (this cache refuses it);
// - a hit took 401 ns on one thread against 99 ns here (267 against 419 ns per lookup with
//   two threads contending; a job looks each style up once, beside seconds of work);
// - and it adds crossbeam, uuid and friends to the core's build.
// So the style cache and the registry keep `ByteLru` behind a mutex and a flight map.

type FlightResult = Option<std::result::Result<StyleGrams, String>>;

#[derive(Default)]
struct Flight {
    result: Mutex<FlightResult>,
    done: Condvar,
}

struct State {
    entries: ByteLru<StyleKey, StyleGrams>,
    in_flight: HashMap<StyleKey, Arc<Flight>>,
}

pub struct StyleCache {
    budget: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    joined: AtomicU64,
    shared_hits: AtomicU64,
    evictions: AtomicU64,
    shared: Option<Arc<dyn TargetStore>>,
}

fn size_of(grams: &StyleGrams) -> usize {
    grams.iter().map(Gram::bytes).sum()
}

fn poisoned() -> Error {
    Error::StylePrecompute("style cache lock poisoned".into())
}

impl StyleCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            state: Mutex::new(State {
                entries: ByteLru::new(budget_bytes, size_of),
                in_flight: HashMap::new(),
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            shared_hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            shared: None,
        }
    }

    /// A cache that reads targets from `store` before computing them, and writes what it
    /// computes there.
    pub fn with_shared(budget_bytes: usize, store: Arc<dyn TargetStore>) -> Self {
        Self {
            shared: Some(store),
            ..Self::new(budget_bytes)
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// The cached Grams for `key`, or those `compute` returns (computed once however many
    /// callers ask at the same time). A failed computation is not cached; every waiter gets
    /// its error.
    pub fn get_or_compute(
        &self,
        key: &StyleKey,
        compute: impl FnOnce() -> Result<Vec<Gram>>,
    ) -> Result<(StyleGrams, Lookup)> {
        let flight = {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            if let Some(grams) = state.entries.get(key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((grams.clone(), Lookup::Hit));
            }
            if let Some(flight) = state.in_flight.get(key) {
                let flight = flight.clone();
                drop(state);
                self.joined.fetch_add(1, Ordering::Relaxed);
                return Self::wait(&flight).map(|g| (g, Lookup::Joined));
            }
            let flight = Arc::new(Flight::default());
            state.in_flight.insert(key.clone(), flight.clone());
            flight
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (outcome, how) = match self.stored_targets(key) {
            Some(grams) => {
                self.shared_hits.fetch_add(1, Ordering::Relaxed);
                (Ok(Arc::new(grams)), Lookup::Shared)
            }
            None => {
                // Whatever happens (error or panic in `compute`), waiters must be released.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute))
                    .unwrap_or_else(|_| {
                        Err(Error::StylePrecompute("style precompute panicked".into()))
                    })
                    .map(Arc::new);
                if let Ok(grams) = &outcome {
                    self.share_targets(key, grams);
                }
                (outcome, Lookup::Miss)
            }
        };
        {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            state.in_flight.remove(key);
            if let Ok(grams) = &outcome {
                let evicted = state.entries.put(key.clone(), grams.clone());
                self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
            }
        }
        let shared = match &outcome {
            Ok(grams) => Ok(grams.clone()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut slot) = flight.result.lock() {
            *slot = Some(shared);
        }
        flight.done.notify_all();
        outcome.map(|g| (g, how))
    }

    /// `key`'s targets from the shared store, if it has usable ones. A store that is down or
    /// slow, or holds anything else, only costs the computation.
    fn stored_targets(&self, key: &StyleKey) -> Option<Vec<Gram>> {
        let store = self.shared.as_ref()?;
        let bytes = store.read_targets(&targets::target_id(key))?;
        targets::decode(key, &bytes)
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring stored style targets"))
            .ok()
    }

    /// Shares computed targets in the background; a failed write is logged and counted, not
    /// the request's.
    fn share_targets(&self, key: &StyleKey, grams: &[Gram]) {
        let Some(store) = &self.shared else { return };
        if !store.shares_targets() {
            return;
        }
        match targets::encode(key, grams) {
            Ok(bytes) => store.write_targets_later(&targets::target_id(key), &bytes),
            Err(e) => tracing::warn!(error = %e, "style targets not shared"),
        }
    }

    fn wait(flight: &Flight) -> Result<StyleGrams> {
        let mut slot = flight.result.lock().map_err(|_| poisoned())?;
        while slot.is_none() {
            slot = flight.done.wait(slot).map_err(|_| poisoned())?;
        }
        match slot.as_ref() {
            Some(Ok(grams)) => Ok(grams.clone()),
            Some(Err(reason)) => Err(Error::StylePrecompute(reason.clone())),
            None => unreachable!("loop exits only when set"),
        }
    }

    /// The Grams for `key` if cached (counts as a hit or nothing).
    pub fn get(&self, key: &StyleKey) -> Option<StyleGrams> {
        let mut state = self.state.lock().ok()?;
        let found = state.entries.get(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The targets held here for the style image whose pixels digest to `image_sha256`
    /// ([`image_digest`]): each one's longest side and layers, smallest side first.
    pub fn held_for(&self, image_sha256: &[u8; 32]) -> Vec<(u32, Vec<Layer>)> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let mut held: Vec<(u32, Vec<Layer>)> = state
            .entries
            .keys()
            .filter(|key| &key.image_sha256 == image_sha256)
            .map(|key| (key.longest_side, key.layers.clone()))
            .collect();
        held.sort_by_key(|(side, _)| *side);
        held
    }

    pub fn stats(&self) -> CacheStats {
        let (bytes, entries) = self
            .state
            .lock()
            .map(|s| (s.entries.bytes() as u64, s.entries.len() as u64))
            .unwrap_or_default();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            joined: self.joined.load(Ordering::Relaxed),
            shared: self.shared_hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes,
            entries,
        }
    }
}
