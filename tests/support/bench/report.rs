//! The results as markdown: one table of absolute values and ratios, then the targets.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::Cell;
use super::cli::{Args, Contender, Scenario};

/// Markers around the generated section of a markdown file.
pub const BEGIN: &str = "<!-- epslice-bench:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- epslice-bench:end -->";

/// A run's results and context.
pub struct Report<'a> {
    /// The flags.
    pub args: &'a Args,
    /// The cells.
    pub results: &'a super::Results,
    /// The machine line.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// How long creating the objects took.
    pub setup: Duration,
    /// Pods.
    pub pods: usize,
    /// Services.
    pub services: usize,
    /// CLK_TCK used.
    pub tck: f64,
    /// Contenders that failed, with the error.
    pub failures: Vec<String>,
}

type Val = (String, Option<f64>);

fn num(v: Option<f64>, digits: usize) -> Val {
    match v {
        Some(x) if x.is_finite() => (format!("{x:.digits$}"), Some(x)),
        Some(x) if x.is_infinite() => ("∞ (missed)".into(), Some(x)),
        _ => ("–".into(), None),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    match (a.is_finite(), b.is_finite()) {
        (true, true) => {}
        // A failed run or an unseen flip is infinitely slow: infinitely worse than a finite one,
        // and a miss even when the reference failed too.
        (false, _) => return Some(f64::INFINITY),
        (true, false) => return Some(0.0),
    }
    if b == 0.0 {
        return if a == 0.0 { Some(1.0) } else { Some(f64::INFINITY) };
    }
    Some(a / b)
}

fn show_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_infinite() => "∞".into(),
        Some(r) => format!("{r:.2}×"),
        None => "–".into(),
    }
}

fn verdict(r: Option<f64>, target: f64) -> String {
    // Near the target two decimals could read as the target itself: show three.
    let shown = |r: f64| if (r - target).abs() < 0.01 { format!("{r:.3}×") } else { show_ratio(Some(r)) };
    match r {
        None => "not measured".into(),
        Some(r) if r <= target => format!("met ({})", shown(r)),
        Some(r) if r.is_infinite() => "**missed** (∞)".into(),
        Some(r) => format!("**missed** ({}, {:.2}× the target)", shown(r), r / target),
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn per_flip(c: &Cell, writes: f64) -> Option<f64> {
    let f = c.flips.as_ref()?;
    let ok = f.sent.saturating_sub(f.failed);
    (ok > 0).then(|| writes / ok as f64)
}

impl Report<'_> {
    fn cell(&self, s: Scenario, c: Contender) -> Option<&Cell> {
        let idx = self.args.contenders.iter().position(|x| *x == c)?;
        self.results.get(&(s, idx))
    }

    fn header(&self, c: Contender) -> String {
        match c {
            Contender::Kcm => "kcm (qps 20/30)".into(),
            Contender::KcmFast => format!("kcm-fast (qps {}/{})", self.args.kcm_fast_qps, self.args.kcm_fast_burst),
            Contender::Epslice => "epslice".into(),
            Contender::Floor => "floor".into(),
        }
    }

    fn pairs(&self) -> Vec<(Contender, Contender)> {
        let has = |c| self.args.contenders.contains(&c);
        [Contender::Kcm, Contender::KcmFast, Contender::Floor]
            .into_iter()
            .filter(|&d| has(Contender::Epslice) && has(d))
            .map(|d| (Contender::Epslice, d))
            .collect()
    }

    fn table(&self) -> String {
        let cs = &self.args.contenders;
        let pairs = self.pairs();
        let mut out = String::new();
        let _ = write!(out, "| scenario | metric |");
        for &c in cs {
            let _ = write!(out, " {} |", self.header(c));
        }
        for (a, b) in &pairs {
            let _ = write!(out, " {} ÷ {} |", a.name(), b.name());
        }
        out.push('\n');
        out.push_str(&"| --- ".repeat(2 + cs.len() + pairs.len()));
        out.push_str("|\n");
        type F<'f> = Box<dyn Fn(&Cell) -> Val + 'f>;
        let writes =
            |f: fn(&Cell) -> &super::Writes| -> F<'_> { Box::new(move |c: &Cell| (f(c).show(), Some(f(c).total()))) };
        let common = |s: Scenario| -> Vec<(String, F<'_>)> {
            let mut v: Vec<(String, F<'_>)> = Vec::new();
            if s == Scenario::S1 {
                if self.args.s1_runs > 1 {
                    v.push((
                        format!("convergence, median of {} runs (s)", self.args.s1_runs),
                        Box::new(|c: &Cell| num(c.secs, 2)),
                    ));
                    v.push((
                        "convergence, each run (s)".into(),
                        Box::new(|c: &Cell| {
                            (
                                c.runs
                                    .iter()
                                    .map(|r| if r.is_finite() { format!("{r:.2}") } else { "failed".into() })
                                    .collect::<Vec<_>>()
                                    .join(" / "),
                                None,
                            )
                        }),
                    ));
                } else {
                    v.push(("convergence (s)".into(), Box::new(|c: &Cell| num(c.secs, 2))));
                }
            }
            if s == Scenario::S2 {
                v.push((
                    "flips seen / sent".into(),
                    Box::new(|c: &Cell| {
                        let f = c.flips.clone().unwrap_or_default();
                        let mut t = format!("{}/{}", f.seen, f.sent);
                        if f.failed > 0 {
                            t.push_str(&format!(" ({} failed)", f.failed));
                        }
                        (t, None)
                    }),
                ));
                v.push(("latency p50 (ms)".into(), Box::new(|c: &Cell| num(c.flips.as_ref().map(|f| f.e2e.0), 1))));
                let p99 = |c: &Cell| num(c.flips.as_ref().map(|f| f.e2e.1), 1);
                if self.args.s2_rounds > 1 {
                    v.push((format!("latency p99, median of {} rounds (ms)", self.args.s2_rounds), Box::new(p99)));
                    v.push((
                        "latency p99, each round (ms)".into(),
                        Box::new(|c: &Cell| {
                            (c.runs.iter().map(|r| num(Some(*r), 1).0).collect::<Vec<_>>().join(" / "), None)
                        }),
                    ));
                } else {
                    v.push(("latency p99 (ms)".into(), Box::new(p99)));
                }
                v.push((
                    "status write → pod event p50 (ms)".into(),
                    Box::new(|c: &Cell| num(c.flips.as_ref().map(|f| f.before.0), 1)),
                ));
                v.push((
                    "status write → pod event p99 (ms)".into(),
                    Box::new(|c: &Cell| num(c.flips.as_ref().map(|f| f.before.1), 1)),
                ));
                v.push((
                    "controller share p50 (ms)".into(),
                    Box::new(|c: &Cell| num(c.flips.as_ref().map(|f| f.share.0), 1)),
                ));
                v.push((
                    "controller share p99 (ms)".into(),
                    Box::new(|c: &Cell| num(c.flips.as_ref().map(|f| f.share.1), 1)),
                ));
                // The same, by Service size: a big Service's flip writes a bigger slice and Endpoints.
                let mut sizes = vec![self.args.pods_per_service, self.args.big_pods_per_service];
                sizes.dedup();
                if self.args.big_services > 0 && sizes.len() > 1 {
                    for n in sizes {
                        type Pick = fn(&super::SizeStats) -> (f64, f64);
                        let picks: [(&str, Pick); 2] = [("latency", |s| s.e2e), ("controller share", |s| s.share)];
                        for (what, pick) in picks {
                            v.push((
                                format!("{what} p50 / p99, {n}-pod Services (ms)"),
                                Box::new(move |c: &Cell| {
                                    let Some(s) = c.flips.as_ref().and_then(|f| f.by_size.get(&n)) else {
                                        return ("–".into(), None);
                                    };
                                    let (p50, p99) = pick(s);
                                    let mut text = format!("{} / {}", num(Some(p50), 1).0, num(Some(p99), 1).0);
                                    if what == "latency" {
                                        text.push_str(&format!(" ({} flips)", s.flips));
                                    }
                                    (text, Some(p99))
                                }),
                            ));
                        }
                    }
                }
                v.push(("slice writes per flip".into(), Box::new(|c: &Cell| num(per_flip(c, c.slices.total()), 2))));
                v.push((
                    "Endpoints writes per flip".into(),
                    Box::new(|c: &Cell| num(per_flip(c, c.endpoints.total()), 2)),
                ));
            }
            v.push(("EndpointSlice writes (create/update/delete)".into(), writes(|c| &c.slices)));
            v.push(("Endpoints writes (create/update/delete)".into(), writes(|c| &c.endpoints)));
            if matches!(s, Scenario::S1 | Scenario::S2) {
                v.push(("apiserver time per write (ms, mean)".into(), Box::new(|c: &Cell| num(c.write_ms, 2))));
                v.push((
                    "apiserver + etcd CPU per write (ms)".into(),
                    Box::new(|c: &Cell| {
                        let writes = c.slices.total() + c.endpoints.total();
                        num(c.server_cpu_s.filter(|_| writes > 0.0).map(|s| s * 1000.0 / writes), 2)
                    }),
                ));
            }
            v.push(("apiserver + etcd CPU (s)".into(), Box::new(|c: &Cell| num(c.server_cpu_s, 2))));
            v.push(("peak RSS (MiB)".into(), Box::new(|c: &Cell| num(mib(c.usage.peak_rss_kib), 1))));
            v.push(("CPU (s)".into(), Box::new(|c: &Cell| num(c.usage.cpu_s, 2))));
            v
        };
        for s in [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4] {
            if !cs.iter().any(|&c| self.cell(s, c).is_some()) {
                continue;
            }
            for (label, f) in common(s) {
                // A failed median S1 run has a time (infinite) and nothing else worth showing.
                let value = |c: &Cell| {
                    if c.secs.is_some_and(f64::is_infinite) && !label.starts_with("convergence") {
                        ("failed".to_string(), None)
                    } else {
                        f(c)
                    }
                };
                let _ = write!(out, "| {s:?} | {label} |");
                for &c in cs {
                    let v = self.cell(s, c).map(value).map(|v| v.0).unwrap_or_else(|| "n/a".into());
                    let _ = write!(out, " {v} |");
                }
                for (a, b) in &pairs {
                    let r = ratio(self.cell(s, *a).and_then(|x| value(x).1), self.cell(s, *b).and_then(|x| value(x).1));
                    let _ = write!(out, " {} |", show_ratio(r));
                }
                out.push('\n');
            }
        }
        out
    }

    fn targets(&self) -> String {
        let e = Contender::Epslice;
        let mut rows: Vec<(String, String)> = Vec::new();
        let kcms: Vec<Contender> =
            [Contender::Kcm, Contender::KcmFast].into_iter().filter(|c| self.args.contenders.contains(c)).collect();
        let rel = |s: Scenario, f: &dyn Fn(&Cell) -> Option<f64>, other: Contender| {
            ratio(self.cell(s, e).and_then(f), self.cell(s, other).and_then(f))
        };
        for &k in &kcms {
            let n = k.name();
            rows.push((format!("S1 convergence ≤ 0.5× {n}"), verdict(rel(Scenario::S1, &|c| c.secs, k), 0.5)));
        }
        if self.args.contenders.contains(&Contender::Floor) {
            rows.push((
                "S1 convergence ≤ 1.2× floor".into(),
                verdict(rel(Scenario::S1, &|c| c.secs, Contender::Floor), 1.2),
            ));
        }
        for &k in &kcms {
            let mut v = verdict(rel(Scenario::S2, &|c| c.flips.as_ref().map(|f| f.e2e.1), k), 0.5);
            // What no controller can go below: the status write's own way to the watchers.
            let before = ratio(
                self.cell(Scenario::S2, e).and_then(|c| c.flips.as_ref().map(|f| f.before.1)),
                self.cell(Scenario::S2, k).and_then(|c| c.flips.as_ref().map(|f| f.e2e.1)),
            );
            if let Some(b) = before
                && v.ends_with(')')
            {
                v.pop();
                v.push_str(&format!("; status write → pod event alone: {})", show_ratio(Some(b))));
            }
            rows.push((format!("S2 latency p99 ≤ 0.5× {}", k.name()), v));
        }
        if let Some(f) = self.cell(Scenario::S2, e).and_then(|c| c.flips.clone()) {
            let v = if f.share.1 <= 50.0 {
                format!("met (p99 {:.1} ms, p50 {:.1} ms)", f.share.1, f.share.0)
            } else {
                format!(
                    "**missed** (p99 {:.1} ms, {:.1}× the target; p50 {:.1} ms)",
                    f.share.1,
                    f.share.1 / 50.0,
                    f.share.0
                )
            };
            rows.push(("S2 controller share ≤ 50 ms (p99)".into(), v));
        }
        if let Some(c) = self.cell(Scenario::S2, e) {
            let w = per_flip(c, c.slices.total());
            rows.push((
                "one slice write per single-pod change (S2)".into(),
                match w {
                    Some(w) if w <= 1.0 => format!("met ({w:.2} per flip)"),
                    Some(w) => format!("**missed** ({w:.2} per flip)"),
                    None => "not measured".into(),
                },
            ));
        }
        for (s, what) in [(Scenario::S3, "restart"), (Scenario::S4, "takeover from kcm")] {
            if let Some(c) = self.cell(s, e) {
                let (a, b) = (c.slices.total(), c.endpoints.total());
                rows.push((
                    format!("zero writes on {what} ({s:?})"),
                    if a + b == 0.0 {
                        "met (0)".into()
                    } else {
                        format!("**missed** ({a} slice + {b} Endpoints writes)")
                    },
                ));
            }
        }
        for &k in &kcms {
            for s in [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4] {
                // S1 and S2 always; S3 and S4 where both ran (kcm, run first, has no S4).
                if s > Scenario::S2 && (self.cell(s, e).is_none() || self.cell(s, k).is_none()) {
                    continue;
                }
                rows.push((
                    format!("peak RSS ≤ 0.25× {} ({s:?})", k.name()),
                    verdict(rel(s, &|c| mib(c.usage.peak_rss_kib), k), 0.25),
                ));
                rows.push((format!("CPU ≤ 0.33× {} ({s:?})", k.name()), verdict(rel(s, &|c| c.usage.cpu_s, k), 0.33)));
            }
        }
        let mut out = String::from("| target (epslice) | result |\n| --- | --- |\n");
        for (t, v) in rows {
            let _ = writeln!(out, "| {t} | {v} |");
        }
        out
    }

    fn notes(&self) -> String {
        let mut out = String::new();
        for s in [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4] {
            for (i, &c) in self.args.contenders.iter().enumerate() {
                if let Some(n) = self.results.get(&(s, i)).and_then(|x| x.note.clone()) {
                    let _ = writeln!(out, "- {s:?} {}: {n}", c.name());
                }
            }
        }
        for f in &self.failures {
            let _ = writeln!(out, "- FAILED {f}");
        }
        out
    }

    /// The whole section.
    pub fn markdown(&self) -> String {
        let v = envtest::versions();
        let a = self.args;
        let mut out = String::new();
        let _ = writeln!(out, "### epslice-bench run, {}\n", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- Build: harness {}; epslice `{}` (`just bench` uses the `dist` build, what ships); kube-apiserver / kube-controller-manager {}, etcd {}, kwok {}",
            if cfg!(debug_assertions) { "debug (not representative)" } else { "release" },
            super::contender::epslice_bin(a).map_or_else(|e| format!("unknown: {e}"), |p| p.display().to_string()),
            v.kubernetes,
            v.etcd,
            v.kwok
        );
        let _ = writeln!(
            out,
            "- Scale: {} Services ({} × {} pods + {} × {} pods), {} pods, {} kwok nodes in 3 zones (objects created in {:.0?}); S2: {} flips/s for {} s{}",
            self.services,
            a.services,
            a.pods_per_service,
            a.big_services,
            a.big_pods_per_service,
            self.pods,
            a.nodes,
            self.setup,
            a.flips_per_second,
            a.churn_seconds,
            if a.s2_rounds > 1 && a.has(Scenario::S2) { format!(", {} rounds", a.s2_rounds) } else { String::new() }
        );
        let _ = writeln!(
            out,
            "- Writes are `apiserver_request_total` deltas (create/update/delete = POST/PUT+PATCH/DELETE); CPU = utime+stime from /proc/<pid>/stat ÷ CLK_TCK ({}); peak RSS = VmHWM (reset per window through /proc/<pid>/clear_refs where allowed). floor runs inside the harness: no RSS/CPU. apiserver time per write = `apiserver_request_duration_seconds` sum ÷ count over the writes. apiserver + etcd CPU = their utime+stime from the contender's start to convergence (S1), over the churn and drain (S2), or from the start until settled (S3, S4, including the quiet --settle-seconds); per write divides it by the scenario's writes to endpointslices and Endpoints (in S1 counted until settled). It includes what the harness itself makes the server do in every contender's window alike (S2: its status writes and their watch fan-out; S3, S4: the idle quiet period).",
            self.tck
        );
        if a.s1_runs > 1 && a.has(Scenario::S1) {
            let _ = writeln!(
                out,
                "- S1 runs {} times per contender, each from no outputs with a fresh process; its rows are the median run's, except peak RSS (the highest of the runs).",
                a.s1_runs
            );
        }
        if a.s2_rounds > 1 && a.has(Scenario::S2) {
            let _ = writeln!(
                out,
                "- S2 runs {} rounds per contender, back to back on the same process (the floor: the same pod watch), round k flipping the same pods for every contender; its rows are those of the round with the median end-to-end p99, except peak RSS (the highest of the rounds).",
                a.s2_rounds
            );
        }
        out.push('\n');
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(&self.targets());
        let notes = self.notes();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            out.push_str(&notes);
        }
        out
    }
}

/// Writes `section` between the markers of `path` (appending the markers if absent; creating
/// the file with a `# Benchmarks` heading if missing).
pub fn write_doc(path: &Path, section: &str) -> anyhow::Result<()> {
    epslice_integration_tests::benchdoc::write_section(path, BEGIN, END, section, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of `results`, without machine, command or scale.
    fn markdown(args: &Args, results: &super::super::Results) -> String {
        let r = Report {
            args,
            results,
            machine: String::new(),
            command: String::new(),
            setup: Duration::ZERO,
            pods: 0,
            services: 0,
            tck: 100.0,
            failures: Vec::new(),
        };
        r.markdown()
    }

    #[test]
    fn verdicts_near_the_target_show_three_decimals() {
        assert_eq!(verdict(Some(0.254), 0.25), "**missed** (0.254×, 1.02× the target)");
        assert_eq!(verdict(Some(0.246), 0.25), "met (0.246×)");
        assert_eq!(verdict(Some(0.1), 0.25), "met (0.10×)");
        assert_eq!(verdict(Some(0.75), 0.5), "**missed** (0.75×, 1.50× the target)");
        assert_eq!(verdict(None, 0.5), "not measured");
    }

    #[test]
    fn a_failed_median_run_shows_failed_not_zero_writes() {
        use clap::Parser as _;
        let mut args = Args::parse_from(["epslice-bench", "--scenarios", "S1", "--contenders", "epslice,floor"]);
        args.validate().unwrap();
        let mut results = super::super::Results::new();
        results.insert(
            (Scenario::S1, 0),
            Cell { secs: Some(f64::INFINITY), runs: vec![f64::INFINITY; 3], ..Default::default() },
        );
        results.insert((Scenario::S1, 1), Cell { secs: Some(2.0), runs: vec![2.0; 3], ..Default::default() });
        let md = markdown(&args, &results);
        assert!(
            md.contains("| S1 | convergence, each run (s) | failed / failed / failed | 2.00 / 2.00 / 2.00 |"),
            "{md}"
        );
        assert!(md.contains("| S1 | EndpointSlice writes (create/update/delete) | failed | 0/0/0 | – |"), "{md}");
        assert!(md.contains("| S1 convergence ≤ 1.2× floor | **missed** (∞) |"), "{md}");
    }

    #[test]
    fn s2_shows_the_median_round_every_round_and_the_bound_before_any_controller() {
        use clap::Parser as _;
        let mut args = Args::parse_from(["epslice-bench", "--scenarios", "S2", "--contenders", "kcm,epslice"]);
        args.validate().unwrap();
        let s2 = |p99: f64, before99: f64, runs: Vec<f64>| Cell {
            flips: Some(super::super::FlipStats {
                sent: 1200,
                seen: 1200,
                e2e: (10.0, p99),
                share: (5.0, 12.0),
                before: (7.0, before99),
                ..Default::default()
            }),
            runs,
            ..Default::default()
        };
        let mut results = super::super::Results::new();
        results.insert((Scenario::S2, 0), s2(60.0, 20.0, vec![70.0, 60.0, 45.0]));
        results.insert((Scenario::S2, 1), s2(27.0, 15.0, vec![27.0, 31.0, 26.5]));
        let md = markdown(&args, &results);
        assert!(md.contains("| S2 | latency p99, median of 3 rounds (ms) | 60.0 | 27.0 | 0.45× |"), "{md}");
        assert!(
            md.contains("| S2 | latency p99, each round (ms) | 70.0 / 60.0 / 45.0 | 27.0 / 31.0 / 26.5 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| S2 latency p99 ≤ 0.5× kcm | met (0.45×; status write → pod event alone: 0.25×) |"),
            "{md}"
        );
        assert!(md.contains("S2 runs 3 rounds per contender"), "{md}");
    }

    #[test]
    fn a_failed_contender_run_is_a_miss_not_a_gap() {
        let inf = f64::INFINITY;
        assert_eq!(verdict(ratio(Some(inf), Some(3.0)), 0.5), "**missed** (∞)");
        assert_eq!(verdict(ratio(Some(2.0), Some(inf)), 0.5), "met (0.00×)");
        assert_eq!(verdict(ratio(Some(inf), Some(inf)), 0.5), "**missed** (∞)");
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(None, Some(4.0)), None);
    }
}
