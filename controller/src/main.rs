//! The `epslice` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run the controllers against a cluster (the production mode).
    Run(epslice::cli::RunArgs),
    /// Start a local control plane (etcd, kube-apiserver, kwok nodes in three zones) with a
    /// sample workload, print how to reach it with kubectl, and run until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(demo::Args),
    /// Run the service-env admission webhook (HTTPS `/mutate`) and the admin server.
    Webhook(Box<epslice::webhook::WebhookArgs>),
    /// Print the CustomResourceDefinitions (YAML) epslice uses.
    Crds,
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
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => epslice::cli::run(args).await,
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(args).await,
            Command::Webhook(args) => epslice::webhook::cli::main(*args).await,
            Command::Crds => epslice::envpolicy::crd_yaml().map(|y| print!("{y}")).map_err(anyhow::Error::msg),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epslice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
