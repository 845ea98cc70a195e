//! The legacy Endpoints controller's shell: Service and pod events → Service keys (upstream's
//! rules), a snapshot per key, the pure planner ([`crate::endpoints`]), one write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use tokio::sync::watch;

use super::informers::{Informers, Key, Subscribers, key_of};
use super::overlay::RecentWrites;
use super::trigger::TriggerTimeTracker;
use super::work::{PodEvents, Queue, SyncError, is_namespace_terminating};
use crate::endpoints as core;
use crate::pod::CachedPod;
use crate::runtime::admin::Readiness;
use crate::runtime::cache::{Cache, Handler};
use crate::runtime::metrics::{Metrics, OperationLabels, ResultLabels};
use crate::runtime::queue::{RateLimit, WorkQueue};

const QUEUE: &str = "endpoint";

/// Endpoints controller settings (validated flags).
pub type Settings = super::ControllerSettings<core::Config>;

struct Shared {
    client: kube::Client,
    settings: Settings,
    field_manager: String,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    trigger_times: Mutex<TriggerTimeTracker>,
    written: Mutex<RecentWrites<Endpoints>>,
    /// The warnings of each Service's last sync: a warning is logged when it appears, not on
    /// every sync while it lasts. Only current warnings are kept, so this is bounded by what the
    /// cluster looks like now.
    warned: Mutex<HashMap<Key, HashSet<String>>>,
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
            Reporter { controller: "endpoint-controller".into(), instance: std::env::var("HOSTNAME").ok() },
        );
        let shared = Arc::new(Shared {
            client,
            settings,
            field_manager,
            queue: Arc::new(Queue::new(WorkQueue::new(QUEUE, RateLimit::ENDPOINTS), metrics.clone())),
            metrics,
            recorder,
            trigger_times: Mutex::default(),
            written: Mutex::default(),
            warned: Mutex::default(),
        });
        Controller { shared, ready: ready.check("endpoints-controller caches") }
    }

    /// Lets the EndpointSlice controller's sync of a Service go first: each sync waits while
    /// `slices` (served by `workers` workers) is syncing the same Service or has it next, at most
    /// `max` (`--endpoints-wait-for-slices`).
    pub fn wait_for_slices(&self, slices: Arc<Queue>, max: Duration, workers: usize) {
        let s = &self.shared;
        s.queue.after(slices, max, workers, s.metrics.endpoints.slices_first_wait.clone());
    }

    /// The handlers this controller needs on the shared caches.
    pub fn subscribers(&self) -> Subscribers {
        let s = &self.shared;
        Subscribers {
            services: vec![Arc::new(ServiceEvents(s.clone()))],
            pods: vec![Arc::new(PodEvents { queue: s.queue.clone(), batch_period: s.settings.batch_period })],
            endpoints: vec![Arc::new(EndpointsEvents(s.clone()))],
            ..Default::default()
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, informers: Informers, mut stop: watch::Receiver<bool>, gate: super::leader::Gate) {
        let s = self.shared.clone();
        tokio::select! {
            _ = informers.wait_synced() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        // Upstream `checkLeftoverEndpoints`: every Endpoints object is synced once at start-up,
        // so the ones whose Service is gone are deleted (leader-election records excepted).
        for ep in informers.endpoints.store.state() {
            if !ep.annotations().contains_key(core::ANNOTATION_LEADER) {
                s.queue.enqueue(key_of(&*ep), Duration::ZERO);
            }
        }
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(workers = s.settings.workers, "endpoints-controller caches synced; starting workers");
        let sh = s.clone();
        s.queue
            .clone()
            .run_workers(s.settings.workers, gate, stop, move |key, gate| {
                let (s, inf) = (sh.clone(), informers.clone());
                async move { sync(&s, &inf, &key, &gate).await }
            })
            .await;
    }
}

struct ServiceEvents(Arc<Shared>);

impl Handler<Service> for ServiceEvents {
    fn applied(&self, _old: Option<Arc<Service>>, new: Arc<Service>) {
        self.0.queue.enqueue(key_of(&*new), Duration::ZERO);
    }

    fn deleted(&self, old: Arc<Service>) {
        self.0.queue.enqueue(key_of(&*old), Duration::ZERO);
    }
}

/// Upstream reacts to Endpoints deletions only (to recreate them); we also keep the overlay of
/// our own writes in step with the watch.
struct EndpointsEvents(Arc<Shared>);

impl Handler<Endpoints> for EndpointsEvents {
    fn applied(&self, _old: Option<Arc<Endpoints>>, new: Arc<Endpoints>) {
        // Upstream's Endpoints controller does not sync on Endpoints events at all.
        let _echo = self.0.written.lock().unwrap_or_else(|e| e.into_inner()).observed(&new);
    }

    fn deleted(&self, old: Arc<Endpoints>) {
        self.0.written.lock().unwrap_or_else(|e| e.into_inner()).observed_deleted(&old);
        self.0.queue.enqueue(key_of(&*old), Duration::ZERO);
    }
}

fn count(s: &Shared, op: &str) {
    s.metrics.endpoints.changes.get_or_create(&OperationLabels { operation: op.into() }).inc();
}

async fn sync(s: &Shared, inf: &Informers, key: &Key, gate: &super::leader::Gate) -> Result<(), SyncError> {
    let (ns, name) = key;
    let service = inf.services.get(Some(ns), name);
    let cached = inf.endpoints.get(Some(ns), name);
    let existing = s.written.lock().unwrap_or_else(|e| e.into_inner()).get(key, cached);
    let pods: Vec<Arc<CachedPod>> = if service.is_some() { inf.pods_of(ns, name) } else { Vec::new() };
    let (plan, trigger_state) = {
        let pod_refs: Vec<&CachedPod> = pods.iter().map(|p| &**p).collect();
        match service.as_deref() {
            Some(svc) => {
                let (t, st) = s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).compute(svc, &pods);
                let input = core::Input::new(svc, &pod_refs, existing.as_deref()).with_trigger_time(t);
                (core::plan(&input, &s.settings.core), Some(st))
            }
            None => {
                s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).delete(key);
                (core::plan(&core::Input::service_deleted(ns, name, existing.as_deref()), &s.settings.core), None)
            }
        }
    };
    {
        let now: HashSet<String> = plan.warnings.iter().map(ToString::to_string).collect();
        let mut warned = s.warned.lock().unwrap_or_else(|e| e.into_inner());
        let before = warned.remove(key).unwrap_or_default();
        for w in now.difference(&before) {
            tracing::warn!(namespace = %ns, service = %name, "{w}");
        }
        if !now.is_empty() {
            warned.insert(key.clone(), now);
        }
    }
    if !*gate.borrow() && !plan.is_noop() {
        return Err(SyncError::NotLeader);
    }
    let result = apply(s, &inf.endpoints, ns, name, &plan.action).await;
    s.metrics.endpoints.syncs.get_or_create(&ResultLabels { result: SyncError::result_label(&result).into() }).inc();
    // Upstream computes trigger times only for Services it fills (a selector, not ExternalName):
    // a Service given a selector later starts from its creation time.
    if result.is_ok()
        && plan.skipped.is_none()
        && let (Some(svc), Some(st)) = (service.as_deref(), trigger_state)
    {
        s.trigger_times.lock().unwrap_or_else(|e| e.into_inner()).commit(svc, st);
    }
    if let (Err(e @ SyncError::Api(_)), Some(_)) = (&result, service.as_deref()) {
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: "FailedToUpdateEndpoint".into(),
            note: Some(format!("Failed to update endpoint {ns}/{name}: {}", e.message())),
            action: "Reconcile".into(),
            secondary: None,
        };
        // Upstream records it on the Endpoints object (`kubectl describe endpoints` shows it).
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Endpoints".into()),
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
            uid: existing.as_ref().and_then(|e| e.metadata.uid.clone()),
            ..Default::default()
        };
        super::work::publish_event(&s.recorder, ev, &reference).await;
    }
    result
}

async fn apply(
    s: &Shared,
    cache: &Cache<Endpoints>,
    ns: &str,
    name: &str,
    action: &core::Action,
) -> Result<(), SyncError> {
    let api: Api<Endpoints> = Api::namespaced(s.client.clone(), ns);
    let pp = PostParams { field_manager: Some(s.field_manager.clone()), ..Default::default() };
    match action {
        core::Action::Nothing => Ok(()),
        core::Action::Create(ep) => match api.create(&pp, ep).await {
            Ok(done) => {
                count(s, "create");
                let done = crate::controllers::prune::endpoints(done);
                let now = cache.get(Some(ns), name);
                s.written.lock().unwrap_or_else(|e| e.into_inner()).wrote(done, None, now.as_deref());
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Err(SyncError::Stale(format!("Endpoints {ns}/{name} already exist")))
            }
            Err(e) if is_namespace_terminating(&e) => Ok(()),
            Err(e) => Err(e.into()),
        },
        core::Action::Update(ep) => match api.replace(name, &pp, ep).await {
            Ok(done) => {
                count(s, "update");
                let done = crate::controllers::prune::endpoints(done);
                let now = cache.get(Some(ns), name);
                s.written.lock().unwrap_or_else(|e| e.into_inner()).wrote(
                    done,
                    ep.metadata.resource_version.clone(),
                    now.as_deref(),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                Err(SyncError::Stale(format!("update of Endpoints {ns}/{name}: {}", e.message)))
            }
            Err(e) => Err(e.into()),
        },
        core::Action::Delete { namespace, name } => {
            let api: Api<Endpoints> = Api::namespaced(s.client.clone(), namespace);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    count(s, "delete");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}
