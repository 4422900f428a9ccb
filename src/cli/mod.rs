//! The binary's subcommands, one file each, over shared argument groups in `args`.

pub mod args;
pub mod bench;
pub mod bench_frames;
pub mod bench_quality;
pub mod bench_shot;
pub mod client;
pub mod connect;
pub mod exit;
pub mod frame_pattern;
pub mod frame_range;
pub mod frames;
pub mod loadgen;
pub mod output_file;
pub mod progress;
pub mod retry;
pub mod run;
pub mod sequence;
pub mod serve;
pub mod server_info;
pub mod styles;
pub mod submit_sequence;
pub mod torch;
pub mod toward;
pub mod view_lut;
