//! The `epslice` binary: the library's subcommands plus `demo`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: under churn glibc's heap grew ≈10 MiB a minute past a
/// stable live heap (fragmentation), jemalloc's did not; it also costs less CPU. See
/// docs/architecture.md#memory-allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "demo")]
mod demo;

/// Kubernetes endpoint controllers (EndpointSlice, Endpoints, mirroring) and a service-env webhook.
#[derive(Debug, Parser)]
#[command(name = "epslice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Core(epslice::cli::Command),
    /// Start a local control plane (etcd, kube-apiserver, kwok nodes in three zones) with
    /// epslice's controllers and a sample workload, print the EndpointSlices and how to change
    /// them with kubectl, and run until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("epslice: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Core(c) => epslice::cli::dispatch(c).await,
            #[cfg(feature = "demo")]
            Command::Demo(args) => match demo::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("epslice demo: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}
