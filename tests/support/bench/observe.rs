//! What the harness sees through its own watches: per-Service endpoint counts in the slices and
//! Endpoints objects (convergence), and, during S2, when each readiness flip shows up in a
//! slice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use super::cluster::{BENCH_LABEL, Layout, NS_PREFIX};

/// The managed-by value of kube-controller-manager's (and epslice's default) slices.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// One S2 readiness flip.
#[derive(Debug, Clone)]
pub struct Flip {
    /// `namespace/name` of the pod.
    pub key: String,
    /// The Ready value written.
    pub target: bool,
    /// When the harness sent the status write (the Ready `lastTransitionTime`, in ms precision;
    /// the API stores it in whole seconds).
    pub sent: Instant,
    /// resourceVersion the status write returned.
    pub rv: Option<String>,
    /// Pod watch events (resourceVersion, arrival) seen for the pod after `sent`.
    pub pod_seen: Vec<(String, Instant)>,
    /// When a slice carrying the endpoint with `ready == target` arrived.
    pub slice_seen: Option<Instant>,
    /// The status write failed.
    pub failed: bool,
}

impl Flip {
    /// Arrival of the pod watch event of this flip's write (matched by resourceVersion, else the
    /// first one seen).
    pub fn pod_event(&self) -> Option<Instant> {
        self.pod_seen.iter().find(|(rv, _)| Some(rv) == self.rv.as_ref()).or(self.pod_seen.first()).map(|(_, t)| *t)
    }
}

#[derive(Debug, Default)]
struct SliceRec {
    svc: Option<String>,
    count: usize,
}

/// The watched state.
#[derive(Debug, Default)]
pub struct State {
    expected: HashMap<String, usize>,
    slices: HashMap<String, SliceRec>,
    slice_eps: HashMap<String, usize>,
    endpoints: HashMap<String, usize>,
    slices_ok: usize,
    eps_ok: usize,
    slices_full_at: Option<Instant>,
    eps_full_at: Option<Instant>,
    slices_synced: bool,
    endpoints_synced: bool,
    pods_synced: bool,
    /// Flips in flight, by `namespace/pod`.
    pub pending: HashMap<String, Flip>,
    /// Flips whose slice change was seen (or that failed).
    pub done: Vec<Flip>,
}

impl State {
    fn n(&self) -> usize {
        self.expected.len()
    }

    fn set_slice_eps(&mut self, svc: &str, delta_add: usize, delta_sub: usize, now: Instant) {
        let Some(&exp) = self.expected.get(svc) else { return };
        let old = self.slice_eps.get(svc).copied().unwrap_or(0);
        let new = (old + delta_add).saturating_sub(delta_sub);
        self.slice_eps.insert(svc.to_string(), new);
        if old == exp {
            self.slices_ok -= 1;
        }
        if new == exp {
            self.slices_ok += 1;
        }
        if self.slices_ok == self.n() {
            self.slices_full_at.get_or_insert(now);
        } else {
            self.slices_full_at = None;
        }
    }

    fn set_endpoints(&mut self, key: &str, new: Option<usize>, now: Instant) {
        let old = match new {
            Some(n) => self.endpoints.insert(key.to_string(), n),
            None => self.endpoints.remove(key),
        };
        let Some(&exp) = self.expected.get(key) else { return };
        if old == Some(exp) {
            self.eps_ok -= 1;
        }
        if new == Some(exp) {
            self.eps_ok += 1;
        }
        if self.eps_ok == self.n() {
            self.eps_full_at.get_or_insert(now);
        } else {
            self.eps_full_at = None;
        }
    }

    fn remove_slice(&mut self, key: &str, now: Instant) {
        if let Some(rec) = self.slices.remove(key)
            && let Some(svc) = rec.svc
        {
            self.set_slice_eps(&svc, 0, rec.count, now);
        }
    }

    fn apply_slice(&mut self, s: &EndpointSlice, now: Instant) {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if !ns.starts_with(NS_PREFIX) {
            return;
        }
        let key = format!("{ns}/{}", s.metadata.name.as_deref().unwrap_or(""));
        self.remove_slice(&key, now);
        let labels = s.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        let eps = s.endpoints.as_deref().unwrap_or(&[]);
        let svc = (label("endpointslice.kubernetes.io/managed-by") == Some(MANAGED_BY))
            .then(|| label("kubernetes.io/service-name").map(|n| format!("{ns}/{n}")))
            .flatten();
        if let Some(svc) = &svc {
            self.set_slice_eps(svc, eps.len(), 0, now);
        }
        self.slices.insert(key, SliceRec { svc, count: eps.len() });
        if self.pending.is_empty() {
            return;
        }
        for ep in eps {
            let Some(pod) = ep.target_ref.as_ref().and_then(|t| t.name.as_deref()) else { continue };
            let pk = format!("{ns}/{pod}");
            let ready = ep.conditions.as_ref().and_then(|c| c.ready);
            if let Some(f) = self.pending.get(&pk)
                && ready == Some(f.target)
                && let Some(mut f) = self.pending.remove(&pk)
            {
                f.slice_seen = Some(now);
                self.done.push(f);
            }
        }
    }

    fn apply_endpoints(&mut self, e: &Endpoints, now: Instant) {
        let ns = e.metadata.namespace.as_deref().unwrap_or("");
        if !ns.starts_with(NS_PREFIX) {
            return;
        }
        let key = format!("{ns}/{}", e.metadata.name.as_deref().unwrap_or(""));
        let n = e
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        self.set_endpoints(&key, Some(n), now);
    }

    /// Number of slice and Endpoints objects in the benchmark's namespaces.
    pub fn objects(&self) -> (usize, usize) {
        (self.slices.len(), self.endpoints.len())
    }

    /// When both the slices and the Endpoints of every Service became complete, if they are.
    pub fn converged_at(&self) -> Option<Instant> {
        Some(self.slices_full_at?.max(self.eps_full_at?))
    }

    /// Services whose slices / Endpoints are complete, out of all.
    pub fn progress(&self) -> (usize, usize, usize) {
        (self.slices_ok, self.eps_ok, self.n())
    }
}

/// Shared handle to the watched state; the watch tasks stop when it is dropped.
pub struct Observer {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pod_task: Option<tokio::task::JoinHandle<()>>,
    client: kube::Client,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in self.tasks.drain(..).chain(self.pod_task.take()) {
            t.abort();
        }
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Observer {
    /// Starts the slice and Endpoints watches and waits for their initial lists.
    pub async fn start(client: &kube::Client, layout: &Layout) -> anyhow::Result<Observer> {
        let mut st = State::default();
        for i in 0..layout.services.len() {
            st.expected.insert(layout.svc_key(i), layout.services[i].pods);
        }
        let state = Arc::new(Mutex::new(st));
        let slices = {
            let state = state.clone();
            let api: Api<EndpointSlice> = Api::all(client.clone());
            tokio::spawn(async move {
                let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
                while let Some(ev) = s.next().await {
                    let now = Instant::now();
                    let mut st = lock(&state);
                    match ev {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => st.apply_slice(&o, now),
                        Ok(Event::Delete(o)) => {
                            let key = format!(
                                "{}/{}",
                                o.metadata.namespace.as_deref().unwrap_or(""),
                                o.metadata.name.as_deref().unwrap_or("")
                            );
                            st.remove_slice(&key, now);
                        }
                        Ok(Event::Init) => {
                            let keys: Vec<String> = st.slices.keys().cloned().collect();
                            for k in keys {
                                st.remove_slice(&k, now);
                            }
                        }
                        Ok(Event::InitDone) => st.slices_synced = true,
                        Err(e) => eprintln!("  (slice watch: {e}; retrying)"),
                    }
                }
            })
        };
        let eps = {
            let state = state.clone();
            let api: Api<Endpoints> = Api::all(client.clone());
            tokio::spawn(async move {
                let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
                while let Some(ev) = s.next().await {
                    let now = Instant::now();
                    let mut st = lock(&state);
                    match ev {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => st.apply_endpoints(&o, now),
                        Ok(Event::Delete(o)) => {
                            let key = format!(
                                "{}/{}",
                                o.metadata.namespace.as_deref().unwrap_or(""),
                                o.metadata.name.as_deref().unwrap_or("")
                            );
                            st.set_endpoints(&key, None, now);
                        }
                        Ok(Event::Init) => {
                            let keys: Vec<String> = st.endpoints.keys().cloned().collect();
                            for k in keys {
                                st.set_endpoints(&k, None, now);
                            }
                        }
                        Ok(Event::InitDone) => st.endpoints_synced = true,
                        Err(e) => eprintln!("  (Endpoints watch: {e}; retrying)"),
                    }
                }
            })
        };
        let obs = Observer { state, tasks: vec![slices, eps], pod_task: None, client: client.clone() };
        obs.wait("the initial slice and Endpoints lists", Duration::from_secs(120), |s| {
            s.slices_synced && s.endpoints_synced
        })
        .await?;
        Ok(obs)
    }

    /// The shared state (for tasks).
    pub fn shared(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Polls `pred` every 50 ms until it holds or `timeout` passes.
    pub async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&State) -> bool) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            if pred(&self.state()) {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                let (s, e, n) = self.state().progress();
                anyhow::bail!(
                    "{what}: not reached within {timeout:?} (complete: slices {s}/{n} Services, Endpoints {e}/{n})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a metadata-only watch of the benchmark's Pods that records, for pods with a flip in
    /// flight, when their watch events arrive; waits for its initial list.
    pub async fn watch_pods(&mut self) -> anyhow::Result<()> {
        let state = self.state.clone();
        let api: Api<PartialObjectMeta<Pod>> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().labels(&format!("{BENCH_LABEL}=1"));
        self.pod_task = Some(tokio::spawn(async move {
            let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
            while let Some(ev) = s.next().await {
                let now = Instant::now();
                let mut st = lock(&state);
                match ev {
                    Ok(Event::Apply(m)) => {
                        let key = format!(
                            "{}/{}",
                            m.metadata.namespace.as_deref().unwrap_or(""),
                            m.metadata.name.as_deref().unwrap_or("")
                        );
                        let rv = m.metadata.resource_version.unwrap_or_default();
                        if let Some(f) = st.pending.get_mut(&key) {
                            f.pod_seen.push((rv, now));
                        } else if let Some(f) =
                            st.done.iter_mut().rev().find(|f| f.key == key && f.rv.as_ref() == Some(&rv))
                        {
                            // The slice change overtook the pod event: the share comes out negative.
                            f.pod_seen.push((rv, now));
                        }
                    }
                    Ok(Event::InitDone) => st.pods_synced = true,
                    Ok(_) => {}
                    Err(e) => eprintln!("  (pod watch: {e}; retrying)"),
                }
            }
        }));
        self.wait("the initial pod list", Duration::from_secs(300), |s| s.pods_synced).await
    }

    /// Stops the pod watch.
    pub fn stop_pods(&mut self) {
        if let Some(t) = self.pod_task.take() {
            t.abort();
        }
        self.state().pods_synced = false;
    }
}
