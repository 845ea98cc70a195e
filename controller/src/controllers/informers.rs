//! Watch caches shared by every enabled controller, and the pod ↔ Service membership index.
//!
//! One watch per resource type feeds one cache; each controller subscribes handlers. Pod events
//! go through [`Membership`] first, so every subscriber learns which Services selected the pod
//! before and after the event (upstream's `GetServicesToUpdateOnPodChange` inputs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::prune;
use crate::pod::{CachedPod, Interner, PodLabels, WatchedPod};
use crate::runtime::cache::{self, Cache, Handler, run_cache};
use crate::runtime::index::{GroupIndex, Selector, SelectorIndex};

/// `(namespace, name)`.
pub type Key = (String, String);

/// The key of an object.
pub fn key_of<K: Resource>(o: &K) -> Key {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

/// The label naming the Service of a slice.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// A pod's name, allocated once and shared by the pod cache and the maps of the membership index.
pub type PodName = Arc<str>;

/// The Services selecting one pod, sorted.
type ServicesOfPod = Box<[Box<str>]>;

#[derive(Debug, Default)]
struct MembershipState {
    /// (namespace, service) → pods it selects.
    pods_of_service: HashMap<Key, BTreeSet<PodName>>,
    /// namespace → pod → Services selecting it (sorted; usually one). Every pod the pod events
    /// reported, selected or not: the candidates when a Service's selector changes.
    pods: HashMap<Arc<str>, BTreeMap<PodName, ServicesOfPod>>,
}

impl MembershipState {
    /// Adds or removes `svc` in the Services recorded for pod `ns/pod`, if the pod is known.
    fn link(&mut self, ns: &str, pod: &str, svc: &str, linked: bool) {
        let Some(list) = self.pods.get_mut(ns).and_then(|m| m.get_mut(pod)) else { return };
        let has = list.iter().any(|s| &**s == svc);
        if has == linked {
            return;
        }
        let mut v: Vec<Box<str>> = std::mem::take(list).into_vec();
        if linked {
            let at = v.partition_point(|s| &**s < svc);
            v.insert(at, svc.into());
        } else {
            v.retain(|s| &**s != svc);
        }
        *list = v.into_boxed_slice();
    }
}

/// Pod ↔ Service membership. Service and pod handlers run on different tasks; one lock orders
/// them so that a pod and a Service that arrive together always end up linked (each cache is
/// written before its handlers run, and whichever handler runs second sees the other's object).
///
/// Sized for large clusters: a pod's name is allocated once and shared (`Arc<str>`), and the
/// Services of a pod are a boxed sorted slice rather than a B-tree (≈200 bytes per pod instead of
/// ≈650).
#[derive(Default)]
pub struct Membership {
    selectors: SelectorIndex,
    state: Mutex<MembershipState>,
}

impl Membership {
    fn lock(&self) -> std::sync::MutexGuard<'_, MembershipState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-evaluates a pod's memberships (`labels: None` for a deleted pod); returns the Services
    /// it belonged to before and now.
    /// The pod's name is shared with the pod cache (`CachedPod::metadata.name`).
    pub fn update_pod(
        &self,
        ns: &str,
        name: &PodName,
        labels: Option<&PodLabels>,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut s = self.lock();
        let now = labels.map(|l| self.selectors.matching(ns, l)).unwrap_or_default();
        let known = s.pods.get(ns).and_then(|m| m.get_key_value(&**name)).map(|(k, v)| (k.clone(), v.clone()));
        let (pod, before): (PodName, BTreeSet<String>) = match known {
            Some((k, v)) => (k, v.iter().map(|x| x.to_string()).collect()),
            None => (name.clone(), BTreeSet::new()),
        };
        let name = &**name;
        for svc in before.difference(&now) {
            if let Some(set) = s.pods_of_service.get_mut(&(ns.to_string(), svc.clone())) {
                set.remove(name);
            }
        }
        for svc in &now {
            s.pods_of_service.entry((ns.to_string(), svc.clone())).or_default().insert(pod.clone());
        }
        if labels.is_some() {
            let list: ServicesOfPod = now.iter().map(|x| Box::from(x.as_str())).collect();
            match s.pods.get_mut(ns) {
                Some(m) => {
                    m.insert(pod, list);
                }
                None => {
                    s.pods.insert(Arc::from(ns), BTreeMap::from([(pod, list)]));
                }
            }
        } else if let Some(m) = s.pods.get_mut(ns) {
            m.remove(name);
            if m.is_empty() {
                s.pods.remove(ns);
            }
        }
        (before, now)
    }

    /// Records a Service's selector and recomputes which pods it selects.
    pub fn update_service(
        &self,
        ns: &str,
        name: &str,
        selector: Option<&BTreeMap<String, String>>,
        pods: &Cache<CachedPod>,
    ) {
        let mut s = self.lock();
        let selector = self.selectors.set(ns, name, selector);
        let sk = (ns.to_string(), name.to_string());
        Self::recompute(&mut s, &sk, selector.as_ref(), pods);
    }

    /// Recomputes the pods of Service `sk` from its selector (`None`: it selects nothing);
    /// returns whether they changed.
    ///
    /// Candidates are the pods the pod events reported; their labels come from the pod cache
    /// (which holds a pod before its event is reported). A pod reported after this runs is
    /// linked by [`Membership::update_pod`], which sees this Service's selector.
    fn recompute(s: &mut MembershipState, sk: &Key, selector: Option<&Selector>, pods: &Cache<CachedPod>) -> bool {
        let (ns, name) = (&sk.0, &sk.1);
        let old = s.pods_of_service.remove(sk).unwrap_or_default();
        for p in &old {
            s.link(ns, p, name, false);
        }
        let Some(sel) = selector else { return !old.is_empty() };
        let candidates: Vec<PodName> = s.pods.get(ns.as_str()).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let mut members = BTreeSet::new();
        for p in candidates {
            let Some(pod) = pods.get(Some(ns), &p) else { continue };
            if sel.matches(&pod.labels) {
                s.link(ns, &p, name, true);
                members.insert(p);
            }
        }
        let changed = members != old;
        s.pods_of_service.insert(sk.clone(), members);
        changed
    }

    /// Recomputes every Service's pods once the pod cache holds a complete list; returns the
    /// Services whose pods changed. A safety net run on every pod (re)list: the event path
    /// (`recompute` on Service events, `update_pod` on pod events) should leave nothing to
    /// repair.
    pub fn resync(&self, pods: &Cache<CachedPod>) -> Vec<Key> {
        let mut guard = self.lock();
        let s = &mut *guard;
        // Pod by pod through the selector index (pods × labels), not Service by Service over
        // every pod of its namespace (Services × pods: 1.5 M label checks at 15,000 pods in
        // namespaces of 100 Services).
        let mut fresh: HashMap<Key, BTreeSet<PodName>> = HashMap::new();
        for (ns, known) in &mut s.pods {
            for (name, list) in known.iter_mut() {
                let now = pods.get(Some(ns), name).map(|p| self.selectors.matching(ns, &p.labels)).unwrap_or_default();
                for svc in &now {
                    fresh.entry((ns.to_string(), svc.clone())).or_default().insert(name.clone());
                }
                *list = now.iter().map(|x| Box::from(x.as_str())).collect();
            }
        }
        let services: Vec<Key> = self.selectors.services();
        let mut changed = Vec::new();
        for sk in services {
            let members = fresh.remove(&sk).unwrap_or_default();
            if s.pods_of_service.get(&sk).map_or(!members.is_empty(), |old| *old != members) {
                changed.push(sk.clone());
            }
            s.pods_of_service.insert(sk, members);
        }
        changed
    }

    /// Forgets a Service.
    pub fn remove_service(&self, ns: &str, name: &str) {
        let mut s = self.lock();
        self.selectors.remove(ns, name);
        if let Some(old) = s.pods_of_service.remove(&(ns.to_string(), name.to_string())) {
            for p in old {
                s.link(ns, &p, name, false);
            }
        }
    }

    /// The pods a Service selects.
    pub fn pods_of(&self, ns: &str, svc: &str) -> Vec<String> {
        self.lock()
            .pods_of_service
            .get(&(ns.to_string(), svc.to_string()))
            .map(|s| s.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }
}

/// A controller's interest in pod events, with the Services that selected the pod.
pub trait PodSubscriber: Send + Sync {
    /// A pod was added (`old: None`), updated, or deleted (`new: None`); `before` and `now` are
    /// the Services that select it before and after the event.
    fn pod_changed(
        &self,
        old: Option<&CachedPod>,
        new: Option<&CachedPod>,
        before: &BTreeSet<String>,
        now: &BTreeSet<String>,
    );

    /// After a pod (re)list completed, these Services' pods changed without a pod event saying
    /// so (see [`Membership::resync`]).
    fn members_changed(&self, services: &[Key]);
}

/// Handlers of the enabled controllers, by resource.
#[derive(Default)]
pub struct Subscribers {
    /// Service events (after the membership index is updated).
    pub services: Vec<Arc<dyn Handler<Service>>>,
    /// Pod events.
    pub pods: Vec<Arc<dyn PodSubscriber>>,
    /// Node events.
    pub nodes: Vec<Arc<dyn Handler<Node>>>,
    /// EndpointSlice events (slices labelled `kubernetes.io/service-name`).
    pub slices: Vec<Arc<dyn Handler<EndpointSlice>>>,
    /// Endpoints events.
    pub endpoints: Vec<Arc<dyn Handler<Endpoints>>>,
}

impl Subscribers {
    /// Adds another controller's subscribers.
    pub fn extend(&mut self, other: Subscribers) {
        self.services.extend(other.services);
        self.pods.extend(other.pods);
        self.nodes.extend(other.nodes);
        self.slices.extend(other.slices);
        self.endpoints.extend(other.endpoints);
    }
}

/// The shared caches.
#[derive(Clone)]
pub struct Informers {
    /// Services.
    pub services: Cache<Service>,
    /// Pods, as their compact projection (see [`CachedPod`]).
    pub pods: Cache<CachedPod>,
    /// Nodes.
    pub nodes: Cache<Node>,
    /// EndpointSlices labelled `kubernetes.io/service-name`.
    pub slices: Cache<EndpointSlice>,
    /// Endpoints.
    pub endpoints: Cache<Endpoints>,
    /// Pod ↔ Service membership.
    pub membership: Arc<Membership>,
    /// Slices by their `kubernetes.io/service-name` label.
    pub slices_by_service: Arc<GroupIndex>,
}

impl Informers {
    /// Waits until every cache listed once.
    pub async fn wait_synced(&self) {
        tokio::join!(
            self.services.wait_synced(),
            self.pods.wait_synced(),
            self.nodes.wait_synced(),
            self.slices.wait_synced(),
            self.endpoints.wait_synced()
        );
    }

    /// The slices labelled with a Service's name (managed by anyone), from the cache.
    pub fn slices_of(&self, ns: &str, svc: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices_by_service.members(ns, svc).iter().filter_map(|n| self.slices.get(Some(ns), n)).collect()
    }

    /// The pods a Service selects, from the cache.
    pub fn pods_of(&self, ns: &str, svc: &str) -> Vec<Arc<CachedPod>> {
        self.membership.pods_of(ns, svc).iter().filter_map(|p| self.pods.get(Some(ns), p)).collect()
    }
}

struct ServiceMembership(Arc<Membership>, Arc<OnceLock<Cache<CachedPod>>>);

impl Handler<Service> for ServiceMembership {
    fn applied(&self, _old: Option<Arc<Service>>, new: Arc<Service>) {
        let (ns, name) = key_of(&*new);
        if let Some(pods) = self.1.get() {
            self.0.update_service(&ns, &name, new.spec.as_ref().and_then(|s| s.selector.as_ref()), pods);
        }
    }

    fn deleted(&self, old: Arc<Service>) {
        let (ns, name) = key_of(&*old);
        self.0.remove_service(&ns, &name);
    }
}

struct SliceIndex(Arc<GroupIndex>);

impl Handler<EndpointSlice> for SliceIndex {
    fn applied(&self, _old: Option<Arc<EndpointSlice>>, new: Arc<EndpointSlice>) {
        let ns = new.namespace().unwrap_or_default();
        self.0.set(&ns, &new.name_any(), new.labels().get(LABEL_SERVICE_NAME).map(String::as_str));
    }

    fn deleted(&self, old: Arc<EndpointSlice>) {
        self.0.set(&old.namespace().unwrap_or_default(), &old.name_any(), None);
    }
}

/// A cached pod's namespace and (shared) name.
fn pod_key(p: &CachedPod) -> (&str, PodName) {
    (p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.clone().unwrap_or_else(|| Arc::from("")))
}

struct PodFanout(Arc<Membership>, Vec<Arc<dyn PodSubscriber>>, Arc<OnceLock<Cache<CachedPod>>>);

impl Handler<CachedPod> for PodFanout {
    fn applied(&self, old: Option<Arc<CachedPod>>, new: Arc<CachedPod>) {
        let (ns, name) = pod_key(&new);
        let (before, now) = self.0.update_pod(ns, &name, Some(&new.labels));
        for s in &self.1 {
            s.pod_changed(old.as_deref(), Some(&new), &before, &now);
        }
    }

    fn deleted(&self, old: Arc<CachedPod>) {
        let (ns, name) = pod_key(&old);
        let (before, now) = self.0.update_pod(ns, &name, None);
        for s in &self.1 {
            s.pod_changed(Some(&old), None, &before, &now);
        }
    }

    fn synced(&self) {
        let Some(pods) = self.2.get() else { return };
        let changed = self.0.resync(pods);
        if !changed.is_empty() {
            tracing::debug!(services = changed.len(), "pod list completed: Service memberships repaired");
            for s in &self.1 {
                s.members_changed(&changed);
            }
        }
    }
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl Informers {
    /// Each watch's health flag with its readiness-check name (see [`Cache::watch_health`]).
    pub fn watch_health(&self) -> Vec<(&'static str, Arc<std::sync::atomic::AtomicBool>)> {
        vec![
            ("pods watch", self.pods.watch_health()),
            ("services watch", self.services.watch_health()),
            ("nodes watch", self.nodes.watch_health()),
            ("endpointslices watch", self.slices.watch_health()),
            ("endpoints watch", self.endpoints.watch_health()),
        ]
    }
}

/// Starts the watches (all namespaces, or `namespace`) and returns the caches; the returned
/// future runs the watches. Each cache gets its initial state as pages of [`cache::LIST_PAGE_SIZE`], or
/// with `streaming_lists` as a streaming list (falling back to pages where the API server
/// refuses it).
pub fn start(
    client: &kube::Client,
    namespace: Option<&str>,
    streaming_lists: bool,
    subs: Subscribers,
) -> (Informers, impl std::future::Future<Output = ()> + Send + 'static) {
    let membership = Arc::new(Membership::default());
    let pods_slot: Arc<OnceLock<Cache<CachedPod>>> = Arc::default();
    let mut strings = Interner::default();
    let cfg = || cache::config(streaming_lists);
    let (pods, pods_fut) = run_cache(
        api::<WatchedPod>(client, namespace),
        cfg(),
        // Nothing to prune: decoding keeps only what the controllers read.
        move |p: WatchedPod| p.into_cached(&mut strings),
        vec![Arc::new(PodFanout(membership.clone(), subs.pods, pods_slot.clone()))],
    );
    let _ = pods_slot.set(pods.clone());
    let mut service_handlers: Vec<Arc<dyn Handler<Service>>> =
        vec![Arc::new(ServiceMembership(membership.clone(), pods_slot))];
    service_handlers.extend(subs.services);
    let (services, services_fut) =
        run_cache(api::<Service>(client, namespace), cfg(), prune::managed_fields::<Service>, service_handlers);
    let (nodes, nodes_fut) =
        run_cache(Api::<Node>::all(client.clone()), cfg(), prune::managed_fields::<Node>, subs.nodes);
    let slices_by_service = Arc::new(GroupIndex::default());
    let mut slice_handlers: Vec<Arc<dyn Handler<EndpointSlice>>> =
        vec![Arc::new(SliceIndex(slices_by_service.clone()))];
    slice_handlers.extend(subs.slices);
    let (slices, slices_fut) = run_cache(
        api::<EndpointSlice>(client, namespace),
        cfg().labels(LABEL_SERVICE_NAME),
        prune::endpoint_slice,
        slice_handlers,
    );
    let (endpoints, endpoints_fut) =
        run_cache(api::<Endpoints>(client, namespace), cfg(), prune::endpoints, subs.endpoints);
    let fut = async move {
        tokio::join!(pods_fut, services_fut, nodes_fut, slices_fut, endpoints_fut);
    };
    (Informers { services, pods, nodes, slices, endpoints, membership, slices_by_service }, fut)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pod::PodMeta;
    use crate::runtime::cache::Writer;
    use kube::runtime::watcher::Event;

    fn pod(name: &str, app: &str) -> CachedPod {
        CachedPod {
            metadata: PodMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
            labels: PodLabels::from(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..Default::default()
        }
    }

    /// Found by the side-by-side benchmark (Services with no endpoints at all after a cold
    /// start): a pod listed before its Service is known gets no membership from its event; the
    /// Service, arriving while the pod list is still being paged, must find it in the cache.
    #[test]
    fn a_service_seen_during_the_pod_list_gets_the_pods_listed_before_and_after_it() {
        let (reader, mut writer) = Writer::<CachedPod>::new();
        let cache = Cache::from_store(reader);
        let m = Membership::default();
        let selector: BTreeMap<String, String> = [("app".to_string(), "x".to_string())].into();

        writer.apply(Event::Init, &[]);
        let p1 = pod("p1", "x");
        writer.apply(Event::InitApply(p1.clone()), &[]);
        let (before, now) = m.update_pod("ns", &"p1".into(), Some(&p1.labels));
        assert!(before.is_empty() && now.is_empty(), "the Service is not known yet");
        m.update_service("ns", "svc", Some(&selector), &cache);
        assert_eq!(m.pods_of("ns", "svc"), ["p1"], "the pod listed before the Service");
        // Pods listed after the Service is known are linked by their own event.
        let p2 = pod("p2", "x");
        writer.apply(Event::InitApply(p2.clone()), &[]);
        m.update_pod("ns", &"p2".into(), Some(&p2.labels));
        writer.apply(Event::InitApply(pod("p3", "y")), &[]);
        m.update_pod("ns", &"p3".into(), Some(&pod("p3", "y").labels));
        writer.apply(Event::InitDone, &[]);
        assert_eq!(m.pods_of("ns", "svc"), ["p1", "p2"]);
        assert!(m.resync(&cache).is_empty(), "the event path left nothing to repair");
    }

    /// The safety net: when the index is out of step with the complete pod cache (here a pod
    /// whose label change was never reported), the resync repairs it and reports the Service.
    #[test]
    fn the_resync_repairs_an_index_out_of_step_with_the_pod_cache() {
        let (reader, mut writer) = Writer::<CachedPod>::new();
        let cache = Cache::from_store(reader);
        let m = Membership::default();
        let selector: BTreeMap<String, String> = [("app".to_string(), "x".to_string())].into();
        m.update_service("ns", "svc", Some(&selector), &cache);
        let p1 = pod("p1", "y");
        writer.apply(Event::Apply(p1.clone()), &[]);
        m.update_pod("ns", &"p1".into(), Some(&p1.labels));
        assert!(m.pods_of("ns", "svc").is_empty());
        writer.apply(Event::Apply(pod("p1", "x")), &[]);

        assert_eq!(m.resync(&cache), vec![("ns".to_string(), "svc".to_string())]);
        assert_eq!(m.pods_of("ns", "svc"), ["p1"]);
        // Nothing changed since: nothing to report.
        assert!(m.resync(&cache).is_empty());
        // A removed Service is not resurrected by a later resync.
        m.remove_service("ns", "svc");
        assert!(m.resync(&cache).is_empty());
        assert!(m.pods_of("ns", "svc").is_empty());
    }

    /// Two Services over one pod, label changes, a Service's selector change and removal, a pod
    /// deletion: `before`/`now` and both directions of the index stay consistent.
    #[test]
    fn memberships_follow_labels_selectors_and_deletions() {
        let (reader, mut writer) = Writer::<CachedPod>::new();
        let cache = Cache::from_store(reader);
        let m = Membership::default();
        let sel = |app: &str| -> BTreeMap<String, String> { [("app".to_string(), app.to_string())].into() };
        let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| (*n).to_string()).collect() };
        writer.apply(Event::Init, &[]);
        writer.apply(Event::InitDone, &[]);
        m.update_service("ns", "a", Some(&sel("x")), &cache);
        m.update_service("ns", "b", Some(&sel("x")), &cache);

        let p = pod("p", "x");
        writer.apply(Event::Apply(p.clone()), &[]);
        assert_eq!(m.update_pod("ns", &"p".into(), Some(&p.labels)), (set(&[]), set(&["a", "b"])));
        assert_eq!(m.pods_of("ns", "a"), vec!["p".to_string()]);

        // `b` now selects app=y: the pod leaves it, and its recorded Services follow.
        m.update_service("ns", "b", Some(&sel("y")), &cache);
        assert!(m.pods_of("ns", "b").is_empty());
        let same = m.update_pod("ns", &"p".into(), Some(&p.labels));
        assert_eq!(same, (set(&["a"]), set(&["a"])));

        // The pod is relabelled app=y: it moves from `a` to `b`.
        let p = pod("p", "y");
        writer.apply(Event::Apply(p.clone()), &[]);
        assert_eq!(m.update_pod("ns", &"p".into(), Some(&p.labels)), (set(&["a"]), set(&["b"])));
        assert!(m.pods_of("ns", "a").is_empty());
        assert_eq!(m.pods_of("ns", "b"), vec!["p".to_string()]);

        // `b` goes away, then the pod.
        m.remove_service("ns", "b");
        assert_eq!(m.update_pod("ns", &"p".into(), Some(&p.labels)), (set(&[]), set(&[])));
        assert_eq!(m.update_pod("ns", &"p".into(), None), (set(&[]), set(&[])));
        m.update_service("ns", "a", Some(&sel("y")), &cache);
        assert!(m.pods_of("ns", "a").is_empty(), "a deleted pod is no candidate");
    }
}
