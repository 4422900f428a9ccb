//! The style cache: hits and misses through a real render, single-flight under concurrency,
//! the byte budget under pressure, and misses for every parameter that changes the targets.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use candle_core::{DType, Device};
use stylize::cache::{Lookup, StyleCache, StyleKey};
use stylize::candle::CandleEngine;
use stylize::engine::{OptimizerKind, Pooling, Progress};
use stylize::features::{FeatureExtractor, Gram, TargetIdentity};
use stylize::model::{InputImage, Layer};
use stylize::render::{RenderOptions, RenderRequest, StyleSource, render};

use common::weights;

/// Wraps an extractor and counts how often it really runs.
struct Counting<F> {
    inner: F,
    calls: AtomicUsize,
}

impl<F: FeatureExtractor> FeatureExtractor for Counting<F> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn identity(&self) -> TargetIdentity {
        self.inner.identity()
    }
    fn grams(&self, image: &InputImage, layers: &[Layer]) -> stylize::Result<Vec<Gram>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.grams(image, layers)
    }
    fn maps(
        &self,
        image: &InputImage,
        layers: &[Layer],
    ) -> stylize::Result<Vec<candle_core::Tensor>> {
        self.inner.maps(image, layers)
    }
}

fn demo_request(style_scale: f64) -> RenderRequest {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    RenderRequest {
        content: stylize::image_io::load(&root.join("chelsea.png"))
            .unwrap()
            .into(),
        styles: vec![stylize::image_io::load(&root.join("starry_night.jpg")).unwrap()],
        blend: vec![],
        options: RenderOptions {
            size: 48,
            iterations: 1,
            optimizer: OptimizerKind::Adam { lr: 10.0 },
            style_scale,
            ..Default::default()
        },
    }
}

fn key(n: u8, side: u32) -> StyleKey {
    StyleKey {
        image_sha256: [n; 32],
        longest_side: side,
        layers: vec![Layer::new(1, 1).unwrap()],
        identity: TargetIdentity {
            weights: "test".into(),
            pooling: Pooling::Max,
            gram_normalisation: stylize::net::GRAM_NORMALISATION,
        },
    }
}

/// A fake Gram of `bytes` bytes.
fn grams_of(bytes: usize) -> Vec<Gram> {
    vec![Gram {
        channels: 1,
        data: vec![1.0; bytes / 4],
    }]
}

#[test]
fn a_repeated_style_is_computed_once() {
    let engine = CandleEngine::new(weights(), Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    let features = Counting {
        inner: engine.features(),
        calls: AtomicUsize::new(0),
    };
    let cache = StyleCache::new(64 << 20);
    let source = StyleSource {
        features: &features,
        cache: Some(&cache),
        tile_side: None,
    };
    let mut sink = |_: &Progress| ControlFlow::Continue(());
    let first = render(&demo_request(1.0), &engine, source, &mut sink).unwrap();
    let second = render(&demo_request(1.0), &engine, source, &mut sink).unwrap();
    assert_eq!(first.stats.style_lookups, vec![Lookup::Miss]);
    assert_eq!(second.stats.style_lookups, vec![Lookup::Hit]);
    assert_eq!(features.calls.load(Ordering::SeqCst), 1);
    // Identical requests give identical bytes on one machine (docs/testing.md).
    assert_eq!(
        first.image, second.image,
        "a cached target gives the same result"
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));

    // A changed style scale renders the style at another size: a miss.
    let third = render(&demo_request(1.5), &engine, source, &mut sink).unwrap();
    assert_eq!(third.stats.style_lookups, vec![Lookup::Miss]);
    assert_eq!(features.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn concurrent_requests_for_a_new_style_compute_once() {
    let cache = Arc::new(StyleCache::new(1 << 20));
    let computed = Arc::new(AtomicUsize::new(0));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, computed, barrier) = (cache.clone(), computed.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_compute(&key(1, 64), || {
                        computed.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(grams_of(64))
                    })
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let misses = results.iter().filter(|(_, l)| *l == Lookup::Miss).count();
    assert_eq!(misses, 1);
    assert!(
        results.iter().all(|(g, _)| Arc::ptr_eq(g, &results[0].0)),
        "all share one result"
    );
}

#[test]
fn failures_reach_every_waiter_and_are_not_cached() {
    let cache = StyleCache::new(1 << 20);
    let err = cache
        .get_or_compute(&key(2, 64), || {
            Err(stylize::Error::invalid("style", "broken"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("broken"));
    let (_, lookup) = cache
        .get_or_compute(&key(2, 64), || Ok(grams_of(16)))
        .unwrap();
    assert_eq!(lookup, Lookup::Miss, "the failure was not cached");
}

#[test]
fn byte_budget_holds_and_eviction_is_least_recently_used() {
    let budget = 4 * 1000;
    let cache = StyleCache::new(budget);
    for n in 0..20u8 {
        cache
            .get_or_compute(&key(n, 64), || Ok(grams_of(1000)))
            .unwrap();
        // Touch style 0 so it stays the most recently used.
        assert!(
            cache.get(&key(0, 64)).is_some(),
            "style 0 evicted after {n}"
        );
        let stats = cache.stats();
        assert!(
            stats.bytes as usize <= budget,
            "{} bytes > budget {budget}",
            stats.bytes
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.evictions, 16);
    assert!(cache.get(&key(19, 64)).is_some() && cache.get(&key(1, 64)).is_none());
    // An entry larger than the whole budget is served but not kept.
    let (_, lookup) = cache
        .get_or_compute(&key(99, 64), || Ok(grams_of(budget * 2)))
        .unwrap();
    assert_eq!(lookup, Lookup::Miss);
    assert!(cache.get(&key(99, 64)).is_none());
    assert!(cache.stats().bytes as usize <= budget);
}

#[test]
fn every_parameter_that_changes_targets_misses() {
    let cache = StyleCache::new(1 << 20);
    let base = key(5, 64);
    cache.get_or_compute(&base, || Ok(grams_of(8))).unwrap();
    let mut variants = vec![key(6, 64), key(5, 128)];
    let mut layers = base.clone();
    layers.layers.push(Layer::new(2, 1).unwrap());
    variants.push(layers);
    let mut pooling = base.clone();
    pooling.identity.pooling = Pooling::Average;
    variants.push(pooling);
    let mut other_weights = base.clone();
    other_weights.identity.weights = "other".into();
    variants.push(other_weights);
    for variant in &variants {
        let (_, lookup) = cache.get_or_compute(variant, || Ok(grams_of(8))).unwrap();
        assert_eq!(lookup, Lookup::Miss, "{variant:?}");
    }
    let (_, lookup) = cache.get_or_compute(&base, || Ok(grams_of(8))).unwrap();
    assert_eq!(lookup, Lookup::Hit);

    // Real extractors: the weights' fingerprint and the pooling reach the identity.
    let max = CandleEngine::new(weights(), Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    let avg = CandleEngine::new(weights(), Pooling::Average, &Device::Cpu, DType::F32).unwrap();
    assert_ne!(max.features().identity(), avg.features().identity());
    let mut changed = weights().clone();
    changed.convs[0].bias[0] += 1.0;
    let other = CandleEngine::new(&changed, Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    assert_ne!(max.features().identity(), other.features().identity());
    assert_eq!(
        max.features().identity(),
        common::ort_features(Pooling::Max).identity(),
        "backends share entries"
    );
}
