//! `epslice-webhook-bench`: the service-env webhook at 1,000 Services — server side over HTTPS on
//! loopback, then pod creates through kube-apiserver with and without it. Not part of `cargo
//! test`; run it with `just bench-webhook` (release build). See docs/benchmarks.md ("Webhook").
#![forbid(unsafe_code)]

#[path = "../webhook_bench/mod.rs"]
mod webhook_bench;

use std::process::ExitCode;

use clap::Parser as _;

/// The webhook runs in this process: give it the allocator of the `epslice` binary (see its
/// `main.rs`), so the figures are those of what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mut args = webhook_bench::cli::Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("epslice-webhook-bench: {e}");
        return ExitCode::from(2);
    }
    let command = std::iter::once("epslice-webhook-bench".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let build = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name(name).enable_all().build()
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    // The webhook (and the harness) on one runtime, the load generator on another, so neither
    // queues behind the other's tasks; the OS still shares the cores between them.
    let (rt, load_rt) = match (build("webhook", cores), build("load", cores)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("epslice-webhook-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let doc = args.write_doc.clone();
    let result = rt.block_on(webhook_bench::run(args, command, load_rt.handle().clone()));
    drop(load_rt);
    match result {
        Ok(md) => {
            println!("{md}");
            if let Some(path) = doc {
                if let Err(e) = webhook_bench::report::write_doc(&path, &md) {
                    eprintln!("epslice-webhook-bench: {e:#}");
                    return ExitCode::FAILURE;
                }
                eprintln!("epslice-webhook-bench: results written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("epslice-webhook-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
