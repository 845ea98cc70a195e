//! Watch-fed caches (reflector stores) with change handlers that see the old and the new object.
//!
//! kube-runtime's `reflect()` hides the previous version of an object; the endpoint controllers
//! need it (a pod update only matters when readiness, IPs or labels changed). [`run_cache`] applies
//! each watch event to the store itself and calls the handlers with `(old, new)`.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::Config};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// What a cache reports to the controllers that use it.
pub trait Handler<K>: Send + Sync {
    /// An object was added or changed (`old` is `None` for an add).
    fn applied(&self, old: Option<Arc<K>>, new: Arc<K>);
    /// An object was deleted (the last state seen).
    fn deleted(&self, old: Arc<K>);
    /// The initial list (or a relist) completed.
    fn synced(&self) {}
}

/// A store and whether its first list completed.
#[derive(Clone)]
pub struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The reflector store.
    pub store: Store<K>,
    synced: watch::Receiver<bool>,
    watching: Arc<AtomicBool>,
}

impl<K: Resource + Clone + 'static> Cache<K>
where
    K::DynamicType: Eq + Hash + Clone + Default,
{
    /// A cache over a store filled by someone else (tests drive a reflector writer by hand);
    /// it counts as synced and its watch as healthy.
    pub fn from_store(store: Store<K>) -> Self {
        let (tx, synced) = watch::channel(true);
        drop(tx);
        Cache { store, synced, watching: Arc::new(AtomicBool::new(true)) }
    }

    /// Whether the first list completed.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list completed.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// True while the watch works: set by every event, cleared by every watch error (the API
    /// server unreachable, refusing, or the watch expiring) until the next event. Readiness uses
    /// it so that a replica cut off from the API server reports not-ready while it backs off.
    pub fn watch_health(&self) -> Arc<AtomicBool> {
        self.watching.clone()
    }

    /// The object `namespace/name` (namespace `None` for cluster-scoped kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }
}

/// Starts a watch on `api` (objects pruned by `prune` before caching) and returns the cache; the
/// returned future runs the watch and must be polled (spawned) for the cache to fill.
pub fn run_cache<K>(
    api: Api<K>,
    config: Config,
    prune: impl Fn(&mut K) + Send + Sync + 'static,
    handlers: Vec<Arc<dyn Handler<K>>>,
) -> (Cache<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    let (reader, mut writer) = reflector::store::<K>();
    let (tx, rx) = watch::channel(false);
    let store = reader.clone();
    let watching = Arc::new(AtomicBool::new(false));
    let health = watching.clone();
    let fut = async move {
        let stream = watcher::watcher(api, config).default_backoff().modify(prune);
        let mut stream = std::pin::pin!(stream);
        // Objects present before a (re)list that the list does not return again were deleted
        // while the watch was down: report them as deletions when the list completes.
        let mut unseen: std::collections::HashMap<ObjectRef<K>, Arc<K>> = Default::default();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => {
                    if !health.swap(true, Ordering::Relaxed) {
                        tracing::debug!(kind = %K::kind(&Default::default()), "watch is up");
                    }
                    ev
                }
                Err(e) => {
                    health.store(false, Ordering::Relaxed);
                    tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watch error; retrying with backoff");
                    continue;
                }
            };
            let old = match &ev {
                Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => reader.get(&ObjectRef::from_obj(o)),
                _ => None,
            };
            match &ev {
                Event::Init => unseen = reader.state().into_iter().map(|o| (ObjectRef::from_obj(&*o), o)).collect(),
                Event::InitApply(o) => {
                    unseen.remove(&ObjectRef::from_obj(o));
                }
                _ => {}
            }
            writer.apply_watcher_event(&ev);
            match ev {
                Event::Apply(o) | Event::InitApply(o) => {
                    let new = Arc::new(o);
                    for h in &handlers {
                        h.applied(old.clone(), new.clone());
                    }
                }
                Event::Delete(o) => {
                    let last = old.unwrap_or_else(|| Arc::new(o));
                    for h in &handlers {
                        h.deleted(last.clone());
                    }
                }
                Event::Init => {}
                Event::InitDone => {
                    for (_, gone) in unseen.drain() {
                        for h in &handlers {
                            h.deleted(gone.clone());
                        }
                    }
                    // Handlers first (they may repair indexes from the complete store), then
                    // waiters: a controller that starts on `wait_synced` sees the repaired state.
                    for h in &handlers {
                        h.synced();
                    }
                    let _ = tx.send(true);
                }
            }
        }
    };
    (Cache { store, synced: rx, watching }, fut)
}
