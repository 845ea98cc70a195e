//! `epslice-bench`: kube-controller-manager vs epslice vs a write floor, side by side on one real
//! control plane. See docs/benchmarks.md for what is measured and how.

pub mod cli;
pub mod cluster;
pub mod contender;
pub mod floor;
pub mod measure;
pub mod observe;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envtest::ControlPlane;
use tokio_util::task::AbortOnDropHandle;

use cli::{Args, Contender, Scenario};
use cluster::Layout;
use contender::Proc;
use measure::{Counters, CpuWindow, Usage, Window, Writes};
use observe::{Flip, Observer};

/// S2 latency statistics (milliseconds).
#[derive(Debug, Clone, Default)]
pub struct FlipStats {
    /// Flips sent.
    pub sent: usize,
    /// Flips whose slice change was observed.
    pub seen: usize,
    /// Status writes that failed.
    pub failed: usize,
    /// Status write sent → slice event: p50, p99.
    pub e2e: (f64, f64),
    /// Pod watch event → slice watch event: p50, p99.
    pub share: (f64, f64),
    /// Status write sent → its pod watch event: p50, p99 (before any controller can act).
    pub before: (f64, f64),
    /// By the size (pods) of the flipped pod's Service: flips, e2e and share p50/p99.
    pub by_size: BTreeMap<usize, SizeStats>,
}

/// S2 statistics of the flips in Services of one size (milliseconds).
#[derive(Debug, Clone, Default)]
pub struct SizeStats {
    /// Flips sent (status write not failed).
    pub flips: usize,
    /// Status write sent → slice event: p50, p99.
    pub e2e: (f64, f64),
    /// Pod watch event → slice watch event: p50, p99.
    pub share: (f64, f64),
}

/// One contender in one scenario.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// S1: seconds from controller start to convergence (of the median run).
    pub secs: Option<f64>,
    /// S1: every run's convergence time; S2: every round's end-to-end p99 (ms); in run order.
    pub runs: Vec<f64>,
    /// Writes to endpointslices.
    pub slices: Writes,
    /// Writes to endpoints.
    pub endpoints: Writes,
    /// The apiserver's mean time per write to endpointslices and Endpoints (ms): separates
    /// server time from the client's.
    pub write_ms: Option<f64>,
    /// The controller process's CPU and peak RSS.
    pub usage: Usage,
    /// CPU seconds of kube-apiserver + etcd (S1: from the contender's start to convergence; S2:
    /// over the churn and drain; S3, S4: from the start until settled, including the quiet
    /// --settle-seconds): what the contender costs the shared server.
    pub server_cpu_s: Option<f64>,
    /// S2 only.
    pub flips: Option<FlipStats>,
    /// Anything the reader must know (failures, takeover source …).
    pub note: Option<String>,
}

/// What S2 churns against: a controller process, or the floor inside the harness.
enum Runner {
    Proc(Proc),
    Floor(floor::Reactor),
}

impl Runner {
    fn name(&self) -> &'static str {
        match self {
            Runner::Proc(p) => p.contender.name(),
            Runner::Floor(_) => Contender::Floor.name(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Runner::Proc(p) => p.pid(),
            Runner::Floor(_) => None,
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Runner::Proc(p) => p.check_alive(),
            Runner::Floor(f) => f.check_alive(),
        }
    }
}

/// All results of a run.
pub type Results = BTreeMap<(Scenario, usize), Cell>;

struct Ctx<'a> {
    args: &'a Args,
    cp: &'a ControlPlane,
    client: kube::Client,
    layout: Layout,
    obs: Observer,
    bin: PathBuf,
    tck: f64,
    /// kube-apiserver and etcd.
    server_pids: Vec<u32>,
    seq: usize,
    ready: Vec<bool>,
    rng: u64,
}

impl Ctx<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout_seconds)
    }

    async fn counters(&self) -> anyhow::Result<Counters> {
        Counters::fetch(&self.client).await
    }

    async fn start(&mut self, c: Contender) -> anyhow::Result<Proc> {
        self.seq += 1;
        Proc::start(self.cp, self.args, &self.bin, c, self.seq).await
    }

    /// Deletes every slice and Endpoints object of the benchmark and waits until the watch shows none.
    async fn reset(&self) -> anyhow::Result<()> {
        cluster::delete_outputs(&self.client, &self.layout).await?;
        self.obs
            .wait("deleting the previous slices and Endpoints", Duration::from_secs(300), |s| s.objects() == (0, 0))
            .await
    }

    /// Waits until no write to endpointslices / endpoints happened for --settle-seconds.
    async fn settle(&self, mut proc: Option<&mut Proc>) -> anyhow::Result<()> {
        let quiet = Duration::from_secs(self.args.settle_seconds);
        let t0 = Instant::now();
        let mut last = self.counters().await?.total_writes();
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(p) = proc.as_deref_mut() {
                p.check_alive()?;
            }
            let cur = self.counters().await?.total_writes();
            if cur != last {
                (last, since) = (cur, Instant::now());
            }
            if since.elapsed() >= quiet {
                return Ok(());
            }
            anyhow::ensure!(t0.elapsed() < self.timeout(), "writes did not stop within {:?}", self.timeout());
        }
    }

    async fn wait_converged(&self, proc: Option<&mut Proc>) -> anyhow::Result<Instant> {
        let t0 = Instant::now();
        let mut proc = proc;
        loop {
            if let Some(at) = self.obs.state().converged_at() {
                return Ok(at);
            }
            if let Some(p) = proc.as_deref_mut() {
                p.check_alive()?;
            }
            if t0.elapsed() > self.timeout() {
                let (s, e, n) = self.obs.state().progress();
                anyhow::bail!(
                    "not converged within {:?}: slices complete for {s}/{n} Services, Endpoints for {e}/{n}",
                    self.timeout()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn server_window(&self) -> CpuWindow {
        CpuWindow::start(self.server_pids.iter().copied(), self.tck)
    }

    /// With --apiserver-profile: records kube-apiserver's CPU profile for
    /// --apiserver-profile-seconds from now into `<dir>/<name>.pprof`, in the background. Dropping
    /// the handle (a run that failed) stops it: kube-apiserver records one profile at a time.
    fn profile_apiserver(&self, name: &str) -> Option<AbortOnDropHandle<()>> {
        let dir = self.args.apiserver_profile.clone()?;
        let secs = self.args.apiserver_profile_seconds;
        let client = self.client.clone();
        let file = dir.join(format!("{name}.pprof"));
        Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let r = async {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                let req = http::Request::get(format!("/debug/pprof/profile?seconds={secs}")).body(Vec::new())?;
                let mut body = client.request_stream(req).await?;
                let mut bytes = Vec::new();
                futures::AsyncReadExt::read_to_end(&mut body, &mut bytes).await?;
                std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
                anyhow::Ok(())
            }
            .await;
            match r {
                Ok(()) => eprintln!("  apiserver profile: {}", file.display()),
                Err(e) => eprintln!("  apiserver profile {} failed: {e:#}", file.display()),
            }
        })))
    }

    fn converged_note(&self) -> Option<String> {
        let (s, e, n) = self.obs.state().progress();
        (s != n || e != n).then(|| format!("NOT converged at the end: slices {s}/{n}, Endpoints {e}/{n}"))
    }

    /// S1 (fresh outputs → converged), then settle. Returns the running process (None for the floor).
    async fn bulk(&mut self, c: Contender, run: usize) -> anyhow::Result<(Option<Proc>, Cell)> {
        self.reset().await?;
        let before = self.counters().await?;
        let profile = self.profile_apiserver(&format!("S1-{}-run{run}", c.name()));
        let server = self.server_window();
        let t0 = Instant::now();
        let mut cell = Cell::default();
        let mut proc = None;
        if c == Contender::Floor {
            let f = contender::run_floor(&self.client, &self.layout, self.args.floor_concurrency).await?;
            if f.errors > 0 {
                cell.note = Some(format!("{} writes failed, first: {}", f.errors, f.first_error.unwrap_or_default()));
            }
            eprintln!("  floor: listed and planned in {:.2?}", f.plan_time);
        } else {
            proc = Some(self.start(c).await?);
        }
        let win = Window::start(proc.as_ref().and_then(Proc::pid), self.tck, false);
        let at = self.wait_converged(proc.as_mut()).await?;
        cell.server_cpu_s = server.end();
        cell.secs = Some(at.saturating_duration_since(t0).as_secs_f64());
        eprintln!("  S1 {}: converged after {:.2} s; settling", c.name(), cell.secs.unwrap_or(0.0));
        self.settle(proc.as_mut()).await?;
        let after = self.counters().await?;
        cell.usage = win.end();
        cell.slices = after.writes_since(&before, "endpointslices");
        cell.endpoints = after.writes_since(&before, "endpoints");
        cell.write_ms = after.write_ms_since(&before);
        if let Some(p) = profile {
            let _ = p.await;
        }
        Ok((proc, cell))
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// S2: readiness flips at a fixed rate; then every pod back to Ready and settle.
    async fn churn(&mut self, proc: &mut Runner, round: usize) -> anyhow::Result<Cell> {
        // Round k flips the same pods in the same order for every contender (all pods start
        // Ready), so no contender draws more flips of big Services than another.
        self.rng = flip_seed(self.args.seed, round);
        let errors_before = match proc {
            Runner::Floor(f) => f.errors().0,
            Runner::Proc(_) => 0,
        };
        self.obs.watch_pods().await?;
        let before = self.counters().await?;
        let win = Window::start(proc.pid(), self.tck, true);
        let server = self.server_window();
        let fps = f64::from(self.args.flips_per_second);
        let total = (self.args.churn_seconds as f64 * fps).round() as usize;
        let n = self.layout.pods.len();
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0;
        for k in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / fps)).await;
            proc.check_alive()?;
            let mut pick = None;
            for _ in 0..64 {
                let g = (self.next_rand() % n as u64) as usize;
                let p = &self.layout.pods[g];
                if !self.obs.state().pending.contains_key(&format!("{}/{}", p.ns, p.name)) {
                    pick = Some(g);
                    break;
                }
            }
            let Some(g) = pick else { continue };
            self.ready[g] = !self.ready[g];
            let target = self.ready[g];
            let key = format!("{}/{}", self.layout.pods[g].ns, self.layout.pods[g].name);
            let changed = cluster::now_rfc3339();
            let flip = Flip {
                key: key.clone(),
                target,
                sent: Instant::now(),
                rv: None,
                pod_seen: Vec::new(),
                slice_seen: None,
                failed: false,
            };
            self.obs.state().pending.insert(key.clone(), flip);
            sent += 1;
            let (client, layout, state) = (self.client.clone(), self.layout.clone(), self.obs.shared());
            tasks.spawn(async move {
                let r = cluster::set_ready(&client, &layout, g, target, &changed).await;
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(rv) => {
                        if let Some(f) = st.pending.get_mut(&key) {
                            f.rv = Some(rv);
                        } else if let Some(f) = st.done.iter_mut().rev().find(|f| f.key == key) {
                            f.rv = Some(rv);
                        }
                    }
                    Err(e) => {
                        eprintln!("  flip of {key} failed: {e:#}");
                        if let Some(mut f) = st.pending.remove(&key) {
                            f.failed = true;
                            st.done.push(f);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let churn_end = Instant::now();
        let drain = Duration::from_secs(self.args.drain_seconds);
        while !self.obs.state().pending.is_empty() && churn_end.elapsed() < drain {
            proc.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = self.counters().await?;
        let usage = win.end();
        let server_cpu_s = server.end();
        self.obs.stop_pods();
        let (done, pending) = {
            let mut st = self.obs.state();
            let pending: Vec<Flip> = st.pending.drain().map(|(_, f)| f).collect();
            (std::mem::take(&mut st.done), pending)
        };
        let missed = pending.len();
        let size: HashMap<String, usize> = (self.layout.pods.iter())
            .map(|p| (format!("{}/{}", p.ns, p.name), self.layout.services[p.svc].pods))
            .collect();
        if let Some(dir) = &self.args.flips_csv {
            let name = proc.name();
            let file = dir.join(if self.args.s2_rounds > 1 {
                format!("S2-{name}-round{round}.csv")
            } else {
                format!("S2-{name}.csv")
            });
            write_flips_csv(&file, &size, start.into_std(), done.iter().chain(&pending))
                .with_context(|| format!("writing {}", file.display()))?;
            eprintln!("  S2 flips: {}", file.display());
        }
        let stats = flip_stats(&done, &pending, sent, &size);
        eprintln!(
            "  S2 {}: {}/{} flips seen, p50 {:.1} ms, p99 {:.1} ms (controller share p50 {:.1} ms, p99 {:.1} ms)",
            proc.name(),
            stats.seen,
            stats.sent,
            stats.e2e.0,
            stats.e2e.1,
            stats.share.0,
            stats.share.1
        );
        let mut cell = Cell {
            slices: after.writes_since(&before, "endpointslices"),
            endpoints: after.writes_since(&before, "endpoints"),
            write_ms: after.write_ms_since(&before),
            usage,
            server_cpu_s,
            note: (missed > 0).then(|| format!("{missed} flips not seen within --drain-seconds")),
            flips: Some(stats),
            ..Default::default()
        };
        // Back to all Ready (not measured), so the next contender starts from the same state.
        let back: Vec<usize> = (0..n).filter(|&g| !self.ready[g]).collect();
        let (client, layout) = (&self.client, &self.layout);
        let created = layout.created_at.clone();
        let results: Vec<anyhow::Result<String>> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter(back.iter().map(|&g| cluster::set_ready(client, layout, g, true, &created))),
            self.args.create_concurrency,
        ))
        .await;
        for r in results {
            r.context("restoring pod readiness after S2")?;
        }
        for g in back {
            self.ready[g] = true;
        }
        match proc {
            Runner::Proc(p) => self.settle(Some(p)).await?,
            Runner::Floor(f) => {
                self.settle(None).await?;
                f.check_alive()?;
                let (n, first) = f.errors();
                if n > errors_before {
                    add_note(
                        &mut cell.note,
                        format!("{} floor writes failed, first ever: {}", n - errors_before, first.unwrap_or_default()),
                    );
                }
            }
        }
        if let Some(n) = self.converged_note() {
            add_note(&mut cell.note, n);
        }
        Ok(cell)
    }

    /// S3 / S4: start `c` on existing objects, wait until ready and quiet, count writes.
    async fn start_on_existing(&mut self, c: Contender) -> anyhow::Result<(Proc, Cell)> {
        let before = self.counters().await?;
        let server = self.server_window();
        let mut proc = self.start(c).await?;
        let win = Window::start(proc.pid(), self.tck, false);
        proc.wait_up(self.timeout()).await?;
        self.settle(Some(&mut proc)).await?;
        let server_cpu_s = server.end();
        let after = self.counters().await?;
        let cell = Cell {
            slices: after.writes_since(&before, "endpointslices"),
            endpoints: after.writes_since(&before, "endpoints"),
            write_ms: after.write_ms_since(&before),
            usage: win.end(),
            server_cpu_s,
            note: self.converged_note(),
            ..Default::default()
        };
        Ok((proc, cell))
    }
}

/// `--flips-csv`: one line per flip, times in milliseconds since `start` (empty when not seen).
fn write_flips_csv<'a>(
    file: &std::path::Path,
    size: &HashMap<String, usize>,
    start: Instant,
    flips: impl Iterator<Item = &'a Flip>,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let ms = |t: Option<Instant>| t.map_or(String::new(), |t| format!("{:.3}", (t - start).as_secs_f64() * 1000.0));
    let mut rows: Vec<&Flip> = flips.collect();
    rows.sort_by_key(|f| f.sent);
    let mut out = String::from("pod,service_pods,ready,failed,sent_ms,pod_event_ms,slice_ms\n");
    for f in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            f.key,
            size.get(&f.key).copied().unwrap_or(0),
            f.target,
            f.failed,
            ms(Some(f.sent)),
            ms(f.pod_event()),
            ms(f.slice_seen)
        );
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, out)?;
    Ok(())
}

/// The xorshift state of S2 round `round` for `--seed`.
fn flip_seed(seed: u64, round: usize) -> u64 {
    seed.max(1).wrapping_add(round.saturating_sub(1) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Appends `note` to `to` ("; "-separated).
fn add_note(to: &mut Option<String>, note: String) {
    *to = Some(match to.take() {
        Some(n) => format!("{n}; {note}"),
        None => note,
    });
}

/// The S1 run with the median convergence time, carrying every run's time, the highest peak RSS
/// and the notes of the failed runs (whose time is infinite).
fn median_run(cells: Vec<Cell>) -> Cell {
    median_by(cells, |c| c.secs, false)
}

/// The S2 round with the median end-to-end p99, carrying every round's p99, the highest peak RSS
/// and every round's notes (each says its round). A round whose flips all failed has no p99 and
/// counts as infinite.
fn median_round(cells: Vec<Cell>) -> Cell {
    median_by(cells, |c| c.flips.as_ref().map(|f| f.e2e.1).filter(|p| !p.is_nan()), true)
}

/// The cell with the median `key` (a missing key counts as infinite), with every cell's key in
/// order in `runs`, the highest peak RSS of all, and the notes of the cells whose key is infinite
/// (of every cell with `all_notes`).
fn median_by(mut cells: Vec<Cell>, key: impl Fn(&Cell) -> Option<f64>, all_notes: bool) -> Cell {
    let k = |c: &Cell| key(c).unwrap_or(f64::INFINITY);
    let runs: Vec<f64> = cells.iter().map(k).collect();
    let peak = cells.iter().filter_map(|c| c.usage.peak_rss_kib).max();
    let failed: Vec<String> =
        cells.iter().filter(|c| all_notes || k(c).is_infinite()).filter_map(|c| c.note.clone()).collect();
    cells.sort_by(|a, b| k(a).total_cmp(&k(b)));
    let mid = cells.len().saturating_sub(1) / 2;
    let mut cell = cells.into_iter().nth(mid).unwrap_or_default();
    cell.runs = runs;
    cell.usage.peak_rss_kib = peak;
    if !failed.is_empty() {
        cell.note = Some(match cell.note.take().filter(|n| !failed.contains(n)) {
            Some(n) => format!("{n}; {}", failed.join("; ")),
            None => failed.join("; "),
        });
    }
    cell
}

/// Percentiles of S2's flips. `done` are the flips whose slice change was seen (or whose status
/// write failed), `pending` the ones still unseen when the drain ended. A missing observation
/// counts as slower than every seen one, so no percentile improves by losing a flip: an unseen
/// slice change makes the flip's end-to-end latency infinite, and its controller share too when
/// its pod event was seen; an unseen pod event makes "status write → pod event" infinite.
/// `size` maps a pod (`namespace/name`) to its Service's pod count (0 when missing).
fn flip_stats(done: &[Flip], pending: &[Flip], sent: usize, size: &HashMap<String, usize>) -> FlipStats {
    let sent_ok: Vec<&Flip> = done.iter().chain(pending).filter(|f| !f.failed).collect();
    let (e2e, share, before) = latencies(&sent_ok);
    let mut groups: BTreeMap<usize, Vec<&Flip>> = BTreeMap::new();
    for f in &sent_ok {
        groups.entry(size.get(&f.key).copied().unwrap_or(0)).or_default().push(f);
    }
    let by_size = groups
        .into_iter()
        .map(|(n, flips)| {
            let (e2e, share, _) = latencies(&flips);
            (n, SizeStats { flips: flips.len(), e2e: p50_p99(&e2e), share: p50_p99(&share) })
        })
        .collect();
    FlipStats {
        sent,
        seen: done.iter().filter(|f| f.slice_seen.is_some()).count(),
        failed: done.iter().filter(|f| f.failed).count(),
        e2e: p50_p99(&e2e),
        share: p50_p99(&share),
        before: p50_p99(&before),
        by_size,
    }
}

fn p50_p99(sorted: &[f64]) -> (f64, f64) {
    (percentile(sorted, 0.5), percentile(sorted, 0.99))
}

/// The sorted end-to-end latencies, controller shares and status write → pod event times of
/// `flips` (see [`flip_stats`] for what counts as infinite).
fn latencies(flips: &[&Flip]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut e2e: Vec<f64> =
        flips.iter().map(|f| f.slice_seen.map_or(f64::INFINITY, |s| ms(s.saturating_duration_since(f.sent)))).collect();
    let mut share: Vec<f64> = flips
        .iter()
        .filter_map(|f| {
            let p = f.pod_event()?;
            Some(match f.slice_seen {
                Some(s) if s >= p => ms(s - p),
                Some(s) => -ms(p - s),
                None => f64::INFINITY,
            })
        })
        .collect();
    let mut before: Vec<f64> = flips
        .iter()
        .map(|f| f.pod_event().map_or(f64::INFINITY, |p| ms(p.saturating_duration_since(f.sent))))
        .collect();
    for v in [&mut e2e, &mut share, &mut before] {
        v.sort_by(f64::total_cmp);
    }
    (e2e, share, before)
}

/// Everything one contender does: S4 on the previous contender's objects (when asked and of the
/// other kind), then S1 (from no outputs), S2, S3. Errors end this contender's run and are
/// recorded in its cells.
async fn run_contender(
    ctx: &mut Ctx<'_>,
    idx: usize,
    c: Contender,
    prev: Option<Contender>,
    res: &mut Results,
) -> anyhow::Result<()> {
    let args = ctx.args;
    if args.has(Scenario::S4)
        && c != Contender::Floor
        && let Some(p) = prev
        && p.is_kcm() != c.is_kcm()
    {
        eprintln!("== S4 {}: takeover of {}'s objects", c.name(), p.name());
        let (proc, mut cell) = ctx.start_on_existing(c).await?;
        proc.stop();
        cell.note = Some(match cell.note {
            Some(n) => format!("objects written by {}; {n}", p.name()),
            None => format!("objects written by {}", p.name()),
        });
        res.insert((Scenario::S4, idx), cell);
    }
    let wants = |s| args.has(s) && (c != Contender::Floor || s <= Scenario::S2);
    if !(wants(Scenario::S1) || wants(Scenario::S2) || wants(Scenario::S3) || wants(Scenario::S4)) {
        return Ok(());
    }
    // S1 also sets up S2 and S3; measured, it runs --s1-runs times. A failed run counts as an
    // infinitely slow one (a failure of the median run misses the target), and the others go on.
    let runs = if args.has(Scenario::S1) { args.s1_runs } else { 1 };
    let mut proc = None;
    let mut cells = Vec::new();
    let mut last_error = None;
    for run in 1..=runs {
        if let Some(p) = proc.take() {
            Proc::stop(p);
        }
        eprintln!("== S1 {} (run {run}/{runs}): from no slices / Endpoints to converged", c.name());
        match ctx.bulk(c, run).await {
            Ok((p, cell)) => {
                proc = p;
                cells.push(cell);
                last_error = None;
            }
            Err(e) => {
                eprintln!("!! S1 {} run {run}: {e:#}", c.name());
                cells.push(Cell {
                    secs: Some(f64::INFINITY),
                    note: Some(format!("run {run} failed: {e:#}")),
                    ..Default::default()
                });
                last_error = Some(e.context(format!("S1 run {run}")));
            }
        }
    }
    let cell = median_run(cells);
    if args.has(Scenario::S1) {
        res.insert((Scenario::S1, idx), cell);
    }
    // S2 and S3 go on from the last S1 run: they need it to have converged.
    if let Some(e) = last_error {
        return Err(e);
    }
    let mut proc = match proc {
        Some(p) => Runner::Proc(p),
        None if args.has(Scenario::S2) => {
            eprintln!("== S2 floor: listing, and the pod watch's initial list");
            Runner::Floor(
                floor::Reactor::start(&ctx.client, &ctx.layout, args.floor_concurrency, ctx.timeout())
                    .await
                    .context("S2: the floor")?,
            )
        }
        None => return Ok(()),
    };
    if args.has(Scenario::S2) {
        let rounds = args.s2_rounds;
        let mut cells = Vec::new();
        for round in 1..=rounds {
            eprintln!(
                "== S2 {} (round {round}/{rounds}): {} flips/s for {} s",
                c.name(),
                args.flips_per_second,
                args.churn_seconds
            );
            match ctx.churn(&mut proc, round).await {
                Ok(mut cell) => {
                    if rounds > 1 {
                        cell.note = cell.note.map(|n| format!("round {round}: {n}"));
                    }
                    cells.push(cell);
                }
                Err(e) => {
                    if let Runner::Proc(p) = proc {
                        p.stop();
                    }
                    return Err(e.context(format!("S2 round {round}")));
                }
            }
        }
        res.insert((Scenario::S2, idx), median_round(cells));
    }
    let Runner::Proc(mut proc) = proc else { return Ok(()) };
    if args.has(Scenario::S3) {
        eprintln!("== S3 {}: restart on its own objects", c.name());
        proc.stop();
        let (p, cell) = ctx.start_on_existing(c).await.context("S3")?;
        res.insert((Scenario::S3, idx), cell);
        proc = p;
    }
    proc.stop();
    Ok(())
}

/// Runs the benchmark; returns the markdown report and whether every contender completed.
pub async fn run(args: Args, command: String) -> anyhow::Result<(String, bool)> {
    let bin =
        if args.contenders.contains(&Contender::Epslice) { contender::epslice_bin(&args)? } else { PathBuf::new() };
    let machine = epslice_integration_tests::benchdoc::machine();
    let tck = measure::clk_tck();
    let layout = Layout::new(&args);
    eprintln!(
        "epslice-bench: {} Services ({} × {} pods + {} × {} pods), {} pods, {} nodes in 3 zones; contenders {}; scenarios {}",
        layout.services.len(),
        args.services,
        args.pods_per_service,
        args.big_services,
        args.big_pods_per_service,
        layout.pods.len(),
        args.nodes,
        args.contenders.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        args.scenarios.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(","),
    );
    if cfg!(debug_assertions) {
        eprintln!("epslice-bench: WARNING: a debug build; measure with --release (`just bench`)");
    }
    let opts = envtest::Options { kwok: true, nodes: cluster::nodes(args.nodes), ..Default::default() };
    let cp = ControlPlane::start(opts).await.context("starting the control plane")?;
    anyhow::ensure!(
        cp.pki().is_some() || !args.contenders.iter().any(|c| c.is_kcm()),
        "kube-controller-manager needs the envtest control plane: unset EPSLICE_TEST_KUBECONFIG or drop kcm from --contenders"
    );
    let client = cp.client().await?;
    eprintln!("creating the objects …");
    let setup = cluster::create(&client, &layout, args.create_concurrency).await?;
    eprintln!("objects created in {setup:.1?}");
    let obs = Observer::start(&client, &layout).await?;
    let n = layout.pods.len();
    let mut ctx = Ctx {
        args: &args,
        cp: &cp,
        client,
        layout,
        obs,
        bin,
        tck,
        server_pids: ["kube-apiserver", "etcd"].iter().filter_map(|n| cp.pid_of(n)).collect(),
        seq: 0,
        ready: vec![true; n],
        rng: flip_seed(args.seed, 1),
    };
    let mut res = Results::new();
    let mut prev = None;
    let mut failures = Vec::new();
    for (idx, &c) in args.contenders.iter().enumerate() {
        let failed_before = failures.len();
        match run_contender(&mut ctx, idx, c, prev, &mut res).await {
            Ok(()) => {}
            Err(e) => {
                eprintln!("!! {}: {e:#}", c.name());
                failures.push(format!("{}: {e:#}", c.name()));
            }
        }
        // S4 takes over converged objects only: not those of a contender that failed.
        prev = (c != Contender::Floor && failures.len() == failed_before).then_some(c);
    }
    let complete = failures.is_empty();
    let report = report::Report {
        args: &args,
        results: &res,
        machine,
        command,
        setup,
        pods: n,
        services: ctx.layout.services.len(),
        tck,
        failures,
    };
    Ok((report.markdown(), complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(secs: f64, rss: u64) -> Cell {
        Cell {
            secs: Some(secs),
            usage: Usage { cpu_s: Some(secs / 2.0), peak_rss_kib: Some(rss) },
            ..Default::default()
        }
    }

    #[test]
    fn the_median_run_keeps_every_time_and_the_highest_peak() {
        let m = median_run(vec![cell(3.0, 100), cell(1.0, 300), cell(2.0, 200)]);
        assert_eq!((m.secs, m.runs, m.usage.peak_rss_kib), (Some(2.0), vec![3.0, 1.0, 2.0], Some(300)));
        assert_eq!(m.usage.cpu_s, Some(1.0), "the median run's own CPU");
        assert_eq!(m.note, None);
    }

    #[test]
    fn the_median_round_is_chosen_by_its_end_to_end_p99() {
        let round = |p99: f64, share99: f64, rss: u64, note: Option<&str>| Cell {
            flips: Some(FlipStats { e2e: (10.0, p99), share: (4.0, share99), ..Default::default() }),
            usage: Usage { cpu_s: Some(p99 / 10.0), peak_rss_kib: Some(rss) },
            note: note.map(String::from),
            ..Default::default()
        };
        let m =
            median_round(vec![round(40.0, 9.0, 100, None), round(25.0, 30.0, 300, None), round(30.0, 12.0, 200, None)]);
        let f = m.flips.clone().unwrap();
        assert_eq!((f.e2e.1, f.share.1), (30.0, 12.0), "the whole median round, not a mix of rounds");
        assert_eq!((m.runs, m.usage.peak_rss_kib, m.usage.cpu_s), (vec![40.0, 25.0, 30.0], Some(300), Some(3.0)));
        let lost = |n: &str| round(f64::INFINITY, f64::INFINITY, 100, Some(n));
        let m = median_round(vec![round(40.0, 9.0, 100, None), lost("round 2: 1 flip lost"), lost("round 3: 2 lost")]);
        assert_eq!(m.flips.unwrap().e2e.1, f64::INFINITY, "rounds that lost flips are the slowest");
        assert_eq!(m.note.as_deref(), Some("round 2: 1 flip lost; round 3: 2 lost"));
        let m =
            median_round(vec![lost("round 1: 1 flip lost"), round(40.0, 9.0, 100, None), round(20.0, 9.0, 100, None)]);
        assert_eq!(m.flips.unwrap().e2e.1, 40.0);
        assert_eq!(m.note.as_deref(), Some("round 1: 1 flip lost"), "a lost flip is never dropped from the notes");
        let m = median_round(vec![
            round(20.0, 9.0, 100, Some("round 1: 3 flips not seen")),
            round(40.0, 9.0, 100, Some("round 2: NOT converged")),
            round(30.0, 9.0, 100, None),
        ]);
        assert_eq!(m.flips.unwrap().e2e.1, 30.0);
        assert_eq!(
            m.note.as_deref(),
            Some("round 1: 3 flips not seen; round 2: NOT converged"),
            "the notes of rounds with a finite p99 are kept too"
        );
        let none_sent =
            Cell { flips: Some(FlipStats { e2e: (f64::NAN, f64::NAN), ..Default::default() }), ..Default::default() };
        let m = median_round(vec![none_sent.clone(), none_sent, round(30.0, 9.0, 100, None)]);
        assert!(m.flips.unwrap().e2e.1.is_nan(), "rounds without a p99 count as the slowest");
    }

    #[test]
    fn every_contender_flips_the_same_pods_in_a_round_and_rounds_differ() {
        assert_eq!(flip_seed(1, 2), flip_seed(1, 2));
        assert_ne!(flip_seed(1, 1), flip_seed(1, 2));
        assert_ne!(flip_seed(1, 1), flip_seed(2, 1));
        assert_eq!(flip_seed(0, 1), flip_seed(1, 1), "seed 0 is seed 1 (xorshift needs a non-zero state)");
        assert_ne!(flip_seed(1, 3) % 2, 0, "never the all-zero state");
    }

    #[test]
    fn a_failed_run_counts_as_infinitely_slow_and_is_noted() {
        let failed = |run: usize| Cell {
            secs: Some(f64::INFINITY),
            note: Some(format!("run {run} failed: boom")),
            ..Default::default()
        };
        let m = median_run(vec![cell(3.0, 100), failed(2), cell(2.0, 200)]);
        assert_eq!(m.secs, Some(3.0), "the slower of the two that finished");
        assert_eq!(m.note.as_deref(), Some("run 2 failed: boom"));
        let m = median_run(vec![failed(1), failed(2), cell(2.0, 200)]);
        assert_eq!(m.secs, Some(f64::INFINITY), "most runs failed: the median failed");
        assert_eq!(m.note.as_deref(), Some("run 1 failed: boom; run 2 failed: boom"));
    }

    #[test]
    fn an_unseen_observation_counts_as_slower_than_every_seen_one() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let flip = |pod: Option<u64>, slice: Option<u64>, failed: bool| Flip {
            key: "ns/p".into(),
            target: true,
            sent: t0,
            rv: Some("7".into()),
            pod_seen: pod.map(|ms| ("7".to_string(), at(ms))).into_iter().collect(),
            slice_seen: slice.map(at),
            failed,
        };
        // 198 flips seen at 10 ms (pod event) and 15 ms (slice), one whose pod event was never
        // seen, one failed write (left out), and one whose slice change was never seen: each
        // missing observation is under 1 % of its percentile's flips.
        let mut done: Vec<Flip> = (0..198).map(|_| flip(Some(10), Some(15), false)).collect();
        done.push(flip(None, Some(15), false));
        done.push(flip(None, None, true));
        let s = flip_stats(&done, &[flip(Some(10), None, false)], 201, &HashMap::new());
        assert_eq!((s.sent, s.seen, s.failed), (201, 199, 1));
        assert_eq!((s.e2e, s.before, s.share), ((15.0, 15.0), (10.0, 10.0), (5.0, 5.0)));
        // Three more of each kind unseen (over 1 %): every p99 is infinite, the p50s stay.
        let mut pending = vec![flip(None, None, false); 3];
        pending.extend(vec![flip(Some(10), None, false); 3]);
        let s = flip_stats(&done, &pending, 206, &HashMap::new());
        let inf = f64::INFINITY;
        assert_eq!((s.e2e, s.before, s.share), ((15.0, inf), (10.0, inf), (5.0, inf)));
    }

    #[test]
    fn flips_are_also_summarised_by_the_size_of_their_service() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let flip = |key: &str, slice: u64| Flip {
            key: key.into(),
            target: true,
            sent: t0,
            rv: Some("1".into()),
            pod_seen: vec![("1".into(), at(5))],
            slice_seen: Some(at(slice)),
            failed: false,
        };
        let size: HashMap<String, usize> = [("ns/small".to_string(), 10), ("ns/big".to_string(), 250)].into();
        let mut done: Vec<Flip> = (0..3).map(|_| flip("ns/small", 10)).collect();
        done.push(flip("ns/big", 30));
        done.push(flip("ns/unknown", 20));
        let s = flip_stats(&done, &[], 5, &size);
        assert_eq!(s.by_size.keys().copied().collect::<Vec<_>>(), vec![0, 10, 250]);
        let (small, big) = (&s.by_size[&10], &s.by_size[&250]);
        assert_eq!((small.flips, small.e2e, small.share), (3, (10.0, 10.0), (5.0, 5.0)));
        assert_eq!((big.flips, big.e2e, big.share), (1, (30.0, 30.0), (25.0, 25.0)));
        assert_eq!(s.e2e, (10.0, 30.0), "all flips together");
    }

    #[test]
    fn a_slice_change_before_its_pod_event_is_a_negative_share() {
        let t0 = Instant::now();
        let f = Flip {
            key: "ns/p".into(),
            target: false,
            sent: t0,
            rv: Some("9".into()),
            pod_seen: vec![("9".into(), t0 + Duration::from_millis(12))],
            slice_seen: Some(t0 + Duration::from_millis(10)),
            failed: false,
        };
        let s = flip_stats(&[f], &[], 1, &HashMap::new());
        assert_eq!(s.share, (-2.0, -2.0));
        assert_eq!(s.before, (12.0, 12.0));
    }
}
