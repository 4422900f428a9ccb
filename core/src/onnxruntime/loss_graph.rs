//! The loss-and-gradient graphs for ONNX Runtime, written in Rust: VGG19's forward pass, the
//! content, style and total-variation terms, and the hand-derived backward pass to the image
//! (ReLU masks, flipped-kernel convolutions for the input gradient, max-pool gradients
//! placed at the pool's argmax indices), all as standard opset-17 operators. One graph
//! evaluates a whole frame; another gives one tile's gradient for the tiled evaluation.
//! Weights are inputs, never constants, so sessions depend on the layers alone.

use crate::model::{Layer, Vgg19Weights};
use crate::net::stages::Stage;
use crate::onnxruntime::graph::{DataType, Dim, GraphBuilder, int, ints, to_double, winograd};
use crate::onnxruntime::vgg_graph::{add_conv_relu, add_gram, add_vgg, conv3x3_attrs, image_dims};

use crate::net::Pooling;

pub const IMAGE: &str = "image";
pub const GRAD: &str = "grad";
pub const TV: &str = "tv";

pub fn content_input(layer: Layer) -> String {
    format!("content_target_{layer}")
}

pub fn style_input(layer: Layer) -> String {
    format!("style_target_{layer}")
}

pub fn content_loss(layer: Layer) -> String {
    format!("content_loss_{layer}")
}

pub fn style_loss(layer: Layer) -> String {
    format!("style_loss_{layer}")
}

/// Input name of a content layer's coefficient (dL/dF = coef · (F - P)).
pub fn content_coef(layer: Layer) -> String {
    format!("content_coef_{layer}")
}

/// Input name of a style layer's coefficient (dL/dF = coef · (G - A) F).
pub fn style_coef(layer: Layer) -> String {
    format!("style_coef_{layer}")
}

/// Input name of the tile gradient graph's `coef · (G - A)` at a style layer.
pub fn style_matrix(layer: Layer) -> String {
    format!("style_matrix_{layer}")
}

/// Input name of the tile gradient graph's core mask at a layer (1 on the tile's core).
pub fn core_mask(layer: Layer) -> String {
    format!("core_mask_{layer}")
}

/// Input name of the total-variation coefficient (`2 gamma`).
pub const TV_COEF: &str = "tv_coef";

/// What one loss graph computes: its structure only. Every weight (the terms', the layers')
/// enters as an input, so one session serves every weighting of the same layers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LossSpec {
    pub content: Vec<Layer>,
    pub style: Vec<Layer>,
}

impl LossSpec {
    fn deepest(&self) -> Option<Layer> {
        self.content.iter().chain(&self.style).copied().max()
    }
}

/// The gradient of a 2x2/stride-2 max pool: `grad` placed at the argmax `indices` of its
/// input (as ONNX MaxPool reports them; `like_input` has the input's shape) and zero
/// elsewhere, which is what MaxUnpool does.
fn max_pool_backward(b: &mut GraphBuilder, grad: &str, indices: &str, like_input: &str) -> String {
    let shape = b.op("Shape", &[like_input], vec![], "pool_in_shape");
    let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
    b.op("MaxUnpool", &[grad, indices, &shape], attrs, "pool_grad")
}

/// Total variation of `x` (an output) and its gradient times `gamma` (`twice_gamma` is the
/// name of a scalar holding `2 gamma`).
fn total_variation(b: &mut GraphBuilder, x: &str, twice_gamma: &str) -> (String, String) {
    let mut tv: Option<String> = None;
    let mut grad: Option<String> = None;
    for axis in [2i64, 3] {
        let (one, zero, end, minus_one, axes) = (
            b.int64s(&[1]),
            b.int64s(&[0]),
            b.int64s(&[i64::MAX]),
            b.int64s(&[-1]),
            b.int64s(&[axis]),
        );
        let later = b.op("Slice", &[x, &one, &end, &axes], vec![], "later");
        let earlier = b.op("Slice", &[x, &zero, &minus_one, &axes], vec![], "earlier");
        let diff = b.op("Sub", &[&later, &earlier], vec![], "diff");
        let sum = squared_reduction(b, &diff, "ReduceSum");
        tv = Some(match tv {
            Some(acc) => b.op("Add", &[&acc, &sum], vec![], "tv_sum"),
            None => sum,
        });
        let scaled = b.op("Mul", &[&diff, twice_gamma], vec![], "tv_scaled");
        let mut before = [0i64; 8];
        before[axis as usize] = 1;
        let mut after = [0i64; 8];
        after[4 + axis as usize] = 1;
        let (before, after) = (b.int64s(&before), b.int64s(&after));
        let plus = b.op("Pad", &[&scaled, &before], vec![], "tv_plus");
        let minus = b.op("Pad", &[&scaled, &after], vec![], "tv_minus");
        let part = b.op("Sub", &[&plus, &minus], vec![], "tv_grad_part");
        grad = Some(match grad {
            Some(acc) => b.op("Add", &[&acc, &part], vec![], "tv_grad"),
            None => part,
        });
    }
    (tv.expect("two axes"), grad.expect("two axes"))
}

/// `reduce(diff²)` over every element, summed in float64 (a float32 sum over millions of
/// elements loses the digits the fixtures check).
fn squared_reduction(b: &mut GraphBuilder, diff: &str, reduce: &str) -> String {
    let wide = b.op("Cast", &[diff], vec![to_double()], "diff_f64");
    let squared = b.op("Mul", &[&wide, &wide], vec![], "diff_sq");
    b.op(reduce, &[&squared], vec![int("keepdims", 0)], "reduced")
}

fn scalar_input(b: &mut GraphBuilder, name: &str) -> String {
    b.input(name, &[])
}

fn map_dims(channels: i64) -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Fixed(channels),
        Dim::Named("fh"),
        Dim::Named("fw"),
    ]
}

/// `relu > 0` as a bool map for every ReLU output: what the backward pass needs of the
/// forward's activations at untapped layers (a byte per element rather than four).
fn relu_masks(b: &mut GraphBuilder, relus: &[String]) -> Vec<String> {
    let zero = b.scalar(0.0);
    relus
        .iter()
        .map(|relu| b.op("Greater", &[relu, &zero], vec![], "relu_on"))
        .collect()
}

/// Back-propagates through the convolutions at `first ..` (`masks.len()` of them) to the
/// first one's input: `start` is a gradient already at the last one's ReLU output, and
/// `tap_grads[i]` are added at position `first + i`'s; ReLU masks (`masks[i]`, bool),
/// flipped-kernel convolutions, and max-pool gradients where `indices[i]` names the pool
/// before position `first + i`.
fn add_backward(
    b: &mut GraphBuilder,
    weights: &Vgg19Weights,
    first: usize,
    masks: &[String],
    indices: &[Option<String>],
    tap_grads: &[Vec<String>],
    start: Option<String>,
) -> Option<String> {
    let zero = b.scalar(0.0);
    let mut grad: Option<String> = start;
    for i in (0..masks.len()).rev() {
        let layer = Layer::at_position(first + i);
        for tap in &tap_grads[i] {
            grad = Some(match grad {
                Some(acc) => b.op("Add", &[&acc, tap], vec![], "tap_sum"),
                None => tap.clone(),
            });
        }
        let Some(g) = grad.take() else { continue };
        let masked = b.op("Where", &[&masks[i], &g, &zero], vec![], "pre_relu_grad");
        let (out, inp) = (layer.channels(), layer.in_channels());
        let flipped = weights.convs[first + i].input_gradient_kernel(out, inp);
        let name = format!("{layer}.weight_flipped");
        let input_grad = if winograd::worthwhile(out) {
            let zeros = b.floats(
                &format!("{layer}.zero_bias"),
                &[inp as i64],
                &vec![0.0; inp],
            );
            let kernels = (flipped.as_slice(), inp, out);
            winograd::add_conv(b, &masked, &name, kernels, &zeros, false, "conv_input_grad")
        } else {
            let kernel = b.floats(&name, &[inp as i64, out as i64, 3, 3], &flipped);
            b.op(
                "Conv",
                &[&masked, &kernel],
                conv3x3_attrs(),
                "conv_input_grad",
            )
        };
        grad = Some(match &indices[i] {
            Some(idx) => max_pool_backward(b, &input_grad, idx, &masks[i - 1]),
            None => input_grad,
        });
    }
    grad
}

/// `coef · (G - A) F` reshaped to F's map, for a style layer (`flat` is F as C x N).
fn style_tap(b: &mut GraphBuilder, matrix: &str, flat: &str, relu: &str) -> String {
    let product = b.op("MatMul", &[matrix, flat], vec![], "style_grad_flat");
    let shape = b.op("Shape", &[relu], vec![], "relu_shape");
    b.op("Reshape", &[&product, &shape], vec![], "style_grad")
}

/// Encodes the loss-and-gradient model for `spec` (max pooling only): the whole frame in
/// one pass. Inputs: the image, content and style targets, and every coefficient; outputs:
/// each term's loss and the gradient (total variation included).
pub fn build(weights: &Vgg19Weights, spec: &LossSpec) -> Vec<u8> {
    let mut b = GraphBuilder::new("stylize_vgg19_loss_and_gradient");
    b.input(IMAGE, &image_dims());
    let mut image_grad: Option<String> = None;
    if let Some(deepest) = spec.deepest() {
        let (relus, indices) = add_vgg(&mut b, weights, IMAGE, deepest, Pooling::Max, true, true);
        let mut tap_grads: Vec<Vec<String>> = vec![Vec::new(); relus.len()];
        for &layer in &spec.content {
            let relu = &relus[layer.conv_position()];
            let target = b.input(&content_input(layer), &map_dims(layer.channels() as i64));
            let diff = b.op("Sub", &[relu, &target], vec![], "content_diff");
            let loss = squared_reduction(&mut b, &diff, "ReduceMean");
            b.output_double_scalar(&loss, &content_loss(layer));
            let count = b.count(relu);
            let coef = scalar_input(&mut b, &content_coef(layer));
            let coef = b.op("Div", &[&coef, &count], vec![], "content_coef");
            let grad = b.op("Mul", &[&diff, &coef], vec![], "content_grad");
            tap_grads[layer.conv_position()].push(grad);
        }
        for &layer in &spec.style {
            let relu = relus[layer.conv_position()].clone();
            let c = layer.channels() as i64;
            let target = b.input(&style_input(layer), &[Dim::Fixed(c), Dim::Fixed(c)]);
            let (gram, flat, count) = add_gram(&mut b, &relu, c);
            let diff = b.op("Sub", &[&gram, &target], vec![], "style_diff");
            let loss = squared_reduction(&mut b, &diff, "ReduceMean");
            b.output_double_scalar(&loss, &style_loss(layer));
            let coef = scalar_input(&mut b, &style_coef(layer));
            let coef = b.op("Div", &[&coef, &count], vec![], "style_coef");
            let matrix = b.op("Mul", &[&diff, &coef], vec![], "style_matrix");
            let grad = style_tap(&mut b, &matrix, &flat, &relu);
            tap_grads[layer.conv_position()].push(grad);
        }
        let masks = relu_masks(&mut b, &relus);
        image_grad = add_backward(&mut b, weights, 0, &masks, &indices, &tap_grads, None);
    }
    let twice_gamma = scalar_input(&mut b, TV_COEF);
    let (tv, tv_grad) = total_variation(&mut b, IMAGE, &twice_gamma);
    b.output_double_scalar(&tv, TV);
    let total_grad = match image_grad {
        Some(g) => b.op("Add", &[&g, &tv_grad], vec![], "image_grad"),
        None => tv_grad,
    };
    b.output(&total_grad, GRAD, &image_dims());
    b.finish()
}

/// What every name of a tile's kept state starts with: the outputs of a stage's forward
/// graph that are inputs of its backward graph.
pub const STATE_PREFIX: &str = "state_";

pub fn state_mask(position: usize) -> String {
    format!("{STATE_PREFIX}mask_{position}")
}

pub const STATE_POOL_INDEX: &str = "state_pool_index";

pub fn state_relu(layer: Layer) -> String {
    format!("{STATE_PREFIX}relu_{layer}")
}

/// Output name of a style layer's `F F^T` over the tile's core (unnormalised).
pub fn core_gram(layer: Layer) -> String {
    format!("core_gram_{layer}")
}

/// A stage's input map (the image for the first stage) and the gradient with respect to it.
pub const STAGE_INPUT: &str = "stage_input";
/// A stage's pooled output, and the gradient with respect to it.
pub const STAGE_OUTPUT: &str = "stage_output";
pub const OUTPUT_GRAD: &str = "output_grad";

fn state_dims() -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Named("channels"),
        Dim::Named("sh"),
        Dim::Named("sw"),
    ]
}

fn stage_input_dims(stage: Stage) -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Fixed(stage.in_channels() as i64),
        Dim::Named("height"),
        Dim::Named("width"),
    ]
}

fn pooled_dims(stage: Stage) -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Fixed(stage.channels() as i64),
        Dim::Named("ph"),
        Dim::Named("pw"),
    ]
}

/// What one stage graph computes: the stage and the content and style layers inside it.
/// Sessions are keyed by it, so stages that read the same layers share them across jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageSpec {
    pub stage: Stage,
    pub content: Vec<Layer>,
    pub style: Vec<Layer>,
}

impl StageSpec {
    /// `spec`'s layers that lie in `stage`.
    pub fn of(stage: Stage, spec: &LossSpec) -> Self {
        let inside = |layers: &[Layer]| -> Vec<Layer> {
            layers
                .iter()
                .copied()
                .filter(|l| stage.contains(*l))
                .collect()
        };
        Self {
            stage,
            content: inside(&spec.content),
            style: inside(&spec.style),
        }
    }
}

/// Encodes the forward model of one stage tile (max pooling only; see `engine::tiled`).
/// Inputs: the tile's input map and, per style layer, a mask of the tile's core. Outputs:
/// per style layer `F F^T` over the core (`core_gram`); the pooled output when the stage
/// pools; and the state its backward model reads: the ReLU masks, the pool's indices, the
/// tapped layers' outputs (also what the content terms read).
pub fn build_stage_forward(weights: &Vgg19Weights, spec: &StageSpec) -> Vec<u8> {
    let stage = spec.stage;
    let mut b = GraphBuilder::new("stylize_vgg19_stage_forward");
    b.input(STAGE_INPUT, &stage_input_dims(stage));
    let mut relus = Vec::new();
    let mut current = STAGE_INPUT.to_string();
    for layer in stage.layers() {
        current = add_conv_relu(&mut b, weights, layer, &current, true);
        relus.push(current.clone());
    }
    let relu_of = |layer: Layer| &relus[layer.conv_position() - stage.first];
    for &layer in &spec.style {
        let c = layer.channels() as i64;
        let mask = b.input(&core_mask(layer), &map_dims(1));
        let (shape, row) = (b.int64s(&[c, -1]), b.int64s(&[1, -1]));
        let flat = b.op("Reshape", &[relu_of(layer), &shape], vec![], "flat");
        let mask = b.op("Reshape", &[&mask, &row], vec![], "flat_mask");
        let core = b.op("Mul", &[&flat, &mask], vec![], "core_flat");
        // Gemm's transposed operand needs no transposed copy of F.
        let gram = b.op("Gemm", &[&core, &flat], vec![int("transB", 1)], "core_gram");
        b.output(&gram, &core_gram(layer), &[Dim::Fixed(c), Dim::Fixed(c)]);
    }
    if stage.pooled_after {
        let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        let (pooled, index) = ("pooled".to_string(), "pool_index".to_string());
        b.op_into("MaxPool", &[&current], attrs, &[&pooled, &index]);
        b.output(&pooled, STAGE_OUTPUT, &pooled_dims(stage));
        // Indices within a tile fit 32 bits: half the kept state's bytes.
        let narrow = b.op(
            "Cast",
            &[&index],
            vec![int("to", DataType::Int32 as i64)],
            "index32",
        );
        b.typed_output(&narrow, STATE_POOL_INDEX, DataType::Int32, &state_dims());
    }
    let kept = usize::from(recomputes_first(stage));
    let masks = relu_masks(&mut b, &relus[kept..]);
    for (mask, layer) in masks.iter().zip(stage.layers().skip(kept)) {
        let name = state_mask(layer.conv_position());
        b.typed_output(mask, &name, DataType::Bool, &state_dims());
    }
    for &layer in spec.content.iter().chain(&spec.style) {
        let name = if layer.conv_position() < stage.first + kept {
            map_output(layer)
        } else {
            state_relu(layer)
        };
        let needed = spec.content.contains(&layer) || name.starts_with(STATE_PREFIX);
        if needed && !b.has_output(&name) {
            b.output(relu_of(layer), &name, &state_dims());
        }
    }
    b.finish()
}

/// Whether a stage's backward graph computes its first convolution again from the stage's
/// input instead of keeping its ReLU output and mask: the first stage's, whose input is
/// the 3-channel image, so the recomputation is a fraction of a percent of the stage and the
/// state shrinks from 8 to 3 bytes per value.
pub fn recomputes_first(stage: Stage) -> bool {
    stage.block == 1
}

/// Output name of a tapped map the forward graph gives for the content terms without
/// keeping it as state.
pub fn map_output(layer: Layer) -> String {
    format!("map_{layer}")
}

/// Encodes the backward model of one stage tile: from the forward model's state, the
/// gradient with respect to the tile's input map. Inputs besides the state: the gradient at
/// the pooled output (when the stage pools); per content layer its target over the tile's
/// map and its coefficient; per style layer `coef · (G - A)` with the frame's Gram. Every
/// term applies over the whole tile: only the core of the result is exact, and used.
pub fn build_stage_backward(weights: &Vgg19Weights, spec: &StageSpec) -> Vec<u8> {
    let stage = spec.stage;
    let mut b = GraphBuilder::new("stylize_vgg19_stage_backward");
    let mut relus: Vec<Option<String>> = vec![None; stage.convs()];
    let mut masks = Vec::with_capacity(stage.convs());
    if recomputes_first(stage) {
        b.input(STAGE_INPUT, &stage_input_dims(stage));
        let first = Layer::at_position(stage.first);
        let relu = add_conv_relu(&mut b, weights, first, STAGE_INPUT, true);
        masks.extend(relu_masks(&mut b, std::slice::from_ref(&relu)));
        relus[0] = Some(relu);
    }
    for layer in stage.layers().skip(masks.len()) {
        let name = state_mask(layer.conv_position());
        masks.push(b.typed_input(&name, DataType::Bool, &state_dims()));
    }
    let mut relu_of = |b: &mut GraphBuilder, layer: Layer| {
        relus[layer.conv_position() - stage.first]
            .get_or_insert_with(|| b.input(&state_relu(layer), &state_dims()))
            .clone()
    };
    let mut tap_grads: Vec<Vec<String>> = vec![Vec::new(); stage.convs()];
    for &layer in &spec.content {
        let relu = relu_of(&mut b, layer);
        let target = b.input(&content_input(layer), &map_dims(layer.channels() as i64));
        let coef = scalar_input(&mut b, &content_coef(layer));
        let diff = b.op("Sub", &[&relu, &target], vec![], "content_diff");
        let grad = b.op("Mul", &[&diff, &coef], vec![], "content_grad");
        tap_grads[layer.conv_position() - stage.first].push(grad);
    }
    for &layer in &spec.style {
        let relu = relu_of(&mut b, layer);
        let c = layer.channels() as i64;
        let matrix = b.input(&style_matrix(layer), &[Dim::Fixed(c), Dim::Fixed(c)]);
        let shape = b.int64s(&[c, -1]);
        let flat = b.op("Reshape", &[&relu, &shape], vec![], "flat");
        let grad = style_tap(&mut b, &matrix, &flat, &relu);
        tap_grads[layer.conv_position() - stage.first].push(grad);
    }
    let start = stage.pooled_after.then(|| {
        let grad = b.input(OUTPUT_GRAD, &pooled_dims(stage));
        let narrow = b.typed_input(STATE_POOL_INDEX, DataType::Int32, &state_dims());
        let to_int64 = vec![int("to", DataType::Int64 as i64)];
        let index = b.op("Cast", &[&narrow], to_int64, "index64");
        let last = masks.last().cloned().unwrap_or_default();
        max_pool_backward(&mut b, &grad, &index, &last)
    });
    let indices = vec![None; masks.len()];
    if let Some(grad) = add_backward(
        &mut b,
        weights,
        stage.first,
        &masks,
        &indices,
        &tap_grads,
        start,
    ) {
        b.output(&grad, GRAD, &stage_input_dims(stage));
    }
    b.finish()
}
