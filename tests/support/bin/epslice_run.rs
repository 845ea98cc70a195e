//! `epslice run` built inside the test crate, so process-level tests (leader election, graceful
//! shutdown) can spawn it through `CARGO_BIN_EXE_epslice-run`: the same code path as the
//! `epslice` binary's `run` subcommand (`epslice::cli::run`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: epslice::cli::RunArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match epslice::cli::run(Args::parse().run).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epslice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
