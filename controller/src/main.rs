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
            Command::Run(args) => run(args).await,
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(args).await,
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

async fn run(args: epslice::cli::RunArgs) -> anyhow::Result<()> {
    epslice::cli::init_logging(&args.log_level, args.log_format).map_err(anyhow::Error::msg)?;
    let options = args.options().map_err(anyhow::Error::msg)?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await.map_err(|e| anyhow::anyhow!("no cluster configuration found ({e}); pass --kubeconfig"))?,
    };
    let client = kube::Client::try_from(config)?;
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing syncs in flight");
    };
    epslice::controllers::run(client, options, Default::default(), shutdown).await
}
