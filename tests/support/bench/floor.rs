//! The write floor under S2's churn: the least a controller can do per readiness flip, inside the
//! harness. One pod watch; on each pod event, the flipped pod's Service is planned with epslice's
//! pure planners (`endpointslice::plan`, `endpoints::plan`) from the floor's own copies of the pods,
//! slices and Endpoints, and exactly the planned writes are sent, the slices' first: no informers,
//! work queue, trigger-time tracking, events, retries or rate limits. Writes of one Service are
//! serialised (per resource, like a controller's queue), at most `concurrency` per resource at a
//! time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use epslice::pod::{CachedPod, Interner, WatchedPod};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::AbortOnDropHandle;

use super::cluster::{BENCH_LABEL, Layout};
use super::contender::{Key, Listed};

fn key_of(m: &kube::api::ObjectMeta) -> Key {
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
}

/// What the floor knows.
struct Shared {
    client: kube::Client,
    services: HashMap<Key, Service>,
    /// `(namespace, app label)` → the Services selecting it.
    by_app: HashMap<Key, Vec<Key>>,
    nodes: BTreeMap<String, Node>,
    /// Service → its pods by name.
    pods: Mutex<HashMap<Key, BTreeMap<String, CachedPod>>>,
    strings: Mutex<Interner>,
    /// Service → its slices, as last written or listed; the lock serialises the Service's slice writes.
    slices: HashMap<Key, Arc<tokio::sync::Mutex<Vec<EndpointSlice>>>>,
    /// Service → its Endpoints; the lock serialises the Service's Endpoints writes.
    endpoints: HashMap<Key, Arc<tokio::sync::Mutex<Option<Endpoints>>>>,
    slice_writes: Semaphore,
    endpoints_writes: Semaphore,
    errors: Mutex<(usize, Option<String>)>,
}

/// The running floor; dropping it stops the watch (writes in flight finish on their own).
pub struct Reactor {
    shared: Arc<Shared>,
    task: AbortOnDropHandle<()>,
}

impl Reactor {
    /// Lists the Services, Nodes, slices and Endpoints, starts the pod watch and waits (at most
    /// `timeout`) for its initial list.
    pub async fn start(
        client: &kube::Client,
        layout: &Layout,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<Reactor> {
        let Listed { services, slices: mut slices_of, endpoints: mut endpoints_of, nodes } =
            Listed::list(client, layout).await?;
        let mut by_app: HashMap<Key, Vec<Key>> = HashMap::new();
        let mut shared = Shared {
            client: client.clone(),
            services: HashMap::new(),
            by_app: HashMap::new(),
            nodes,
            pods: Mutex::default(),
            strings: Mutex::default(),
            slices: HashMap::new(),
            endpoints: HashMap::new(),
            slice_writes: Semaphore::new(concurrency),
            endpoints_writes: Semaphore::new(concurrency),
            errors: Mutex::default(),
        };
        for svc in services {
            let key = key_of(&svc.metadata);
            if let Some(app) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.get("app")) {
                by_app.entry((key.0.clone(), app.clone())).or_default().push(key.clone());
            }
            let own = slices_of.remove(&key).unwrap_or_default();
            shared.slices.insert(key.clone(), Arc::new(tokio::sync::Mutex::new(own)));
            shared.endpoints.insert(key.clone(), Arc::new(tokio::sync::Mutex::new(endpoints_of.remove(&key))));
            shared.services.insert(key, svc);
        }
        shared.by_app = by_app;
        let shared = Arc::new(shared);
        let (synced_tx, mut synced) = watch::channel(false);
        let task = AbortOnDropHandle::new(tokio::spawn(watch_pods(shared.clone(), synced_tx)));
        tokio::time::timeout(timeout, synced.wait_for(|s| *s))
            .await
            .with_context(|| format!("the floor's initial pod list: not done within {timeout:?}"))?
            .context("the floor's pod watch ended")?;
        Ok(Reactor { shared, task })
    }

    /// Fails if the pod watch has ended.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.task.is_finished(), "the floor's pod watch ended");
        Ok(())
    }

    /// Writes that failed so far, and the first error.
    pub fn errors(&self) -> (usize, Option<String>) {
        self.shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn watch_pods(shared: Arc<Shared>, synced: watch::Sender<bool>) {
    let api: Api<WatchedPod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().labels(&format!("{BENCH_LABEL}=1"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    // Slices first, as epslice does (`--endpoints-wait-for-slices`): an Endpoints PUT sent at the
    // same moment slows the slice's. The slice lock is free again while the Endpoints write runs.
    let sync = |svc: Key| {
        let s = shared.clone();
        tokio::spawn(async move {
            s.sync_slices(&svc).await;
            s.sync_endpoints(&svc).await;
        });
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(p)) => shared.put_pod(p).into_iter().for_each(sync),
            Ok(Event::InitApply(p)) => {
                shared.put_pod(p);
            }
            Ok(Event::InitDone) => {
                // After a re-list (the watch expired), changes in the gap came as InitApply:
                // sync every Service once.
                if synced.send_replace(true) {
                    shared.services.keys().cloned().for_each(sync);
                }
            }
            // S2 deletes no pods.
            Ok(Event::Init | Event::Delete(_)) => {}
            Err(e) => eprintln!("  (floor pod watch: {e}; retrying)"),
        }
    }
}

impl Shared {
    /// Records the pod; returns the Services selecting it.
    fn put_pod(&self, p: WatchedPod) -> Vec<Key> {
        let pod = p.into_cached(&mut self.strings.lock().unwrap_or_else(|e| e.into_inner()));
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default().to_owned();
        let name = pod.metadata.name.as_deref().unwrap_or_default().to_owned();
        let Some(svcs) = pod.labels.get("app").and_then(|app| self.by_app.get(&(ns, app.to_owned()))) else {
            return Vec::new();
        };
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        for svc in svcs {
            pods.entry(svc.clone()).or_default().insert(name.clone(), pod.clone());
        }
        svcs.clone()
    }

    /// Runs `f` on the Service's pods (under the pod lock: nothing in `f` may wait).
    fn with_pods<R>(&self, svc: &Key, f: impl FnOnce(&[&CachedPod]) -> R) -> R {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let pods: Vec<&CachedPod> = pods.get(svc).map(|m| m.values().collect()).unwrap_or_default();
        f(&pods)
    }

    fn failed(&self, what: &str, e: &kube::Error) {
        let mut errs = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errs.0 += 1;
        errs.1.get_or_insert_with(|| format!("{what}: {e}"));
    }

    /// After a failed write the copy may be stale (a write that landed after all, a 409): read
    /// the Service's slices again. Not a retry: the next pod event plans from it.
    async fn reread_slices(&self, api: &Api<EndpointSlice>, svc: &Key, own: &mut Vec<EndpointSlice>) {
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", svc.1));
        match api.list(&lp).await {
            Ok(l) => *own = l.items,
            Err(e) => self.failed("slice re-read", &e),
        }
    }

    async fn sync_slices(&self, svc: &Key) {
        let (Some(service), Some(own)) = (self.services.get(svc), self.slices.get(svc)) else { return };
        let mut own = own.lock().await;
        let plan = self.with_pods(svc, |pods| {
            let existing: Vec<&EndpointSlice> = own.iter().collect();
            let input = epslice::endpointslice::Input::new(service, pods, &self.nodes, &existing);
            epslice::endpointslice::plan(&input, &epslice::endpointslice::Config::default())
        });
        if plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty() {
            return;
        }
        let _permit = self.slice_writes.acquire().await;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &svc.0);
        let mut ok = true;
        let pp = PostParams::default();
        let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        for s in plan.create {
            match api.create(&pp, &s).await {
                Ok(s) => own.push(s),
                Err(e) => {
                    self.failed("slice create", &e);
                    ok = false;
                }
            }
        }
        for s in plan.update {
            match api.replace(&name(&s), &pp, &s).await {
                Ok(s) => {
                    let n = name(&s);
                    own.retain(|o| name(o) != n);
                    own.push(s);
                }
                Err(e) => {
                    self.failed("slice update", &e);
                    ok = false;
                }
            }
        }
        for s in plan.delete {
            match api.delete(&name(&s), &DeleteParams::default()).await {
                Ok(_) => own.retain(|o| name(o) != name(&s)),
                Err(e) => {
                    self.failed("slice delete", &e);
                    ok = false;
                }
            }
        }
        if !ok {
            self.reread_slices(&api, svc, &mut own).await;
        }
    }

    async fn sync_endpoints(&self, svc: &Key) {
        let (Some(service), Some(own)) = (self.services.get(svc), self.endpoints.get(svc)) else { return };
        let mut own = own.lock().await;
        let plan = self.with_pods(svc, |pods| {
            let input = epslice::endpoints::Input::new(service, pods, own.as_ref());
            epslice::endpoints::plan(&input, &epslice::endpoints::Config::default())
        });
        if matches!(plan.action, epslice::endpoints::Action::Nothing) {
            return;
        }
        let _permit = self.endpoints_writes.acquire().await;
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &svc.0);
        let pp = PostParams::default();
        let r = match plan.action {
            epslice::endpoints::Action::Nothing => return,
            epslice::endpoints::Action::Create(e) => api.create(&pp, &e).await.map(Some),
            epslice::endpoints::Action::Update(e) => {
                api.replace(e.metadata.name.as_deref().unwrap_or_default(), &pp, &e).await.map(Some)
            }
            epslice::endpoints::Action::Delete { name, .. } => {
                api.delete(&name, &DeleteParams::default()).await.map(|_| None)
            }
        };
        match r {
            Ok(e) => *own = e,
            Err(e) => {
                self.failed("Endpoints write", &e);
                // As for slices: read it again, a copy that may be stale is not kept.
                match api.get_opt(&svc.1).await {
                    Ok(e) => *own = e,
                    Err(e) => self.failed("Endpoints re-read", &e),
                }
            }
        }
    }
}
