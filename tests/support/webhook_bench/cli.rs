//! Flags of `epslice-webhook-bench`, validated up front so a bad value is a one-line error.

use std::path::PathBuf;
use std::time::Duration;

use epslice::cli::parse_duration;

/// Which pods a measurement uses (pod label `bench.epslice.io/profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Profile {
    /// Only the namespace label `epslice.io/service-env=all`: every Service of the namespace. At
    /// 1,000 multi-port Services the addition exceeds `--max-added-bytes` (256 KiB by default), so
    /// the webhook computes the whole set and answers *allowed, no patch, one warning*.
    All,
    /// A `ServiceEnvPolicy` (mode `Selected`, `--selected` Services by name) matching these pods:
    /// the webhook answers with a JSON patch.
    Selected,
}

impl Profile {
    /// Label value and table name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::All => "all",
            Profile::Selected => "selected",
        }
    }
}

/// Benchmark of the service-env webhook: server side over HTTPS on loopback, then pod creation
/// through kube-apiserver with and without the webhook. See docs/benchmarks.md ("Webhook").
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "epslice-webhook-bench")]
pub struct Args {
    /// ClusterIP Services in the benchmark namespace.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,

    /// Ports per Service (http 80, https 443, grpc 9000, metrics 9090, …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub ports_per_service: u16,

    /// Services named by the `Selected` policy (profile `selected`).
    #[arg(long, default_value_t = 10)]
    pub selected: usize,

    /// Request profiles measured (phase A and, with the webhook registered, phase B).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Profile::All, Profile::Selected])]
    pub profiles: Vec<Profile>,

    /// Phase A: measured time per (profile, concurrency).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Phase A: warm-up before each measured window (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Phase A: concurrent keep-alive HTTP/1.1 connections (one request in flight each), a list.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 16, 64])]
    pub concurrency: Vec<usize>,

    /// Phase B: pods created per (webhook off / profile, concurrency).
    #[arg(long, default_value_t = 500)]
    pub pods: usize,

    /// Phase B: concurrent pod creates, a list (1 = sequential).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    pub pod_concurrency: Vec<usize>,

    /// Passed to the webhook as `--max-added-bytes` (default: the production default, 256 KiB).
    #[arg(long)]
    pub max_added_bytes: Option<usize>,

    /// Skip phase A (server side) or phase B (through the apiserver).
    #[arg(long, value_parser = ["a", "b"])]
    pub skip: Vec<String>,

    /// Also write the results (machine, command, tables) into this markdown file, between
    /// `<!-- webhook-bench:begin -->` and `<!-- webhook-bench:end -->`.
    #[arg(long)]
    pub write_doc: Option<PathBuf>,
}

impl Args {
    /// Checks combinations clap cannot.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.services == 0 {
            return Err("--services must be at least 1".into());
        }
        if self.selected == 0 || self.selected > self.services {
            return Err(format!("--selected must be between 1 and --services ({})", self.services));
        }
        if self.concurrency.is_empty() || self.concurrency.iter().any(|&c| c == 0 || c > 1024) {
            return Err("--concurrency values must be between 1 and 1024".into());
        }
        if self.pod_concurrency.is_empty() || self.pod_concurrency.iter().any(|&c| c == 0 || c > 64) {
            return Err("--pod-concurrency values must be between 1 and 64".into());
        }
        if self.duration < Duration::from_millis(100) {
            return Err("--duration must be at least 100ms".into());
        }
        if self.profiles.is_empty() {
            return Err("--profiles must name at least one profile".into());
        }
        self.profiles.sort();
        self.profiles.dedup();
        Ok(())
    }

    /// Whether phase `p` ("a" or "b") runs.
    pub fn runs(&self, p: &str) -> bool {
        !self.skip.iter().any(|s| s == p)
    }
}
