//! `epslice-bench`: kube-controller-manager vs epslice vs a write floor on a real control plane.
//! Not part of `cargo test`; run it with `just bench` (release build). See docs/benchmarks.md.
#![forbid(unsafe_code)]

#[path = "../bench/mod.rs"]
mod bench;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let mut args = bench::cli::Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("epslice-bench: {e}");
        return ExitCode::from(2);
    }
    let command = std::iter::once("epslice-bench".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("epslice-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let doc = args.write_doc.clone();
    let result = rt.block_on(bench::run(args, command));
    match result {
        Ok((md, complete)) => {
            println!("{md}");
            if let Some(path) = doc {
                if let Err(e) = bench::report::write_doc(&path, &md) {
                    eprintln!("epslice-bench: {e:#}");
                    return ExitCode::FAILURE;
                }
                eprintln!("epslice-bench: results written to {}", path.display());
            }
            if complete {
                ExitCode::SUCCESS
            } else {
                eprintln!("epslice-bench: some contenders failed (see the notes)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("epslice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
