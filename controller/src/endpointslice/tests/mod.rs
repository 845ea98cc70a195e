//! Tests of the EndpointSlice core: ports of upstream's unit tests (see docs/upstream-tests.md)
//! and property tests.
//!
//! Upstream tests run the reconciler against a fake clientset and count API actions. Here
//! [`Cluster`] plays the apiserver: it stores slices, applies a [`Plan`] (checking names and
//! resourceVersions like the apiserver would) and returns empty lists as absent, as the real
//! apiserver does for `ports` / `endpoints`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod controller;
mod kcm;
mod props;
mod reconciler;
mod utils;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    Container, Node, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_TOPOLOGY_ZONE};
use super::reconcile::service_owner_reference;
use super::{Config, CpuRatios, DEFAULT_MANAGED_BY, Input, NodeLookup, Plan, ServiceHintsState, plan};
use crate::pod::CachedPod;
use crate::podutil::IpFamily;

pub(super) const CONTROLLER_NAME: &str = DEFAULT_MANAGED_BY;

pub(super) fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

pub(super) fn trigger(secs: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nanos).unwrap()
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The IP of upstream's `newPod(n)`: `1.2.3.(4+n)`. Upstream overflows the last octet past
/// n = 251 (and then relies on the `<nil>` address it writes); this fixture carries over into
/// the third octet instead, so every pod has a valid, distinct IP.
pub(super) fn pod_ip(n: usize) -> String {
    let v = 4 + n;
    format!("1.2.{}.{}", 3 + v / 256, v % 256)
}

/// Upstream `newPod`: `pod<n>` in `namespace`, label `foo=bar`, one container, on `node-1`,
/// IP [`pod_ip`], with a `Ready` condition; terminating pods have a deletion timestamp.
pub(super) fn new_pod(n: usize, namespace: &str, ready: bool, _n_ports: usize, terminating: bool) -> Pod {
    let ip = pod_ip(n);
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(format!("pod{n}")),
            labels: Some(labels(&[("foo", "bar")])),
            deletion_timestamp: terminating.then(|| time(1_700_000_000)),
            resource_version: Some(n.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "container-1".into(), ..Default::default() }],
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The endpoint metadata upstream pairs with a Service: its ports and address type.
#[derive(Clone, Debug)]
pub(super) struct EndpointMeta {
    pub ports: Vec<EndpointPort>,
    pub address_type: String,
}

/// Upstream `newServiceAndEndpointMeta`: one port (name = Service name, targetPort 80, TCP),
/// selector `foo=bar`, ipFamilies `[IPv4]`, UID `<namespace>-<name>`, no cluster IP.
pub(super) fn new_service_and_endpoint_meta(name: &str, namespace: &str) -> (Service, EndpointMeta) {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(format!("{namespace}-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                target_port: Some(IntOrString::Int(80)),
                protocol: Some("TCP".into()),
                name: Some(name.to_owned()),
                ..Default::default()
            }]),
            selector: Some(labels(&[("foo", "bar")])),
            ip_families: Some(vec!["IPv4".into()]),
            ..Default::default()
        }),
        status: None,
    };
    let meta = EndpointMeta {
        ports: vec![EndpointPort {
            name: Some(name.to_owned()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }],
        address_type: "IPv4".into(),
    };
    (svc, meta)
}

/// Upstream `newEmptyEndpointSlice`: `<service>-<n>`, owned by the Service, no endpoints. Unlike
/// upstream's fixture it carries the service-name and managed-by labels, because the core only
/// considers slices labelled as this controller's (upstream's lister does that filtering, and
/// its reconciler tests bypass it). Only reserved labels are added, so "labels changed" is
/// unaffected.
pub(super) fn new_empty_endpoint_slice(n: usize, namespace: &str, meta: &EndpointMeta, svc: &Service) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{n}")),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![service_owner_reference(svc)]),
            labels: Some(labels(&[(LABEL_SERVICE_NAME, &name), (LABEL_MANAGED_BY, CONTROLLER_NAME)])),
            ..Default::default()
        },
        address_type: meta.address_type.clone(),
        endpoints: Some(vec![]),
        ports: Some(meta.ports.clone()),
    }
}

pub(super) fn node(name: &str) -> Node {
    Node { metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() }, ..Default::default() }
}

pub(super) fn zoned_node(name: &str, zone: &str) -> Node {
    let mut n = node(name);
    n.metadata.labels = Some(labels(&[(LABEL_TOPOLOGY_ZONE, zone)]));
    n
}

pub(super) fn config(max: usize) -> Config {
    Config { max_endpoints_per_slice: max, ..Config::default() }
}

/// The tables build k8s-openapi Pods; the planner reads their cached projection.
pub(super) fn cached(pods: &[Pod]) -> Vec<CachedPod> {
    pods.iter().map(CachedPod::from).collect()
}

/// [`desired::pod_to_endpoint`](super::desired::pod_to_endpoint) of a k8s-openapi Pod.
pub(super) fn pod_to_endpoint(pod: &Pod, node: Option<&Node>, service: &Service, family: IpFamily) -> Endpoint {
    super::desired::pod_to_endpoint(&CachedPod::from(pod), node, service, family)
}

/// [`desired::endpoint_ports`](super::desired::endpoint_ports) of a k8s-openapi Pod.
pub(super) fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    super::desired::endpoint_ports(service, &CachedPod::from(pod))
}

/// Plans with the given snapshot (no topology).
pub(super) fn plan_for(
    svc: &Service,
    pods: &[Pod],
    nodes: &dyn NodeLookup,
    existing: &[EndpointSlice],
    cfg: &Config,
    trigger_time: Option<DateTime<Utc>>,
) -> Plan {
    let pods = cached(pods);
    let pod_refs: Vec<&CachedPod> = pods.iter().collect();
    let slice_refs: Vec<&EndpointSlice> = existing.iter().collect();
    let mut input = Input::new(svc, &pod_refs, nodes, &slice_refs);
    input.trigger_time = trigger_time;
    plan(&input, cfg)
}

/// A fake apiserver for EndpointSlices in one namespace.
#[derive(Debug, Default, Clone)]
pub(super) struct Cluster {
    pub slices: BTreeMap<String, EndpointSlice>,
    next_rv: u64,
    /// Totals over every applied plan, like upstream's action counters.
    pub creates: usize,
    pub updates: usize,
    pub deletes: usize,
}

/// What the apiserver returns for empty `ports` / `endpoints`: absent.
pub(super) fn as_stored(mut slice: EndpointSlice) -> EndpointSlice {
    if slice.ports.as_ref().is_some_and(Vec::is_empty) {
        slice.ports = None;
    }
    if slice.endpoints.as_ref().is_some_and(Vec::is_empty) {
        slice.endpoints = None;
    }
    slice
}

impl Cluster {
    pub fn with(slices: impl IntoIterator<Item = EndpointSlice>) -> Self {
        let mut c = Cluster::default();
        for s in slices {
            c.insert(s);
        }
        c
    }

    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    /// Stores a slice as is (test setup, not counted).
    pub fn insert(&mut self, mut slice: EndpointSlice) {
        let rv = self.bump();
        slice.metadata.resource_version = Some(rv);
        let name = slice.metadata.name.clone().expect("fixture slices have names");
        self.slices.insert(name, as_stored(slice));
    }

    pub fn list(&self) -> Vec<EndpointSlice> {
        self.slices.values().cloned().collect()
    }

    /// Applies a plan the way the shell would, asserting what the apiserver would enforce:
    /// creates have a fresh, valid name; updates and deletes name an existing slice and carry
    /// its resourceVersion.
    pub fn apply(&mut self, plan: &Plan) {
        for slice in &plan.create {
            let name = slice.metadata.name.clone().expect("creates are named");
            assert!(name.len() <= 63, "name too long: {name}");
            assert!(!self.slices.contains_key(&name), "create of existing name {name} (409)");
            let mut stored = slice.clone();
            stored.metadata.resource_version = Some(self.bump());
            self.slices.insert(name, as_stored(stored));
            self.creates += 1;
        }
        for slice in &plan.update {
            let name = slice.metadata.name.clone().expect("updates are named");
            let current = self.slices.get(&name).unwrap_or_else(|| panic!("update of missing slice {name}"));
            assert_eq!(current.metadata.resource_version, slice.metadata.resource_version, "stale update of {name}");
            let mut stored = slice.clone();
            stored.metadata.resource_version = Some(self.bump());
            self.slices.insert(name, as_stored(stored));
            self.updates += 1;
        }
        for slice in &plan.delete {
            let name = slice.metadata.name.clone().expect("deletes are named");
            assert!(self.slices.remove(&name).is_some(), "delete of missing slice {name}");
            self.deletes += 1;
        }
    }

    /// Lists, plans and applies; returns the plan.
    pub fn reconcile(
        &mut self,
        svc: &Service,
        pods: &[Pod],
        nodes: &dyn NodeLookup,
        cfg: &Config,
        trigger_time: Option<DateTime<Utc>>,
    ) -> Plan {
        let existing = self.list();
        let p = plan_for(svc, pods, nodes, &existing, cfg, trigger_time);
        self.apply(&p);
        p
    }

    /// Like [`Cluster::reconcile`], with topology inputs.
    pub fn reconcile_with_topology(
        &mut self,
        svc: &Service,
        pods: &[Pod],
        nodes: &dyn NodeLookup,
        cfg: &Config,
        topology: Option<&CpuRatios>,
        state: Option<&ServiceHintsState>,
    ) -> Plan {
        let existing = self.list();
        let pods = cached(pods);
        let pod_refs: Vec<&CachedPod> = pods.iter().collect();
        let slice_refs: Vec<&EndpointSlice> = existing.iter().collect();
        let mut input = Input::new(svc, &pod_refs, nodes, &slice_refs);
        input.topology = topology;
        input.hints_state = state;
        let p = plan(&input, cfg);
        self.apply(&p);
        p
    }
}

/// Upstream `expectUnorderedSlicesWithLengths`.
pub(super) fn assert_lengths(slices: &[EndpointSlice], expected: &[usize]) {
    let mut got: Vec<usize> = slices.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).collect();
    let mut want = expected.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "slice lengths");
}

pub(super) fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}
