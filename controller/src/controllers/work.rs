//! What the three controllers' shells share: the sync error kinds, the worker loop with
//! upstream's retry policy, enqueueing with metrics, the pod-event → Services rule, and applying
//! a slice plan (creates, updates, deletes) with the write gate and the recent-writes overlay.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::watch;

use super::informers::{Key, LABEL_SERVICE_NAME};
use super::leader::Gate;
use super::overlay::RecentWrites;
use crate::endpointslice::labels::{self, LABEL_MANAGED_BY};
use crate::endpointslice::naming;
use crate::runtime::cache::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::pod::CachedPod;
use crate::runtime::metrics::{Metrics, OperationLabels, QueueLabels};
use crate::runtime::queue::WorkQueue;

/// Upstream's `maxRetries`: after this many failures in a row a key is dropped until its next event.
pub const MAX_RETRIES: u32 = 15;

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

/// The longest Event note the API server accepts (bytes).
pub const MAX_EVENT_NOTE: usize = 1024;

/// Records an Event; the note is cut to [`MAX_EVENT_NOTE`] bytes (at a character boundary), and
/// a refusal is logged, never dropped in silence.
pub async fn publish_event(
    recorder: &kube::runtime::events::Recorder,
    mut ev: kube::runtime::events::Event,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) {
    if let Some(note) = ev.note.as_mut() {
        truncate_note(note);
    }
    if let Err(err) = recorder.publish(&ev, reference).await {
        tracing::warn!(reason = %ev.reason, object = ?reference.name, error = %err, "cannot record an event");
    }
}

fn truncate_note(note: &mut String) {
    if note.len() > MAX_EVENT_NOTE {
        let mut end = MAX_EVENT_NOTE;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
}

impl SyncError {
    /// The error as upstream's events word it: an API error is its Status message (kube's
    /// `Display` adds the whole Status, which overran the 1024-byte note of an Event).
    pub fn message(&self) -> String {
        match self {
            SyncError::Api(kube::Error::Api(status)) => status.message.clone(),
            e => e.to_string(),
        }
    }

    /// The outcome of several independent writes (upstream's `utilerrors.NewAggregate`): none
    /// is success, one is itself, several are one error naming each, stale only if all were.
    pub fn aggregate(mut errors: Vec<SyncError>) -> Result<(), SyncError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let all_stale = errors.iter().all(|e| matches!(e, SyncError::Stale(_)));
                let joined = errors
                    .iter()
                    .map(|e| match e {
                        SyncError::Stale(m) => m.clone(),
                        e => e.message(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(if all_stale { SyncError::Stale(joined) } else { SyncError::Retry(joined) })
            }
        }
    }

    /// The `result` label of upstream's `…_syncs` counters.
    pub fn result_label(r: &Result<(), SyncError>) -> &'static str {
        match r {
            Ok(()) => "success",
            Err(SyncError::Stale(_)) => "stale",
            Err(SyncError::Api(_) | SyncError::Retry(_)) => "error",
            Err(SyncError::NotLeader) => "not_leader",
        }
    }
}

/// How long one sync may take before it is abandoned and retried with backoff. kube's client
/// has no read timeout, so without this a request stuck on a connection that died without a
/// reset would hold its key for good. A healthy sync writes one object at a time; the largest
/// (a Service of 10,000 endpoints: 100 slices) takes seconds, so only a stuck request comes near
/// this. An abandoned write may or may not have landed; the retry plans from the cache, and
/// resourceVersions and deterministic names keep it from writing twice.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// A controller's queue with its upstream name and the process metrics.
pub struct Queue {
    /// The queue.
    pub queue: WorkQueue<Key>,
    metrics: Arc<Metrics>,
    /// `{name}` of this queue's series, built once (every add, take and finish reads it).
    labels: QueueLabels,
    /// [`Queue::after`]: another queue whose sync of the same key goes first.
    after: OnceLock<After>,
}

/// See [`Queue::after`].
struct After {
    queue: Arc<Queue>,
    max: Duration,
    /// The other queue's workers.
    workers: usize,
    waited: Histogram,
}

impl Queue {
    /// A queue named `name` (`workqueue_*{name}`).
    pub fn new(queue: WorkQueue<Key>, metrics: Arc<Metrics>) -> Self {
        metrics.queue.in_flight.register(queue.name());
        let labels = QueueLabels { name: queue.name().into() };
        Queue { queue, metrics, labels, after: OnceLock::new() }
    }

    /// Before syncing a key, a worker of this queue waits while `first` is syncing the same key
    /// or has it next for one of its `workers` ([`WorkQueue::wait_settled`]), at most `max`
    /// (observed into `waited`). The Endpoints controller's queue does
    /// this with the EndpointSlice controller's, so that a pod change reaches the slices, which
    /// kube-proxy reads, before the legacy Endpoints object competes with them for the API
    /// server (`--endpoints-wait-for-slices`). `first` must never wait for this queue. Set once,
    /// before the workers start; later calls are ignored.
    pub fn after(&self, first: Arc<Queue>, max: Duration, workers: usize, waited: Histogram) {
        let _ = self.after.set(After { queue: first, max, workers, waited });
    }

    fn labels(&self) -> &QueueLabels {
        &self.labels
    }

    /// Adds a key now or after `delay`.
    pub fn enqueue(&self, key: Key, delay: Duration) {
        self.metrics.queue.adds.get_or_create(self.labels()).inc();
        if delay.is_zero() {
            self.queue.add(key);
        } else {
            self.queue.add_after(key, delay);
        }
        self.record_depth();
    }

    /// `workqueue_depth{name}`: the keys waiting (set on every add, take and finish, so it
    /// follows a backlog on a follower too, where nothing is taken).
    fn record_depth(&self) {
        self.metrics.queue.depth.get_or_create(self.labels()).set(self.queue.len() as i64);
    }

    /// Upstream's `handleErr`: forget on success, back off and retry up to [`MAX_RETRIES`],
    /// keep the key without counting a failure when leadership was lost.
    pub fn finish(&self, key: &Key, result: Result<(), SyncError>) {
        match result {
            Ok(()) => self.queue.forget(key),
            Err(SyncError::NotLeader) => self.queue.add(key.clone()),
            Err(e) => {
                let q = self.queue.name();
                if self.queue.failures(key) < MAX_RETRIES {
                    let n = self.queue.add_rate_limited(key.clone());
                    self.metrics.queue.retries.get_or_create(self.labels()).inc();
                    tracing::info!(queue = q, namespace = %key.0, name = %key.1, attempt = n, error = %e, "sync failed; retrying with backoff");
                } else {
                    self.queue.forget(key);
                    tracing::error!(queue = q, namespace = %key.0, name = %key.1, error = %e, "sync failed {MAX_RETRIES} times; dropping the key until its next event");
                }
            }
        }
    }

    /// Runs `workers` workers until `stop` turns true: each waits until this replica leads,
    /// takes a key, syncs it with `sync`, and records the outcome.
    pub async fn run_workers<F, Fut>(
        self: Arc<Self>,
        workers: usize,
        gate: Gate,
        mut stop: watch::Receiver<bool>,
        sync: F,
    ) where
        F: Fn(Key, Gate) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), SyncError>> + Send,
    {
        let mut set = tokio::task::JoinSet::new();
        // Since when this replica leads. A follower's keys wait for leadership, not for a
        // worker; client-go's queue duration counts from the add because kube-controller-manager
        // has no queue before it leads, so here the wait counts from the later of the two. A
        // worker that had to wait at the gate records the takeover itself, before it takes a key;
        // a watcher records it too, for when every worker was inside a sync the whole time.
        let leading_since = Arc::new(Mutex::new(tokio::time::Instant::now()));
        {
            let (since, mut gate, mut stop) = (leading_since.clone(), gate.clone(), stop.clone());
            set.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => break,
                        r = gate.wait_for(|leading| !*leading) => if r.is_err() { break },
                    }
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => break,
                        r = gate.wait_for(|leading| *leading) => if r.is_err() { break },
                    }
                    *since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
                }
            });
        }
        for _ in 0..workers.max(1) {
            let (q, mut gate, sync, mut stop) = (self.clone(), gate.clone(), sync.clone(), stop.clone());
            let leading_since = leading_since.clone();
            set.spawn(async move {
                loop {
                    // Only the leader works; the caches stay warm on every replica. A follower
                    // waiting here stops at once on shutdown.
                    let was_following = !*gate.borrow();
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => break,
                        r = gate.wait_for(|leading| *leading) => if r.is_err() { break },
                    }
                    if was_following {
                        *leading_since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
                    }
                    let Some((key, waited)) = q.queue.get_timed().await else { break };
                    q.record_depth();
                    let leading_for = leading_since.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                    let waited = waited.min(leading_for);
                    q.metrics.queue.queue_duration.get_or_create(q.labels()).observe(waited.as_secs_f64());
                    // Neither queueing nor work: recorded on its own.
                    if let Some(a) = q.after.get() {
                        a.waited.observe(a.queue.queue.wait_settled(&key, a.max, a.workers).await.as_secs_f64());
                    }
                    let t0 = tokio::time::Instant::now();
                    let running = q.metrics.queue.in_flight.start(q.queue.name());
                    // A write stuck on a dead connection must not hold its key for good, and
                    // neither may a bug: a sync that panics is a failed sync, retried with
                    // backoff, and the key is released (kube-controller-manager would crash and
                    // stop serving every Service; docs/behaviour.md).
                    let syncing = std::panic::AssertUnwindSafe(sync(key.clone(), gate.clone())).catch_unwind();
                    let result = match tokio::time::timeout(SYNC_TIMEOUT, syncing).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(panic)) => Err(SyncError::Retry(format!("sync panicked: {}", panic_message(&*panic)))),
                        Err(_) => Err(SyncError::Retry(format!("sync did not finish within {SYNC_TIMEOUT:?}"))),
                    };
                    drop(running);
                    let elapsed = t0.elapsed();
                    q.metrics.queue.work_duration.get_or_create(q.labels()).observe(elapsed.as_secs_f64());
                    tracing::debug!(queue = q.queue.name(), namespace = %key.0, name = %key.1, ?elapsed, ok = result.is_ok(), "synced");
                    q.finish(&key, result);
                    q.queue.done(&key);
                    q.record_depth();
                }
            });
        }
        let _ = stop.wait_for(|v| *v).await;
        self.queue.shut_down();
        while set.join_next().await.is_some() {}
    }
}

/// The text of a panic's payload (`panic!` with a literal or with a format string), or a
/// placeholder for any other payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a payload that is not a string")
}

/// The pod events of the EndpointSlice and Endpoints controllers: sync the Services
/// [`services_to_sync`] names after the batch period, and the Services whose membership an
/// index change moved at once.
pub struct PodEvents {
    /// The controller's queue.
    pub queue: Arc<Queue>,
    /// Its `…-updates-batch-period`.
    pub batch_period: Duration,
}

impl super::informers::PodSubscriber for PodEvents {
    fn pod_changed(
        &self,
        old: Option<&CachedPod>,
        new: Option<&CachedPod>,
        before: &BTreeSet<String>,
        now: &BTreeSet<String>,
    ) {
        let Some((ns, services)) = services_to_sync(old, new, before, now) else { return };
        for svc in services {
            self.queue.enqueue((ns.clone(), svc), self.batch_period);
        }
    }

    fn members_changed(&self, services: &[Key]) {
        for k in services {
            self.queue.enqueue(k.clone(), Duration::ZERO);
        }
    }
}

/// Upstream's pod-event rule (`GetServicesToUpdateOnPodChange`): which Services to sync after a
/// pod was added (`old: None`), updated, or deleted (`new: None`), given the Services that
/// selected it before and after. Returns the pod's namespace and the Service names.
pub fn services_to_sync(
    old: Option<&CachedPod>,
    new: Option<&CachedPod>,
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
) -> Option<(String, BTreeSet<String>)> {
    let ns = new.or(old).and_then(|p| p.metadata.namespace.as_deref().map(str::to_owned))?;
    let targets = match (old, new) {
        (None, Some(_)) => now.clone(),
        (Some(_), None) => before.clone(),
        // Upstream returns early when the resourceVersion did not change (a resync). The cache
        // keeps no resourceVersion of pods; a pod equal to its cached state changed nothing a
        // sync reads (and `pod_endpoints_changed` alone would requeue every terminating pod's
        // Services on each relist).
        (Some(old), Some(new)) if old == new => return None,
        (Some(old), Some(new)) => match crate::podutil::pod_endpoints_changed(old, new) {
            (false, false) => return None,
            (true, false) => now.clone(),
            (changed, true) => crate::podutil::determine_needed_service_updates(before, now, changed),
        },
        (None, None) => return None,
    };
    Some((ns, targets))
}

/// Whether a write failed because the namespace is being deleted (creates are then dropped
/// quietly, as upstream does).
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// The slices a plan writes.
pub struct SlicePlan<'a> {
    /// POSTs.
    pub create: Vec<&'a EndpointSlice>,
    /// PUTs (each carries the resourceVersion it was planned from).
    pub update: Vec<&'a EndpointSlice>,
    /// DELETEs.
    pub delete: Vec<&'a EndpointSlice>,
    /// Every create of the sync this plan is part of: names a fallback must not take.
    pub reserved: &'a [EndpointSlice],
}

impl<'a> SlicePlan<'a> {
    /// The whole plan, applied as one (the mirroring controller's `finalize`).
    pub fn new(create: &'a [EndpointSlice], update: &'a [EndpointSlice], delete: &'a [EndpointSlice]) -> Self {
        SlicePlan {
            create: create.iter().collect(),
            update: update.iter().collect(),
            delete: delete.iter().collect(),
            reserved: create,
        }
    }

    /// The plan as one part per address type, each in the plan's order (the EndpointSlice
    /// controller's `reconcileByAddressType`: a write that fails for one address type does not
    /// hold back the others, as upstream). An address type with only deletes (one the Service
    /// dropped) comes last, one part per delete: upstream deletes those after reconciling the
    /// others and goes on past a failed one.
    pub fn by_address_type(self) -> Vec<SlicePlan<'a>> {
        fn part<'p, 'a>(
            parts: &'p mut BTreeMap<&'a str, SlicePlan<'a>>,
            slice: &'a EndpointSlice,
            reserved: &'a [EndpointSlice],
        ) -> &'p mut SlicePlan<'a> {
            parts.entry(slice.address_type.as_str()).or_insert_with(|| SlicePlan {
                create: Vec::new(),
                update: Vec::new(),
                delete: Vec::new(),
                reserved,
            })
        }
        let mut parts = BTreeMap::new();
        for slice in self.create {
            part(&mut parts, slice, self.reserved).create.push(slice);
        }
        for slice in self.update {
            part(&mut parts, slice, self.reserved).update.push(slice);
        }
        for slice in self.delete {
            part(&mut parts, slice, self.reserved).delete.push(slice);
        }
        let (writes, deletes): (Vec<_>, Vec<_>) =
            parts.into_values().partition(|p| !p.create.is_empty() || !p.update.is_empty());
        let one_each = deletes.into_iter().flat_map(|p| {
            p.delete.into_iter().map(move |slice| SlicePlan {
                create: Vec::new(),
                update: Vec::new(),
                delete: vec![slice],
                reserved: p.reserved,
            })
        });
        writes.into_iter().chain(one_each).collect()
    }
}

/// The body of a PUT for `slice`, planned from a cached copy: without managed fields. The cache
/// keeps the managers but not their field sets (`prune::endpoint_slice`); sent back, those empty
/// sets would replace the live ones and the API server would drop every other manager. Without
/// them it keeps the live record, as for upstream's full informer copy.
pub fn update_body(slice: &EndpointSlice) -> Cow<'_, EndpointSlice> {
    if slice.metadata.managed_fields.is_none() {
        return Cow::Borrowed(slice);
    }
    Cow::Owned(crate::controllers::prune::managed_fields(slice.clone()))
}

/// Whether two slices belong to one group: the same Service (`kubernetes.io/service-name`) and
/// the same manager (`endpointslice.kubernetes.io/managed-by`). A create refused because a slice
/// of its own group holds the name means our cache lags behind our own earlier write.
pub fn same_group(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let key =
        |s: &EndpointSlice| (s.labels().get(LABEL_SERVICE_NAME).cloned(), labels::managed_by(s).map(str::to_owned));
    key(a) == key(b)
}

/// How many names [`create_slice`] tries when others hold the planned one.
const NAME_ATTEMPTS: usize = 8;

/// Applies a slice plan: creates, then updates, then deletes (upstream's order: a plan that
/// stops halfway, say on a failed create, has removed nothing yet); leadership is re-checked
/// before every write (a lost Lease stops writes at once); every success is recorded in the
/// overlay and counted in `changes{operation}`. `written` is the overlay and `cache` the watch
/// cache it lies over.
pub async fn apply_slices(
    client: &kube::Client,
    ns: &str,
    field_manager: &str,
    plan: SlicePlan<'_>,
    (written, cache): (&Mutex<RecentWrites<EndpointSlice>>, &Cache<EndpointSlice>),
    gate: &Gate,
    changes: &Family<OperationLabels, Counter>,
) -> Result<(), SyncError> {
    let count = |op: &str| {
        changes.get_or_create(&OperationLabels { operation: op.into() }).inc();
    };
    let leading = || if *gate.borrow() { Ok(()) } else { Err(SyncError::NotLeader) };
    let overlay = || written.lock().unwrap_or_else(|e| e.into_inner());
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pp = PostParams { field_manager: Some(field_manager.to_string()), ..Default::default() };
    // Names a fallback must not take: every slice of the namespace we know of, our own recent
    // creates the cache has not shown yet, and this plan's other creates.
    let taken = || -> BTreeSet<String> {
        let known = overlay().overlay(ns, cache.store.in_namespace(ns), |_| true);
        known.iter().map(|s| s.name_any()).chain(plan.reserved.iter().map(|s| s.name_any())).collect()
    };
    for slice in plan.create {
        leading()?;
        let Some(done) = create_slice(&api, &pp, slice, &taken).await? else {
            tracing::debug!(namespace = %ns, "namespace is terminating; not creating EndpointSlices");
            return Ok(());
        };
        count("create");
        let done = crate::controllers::prune::endpoint_slice(done);
        let now = cache.get(Some(ns), &done.name_any());
        overlay().wrote(done, None, now.as_deref());
    }
    for slice in plan.update {
        leading()?;
        let name = slice.name_any();
        match api.replace(&name, &pp, &update_body(slice)).await {
            Ok(done) => {
                count("update");
                let done = crate::controllers::prune::endpoint_slice(done);
                let now = cache.get(Some(ns), &name);
                overlay().wrote(done, slice.metadata.resource_version.clone(), now.as_deref());
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                return Err(SyncError::Stale(format!("update of EndpointSlice {name}: {}", e.message)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for slice in plan.delete {
        leading()?;
        // Conditional on the planned object (upstream deletes by name alone): a plan from a stale
        // cache, or a former leader's write that lands late, cannot delete a slice that was
        // changed or recreated since.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: slice.metadata.uid.clone(),
                resource_version: slice.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        let name = slice.name_any();
        match api.delete(&name, &dp).await {
            Ok(_) => {
                count("delete");
                overlay().deleted(slice);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(SyncError::Stale(format!("delete of EndpointSlice {name}: {}", e.message)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Creates `slice`; `None` when its namespace is being deleted (creates are then dropped quietly,
/// as upstream does).
///
/// A planned name is taken (409) in two ways. A slice of the same group (same Service and
/// manager) holds it: our cache has not seen that slice yet, so the sync is [`SyncError::Stale`]
/// and retried — this is what keeps a lagging cache from creating a duplicate. Anything else
/// holds it (a slice relabelled to another Service or manager, one of another controller's):
/// the slice is created under the next deterministic name ([`naming::slice_names`]) that no
/// cached slice uses, so a lagging cache still re-plans names it can only collide on.
async fn create_slice(
    api: &Api<EndpointSlice>,
    pp: &PostParams,
    slice: &EndpointSlice,
    taken: &(dyn Fn() -> BTreeSet<String> + Sync),
) -> Result<Option<EndpointSlice>, SyncError> {
    let ns = slice.metadata.namespace.as_deref().or(api.namespace()).unwrap_or("");
    let service = slice.labels().get(LABEL_SERVICE_NAME).map(String::as_str).unwrap_or_default();
    let owner = slice.owner_references().first().map(|o| o.uid.as_str()).unwrap_or_default();
    let mut alternatives: Option<Box<dyn Iterator<Item = String> + Send>> = None;
    let mut body = Cow::Borrowed(slice);
    for _ in 0..NAME_ATTEMPTS {
        let name = body.name_any();
        match api.create(pp, &body).await {
            Ok(done) => return Ok(Some(done)),
            Err(e) if is_namespace_terminating(&e) => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&name).await? {
                Some(held) if !same_group(&held, slice) => {
                    let next = alternatives
                        .get_or_insert_with(|| {
                            let taken = taken();
                            Box::new(
                                naming::slice_names(service, owner, &slice.address_type)
                                    .filter(move |n| !taken.contains(n)),
                            )
                        })
                        .next();
                    let Some(next) = next else { break };
                    tracing::warn!(
                        namespace = %ns,
                        name = %name,
                        holder_service = ?held.labels().get(LABEL_SERVICE_NAME),
                        holder_manager = ?held.labels().get(LABEL_MANAGED_BY),
                        next = %next,
                        "an EndpointSlice outside this Service's group holds the planned name; creating under the next"
                    );
                    let mut renamed = slice.clone();
                    renamed.metadata.name = Some(next);
                    body = Cow::Owned(renamed);
                }
                _ => return Err(SyncError::Stale(format!("EndpointSlice {name} already exists: {}", e.message))),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(SyncError::Retry(format!(
        "no free name for a new EndpointSlice of {ns}/{service}: {NAME_ATTEMPTS} names held by other slices"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(rv: &str, labels: &[(&str, &str)], ready: bool) -> CachedPod {
        CachedPod::from(Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pod_events_map_to_services_as_upstream() {
        let (a, b) = (set(&["a"]), set(&["b"]));
        let p = pod("1", &[("app", "x")], true);
        assert_eq!(services_to_sync(None, Some(&p), &set(&[]), &a), Some(("ns".into(), a.clone())), "add");
        assert_eq!(services_to_sync(Some(&p), None, &a, &set(&[])), Some(("ns".into(), a.clone())), "delete");
        assert_eq!(services_to_sync(Some(&p), Some(&p), &a, &a), None, "resync: same resourceVersion");
        // A terminating pod relisted unchanged is no change either (found in review: without the
        // equality check its Services were requeued on every relist).
        let mut terminating = pod("3", &[("app", "x")], true);
        terminating.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let relisted = terminating.clone();
        assert_eq!(services_to_sync(Some(&terminating), Some(&relisted), &a, &a), None, "resync of a terminating pod");
        let mut terminating_not_ready = relisted.clone();
        terminating_not_ready.status = pod("4", &[("app", "x")], false).status;
        assert_eq!(
            services_to_sync(Some(&terminating), Some(&terminating_not_ready), &a, &a),
            Some(("ns".into(), a.clone())),
            "a terminating pod that changed"
        );
        assert_eq!(
            services_to_sync(Some(&p), Some(&relisted), &a, &a),
            Some(("ns".into(), a.clone())),
            "marked for deletion"
        );
        let p2 = pod("2", &[("app", "x")], true);
        assert_eq!(services_to_sync(Some(&p), Some(&p2), &a, &a), None, "nothing endpoint-relevant changed");
        let not_ready = pod("2", &[("app", "x")], false);
        assert_eq!(services_to_sync(Some(&p), Some(&not_ready), &a, &a), Some(("ns".into(), a.clone())), "readiness");
        let relabelled = pod("2", &[("app", "y")], true);
        assert_eq!(
            services_to_sync(Some(&p), Some(&relabelled), &a, &b),
            Some(("ns".into(), set(&["a", "b"]))),
            "labels: symmetric difference"
        );
        let relabelled_shared = pod("2", &[("app", "y")], true);
        assert_eq!(
            services_to_sync(Some(&p), Some(&relabelled_shared), &set(&["a", "c"]), &set(&["b", "c"])).map(|x| x.1),
            Some(set(&["a", "b"]))
        );
        let both = pod("2", &[("app", "y")], false);
        assert_eq!(
            services_to_sync(Some(&p), Some(&both), &set(&["a", "c"]), &set(&["b", "c"])).map(|x| x.1),
            Some(set(&["a", "b", "c"])),
            "both: union"
        );
    }

    #[test]
    fn result_labels() {
        assert_eq!(SyncError::result_label(&Ok(())), "success");
        assert_eq!(SyncError::result_label(&Err(SyncError::Stale("x".into()))), "stale");
        assert_eq!(SyncError::result_label(&Err(SyncError::Retry("x".into()))), "error");
    }

    #[test]
    fn a_name_held_by_another_group_is_not_a_stale_cache() {
        let slice = |labels: &[(&str, &str)]| EndpointSlice {
            metadata: ObjectMeta {
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![]),
            ports: None,
        };
        let ours = slice(&[(LABEL_SERVICE_NAME, "web"), (LABEL_MANAGED_BY, "epslice")]);
        assert!(same_group(&ours, &ours.clone()), "our own earlier create: the cache lags");
        for other in [
            slice(&[(LABEL_SERVICE_NAME, "other"), (LABEL_MANAGED_BY, "epslice")]),
            slice(&[(LABEL_SERVICE_NAME, "web"), (LABEL_MANAGED_BY, "someone-else")]),
            slice(&[(LABEL_SERVICE_NAME, "web")]),
            slice(&[]),
        ] {
            assert!(!same_group(&ours, &other), "{:?}", other.metadata.labels);
        }
    }

    #[test]
    fn a_plan_splits_by_address_type_keeping_its_order_and_every_create_reserved() {
        let slice = |name: &str, t: &str| EndpointSlice {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            address_type: t.into(),
            endpoints: Some(vec![]),
            ports: None,
        };
        let create = [slice("c6", "IPv6"), slice("c4a", "IPv4"), slice("c4b", "IPv4")];
        let update = [slice("u4", "IPv4")];
        let delete = [slice("d6", "IPv6"), slice("dq1", "FQDN"), slice("dq2", "FQDN")];
        let names = |v: &[&EndpointSlice]| v.iter().map(|s| s.name_any()).collect::<Vec<_>>();
        let parts = SlicePlan::new(&create, &update, &delete).by_address_type();
        let shape: Vec<_> = parts.iter().map(|p| (names(&p.create), names(&p.update), names(&p.delete))).collect();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape,
            [
                (v(&["c4a", "c4b"]), v(&["u4"]), v(&[])),
                (v(&["c6"]), v(&[]), v(&["d6"])),
                // Only deletes: last, each on its own.
                (v(&[]), v(&[]), v(&["dq1"])),
                (v(&[]), v(&[]), v(&["dq2"])),
            ]
        );
        assert!(parts.iter().all(|p| p.reserved.len() == 3), "a fallback name avoids every create of the sync");
    }

    #[test]
    fn errors_of_independent_writes_aggregate() {
        assert!(SyncError::aggregate(vec![]).is_ok());
        let one = SyncError::aggregate(vec![SyncError::Stale("a".into())]).unwrap_err();
        assert!(matches!(one, SyncError::Stale(m) if m == "a"));
        let stale = SyncError::aggregate(vec![SyncError::Stale("a".into()), SyncError::Stale("b".into())]);
        assert!(matches!(stale, Err(SyncError::Stale(m)) if m == "a; b"));
        let status = kube::core::Status { code: 403, message: "refused".into(), ..Default::default() };
        let mixed = SyncError::aggregate(vec![
            SyncError::Stale("a".into()),
            SyncError::Api(kube::Error::Api(Box::new(status))),
        ]);
        assert!(matches!(mixed, Err(SyncError::Retry(m)) if m == "a; refused"));
    }

    fn queue() -> Arc<Queue> {
        let limit = crate::runtime::queue::RateLimit::ENDPOINTS;
        Arc::new(Queue::new(WorkQueue::new("test", limit), Arc::new(Metrics::default())))
    }

    fn depth(q: &Queue) -> i64 {
        q.metrics.queue.depth.get_or_create(q.labels()).get()
    }

    /// One worker whose sync of a key sleeps `sync_time(key)` and then counts itself done on
    /// the returned semaphore (one permit per finished sync).
    fn one_timed_worker(
        q: &Arc<Queue>,
        gate: Gate,
        stop: watch::Receiver<bool>,
        sync_time: fn(&Key) -> Duration,
    ) -> (tokio::task::JoinHandle<()>, Arc<tokio::sync::Semaphore>) {
        let synced = Arc::new(tokio::sync::Semaphore::new(0));
        let done = synced.clone();
        let run = tokio::spawn(q.clone().run_workers(1, gate, stop, move |key, _| {
            let done = done.clone();
            async move {
                tokio::time::sleep(sync_time(&key)).await;
                done.add_permits(1);
                Ok(())
            }
        }));
        (run, synced)
    }

    /// The queue's `workqueue_queue_duration_seconds` alone, in the text format as `wait_…`.
    fn queue_wait_text(q: &Queue) -> String {
        wait_text(q.metrics.queue.queue_duration.get_or_create(q.labels()).clone())
    }

    /// A histogram alone, in the text format as `wait_…`.
    fn wait_text(h: Histogram) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("wait", "", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// Found in review: followers waited for leadership without watching for shutdown, so every
    /// rollout ran into the 30 s stop timeout.
    #[tokio::test]
    async fn a_follower_stops_at_once_on_shutdown() {
        let q = queue();
        let (_gate_tx, gate) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let run = tokio::spawn(q.clone().run_workers(2, gate, stop, |_, _| async { Ok(()) }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("the workers stopped").unwrap();
    }

    /// Found in review: the depth was set only after a sync, so a follower's backlog read 0.
    #[tokio::test]
    async fn the_queue_depth_follows_adds_on_a_follower_and_takes_on_the_leader() {
        let q = queue();
        q.enqueue(("ns".into(), "a".into()), Duration::ZERO);
        q.enqueue(("ns".into(), "b".into()), Duration::ZERO);
        assert_eq!(depth(&q), 2, "no worker has taken anything");
        let (gate_tx, gate) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let run = tokio::spawn(q.clone().run_workers(1, gate, stop, |_, _| async { Ok(()) }));
        gate_tx.send(true).unwrap();
        let t0 = std::time::Instant::now();
        while depth(&q) != 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "the leader drained the queue");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        run.await.unwrap();
    }

    /// client-go's `workqueue_queue_duration_seconds` and `workqueue_work_duration_seconds`: the
    /// wait from the add to the take, and the sync's own time.
    #[tokio::test(start_paused = true)]
    async fn workers_record_the_wait_in_the_queue_and_the_time_spent_syncing() {
        use prometheus_client::encoding::text::encode;
        let q = queue();
        let (gate_tx, gate) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(false);
        let (run, synced) = one_timed_worker(&q, gate, stop, |_| Duration::from_secs(2));
        let in_flight = &q.metrics.queue.in_flight;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(in_flight.snapshot()["test"], (0.0, 0.0), "an idle queue reports zeros");
        // "a" is taken at once and syncs for 2 s; "b", added 1.7 s into that, waits 0.3 s.
        q.enqueue(("ns".into(), "a".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (unfinished, longest) = in_flight.snapshot()["test"];
        assert!((1.4..=1.5).contains(&unfinished) && unfinished == longest, "{unfinished} {longest}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        q.enqueue(("ns".into(), "b".into()), Duration::ZERO);
        let _ = synced.acquire_many(2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        stop_tx.send(true).unwrap();
        run.await.unwrap();
        drop(gate_tx);

        let mut text = String::new();
        encode(&mut text, &q.metrics.registry).unwrap();
        let line = |name: &str| -> String {
            text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}")).to_owned()
        };
        // Waits: "a" none (≤ 0.1 s), "b" 0.3 s (≤ 1 s, not ≤ 0.1 s). Syncs: 2 s each (≤ 10 s, not ≤ 1 s).
        assert_eq!(
            line("workqueue_queue_duration_seconds_count{name=\"test\"}"),
            "workqueue_queue_duration_seconds_count{name=\"test\"} 2"
        );
        assert!(line("workqueue_queue_duration_seconds_bucket{le=\"0.1\",name=\"test\"}").ends_with(" 1"));
        assert!(line("workqueue_queue_duration_seconds_bucket{le=\"1.0\",name=\"test\"}").ends_with(" 2"));
        assert_eq!(
            line("workqueue_work_duration_seconds_count{name=\"test\"}"),
            "workqueue_work_duration_seconds_count{name=\"test\"} 2"
        );
        assert!(line("workqueue_work_duration_seconds_bucket{le=\"1.0\",name=\"test\"}").ends_with(" 0"));
        assert!(line("workqueue_work_duration_seconds_bucket{le=\"10.0\",name=\"test\"}").ends_with(" 2"));
        // Nothing running any more.
        assert_eq!(
            line("workqueue_unfinished_work_seconds{name=\"test\"}"),
            "workqueue_unfinished_work_seconds{name=\"test\"} 0.0"
        );
        assert_eq!(
            line("workqueue_longest_running_processor_seconds{name=\"test\"}"),
            "workqueue_longest_running_processor_seconds{name=\"test\"} 0.0"
        );
    }

    /// Found in review: a sync that panicked ended its worker with the key still marked as
    /// processing, so that Service was never synced again. Now the panic is a failed sync: the
    /// key is retried with backoff and the worker goes on with other keys.
    #[tokio::test(start_paused = true)]
    async fn a_sync_that_panics_is_retried_and_the_worker_goes_on() {
        let q = queue();
        let (_gate_tx, gate) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(false);
        let attempts = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = attempts.clone();
        let run = tokio::spawn(q.clone().run_workers(1, gate, stop, move |key: Key, _| {
            let seen = seen.clone();
            async move {
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(key.1.clone());
                    seen.iter().filter(|k| **k == key.1).count() == 1
                };
                if key.1 == "bad" && first {
                    panic!("a bug in the sync of {}", key.1);
                }
                Ok(())
            }
        }));
        q.enqueue(("ns".into(), "bad".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.enqueue(("ns".into(), "good".into()), Duration::ZERO);
        // The rate limiter's first retry comes within a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*attempts.lock().unwrap(), ["bad", "good", "bad"], "the same worker synced on, and retried the key");
        assert!(q.queue.is_empty(), "nothing left: the retry succeeded and the key is not stuck as processing");
        assert_eq!(q.metrics.queue.retries.get_or_create(q.labels()).get(), 1);
        stop_tx.send(true).unwrap();
        run.await.unwrap();
    }

    #[test]
    fn a_panic_s_message_is_read_from_either_payload() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("literal");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("formatted {}", 1));
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(&*literal), "literal");
        assert_eq!(panic_message(&*formatted), "formatted 1");
        assert_eq!(panic_message(&*other), "a payload that is not a string");
    }

    /// Found in review: on a follower keys wait for leadership, not for a worker; the first syncs
    /// after a takeover reported hours of queueing. The wait counts from the takeover.
    #[tokio::test(start_paused = true)]
    async fn a_follower_s_wait_for_leadership_is_not_queueing_time() {
        let q = queue();
        q.enqueue(("ns".into(), "a".into()), Duration::ZERO);
        let (gate_tx, gate) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let (run, synced) = one_timed_worker(&q, gate, stop, |_| Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        gate_tx.send(true).unwrap();
        let _ = synced.acquire().await.unwrap();
        stop_tx.send(true).unwrap();
        run.await.unwrap();
        let text = queue_wait_text(&q);
        assert!(text.contains("wait_count 1"), "{text}");
        assert!(text.contains("wait_bucket{le=\"0.1\"} 1"), "waited an hour as a follower, not in the queue:\n{text}");
    }

    /// Found in review: with every worker inside a sync for the whole follower period, no worker
    /// waited at the gate to record the takeover.
    #[tokio::test(start_paused = true)]
    async fn a_takeover_during_a_long_sync_still_bounds_the_wait() {
        let q = queue();
        let (gate_tx, gate) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(false);
        let (run, synced) =
            one_timed_worker(&q, gate, stop, |key| Duration::from_secs(if key.1 == "a" { 100 } else { 0 }));
        q.enqueue(("ns".into(), "a".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(10)).await;
        gate_tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        q.enqueue(("ns".into(), "b".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(75)).await;
        gate_tx.send(true).unwrap();
        // "a" ends at 100 s; "b", added at 20 s, is taken then: 5 s after the takeover.
        let _ = synced.acquire_many(2).await.unwrap();
        stop_tx.send(true).unwrap();
        run.await.unwrap();
        let text = queue_wait_text(&q);
        assert!(text.contains("wait_count 2"), "{text}");
        assert!(text.contains("wait_bucket{le=\"10.0\"} 2"), "b waited 5 s since the takeover, not 80:\n{text}");
    }

    /// `--endpoints-wait-for-slices`: the Endpoints queue's sync of a Service starts after the
    /// EndpointSlice queue's running or next sync of it, waiting at most the bound; other keys
    /// do not wait.
    #[tokio::test(start_paused = true)]
    async fn an_endpoints_sync_lets_the_same_service_s_slice_sync_go_first() {
        let (slices, endpoints) = (queue(), queue());
        let waited = Histogram::new([0.0, 0.01, 0.1, 0.3].into_iter());
        endpoints.after(slices.clone(), Duration::from_millis(250), 1, waited.clone());
        let t0 = tokio::time::Instant::now();
        // (queue, key, start ms, end ms) of each sync.
        type Log = Arc<Mutex<Vec<(&'static str, String, u128, u128)>>>;
        let log: Log = Arc::default();
        let (stop_tx, stop) = watch::channel(false);
        let (_gate_tx, gate) = watch::channel(true);
        let worker = |q: &Arc<Queue>, who: &'static str, secs: fn(&str) -> f64| {
            let log = log.clone();
            tokio::spawn(q.clone().run_workers(1, gate.clone(), stop.clone(), move |key: Key, _| {
                let log = log.clone();
                async move {
                    let start = t0.elapsed().as_millis();
                    tokio::time::sleep(Duration::from_secs_f64(secs(&key.1))).await;
                    log.lock().unwrap().push((who, key.1, start, t0.elapsed().as_millis()));
                    Ok(())
                }
            }))
        };
        let runs = [
            worker(&slices, "slices", |k| if k == "slow" { 1.0 } else { 0.03 }),
            worker(&endpoints, "endpoints", |_| 0.005),
        ];
        // The pod handlers of the slice controller run first, as in `run`.
        let key = |n: &str| ("ns".to_string(), n.to_string());
        slices.enqueue(key("a"), Duration::ZERO);
        endpoints.enqueue(key("a"), Duration::ZERO);
        endpoints.enqueue(key("only-endpoints"), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(1)).await;
        slices.enqueue(key("slow"), Duration::ZERO);
        endpoints.enqueue(key("slow"), Duration::ZERO);
        // A slice sync delayed into the future (a batch period, a retry) is not waited for.
        slices.enqueue(key("later"), Duration::from_secs(10));
        endpoints.enqueue(key("later"), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_tx.send(true).unwrap();
        for r in runs {
            r.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let at = |who: &str, k: &str| log.iter().find(|e| e.0 == who && e.1 == k).map(|e| (e.2, e.3)).unwrap();
        assert_eq!(at("slices", "a"), (0, 30));
        assert_eq!(at("endpoints", "a"), (30, 35), "after the slice sync: {log:?}");
        assert_eq!(at("endpoints", "only-endpoints"), (35, 40), "no slice sync of it: no wait");
        assert_eq!(at("slices", "slow"), (1000, 2000));
        assert_eq!(at("endpoints", "slow"), (1250, 1255), "waits no longer than the bound: {log:?}");
        assert_eq!(at("endpoints", "later"), (1255, 1260));
        assert!(!log.iter().any(|e| e.0 == "slices" && e.1 == "later"), "not due before the stop");
        let text = wait_text(waited);
        assert!(text.contains("wait_count 4"), "{text}");
        assert!(text.contains("wait_bucket{le=\"0.0\"} 2\n"), "two waited 0 s:\n{text}");
        assert!(text.contains("wait_bucket{le=\"0.1\"} 3\n"), "one waited 30 ms:\n{text}");
        assert!(text.contains("wait_bucket{le=\"0.3\"} 4\n"), "one waited 250 ms:\n{text}");
    }

    /// Found by `a_failed_write_is_reported_on_the_endpoints_object`: the note carried kube's
    /// whole Status (over 1024 bytes) and the API server refused every such event.
    #[test]
    fn event_notes_carry_the_api_message_and_fit_the_limit() {
        let status =
            kube::core::Status { code: 422, message: "endpoints \"x\" is forbidden".into(), ..Default::default() };
        let e = SyncError::Api(kube::Error::Api(Box::new(status)));
        assert_eq!(e.message(), "endpoints \"x\" is forbidden");
        assert!(e.to_string().len() > e.message().len());
        let mut long = "é".repeat(600);
        truncate_note(&mut long);
        assert!(long.len() <= MAX_EVENT_NOTE && long.chars().all(|c| c == 'é'));
        let mut short = "fine".to_string();
        truncate_note(&mut short);
        assert_eq!(short, "fine");
    }
}
