//! The results as markdown: phase A (server side), phase B (through the apiserver), the targets.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::apiserver::Series;
use super::cli::{Args, Profile};
use super::load::{Answer, Histogram, LoadResult};

/// Markers around the generated section of a markdown file.
pub const BEGIN: &str = "<!-- webhook-bench:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- webhook-bench:end -->";

/// Target: server-side p99 at C=1.
pub const TARGET_P99: Duration = Duration::from_millis(1);
/// Target: admissions per second at the best concurrency.
pub const TARGET_THROUGHPUT: f64 = 10_000.0;
/// Target: pod-create p99 with the webhook ÷ without.
pub const TARGET_RATIO: f64 = 1.1;

/// One phase-A cell.
pub struct LoadCell {
    /// Profile.
    pub profile: Profile,
    /// Client side.
    pub load: LoadResult,
    /// The handler's own histogram over the same window.
    pub handler: Histogram,
}

/// A run's results and context.
pub struct Report<'a> {
    /// The flags.
    pub args: &'a Args,
    /// Machine line.
    pub machine: String,
    /// `/proc/loadavg` before and after.
    pub load_avg: (String, String),
    /// Command line.
    pub command: String,
    /// Time to create the namespace's objects.
    pub setup: Duration,
    /// Probe answer per profile.
    pub answers: Vec<(Profile, Answer)>,
    /// AdmissionReview request size per profile.
    pub request_bytes: Vec<(Profile, usize)>,
    /// Phase A.
    pub phase_a: Vec<LoadCell>,
    /// Phase B.
    pub phase_b: Vec<Series>,
}

/// `0.412 ms`-style.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) if d.as_secs_f64() < 0.01 => format!("{:.3} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => "–".into(),
    }
}

fn secs(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_infinite() => "> 1.6 s".into(),
        Some(x) => ms(Some(Duration::from_secs_f64(x))),
        None => "–".into(),
    }
}

fn verdict_max(measured: f64, target: f64) -> String {
    if measured <= target {
        format!("met ({:.2}× the limit)", measured / target)
    } else {
        format!("**missed** ({:.1}× the limit)", measured / target)
    }
}

fn verdict_min(measured: f64, target: f64) -> String {
    if measured >= target {
        format!("met ({:.2}× the target)", measured / target)
    } else {
        format!("**missed** ({:.2}× the target, short by {:.1}×)", measured / target, target / measured)
    }
}

impl Report<'_> {
    fn answers(&self) -> String {
        let mut out = String::new();
        for (p, a) in &self.answers {
            let req = self.request_bytes.iter().find(|(q, _)| q == p).map_or(0, |x| x.1);
            let what = match (p, a.patched) {
                (Profile::All, false) => format!(
                    "namespace label `all`: the webhook builds every Service's variables for 3 containers, finds the addition over `--max-added-bytes` and answers **allowed, no patch**, warning `{}`",
                    a.warnings.first().map_or("", |w| w.as_str())
                ),
                (Profile::All, true) => format!(
                    "namespace label `all`: every Service injected (JSON patch {} KiB base64)",
                    a.patch_b64_bytes / 1024
                ),
                (Profile::Selected, _) => format!(
                    "`ServiceEnvPolicy` mode `Selected` naming {} of the Services, `disableKubeletServiceLinks: true`: JSON patch of {} KiB (base64)",
                    self.args.selected,
                    a.patch_b64_bytes.div_ceil(1024)
                ),
            };
            let _ = writeln!(
                out,
                "- Profile `{}`: {what}. Request {:.1} KiB, answer {:.1} KiB.",
                p.name(),
                req as f64 / 1024.0,
                a.body_bytes as f64 / 1024.0
            );
        }
        out
    }

    fn table_a(&self) -> String {
        let mut out = String::from(
            "| Profile | Connections | Admissions/s | Client p50 | p90 | p99 | max | Handler mean | Handler p50 / p99 (histogram) | Errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for c in &self.phase_a {
            let l = &c.load;
            let errors = if l.errors.is_empty() {
                "0".to_owned()
            } else {
                l.errors.iter().map(|(k, v)| format!("{v} × {k}")).collect::<Vec<_>>().join("; ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} / {} | {errors} |",
                c.profile.name(),
                l.concurrency,
                l.throughput(),
                ms(l.quantile(0.5)),
                ms(l.quantile(0.9)),
                ms(l.quantile(0.99)),
                ms(l.latencies.last().map(|&n| Duration::from_nanos(n))),
                ms(c.handler.mean()),
                secs(c.handler.quantile(0.5)),
                secs(c.handler.quantile(0.99)),
            );
        }
        out
    }

    fn off(&self, concurrency: usize) -> Option<&Series> {
        self.phase_b.iter().find(|s| s.profile.is_none() && !s.preinjected && s.concurrency == concurrency)
    }

    /// The `selected` pod as injected, created without the webhook.
    fn off_injected(&self, concurrency: usize) -> Option<&Series> {
        self.phase_b.iter().find(|s| s.preinjected && s.concurrency == concurrency)
    }

    fn table_b(&self) -> String {
        let mut out = String::from(
            "| Webhook | Concurrency | Pods | Create p50 | p99 | max | p50 ÷ off | p99 ÷ off | Pods/s | Webhook reviews (handler mean) | Webhook call mean, apiserver side | Failed | Unverified |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for s in &self.phase_b {
            let off = self.off(s.concurrency);
            let ratio =
                |q: f64| match (s.profile.is_some() || s.preinjected, s.quantile(q), off.and_then(|o| o.quantile(q))) {
                    (true, Some(a), Some(b)) if !b.is_zero() => format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64()),
                    _ => "–".into(),
                };
            let reviews = s.reviews.as_ref().map_or("–".to_owned(), |h| format!("{} ({})", h.count, ms(h.mean())));
            let call = s.apiserver_call.map_or("–".to_owned(), |(mean, _)| ms(Some(Duration::from_secs_f64(mean))));
            let problem = s.first_problem.as_ref().map_or(String::new(), |p| format!(" ({})", p.replace('|', "/")));
            let error = s.first_error.as_ref().map_or(String::new(), |e| format!(" ({})", e.replace('|', "/")));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {reviews} | {call} | {}{error} | {}{problem} |",
                match s.profile {
                    Some(p) => format!("on, `{}`", p.name()),
                    None if s.preinjected => "off, pod as `selected` injects it".to_owned(),
                    None => "off".to_owned(),
                },
                s.concurrency,
                s.latencies.len(),
                ms(s.quantile(0.5)),
                ms(s.quantile(0.99)),
                ms(s.latencies.last().map(|&n| Duration::from_nanos(n))),
                ratio(0.5),
                ratio(0.99),
                s.latencies.len() as f64 / s.wall.as_secs_f64(),
                s.failed,
                s.unverified,
            );
        }
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("| Target | Profile | Measured | Verdict |\n| --- | --- | --- | --- |\n");
        for &p in &self.args.profiles {
            let cells: Vec<&LoadCell> = self.phase_a.iter().filter(|c| c.profile == p).collect();
            if let Some(c1) = cells.iter().min_by_key(|c| c.load.concurrency)
                && let Some(p99) = c1.load.quantile(0.99)
            {
                let _ = writeln!(
                    out,
                    "| p99 ≤ 1 ms over HTTPS, 1 connection (client-observed; handler p99 {}) | {} | {} | {} |",
                    secs(c1.handler.quantile(0.99)),
                    p.name(),
                    ms(Some(p99)),
                    verdict_max(p99.as_secs_f64(), TARGET_P99.as_secs_f64())
                );
            }
            if let Some(best) = cells.iter().max_by(|a, b| a.load.throughput().total_cmp(&b.load.throughput())) {
                let _ = writeln!(
                    out,
                    "| ≥ 10,000 admissions/s (best of the connection counts) | {} | {:.0}/s at {} connections (p99 {}) | {} |",
                    p.name(),
                    best.load.throughput(),
                    best.load.concurrency,
                    ms(best.load.quantile(0.99)),
                    verdict_min(best.load.throughput(), TARGET_THROUGHPUT)
                );
            }
        }
        for s in self.phase_b.iter().filter(|s| s.profile.is_some()) {
            let (Some(off), Some(p99)) = (self.off(s.concurrency).and_then(|o| o.quantile(0.99)), s.quantile(0.99))
            else {
                continue;
            };
            let r = p99.as_secs_f64() / off.as_secs_f64();
            let _ = writeln!(
                out,
                "| pod create p99 with ≤ 1.1× without, concurrency {} | {} | {} vs {} = {r:.2}× | {} |",
                s.concurrency,
                s.profile.map_or("", Profile::name),
                ms(Some(p99)),
                ms(Some(off)),
                verdict_max(r, TARGET_RATIO)
            );
            if s.profile == Some(Profile::Selected)
                && let Some(same) = self.off_injected(s.concurrency).and_then(|o| o.quantile(0.99))
            {
                let r = p99.as_secs_f64() / same.as_secs_f64();
                let _ = writeln!(
                    out,
                    "| (for reference) pod create p99 with ≤ 1.1× the same injected pod created without, concurrency {} | selected | {} vs {} = {r:.2}× | {} |",
                    s.concurrency,
                    ms(Some(p99)),
                    ms(Some(same)),
                    verdict_max(r, TARGET_RATIO)
                );
            }
        }
        out
    }

    /// The whole section.
    pub fn markdown(&self) -> String {
        let v = envtest::versions();
        let a = self.args;
        let mut out = String::new();
        let _ = writeln!(out, "### epslice-webhook-bench run, {}\n", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(
            out,
            "- Load average (1/5/15 min) before the run: {}; after: {} (the run itself keeps the cores busy){}",
            self.load_avg.0,
            self.load_avg.1,
            if shared(&self.load_avg.0) {
                " — **the machine was busy with other work when the run started**; figures are indicative"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- Build: {}; kube-apiserver {}, etcd {}",
            if cfg!(debug_assertions) { "debug (not representative)" } else { "release" },
            v.kubernetes,
            v.etcd
        );
        let _ = writeln!(
            out,
            "- Namespace: {} ClusterIP Services × {} ports (plus `default/kubernetes`), label `epslice.io/service-env=all`; objects created in {:.1?}",
            a.services, a.ports_per_service, self.setup
        );
        out.push_str(&self.answers());
        if !self.phase_a.is_empty() {
            let _ = writeln!(
                out,
                "\n**Phase A — server side, HTTPS on loopback.** `POST /mutate?timeout=3s` with the AdmissionReview kube-apiserver sends (the pod as defaulted by a dry-run create), closed loop, one request in flight per keep-alive HTTP/1.1 + TLS 1.3 connection, {:?} warm-up then {:?} measured per row; every answer checked (HTTP 200, `uid` echoed, `allowed`, patch present or absent as expected). Client latency is measured by the load generator (its own 2-thread runtime, same machine); *handler* is the webhook's `epslice_webhook_admission_duration_seconds` over the same window (body read → answer built; exact mean from `_sum/_count`, quantiles interpolated in its ×2 buckets).\n",
                a.warmup, a.duration
            );
            out.push_str(&self.table_a());
        }
        if !self.phase_b.is_empty() {
            let _ = writeln!(
                out,
                "\n**Phase B — pod creates through kube-apiserver** (kube-rs client, HTTPS), {} pods per row after {} warm-up creates; first without any MutatingWebhookConfiguration, then with one calling the in-process webhook (`failurePolicy: Fail`, `timeoutSeconds: 3`, scoped to the namespace). Every returned pod checked: without the webhook nothing injected; with `selected`, each container has every selected Service's `*_SERVICE_HOST` with its ClusterIP, the marker annotation and `enableServiceLinks: false`; the webhook's review count must equal the creates. *Webhook call, apiserver side*: kube-apiserver's `apiserver_admission_webhook_admission_duration_seconds` (its whole call of the webhook: encoding the review, the HTTPS round trip, decoding the answer and applying the JSON patch).\n",
                a.pods,
                super::apiserver::WARMUP_PODS
            );
            out.push_str(&self.table_b());
        }
        out.push_str("\n**Targets**\n\n");
        out.push_str(&self.targets());
        out
    }
}

/// Whether the 1-minute load exceeds half the cores.
fn shared(load: &str) -> bool {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    load.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()).is_some_and(|l| l > cores / 2.0)
}

/// `/proc/loadavg`'s three averages.
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Writes `section` between the markers of `path`; the markers must exist (docs/benchmarks.md has
/// them in its "Webhook" section).
pub fn write_doc(path: &Path, section: &str) -> anyhow::Result<()> {
    epslice_integration_tests::benchdoc::write_section(path, BEGIN, END, section, false)
}
