//! Indexes the endpoint controllers need on every event, kept cheap at 10k Services.
//!
//! - [`SelectorIndex`]: which Services select a set of pod labels. Each Service is indexed under
//!   every `key=value` pair of its selector; a lookup collects the candidates of the pod's own
//!   pairs and checks each candidate's full selector. A pod with `L` labels costs `O(L + candidates)`, independent of the number
//!   of Services in the namespace.
//! - [`GroupIndex`]: objects grouped by `(namespace, group)`, e.g. pods by namespace or slices by
//!   their `kubernetes.io/service-name` label.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

type Labels = BTreeMap<String, String>;

use crate::pod::PodLabels;

/// A Service's selector as sorted `key=value` pairs in one boxed slice (a `BTreeMap` allocates a
/// ≈550-byte node for a one-label selector).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Box<[(Box<str>, Box<str>)]>);

impl Selector {
    /// Whether every pair is among `labels` (an empty selector matches).
    pub fn matches(&self, labels: &PodLabels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(&**v))
    }

    /// The pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl From<&Labels> for Selector {
    fn from(m: &Labels) -> Self {
        Selector(m.iter().map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str()))).collect())
    }
}

#[derive(Debug, Default)]
struct SelectorState {
    /// (namespace, key, value) → services whose selector contains key=value.
    by_pair: HashMap<(String, String, String), HashSet<String>>,
    /// (namespace, name) → selector.
    selectors: HashMap<(String, String), Selector>,
}

/// Services by selector, for pod → Services lookups.
#[derive(Debug, Default)]
pub struct SelectorIndex {
    state: RwLock<SelectorState>,
}

impl SelectorIndex {
    /// Records (or replaces) a Service's selector and returns what it recorded. `None` or an
    /// empty selector selects nothing (a selectorless Service, as upstream treats it for
    /// endpoints): nothing is recorded.
    pub fn set(&self, namespace: &str, name: &str, selector: Option<&Labels>) -> Option<Selector> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        Self::remove_locked(&mut s, namespace, name);
        let sel = selector.filter(|m| !m.is_empty())?;
        for (k, v) in sel {
            s.by_pair.entry((namespace.into(), k.clone(), v.clone())).or_default().insert(name.into());
        }
        let recorded = Selector::from(sel);
        s.selectors.insert((namespace.into(), name.into()), recorded.clone());
        Some(recorded)
    }

    /// Forgets a Service.
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        Self::remove_locked(&mut s, namespace, name);
    }

    fn remove_locked(s: &mut SelectorState, namespace: &str, name: &str) {
        if let Some(old) = s.selectors.remove(&(namespace.to_string(), name.to_string())) {
            for (k, v) in old.iter() {
                let key = (namespace.to_string(), k.to_owned(), v.to_owned());
                if let Some(set) = s.by_pair.get_mut(&key) {
                    set.remove(name);
                    if set.is_empty() {
                        s.by_pair.remove(&key);
                    }
                }
            }
        }
    }

    /// Names of the Services in `namespace` whose selector matches `labels`.
    pub fn matching(&self, namespace: &str, labels: &PodLabels) -> BTreeSet<String> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeSet::new();
        for (k, v) in labels.iter() {
            let Some(cands) = s.by_pair.get(&(namespace.to_string(), k.to_string(), v.to_string())) else { continue };
            for c in cands {
                if out.contains(c) {
                    continue;
                }
                let sel = s.selectors.get(&(namespace.to_string(), c.clone()));
                if sel.is_some_and(|sel| sel.matches(labels)) {
                    out.insert(c.clone());
                }
            }
        }
        out
    }

    /// The Services with a recorded selector, as `(namespace, name)`.
    pub fn services(&self) -> Vec<(String, String)> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).selectors.keys().cloned().collect()
    }

    /// Number of indexed Services.
    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(|e| e.into_inner()).selectors.len()
    }

    /// Whether no Service is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Names grouped by `(namespace, group)`.
#[derive(Debug, Default)]
pub struct GroupIndex {
    groups: RwLock<HashMap<(String, String), BTreeSet<String>>>,
    /// (namespace, name) → group, so moves between groups are handled.
    member_of: RwLock<HashMap<(String, String), String>>,
}

impl GroupIndex {
    /// Puts `name` in `group` (`None`: in no group), removing it from its previous group.
    pub fn set(&self, namespace: &str, name: &str, group: Option<&str>) {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let mut member_of = self.member_of.write().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if let Some(prev) = member_of.remove(&key) {
            let gk = (namespace.to_string(), prev);
            if let Some(set) = groups.get_mut(&gk) {
                set.remove(name);
                if set.is_empty() {
                    groups.remove(&gk);
                }
            }
        }
        if let Some(g) = group {
            groups.entry((namespace.to_string(), g.to_string())).or_default().insert(name.to_string());
            member_of.insert(key, g.to_string());
        }
    }

    /// The members of a group.
    pub fn members(&self, namespace: &str, group: &str) -> Vec<String> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), group.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The group of a member.
    pub fn group_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.member_of
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_labels(pairs: &[(&str, &str)]) -> PodLabels {
        PodLabels::from(labels(pairs))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_matches_subsets_only_in_the_namespace() {
        let idx = SelectorIndex::default();
        idx.set("a", "web", Some(&labels(&[("app", "web")])));
        idx.set("a", "web-v2", Some(&labels(&[("app", "web"), ("v", "2")])));
        idx.set("a", "none", None);
        idx.set("a", "empty", Some(&labels(&[])));
        idx.set("b", "web", Some(&labels(&[("app", "web")])));
        let got = idx.matching("a", &pod_labels(&[("app", "web"), ("v", "1")]));
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["web"]);
        let got = idx.matching("a", &pod_labels(&[("app", "web"), ("v", "2")]));
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["web", "web-v2"]);
        assert!(idx.matching("a", &pod_labels(&[])).is_empty(), "empty or nil selectors select nothing");
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn selector_changes_and_removal() {
        let idx = SelectorIndex::default();
        idx.set("a", "s", Some(&labels(&[("app", "x")])));
        idx.set("a", "s", Some(&labels(&[("app", "y")])));
        assert!(idx.matching("a", &pod_labels(&[("app", "x")])).is_empty());
        assert_eq!(idx.matching("a", &pod_labels(&[("app", "y")])).len(), 1);
        idx.remove("a", "s");
        assert!(idx.matching("a", &pod_labels(&[("app", "y")])).is_empty());
        assert!(idx.is_empty());
    }

    #[test]
    fn ten_thousand_services_one_lookup() {
        let idx = SelectorIndex::default();
        for i in 0..10_000 {
            idx.set("ns", &format!("s{i}"), Some(&labels(&[("app", &format!("a{i}")), ("tier", "web")])));
        }
        let got = idx.matching("ns", &pod_labels(&[("app", "a42"), ("tier", "web")]));
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["s42"]);
    }

    #[test]
    fn groups_follow_moves() {
        let g = GroupIndex::default();
        g.set("ns", "slice-1", Some("svc-a"));
        g.set("ns", "slice-2", Some("svc-a"));
        g.set("ns", "slice-1", Some("svc-b"));
        assert_eq!(g.members("ns", "svc-a"), vec!["slice-2"]);
        assert_eq!(g.members("ns", "svc-b"), vec!["slice-1"]);
        assert_eq!(g.group_of("ns", "slice-1").as_deref(), Some("svc-b"));
        g.set("ns", "slice-2", None);
        assert!(g.members("ns", "svc-a").is_empty());
        assert!(g.members("other", "svc-b").is_empty());
    }
}
