//! The webhook's view of the cluster: reflector caches of Services (all namespaces, indexed by
//! namespace), Namespaces and ServiceEnvPolicies. Requests read only these; no API call on the
//! hot path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Resource;
use kube::api::Api;

use crate::envpolicy::{ClusterView, ServiceEnvPolicy};
use crate::runtime::cache::{self, Cache, Handler, run_cache};

type Labels = BTreeMap<String, String>;

/// A watch to spawn.
pub type Watch = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Objects of one kind by namespace, then name: a namespace's Services (or policies) without
/// scanning the whole cache.
#[derive(Debug)]
pub struct ByNamespace<K> {
    map: RwLock<HashMap<String, BTreeMap<String, Arc<K>>>>,
}

impl<K> Default for ByNamespace<K> {
    fn default() -> Self {
        Self { map: RwLock::default() }
    }
}

/// Services by namespace, then name.
pub type ServicesByNamespace = ByNamespace<Service>;

fn key<K: Resource>(o: &K) -> (String, String) {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

impl<K: Resource> ByNamespace<K> {
    /// The objects of one namespace, in name order.
    pub fn of(&self, namespace: &str) -> Vec<Arc<K>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// Adds or replaces an object.
    pub fn insert(&self, o: Arc<K>) {
        let (ns, name) = key(&*o);
        self.map.write().unwrap_or_else(|e| e.into_inner()).entry(ns).or_default().insert(name, o);
    }

    /// Removes an object.
    pub fn remove(&self, o: &K) {
        let (ns, name) = key(o);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get_mut(&ns) {
            m.remove(&name);
            if m.is_empty() {
                map.remove(&ns);
            }
        }
    }
}

impl<K: Resource + Send + Sync> Handler<K> for ByNamespace<K> {
    fn applied(&self, _old: Option<Arc<K>>, new: Arc<K>) {
        self.insert(new);
    }
    fn deleted(&self, old: Arc<K>) {
        self.remove(&old);
    }
}

/// Wakes the status controller on any change.
struct Notify(Arc<tokio::sync::Notify>);

impl<K> Handler<K> for Notify {
    fn applied(&self, _old: Option<Arc<K>>, _new: Arc<K>) {
        self.0.notify_one();
    }
    fn deleted(&self, _old: Arc<K>) {
        self.0.notify_one();
    }
}

/// The caches.
#[derive(Clone)]
pub struct Caches {
    /// All Services (pruned to what the generator reads).
    pub services: Cache<Service>,
    /// The same Services, by namespace.
    pub by_namespace: Arc<ServicesByNamespace>,
    /// Namespaces (labels only).
    pub namespaces: Cache<Namespace>,
    /// ServiceEnvPolicies.
    pub policies: Cache<ServiceEnvPolicy>,
    /// The same policies, by namespace.
    pub policies_by_namespace: Arc<ByNamespace<ServiceEnvPolicy>>,
    /// Notified on every Namespace or policy change.
    pub changed: Arc<tokio::sync::Notify>,
}

impl Caches {
    /// Starts the three watches; the returned futures must be spawned.
    pub fn start(client: &kube::Client) -> (Self, Vec<Watch>) {
        let by_namespace = Arc::new(ServicesByNamespace::default());
        let policies_by_namespace = Arc::new(ByNamespace::<ServiceEnvPolicy>::default());
        let changed = Arc::new(tokio::sync::Notify::new());
        let (services, fs) = run_cache(
            Api::<Service>::all(client.clone()),
            cache::config(false),
            |mut s: Service| {
                s.metadata.managed_fields = None;
                s.metadata.annotations = None;
                s.status = None;
                s
            },
            vec![by_namespace.clone() as Arc<dyn Handler<Service>>],
        );
        let (namespaces, fns) = run_cache(
            Api::<Namespace>::all(client.clone()),
            cache::config(false),
            |mut n: Namespace| {
                n.metadata.managed_fields = None;
                n.metadata.annotations = None;
                n.spec = None;
                n.status = None;
                n
            },
            vec![Arc::new(Notify(changed.clone())) as Arc<dyn Handler<Namespace>>],
        );
        let (policies, fp) = run_cache(
            Api::<ServiceEnvPolicy>::all(client.clone()),
            cache::config(false),
            crate::controllers::prune::managed_fields::<ServiceEnvPolicy>,
            vec![
                policies_by_namespace.clone() as Arc<dyn Handler<ServiceEnvPolicy>>,
                Arc::new(Notify(changed.clone())),
            ],
        );
        let caches = Caches { services, by_namespace, namespaces, policies, policies_by_namespace, changed };
        (caches, vec![Box::pin(fs), Box::pin(fns), Box::pin(fp)])
    }

    /// Whether all three caches completed their first list.
    pub fn is_synced(&self) -> bool {
        self.services.is_synced() && self.namespaces.is_synced() && self.policies.is_synced()
    }
}

impl ClusterView for Caches {
    fn namespace_labels(&self, namespace: &str) -> Option<Labels> {
        self.namespaces.get(None, namespace).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }
    fn policies(&self, namespace: &str) -> Vec<Arc<ServiceEnvPolicy>> {
        self.policies_by_namespace.of(namespace)
    }
    fn services(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.by_namespace.of(namespace)
    }
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.by_namespace.get(namespace, name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Arc<Service> {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.spec = Some(k8s_openapi::api::core::v1::ServiceSpec { cluster_ip: Some(ip.into()), ..Default::default() });
        Arc::new(s)
    }

    fn names(v: &[Arc<Service>]) -> Vec<&str> {
        v.iter().map(|s| s.metadata.name.as_deref().unwrap()).collect()
    }

    #[test]
    fn by_namespace_follows_applies_and_deletes() {
        let idx = ServicesByNamespace::default();
        idx.applied(None, svc("a", "web", "10.0.0.1"));
        idx.applied(None, svc("a", "db", "10.0.0.2"));
        idx.applied(None, svc("b", "web", "10.0.1.1"));
        assert_eq!(names(&idx.of("a")), vec!["db", "web"], "name order");
        // A replaced object is the new one, once.
        idx.applied(Some(svc("a", "web", "10.0.0.1")), svc("a", "web", "10.0.0.9"));
        assert_eq!(idx.of("a").len(), 2);
        assert_eq!(idx.get("a", "web").unwrap().spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.0.0.9"));
        idx.deleted(svc("a", "web", "10.0.0.9"));
        idx.deleted(svc("a", "db", "10.0.0.2"));
        assert!(idx.of("a").is_empty());
        assert!(idx.map.read().unwrap().get("a").is_none(), "an empty namespace is dropped");
        assert_eq!(names(&idx.of("b")), vec!["web"]);
        assert!(idx.get("b", "db").is_none());
    }
}
