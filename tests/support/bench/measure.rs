//! Measurements: the apiserver's request counters, a process's peak RSS and CPU time, and the
//! machine.

use std::collections::BTreeMap;

use anyhow::Context as _;

/// The apiserver's counters for endpointslices and endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// `apiserver_request_total`: (resource, verb, code class) → count. Code class is `"2xx"`,
    /// `"4xx"`, …
    pub requests: BTreeMap<(String, String, String), f64>,
    /// `apiserver_request_duration_seconds` of writes: resource → (sum of seconds, count).
    pub write_seconds: BTreeMap<String, (f64, f64)>,
}

/// Writes to one resource, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Writes {
    /// POST.
    pub create: f64,
    /// PUT, PATCH, APPLY.
    pub update: f64,
    /// DELETE, DELETECOLLECTION.
    pub delete: f64,
    /// Of those, answered with 4xx/5xx (409 conflicts …).
    pub failed: f64,
}

impl Writes {
    /// All writes.
    pub fn total(&self) -> f64 {
        self.create + self.update + self.delete
    }

    /// `C/U/D` (and `, N failed`).
    pub fn show(&self) -> String {
        let mut s = format!("{}/{}/{}", self.create, self.update, self.delete);
        if self.failed > 0.0 {
            s.push_str(&format!(" ({} failed)", self.failed));
        }
        s
    }
}

impl Counters {
    /// Reads the apiserver's `/metrics` through the admin client.
    pub async fn fetch(client: &kube::Client) -> anyhow::Result<Counters> {
        let req = http::Request::get("/metrics").body(Vec::new()).context("building GET /metrics")?;
        let text = client.request_text(req).await.context("GET /metrics from kube-apiserver")?;
        Ok(Counters::parse(&text))
    }

    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for line in text.lines() {
            let (metric, rest) = match line.split_once('{') {
                Some((m, r)) if m.starts_with("apiserver_request_") => (m, r),
                _ => continue,
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
            let label =
                |k: &str| labels.split(',').find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\"")?.strip_suffix('"'));
            let resource = label("resource").unwrap_or("");
            if !(resource == "endpointslices" || resource == "endpoints")
                || !label("subresource").unwrap_or("").is_empty()
            {
                continue;
            }
            let Ok(v) = value.trim().parse::<f64>() else { continue };
            let verb = label("verb").unwrap_or("");
            match metric {
                "apiserver_request_total" => {
                    let class = format!("{}xx", label("code").unwrap_or("").chars().next().unwrap_or('?'));
                    *c.requests.entry((resource.to_string(), verb.to_string(), class)).or_insert(0.0) += v;
                }
                "apiserver_request_duration_seconds_sum" | "apiserver_request_duration_seconds_count"
                    if verb_kind(verb).is_some() =>
                {
                    let e = c.write_seconds.entry(resource.to_string()).or_insert((0.0, 0.0));
                    if metric.ends_with("_sum") {
                        e.0 += v;
                    } else {
                        e.1 += v;
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The apiserver's mean time per write to endpointslices and endpoints since `before`, in
    /// milliseconds (None without writes).
    pub fn write_ms_since(&self, before: &Counters) -> Option<f64> {
        let total = |c: &Counters| c.write_seconds.values().fold((0.0, 0.0), |(s, n), (ds, dn)| (s + ds, n + dn));
        let ((s1, n1), (s0, n0)) = (total(self), total(before));
        (n1 - n0 > 0.0).then(|| (s1 - s0) / (n1 - n0) * 1000.0)
    }

    /// Writes to `resource` since `before`.
    pub fn writes_since(&self, before: &Counters, resource: &str) -> Writes {
        let mut w = Writes::default();
        for ((r, verb, class), v) in &self.requests {
            if r != resource {
                continue;
            }
            let d = v - before.requests.get(&(r.clone(), verb.clone(), class.clone())).copied().unwrap_or(0.0);
            match verb_kind(verb) {
                Some(Kind::Create) => w.create += d,
                Some(Kind::Update) => w.update += d,
                Some(Kind::Delete) => w.delete += d,
                None => continue,
            }
            if class != "2xx" {
                w.failed += d;
            }
        }
        w
    }

    /// All writes to both resources (for settling).
    pub fn total_writes(&self) -> f64 {
        let zero = Counters::default();
        self.writes_since(&zero, "endpointslices").total() + self.writes_since(&zero, "endpoints").total()
    }
}

enum Kind {
    Create,
    Update,
    Delete,
}

/// Which kind of write an apiserver verb label is (None for reads).
fn verb_kind(verb: &str) -> Option<Kind> {
    match verb {
        "POST" | "CREATE" => Some(Kind::Create),
        "PUT" | "PATCH" | "APPLY" | "UPDATE" => Some(Kind::Update),
        "DELETE" | "DELETECOLLECTION" => Some(Kind::Delete),
        _ => None,
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds (all its threads; children not included).
pub fn cpu_seconds(pid: u32, tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / tck)
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Resets the peak RSS of a process (`echo 5 > /proc/<pid>/clear_refs`); false if not allowed.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU and peak RSS of one process over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU seconds used in the window.
    pub cpu_s: Option<f64>,
    /// Peak RSS (KiB) in the window (since process start if the reset was refused).
    pub peak_rss_kib: Option<u64>,
}

/// A running window over a process.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pid: Option<u32>,
    cpu0: Option<f64>,
    tck: f64,
}

impl Window {
    /// Starts a window (resets the peak RSS when `reset_peak`).
    pub fn start(pid: Option<u32>, tck: f64, reset_peak: bool) -> Window {
        if let Some(p) = pid
            && reset_peak
        {
            reset_peak_rss(p);
        }
        Window { pid, cpu0: pid.map(|p| cpu_seconds(p, tck).unwrap_or(0.0)), tck }
    }

    /// Ends it.
    pub fn end(&self) -> Usage {
        let Some(pid) = self.pid else { return Usage::default() };
        Usage {
            cpu_s: cpu_seconds(pid, self.tck).map(|c| c - self.cpu0.unwrap_or(0.0)),
            peak_rss_kib: peak_rss_kib(pid),
        }
    }
}

/// CPU seconds used by several processes (the control plane's) over a window.
#[derive(Debug, Clone)]
pub struct CpuWindow {
    start: Vec<(u32, f64)>,
    tck: f64,
}

impl CpuWindow {
    /// Starts a window over `pids` (processes that cannot be read are left out).
    pub fn start(pids: impl IntoIterator<Item = u32>, tck: f64) -> CpuWindow {
        let start = pids.into_iter().filter_map(|p| Some((p, cpu_seconds(p, tck)?))).collect();
        CpuWindow { start, tck }
    }

    /// CPU seconds since the start, summed; None if no process was read at the start, or one of
    /// them cannot be read now or went backwards (it exited, or its pid was reused).
    pub fn end(&self) -> Option<f64> {
        if self.start.is_empty() {
            return None;
        }
        let mut sum = 0.0;
        for &(p, c0) in &self.start {
            let used = cpu_seconds(p, self.tck)? - c0;
            if used < 0.0 {
                return None;
            }
            sum += used;
        }
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_window_sums_the_processes_it_can_read() {
        let tck = clk_tck();
        let me = std::process::id();
        // pid 0 never has a /proc entry: left out, not an error.
        let w = CpuWindow::start([me, 0], tck);
        assert!(w.end().expect("this process is readable") >= 0.0);
        // Busy until the kernel has charged a tick to this process (at most 10 s).
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while w.end() == Some(0.0) && t0.elapsed() < std::time::Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = w.end().expect("this process is readable");
        assert!(used > 0.0 && used <= t0.elapsed().as_secs_f64() + 1.0, "{used}");
        assert_eq!(CpuWindow::start([0], tck).end(), None);
    }

    #[test]
    fn parses_request_counters() {
        let text = r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="POST",version="v1"} 12
apiserver_request_total{code="409",component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="PUT",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="endpoints",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 7
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="POST",version="v1"} 0.3
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="POST",version="v1"} 12
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="PUT",version="v1"} 0.1
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="resource",subresource="",verb="PUT",version="v1"} 2
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="cluster",subresource="",verb="LIST",version="v1"} 9
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="cluster",subresource="",verb="LIST",version="v1"} 1"#;
        let c = Counters::parse(text);
        let w = c.writes_since(&Counters::default(), "endpointslices");
        assert_eq!((w.create, w.update, w.delete, w.failed), (12.0, 2.0, 0.0, 2.0));
        assert_eq!(c.total_writes(), 17.0);
        let ms = c.write_ms_since(&Counters::default()).unwrap();
        assert!((ms - 400.0 / 14.0).abs() < 1e-9, "{ms}");
        assert_eq!(c.write_ms_since(&c), None);
    }
}
