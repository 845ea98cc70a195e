//! Upstream's last-change trigger time (`endpoints.kubernetes.io/last-change-trigger-time`),
//! shared by the EndpointSlice and Endpoints controllers.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Service;

use super::informers::{Key, key_of};
use crate::pod::CachedPod;

/// k8s-openapi's timestamps (jiff) as chrono's.
pub fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).unwrap_or(0)).unwrap_or_default()
}

/// Upstream's `TriggerTimeTracker`: the time of the earliest change (pod Ready transition or
/// Service creation) not yet reflected in the slices.
///
/// Unlike upstream, computing does not record anything: the shell [`TriggerTimeTracker::commit`]s
/// the new state only after the plan was applied, so a sync that fails (a 409 from a lagging
/// cache, say) does not swallow the trigger time of the retry.
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    states: HashMap<Key, TriggerState>,
}

/// What the tracker remembers of one Service: its creation time and each pod's `Ready`
/// transition time, the pods sorted by name in one boxed slice (names shared with the pod
/// cache: 32 bytes a pod, where a hash map of owned names took ≈100).
#[derive(Debug, Clone, Default)]
pub struct TriggerState {
    service: Option<DateTime<Utc>>,
    pods: Box<[(Arc<str>, DateTime<Utc>)]>,
}

impl TriggerState {
    fn pod(&self, name: &str) -> Option<DateTime<Utc>> {
        self.pods.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| self.pods[i].1)
    }
}

impl TriggerTimeTracker {
    /// The `endpoints.kubernetes.io/last-change-trigger-time` for this sync, and the state to
    /// [`commit`](Self::commit) once the sync succeeded.
    pub fn compute(&self, service: &Service, pods: &[Arc<CachedPod>]) -> (Option<DateTime<Utc>>, TriggerState) {
        let prev = self.states.get(&key_of(service));
        let mut min: Option<DateTime<Utc>> = None;
        let mut next = TriggerState::default();
        let mut seen: Vec<(Arc<str>, DateTime<Utc>)> = Vec::with_capacity(pods.len());
        for p in pods {
            let t = crate::podutil::pod_ready_condition(p)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| to_chrono(t.0));
            if let (Some(t), Some(name)) = (t, p.metadata.name.as_ref()) {
                if prev.and_then(|st| st.pod(name)).is_none_or(|before| t > before) {
                    min = Some(min.map_or(t, |m| m.min(t)));
                }
                seen.push((name.clone(), t));
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        seen.dedup_by(|a, b| a.0 == b.0);
        next.pods = seen.into_boxed_slice();
        next.service = service.metadata.creation_timestamp.as_ref().map(|t| to_chrono(t.0));
        if let Some(t) = next.service
            && prev.and_then(|st| st.service).is_none_or(|before| t > before)
        {
            min = Some(min.map_or(t, |m| m.min(t)));
        }
        match prev {
            None => (next.service, next),
            Some(_) => (min, next),
        }
    }

    /// Records the state of a successful sync.
    pub fn commit(&mut self, service: &Service, state: TriggerState) {
        self.states.insert(key_of(service), state);
    }

    /// Forgets a deleted Service.
    pub fn delete(&mut self, key: &Key) {
        self.states.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn jt(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()
    }

    fn svc(created: i64) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                creation_timestamp: Some(Time(jt(created))),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(name: &str, ready_at: i64) -> Arc<CachedPod> {
        Arc::new(CachedPod::from(Pod {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(jt(ready_at))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    // Ported from upstream trigger_time_tracker_test.go.
    /// compute + commit, as a successful sync does.
    fn sync(tr: &mut TriggerTimeTracker, s: &Service, pods: &[Arc<CachedPod>]) -> Option<DateTime<Utc>> {
        let (t, st) = tr.compute(s, pods);
        tr.commit(s, st);
        t
    }

    #[test]
    fn trigger_time_first_sync_is_service_creation() {
        let mut tr = TriggerTimeTracker::default();
        assert_eq!(sync(&mut tr, &svc(10), &[pod("a", 20)]), Some(t(10)));
    }

    #[test]
    fn trigger_time_is_the_earliest_new_change() {
        let mut tr = TriggerTimeTracker::default();
        sync(&mut tr, &svc(10), &[pod("a", 20), pod("b", 30)]);
        assert_eq!(sync(&mut tr, &svc(10), &[pod("a", 20), pod("b", 30)]), None, "nothing changed");
        assert_eq!(sync(&mut tr, &svc(10), &[pod("a", 50), pod("b", 40)]), Some(t(40)));
        assert_eq!(
            sync(&mut tr, &svc(10), &[pod("a", 50), pod("b", 40), pod("c", 45)]),
            Some(t(45)),
            "a new pod counts"
        );
        tr.delete(&("ns".into(), "s".into()));
        assert_eq!(sync(&mut tr, &svc(10), &[pod("a", 50)]), Some(t(10)), "forgotten service starts over");
    }

    #[test]
    fn trigger_time_service_recreated() {
        let mut tr = TriggerTimeTracker::default();
        sync(&mut tr, &svc(10), &[pod("a", 20)]);
        assert_eq!(sync(&mut tr, &svc(60), &[pod("a", 20)]), Some(t(60)));
    }

    #[test]
    fn a_failed_sync_does_not_swallow_the_trigger_time() {
        let mut tr = TriggerTimeTracker::default();
        sync(&mut tr, &svc(10), &[]);
        let (first, _not_committed) = tr.compute(&svc(10), &[pod("a", 20)]);
        assert_eq!(first, Some(t(20)));
        assert_eq!(sync(&mut tr, &svc(10), &[pod("a", 20)]), Some(t(20)), "the retry sees it again");
    }
}
