//! The EndpointSlice mirroring controller's shell: custom Endpoints of selector-less Services
//! become EndpointSlices managed by `endpointslicemirroring-controller.k8s.io`. Events are mapped
//! to Endpoints keys by the pure decisions in [`crate::mirroring::queue`]; each key is planned by
//! [`crate::mirroring::plan`] and applied here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use super::informers::{Informers, Key, LABEL_SERVICE_NAME, Subscribers, key_of};
use super::overlay::RecentWrites;
use super::work::{Queue, SlicePlan, SyncError, apply_slices};
use crate::mirroring as core;
use crate::mirroring::queue::{self as decide, SliceUpdate};
use crate::runtime::admin::Readiness;
use crate::runtime::cache::Handler;
use crate::runtime::metrics::Metrics;
use crate::runtime::queue::{RateLimit, WorkQueue};

const QUEUE: &str = "endpoint_slice_mirroring";

/// Mirroring controller settings (validated flags).
pub type Settings = super::ControllerSettings<core::Config>;

struct Shared {
    client: kube::Client,
    settings: Settings,
    field_manager: String,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    written: Mutex<RecentWrites<EndpointSlice>>,
    gauges: Mutex<core::metrics::MetricsCache>,
}

/// The controller.
pub struct Controller {
    shared: Arc<Shared>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

fn parse_key(k: &str) -> Option<Key> {
    let (ns, name) = k.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
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
            Reporter {
                controller: "endpoint-slice-mirroring-controller".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        let gauges = core::metrics::MetricsCache::new(settings.core.max_endpoints());
        let shared = Arc::new(Shared {
            client,
            settings,
            field_manager,
            queue: Arc::new(Queue::new(WorkQueue::new(QUEUE, RateLimit::MIRRORING), metrics.clone())),
            metrics,
            recorder,
            written: Mutex::default(),
            gauges: Mutex::new(gauges),
        });
        Controller { shared, ready: ready.check("endpointslice-mirroring-controller caches") }
    }

    /// The handlers this controller needs on the shared caches.
    pub fn subscribers(&self) -> Subscribers {
        let s = &self.shared;
        Subscribers {
            services: vec![Arc::new(ServiceEvents(s.clone()))],
            endpoints: vec![Arc::new(EndpointsEvents(s.clone()))],
            slices: vec![Arc::new(SliceEvents(s.clone()))],
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
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            workers = s.settings.workers,
            "endpointslice-mirroring-controller caches synced; starting workers"
        );
        let sh = s.clone();
        s.queue
            .clone()
            .run_workers(s.settings.workers, gate, stop, move |key, gate| {
                let (s, inf) = (sh.clone(), informers.clone());
                async move {
                    let t0 = Instant::now();
                    let result = sync(&s, &inf, &key, &gate).await;
                    s.metrics.mirroring.endpoints_sync_duration.observe(t0.elapsed().as_secs_f64());
                    result
                }
            })
            .await;
    }
}

/// Queues a key at once (Service and Endpoints events, as upstream).
fn enqueue(s: &Shared, key: Key) {
    s.queue.enqueue(key, Duration::ZERO);
}

struct ServiceEvents(Arc<Shared>);

impl Handler<Service> for ServiceEvents {
    fn applied(&self, old: Option<Arc<Service>>, new: Arc<Service>) {
        let queue = match old {
            None => decide::service_added_or_deleted(&new),
            Some(old) => decide::service_updated(&old, &new),
        };
        if queue {
            enqueue(&self.0, key_of(&*new));
        }
    }

    fn deleted(&self, old: Arc<Service>) {
        if decide::service_added_or_deleted(&old) {
            enqueue(&self.0, key_of(&*old));
        }
    }
}

struct EndpointsEvents(Arc<Shared>);

impl Handler<Endpoints> for EndpointsEvents {
    fn applied(&self, old: Option<Arc<Endpoints>>, new: Arc<Endpoints>) {
        let queue = match old {
            None => decide::endpoints_added_or_deleted(&new),
            Some(old) => {
                old.metadata.resource_version != new.metadata.resource_version && decide::endpoints_updated(&old, &new)
            }
        };
        if queue {
            enqueue(&self.0, key_of(&*new));
        }
    }

    fn deleted(&self, old: Arc<Endpoints>) {
        if decide::endpoints_added_or_deleted(&old) {
            enqueue(&self.0, key_of(&*old));
        }
    }
}

struct SliceEvents(Arc<Shared>);

impl SliceEvents {
    /// `own` says the event is the echo of our own write or delete (see the overlay), which
    /// upstream's tracker does not sync for either.
    fn act(&self, u: SliceUpdate, own: bool) {
        let keys = match u {
            SliceUpdate::Ignore => vec![],
            SliceUpdate::Queue(keys) => keys,
            SliceUpdate::UnlessOwnWrite(_) if own => vec![],
            SliceUpdate::UnlessOwnWrite(key) => vec![key],
        };
        // Only EndpointSlice events wait for the batch period (upstream's
        // `--mirroring-endpointslice-updates-batch-period`).
        for k in keys.iter().filter_map(|k| parse_key(k)) {
            self.0.queue.enqueue(k, self.0.settings.batch_period);
        }
    }
}

impl Handler<EndpointSlice> for SliceEvents {
    fn applied(&self, old: Option<Arc<EndpointSlice>>, new: Arc<EndpointSlice>) {
        let echo = self.0.written.lock().unwrap_or_else(|e| e.into_inner()).observed(&new);
        let managed_by = &self.0.settings.core.managed_by;
        let u = match old {
            None => decide::slice_added_or_deleted(&new, managed_by),
            Some(old) if old.metadata.resource_version == new.metadata.resource_version => SliceUpdate::Ignore,
            Some(old) => decide::slice_updated(&old, &new, managed_by),
        };
        self.act(u, echo);
    }

    fn deleted(&self, old: Arc<EndpointSlice>) {
        let ours = self.0.written.lock().unwrap_or_else(|e| e.into_inner()).observed_deleted(&old);
        self.act(decide::slice_added_or_deleted(&old, &self.0.settings.core.managed_by), ours);
    }
}

async fn sync(s: &Shared, inf: &Informers, key: &Key, gate: &super::leader::Gate) -> Result<(), SyncError> {
    let (ns, name) = key;
    let cached = inf.slices_of(ns, name);
    let existing = s
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .overlay(ns, cached, |w| w.labels().get(LABEL_SERVICE_NAME).map(String::as_str) == Some(name.as_str()));
    let endpoints = inf.endpoints.get(Some(ns), name);
    let service = inf.services.get(Some(ns), name);
    let plan = {
        let refs: Vec<&EndpointSlice> = existing.iter().map(|s| &**s).collect();
        match endpoints.as_deref() {
            Some(ep) => core::plan(
                &core::Input { endpoints: ep, service: service.as_deref(), existing_slices: &refs },
                &s.settings.core,
            ),
            None => core::plan_delete_all(ns, name, &refs, &s.settings.core),
        }
    };
    for w in &plan.warnings {
        tracing::warn!(namespace = %ns, endpoints = %name, "{w}");
    }
    let key_str = format!("{ns}/{name}");
    {
        let mut g = s.gauges.lock().unwrap_or_else(|e| e.into_inner());
        if plan.not_mirrored.is_some() {
            g.delete(&key_str);
        } else {
            g.update(&key_str, &plan.stats.port_sets);
        }
        let t = g.totals();
        let m = &s.metrics.mirroring;
        m.endpoints_desired.set(t.endpoints_desired as i64);
        m.num_endpoint_slices.set(t.num_endpoint_slices as i64);
        m.desired_endpoint_slices.set(t.desired_endpoint_slices as i64);
        // Upstream observes these in its reconcile, which Endpoints that are not mirrored (a
        // Service with a selector, the skip label) never reach.
        if plan.not_mirrored.is_none() {
            m.endpoints_added_per_sync.observe(plan.stats.endpoints_added as f64);
            m.endpoints_updated_per_sync.observe(plan.stats.endpoints_updated as f64);
            m.endpoints_removed_per_sync.observe(plan.stats.endpoints_removed as f64);
            m.addresses_skipped_per_sync.observe(plan.stats.addresses_skipped as f64);
        }
    }
    if let Some(ep) = endpoints.as_deref() {
        let reference = ep.object_ref(&());
        for ev in &plan.events {
            let e = KubeEvent {
                type_: if ev.event_type == crate::endpointslice::hints::EventType::Warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: ev.reason.to_string(),
                note: Some(ev.message.clone()),
                action: "Mirror".into(),
                secondary: None,
            };
            super::work::publish_event(&s.recorder, e, &reference).await;
        }
    }
    let slice_plan = SlicePlan::new(&plan.create, &plan.update, &plan.delete);
    apply_slices(
        &s.client,
        ns,
        &s.field_manager,
        slice_plan,
        (&s.written, &inf.slices),
        gate,
        &s.metrics.mirroring.changes,
    )
    .await
}
