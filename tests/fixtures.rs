//! Reproduces the independent float64 reference in `$STYLIZE_FIXTURES` (default
//! `../shared/fixtures`): every case folder, every quantity it holds, at the tolerances of
//! its README. Float32 runs the production path; float64 checks the whole L-BFGS run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use serde_json::Value;
use stylize::candle::CandleFeatures;
use stylize::candle::Objective;
use stylize::engine::bounds::PixelBox;
use stylize::engine::loss::{LayerTarget, LossBreakdown, TermWeights};
use stylize::engine::optim::{Adam, Lbfgs, LineSearch, Optimizer, Point};
use stylize::features::{FeatureExtractor, blend};
use stylize::image_io;
use stylize::model::{ChannelOrder, InputConvention, InputImage, Layer};
use stylize::net::Pooling;
use stylize::net::gram;
use stylize::net::vgg::VggNet;

use common::{device, rel, rel_l2, sum_sq, weights};

const TOL_PREPROCESS_ABS: f64 = 2e-5;
const TOL_FEATURES: f64 = 1e-4;
const TOL_LOSS: f64 = 1e-4;
const TOL_GRAD: f64 = 1e-3;
const TOL_ADAM: f64 = 1e-3;
const TOL_LBFGS_EARLY: f64 = 1e-4;
const TOL_LBFGS_F64_LOSS: f64 = 1e-7;
const TOL_LBFGS_F64_X: f64 = 1e-6;

fn fixtures_dir() -> PathBuf {
    std::env::var_os("STYLIZE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

fn case_dirs() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("STYLIZE_FIXTURES={}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("values.json").is_file())
        .collect();
    cases.sort();
    cases
}

/// Collects every comparison so one run reports all deviations, not just the first.
struct Report {
    case: String,
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, what: &str, error: f64, tolerance: f64) {
        common::measured(&format!("fixtures/{} {what}", self.case), error);
        let ok = error <= tolerance; // NaN fails
        self.lines.push(format!(
            "{:<12} {what:<40} {error:>10.2e} (tol {tolerance:.0e})",
            self.case
        ));
        if !ok {
            self.failures.push(format!(
                "{}: {what}: error {error:.3e} > {tolerance:.0e}",
                self.case
            ));
        }
    }

    fn fail(&mut self, what: String) {
        self.failures.push(format!("{}: {what}", self.case));
    }
}

struct Case {
    dir: PathBuf,
    values: Value,
    bytes: Vec<u8>,
}

impl Case {
    fn load(dir: &Path) -> Self {
        let values =
            serde_json::from_slice(&std::fs::read(dir.join("values.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("tensors.safetensors")).unwrap();
        Self {
            dir: dir.to_path_buf(),
            values,
            bytes,
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    fn tensor(&self, name: &str, dtype: DType) -> Tensor {
        let tensors = self.tensors();
        let view = tensors.tensor(name).unwrap();
        let t = match view.dtype() {
            safetensors::Dtype::F32 => {
                let data: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_vec(data, view.shape(), &Device::Cpu).unwrap()
            }
            safetensors::Dtype::U8 => {
                Tensor::from_vec(view.data().to_vec(), view.shape(), &Device::Cpu).unwrap()
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        t.to_dtype(dtype).unwrap()
    }

    fn config(&self) -> &Value {
        &self.values["config"]
    }

    fn f64_at(&self, path: &[&str]) -> f64 {
        let mut v = &self.values;
        for key in path {
            v = &v[key];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("{path:?} is not a number"))
    }

    fn f64_list(&self, path: &[&str]) -> Vec<f64> {
        let mut v = &self.values;
        for key in path {
            v = &v[key];
        }
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn layers(&self, key: &str) -> Vec<(Layer, f64)> {
        self.config()[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().parse().unwrap(),
                    pair[1].as_f64().unwrap(),
                )
            })
            .collect()
    }

    fn convention(&self) -> InputConvention {
        let space = &self.config()["input_space"];
        assert_eq!(
            space["channel_order"], "BGR",
            "only BGR fixtures are described"
        );
        let mean: Vec<f32> = space["mean_bgr"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        InputConvention {
            channel_order: ChannelOrder::Bgr,
            pixel_range: 255.0,
            mean: [mean[0], mean[1], mean[2]],
            std: [1.0; 3],
        }
    }

    fn image_input(&self, file: &str) -> InputImage {
        let image = image_io::load(&self.dir.join(file)).unwrap();
        self.convention().to_input(&image)
    }
}

/// `t` moved to the test device.
fn on_device(t: Tensor) -> Tensor {
    t.to_device(device()).unwrap()
}

fn input_tensor(image: &InputImage, dtype: DType) -> Tensor {
    Tensor::from_slice(&image.data, image.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn check_preprocess(case: &Case, report: &mut Report) {
    let file = case.config()["image"]["file"].as_str().unwrap();
    let image = image_io::load(&case.dir.join(file)).unwrap();
    let expected_rgb = case
        .tensor("rgb_u8", DType::U8)
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let mismatches = image
        .as_raw()
        .iter()
        .zip(&expected_rgb)
        .filter(|(a, b)| a != b)
        .count();
    report.check("rgb_u8 (mismatched bytes)", mismatches as f64, 0.0);
    let x = input_tensor(&case.convention().to_input(&image), DType::F64);
    let max_abs = |expected: &Tensor| {
        (&x - expected)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    report.check(
        "x (max abs)",
        max_abs(&case.tensor("x", DType::F64)),
        TOL_PREPROCESS_ABS,
    );
    if let Some(exact) = case.values.get("x_float64") {
        let flat: Vec<f64> = flatten_json(exact);
        let exact = Tensor::from_vec(flat, x.shape(), &Device::Cpu).unwrap();
        report.check("x_float64 (max abs)", max_abs(&exact), TOL_PREPROCESS_ABS);
    }
}

fn flatten_json(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten_json).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// Everything needed to run the objective of a case in one dtype.
struct Setup {
    net: VggNet,
    content: Vec<(Layer, f64)>,
    style: Vec<(Layer, f64)>,
    weights: TermWeights,
    p: Tensor,
    styles: Vec<Tensor>,
    blend: Vec<f64>,
    x0: Tensor,
}

impl Setup {
    fn new(case: &Case, dtype: DType) -> Self {
        let config = case.config();
        let style_keys: Vec<String> = config["style_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            config["pooling"].as_str().map(|p| p.starts_with("max")),
            Some(true)
        );
        Self {
            net: VggNet::new(weights(), None, Pooling::Max, device(), dtype).unwrap(),
            content: case.layers("content_layers"),
            style: case.layers("style_layers"),
            weights: TermWeights {
                content: case.f64_at(&["config", "alpha"]),
                style: case.f64_at(&["config", "beta"]),
                tv: case.f64_at(&["config", "gamma"]),
            },
            p: on_device(case.tensor("p", dtype)),
            styles: style_keys
                .iter()
                .map(|k| on_device(case.tensor(k, dtype)))
                .collect(),
            blend: case.f64_list(&["config", "blend_weights_raw"]),
            x0: on_device(case.tensor("x0", dtype)),
        }
    }

    fn features(&self, x: &Tensor, layers: &[Layer]) -> BTreeMap<Layer, Tensor> {
        let deepest = *layers.iter().max().unwrap();
        let acts = self.net.forward(x, deepest, layers, false).unwrap();
        layers
            .iter()
            .map(|&l| (l, acts.get(l).unwrap().clone()))
            .collect()
    }

    /// Blended style Grams, computed in this setup's dtype on tensors.
    fn style_targets(&self) -> BTreeMap<Layer, Tensor> {
        let layers: Vec<Layer> = self.style.iter().map(|(l, _)| *l).collect();
        let total: f64 = self.blend.iter().sum();
        let mut targets = BTreeMap::new();
        for (s, &b) in self.styles.iter().zip(&self.blend) {
            for (layer, f) in self.features(s, &layers) {
                let g = (gram(&f).unwrap() * (b / total)).unwrap();
                let entry: Option<Tensor> = targets.remove(&layer);
                targets.insert(
                    layer,
                    match entry {
                        Some(acc) => (acc + g).unwrap(),
                        None => g,
                    },
                );
            }
        }
        targets
    }

    fn objective(&self, weights: TermWeights) -> Objective<'_> {
        let content_layers: Vec<Layer> = self.content.iter().map(|(l, _)| *l).collect();
        let content_features = self.features(&self.p, &content_layers);
        let style_targets = self.style_targets();
        let targets = |layers: &[(Layer, f64)], by_layer: &BTreeMap<Layer, Tensor>| {
            layers
                .iter()
                .map(|&(layer, weight)| LayerTarget {
                    layer,
                    weight,
                    target: by_layer[&layer].clone(),
                })
                .collect()
        };
        Objective {
            net: &self.net,
            content: targets(&self.content, &content_features),
            style: targets(&self.style, &style_targets),
            weights,
        }
    }
}

fn check_images(case: &Case, report: &mut Report) {
    let config = case.config();
    let mut images = vec![(
        config["content_image"]["file"].as_str().unwrap(),
        config["content_image"]["key"].as_str().unwrap(),
    )];
    for s in config["style_images"].as_array().unwrap() {
        images.push((s["file"].as_str().unwrap(), s["key"].as_str().unwrap()));
    }
    for (file, key) in images {
        let decoded = input_tensor(&case.image_input(file), DType::F64);
        let stored = case.tensor(key, DType::F64);
        let max_abs = (&decoded - &stored)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        report.check(
            &format!("{key} = decode({file}) (max abs)"),
            max_abs.to_scalar::<f64>().unwrap(),
            TOL_PREPROCESS_ABS,
        );
    }
}

fn check_float32(case: &Case, report: &mut Report) {
    let setup = Setup::new(case, DType::F32);
    let names = case.names();
    let layer_of =
        |name: &str, prefix: &str| -> Layer { name.strip_prefix(prefix).unwrap().parse().unwrap() };

    // Features and Grams, every one the file holds.
    let all_layers: Vec<Layer> = Layer::all().collect();
    let fx0 = setup.features(&setup.x0, &all_layers);
    let fp = setup.features(&setup.p, &all_layers);
    let style_layers: Vec<Layer> = setup.style.iter().map(|(l, _)| *l).collect();
    let extractor = CandleFeatures::new(std::sync::Arc::new(
        VggNet::new(weights(), None, Pooling::Max, device(), DType::F32).unwrap(),
    ));
    let per_style: Vec<_> = setup
        .styles
        .iter()
        .map(|s| extractor.grams(&host(s), &style_layers).unwrap())
        .collect();
    let parts: Vec<&[stylize::features::Gram]> = per_style.iter().map(Vec::as_slice).collect();
    let blended = blend(&parts, &setup.blend);
    let gram_tensor = |g: &stylize::features::Gram| {
        Tensor::from_slice(&g.data, (g.channels, g.channels), &Device::Cpu).unwrap()
    };
    for name in &names {
        let expected = case.tensor(name, DType::F32);
        let error = if name.starts_with("F_x0_") {
            rel_l2(&fx0[&layer_of(name, "F_x0_")], &expected)
        } else if name.starts_with("F_p_") {
            rel_l2(&fp[&layer_of(name, "F_p_")], &expected)
        } else if name.starts_with("G_x0_") {
            rel_l2(&gram(&fx0[&layer_of(name, "G_x0_")]).unwrap(), &expected)
        } else if let Some(rest) = name.strip_prefix("G_s") {
            let (k, layer) = rest.split_once('_').unwrap();
            let position = style_layers
                .iter()
                .position(|l| *l == layer.parse().unwrap())
                .unwrap();
            rel_l2(
                &gram_tensor(&per_style[k.parse::<usize>().unwrap()][position]),
                &expected,
            )
        } else if name.starts_with("A_") {
            let position = style_layers
                .iter()
                .position(|l| *l == layer_of(name, "A_"))
                .unwrap();
            rel_l2(&gram_tensor(&blended[position]), &expected)
        } else {
            continue;
        };
        report.check(name, error, TOL_FEATURES);
    }

    // Losses and gradients at x0.
    let objective = setup.objective(setup.weights);
    let (losses, grad) = objective.evaluate(&setup.x0).unwrap();
    check_losses_at_x0(case, report, "", &losses);
    for (key, ours, layers) in [
        (
            "content_per_layer",
            &losses.content_per_layer,
            &setup.content,
        ),
        ("style_per_layer", &losses.style_per_layer, &setup.style),
    ] {
        for (value, (layer, _)) in ours.iter().zip(layers.iter()) {
            let expected = case.f64_at(&["at_x0", key, &layer.to_string()]);
            report.check(
                &format!("at_x0.{key}.{layer}"),
                rel(*value, expected),
                TOL_LOSS,
            );
        }
    }
    let grad_l2 = sum_sq(&grad).sqrt();
    report.check(
        "at_x0.grad_l2",
        rel(grad_l2, case.f64_at(&["at_x0", "grad_l2"])),
        TOL_GRAD,
    );
    report.check(
        "grad_x0",
        rel_l2(&grad, &case.tensor("grad_x0", DType::F32)),
        TOL_GRAD,
    );
    let unit = |content, style, tv| TermWeights { content, style, tv };
    for (key, weights) in [
        ("grad_x0_content", unit(1.0, 0.0, 0.0)),
        ("grad_x0_style", unit(0.0, 1.0, 0.0)),
        ("grad_x0_tv", unit(0.0, 0.0, 1.0)),
    ] {
        if names.iter().any(|n| n == key) {
            let (_, g) = setup.objective(weights).evaluate(&setup.x0).unwrap();
            report.check(key, rel_l2(&g, &case.tensor(key, DType::F32)), TOL_GRAD);
        }
    }

    // Adam, 10 steps.
    let lr = case.f64_at(&["config", "adam", "lr"]);
    let expected_losses = case.f64_list(&["adam", "losses"]);
    let mut adam = Adam::new(lr);
    let mut x = setup.x0.clone();
    for (k, expected) in expected_losses.iter().enumerate() {
        let (losses, grad) = objective.evaluate(&x).unwrap();
        report.check(
            &format!("adam.losses[{k}]"),
            rel(losses.total, *expected),
            TOL_ADAM,
        );
        x = adam.update(&x, &grad).unwrap();
    }
    check_end_point(case, report, &objective, &x, "adam", "", TOL_ADAM, TOL_ADAM);

    // L-BFGS in float32: the first two evaluations are determined; the rest only qualitatively.
    let (lbfgs_losses, lbfgs_x, _) = run_lbfgs(
        &objective,
        &setup.x0,
        case.f64_list(&["lbfgs", "losses"]).len(),
    );
    let expected = case.f64_list(&["lbfgs", "losses"]);
    for k in 0..2.min(expected.len()) {
        report.check(
            &format!("lbfgs.losses[{k}] (f32)"),
            rel(lbfgs_losses[k], expected[k]),
            TOL_LBFGS_EARLY,
        );
    }
    let (final_f32, _) = objective.evaluate(&lbfgs_x).unwrap();
    if !(lbfgs_losses.iter().all(|l| l.is_finite()) && final_f32.total < lbfgs_losses[0]) {
        report.fail(format!(
            "lbfgs (f32): losses not finite or final {:.4e} >= first {:.4e}",
            final_f32.total, lbfgs_losses[0]
        ));
    }

    // The server's L-BFGS (strong-Wolfe, bounded by default) never blows up: no accepted
    // point's loss exceeds 10x the start's, unbounded or inside the pixel box.
    let bounds = PixelBox::of(&case.convention());
    for bounded in [None, Some(bounds)] {
        let mut lbfgs = Lbfgs::new(1.0, 100)
            .searching(LineSearch::StrongWolfe)
            .within(bounded);
        let x0 = match &bounded {
            Some(b) => b.project(&setup.x0).unwrap(),
            None => setup.x0.clone(),
        };
        let (losses, grad) = objective.evaluate(&x0).unwrap();
        let mut point = Point {
            x: x0,
            losses,
            grad,
        };
        let start = point.losses.total;
        let mut evaluate = |x: &Tensor| objective.evaluate(x);
        for k in 0..10 {
            match lbfgs.iterate(&point, &mut evaluate).unwrap() {
                Some(next) => point = next,
                None => break,
            }
            let loss = point.losses.total;
            if !(loss.is_finite() && loss <= 10.0 * start) {
                report.fail(format!(
                    "strong-Wolfe lbfgs (f32, bounded {}): loss {loss:.4e} at step {k} from {start:.4e}",
                    bounded.is_some()
                ));
            }
        }
        if point.losses.total >= start {
            report.fail(format!(
                "strong-Wolfe lbfgs (f32, bounded {}): no progress from {start:.4e}",
                bounded.is_some()
            ));
        }
    }
}

/// ONNX Runtime's Grams and features against the fixtures and against candle's.
fn check_onnxruntime(case: &Case, report: &mut Report) {
    let setup = Setup::new(case, DType::F32);
    // On a GPU test device, ONNX Runtime's CUDA provider when the library has it.
    let provider = stylize::onnxruntime::Provider::for_device(common::device());
    let ort = common::ort_features_on(Pooling::Max, provider);
    let candle = CandleFeatures::new(std::sync::Arc::new(
        VggNet::new(weights(), None, Pooling::Max, &Device::Cpu, DType::F32).unwrap(),
    ));
    let style_layers: Vec<Layer> = setup.style.iter().map(|(l, _)| *l).collect();
    let feature_layers: Vec<Layer> = case
        .names()
        .iter()
        .filter_map(|n| n.strip_prefix("F_x0_").map(|l| l.parse().unwrap()))
        .collect();
    let gram_tensor = |g: &stylize::features::Gram| {
        Tensor::from_slice(&g.data, (g.channels, g.channels), &Device::Cpu).unwrap()
    };
    let (x0_grams, x0_features) = ort
        .extract(&host(&setup.x0), &style_layers, &feature_layers)
        .unwrap();
    let candle_x0 = candle.grams(&host(&setup.x0), &style_layers).unwrap();
    for ((layer, ours), theirs) in style_layers.iter().zip(&x0_grams).zip(&candle_x0) {
        let expected = case.tensor(&format!("G_x0_{layer}"), DType::F32);
        report.check(
            &format!("ort G_x0_{layer}"),
            rel_l2(&gram_tensor(ours), &expected),
            TOL_FEATURES,
        );
        report.check(
            &format!("ort vs candle G_x0_{layer}"),
            rel_l2(&gram_tensor(ours), &gram_tensor(theirs)),
            TOL_FEATURES,
        );
    }
    for (layer, map) in feature_layers.iter().zip(&x0_features) {
        let ours = Tensor::from_slice(&map.data, map.shape.as_slice(), &Device::Cpu).unwrap();
        let expected = case.tensor(&format!("F_x0_{layer}"), DType::F32);
        report.check(
            &format!("ort F_x0_{layer}"),
            rel_l2(&ours, &expected),
            TOL_FEATURES,
        );
    }
    let per_style: Vec<Vec<stylize::features::Gram>> = setup
        .styles
        .iter()
        .map(|s| ort.grams(&host(s), &style_layers).unwrap())
        .collect();
    let parts: Vec<&[stylize::features::Gram]> = per_style.iter().map(Vec::as_slice).collect();
    let blended = blend(&parts, &setup.blend);
    for (layer, ours) in style_layers.iter().zip(&blended) {
        let expected = case.tensor(&format!("A_{layer}"), DType::F32);
        report.check(
            &format!("ort A_{layer}"),
            rel_l2(&gram_tensor(ours), &expected),
            TOL_FEATURES,
        );
    }
}

/// The ONNX Runtime engine: loss, gradient and the Adam run, against the fixtures.
fn check_ort_engine(case: &Case, report: &mut Report) {
    use stylize::engine::{Init, OptimiseJob, OptimizerKind, ScaleTargets};
    use stylize::onnxruntime::OrtEngine;
    let setup = Setup::new(case, DType::F32);
    let ort = std::sync::Arc::new(common::ort_features(Pooling::Max));
    let engine = OrtEngine::new(ort.environment(), common::shared_weights(), ort.clone(), 0);
    let style_layers: Vec<Layer> = setup.style.iter().map(|(l, _)| *l).collect();
    let per_style: Vec<Vec<stylize::features::Gram>> = setup
        .styles
        .iter()
        .map(|s| ort.grams(&host(s), &style_layers).unwrap())
        .collect();
    let parts: Vec<&[stylize::features::Gram]> = per_style.iter().map(Vec::as_slice).collect();
    let blended = blend(&parts, &setup.blend);
    let iterations = case.f64_list(&["adam", "losses"]).len();
    let scale = ScaleTargets {
        content: host(&setup.p),
        style: setup
            .style
            .iter()
            .zip(blended)
            .map(|(&(l, w), g)| (l, w, g))
            .collect(),
        iterations,
    };
    let job = OptimiseJob {
        scales: vec![scale.clone()],
        content_layers: setup.content.clone(),
        weights: setup.weights,
        optimizer: OptimizerKind::Adam {
            lr: case.f64_at(&["config", "adam", "lr"]),
        },
        init: Init::Image(host(&setup.x0)),
        preview_every: 0,
        tile_side: None,
        kept_stages: 1,
        // The fixtures' trajectories are unbounded.
        bounds: None,
        line_search: LineSearch::Fixed,
        stop: Default::default(),
        temporal: None,
    };
    let (losses, grad) = engine
        .objective(&job, &scale)
        .unwrap()
        .evaluate(&setup.x0)
        .unwrap();
    check_losses_at_x0(case, report, "ort engine ", &losses);
    report.check(
        "ort engine grad_x0",
        rel_l2(&grad, &case.tensor("grad_x0", DType::F32)),
        TOL_GRAD,
    );
    let mut seen = Vec::new();
    let mut sink = |p: &stylize::engine::Progress| {
        seen.push(p.losses.total);
        std::ops::ControlFlow::Continue(())
    };
    use stylize::engine::Engine;
    let result = engine.optimise(&job, &mut sink).unwrap();
    // Each report is the point after that step: x1 .. x10, whose losses are the fixture's
    // adam.losses[1..] and then loss_final, which the result carries too.
    let mut expected = case.f64_list(&["adam", "losses"]).split_off(1);
    expected.push(case.f64_at(&["adam", "loss_final"]));
    assert_eq!(seen.len(), expected.len(), "one report per step");
    for (k, (ours, theirs)) in seen.iter().zip(expected).enumerate() {
        report.check(
            &format!("ort engine adam.losses[{}]", k + 1),
            rel(*ours, theirs),
            TOL_ADAM,
        );
    }
    report.check(
        "ort engine result losses = adam.loss_final",
        rel(result.losses.total, case.f64_at(&["adam", "loss_final"])),
        TOL_ADAM,
    );
    let x10 = Tensor::from_vec(result.image.data, setup.x0.shape(), &Device::Cpu).unwrap();
    report.check(
        "ort engine adam_x10",
        rel_l2(&x10, &case.tensor("adam_x10", DType::F32)),
        TOL_ADAM,
    );
}

/// The four loss values at x0 against `at_x0`.
fn check_losses_at_x0(case: &Case, report: &mut Report, label: &str, losses: &LossBreakdown) {
    for (key, ours) in [
        ("L", losses.total),
        ("L_c", losses.content),
        ("L_s", losses.style),
        ("TV", losses.tv),
    ] {
        report.check(
            &format!("{label}at_x0.{key}"),
            rel(ours, case.f64_at(&["at_x0", key])),
            TOL_LOSS,
        );
    }
}

/// A 1x3xHxW float32 tensor as a host input image.
fn host(t: &Tensor) -> InputImage {
    let (_, _, height, width) = t.dims4().unwrap();
    let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    InputImage {
        height,
        width,
        data,
    }
}

/// One `LBFGS.step(closure)` of `n` iterations (fixed step, unbounded: PyTorch's
/// trajectory): the loss at each iteration's start, the end point, and the optimiser (for
/// its diagnostics).
fn run_lbfgs(objective: &Objective<'_>, x0: &Tensor, n: usize) -> (Vec<f64>, Tensor, Lbfgs) {
    let mut lbfgs = Lbfgs::new(1.0, 100);
    let mut evaluate = |x: &Tensor| objective.evaluate(x);
    let (losses, grad) = objective.evaluate(x0).unwrap();
    let mut point = Point {
        x: x0.clone(),
        losses,
        grad,
    };
    let mut losses = Vec::new();
    for _ in 0..n {
        losses.push(point.losses.total);
        point = lbfgs
            .iterate(&point, &mut evaluate)
            .unwrap()
            .expect("descent direction");
    }
    (losses, point.x, lbfgs)
}

/// `{method}.loss_final` = L at the end point, and the end point `{method}_x10` itself.
#[allow(clippy::too_many_arguments)]
fn check_end_point(
    case: &Case,
    report: &mut Report,
    objective: &Objective<'_>,
    x: &Tensor,
    method: &str,
    label: &str,
    tol_loss: f64,
    tol_x: f64,
) {
    let (final_losses, _) = objective.evaluate(x).unwrap();
    let expected = case.f64_at(&[method, "loss_final"]);
    report.check(
        &format!("{method}.loss_final{label}"),
        rel(final_losses.total, expected),
        tol_loss,
    );
    let key = format!("{method}_x10");
    let stored = case.tensor(&key, x.dtype());
    report.check(&format!("{key}{label}"), rel_l2(x, &stored), tol_x);
}

fn check_float64_lbfgs(case: &Case, report: &mut Report) {
    let setup = Setup::new(case, DType::F64);
    let objective = setup.objective(setup.weights);
    let expected = case.f64_list(&["lbfgs", "losses"]);
    let (losses, x, lbfgs) = run_lbfgs(&objective, &setup.x0, expected.len());
    for (k, (ours, theirs)) in losses.iter().zip(&expected).enumerate() {
        report.check(
            &format!("lbfgs.losses[{k}] (f64)"),
            rel(*ours, *theirs),
            TOL_LBFGS_F64_LOSS,
        );
    }
    check_end_point(
        case,
        report,
        &objective,
        &x,
        "lbfgs",
        " (f64)",
        TOL_LBFGS_F64_LOSS,
        TOL_LBFGS_F64_X,
    );
    let sy = case.f64_list(&["lbfgs", "diagnostics", "secant_s_dot_y"]);
    let kept: Vec<bool> = case.values["lbfgs"]["diagnostics"]["pair_kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let ours = lbfgs.diagnostics();
    if ours.len() != sy.len() {
        report.fail(format!(
            "lbfgs: {} curvature pairs, expected {}",
            ours.len(),
            sy.len()
        ));
    }
    for (k, (d, (expected_sy, expected_kept))) in ours.iter().zip(sy.iter().zip(&kept)).enumerate()
    {
        report.check(
            &format!("lbfgs.secant_s_dot_y[{k}] (f64)"),
            rel(d.s_dot_y, *expected_sy),
            TOL_LBFGS_F64_X,
        );
        if d.kept != *expected_kept {
            report.fail(format!(
                "lbfgs pair {k}: kept {} expected {}",
                d.kept, expected_kept
            ));
        }
    }
}

#[test]
fn every_fixture_case_matches_the_reference() {
    let cases = case_dirs();
    assert!(
        !cases.is_empty(),
        "no case folders in {}",
        fixtures_dir().display()
    );
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for dir in &cases {
        let case = Case::load(dir);
        let mut report = Report {
            case: dir.file_name().unwrap().to_string_lossy().into_owned(),
            lines: Vec::new(),
            failures: Vec::new(),
        };
        let names = case.names();
        if names.iter().any(|n| n == "rgb_u8") {
            check_preprocess(&case, &mut report);
        }
        if names.iter().any(|n| n == "p") {
            check_images(&case, &mut report);
            check_float32(&case, &mut report);
            check_onnxruntime(&case, &mut report);
            check_ort_engine(&case, &mut report);
            if names.iter().any(|n| n == "lbfgs_x10") {
                check_float64_lbfgs(&case, &mut report);
            }
        }
        if report.lines.is_empty() {
            report.fail("no quantity in this case was recognised".into());
        }
        lines.extend(report.lines);
        failures.extend(report.failures);
    }
    println!("{}", lines.join("\n"));
    assert!(
        failures.is_empty(),
        "{} deviations:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
