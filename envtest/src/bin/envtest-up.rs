//! Starts a control plane (etcd, kube-apiserver, kwok with fake nodes in three zones) and keeps it
//! running until Ctrl-C, printing how to reach it.
//!
//! `envtest-up --exit-when-ready` prints the component process ids and exits at once, without any
//! cleanup of its own: the test that nothing outlives a test binary uses it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: envtest-up [--exit-when-ready] [--panic-when-ready]");
        return ExitCode::SUCCESS;
    }
    let exit = args.iter().any(|a| a == "--exit-when-ready");
    let panic = args.iter().any(|a| a == "--panic-when-ready");
    if let Some(bad) = args.iter().find(|a| !matches!(a.as_str(), "--exit-when-ready" | "--panic-when-ready")) {
        eprintln!("envtest-up: unknown argument {bad:?} (see --help)");
        return ExitCode::from(2);
    }
    let cp = match envtest::ControlPlane::start(envtest::Options::default()).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("envtest-up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!("pids: {}", pids.join(" "));
    println!("kubeconfig: {}", cp.kubeconfig_path().display());
    if panic {
        panic!("--panic-when-ready: leaving without cleanup");
    }
    if exit {
        // Leave without running destructors, as a test binary does with its shared control plane.
        std::process::exit(0);
    }
    println!("\nControl plane ready ({}).", cp.server());
    println!("  export KUBECONFIG={}", cp.kubeconfig_path().display());
    println!("  {} get nodes -L topology.kubernetes.io/zone", cp.binary(envtest::Binary::Kubectl).display());
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    drop(cp);
    ExitCode::SUCCESS
}
