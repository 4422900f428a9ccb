//! Conversion between the wire types and core types, with validation that names the
//! offending request field. No maths here: images are decoded and options checked, nothing
//! more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::proto;
use crate::cache::Lookup;
use crate::cache::view_luts::{Found, ViewLutCache};
use crate::colour::{Interpolation, View};
use crate::engine::optim::LineSearch;
use crate::engine::{LossBreakdown, StopReason};
use crate::error::{Error, Result};
use crate::exr_file::ExrFile;
use crate::exr_file::Transfer;
use crate::image_io::{self, Encoding};
use crate::model::Layer;
use crate::passthrough::{Fields, Passthrough};
use crate::registry::StyleRegistry;
use crate::render::preset::Quality;
use crate::render::{
    GivenOptions, InitChoice, OptimizerChoice, RenderOptions, RenderRequest, Styling,
};
use crate::scheduler::{JobEvent, JobSpec};

/// Request limits checked before any work is queued.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decoded image (content, style, init) and largest output, in pixels.
    pub max_pixels: u64,
    /// Largest iterations x scales.
    pub max_iterations: usize,
    pub max_styles: usize,
    /// Largest request message.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 2048 * 2048,
            max_iterations: 10_000,
            max_styles: 8,
            max_message_bytes: 64 << 20,
        }
    }
}

/// Maps a core option name to the request field that carries it.
fn request_field(field: &str) -> String {
    let top = [
        "content",
        "styles",
        "blend",
        "request_id",
        "image",
        "options",
        "frames",
        "setup",
        "sequence",
    ];
    let is_top = |t: &&str| {
        field == *t
            || field
                .strip_prefix(*t)
                .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
    };
    if top.iter().any(is_top) {
        field.to_string()
    } else {
        format!("options.{field}")
    }
}

/// Motion as the wire's flow field (offsets per pixel).
impl From<crate::motion::Motion> for proto::Motion {
    fn from(motion: crate::motion::Motion) -> Self {
        proto::Motion {
            source: Some(proto::motion::Source::Flow(proto::Flow {
                width: motion.width as u32,
                height: motion.height as u32,
                dx: motion.dx,
                dy: motion.dy,
            })),
        }
    }
}

/// Renames a RegisterStyle error's field to its request path: the options it carries are
/// top-level fields there (`size`, `style_scale`, `scales`, `style_layers`, `image`).
pub fn in_registration(err: Error) -> Error {
    match err {
        Error::InvalidOption { field, reason } => Error::InvalidOption {
            field: field.strip_prefix("options.").unwrap_or(&field).to_string(),
            reason,
        },
        Error::UnknownLayer(name) => {
            Error::invalid("style_layers", format!("unknown layer `{name}`"))
        }
        other => other,
    }
}

/// Renames an error's field from core names to request field paths.
pub fn in_request(err: Error) -> Error {
    match err {
        Error::InvalidOption { field, reason } => Error::InvalidOption {
            field: request_field(&field),
            reason,
        },
        Error::UnknownLayer(name) => {
            Error::invalid("options.layers", format!("unknown layer `{name}`"))
        }
        other => other,
    }
}

/// Decodes one image field after checking its header against the pixel limit.
/// The style a request names in `field`: the image its name points at now.
pub fn resolve_name(
    registry: &StyleRegistry,
    name: &str,
    field: &str,
    limits: &Limits,
) -> Result<image::RgbImage> {
    crate::registry::names::check_name(field, name)?;
    match registry.resolve_name(name, |bytes| decode_field(bytes, field, limits))? {
        Some(Ok((_, image))) => Ok(Arc::unwrap_or_clone(image)),
        Some(Err(key)) => Err(Error::invalid(
            field,
            format!(
                "`{name}` points at style {key}, which is no longer registered (expired or evicted): register it again"
            ),
        )),
        None => Err(Error::invalid(
            field,
            format!(
                "`{}` is not a registered style name (RegisterStyle with a name first)",
                crate::error::quoted(name)
            ),
        )),
    }
}

pub fn decode_field(bytes: &[u8], field: &str, limits: &Limits) -> Result<RgbImage> {
    decode_field_with(bytes, field, limits, crate::exr_file::Transfer::SceneLinear)
}

/// `decode_field`, OpenEXR values read through `transfer`.
pub fn decode_field_with(
    bytes: &[u8],
    field: &str,
    limits: &Limits,
    transfer: crate::exr_file::Transfer,
) -> Result<RgbImage> {
    image_io::decode_field(bytes, field, limits.max_pixels, transfer)
}

/// Refuses an empty image, or one whose header gives more pixels than the limit.
pub fn check_pixels(bytes: &[u8], field: &str, limits: &Limits) -> Result<()> {
    image_io::check_pixels(bytes, field, limits.max_pixels)
}

pub use image_io::in_field;

/// Layers and weights as the wire lists them (empty: the contract's, filled in later).
pub fn layers(field: &str, given: &[proto::LayerWeight]) -> Result<Vec<(Layer, f64)>> {
    given
        .iter()
        .map(|lw| {
            let layer = lw.layer.parse().map_err(|_| {
                Error::invalid(
                    field,
                    format!(
                        "unknown layer `{}` (expected relu1_1 .. relu5_4)",
                        crate::error::quoted(&lw.layer)
                    ),
                )
            })?;
            Ok((layer, lw.weight))
        })
        .collect()
}

/// Complete options from the wire's (the init image is the caller's).
pub fn options(o: &proto::Options) -> Result<RenderOptions> {
    given(o)?.resolve()
}

/// What the wire's options give (the init image is the caller's): 0 and unset fields are
/// "not given".
pub fn given(o: &proto::Options) -> Result<GivenOptions> {
    let optimizer = match proto::Optimizer::try_from(o.optimizer) {
        Ok(proto::Optimizer::Unspecified | proto::Optimizer::Lbfgs) => OptimizerChoice::Lbfgs,
        Ok(proto::Optimizer::Adam) => OptimizerChoice::Adam,
        Err(_) => return Err(unknown("options.optimizer", o.optimizer)),
    };
    let quality = match proto::Quality::try_from(o.quality) {
        Ok(proto::Quality::Unspecified) => None,
        Ok(proto::Quality::Draft) => Some(Quality::Draft),
        Ok(proto::Quality::Standard) => Some(Quality::Standard),
        Ok(proto::Quality::Final) => Some(Quality::Final),
        Err(_) => return Err(unknown("options.quality", o.quality)),
    };
    let line_search = match proto::LineSearch::try_from(o.line_search) {
        Ok(proto::LineSearch::Unspecified | proto::LineSearch::StrongWolfe) => {
            LineSearch::StrongWolfe
        }
        Ok(proto::LineSearch::None) => LineSearch::Fixed,
        Err(_) => return Err(unknown("options.line_search", o.line_search)),
    };
    let given_count = |v: u32| (v > 0).then_some(v as usize);
    Ok(GivenOptions {
        size: (o.size > 0).then_some(o.size),
        quality,
        iterations: given_count(o.iterations),
        scales: given_count(o.scales),
        optimizer,
        learning_rate: o.learning_rate,
        lbfgs_history: o.lbfgs_history as usize,
        content_weight: o.content_weight,
        style_weight: o.style_weight,
        tv_weight: o.tv_weight,
        content_layers: layers("options.content_layers", &o.content_layers)?,
        style_layers: layers("options.style_layers", &o.style_layers)?,
        style_scale: o.style_scale,
        init: InitChoice::Content,
        seed: o.seed,
        preserve_colors: o.preserve_colors,
        preview_every: o.preview_interval as usize,
        tile_size: (o.tile_size > 0).then_some(o.tile_size),
        unbounded: o.unbounded,
        line_search,
        tolerance: o.tolerance,
        time_budget_seconds: o.time_budget_seconds,
    })
}

fn unknown(field: &str, value: i32) -> Error {
    Error::invalid(field, format!("unknown value {value}"))
}

fn encoding(o: &proto::Options) -> Result<Encoding> {
    match proto::ImageFormat::try_from(o.output_format) {
        Ok(proto::ImageFormat::Unspecified | proto::ImageFormat::Png) => Ok(Encoding::Png),
        Ok(proto::ImageFormat::Exr) => Ok(Encoding::Exr(Transfer::default())),
        Ok(proto::ImageFormat::Png16) => Ok(Encoding::Png16),
        Ok(proto::ImageFormat::Jpeg) => {
            let quality = if o.jpeg_quality == 0 {
                95
            } else {
                o.jpeg_quality
            };
            if quality > 100 {
                return Err(Error::invalid(
                    "options.jpeg_quality",
                    format!("{quality} is outside 1..=100"),
                ));
            }
            Ok(Encoding::Jpeg {
                quality: quality as u8,
            })
        }
        Err(_) => Err(Error::invalid(
            "options.output_format",
            format!("unknown value {}", o.output_format),
        )),
    }
}

/// Checks the size and iteration limits of `options`.
pub fn check_limits(options: &RenderOptions, limits: &Limits) -> Result<()> {
    check_sizes(options, limits)?;
    let total = options.iterations.saturating_mul(options.scales);
    if total > limits.max_iterations {
        return Err(Error::invalid(
            "options.iterations",
            format!(
                "{} iterations x {} scales exceeds the limit of {}",
                options.iterations, options.scales, limits.max_iterations
            ),
        ));
    }
    Ok(())
}

/// Checks the pixel limits of `options` (all a style registration has: it runs no
/// iterations).
pub fn check_sizes(options: &RenderOptions, limits: &Limits) -> Result<()> {
    if (options.size as u64).pow(2) > limits.max_pixels {
        return Err(Error::invalid(
            "options.size",
            format!(
                "{} squared exceeds the limit of {} pixels",
                options.size, limits.max_pixels
            ),
        ));
    }
    let style_side = (options.size as f64 * options.style_scale).round();
    if style_side.is_finite() && style_side * style_side > limits.max_pixels as f64 {
        return Err(Error::invalid(
            "options.style_scale",
            format!(
                "styles rendered at {style_side} px (size x style_scale) exceed the limit of {} pixels",
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

/// What a job takes from a message besides its content: a StylizeRequest's or a shot's
/// setup's styles, blend and options.
pub struct JobParts {
    pub styles: Vec<proto::StyleInput>,
    pub blend: Vec<f64>,
    pub options: Option<proto::Options>,
}

impl From<proto::SequenceSetup> for JobParts {
    fn from(setup: proto::SequenceSetup) -> Self {
        JobParts {
            styles: setup.styles,
            blend: setup.blend,
            options: setup.options,
        }
    }
}

/// A job's settings from a message, all but its content: the styling and how its results
/// are sent. A still renders one content with it; a shot's frames each bring theirs.
#[derive(Clone)]
pub struct JobTemplate {
    pub request_id: String,
    pub styling: Styling,
    pub output: Encoding,
    pub progress_every: usize,
    pub deadline: Option<Instant>,
    pub max_result_bytes: Option<usize>,
}

impl JobTemplate {
    /// The job rendering `content` with these settings, validated with it (errors name the
    /// request's fields).
    pub fn into_job(self, content: impl Into<crate::render::Content>) -> Result<JobSpec> {
        let request = RenderRequest {
            content: content.into(),
            styles: self.styling.styles,
            blend: self.styling.blend,
            options: self.styling.options,
        };
        request.validate().map_err(in_request)?;
        Ok(JobSpec {
            request_id: self.request_id,
            request,
            output: self.output,
            progress_every: self.progress_every,
            deadline: self.deadline,
            max_result_bytes: self.max_result_bytes,
            temporal: None,
            counts_as_request: true,
            passthrough: None,
            view: None,
        })
    }

    /// The job of a shot's frame `index`, whose request (its content, and the temporal
    /// term) the shot's state made; the shot's stream counts as the request, not its frames.
    pub fn frame_job(
        &self,
        index: usize,
        request: RenderRequest,
        temporal: Option<crate::engine::temporal::TemporalTarget>,
    ) -> JobSpec {
        JobSpec {
            request_id: format!("{}/frame-{index}", self.request_id),
            request,
            output: self.output,
            progress_every: self.progress_every,
            deadline: self.deadline,
            max_result_bytes: self.max_result_bytes,
            temporal,
            counts_as_request: false,
            passthrough: None,
            view: None,
        }
    }
}

/// Decodes and validates a request into a job. Runs on a blocking thread (decoding is CPU).
pub fn job_spec(
    request: proto::StylizeRequest,
    request_id: String,
    deadline: Option<Instant>,
    limits: &Limits,
    registry: &StyleRegistry,
    views: &ViewLutCache,
) -> Result<JobSpec> {
    let named = request.options.as_ref().map_or("", |o| o.view.as_str());
    let keep_passes = request.options.as_ref().is_some_and(|o| o.keep_passes);
    let transfer = view(named, &request.content)?;
    let wire_lut = request.options.as_ref().and_then(|o| o.view_lut.as_ref());
    let studio = wire_lut
        .map(|lut| studio_view(lut, &request.content, views))
        .transpose()?;
    let content = match &studio {
        Some(studio) => {
            image_io::check_pixels(&request.content, "content", limits.max_pixels)?;
            let file =
                ExrFile::open(&request.content, "content").map_err(|e| in_field("content", e))?;
            let display = file
                .display_through(studio)
                .map_err(|e| in_field("content", e))?;
            crate::render::Content::Float(display)
        }
        None => image_io::decode_content_field(
            &request.content,
            "content",
            limits.max_pixels,
            transfer,
        )?,
    };
    let parts = JobParts {
        styles: request.styles,
        blend: request.blend,
        options: request.options,
    };
    let mut template = job_template(parts, request_id, deadline, limits, registry)?;
    template.output = template.output.through(transfer);
    let mut job = template.into_job(content)?;
    let content = &job.request.content;
    let size = image_io::fit_longest(content.width(), content.height(), job.request.options.size);
    job.passthrough = Passthrough::of(
        &request.content,
        "content",
        keep_passes,
        job.output,
        size,
        Fields {
            output: "options.output_format",
            keep_passes: "options.keep_passes",
            size: "options.size",
        },
    )?;
    job.view = studio;
    Ok(job)
}

/// A studio's view a request sends (`options.view_lut`), from `views` when it was parsed
/// before; refused for content that is not OpenEXR (a view turns light into a picture).
pub fn studio_view(lut: &proto::ViewLut, content: &[u8], views: &ViewLutCache) -> Result<View> {
    if !crate::exr_file::is_exr(content) {
        return Err(Error::invalid(
            VIEW_LUT,
            "a view turns scene-linear light into a picture; the content is not OpenEXR",
        ));
    }
    parse_view_lut(lut, views)
}

const VIEW_LUT: &str = "options.view_lut";

/// The pair `options.view_lut` sends, from `views` when it was parsed before (counted in
/// `stylize_view_luts_total`).
pub fn parse_view_lut(lut: &proto::ViewLut, views: &ViewLutCache) -> Result<View> {
    const FIELD: &str = VIEW_LUT;
    let interpolation = match lut.interpolation.as_str() {
        "" => Interpolation::default(),
        name => name
            .parse()
            .map_err(|e: String| Error::invalid(format!("{FIELD}.interpolation"), e))?,
    };
    let (pair, found) = views.pair(FIELD, &lut.forward, &lut.inverse, interpolation)?;
    let found = match found {
        Found::Cached => "cached",
        Found::Parsed => "parsed",
    };
    metrics::counter!(crate::telemetry::metrics::VIEW_LUTS_TOTAL, "found" => found).increment(1);
    Ok(View::Lut(pair))
}

/// The view `named` (`options.view`), else the default for `content`'s kind.
pub fn view(named: &str, content: &[u8]) -> Result<Transfer> {
    match named {
        "" => Ok(Transfer::default_for(content)),
        name => Transfer::named("options.view", name),
    }
}

/// A job's settings from `parts`: styles decoded (or resolved by key) and options checked
/// against the limits; errors name the request's fields.
pub fn job_template(
    parts: JobParts,
    request_id: String,
    deadline: Option<Instant>,
    limits: &Limits,
    registry: &StyleRegistry,
) -> Result<JobTemplate> {
    checked_template(parts, request_id, deadline, limits, registry).map_err(in_request)
}

fn checked_template(
    request: JobParts,
    request_id: String,
    deadline: Option<Instant>,
    limits: &Limits,
    registry: &StyleRegistry,
) -> Result<JobTemplate> {
    let wire = request.options.unwrap_or_default();
    let mut options = given(&wire)?.resolve()?;
    check_limits(&options, limits)?;
    if request.styles.is_empty() {
        return Err(Error::invalid("styles", "at least one style is needed"));
    }
    if request.styles.len() > limits.max_styles {
        return Err(Error::invalid(
            "styles",
            format!(
                "{} styles exceed the limit of {}",
                request.styles.len(),
                limits.max_styles
            ),
        ));
    }
    let styles = request
        .styles
        .iter()
        .enumerate()
        .map(|(k, style)| match &style.source {
            Some(proto::style_input::Source::Image(bytes)) => {
                decode_field(bytes, &format!("styles[{k}].image"), limits)
            }
            Some(proto::style_input::Source::Key(key)) => {
                let field = format!("styles[{k}].key");
                if !StyleRegistry::is_key(key) {
                    return Err(Error::invalid(
                        field,
                        "not a style key (the 64 lowercase hex digits of the sha256 of the style's file)",
                    ));
                }
                registry
                    .resolve(key, |bytes| decode_field(bytes, &field, limits))?
                    .map(Arc::unwrap_or_clone)
                    .ok_or_else(|| {
                        Error::invalid(
                            &field,
                            format!(
                                "`{}` is not registered, or expired (RegisterStyle first)",
                                crate::error::quoted(key)
                            ),
                        )
                    })
            }
            Some(proto::style_input::Source::Name(name)) => {
                resolve_name(registry, name, &format!("styles[{k}].name"), limits)
            }
            None => Err(Error::invalid(
                format!("styles[{k}]"),
                "none of image, key and name is set",
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    options.init = match proto::Init::try_from(wire.init) {
        Ok(proto::Init::Unspecified | proto::Init::Content) => InitChoice::Content,
        Ok(proto::Init::Noise) => InitChoice::Noise,
        Ok(proto::Init::Image) => InitChoice::Image(decode_field(
            &wire.init_image,
            "options.init_image",
            limits,
        )?),
        Err(_) => {
            return Err(Error::invalid(
                "options.init",
                format!("unknown value {}", wire.init),
            ));
        }
    };
    Ok(JobTemplate {
        request_id,
        styling: Styling {
            styles,
            blend: request.blend,
            options,
        },
        output: encoding(&wire)?,
        progress_every: (wire.progress_interval as usize).max(1),
        deadline,
        max_result_bytes: Some(limits.max_message_bytes),
    })
}

pub fn losses(l: &LossBreakdown) -> proto::Losses {
    proto::Losses {
        total: l.total,
        content: l.content,
        style: l.style,
        tv: l.tv,
        temporal: l.temporal,
    }
}

/// The wire format of an encoding.
pub fn format(encoding: Encoding) -> i32 {
    match encoding {
        Encoding::Png => proto::ImageFormat::Png as i32,
        Encoding::Jpeg { .. } => proto::ImageFormat::Jpeg as i32,
        Encoding::Exr(_) => proto::ImageFormat::Exr as i32,
        Encoding::Png16 => proto::ImageFormat::Png16 as i32,
    }
}

pub fn lookup(l: Lookup) -> i32 {
    match l {
        Lookup::Hit => proto::CacheLookup::Hit as i32,
        Lookup::Miss => proto::CacheLookup::Miss as i32,
        Lookup::Joined => proto::CacheLookup::Joined as i32,
        Lookup::Shared => proto::CacheLookup::Shared as i32,
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The wire form of a scheduler event; a failure becomes the stream's final status.
pub fn event(event: JobEvent) -> std::result::Result<proto::StylizeEvent, tonic::Status> {
    use proto::stylize_event::Event;
    let event = match event {
        JobEvent::Queued { position } => Event::Queued(proto::Queued {
            position: position as u32,
        }),
        JobEvent::Started {
            worker,
            device,
            plan,
        } => Event::Started(proto::Started {
            worker,
            device,
            tiles: plan.tiles as u32,
            memory_estimate_bytes: plan.estimate,
            lbfgs_history: plan.history as u32,
            kept_stages: plan.kept_stages as u32,
        }),
        JobEvent::Progress { progress, eta } => Event::Progress(proto::Progress {
            iteration: progress.iteration as u32,
            total: progress.total as u32,
            scale: progress.scale as u32,
            losses: Some(losses(&progress.losses)),
            elapsed_seconds: seconds(progress.elapsed),
            eta_seconds: seconds(eta),
        }),
        JobEvent::Preview {
            iteration,
            image,
            encoding,
        } => Event::Preview(proto::Preview {
            iteration: iteration as u32,
            image,
            format: format(encoding),
        }),
        JobEvent::Finished(output) => Event::Result(proto::Result {
            image: output.image,
            format: format(output.encoding),
            width: output.width,
            height: output.height,
            losses: Some(losses(&output.losses)),
            delivered_losses: Some(losses(&output.delivered)),
            iterations: output.iterations as u32,
            timings: Some(proto::Timings {
                queue_wait_seconds: seconds(output.timings.queue_wait),
                style_precompute_seconds: seconds(output.timings.precompute),
                optimise_seconds: seconds(output.timings.optimise),
                encode_seconds: seconds(output.timings.encode),
            }),
            style_cache: output.style_cache.into_iter().map(lookup).collect(),
            stopped: match output.stopped {
                StopReason::Iterations => proto::StopReason::Iterations,
                StopReason::Tolerance => proto::StopReason::Tolerance,
                StopReason::TimeBudget => proto::StopReason::TimeBudget,
            } as i32,
        }),
        JobEvent::Failed(err) => return Err(super::status(in_request(err))),
    };
    Ok(proto::StylizeEvent { event: Some(event) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quality_preset_fills_what_the_request_leaves_unset() {
        let wire = proto::Options {
            size: 256,
            quality: proto::Quality::Standard as i32,
            ..Default::default()
        };
        let preset = Quality::Standard.preset(256);
        let chosen = options(&wire).unwrap();
        assert_eq!(
            (chosen.iterations, chosen.scales, chosen.stop.tolerance),
            (preset.iterations, preset.scales, Some(preset.tolerance))
        );
        assert_eq!(chosen.max_history, preset.max_history);
        let overridden = options(&proto::Options {
            iterations: 7,
            scales: 1,
            tolerance: 0.5,
            ..wire.clone()
        })
        .unwrap();
        assert_eq!(
            (
                overridden.iterations,
                overridden.scales,
                overridden.stop.tolerance
            ),
            (7, 1, Some(0.5))
        );
        // Without a preset, the contract's defaults.
        let contract = options(&proto::Options::default()).unwrap();
        assert_eq!((contract.iterations, contract.scales), (500, 1));
        assert_eq!(contract.stop.tolerance, None);
        let unknown = options(&proto::Options {
            quality: 9,
            ..Default::default()
        });
        assert!(unknown.unwrap_err().to_string().contains("options.quality"));
    }
}
