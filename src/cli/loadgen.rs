//! `stylize loadgen`: drives N concurrent clients against a server with a bounded number of
//! small requests and prints what they saw, by outcome, with latencies.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::bench::loadgen::{self, LoadPlan, LoadReport};
use stylize::server::proto;

use super::args::{DEMO_CONTENT, DEMO_STYLE, read_flag_file};
use super::connect::ConnectArgs;

#[derive(Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests in all, shared by the clients.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Content image. Default: the embedded demo photo.
    #[arg(long)]
    content: Option<PathBuf>,
    /// Style image. Default: the embedded demo painting.
    #[arg(long)]
    style: Option<PathBuf>,
    /// Output size of each job (long side, pixels).
    #[arg(long, default_value_t = 32)]
    size: u32,
    /// Adam iterations per job.
    #[arg(long, default_value_t = 2)]
    iterations: u32,
}

fn image(flag: &str, path: &Option<PathBuf>, demo: &[u8]) -> Result<Vec<u8>> {
    match path {
        Some(path) => read_flag_file(flag, path),
        None => Ok(demo.to_vec()),
    }
}

pub fn loadgen(args: LoadgenArgs) -> Result<()> {
    if args.clients == 0 || args.requests == 0 {
        bail!("--clients and --requests must be at least 1");
    }
    let request = proto::StylizeRequest {
        request_id: String::new(),
        content: image("content", &args.content, DEMO_CONTENT)?,
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(image(
                "style",
                &args.style,
                DEMO_STYLE,
            )?)),
        }],
        blend: vec![],
        options: Some(proto::Options {
            size: args.size,
            iterations: args.iterations,
            optimizer: proto::Optimizer::Adam as i32,
            ..Default::default()
        }),
    };
    let plan = LoadPlan {
        clients: args.clients,
        requests: args.requests,
        request,
        token: args.connect.token()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let channel = args.connect.channel().await?;
        Ok::<_, anyhow::Error>(loadgen::run(channel, plan).await)
    })?;
    print_report(&report);
    if report.failures() > 0 {
        bail!(
            "{} of {} requests neither completed nor were refused for load",
            report.failures(),
            report.total()
        );
    }
    Ok(())
}

fn print_report(report: &LoadReport) {
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "{} requests in {seconds:.2}s ({:.1} completed/s)",
        report.total(),
        report.completed_seconds.len() as f64 / seconds.max(1e-9)
    );
    for (outcome, count) in &report.outcomes {
        println!("  {outcome:<20} {count}");
    }
    let line = |label: &str, samples: &[f64]| {
        let q =
            |p| crate::bench::quantile(samples, p).map_or("-".to_string(), |s| format!("{s:.3}s"));
        println!(
            "  {label:<20} p50 {}  p95 {}  max {}",
            q(0.5),
            q(0.95),
            q(1.0)
        );
    };
    line("completed latency", &report.completed_seconds);
    line("refusal latency", &report.refused_seconds);
}
