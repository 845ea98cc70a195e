//! The EndpointSlice controller's shell: watches Services, Pods, Nodes and EndpointSlices, maps
//! events to Service keys with upstream's enqueue rules, and for each key takes a snapshot, asks
//! the pure planner ([`crate::endpointslice`]) for a plan and applies it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::endpointslice as core;
use crate::pod::CachedPod;
use crate::runtime::admin::Readiness;
use crate::runtime::cache::Handler;
use crate::runtime::metrics::{Metrics, ResultLabels, WriterLabels};
use crate::runtime::queue::{RateLimit, WorkQueue};

use super::informers::{Informers, Key, Subscribers, key_of};
use super::overlay::RecentWrites;
use super::trigger::{TriggerTimeTracker, to_chrono};
use super::work::{PodEvents, Queue, SlicePlan, SyncError, apply_slices};

pub use super::informers::LABEL_SERVICE_NAME;
/// The label naming the controller managing a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Upstream's `endpointSliceChangeMinSyncDelay`.
pub const SLICE_CHANGE_MIN_SYNC_DELAY: Duration = Duration::from_secs(1);

/// EndpointSlice controller settings (validated flags).
pub type Settings = super::ControllerSettings<core::Config>;

struct Shared {
    client: kube::Client,
    settings: Settings,
    field_manager: String,
    queue: Arc<Queue>,
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
            queue: Arc::new(Queue::new(WorkQueue::new("endpoint_slice", RateLimit::ENDPOINTSLICE), metrics.clone())),
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

    /// The controller's work queue (of Service keys).
    pub fn queue(&self) -> Arc<Queue> {
        self.shared.queue.clone()
    }

    /// The handlers this controller needs on the shared caches.
    pub fn subscribers(&self) -> Subscribers {
        let s = &self.shared;
        Subscribers {
            services: vec![Arc::new(ServiceEvents(s.clone()))],
            pods: vec![Arc::new(PodEvents { queue: s.queue.clone(), batch_period: s.settings.batch_period })],
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
        let workers = s.settings.workers;
        let sh = s.clone();
        s.queue
            .clone()
            .run_workers(workers, gate, stop, move |key, gate| {
                let (s, snap) = (sh.clone(), informers.clone());
                async move {
                    let result = sync(&s, &snap, &key, &gate).await;
                    if !matches!(result, Err(SyncError::NotLeader)) {
                        let result_label = SyncError::result_label(&result);
                        s.metrics
                            .endpointslice
                            .syncs
                            .get_or_create(&ResultLabels { result: result_label.into() })
                            .inc();
                    }
                    result
                }
            })
            .await;
    }
}

type Snapshot = Informers;

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
        self.0.queue.enqueue((ns, name), Duration::ZERO);
    }

    fn deleted(&self, old: Arc<Service>) {
        let (ns, name) = key_of(&*old);
        self.0.hinted.lock().unwrap_or_else(|e| e.into_inner()).remove(&(ns.clone(), name.clone()));
        self.0.queue.enqueue((ns, name), Duration::ZERO);
    }
}

struct NodeEvents(Arc<Shared>);

impl NodeEvents {
    fn requeue_hinted(&self) {
        *self.0.cpu_ratios.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let keys: Vec<Key> = self.0.hinted.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        for k in keys {
            self.0.queue.enqueue(k, Duration::ZERO);
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

/// The field managers other than `ours` that wrote `new` since `old` (each manager once): the
/// managedFields entries `new` has and `old` had not (same manager, operation and time), with a
/// time no earlier than `since` (this process's start, less one second: managedFields times
/// have whole-second precision). An entry a manager wrote long ago stays on the slice; it is a
/// write only when it appears or changes.
pub fn foreign_writes(
    old: Option<&EndpointSlice>,
    new: &EndpointSlice,
    ours: &str,
    since: DateTime<Utc>,
) -> Vec<String> {
    fn entries(s: Option<&EndpointSlice>) -> &[ManagedFieldsEntry] {
        s.and_then(|s| s.metadata.managed_fields.as_deref()).unwrap_or_default()
    }
    let before = entries(old);
    let mut writers: Vec<String> = Vec::new();
    for e in entries(Some(new)) {
        let manager = e.manager.as_deref().unwrap_or_default();
        let recent = e.time.as_ref().is_some_and(|t| to_chrono(t.0) >= since - chrono::Duration::seconds(1));
        let seen = before.iter().any(|b| b.manager == e.manager && b.operation == e.operation && b.time == e.time);
        if manager.is_empty() || manager == ours || !recent || seen || writers.iter().any(|w| w == manager) {
            continue;
        }
        writers.push(manager.to_owned());
    }
    writers
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

    /// Counts each write to one of our slices by another field manager, and reports each such
    /// manager once.
    fn check_foreign_writer(&self, old: Option<&EndpointSlice>, slice: &EndpointSlice) {
        let s = &self.0;
        for manager in foreign_writes(old, slice, &s.field_manager, s.started_at) {
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
                        super::work::publish_event(&recorder, ev, &reference).await;
                    });
                }
            }
        }
    }
}

impl Handler<EndpointSlice> for SliceEvents {
    fn applied(&self, old: Option<Arc<EndpointSlice>>, new: Arc<EndpointSlice>) {
        let s = &self.0;
        // The echo of our own write needs no sync (upstream's tracker, `ShouldSync`).
        let echo = s.written.lock().unwrap_or_else(|e| e.into_inner()).observed(&new);
        if self.ours(&new) {
            self.check_foreign_writer(old.as_deref(), &new);
        }
        match old {
            None => {
                if self.ours(&new)
                    && !echo
                    && let Some(k) = Self::service_of(&new)
                {
                    self.0.queue.enqueue(k, self.delay());
                }
            }
            Some(old) => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let (ko, kn) = (Self::service_of(&old), Self::service_of(&new));
                if ko != kn {
                    for k in [ko, kn].into_iter().flatten() {
                        self.0.queue.enqueue(k, self.delay());
                    }
                } else if (self.ours(&old) || self.ours(&new))
                    && !(echo && self.ours(&old) == self.ours(&new))
                    && let Some(k) = kn
                {
                    self.0.queue.enqueue(k, self.delay());
                }
            }
        }
    }

    fn deleted(&self, old: Arc<EndpointSlice>) {
        let s = &self.0;
        // Our own delete needs no sync (upstream's `HandleDeletion`); any other one does.
        let ours_deleted = s.written.lock().unwrap_or_else(|e| e.into_inner()).observed_deleted(&old);
        if self.ours(&old)
            && !ours_deleted
            && let Some(k) = Self::service_of(&old)
        {
            self.0.queue.enqueue(k, self.delay());
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
    let pods: Vec<Arc<CachedPod>> = snap.pods_of(ns, name);
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
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref().map(str::to_owned))
        .filter_map(|n| snap.nodes.get(None, &n).map(|node| (n, node)))
        .collect();
    let plan = {
        let pod_refs: Vec<&CachedPod> = pods.iter().map(|p| &**p).collect();
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
        super::work::publish_event(&s.recorder, e, &service_ref).await;
    }

    // Each address type on its own, as upstream: an IPv6 write refused does not hold back IPv4.
    let mut errors = Vec::new();
    for part in SlicePlan::new(&plan.create, &plan.update, &plan.delete).by_address_type() {
        let written = (&s.written, &snap.slices);
        match apply_slices(&s.client, ns, &s.field_manager, part, written, gate, &s.metrics.endpointslice.changes).await
        {
            Ok(()) => {}
            Err(SyncError::NotLeader) => return Err(SyncError::NotLeader),
            Err(e) => errors.push(e),
        }
    }
    let mut result = SyncError::aggregate(errors);
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
            note: Some(format!("Error updating Endpoint Slices for Service {ns}/{name}: {}", e.message())),
            action: "Reconcile".into(),
            secondary: None,
        };
        super::work::publish_event(&s.recorder, ev, &service_ref).await;
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
    use kube::api::ObjectMeta;

    use super::*;

    fn slice(entries: &[(&str, i64)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                managed_fields: Some(
                    entries
                        .iter()
                        .map(|(m, t)| ManagedFieldsEntry {
                            manager: Some(m.to_string()),
                            operation: Some("Update".into()),
                            time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(*t).unwrap())),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![]),
            ports: None,
        }
    }

    /// Found in review: every later event of a slice (our own writes included) counted the other
    /// manager's entry again, so the counter kept rising after kcm had stopped.
    #[test]
    fn a_foreign_write_is_counted_when_it_appears_not_on_every_later_event() {
        let start = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let ours = "epslice";
        let first = slice(&[("epslice", 1_001), ("kube-controller-manager", 1_002)]);
        assert_eq!(foreign_writes(None, &first, ours, start), ["kube-controller-manager"]);
        // Our own write afterwards: kcm's entry is unchanged.
        let ours_again = slice(&[("epslice", 1_005), ("kube-controller-manager", 1_002)]);
        assert!(foreign_writes(Some(&first), &ours_again, ours, start).is_empty());
        // kcm writes again.
        let kcm_again = slice(&[("epslice", 1_005), ("kube-controller-manager", 1_007)]);
        assert_eq!(foreign_writes(Some(&ours_again), &kcm_again, ours, start), ["kube-controller-manager"]);
        // Entries from before this process started are history, not writes.
        let old = slice(&[("kube-controller-manager", 900)]);
        assert!(foreign_writes(None, &old, ours, start).is_empty());
    }
}
