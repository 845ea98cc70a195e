//! The EndpointSlice controller's shell: watches Services, Pods, Nodes and EndpointSlices, maps
//! events to Service keys with upstream's enqueue rules, and for each key takes a snapshot, asks
//! the pure planner ([`crate::endpointslice`]) for a plan and applies it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::endpointslice as core;
use crate::runtime::admin::Readiness;
use crate::runtime::cache::Handler;
use crate::runtime::metrics::{Metrics, OperationLabels, QueueLabels, ResultLabels, WriterLabels};
use crate::runtime::queue::{RateLimit, WorkQueue};

use super::informers::{Informers, Key, PodSubscriber, Subscribers, key_of};
use super::overlay::RecentWrites;
use super::trigger::{TriggerTimeTracker, to_chrono};

pub use super::informers::LABEL_SERVICE_NAME;
/// The label naming the controller managing a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Upstream's `maxRetries`: after this many failures in a row a key is dropped until its next event.
pub const MAX_RETRIES: u32 = 15;
/// Upstream's `endpointSliceChangeMinSyncDelay`.
pub const SLICE_CHANGE_MIN_SYNC_DELAY: Duration = Duration::from_secs(1);

/// EndpointSlice controller settings (validated flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pure planner's configuration (max endpoints per slice, managed-by value …).
    pub core: core::Config,
    /// Workers (`--concurrent-service-endpoint-syncs`, 1–50).
    pub workers: usize,
    /// Delay of pod-triggered syncs (`--endpointslice-updates-batch-period`).
    pub batch_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { core: core::Config::default(), workers: 5, batch_period: Duration::ZERO }
    }
}

struct Shared {
    client: kube::Client,
    settings: Settings,
    field_manager: String,
    queue: WorkQueue<Key>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Services whose hints depend on Nodes (topology-mode Auto or trafficDistribution).
    hinted: Mutex<HashSet<Key>>,
    trigger_times: Mutex<TriggerTimeTracker>,
    hints_state: Mutex<HashMap<Key, core::topology::ServiceHintsState>>,
    /// Node CPU ratios by zone for topology hints; `None` after a node change (recomputed on use).
    cpu_ratios: Mutex<Option<Arc<core::topology::CpuRatios>>>,
    /// Desired endpoints and slices per Service, for the gauges.
    gauges: Mutex<HashMap<Key, (i64, i64, i64)>>,
    /// Our own recent writes the slice cache has not caught up with yet.
    written: Mutex<RecentWrites<EndpointSlice>>,
    /// Field managers already reported as competing writers.
    reported_writers: Mutex<HashSet<String>>,
    started_at: DateTime<Utc>,
}

/// The controller.
pub struct Controller {
    shared: Arc<Shared>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Controller {
    /// A controller using `client`; registers its readiness check.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        field_manager: String,
        metrics: Arc<Metrics>,
        ready: &Readiness,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "endpoint-slice-controller".into(), instance: std::env::var("HOSTNAME").ok() },
        );
        let shared = Arc::new(Shared {
            client,
            settings,
            field_manager,
            queue: WorkQueue::new("endpoint_slice", RateLimit::ENDPOINTSLICE),
            metrics,
            recorder,
            hinted: Mutex::default(),
            trigger_times: Mutex::default(),
            hints_state: Mutex::default(),
            cpu_ratios: Mutex::default(),
            gauges: Mutex::default(),
            reported_writers: Mutex::default(),
            written: Mutex::default(),
            started_at: Utc::now(),
        });
        Controller { shared, ready: ready.check("endpointslice-controller caches") }
    }

    /// The handlers this controller needs on the shared caches.
    pub fn subscribers(&self) -> Subscribers {
        let s = &self.shared;
        Subscribers {
            services: vec![Arc::new(ServiceEvents(s.clone()))],
            pods: vec![Arc::new(PodEvents(s.clone()))],
            nodes: vec![Arc::new(NodeEvents(s.clone()))],
            slices: vec![Arc::new(SliceEvents(s.clone()))],
            endpoints: vec![],
        }
    }

    /// Runs until `stop` turns true: waits for the caches, then runs the workers.
    pub async fn run(self, informers: Informers, mut stop: watch::Receiver<bool>, gate: super::leader::Gate) {
        let s = self.shared.clone();
        tokio::select! {
            _ = informers.wait_synced() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(workers = s.settings.workers, "endpointslice-controller caches synced; starting workers");
        let snap = informers;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..s.settings.workers.max(1) {
            let (s, snap, mut gate) = (s.clone(), snap.clone(), gate.clone());
            workers.spawn(async move {
                loop {
                    // Only the leader works; the caches stay warm on every replica.
                    if gate.wait_for(|leading| *leading).await.is_err() {
                        break;
                    }
                    let Some(key) = s.queue.get().await else { break };
                    let t0 = Instant::now();
                    let result = sync(&s, &snap, &key, &gate).await;
                    tracing::debug!(namespace = %key.0, service = %key.1, elapsed = ?t0.elapsed(), ok = result.is_ok(), "synced");
                    handle_result(&s, &key, result);
                    s.queue.done(&key);
                    s.metrics.queue.depth.get_or_create(&QueueLabels { name: "endpoint_slice".into() }).set(s.queue.len() as i64);
                }
            });
        }
        let _ = stop.wait_for(|v| *v).await;
        s.queue.shut_down();
        while workers.join_next().await.is_some() {}
    }
}

type Snapshot = Informers;

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The cache lags behind the apiserver (a write conflicted): retry after backoff.
    #[error("stale cache: {0}")]
    Stale(String),
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The plan was applied but something needs another pass (e.g. a pod's Node is not cached yet).
    #[error("{0}")]
    Retry(String),
    /// Leadership was lost mid-sync: the key waits for the next leader (here or elsewhere).
    #[error("not the leader")]
    NotLeader,
}

fn handle_result(s: &Shared, key: &Key, result: Result<(), SyncError>) {
    let label = match &result {
        Ok(()) => "success",
        Err(SyncError::Stale(_)) => "stale",
        Err(SyncError::Api(_) | SyncError::Retry(_)) => "error",
        Err(SyncError::NotLeader) => {
            // Not a failure of the key: keep it for when we lead again.
            s.queue.add(key.clone());
            return;
        }
    };
    s.metrics.endpointslice.syncs.get_or_create(&ResultLabels { result: label.into() }).inc();
    match result {
        Ok(()) => s.queue.forget(key),
        Err(e) => {
            if s.queue.failures(key) < MAX_RETRIES {
                let n = s.queue.add_rate_limited(key.clone());
                s.metrics.queue.retries.get_or_create(&QueueLabels { name: "endpoint_slice".into() }).inc();
                tracing::info!(namespace = %key.0, service = %key.1, attempt = n, error = %e, "sync failed; retrying with backoff");
            } else {
                s.queue.forget(key);
                tracing::error!(namespace = %key.0, service = %key.1, error = %e, "sync failed {MAX_RETRIES} times; dropping the key until the next event");
            }
        }
    }
}

fn enqueue(s: &Shared, key: Key, delay: Duration) {
    s.metrics.queue.adds.get_or_create(&QueueLabels { name: "endpoint_slice".into() }).inc();
    if delay.is_zero() {
        s.queue.add(key);
    } else {
        s.queue.add_after(key, delay);
    }
}

struct ServiceEvents(Arc<Shared>);

impl Handler<Service> for ServiceEvents {
    fn applied(&self, _old: Option<Arc<Service>>, new: Arc<Service>) {
        let (ns, name) = key_of(&*new);
        let hinted = core::topology::hints_enabled(new.metadata.annotations.as_ref())
            || new.spec.as_ref().and_then(|s| s.traffic_distribution.as_ref()).is_some();
        {
            let mut h = self.0.hinted.lock().unwrap_or_else(|e| e.into_inner());
            if hinted {
                h.insert((ns.clone(), name.clone()));
            } else {
                h.remove(&(ns.clone(), name.clone()));
            }
        }
        enqueue(&self.0, (ns, name), Duration::ZERO);
    }

    fn deleted(&self, old: Arc<Service>) {
        let (ns, name) = key_of(&*old);
        self.0.hinted.lock().unwrap_or_else(|e| e.into_inner()).remove(&(ns.clone(), name.clone()));
        enqueue(&self.0, (ns, name), Duration::ZERO);
    }
}

struct PodEvents(Arc<Shared>);

impl PodSubscriber for PodEvents {
    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>, before: &BTreeSet<String>, now: &BTreeSet<String>) {
        let s = &self.0;
        let Some(ns) = new.or(old).and_then(|p| p.metadata.namespace.clone()) else { return };
        let targets: BTreeSet<String> = match (old, new) {
            (None, Some(_)) => now.clone(),
            (Some(_), None) => before.clone(),
            (Some(old), Some(new)) => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                match crate::podutil::pod_endpoints_changed(old, new) {
                    (false, false) => return,
                    (true, false) => now.clone(),
                    (false, true) => before.symmetric_difference(now).cloned().collect(),
                    (true, true) => before.union(now).cloned().collect(),
                }
            }
            (None, None) => return,
        };
        for svc in targets {
            enqueue(s, (ns.clone(), svc), s.settings.batch_period);
        }
    }
}

struct NodeEvents(Arc<Shared>);

impl NodeEvents {
    fn requeue_hinted(&self) {
        *self.0.cpu_ratios.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let keys: Vec<Key> = self.0.hinted.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        for k in keys {
            enqueue(&self.0, k, Duration::ZERO);
        }
    }
}

impl Handler<Node> for NodeEvents {
    fn applied(&self, old: Option<Arc<Node>>, new: Arc<Node>) {
        if old.is_none_or(|o| core::topology::node_topology_changed(&o, &new)) {
            self.requeue_hinted();
        }
    }

    fn deleted(&self, _old: Arc<Node>) {
        self.requeue_hinted();
    }
}

struct SliceEvents(Arc<Shared>);

impl SliceEvents {
    fn service_of(slice: &EndpointSlice) -> Option<Key> {
        let svc = slice.labels().get(LABEL_SERVICE_NAME)?;
        Some((slice.namespace().unwrap_or_default(), svc.clone()))
    }

    fn ours(&self, slice: &EndpointSlice) -> bool {
        slice.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(self.0.settings.core.managed_by.as_str())
    }

    fn delay(&self) -> Duration {
        self.0.settings.batch_period.max(SLICE_CHANGE_MIN_SYNC_DELAY)
    }

    /// Reports (once per manager) a write to one of our slices by another field manager.
    fn check_foreign_writer(&self, slice: &EndpointSlice) {
        let s = &self.0;
        let Some(mf) = slice.metadata.managed_fields.as_ref() else { return };
        for e in mf {
            let manager = e.manager.clone().unwrap_or_default();
            // managedFields times have whole-second precision.
            let recent = e.time.as_ref().is_some_and(|t| to_chrono(t.0) >= s.started_at - chrono::Duration::seconds(1));
            if manager.is_empty() || manager == s.field_manager || !recent {
                continue;
            }
            s.metrics.endpointslice.foreign_writes.get_or_create(&WriterLabels { manager: manager.clone() }).inc();
            let first = s.reported_writers.lock().unwrap_or_else(|e| e.into_inner()).insert(manager.clone());
            if first {
                tracing::warn!(
                    slice = %slice.name_any(), namespace = %slice.namespace().unwrap_or_default(), %manager,
                    "another writer changed an EndpointSlice managed by {}: is kube-controller-manager's endpointslice-controller still running? Disable it with --controllers=*,-endpointslice-controller",
                    s.settings.core.managed_by
                );
                if let Some((ns, svc)) = Self::service_of(slice) {
                    let reference = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Service".into()),
                        namespace: Some(ns),
                        name: Some(svc),
                        ..Default::default()
                    };
                    let recorder = s.recorder.clone();
                    let note = format!(
                        "EndpointSlice {} (managed-by {}) was written by field manager {manager:?} too; two controllers may be fighting",
                        slice.name_any(),
                        s.settings.core.managed_by
                    );
                    tokio::spawn(async move {
                        let ev = KubeEvent {
                            type_: EventType::Warning,
                            reason: "CompetingEndpointSliceWriter".into(),
                            note: Some(note),
                            action: "Detect".into(),
                            secondary: None,
                        };
                        let _ = recorder.publish(&ev, &reference).await;
                    });
                }
            }
        }
    }
}

impl Handler<EndpointSlice> for SliceEvents {
    fn applied(&self, old: Option<Arc<EndpointSlice>>, new: Arc<EndpointSlice>) {
        let s = &self.0;
        s.written.lock().unwrap_or_else(|e| e.into_inner()).observed(&new);
        if self.ours(&new) {
            self.check_foreign_writer(&new);
        }
        match old {
            None => {
                if self.ours(&new)
                    && let Some(k) = Self::service_of(&new)
                {
                    enqueue(s, k, self.delay());
                }
            }
            Some(old) => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let (ko, kn) = (Self::service_of(&old), Self::service_of(&new));
                if ko != kn {
                    for k in [ko, kn].into_iter().flatten() {
                        enqueue(s, k, self.delay());
                    }
                } else if (self.ours(&old) || self.ours(&new))
                    && let Some(k) = kn
                {
                    enqueue(s, k, self.delay());
                }
            }
        }
    }

    fn deleted(&self, old: Arc<EndpointSlice>) {
        let s = &self.0;
        s.written.lock().unwrap_or_else(|e| e.into_inner()).observed_deleted(&old);
        if self.ours(&old)
            && let Some(k) = Self::service_of(&old)
        {
            enqueue(s, k, self.delay());
        }
    }
}

async fn sync(s: &Shared, snap: &Snapshot, key: &Key, gate: &super::leader::Gate) -> Result<(), SyncError> {
    let (ns, name) = key;
    let Some(service) = snap.services.get(Some(ns), name) else {
        s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).delete(key);
        s.hints_state.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        s.gauges.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        update_gauges(s);
        // The slices go with the Service through their ownerReference (garbage collector).
        return Ok(());
    };
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") || spec.selector.is_none() {
        return Ok(());
    }
    let pods: Vec<Arc<Pod>> = snap.pods_of(ns, name);
    let cached: Vec<Arc<EndpointSlice>> = snap.slices_of(ns, name);
    let slices = s
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .overlay(ns, cached, |w| w.labels().get(LABEL_SERVICE_NAME).map(String::as_str) == Some(name.as_str()));
    let (trigger_time, trigger_state) =
        s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).compute(&service, &pods);
    let hints_state = s.hints_state.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
    let ratios = cpu_ratios(s, snap);

    // Only the nodes of this Service's pods are looked up.
    let nodes: BTreeMap<String, Arc<Node>> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .filter_map(|n| snap.nodes.get(None, &n).map(|node| (n, node)))
        .collect();
    let plan = {
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let slice_refs: Vec<&EndpointSlice> = slices.iter().map(|p| &**p).collect();
        let input = core::Input {
            service: &service,
            pods: &pod_refs,
            nodes: &nodes,
            existing_slices: &slice_refs,
            trigger_time,
            topology: Some(&*ratios),
            hints_state: hints_state.as_ref(),
        };
        core::plan(&input, &s.settings.core)
    };
    for w in &plan.warnings {
        tracing::warn!(namespace = %ns, service = %name, "{w}");
    }
    s.hints_state.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), plan.hints_state.clone());
    let sum = |f: fn(&core::AddressTypeStats) -> usize| plan.stats.iter().map(f).sum::<usize>();
    s.gauges.lock().unwrap_or_else(|e| e.into_inner()).insert(
        key.clone(),
        (sum(|a| a.desired_endpoints) as i64, sum(|a| a.desired_slices) as i64, sum(|a| a.actual_slices) as i64),
    );
    update_gauges(s);
    s.metrics.endpointslice.endpoints_added_per_sync.observe(sum(|a| a.endpoints_added) as f64);
    s.metrics.endpointslice.endpoints_removed_per_sync.observe(sum(|a| a.endpoints_removed) as f64);

    let service_ref = service.object_ref(&());
    for ev in &plan.events {
        let e = KubeEvent {
            type_: if ev.event_type == core::hints::EventType::Warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: ev.reason.to_string(),
            note: Some(ev.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = s.recorder.publish(&e, &service_ref).await {
            tracing::debug!(error = %err, "could not record event");
        }
    }

    let mut result = apply(s, ns, &plan, gate).await;
    if result.is_ok() {
        s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).commit(&service, trigger_state);
        if let Some(w) = plan.warnings.iter().find(|w| w.requires_retry()) {
            result = Err(SyncError::Retry(w.to_string()));
        }
    }
    if let Err(e) = &result
        && !matches!(e, SyncError::Stale(_) | SyncError::NotLeader)
    {
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: "FailedToUpdateEndpointSlices".into(),
            note: Some(format!("Error updating Endpoint Slices for Service {ns}/{name}: {e}")),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = s.recorder.publish(&ev, &service_ref).await;
    }
    result
}

fn cpu_ratios(s: &Shared, snap: &Snapshot) -> Arc<core::topology::CpuRatios> {
    let mut guard = s.cpu_ratios.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = guard.as_ref() {
        return r.clone();
    }
    let nodes = snap.nodes.store.state();
    let r = Arc::new(core::topology::CpuRatios::from_nodes(nodes.iter().map(|n| &**n)));
    *guard = Some(r.clone());
    r
}

fn update_gauges(s: &Shared) {
    let g = s.gauges.lock().unwrap_or_else(|e| e.into_inner());
    let (mut e, mut d, mut a) = (0, 0, 0);
    for (x, y, z) in g.values() {
        e += x;
        d += y;
        a += z;
    }
    s.metrics.endpointslice.endpoints_desired.set(e);
    s.metrics.endpointslice.desired_endpoint_slices.set(d);
    s.metrics.endpointslice.num_endpoint_slices.set(a);
}

fn count(s: &Shared, op: &str) {
    s.metrics.endpointslice.changes.get_or_create(&OperationLabels { operation: op.into() }).inc();
}

fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// Applies a plan: deletes and updates first (they free names and capacity), then creates.
async fn apply(s: &Shared, ns: &str, plan: &core::Plan, gate: &super::leader::Gate) -> Result<(), SyncError> {
    // Leadership is re-checked before every write: a lost Lease stops writes at once.
    let leading = || if *gate.borrow() { Ok(()) } else { Err(SyncError::NotLeader) };
    let api: Api<EndpointSlice> = Api::namespaced(s.client.clone(), ns);
    let pp = PostParams { field_manager: Some(s.field_manager.clone()), ..Default::default() };
    for slice in &plan.update {
        leading()?;
        let name = slice.name_any();
        match api.replace(&name, &pp, slice).await {
            Ok(done) => {
                count(s, "update");
                s.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .wrote(done, slice.metadata.resource_version.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                return Err(SyncError::Stale(format!("update of EndpointSlice {name}: {}", e.message)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for slice in &plan.delete {
        leading()?;
        let name = slice.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                count(s, "delete");
                s.written.lock().unwrap_or_else(|e| e.into_inner()).deleted(slice);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for slice in &plan.create {
        leading()?;
        match api.create(&pp, slice).await {
            Ok(done) => {
                count(s, "create");
                s.written.lock().unwrap_or_else(|e| e.into_inner()).wrote(done, None);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(SyncError::Stale(format!(
                    "EndpointSlice {} already exists: {}",
                    slice.name_any(),
                    e.message
                )));
            }
            Err(e) if is_namespace_terminating(&e) => {
                tracing::debug!(namespace = %ns, "namespace is terminating; not creating EndpointSlices");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
