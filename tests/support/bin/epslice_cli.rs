//! The `epslice` command (without `demo`) built inside the test crate, so process-level tests
//! (leader election, graceful shutdown, `kubectl epslice verify`) can spawn it through
//! `CARGO_BIN_EXE_epslice-cli`: the same code as the `epslice` binary (`epslice::cli`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The allocator of the `epslice` binary (see its `main.rs`), so that process tests and the
/// benchmark run what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "epslice")]
struct Cli {
    #[command(subcommand)]
    command: epslice::cli::Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    epslice::cli::dispatch(Cli::parse().command).await
}
