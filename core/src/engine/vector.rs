//! The optimisers' arithmetic on image-sized vectors (dots, axpys, scalings, projections onto
//! the pixel box). On host memory (float32 or float64, contiguous) each operation is one
//! multithreaded pass that writes its destination in place, so an optimiser that keeps its
//! buffers allocates nothing per iteration; on a GPU the same operations are candle tensor
//! ops on the device. Destinations are buffers an optimiser owns (from `buffer_like`), never
//! a point's tensors, which may be shared.

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::bounds::PixelBox;
use crate::error::Result;

/// Values per unit of parallel work: large enough that scheduling is noise, small enough
/// that both cores share a 256x256 image.
const CHUNK: usize = 1 << 14;

/// A host element type; updates and per-chunk sums run in it (float32 arithmetic for
/// float32 images, as PyTorch's optimisers do), chunk sums combine in f64.
trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + 'static
{
    const ZERO: Self;
    /// The values of host storage of this type.
    fn host(storage: &CpuStorage) -> Option<&[Self]>;
    fn to_f64(self) -> f64;
    fn of(v: f64) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn clamp_to(self, lo: Self, hi: Self) -> Self {
        if self < lo {
            lo
        } else if self > hi {
            hi
        } else {
            self
        }
    }
}

macro_rules! real {
    ($t:ty, $variant:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            fn host(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn of(v: f64) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
        }
    };
}
real!(f32, F32);
real!(f64, F64);

/// Whether `t` takes the host path: on the CPU, float32 or float64, contiguous.
fn on_host(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64) && t.is_contiguous()
}

/// Whether `y` and every tensor of `x` take the host path with one dtype and one length.
fn all_on_host(y: &Tensor, x: &[&Tensor]) -> bool {
    on_host(y)
        && x.iter()
            .all(|t| on_host(t) && t.dtype() == y.dtype() && t.elem_count() == y.elem_count())
}

/// The contiguous host values of a storage guard's tensor.
fn values<'a, T: Real>(storage: &'a Storage, layout: &Layout) -> Option<&'a [T]> {
    let Storage::Cpu(cpu) = storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(&T::host(cpu)?[start..end])
}

/// A reduction over aligned values of three tensors (repeat one to use fewer), all on the
/// host with one dtype and length, chunk by chunk in parallel; `None` when they are not.
fn reduce(tensors: [&Tensor; 3], per_chunk: impl ReduceChunk) -> Option<f64> {
    if !all_on_host(tensors[0], &tensors[1..]) {
        return None;
    }
    let guards = tensors.map(|t| t.storage_and_layout());
    fn slices<'a, T: Real>(
        guards: &'a [(candle_core::StorageRef<'_>, &Layout); 3],
    ) -> Option<[&'a [T]; 3]> {
        let [a, b, c] = guards;
        Some([values(&a.0, a.1)?, values(&b.0, b.1)?, values(&c.0, c.1)?])
    }
    match tensors[0].dtype() {
        DType::F32 => Some(reduce_slices(slices::<f32>(&guards)?, &per_chunk)),
        DType::F64 => Some(reduce_slices(slices::<f64>(&guards)?, &per_chunk)),
        _ => None,
    }
}

/// A per-chunk fold for `reduce`, over either float type, and how chunks combine (a sum
/// unless said otherwise; 0 is the identity of both).
trait ReduceChunk: Sync {
    fn fold<T: Real>(&self, offset: usize, slices: [&[T]; 3]) -> f64;
    fn combine(&self, a: f64, b: f64) -> f64 {
        a + b
    }
}

/// Chunks are fixed (`CHUNK` values each, whatever the thread count) and their results are
/// combined in chunk order on the calling thread, so the value does not depend on how many
/// threads ran the chunks or which stole which: rayon's own `reduce` combines in the order
/// its splits happened to take.
fn reduce_slices<T: Real>(slices: [&[T]; 3], per_chunk: &impl ReduceChunk) -> f64 {
    let len = slices[0].len();
    let per_chunk_values: Vec<f64> = (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .map(|k| {
            let range = k * CHUNK..((k + 1) * CHUNK).min(len);
            per_chunk.fold(range.start, slices.map(|s| &s[range.clone()]))
        })
        .collect();
    per_chunk_values
        .into_iter()
        .fold(0.0, |a, b| per_chunk.combine(a, b))
}

struct Dot;
impl ReduceChunk for Dot {
    fn fold<T: Real>(&self, _: usize, s: [&[T]; 3]) -> f64 {
        sum_lanes(s[0], s[1], s[1], |p, q, _| p * q)
    }
}

struct MaxAbs;
impl ReduceChunk for MaxAbs {
    fn fold<T: Real>(&self, _: usize, s: [&[T]; 3]) -> f64 {
        s[0].iter().fold(T::ZERO, |m, a| m.max(a.abs())).to_f64()
    }
    fn combine(&self, a: f64, b: f64) -> f64 {
        a.max(b)
    }
}

struct AbsSum;
impl ReduceChunk for AbsSum {
    fn fold<T: Real>(&self, _: usize, s: [&[T]; 3]) -> f64 {
        sum_lanes(s[0], s[0], s[0], |p, _, _| p.abs())
    }
}

/// Σ g d over the coordinates of `x` strictly inside the box.
struct DotInside<'a> {
    bounds: &'a PixelBox,
    plane: usize,
}
impl ReduceChunk for DotInside<'_> {
    fn fold<T: Real>(&self, offset: usize, s: [&[T]; 3]) -> f64 {
        let [g, d, x] = s;
        channel_runs(offset, self.plane, g.len())
            .map(|(channel, range)| {
                let (lo, hi) = self.bounds.interval(channel);
                let (lo, hi) = (T::of(lo), T::of(hi));
                let inside = |g: T, d: T, x: T| if x > lo && x < hi { g * d } else { T::ZERO };
                sum_lanes(&g[range.clone()], &d[range.clone()], &x[range], inside)
            })
            .sum()
    }
}

fn scalar(t: Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Σ a b.
pub fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    match reduce([a, b, b], Dot) {
        Some(v) => Ok(v),
        None => scalar((a * b)?.sum_all()?),
    }
}

/// The largest absolute value.
pub fn max_abs(t: &Tensor) -> Result<f64> {
    match reduce([t, t, t], MaxAbs) {
        Some(v) => Ok(v),
        None => scalar(t.abs()?.max_all()?),
    }
}

/// Σ |t|.
pub fn abs_sum(t: &Tensor) -> Result<f64> {
    match reduce([t, t, t], AbsSum) {
        Some(v) => Ok(v),
        None => scalar(t.abs()?.sum_all()?),
    }
}

/// Σ g d over the coordinates where `x` lies strictly inside `bounds` (the slope along a
/// projected path: coordinates on a bound do not move).
pub fn dot_inside(g: &Tensor, d: &Tensor, x: &Tensor, bounds: &PixelBox) -> Result<f64> {
    let plane = x.elem_count() / 3;
    if matches!(x.dims(), [1, 3, _, _])
        && let Some(v) = reduce([g, d, x], DotInside { bounds, plane })
    {
        return Ok(v);
    }
    dot(g, &(d * bounds.inside(x)?)?)
}

/// The runs of values `offset..offset + len` of a 1x3xHxW tensor with `plane` values per
/// channel that lie in one channel, as (channel, range relative to `offset`): the box's
/// bounds are constants within a run.
fn channel_runs(
    offset: usize,
    plane: usize,
    len: usize,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let channel = ((offset + start) / plane.max(1)).min(2);
        let end = match channel {
            2 => len,
            c => ((c + 1) * plane - offset).min(len),
        };
        let run = (channel, start..end);
        start = end;
        Some(run)
    })
}

/// `s[range]`, or `s` when it is empty (an absent source).
fn window<'a, T>(s: &'a [T], range: &std::ops::Range<usize>) -> &'a [T] {
    if s.is_empty() { s } else { &s[range.clone()] }
}

/// y = f(y, x) element by element.
#[inline(always)]
fn each1<T: Real>(y: &mut [T], x: &[T], f: impl Fn(T, T) -> T) {
    for (v, &p) in y.iter_mut().zip(x) {
        *v = f(*v, p);
    }
}

/// y = f(y, x0, x1) element by element.
#[inline(always)]
fn each2<T: Real>(y: &mut [T], x0: &[T], x1: &[T], f: impl Fn(T, T, T) -> T) {
    for ((v, &p), &q) in y.iter_mut().zip(x0).zip(x1) {
        *v = f(*v, p, q);
    }
}

/// Σ f(a, b, c) over aligned values in sixteen interleaved sums (so the loop vectorises),
/// returned as f64.
#[inline(always)]
fn sum_lanes<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
    let mut lanes = [T::ZERO; 16];
    let (ca, cb, cc) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
    let tail: f64 = (ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder()))
    .map(|((&p, &q), &r)| f(p, q, r).to_f64())
    .sum();
    for ((pa, pb), pc) in ca.zip(cb).zip(cc) {
        for k in 0..16 {
            lanes[k] = lanes[k] + f(pa[k], pb[k], pc[k]);
        }
    }
    lanes.iter().map(|l| l.to_f64()).sum::<f64>() + tail
}

/// A fresh buffer of `like`'s shape, dtype and device, owned by the caller (zeros).
pub fn buffer_like(like: &Tensor) -> Result<Tensor> {
    Ok(like.zeros_like()?)
}

/// An element-wise update of a destination from up to two sources, in one host pass.
#[derive(Debug, Clone, Copy)]
enum Update<'a> {
    /// y *= a
    Scale(f64),
    /// y += a x
    Axpy(f64),
    /// y = a x
    SetScaled(f64),
    /// y = x0 - x1
    SetDifference,
    /// y += a (x0 - y): PyTorch's `lerp_`.
    Lerp(f64),
    /// y = a y + b x0²
    DecaySquare(f64, f64),
    /// y -= a x0 / (sqrt(x1) / c + eps): Adam's step from its moments.
    AdamStep { a: f64, c: f64, eps: f64 },
    /// y = clamp(y) to the box.
    Project(&'a PixelBox),
    /// y = a x1 where `x0` is not held by a bound against `x1` (the gradient), else 0.
    SetFree(&'a PixelBox, f64),
    /// y = 0 where `x0` is held by a bound against `x1`.
    ZeroHeld(&'a PixelBox),
    /// y = x0 + a x1, clamped to the box when there is one.
    SetAlongPath(Option<&'a PixelBox>, f64),
}

impl Update<'_> {
    fn name(&self) -> &'static str {
        "stylize-optimiser-update"
    }

    /// Applies the update to `y` (values `offset..` of a 1x3xHxW tensor of `plane` pixels
    /// per channel) from `x`, in runs of one channel so the box's bounds are constants.
    fn apply<T: Real>(&self, offset: usize, plane: usize, y: &mut [T], x: [&[T]; 2]) {
        for (channel, range) in channel_runs(offset, plane, y.len()) {
            let [x0, x1] = x.map(|s| window(s, &range));
            self.apply_run(channel, &mut y[range], x0, x1);
        }
    }

    /// One channel's run; each arm is a plain loop the compiler vectorises.
    fn apply_run<T: Real>(&self, channel: usize, y: &mut [T], x0: &[T], x1: &[T]) {
        let bounds = |b: &PixelBox| {
            let (lo, hi) = b.interval(channel);
            (T::of(lo), T::of(hi))
        };
        let zero = T::ZERO;
        let held = |(lo, hi): (T, T), v: T, g: T| (v <= lo && g > zero) || (v >= hi && g < zero);
        match *self {
            Update::Scale(a) => {
                let a = T::of(a);
                y.iter_mut().for_each(|v| *v = a * *v)
            }
            Update::Axpy(a) => {
                let a = T::of(a);
                each1(y, x0, |v, p| v + a * p)
            }
            Update::SetScaled(a) => {
                let a = T::of(a);
                each1(y, x0, |_, p| a * p)
            }
            Update::SetDifference => each2(y, x0, x1, |_, p, q| p - q),
            Update::Lerp(a) => {
                let a = T::of(a);
                each1(y, x0, |v, p| v + a * (p - v))
            }
            Update::DecaySquare(a, b) => {
                let (a, b) = (T::of(a), T::of(b));
                each1(y, x0, |v, p| a * v + b * p * p)
            }
            Update::AdamStep { a, c, eps } => {
                let (a, c, eps) = (T::of(a), T::of(c), T::of(eps));
                each2(y, x0, x1, |v, m, s| v - a * (m / (s.sqrt() / c + eps)))
            }
            Update::Project(b) => {
                let (lo, hi) = bounds(b);
                y.iter_mut().for_each(|v| *v = v.clamp_to(lo, hi));
            }
            Update::SetFree(b, a) => {
                let (lh, a) = (bounds(b), T::of(a));
                each2(
                    y,
                    x0,
                    x1,
                    |_, p, g| if held(lh, p, g) { zero } else { a * g },
                )
            }
            Update::ZeroHeld(b) => {
                let lh = bounds(b);
                each2(y, x0, x1, |v, p, g| if held(lh, p, g) { zero } else { v })
            }
            Update::SetAlongPath(None, a) => {
                let a = T::of(a);
                each2(y, x0, x1, |_, p, d| p + a * d)
            }
            Update::SetAlongPath(Some(b), a) => {
                let ((lo, hi), a) = (bounds(b), T::of(a));
                each2(y, x0, x1, |_, p, d| (p + a * d).clamp_to(lo, hi))
            }
        }
    }

    /// In place over host storage, chunks in parallel.
    fn run(&self, y: &mut CpuStorage, ly: &Layout, xs: &[(&CpuStorage, &Layout)]) -> Result<()> {
        match y {
            CpuStorage::F32(y) => self.run_typed(y, ly, xs),
            CpuStorage::F64(y) => self.run_typed(y, ly, xs),
            _ => {
                Err(candle_core::Error::Msg(format!("{}: not a float buffer", self.name())).into())
            }
        }
    }

    fn run_typed<T: Real>(
        &self,
        y: &mut [T],
        ly: &Layout,
        xs: &[(&CpuStorage, &Layout)],
    ) -> Result<()> {
        let misfit = || candle_core::Error::Msg(format!("{}: operands do not match", self.name()));
        let (start, end) = ly.contiguous_offsets().ok_or_else(misfit)?;
        let mut sources: [&[T]; 2] = [&[], &[]];
        for (slot, (storage, layout)) in sources.iter_mut().zip(xs) {
            let (a, b) = layout.contiguous_offsets().ok_or_else(misfit)?;
            *slot = T::host(storage)
                .ok_or_else(misfit)?
                .get(a..b)
                .ok_or_else(misfit)?;
        }
        let plane = (end - start) / 3;
        y[start..end]
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(k, chunk)| {
                let range = k * CHUNK..k * CHUNK + chunk.len();
                self.apply(
                    range.start,
                    plane,
                    chunk,
                    sources.map(|s| window(s, &range)),
                );
            });
        Ok(())
    }

    /// The same update as tensor ops (a GPU, or tensors the host path does not take).
    fn on_device(&self, y: &Tensor, x: &[&Tensor]) -> Result<Tensor> {
        Ok(match *self {
            Update::Scale(a) => (y * a)?,
            Update::Axpy(a) => (y + (x[0] * a)?)?,
            Update::SetScaled(a) => (x[0] * a)?,
            Update::SetDifference => (x[0] - x[1])?,
            Update::Lerp(a) => (y + ((x[0] - y)? * a)?)?,
            Update::DecaySquare(a, b) => ((y * a)? + (x[0].sqr()? * b)?)?,
            Update::AdamStep { a, c, eps } => {
                let denom = ((x[1].sqrt()? / c)? + eps)?;
                (y - ((x[0] / denom)? * a)?)?
            }
            Update::Project(b) => b.project(y)?,
            Update::SetFree(b, a) => ((x[1] * b.free(x[0], x[1])?)? * a)?,
            Update::ZeroHeld(b) => (y * b.free(x[0], x[1])?)?,
            Update::SetAlongPath(None, a) => (x[0] + (x[1] * a)?)?,
            Update::SetAlongPath(Some(b), a) => b.project(&(x[0] + (x[1] * a)?)?)?,
        })
    }
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        Update::name(self)
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        self.run(s, l, &[])
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        Update::name(self)
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        self.run(s1, l1, &[(s2, l2)])
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl InplaceOp3 for Update<'_> {
    fn name(&self) -> &'static str {
        Update::name(self)
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        self.run(s1, l1, &[(s2, l2), (s3, l3)])
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// Updates the optimiser-owned `y` from `x`: in place on the host, by replacing `y` with
/// the result of tensor ops elsewhere. Box-aware updates need a 1x3xHxW `y`.
fn update(y: &mut Tensor, x: &[&Tensor], op: Update<'_>) -> Result<()> {
    let boxed = matches!(
        op,
        Update::Project(_)
            | Update::SetFree(..)
            | Update::ZeroHeld(_)
            | Update::SetAlongPath(Some(_), _)
    );
    if all_on_host(y, x) && (!boxed || matches!(y.dims(), [1, 3, _, _])) {
        match x {
            [] => y.inplace_op1(&op)?,
            [a] => y.inplace_op2(a, &op)?,
            [a, b] => y.inplace_op3(a, b, &op)?,
            _ => unreachable!("at most two sources"),
        }
        return Ok(());
    }
    *y = op.on_device(y, x)?;
    Ok(())
}

/// y *= a
pub fn scale(y: &mut Tensor, a: f64) -> Result<()> {
    update(y, &[], Update::Scale(a))
}

/// y += a x
pub fn axpy(y: &mut Tensor, a: f64, x: &Tensor) -> Result<()> {
    update(y, &[x], Update::Axpy(a))
}

/// y = a x
pub fn set_scaled(y: &mut Tensor, a: f64, x: &Tensor) -> Result<()> {
    update(y, &[x], Update::SetScaled(a))
}

/// y = a - b
pub fn set_difference(y: &mut Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
    update(y, &[a, b], Update::SetDifference)
}

/// y += a (x - y)
pub fn lerp(y: &mut Tensor, a: f64, x: &Tensor) -> Result<()> {
    update(y, &[x], Update::Lerp(a))
}

/// y = a y + b x²
pub fn decay_square(y: &mut Tensor, a: f64, b: f64, x: &Tensor) -> Result<()> {
    update(y, &[x], Update::DecaySquare(a, b))
}

/// y -= a m / (sqrt(v) / c + eps)
pub fn adam_step(y: &mut Tensor, m: &Tensor, v: &Tensor, a: f64, c: f64, eps: f64) -> Result<()> {
    update(y, &[m, v], Update::AdamStep { a, c, eps })
}

/// y = the nearest point of the box to y.
pub fn project(y: &mut Tensor, bounds: &PixelBox) -> Result<()> {
    update(y, &[], Update::Project(bounds))
}

/// y = a g on the coordinates of `x` no bound holds against `g`, 0 elsewhere.
pub fn set_free(y: &mut Tensor, bounds: &PixelBox, a: f64, x: &Tensor, g: &Tensor) -> Result<()> {
    update(y, &[x, g], Update::SetFree(bounds, a))
}

/// y = 0 on the coordinates of `x` a bound holds against `g`.
pub fn zero_held(y: &mut Tensor, bounds: &PixelBox, x: &Tensor, g: &Tensor) -> Result<()> {
    update(y, &[x, g], Update::ZeroHeld(bounds))
}

/// y = `from + t d`, or the box's nearest point to it.
pub fn set_along_path(
    y: &mut Tensor,
    bounds: Option<&PixelBox>,
    from: &Tensor,
    t: f64,
    d: &Tensor,
) -> Result<()> {
    update(y, &[from, d], Update::SetAlongPath(bounds, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// A 1x3xHxW tensor with values spread over and beyond the Caffe box.
    fn spread(dtype: DType, seed: usize, side: usize) -> Tensor {
        let n = 3 * side * side;
        let v: Vec<f32> = (0..n)
            .map(|i| (((i * 37 + seed * 101) % 401) as f32) - 190.0)
            .collect();
        Tensor::from_vec(v, (1, 3, side, side), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Every operation gives the same values on the host path (in place, chunked, in
    /// parallel: 3 x 80 x 80 spans several chunks) as the tensor ops a GPU runs.
    #[test]
    fn host_updates_match_the_tensor_ops() {
        let bounds = PixelBox::of(&crate::model::InputConvention::caffe());
        for dtype in [DType::F32, DType::F64] {
            let (a, b) = (spread(dtype, 1, 80), spread(dtype, 2, 80));
            let positive = (b.abs().unwrap() + 1.0).unwrap();
            let ops: Vec<(Update<'_>, Vec<&Tensor>)> = vec![
                (Update::Scale(-0.5), vec![]),
                (Update::Axpy(0.25), vec![&a]),
                (Update::SetScaled(-1.0), vec![&a]),
                (Update::SetDifference, vec![&a, &b]),
                (Update::Lerp(0.1), vec![&a]),
                (Update::DecaySquare(0.999, 0.001), vec![&a]),
                (
                    Update::AdamStep {
                        a: 3.0,
                        c: 0.7,
                        eps: 1e-8,
                    },
                    vec![&a, &positive],
                ),
                (Update::Project(&bounds), vec![]),
                (Update::SetFree(&bounds, -1.0), vec![&a, &b]),
                (Update::ZeroHeld(&bounds), vec![&a, &b]),
                (Update::SetAlongPath(Some(&bounds), 0.3), vec![&a, &b]),
                (Update::SetAlongPath(None, -0.3), vec![&a, &b]),
            ];
            for (op, sources) in ops {
                let mut host = spread(dtype, 3, 80).copy().unwrap();
                let expected = values(&op.on_device(&host, &sources).unwrap());
                update(&mut host, &sources, op).unwrap();
                let got = values(&host);
                let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (g - e).abs() <= tolerance * e.abs().max(1.0),
                        "{dtype:?} {op:?}: value {i} is {g}, tensor ops give {e}"
                    );
                }
            }
            // Reductions agree with the tensor ops too.
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
            let ab = values(&(&a * &b).unwrap()).iter().sum::<f64>();
            assert!(close(dot(&a, &b).unwrap(), ab));
            assert!(close(
                max_abs(&a).unwrap(),
                values(&a).iter().fold(0.0, |m, v| v.abs().max(m))
            ));
            assert!(close(
                abs_sum(&a).unwrap(),
                values(&a).iter().map(|v| v.abs()).sum()
            ));
            let inside = (&b * bounds.inside(&a).unwrap()).unwrap();
            let expected = values(&(&a * &inside).unwrap()).iter().sum::<f64>();
            assert!(close(dot_inside(&a, &b, &a, &bounds).unwrap(), expected));
        }
    }

    /// Reductions give the same bits whatever the thread count: chunks are fixed and
    /// combine in order (rayon's `reduce` combined in the order its splits took).
    #[test]
    fn reductions_do_not_depend_on_the_thread_count() {
        let bounds = PixelBox::of(&crate::model::InputConvention::caffe());
        // 3 x 300 x 300 values: 17 chunks, irrational-looking so every sum rounds. Float64:
        // float32 chunk sums carry so few bits that adding them in float64 is exact in any
        // order, float64 ones round differently in another order.
        let wave = |seed: f64| {
            let v: Vec<f64> = (0..3 * 300 * 300)
                .map(|i| 200.0 * (seed + 0.618_033_99 * i as f64).sin())
                .collect();
            Tensor::from_vec(v, (1, 3, 300, 300), &Device::Cpu).unwrap()
        };
        let (a, b) = (wave(0.3), wave(1.7));
        let all = || {
            [
                dot(&a, &b).unwrap(),
                abs_sum(&a).unwrap(),
                max_abs(&b).unwrap(),
                dot_inside(&a, &b, &a, &bounds).unwrap(),
            ]
            .map(f64::to_bits)
        };
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(all)
        };
        let one = on(1);
        for threads in [2, 3, 5, 8] {
            for _ in 0..4 {
                assert_eq!(on(threads), one, "{threads} threads");
            }
        }
    }

    /// Updates write the destination buffer itself, not a copy.
    #[test]
    fn host_updates_are_in_place() {
        let mut y = spread(DType::F32, 1, 8).copy().unwrap();
        let alias = y.clone();
        axpy(&mut y, 2.0, &spread(DType::F32, 2, 8)).unwrap();
        assert_eq!(values(&alias), values(&y));
    }
}
