//! `stylize server-info`: asks a server what it is (ServerInfo) and prints it, one fact a
//! line.

use anyhow::Result;
use clap::Args;

use stylize::server::proto::{ServerInfoRequest, ServerInfoResponse};

use super::client::{connect, runtime, status_error};
use super::connect::ConnectArgs;

#[derive(Args)]
pub struct ServerInfoArgs {
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(args: ServerInfoArgs) -> Result<()> {
    let mut request = tonic::Request::new(ServerInfoRequest {});
    args.connect.authorize(&mut request)?;
    let info = runtime()?.block_on(async {
        let mut client = connect(&args.connect).await?;
        client
            .server_info(request)
            .await
            .map_err(status_error)
            .map(|response| response.into_inner())
    })?;
    print!("{}", lines(&info));
    Ok(())
}

/// The answer as `name: value` lines.
pub fn lines(info: &ServerInfoResponse) -> String {
    let mut out = format!(
        "version: {}\ncommit: {}\nengine: {}\nprecompute: {}\ndevice: {}\nregistry: {}\n\
         workers: {}\nmax queue: {}\nmemory budget: {}\n",
        info.version,
        info.commit,
        info.engine,
        info.precompute,
        info.device,
        info.registry,
        info.workers,
        info.max_queue,
        match info.memory_budget_bytes {
            0 => "none".to_string(),
            bytes => format!("{} MiB", bytes >> 20),
        }
    );
    if let Some(limits) = &info.limits {
        out.push_str(&format!(
            "max pixels: {}\nmax iterations: {}\nmax styles: {}\nmax message: {} MiB\n\
             max job: {}\nmax open shots: {}\n",
            limits.max_pixels,
            limits.max_iterations,
            limits.max_styles,
            limits.max_message_bytes >> 20,
            match limits.max_job_seconds {
                0.0 => "none".to_string(),
                seconds => format!("{seconds} s"),
            },
            limits.max_open_shots
        ));
    }
    for preset in &info.presets {
        out.push_str(&format!(
            "preset {}: {} scales ({} below 128 px, {} from 1024 px), {} iterations each, \
             tolerance {}, history up to {}\n",
            preset.name,
            preset.scales,
            preset.scales_below_128,
            preset.scales_from_1024,
            preset.iterations,
            preset.tolerance,
            preset.max_history
        ));
    }
    out
}
