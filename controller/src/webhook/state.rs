//! The webhook's view of the cluster: reflector caches of Services (all namespaces, indexed by
//! namespace), Namespaces and ServiceEnvPolicies. Requests read only these; no API call on the
//! hot path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use kube::runtime::watcher;

use crate::envpolicy::{ClusterView, ServiceEnvPolicy};
use crate::runtime::cache::{Cache, Handler, run_cache};

type Labels = BTreeMap<String, String>;

/// A watch to spawn.
pub type Watch = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Services by namespace, then name.
#[derive(Debug, Default)]
pub struct ServicesByNamespace {
    map: RwLock<HashMap<String, BTreeMap<String, Arc<Service>>>>,
}

fn key(s: &Service) -> (String, String) {
    (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default())
}

impl ServicesByNamespace {
    /// The Services of one namespace, in name order.
    pub fn of(&self, namespace: &str) -> Vec<Arc<Service>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// One Service.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// Adds or replaces a Service.
    pub fn insert(&self, s: Arc<Service>) {
        let (ns, name) = key(&s);
        self.map.write().unwrap_or_else(|e| e.into_inner()).entry(ns).or_default().insert(name, s);
    }

    /// Removes a Service.
    pub fn remove(&self, s: &Service) {
        let (ns, name) = key(s);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get_mut(&ns) {
            m.remove(&name);
            if m.is_empty() {
                map.remove(&ns);
            }
        }
    }
}

impl Handler<Service> for ServicesByNamespace {
    fn applied(&self, _old: Option<Arc<Service>>, new: Arc<Service>) {
        self.insert(new);
    }
    fn deleted(&self, old: Arc<Service>) {
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
    /// Notified on every Namespace or policy change.
    pub changed: Arc<tokio::sync::Notify>,
}

impl Caches {
    /// Starts the three watches; the returned futures must be spawned.
    pub fn start(client: &kube::Client) -> (Self, Vec<Watch>) {
        let by_namespace = Arc::new(ServicesByNamespace::default());
        let changed = Arc::new(tokio::sync::Notify::new());
        let (services, fs) = run_cache(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            |s: &mut Service| {
                s.metadata.managed_fields = None;
                s.metadata.annotations = None;
                s.status = None;
            },
            vec![by_namespace.clone() as Arc<dyn Handler<Service>>],
        );
        let (namespaces, fns) = run_cache(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            |n: &mut Namespace| {
                n.metadata.managed_fields = None;
                n.metadata.annotations = None;
                n.spec = None;
                n.status = None;
            },
            vec![Arc::new(Notify(changed.clone())) as Arc<dyn Handler<Namespace>>],
        );
        let (policies, fp) = run_cache(
            Api::<ServiceEnvPolicy>::all(client.clone()),
            watcher::Config::default(),
            |p: &mut ServiceEnvPolicy| p.metadata.managed_fields = None,
            vec![Arc::new(Notify(changed.clone())) as Arc<dyn Handler<ServiceEnvPolicy>>],
        );
        let caches = Caches { services, by_namespace, namespaces, policies, changed };
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
        self.policies.store.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(namespace)).collect()
    }
    fn services(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.by_namespace.of(namespace)
    }
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.by_namespace.get(namespace, name)
    }
}
