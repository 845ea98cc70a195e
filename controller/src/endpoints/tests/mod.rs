//! Tests of the Endpoints core: ports of upstream's unit tests (see docs/upstream-tests.md),
//! bad-input tests and property tests.
//!
//! Upstream tests run `syncService` against a fake HTTP server and check the body of the one
//! request sent (or that none was sent). Here the same inputs go through [`plan`] and the
//! resulting [`Action`] is compared with the object upstream sends, in this crate's port and
//! subset order (see DIFFERENCES 1). [`apply`] plays the apiserver for multi-step tests.
// Test tables are tuples of slices; naming each type would not help reading them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod bad_input;
mod controller;
mod props;
mod repack;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod,
    PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Action, Config, DEFAULT_MANAGED_BY, Input, LABEL_MANAGED_BY, Plan, plan};
use crate::endpointslice::labels::LABEL_HEADLESS;
use crate::pod::CachedPod;

pub(super) const IPV4: &[&str] = &["IPv4"];
pub(super) const IPV6: &[&str] = &["IPv6"];
pub(super) const IPV4_IPV6: &[&str] = &["IPv4", "IPv6"];
pub(super) const IPV6_IPV4: &[&str] = &["IPv6", "IPv4"];

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(super) fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

/// Upstream `triggerTime`: 2018-01-01T00:00:00Z.
pub(super) fn trigger_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_514_764_800, 0).unwrap()
}

/// The IP upstream's `testPod` gives pod `id` of `family`.
pub(super) fn test_ip(id: usize, family: &str) -> String {
    if family == "IPv4" {
        format!("1.2.{}.{}", 3 + (4 + id) / 256, (4 + id) % 256)
    } else {
        format!("2000::{:x}", 4 + id)
    }
}

/// Upstream `testPod`: `pod<id>` labelled `foo=bar`, resourceVersion `id`, one container with
/// ports `port<j>` = 8080 + j, Ready or not, one IP per family. No UID, no nodeName.
pub(super) fn test_pod(namespace: &str, id: usize, n_ports: usize, ready: bool, families: &[&str]) -> Pod {
    let ips: Vec<PodIP> = families.iter().map(|f| PodIP { ip: test_ip(id, f) }).collect();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(format!("pod{id}")),
            labels: Some(map(&[("foo", "bar")])),
            resource_version: Some(id.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                ports: Some(
                    (0..n_ports)
                        .map(|j| ContainerPort {
                            name: Some(format!("port{j}")),
                            container_port: 8080 + j as i32,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            pod_ip: ips.first().map(|p| p.ip.clone()),
            pod_ips: Some(ips),
            ..Default::default()
        }),
    }
}

/// Upstream `addPods`: `n_ready` ready pods then `n_not_ready` not-ready ones, ids from 0.
pub(super) fn add_pods(
    namespace: &str,
    n_ready: usize,
    n_ports: usize,
    n_not_ready: usize,
    families: &[&str],
) -> Vec<Pod> {
    (0..n_ready + n_not_ready).map(|i| test_pod(namespace, i, n_ports, i < n_ready, families)).collect()
}

/// A Service port with an integer target port (`None` protocol when `protocol` is empty).
pub(super) fn sport(name: &str, port: i32, protocol: &str, target: i32) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port,
        protocol: (!protocol.is_empty()).then(|| protocol.to_owned()),
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

/// A Service port with only `port` set (upstream `{Port: 80}`).
pub(super) fn bare_port(port: i32) -> ServicePort {
    ServicePort { port, ..Default::default() }
}

/// A Service `name` in `namespace` with a selector, ports and IP families.
pub(super) fn service(
    namespace: &str,
    name: &str,
    selector: Option<&[(&str, &str)]>,
    ports: Vec<ServicePort>,
    families: &[&str],
) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: selector.map(map),
            ports: Some(ports),
            ip_families: (!families.is_empty()).then(|| families.iter().map(|f| (*f).to_owned()).collect()),
            ..Default::default()
        }),
        status: None,
    }
}

pub(super) fn target_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Upstream's expected address `{IP, NodeName: &emptyNodeName, TargetRef: {Kind: Pod, Name,
/// Namespace}}`.
pub(super) fn addr(ip: &str, namespace: &str, pod: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        node_name: Some(String::new()),
        target_ref: Some(target_ref(namespace, pod)),
        hostname: None,
    }
}

/// An address with only an IP and `nodeName: ""` (upstream's preexisting `6.7.8.9`).
pub(super) fn bare_addr(ip: &str) -> EndpointAddress {
    EndpointAddress { ip: ip.into(), node_name: Some(String::new()), ..Default::default() }
}

pub(super) fn eport(name: &str, port: i32, protocol: &str) -> EndpointPort {
    EndpointPort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port,
        protocol: (!protocol.is_empty()).then(|| protocol.to_owned()),
        app_protocol: None,
    }
}

fn opt_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

pub(super) fn subset(
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
    ports: Vec<EndpointPort>,
) -> EndpointSubset {
    EndpointSubset { addresses: opt_vec(ready), not_ready_addresses: opt_vec(not_ready), ports: opt_vec(ports) }
}

/// An Endpoints object as upstream tests put it in the cache.
pub(super) fn endpoints(
    namespace: &str,
    rv: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    subsets: Option<Vec<EndpointSubset>>,
) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some("foo".into()),
            namespace: Some(namespace.into()),
            resource_version: (!rv.is_empty()).then(|| rv.to_owned()),
            labels: (!labels.is_empty()).then(|| map(labels)),
            annotations: (!annotations.is_empty()).then(|| map(annotations)),
            ..Default::default()
        },
        subsets,
    }
}

/// `managed-by: endpoint-controller` and the headless label, as most upstream expectations.
pub(super) fn managed_headless() -> Vec<(&'static str, &'static str)> {
    vec![(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY), (LABEL_HEADLESS, "")]
}

/// [`subsets::pod_to_endpoint_address`](super::subsets::pod_to_endpoint_address) of a k8s-openapi Pod.
pub(super) fn pod_to_endpoint_address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    super::subsets::pod_to_endpoint_address(service, &CachedPod::from(pod))
}

pub(super) fn run(service: &Service, pods: &[Pod], existing: Option<&Endpoints>) -> Plan {
    run_at(service, pods, existing, None)
}

pub(super) fn run_at(
    service: &Service,
    pods: &[Pod],
    existing: Option<&Endpoints>,
    trigger: Option<DateTime<Utc>>,
) -> Plan {
    let pods: Vec<CachedPod> = pods.iter().map(CachedPod::from).collect();
    let refs: Vec<&CachedPod> = pods.iter().collect();
    plan(&Input::new(service, &refs, existing).with_trigger_time(trigger), &Config::default())
}

pub(super) fn expect_update(p: &Plan) -> &Endpoints {
    match &p.action {
        Action::Update(e) => e,
        other => panic!("expected an update, got {other:?}"),
    }
}

pub(super) fn expect_create(p: &Plan) -> &Endpoints {
    match &p.action {
        Action::Create(e) => e,
        other => panic!("expected a create, got {other:?}"),
    }
}

/// Plays the apiserver: applies `plan` to the stored object. Creates require no stored object
/// and get resourceVersion 1; updates must carry the stored resourceVersion and bump it;
/// deletes remove. The written object goes through a JSON round trip, as it would over the wire.
pub(super) fn apply(stored: Option<Endpoints>, plan: &Plan) -> Option<Endpoints> {
    let round_trip = |e: &Endpoints| -> Endpoints { serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap() };
    match &plan.action {
        Action::Nothing => stored,
        Action::Create(e) => {
            assert!(stored.is_none(), "create over an existing object");
            assert!(e.metadata.resource_version.is_none(), "create with a resourceVersion");
            let mut e = round_trip(e);
            e.metadata.resource_version = Some("1".into());
            Some(e)
        }
        Action::Update(e) => {
            let stored = stored.expect("update of a missing object");
            assert_eq!(e.metadata.resource_version, stored.metadata.resource_version, "update must be conditional");
            let rv: u64 = stored.metadata.resource_version.as_deref().unwrap().parse().unwrap();
            let mut e = round_trip(e);
            e.metadata.resource_version = Some((rv + 1).to_string());
            Some(e)
        }
        Action::Delete { .. } => None,
    }
}

/// Sum of (ready, not ready) addresses of an object.
pub(super) fn counts(e: &Endpoints) -> (usize, usize) {
    super::repack::count_addresses(e.subsets.as_deref().unwrap_or_default())
}
