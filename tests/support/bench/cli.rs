//! Flags of `epslice-bench`, validated up front so a bad value is a one-line error, never a panic.

use std::path::PathBuf;

/// A measured scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Bulk: controller start → every Service's slices and Endpoints complete.
    #[value(name = "S1", alias = "s1")]
    S1,
    /// Churn: readiness flips at a fixed rate; latency to the slice change.
    #[value(name = "S2", alias = "s2")]
    S2,
    /// Restart of the same contender on its own converged objects: writes.
    #[value(name = "S3", alias = "s3")]
    S3,
    /// Takeover of objects the other contender (kcm ↔ epslice) wrote: writes.
    #[value(name = "S4", alias = "s4")]
    S4,
}

/// Who writes the slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contender {
    /// kube-controller-manager, the three endpoint controllers, at its defaults
    /// (`--kube-api-qps=20 --kube-api-burst=30`).
    Kcm,
    /// kube-controller-manager with `--kube-api-qps`/`--kube-api-burst` raised
    /// (`--kcm-fast-qps`/`--kcm-fast-burst`), i.e. without an effective client-side limit, like
    /// kube-rs.
    KcmFast,
    /// `epslice run --controllers=* --leader-elect=false` as a separate process.
    Epslice,
    /// A bare client inside the harness sending exactly the writes the planners say are needed
    /// (S1 and S2).
    Floor,
}

impl Contender {
    /// Short name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Kcm => "kcm",
            Contender::KcmFast => "kcm-fast",
            Contender::Epslice => "epslice",
            Contender::Floor => "floor",
        }
    }

    /// True for the two kube-controller-manager variants.
    pub fn is_kcm(self) -> bool {
        matches!(self, Contender::Kcm | Contender::KcmFast)
    }
}

/// Side-by-side benchmark of kube-controller-manager, epslice and a write floor on a real
/// control plane (etcd + kube-apiserver + kwok). See docs/benchmarks.md.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "epslice-bench")]
pub struct Args {
    /// Small Services (each selects --pods-per-service pods).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Pods per small Service (1–1000).
    #[arg(long, default_value_t = 10)]
    pub pods_per_service: usize,
    /// Big Services (each selects --big-pods-per-service pods).
    #[arg(long, default_value_t = 20)]
    pub big_services: usize,
    /// Pods per big Service (1–1000; above 1000 the Endpoints controller truncates).
    #[arg(long, default_value_t = 250)]
    pub big_pods_per_service: usize,
    /// Services per namespace.
    #[arg(long, default_value_t = 250)]
    pub services_per_namespace: usize,
    /// Fake kwok nodes, spread round-robin over zone-a, zone-b, zone-c (3–5000).
    #[arg(long, default_value_t = 30)]
    pub nodes: usize,
    /// S2: how long readiness flips go on (seconds).
    #[arg(long, default_value_t = 60)]
    pub churn_seconds: u64,
    /// S2: readiness flips per second (1–1000).
    #[arg(long, default_value_t = 20)]
    pub flips_per_second: u32,
    /// S2: how long to wait after the churn for the last flips to show up in slices (seconds).
    #[arg(long, default_value_t = 60)]
    pub drain_seconds: u64,
    /// Scenarios to run (comma-separated): S1, S2, S3, S4.
    #[arg(long, value_delimiter = ',', default_value = "S1,S2,S3,S4")]
    pub scenarios: Vec<Scenario>,
    /// Contenders, in run order (comma-separated): kcm, kcm-fast, epslice, floor. S4 runs for a
    /// contender when the one before it is of the other kind (kcm ↔ epslice), on its objects.
    #[arg(long, value_delimiter = ',', default_value = "kcm,epslice,kcm-fast,floor")]
    pub contenders: Vec<Contender>,
    /// `--kube-api-qps` of the kcm-fast contender.
    #[arg(long, default_value_t = 1000)]
    pub kcm_fast_qps: u32,
    /// `--kube-api-burst` of the kcm-fast contender.
    #[arg(long, default_value_t = 2000)]
    pub kcm_fast_burst: u32,
    /// S1 runs per contender, odd (each from no outputs, the process restarted); the table shows
    /// the run with the median convergence time and every run's time, peak RSS is the highest.
    #[arg(long, default_value_t = 3)]
    pub s1_runs: usize,
    /// S2 rounds per contender, odd (each --churn-seconds long, back to back on the same
    /// process); the table shows the round with the median end-to-end p99 and every round's p99,
    /// peak RSS is the highest.
    #[arg(long, default_value_t = 3)]
    pub s2_rounds: usize,
    /// A contender counts as settled (S3, S4, before S2) after this many seconds without a write
    /// to endpointslices or endpoints.
    #[arg(long, default_value_t = 10)]
    pub settle_seconds: u64,
    /// Give up on one convergence / settle wait after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    /// Parallel requests while creating the Services and Pods (not measured).
    #[arg(long, default_value_t = 32)]
    pub create_concurrency: usize,
    /// Parallel writes per resource (slices, Endpoints) of the floor contender; 5 matches the
    /// controllers' default workers per controller.
    #[arg(long, default_value_t = 5)]
    pub floor_concurrency: usize,
    /// The `epslice` command to run (default: `epslice-cli` next to this binary).
    #[arg(long)]
    pub epslice_bin: Option<PathBuf>,
    /// Also write the results (machine, command, tables) into this markdown file, between
    /// `<!-- epslice-bench:begin -->` and `<!-- epslice-bench:end -->` (created if missing).
    #[arg(long)]
    pub write_doc: Option<PathBuf>,
    /// Seed of the S2 flip sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also record a CPU profile of kube-apiserver (`/debug/pprof/profile`) over the first
    /// --apiserver-profile-seconds of every S1 run, into this directory, one file per contender
    /// and run (read with `go tool pprof -top FILE`).
    #[arg(long)]
    pub apiserver_profile: Option<PathBuf>,
    /// Length of each --apiserver-profile recording (seconds, at most 55: kube-apiserver ends a
    /// request after 60 s).
    #[arg(long, default_value_t = 10)]
    pub apiserver_profile_seconds: u64,
    /// Also write every S2 flip's timings into `DIR/S2-<contender>.csv` (`S2-<contender>-round<n>.csv`
    /// with several --s2-rounds; pod, its Service's size,
    /// the Ready value, then milliseconds from the churn's start: status write sent, its pod event,
    /// the slice change; empty when not seen), to see what a percentile is made of.
    #[arg(long, value_name = "DIR")]
    pub flips_csv: Option<PathBuf>,
}

impl Args {
    /// Checks ranges and removes duplicate scenarios / contenders (keeping the first).
    pub fn validate(&mut self) -> Result<(), String> {
        fn range<T: PartialOrd + std::fmt::Display + Copy>(flag: &str, v: T, lo: T, hi: T) -> Result<(), String> {
            if v < lo || v > hi { Err(format!("--{flag} {v}: must be between {lo} and {hi}")) } else { Ok(()) }
        }
        if self.services + self.big_services == 0 {
            return Err("--services and --big-services are both 0: nothing to measure".into());
        }
        range("services", self.services, 0, 100_000)?;
        range("big-services", self.big_services, 0, 10_000)?;
        range("pods-per-service", self.pods_per_service, 1, 1000)?;
        range("big-pods-per-service", self.big_pods_per_service, 1, 1000)?;
        range("services-per-namespace", self.services_per_namespace, 1, 5000)?;
        range("nodes", self.nodes, 3, 5000)?;
        range("churn-seconds", self.churn_seconds, 1, 3600)?;
        range("flips-per-second", self.flips_per_second, 1, 1000)?;
        range("drain-seconds", self.drain_seconds, 1, 3600)?;
        range("kcm-fast-qps", self.kcm_fast_qps, 1, 1_000_000)?;
        range("kcm-fast-burst", self.kcm_fast_burst, 1, 1_000_000)?;
        range("settle-seconds", self.settle_seconds, 1, 600)?;
        range("timeout-seconds", self.timeout_seconds, 10, 86_400)?;
        range("create-concurrency", self.create_concurrency, 1, 1024)?;
        range("floor-concurrency", self.floor_concurrency, 1, 1024)?;
        range("s1-runs", self.s1_runs, 1, 99)?;
        range("s2-rounds", self.s2_rounds, 1, 99)?;
        // Below kube-apiserver's default --request-timeout (60 s), which ends a longer profile.
        range("apiserver-profile-seconds", self.apiserver_profile_seconds, 1, 55)?;
        if self.s1_runs.is_multiple_of(2) {
            return Err(format!("--s1-runs {}: must be odd (the table shows the median run)", self.s1_runs));
        }
        if self.s2_rounds.is_multiple_of(2) {
            return Err(format!("--s2-rounds {}: must be odd (the table shows the median round)", self.s2_rounds));
        }
        let pods = self.total_pods();
        if pods > 500_000 {
            return Err(format!("{pods} pods in total: more than 500,000 is not supported"));
        }
        let mut seen = Vec::new();
        self.scenarios.retain(|s| {
            if seen.contains(s) {
                false
            } else {
                seen.push(*s);
                true
            }
        });
        self.scenarios.sort();
        let mut seen = Vec::new();
        self.contenders.retain(|c| {
            if seen.contains(c) {
                false
            } else {
                seen.push(*c);
                true
            }
        });
        if self.scenarios.is_empty() {
            return Err("--scenarios is empty".into());
        }
        if self.contenders.is_empty() {
            return Err("--contenders is empty".into());
        }
        if let Some(p) = &self.epslice_bin
            && !p.is_file()
        {
            return Err(format!("--epslice-bin {}: no such file", p.display()));
        }
        Ok(())
    }

    /// Pods in the cluster.
    pub fn total_pods(&self) -> usize {
        self.services * self.pods_per_service + self.big_services * self.big_pods_per_service
    }

    /// Whether a scenario was asked for.
    pub fn has(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Args, String> {
        let mut a =
            Args::try_parse_from(std::iter::once("b").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        a.validate()?;
        Ok(a)
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        assert!(parse(&["--flips-per-second", "0"]).is_err_and(|e| e.contains("--flips-per-second")));
        assert!(parse(&["--scenarios", "S9"]).is_err());
        assert!(parse(&["--contenders", "nope"]).is_err());
        assert!(parse(&["--s1-runs", "2"]).is_err_and(|e| e.contains("must be odd")));
        assert!(parse(&["--s1-runs", "0"]).is_err_and(|e| e.contains("--s1-runs")));
        assert!(parse(&["--services", "0", "--big-services", "0"]).is_err_and(|e| e.contains("nothing")));
        assert!(parse(&["--epslice-bin", "/nonexistent/epslice"]).is_err_and(|e| e.contains("no such file")));
        let a = parse(&["--scenarios", "s2,S1,S2", "--contenders", "epslice,epslice,floor"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.scenarios, vec![Scenario::S1, Scenario::S2]);
        assert_eq!(a.contenders, vec![Contender::Epslice, Contender::Floor]);
    }
}
