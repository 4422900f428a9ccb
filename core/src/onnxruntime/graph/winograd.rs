//! Winograd F(2x2, 3x3) convolution for ONNX Runtime graphs: 3x3/stride-1/pad-1 convolutions
//! as an input transform (custom operator), one batched MatMul (MLAS, on pre-transformed
//! kernels) and an output transform with bias and ReLU (custom operator). It does 2.25x
//! fewer multiplies than a direct convolution; its transforms use only additions and
//! halvings, so its float32 error stays at the level of a direct convolution.
//!
//! Layout: an image `[1, C, H, W]` is cut into `T = ceil(H/2) * ceil(W/2)` overlapping 4x4
//! tiles (stride 2, zero padded); the transformed input is `[16, C, T]`, the product
//! `[16, K, T]`.

use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

use super::{GraphBuilder, int};

/// The custom operators' domain in generated graphs.
pub const DOMAIN: &str = "stylize.winograd";
const INPUT_OP: &str = "WinogradInput";
const OUTPUT_OP: &str = "WinogradOutput";

/// G, the kernel transform (4x3).
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Whether a convolution reading `in_channels` channels goes through Winograd. With 64
/// channels the batched MatMul is too thin to beat ONNX Runtime's direct convolution.
pub fn worthwhile(in_channels: usize) -> bool {
    in_channels >= 256
}

/// `U[ab][k][c] = (G g G^T)[a][b]` for kernels `[K, C, 3, 3]`.
pub fn transform_kernels(weight: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * k * c];
    for ko in 0..k {
        for ci in 0..c {
            let g = &weight[(ko * c + ci) * 9..][..9];
            let mut rows = [[0f32; 3]; 4];
            for (a, row) in rows.iter_mut().enumerate() {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = (0..3).map(|i| G[a][i] * g[i * 3 + j]).sum();
                }
            }
            for (a, row) in rows.iter().enumerate() {
                for (b, gb) in G.iter().enumerate() {
                    let value: f32 = (0..3).map(|j| row[j] * gb[j]).sum();
                    u[((a * 4 + b) * k + ko) * c + ci] = value;
                }
            }
        }
    }
    u
}

/// Tiles per column and per row for an `h x w` image.
fn tiles(h: usize, w: usize) -> (usize, usize) {
    (h.div_ceil(2), w.div_ceil(2))
}

/// `B^T d B` for every tile of one channel `plane` (`h x w`), written to `v` at
/// `v[ab * stride + t]`. Rows are split into even and odd padded columns first, so every
/// loop below reads and writes contiguously (and vectorises).
fn transform_input_plane(plane: &[f32], h: usize, w: usize, v: &mut Strided) {
    let (th, tw) = tiles(h, w);
    // Padded column p = x + 1; even[j] = padded[2j], odd[j] = padded[2j + 1].
    let n = tw + 1;
    let mut even = vec![0f32; 4 * n];
    let mut odd = vec![0f32; 4 * n];
    let mut t_even = vec![0f32; 4 * n];
    let mut t_odd = vec![0f32; 4 * n];
    for i in 0..th {
        for r in 0..4 {
            let (e, o) = (&mut even[r * n..][..n], &mut odd[r * n..][..n]);
            e.fill(0.0);
            o.fill(0.0);
            let y = (2 * i + r) as isize - 1;
            if !(0..h as isize).contains(&y) {
                continue;
            }
            let row = &plane[y as usize * w..][..w];
            for (j, pair) in row.chunks(2).enumerate() {
                o[j] = pair[0];
                if let Some(&next) = pair.get(1) {
                    e[j + 1] = next;
                }
            }
        }
        for (src, dst) in [(&even, &mut t_even), (&odd, &mut t_odd)] {
            let (d0, rest) = src.split_at(n);
            let (d1, rest) = rest.split_at(n);
            let (d2, d3) = rest.split_at(n);
            let (t0, rest) = dst.split_at_mut(n);
            let (t1, rest) = rest.split_at_mut(n);
            let (t2, t3) = rest.split_at_mut(n);
            for q in 0..n {
                t0[q] = d0[q] - d2[q];
                t1[q] = d1[q] + d2[q];
                t2[q] = d2[q] - d1[q];
                t3[q] = d1[q] - d3[q];
            }
        }
        for a in 0..4 {
            let (e, o) = (&t_even[a * n..][..n], &t_odd[a * n..][..n]);
            let [o0, o1, o2, o3] = v.rows4(a * 4, i * tw, tw);
            for j in 0..tw {
                // The tile's four columns: e[j], o[j], e[j + 1], o[j + 1].
                o0[j] = e[j] - e[j + 1];
                o1[j] = o[j] + e[j + 1];
                o2[j] = e[j + 1] - o[j];
                o3[j] = o[j] - o[j + 1];
            }
        }
    }
}

/// `A^T m A` for every tile of one output channel, plus `bias`, optionally through ReLU,
/// written to the `h x w` `plane`. `m` holds the 16 rows of this channel.
fn transform_output_plane(
    m: [&[f32]; 16],
    bias: f32,
    relu: bool,
    h: usize,
    w: usize,
    plane: &mut [f32],
) {
    let (th, tw) = tiles(h, w);
    let finish = |v: f32| if relu { v.max(0.0) } else { v };
    let mut out = [vec![0f32; 2 * tw], vec![0f32; 2 * tw]];
    for i in 0..th {
        let base = i * tw;
        let r: [&[f32]; 16] = std::array::from_fn(|ab| &m[ab][base..base + tw]);
        let [top, bottom] = &mut out;
        for j in 0..tw {
            let s0: [f32; 4] = std::array::from_fn(|b| r[b][j] + r[4 + b][j] + r[8 + b][j]);
            let s1: [f32; 4] = std::array::from_fn(|b| r[4 + b][j] - r[8 + b][j] - r[12 + b][j]);
            top[2 * j] = finish(s0[0] + s0[1] + s0[2] + bias);
            top[2 * j + 1] = finish(s0[1] - s0[2] - s0[3] + bias);
            bottom[2 * j] = finish(s1[0] + s1[1] + s1[2] + bias);
            bottom[2 * j + 1] = finish(s1[1] - s1[2] - s1[3] + bias);
        }
        for (k, row) in out.iter().enumerate() {
            let y = 2 * i + k;
            if y < h {
                plane[y * w..][..w].copy_from_slice(&row[..w]);
            }
        }
    }
}

/// Sixteen rows of a `[16, C, T]` buffer for one channel, shared across ONNX Runtime's
/// worker threads; each thread writes only its own channel's rows.
struct Strided {
    ptr: *mut f32,
    /// Offset of this channel's row for `ab = 0`; row `ab` starts `ab * ab_stride` later.
    offset: usize,
    ab_stride: usize,
}

impl Strided {
    /// Rows `first..first + 4`, from `start`, `len` long.
    fn rows4(&mut self, first: usize, start: usize, len: usize) -> [&mut [f32]; 4] {
        // SAFETY: rows of distinct `ab` (and of distinct channels, one per thread) are
        // disjoint ranges of the buffer, which outlives the kernel call.
        std::array::from_fn(|k| unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr
                    .add(self.offset + (first + k) * self.ab_stride + start),
                len,
            )
        })
    }
}

/// A pointer that may cross into ONNX Runtime's parallel-for workers.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: workers write disjoint channels (see `Strided`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

fn missing(what: &str) -> ort::Error {
    ort::Error::new(format!("winograd: {what} missing"))
}

fn dims4(shape: &[i64]) -> ort::Result<[usize; 4]> {
    match shape {
        [1, c, h, w] => Ok([1, *c as usize, *h as usize, *w as usize]),
        other => Err(ort::Error::new(format!(
            "winograd: expected a [1, C, H, W] input, got {other:?}"
        ))),
    }
}

/// `[1, C, H, W]` -> `[16, C, T]`.
struct InputTransform;

impl Operator for InputTransform {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        INPUT_OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| {
            let x = ctx.input(0)?.ok_or_else(|| missing("input"))?;
            let (shape, x) = x.try_extract_tensor::<f32>()?;
            let [_, c, h, w] = dims4(shape)?;
            let (th, tw) = tiles(h, w);
            let t = th * tw;
            let mut v = ctx
                .output(0, vec![16i64, c as i64, t as i64])?
                .ok_or_else(|| missing("output"))?;
            let (_, v) = v.try_extract_tensor_mut::<f32>()?;
            let out = SharedMut(v.as_mut_ptr());
            ctx.par_for(c, c.min(64), move |ci| {
                let out = out;
                let mut rows = Strided {
                    ptr: out.0,
                    offset: ci * t,
                    ab_stride: c * t,
                };
                transform_input_plane(&x[ci * h * w..][..h * w], h, w, &mut rows);
            })
        }))
    }
}

/// `[16, K, T]`, bias `[K]`, and the convolution's input (for its height and width) ->
/// `[1, K, H, W]`; attribute `relu` (0 or 1).
struct OutputTransform;

impl Operator for OutputTransform {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OUTPUT_OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(
        &self,
        info: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
        let relu = info.get::<i64>("relu").unwrap_or(0) != 0;
        Ok(Box::new(move |ctx: &ComputeContext| {
            let m = ctx.input(0)?.ok_or_else(|| missing("product"))?;
            let (m_shape, m) = m.try_extract_tensor::<f32>()?;
            let bias = ctx.input(1)?.ok_or_else(|| missing("bias"))?;
            let (_, bias) = bias.try_extract_tensor::<f32>()?;
            let like = ctx.input(2)?.ok_or_else(|| missing("input"))?;
            let (like_shape, _) = like.try_extract_tensor::<f32>()?;
            let [_, _, h, w] = dims4(like_shape)?;
            let (th, tw) = tiles(h, w);
            let t = th * tw;
            let k = match **m_shape {
                [16, k, tt] if tt as usize == t => k as usize,
                ref other => {
                    return Err(ort::Error::new(format!(
                        "winograd: product shape {other:?} does not fit {h}x{w}"
                    )));
                }
            };
            if bias.len() != k {
                return Err(ort::Error::new("winograd: bias length differs from K"));
            }
            let mut y = ctx
                .output(0, vec![1i64, k as i64, h as i64, w as i64])?
                .ok_or_else(|| missing("output"))?;
            let (_, y) = y.try_extract_tensor_mut::<f32>()?;
            let out = SharedMut(y.as_mut_ptr());
            ctx.par_for(k, k.min(64), move |ko| {
                let out = out;
                let rows: [&[f32]; 16] = std::array::from_fn(|ab| &m[(ab * k + ko) * t..][..t]);
                // SAFETY: each worker writes only plane `ko`.
                let plane = unsafe { std::slice::from_raw_parts_mut(out.0.add(ko * h * w), h * w) };
                transform_output_plane(rows, bias[ko], relu, h, w, plane);
            })
        }))
    }
}

/// The domain to register on every session whose graph uses `add_conv`.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(InputTransform)?
        .add(OutputTransform)
}

/// Adds a Winograd 3x3 convolution of `input` (`C` channels) with kernels `[K, C, 3, 3]`
/// and a bias, optionally followed by ReLU; returns the output's name.
pub fn add_conv(
    b: &mut GraphBuilder,
    input: &str,
    name: &str,
    kernels: (&[f32], usize, usize),
    bias: &str,
    relu: bool,
    hint: &str,
) -> String {
    let (weight, k, c) = kernels;
    let u = b.floats(
        &format!("{name}.winograd"),
        &[16, k as i64, c as i64],
        &transform_kernels(weight, k, c),
    );
    let v = b.custom_op(DOMAIN, INPUT_OP, &[input], vec![], "winograd_in");
    let m = b.op("MatMul", &[&u, &v], vec![], "winograd_product");
    b.custom_op(
        DOMAIN,
        OUTPUT_OP,
        &[&m, bias, input],
        vec![int("relu", relu as i64)],
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3x3/pad-1 convolution in float64.
    fn direct(
        w: &[f32],
        bias: &[f32],
        x: &[f32],
        c: usize,
        k: usize,
        h: usize,
        wd: usize,
    ) -> Vec<f64> {
        let mut y = vec![0f64; k * h * wd];
        for ko in 0..k {
            for yy in 0..h {
                for xx in 0..wd {
                    let mut acc = bias[ko] as f64;
                    for ci in 0..c {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (sy, sx) = (yy + dy, xx + dx);
                                if sy == 0 || sx == 0 || sy > h || sx > wd {
                                    continue;
                                }
                                acc += w[((ko * c + ci) * 3 + dy) * 3 + dx] as f64
                                    * x[(ci * h + sy - 1) * wd + sx - 1] as f64;
                            }
                        }
                    }
                    y[(ko * h + yy) * wd + xx] = acc;
                }
            }
        }
        y
    }

    #[test]
    fn transforms_and_product_equal_a_direct_convolution_on_odd_sizes() {
        let (c, k, h, w) = (5, 7, 9, 11);
        let mut state = 7u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let weight: Vec<f32> = (0..k * c * 9).map(|_| next()).collect();
        let bias: Vec<f32> = (0..k).map(|_| next()).collect();
        let x: Vec<f32> = (0..c * h * w).map(|_| next()).collect();
        let (th, tw) = tiles(h, w);
        let t = th * tw;
        let mut v = vec![0f32; 16 * c * t];
        for ci in 0..c {
            let mut rows = Strided {
                ptr: v.as_mut_ptr(),
                offset: ci * t,
                ab_stride: c * t,
            };
            transform_input_plane(&x[ci * h * w..][..h * w], h, w, &mut rows);
        }
        let u = transform_kernels(&weight, k, c);
        let mut m = vec![0f32; 16 * k * t];
        for ab in 0..16 {
            for ko in 0..k {
                for tt in 0..t {
                    m[(ab * k + ko) * t + tt] = (0..c)
                        .map(|ci| u[(ab * k + ko) * c + ci] * v[(ab * c + ci) * t + tt])
                        .sum();
                }
            }
        }
        let expected = direct(&weight, &bias, &x, c, k, h, w);
        for relu in [false, true] {
            let mut y = vec![0f32; k * h * w];
            for ko in 0..k {
                let rows: [&[f32]; 16] = std::array::from_fn(|ab| &m[(ab * k + ko) * t..][..t]);
                transform_output_plane(rows, bias[ko], relu, h, w, &mut y[ko * h * w..][..h * w]);
            }
            for (ours, exact) in y.iter().zip(&expected) {
                let exact = if relu { exact.max(0.0) } else { *exact };
                assert!((*ours as f64 - exact).abs() < 1e-5, "{ours} vs {exact}");
            }
        }
    }
}
