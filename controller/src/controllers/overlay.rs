//! Our own recent writes, laid over a watch cache until the watch delivers them.
//!
//! Right after a write, the next sync of the same key often runs before the watch event arrives.
//! Planning from the lagging cache then goes wrong in one of two ways:
//! - it repeats a create or rewrites an old version (a `409`, a retry after backoff); or, worse,
//! - it compares the desired state with an *old* object that happens to equal it — a pod that
//!   flapped not-ready and back before the watch caught up — and writes nothing, leaving the
//!   object in the intermediate state (upstream's "rapid readiness flap" bug, which it fixes
//!   for Endpoints with a stale-resourceVersion tracker and for slices with a generation
//!   tracker that refuses the sync).
//!
//! We instead plan from what we know we wrote. An entry records the object as the apiserver
//! returned it and the resourceVersions it replaced: the one our write replaced and, when that was
//! itself a write of ours the cache had not shown yet, that write's replaced versions too (two
//! quick syncs of one Service leave the cache up to two versions behind). It is dropped once the
//! cache holds a version outside that chain (ours or newer), once the watch reports the object
//! deleted, or after [`RecentWrites::MAX_AGE`] at the latest. resourceVersions are only compared
//! for equality, never ordered, as the API requires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Resource;

use super::informers::{Key, key_of};

#[derive(Debug)]
struct Entry<K> {
    /// What we wrote; `None` for a delete.
    written: Option<Arc<K>>,
    /// The object's uid.
    uid: Option<String>,
    /// The resourceVersions our write (and the pending writes of ours it built on) replaced;
    /// empty for a create. A cache showing one of them lags behind us.
    replaced: Vec<String>,
    at: Instant,
}

/// Recent writes of one kind of object.
#[derive(Debug)]
pub struct RecentWrites<K> {
    entries: HashMap<Key, Entry<K>>,
}

impl<K> Default for RecentWrites<K> {
    fn default() -> Self {
        RecentWrites { entries: HashMap::new() }
    }
}

impl<K: Resource> RecentWrites<K> {
    /// How long an entry may cover for a cache that never catches up (a lost race with a
    /// deletion by someone else, say).
    pub const MAX_AGE: Duration = Duration::from_secs(30);

    /// Records a created (`replaced: None`) or updated object as the apiserver returned it.
    /// `cached` is what the watch cache holds for it now: the watch event of a write can arrive
    /// before the write's response, and then there is nothing to lay over the cache (an entry
    /// recorded anyway would be kept, with the whole object, until the next sync of that key).
    pub fn wrote(&mut self, obj: K, replaced: Option<String>, cached: Option<&K>) {
        let key = key_of(&obj);
        let uid = obj.meta().uid.clone();
        let mut chain = Vec::new();
        if let (Some(r), Some(prev)) = (&replaced, self.entries.get(&key)) {
            // We replaced our own earlier write, which the cache has not shown yet: the cache may
            // still show any version that write replaced.
            let prev_rv = prev.written.as_ref().and_then(|w| w.meta().resource_version.as_ref());
            if prev.uid == uid && prev_rv == Some(r) {
                chain.clone_from(&prev.replaced);
            }
        }
        chain.extend(replaced);
        let entry = Entry { written: Some(Arc::new(obj)), uid, replaced: chain, at: Instant::now() };
        if Self::caught_up(&entry, cached) {
            // What `observed` or the next `get` would do anyway. (A relist served from a lagging
            // apiserver cache could show an older version later; the entry would have been
            // dropped at the first event too, so nothing is lost by not recording it.)
            self.entries.remove(&key);
        } else {
            self.entries.insert(key, entry);
        }
    }

    /// Records a deleted object.
    pub fn deleted(&mut self, obj: &K) {
        let replaced = obj.meta().resource_version.clone().into_iter().collect();
        self.entries
            .insert(key_of(obj), Entry { written: None, uid: obj.meta().uid.clone(), replaced, at: Instant::now() });
    }

    fn caught_up(e: &Entry<K>, cached: Option<&K>) -> bool {
        match (&e.written, cached) {
            // A create or update: the cache shows the object past the version we replaced.
            (Some(_), Some(c)) => {
                c.meta().uid == e.uid && c.meta().resource_version.as_ref().is_none_or(|rv| !e.replaced.contains(rv))
            }
            (Some(_), None) => false,
            // A delete: the cache no longer shows that object.
            (None, Some(c)) => c.meta().uid != e.uid,
            (None, None) => true,
        }
    }

    /// The watch delivered a version of an object. Returns whether it is the very version our
    /// latest write of it returned: the echo of our own write, which needs no sync (upstream's
    /// EndpointSliceTracker, `ShouldSync`, skips it by generation). An echo that arrives before
    /// the write's response is not recognised, as upstream's is not.
    pub fn observed(&mut self, obj: &K) -> bool {
        let k = key_of(obj);
        let Some(e) = self.entries.get(&k) else { return false };
        let echo = e.written.as_ref().is_some_and(|w| {
            let (w, o) = (w.meta(), obj.meta());
            w.uid == o.uid && w.resource_version.is_some() && w.resource_version == o.resource_version
        });
        if e.written.is_some() && Self::caught_up(e, Some(obj)) {
            self.entries.remove(&k);
        }
        echo
    }

    /// The watch reported an object deleted: nothing of ours about that object is pending.
    /// Returns whether we deleted it ourselves (upstream's `HandleDeletion`).
    pub fn observed_deleted(&mut self, obj: &K) -> bool {
        let k = key_of(obj);
        let ours = self.entries.get(&k).filter(|e| e.uid == obj.meta().uid).map(|e| e.written.is_none());
        if ours.is_some() {
            self.entries.remove(&k);
        }
        ours.unwrap_or(false)
    }

    fn expire(&mut self) {
        self.entries.retain(|_, e| e.at.elapsed() < Self::MAX_AGE);
    }

    /// One object: the cached version, or ours while the cache lags.
    pub fn get(&mut self, key: &Key, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        self.expire();
        let Some(e) = self.entries.get(key) else { return cached };
        if Self::caught_up(e, cached.as_deref()) {
            self.entries.remove(key);
            return cached;
        }
        e.written.clone()
    }

    /// A group of objects in `namespace` (e.g. the slices of one Service), with ours laid over
    /// the cached ones; `member` says whether one of our written objects belongs to the group.
    pub fn overlay(&mut self, namespace: &str, cached: Vec<Arc<K>>, member: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.expire();
        let mut by_name: std::collections::BTreeMap<String, Arc<K>> =
            cached.into_iter().map(|o| (o.meta().name.clone().unwrap_or_default(), o)).collect();
        let keys: Vec<Key> = self.entries.keys().filter(|(ns, _)| ns == namespace).cloned().collect();
        for k in keys {
            let in_cache = by_name.get(&k.1).cloned();
            let Some(e) = self.entries.get(&k) else { continue };
            if Self::caught_up(e, in_cache.as_deref()) {
                self.entries.remove(&k);
                continue;
            }
            match &e.written {
                Some(w) if member(w) => {
                    by_name.insert(k.1.clone(), w.clone());
                }
                Some(_) => {}
                None => {
                    by_name.remove(&k.1);
                }
            }
        }
        by_name.into_values().collect()
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn obj(name: &str, uid: &str, rv: &str, group: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                labels: Some([("group".to_string(), group.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn rv(v: &[Arc<ConfigMap>]) -> Vec<(String, String)> {
        v.iter().map(|o| (o.metadata.name.clone().unwrap(), o.metadata.resource_version.clone().unwrap())).collect()
    }

    fn in_g(o: &ConfigMap) -> bool {
        o.metadata.labels.as_ref().and_then(|l| l.get("group")).map(String::as_str) == Some("g")
    }

    #[test]
    fn created_object_covers_the_cache_until_it_shows_up() {
        let mut w = RecentWrites::default();
        w.wrote(obj("a", "u1", "5", "g"), None, None);
        assert_eq!(rv(&w.overlay("ns", vec![], in_g)), vec![("a".into(), "5".into())]);
        assert!(w.overlay("other", vec![], in_g).is_empty());
        assert_eq!(
            rv(&w.overlay("ns", vec![Arc::new(obj("a", "u1", "5", "g"))], in_g)),
            vec![("a".into(), "5".into())]
        );
        assert!(w.is_empty());
    }

    /// Found by the side-by-side benchmark (409s under churn): two writes in a row before the
    /// watch shows the first one; the cache still showing the version the *first* write
    /// replaced must not end the cover (planning from it sends a stale resourceVersion).
    #[test]
    fn chained_writes_cover_a_cache_two_versions_behind() {
        let mut w = RecentWrites::default();
        let k = ("ns".to_string(), "a".to_string());
        w.wrote(obj("a", "u1", "11", "g"), Some("10".into()), None);
        w.wrote(obj("a", "u1", "12", "g"), Some("11".into()), None);
        let rv_of = |o: Option<Arc<ConfigMap>>| o.unwrap().metadata.resource_version.clone().unwrap();
        assert_eq!(rv_of(w.get(&k, Some(Arc::new(obj("a", "u1", "10", "g"))))), "12");
        assert_eq!(rv_of(w.get(&k, Some(Arc::new(obj("a", "u1", "11", "g"))))), "12");
        assert_eq!(rv_of(w.get(&k, Some(Arc::new(obj("a", "u1", "12", "g"))))), "12");
        assert!(w.is_empty(), "the cache showing our last write ends the cover");
        // A write that did not build on our pending one (someone else's version in between)
        // starts a new chain.
        w.wrote(obj("b", "u2", "21", "g"), Some("20".into()), None);
        w.wrote(obj("b", "u2", "31", "g"), Some("30".into()), None);
        let kb = ("ns".to_string(), "b".to_string());
        assert_eq!(rv_of(w.get(&kb, Some(Arc::new(obj("b", "u2", "20", "g"))))), "20");
        // A create followed by an update: the cache showing the created version lags.
        w.wrote(obj("c", "u3", "5", "g"), None, None);
        w.wrote(obj("c", "u3", "6", "g"), Some("5".into()), None);
        let kc = ("ns".to_string(), "c".to_string());
        assert_eq!(rv_of(w.get(&kc, Some(Arc::new(obj("c", "u3", "5", "g"))))), "6");
        assert_eq!(rv_of(w.get(&kc, None)), "6");
    }

    #[test]
    fn updated_object_covers_the_replaced_version_only() {
        let mut w = RecentWrites::default();
        // We replaced rv 7 with rv 9; the cache still shows 7: ours wins.
        w.wrote(obj("a", "u1", "9", "g"), Some("7".into()), None);
        let k = ("ns".to_string(), "a".to_string());
        assert_eq!(
            w.get(&k, Some(Arc::new(obj("a", "u1", "7", "g")))).unwrap().metadata.resource_version.as_deref(),
            Some("9")
        );
        // The cache moved on (to ours or to someone else's newer write): the cache wins.
        assert_eq!(
            w.get(&k, Some(Arc::new(obj("a", "u1", "12", "g")))).unwrap().metadata.resource_version.as_deref(),
            Some("12")
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_flap_is_not_lost() {
        // Upstream's rapid-readiness-flap scenario: we wrote state B over state A (rv 1 → 2); the
        // pod flaps back before the watch delivers rv 2. Planning must compare against B, not A.
        let mut w = RecentWrites::default();
        let mut b = obj("ep", "u", "2", "g");
        b.data = Some([("state".to_string(), "B".to_string())].into());
        w.wrote(b, Some("1".into()), None);
        let mut a = obj("ep", "u", "1", "g");
        a.data = Some([("state".to_string(), "A".to_string())].into());
        let seen = w.get(&("ns".into(), "ep".into()), Some(Arc::new(a))).unwrap();
        assert_eq!(seen.data.as_ref().unwrap()["state"], "B");
    }

    #[test]
    fn deletes_hide_the_object_until_the_watch_reports_it() {
        let mut w = RecentWrites::default();
        w.deleted(&obj("a", "u1", "3", "g"));
        assert!(w.overlay("ns", vec![Arc::new(obj("a", "u1", "3", "g"))], in_g).is_empty());
        assert!(!w.is_empty());
        // Recreated by someone else (another uid): shown.
        assert_eq!(w.overlay("ns", vec![Arc::new(obj("a", "u2", "8", "g"))], in_g).len(), 1);
        assert!(w.is_empty());
        w.deleted(&obj("b", "u3", "3", "g"));
        w.observed_deleted(&obj("b", "u3", "3", "g"));
        assert!(w.is_empty());
    }

    #[test]
    fn a_write_deleted_by_someone_else_is_forgotten_through_the_watch() {
        let mut w = RecentWrites::default();
        w.wrote(obj("c", "u4", "4", "g"), Some("3".into()), None);
        w.observed(&obj("c", "u4", "4", "g"));
        assert!(w.is_empty());
        assert!(w.overlay("ns", vec![], in_g).is_empty(), "deleted after we wrote it");
        w.wrote(obj("d", "u5", "1", "g"), None, None);
        w.observed_deleted(&obj("d", "u5", "1", "g"));
        assert!(w.overlay("ns", vec![], in_g).is_empty());
    }

    /// Upstream's tracker does not sync on the echo of its own write (`ShouldSync`) or delete
    /// (`HandleDeletion`); the overlay tells them apart from everyone else's events.
    #[test]
    fn the_echo_of_our_own_write_or_delete_is_recognised() {
        let mut w = RecentWrites::default();
        w.wrote(obj("a", "u1", "11", "g"), Some("10".into()), None);
        w.wrote(obj("a", "u1", "12", "g"), Some("11".into()), None);
        assert!(!w.observed(&obj("a", "u1", "11", "g")), "superseded by our next write: not the latest");
        assert!(w.observed(&obj("a", "u1", "12", "g")), "our latest write");
        assert!(w.is_empty());
        assert!(!w.observed(&obj("a", "u1", "12", "g")), "nothing pending: someone else's, or a replay");
        w.wrote(obj("b", "u2", "5", "g"), Some("4".into()), None);
        assert!(!w.observed(&obj("b", "u2", "6", "g")), "someone else's newer version");
        assert!(!w.observed(&obj("c", "u3", "5", "g")), "never written");
        w.wrote(obj("d", "u4", "7", "g"), None, None);
        assert!(!w.observed(&obj("d", "u5", "7", "g")), "another object under the same name");

        w.deleted(&obj("e", "u6", "3", "g"));
        assert!(!w.observed_deleted(&obj("e", "u7", "9", "g")), "a recreated object deleted by someone else");
        assert!(w.observed_deleted(&obj("e", "u6", "3", "g")), "our delete");
        assert!(!w.observed_deleted(&obj("e", "u6", "3", "g")));
        w.wrote(obj("f", "u8", "2", "g"), None, None);
        assert!(!w.observed_deleted(&obj("f", "u8", "2", "g")), "we wrote it, someone else deleted it");
    }

    #[test]
    fn objects_outside_the_group_are_not_added() {
        let mut w = RecentWrites::default();
        w.wrote(obj("x", "u", "1", "other"), None, None);
        assert!(w.overlay("ns", vec![], in_g).is_empty());
    }

    /// The watch delivered our create (or update) before its response: nothing is recorded, so
    /// the whole object is not held until the next sync of that key.
    #[test]
    fn a_watch_event_that_beats_the_response_leaves_nothing_pending() {
        let mut w = RecentWrites::default();
        let created = obj("a", "u1", "5", "g");
        w.observed(&created);
        w.wrote(created.clone(), None, Some(&created));
        assert!(w.is_empty());
        let updated = obj("a", "u1", "6", "g");
        w.wrote(updated.clone(), Some("5".into()), Some(&updated));
        assert!(w.is_empty());
        // The cache still shows the version we replaced: ours is laid over it.
        w.wrote(obj("a", "u1", "7", "g"), Some("6".into()), Some(&updated));
        assert_eq!(w.len(), 1);
        let key = ("ns".to_owned(), "a".to_owned());
        assert_eq!(w.get(&key, Some(Arc::new(updated))).unwrap().metadata.resource_version.as_deref(), Some("7"));
    }
}
