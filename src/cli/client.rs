//! `stylize submit`, `stylize register-style` and `stylize probe`: real clients of the gRPC
//! service.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use stylize::image_io::Encoding;
use stylize::registry::StyleRegistry;
use stylize::render::preset::Quality;
use stylize::server::proto::{self, stylizer_client::StylizerClient};
use stylize::server::routing::{STYLE_KEY_HEADER, retryable};

use super::args::{
    JobArgs, LineSearchArg, OptimizerArg, loss_message, parse_layers, read_flag_file,
};
use super::connect::ConnectArgs;
use super::progress::{ProgressArgs, Reporter, Step};
use super::retry::Attempt;
use super::view_lut::ViewLutArgs;

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Content image (PNG, JPEG or OpenEXR; its alpha passes through).
    #[arg(long)]
    content: PathBuf,
    /// Style image; repeat for a blend.
    #[arg(long = "style")]
    styles: Vec<PathBuf>,
    /// Key of a registered style (from `stylize register-style`); repeatable.
    #[arg(long = "style-key")]
    style_keys: Vec<String>,
    /// Name of a registered style (`stylize styles register --name`); repeatable.
    #[arg(long = "style-name")]
    style_names: Vec<String>,
    /// Blend weights, one per style (files first, then keys, then names), comma-separated.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    blend: Vec<f64>,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    view_lut: ViewLutArgs,
    /// A progress event every N iterations.
    #[arg(long, default_value_t = 1)]
    progress_interval: u32,
    /// Save a preview every N iterations into --previews.
    #[arg(long, default_value_t = 0)]
    preview_interval: u32,
    /// Folder for previews (created if missing).
    #[arg(long)]
    previews: Option<PathBuf>,
    /// Identifies the request in the server's logs.
    #[arg(long, default_value = "")]
    request_id: String,
    /// Output file: .png, .jpg/.jpeg or .exr.
    #[arg(long, default_value = "stylized.png")]
    out: PathBuf,
    /// Times to resend the request after a retryable failure (the server's RetryInfo: a full
    /// queue or a draining replica; UNAVAILABLE; or the connection lost mid-job), with
    /// jittered backoff from 1 s to 30 s; through a balancer (or to the next --server) it
    /// lands on another replica.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Args)]
pub struct RegisterStyleArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Style image (PNG or JPEG).
    #[arg(long)]
    style: PathBuf,
    /// Precompute for this output size.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// The style is rendered at size x style-scale (as the requests that use it will).
    #[arg(long, default_value_t = 1.0)]
    style_scale: f64,
    /// Coarse-to-fine scales of the requests that will use it (targets for each are kept).
    #[arg(long, default_value_t = 1)]
    scales: u32,
    /// Style layers, `name[:weight]`, comma-separated.
    #[arg(long, default_value = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")]
    style_layers: String,
    /// A name for the style (for example `vangogh/starry-night@v2`), which requests may
    /// send instead of the key (`--style-name`).
    #[arg(long)]
    pub(super) name: Option<String>,
    /// A label of the name, `key=value`; repeat for several.
    #[arg(long = "label", value_parser = super::styles::parse_label, requires = "name")]
    labels: Vec<(String, String)>,
    /// Re-point --name at this style if it points at another (refused otherwise).
    #[arg(long, requires = "name")]
    replace: bool,
}

fn layer_weights(flag: &str, spec: &str) -> Result<Vec<proto::LayerWeight>> {
    Ok(parse_layers(flag, spec)?
        .into_iter()
        .map(|(layer, weight)| proto::LayerWeight {
            layer: layer.to_string(),
            weight,
        })
        .collect())
}

/// The `--style` files, then the `--style-key`s, then the `--style-name`s, as the request's
/// styles (one needed).
pub(super) fn wire_styles(
    paths: &[PathBuf],
    keys: &[String],
    names: &[String],
) -> Result<Vec<proto::StyleInput>> {
    if paths.is_empty() && keys.is_empty() && names.is_empty() {
        bail!("--style, --style-key or --style-name: at least one style is needed");
    }
    let mut styles = Vec::with_capacity(paths.len() + keys.len() + names.len());
    for path in paths {
        let image = read_flag_file("style", path)?;
        styles.push(proto::style_input::Source::Image(image));
    }
    styles.extend(keys.iter().cloned().map(proto::style_input::Source::Key));
    styles.extend(names.iter().cloned().map(proto::style_input::Source::Name));
    Ok(styles
        .into_iter()
        .map(|source| proto::StyleInput {
            source: Some(source),
        })
        .collect())
}

pub(super) fn wire_options(job: &JobArgs, format: Encoding) -> Result<proto::Options> {
    let (init, init_image) = match job.init.as_str() {
        "content" => (proto::Init::Content, Vec::new()),
        "noise" => (proto::Init::Noise, Vec::new()),
        path => (proto::Init::Image, read_flag_file("init", Path::new(path))?),
    };
    Ok(proto::Options {
        size: job.size.unwrap_or(0),
        iterations: job.iterations.unwrap_or(0) as u32,
        optimizer: match job.optimizer {
            OptimizerArg::Lbfgs => proto::Optimizer::Lbfgs,
            OptimizerArg::Adam => proto::Optimizer::Adam,
        } as i32,
        learning_rate: job.lr,
        content_weight: job.content_weight,
        style_weight: job.style_weight,
        tv_weight: job.tv_weight,
        content_layers: layer_weights("content-layers", &job.content_layers)?,
        style_layers: layer_weights("style-layers", &job.style_layers)?,
        init: init as i32,
        init_image,
        seed: job.seed,
        preserve_colors: job.preserve_colors,
        style_scale: job.style_scale,
        scales: job.scales.unwrap_or(0) as u32,
        progress_interval: 0,
        preview_interval: 0,
        output_format: stylize::server::convert::format(format),
        jpeg_quality: 0,
        tile_size: job.tile_size.unwrap_or(0),
        lbfgs_history: job.lbfgs_history as u32,
        unbounded: job.unbounded,
        line_search: match job.line_search {
            LineSearchArg::StrongWolfe => proto::LineSearch::StrongWolfe,
            LineSearchArg::None => proto::LineSearch::None,
        } as i32,
        tolerance: job.tolerance,
        time_budget_seconds: job.time_budget_seconds,
        quality: match job.quality {
            None => proto::Quality::Unspecified,
            Some(Quality::Draft) => proto::Quality::Draft,
            Some(Quality::Standard) => proto::Quality::Standard,
            Some(Quality::Final) => proto::Quality::Final,
        } as i32,
        view: job.view.clone().unwrap_or_default(),
        keep_passes: job.keep_passes,
        view_lut: None,
    })
}

/// Sets the style-affinity header a load balancer routes on (deploy/envoy), when the
/// request has a style; the server ignores it.
pub(super) fn route<T>(request: &mut tonic::Request<T>, key: Option<&str>) -> Result<()> {
    if let Some(key) = key {
        let value = key
            .parse()
            .context("--style-key: not a valid header value")?;
        request.metadata_mut().insert(STYLE_KEY_HEADER, value);
    }
    Ok(())
}

pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(super::exit::ServerAnswer(status))
}

pub(super) async fn connect(
    args: &ConnectArgs,
) -> Result<StylizerClient<tonic::transport::Channel>> {
    Ok(StylizerClient::new(args.channel().await?)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let format = Encoding::from_path(&args.out)
        .context("--out")?
        .deepened(args.job.png16);
    let styles = wire_styles(&args.styles, &args.style_keys, &args.style_names)?;
    if args.preview_interval > 0 && args.previews.is_none() {
        bail!("--previews: a folder is needed with --preview-interval");
    }
    let content = read_flag_file("content", &args.content)?;
    let mut options = wire_options(&args.job, format)?;
    options.progress_interval = args.progress_interval;
    options.preview_interval = args.preview_interval;
    options.view_lut = args.view_lut.wire(&content)?;
    let routing_key = super::styles::routing_key(&args.connect, &styles)?;
    let message = proto::StylizeRequest {
        request_id: args.request_id.clone(),
        content,
        styles,
        blend: args.blend.clone(),
        options: Some(options),
    };
    let request = || -> Result<tonic::Request<proto::StylizeRequest>> {
        let mut request = tonic::Request::new(message.clone());
        route(&mut request, routing_key.as_deref())?;
        args.connect.authorize(&mut request)?;
        Ok(request)
    };
    if let Some(dir) = &args.previews {
        std::fs::create_dir_all(dir).with_context(|| format!("--previews: {}", dir.display()))?;
    }
    runtime()?.block_on(async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match stream_once(&args, attempt, request()?).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Failed(status)) if attempt <= args.retries && retryable(&status) => {
                    let wait = super::retry::backoff(attempt, &status);
                    super::retry::announce(attempt, &status, wait);
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Failed(status)) => return Err(status_error(status)),
                Err(Attempt::Broken(e)) => return Err(e),
            }
        }
    })
}

/// Sends the request once and follows its stream to the result.
async fn stream_once(
    args: &SubmitArgs,
    attempt: u32,
    request: tonic::Request<proto::StylizeRequest>,
) -> std::result::Result<(), Attempt> {
    let mut client = connect(&args.connect.for_attempt(attempt))
        .await
        .map_err(Attempt::connecting)?;
    let mut stream = client
        .stylize(request)
        .await
        .map_err(Attempt::Failed)?
        .into_inner();
    let (iterations, scales) = args.job.counts();
    let total = (iterations * scales) as u64;
    let reporter = Reporter::new(&args.progress, total)?;
    while let Some(event) = stream.message().await.map_err(Attempt::Failed)? {
        use proto::stylize_event::Event;
        match event.event {
            Some(Event::Queued(q)) => reporter.note(&format!("queued at position {}", q.position)),
            Some(Event::Started(s)) => reporter.note(&format!(
                "started on {} ({}), {} tile(s), ~{} MiB",
                s.worker,
                s.device,
                s.tiles,
                s.memory_estimate_bytes >> 20
            )),
            Some(Event::Progress(p)) => {
                let l = p.losses.unwrap_or_default();
                let losses = loss_message(p.scale as usize, l.total, l.content, l.style, l.tv);
                let step = Step {
                    frame: None,
                    scale: (p.scale as usize + 1, scales),
                    iteration: (p.iteration as usize, p.total as usize),
                    losses: &losses,
                };
                reporter.step(p.iteration as u64, &step);
            }
            Some(Event::Preview(p)) => {
                if let Some(dir) = &args.previews {
                    let ext = if p.format == proto::ImageFormat::Jpeg as i32 {
                        "jpg"
                    } else {
                        "png"
                    };
                    let path = dir.join(format!("preview-{:05}.{ext}", p.iteration));
                    std::fs::write(&path, &p.image).with_context(|| path.display().to_string())?;
                }
            }
            Some(Event::Result(result)) => {
                reporter.finish();
                std::fs::write(&args.out, &result.image)
                    .with_context(|| format!("--out: {}", args.out.display()))?;
                let t = result.timings.unwrap_or_default();
                println!(
                    "wrote {} ({}x{}) after {} iterations (stopped: {}), final loss {:.4e}, 8-bit image {:.4e}; queue {:.2}s precompute {:.2}s optimise {:.2}s encode {:.3}s",
                    args.out.display(),
                    result.width,
                    result.height,
                    result.iterations,
                    result.stopped().as_str_name(),
                    result.losses.unwrap_or_default().total,
                    result.delivered_losses.unwrap_or_default().total,
                    t.queue_wait_seconds,
                    t.style_precompute_seconds,
                    t.optimise_seconds,
                    t.encode_seconds
                );
                return Ok(());
            }
            None => {}
        }
    }
    Err(anyhow::anyhow!("the server closed the stream without a result").into())
}

pub fn register_style(args: RegisterStyleArgs) -> Result<()> {
    let image = read_flag_file("style", &args.style)?;
    // The registration goes where later requests for this style will: the same key.
    let routing_key = StyleRegistry::key_of(&image);
    let mut request = tonic::Request::new(proto::RegisterStyleRequest {
        image,
        size: args.size,
        style_scale: Some(args.style_scale),
        scales: args.scales,
        style_layers: layer_weights("style-layers", &args.style_layers)?,
        name: args.name.clone().unwrap_or_default(),
        labels: args.labels.iter().cloned().collect(),
        replace: args.replace,
    });
    request
        .metadata_mut()
        .insert(STYLE_KEY_HEADER, routing_key.parse()?);
    args.connect.authorize(&mut request)?;
    runtime()?.block_on(async {
        let mut client = connect(&args.connect).await?;
        let response = client
            .register_style(request)
            .await
            .map_err(status_error)?
            .into_inner();
        println!("{}", response.key);
        eprintln!("precomputed in {:.2}s", response.precompute_seconds);
        if !response.name.is_empty() {
            eprintln!("named {}", response.name);
        }
        if !response.previous_key.is_empty() {
            eprintln!("re-pointed from {}", response.previous_key);
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Seconds before the probe gives up.
    #[arg(long, default_value_t = 3.0)]
    timeout_seconds: f64,
}

/// Asks the server's grpc.health.v1 service whether it is serving; exits non-zero when it
/// is not, does not answer, or is draining (for container health checks).
pub fn probe(args: ProbeArgs) -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    if !(args.timeout_seconds.is_finite() && args.timeout_seconds > 0.0) {
        bail!("--timeout-seconds must be a number > 0");
    }
    let timeout = std::time::Duration::from_secs_f64(args.timeout_seconds);
    runtime()?.block_on(async {
        let check = async {
            let channel = args.connect.channel().await?;
            let mut client = HealthClient::new(channel);
            let response = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(status_error)?;
            Ok::<_, anyhow::Error>(response.into_inner().status)
        };
        let status = tokio::time::timeout(timeout, check)
            .await
            .with_context(|| {
                format!(
                    "--server {}: no answer within {timeout:?}",
                    args.connect.server
                )
            })??;
        if status == ServingStatus::Serving as i32 {
            println!("serving");
            Ok(())
        } else {
            bail!("not serving (status {status})")
        }
    })
}
