//! Ports of upstream `pkg/controller/endpointslicemirroring` unit tests: reconciler_test.go
//! (`TestReconcile`), endpointslicemirroring_controller_test.go (`TestSyncEndpoints`,
//! `TestShouldMirror`, `TestEndpointSlicesMirroredForService`), utils_test.go
//! (`TestNewEndpointSlice`, `TestAddressToEndpoint`) and reconciler_helpers_test.go
//! (`TestRecycleSlices`). `metrics/cache_test.go` is in `metrics.rs`, `TestPackSubsets`
//! (pkg/api/v1/endpoints) in `repack.rs`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, ObjectReference, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as DPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::super::reconcile::{endpoints_owner_reference, recycle};
use super::super::repack::repack_subsets;
use super::super::{
    ANNOTATION_LAST_APPLIED_CONFIGURATION, ANNOTATION_LAST_CHANGE_TRIGGER_TIME, ANNOTATION_LEADER_ELECTION, Config,
    EventType, Input, LABEL_SKIP_MIRROR, REASON_TOO_MANY_ADDRESSES_TO_MIRROR, address_to_endpoint,
    endpoints_should_mirror, is_mirrored_slice_of, new_endpoint_slice, plan,
};
use super::*;
use crate::podutil::IpFamily;

const DEFAULT_MAX: usize = 1000;

fn dport(name: &str, port: i32, protocol: &str) -> DPort {
    DPort { name: Some(name.into()), port: Some(port), protocol: Some(protocol.into()), app_protocol: None }
}

fn dep(addresses: &[&str], hostname: Option<&str>, node: Option<&str>, ready: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        hostname: hostname.map(str::to_owned),
        node_name: node.map(str::to_owned),
        conditions: ready.map(|r| EndpointConditions { ready: Some(r), ..Default::default() }),
        ..Default::default()
    }
}

fn eslice(name: &str, ports: Vec<DPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        address_type: "IPv4".into(),
        endpoints: (!endpoints.is_empty()).then_some(endpoints),
        ports: Some(ports),
    }
}

fn http80() -> Vec<k8s_openapi::api::core::v1::EndpointPort> {
    vec![port("http", 80, "TCP")]
}

fn two_ports(a: i32, b: i32) -> Vec<k8s_openapi::api::core::v1::EndpointPort> {
    vec![port("http", a, "TCP"), port("https", b, "UDP")]
}

/// The two subsets many cases share: 2 addresses on 80/443, 3 on 3000/3001.
fn two_subsets() -> Vec<EndpointSubset> {
    vec![
        subset(
            vec![addr_hn("10.0.0.1", "pod-1", "node-1"), addr_hn("10.0.0.2", "pod-2", "node-2")],
            vec![],
            two_ports(80, 443),
        ),
        subset(
            vec![
                addr_hn("10.0.1.1", "pod-11", "node-1"),
                addr_hn("10.0.1.2", "pod-12", "node-2"),
                addr_hn("10.0.1.3", "pod-13", "node-3"),
            ],
            vec![],
            two_ports(3000, 3001),
        ),
    ]
}

fn one_subset_pod1() -> Vec<EndpointSubset> {
    vec![subset(vec![EndpointAddress { hostname: Some("pod-1".into()), ..addr("10.0.0.1") }], vec![], http80())]
}

use k8s_openapi::api::core::v1::EndpointAddress;

/// Upstream `expectedMetrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Em {
    desired_slices: usize,
    actual_slices: usize,
    desired_endpoints: usize,
    added: usize,
    updated: usize,
    removed: usize,
    skipped: usize,
    created: usize,
    updated_slices: usize,
    deleted: usize,
}

fn metrics_of(p: &Plan) -> Em {
    Em {
        desired_slices: p.stats.desired_slices,
        actual_slices: p.stats.num_slices,
        desired_endpoints: p.stats.desired_endpoints,
        added: p.stats.endpoints_added,
        updated: p.stats.endpoints_updated,
        removed: p.stats.endpoints_removed,
        skipped: p.stats.addresses_skipped,
        created: p.create.len(),
        updated_slices: p.update.len(),
        deleted: p.delete.len(),
    }
}

/// Upstream `portsMatch`.
fn ports_match(ep_ports: Option<&[k8s_openapi::api::core::v1::EndpointPort]>, eps_ports: Option<&[DPort]>) -> bool {
    let (ep_ports, eps_ports) = (ep_ports.unwrap_or_default(), eps_ports.unwrap_or_default());
    if ep_ports.len() != eps_ports.len() {
        return false;
    }
    let mut to_match: BTreeMap<i32, &k8s_openapi::api::core::v1::EndpointPort> =
        ep_ports.iter().map(|p| (p.port, p)).collect();
    for eps in eps_ports {
        let Some(ep) = eps.port.and_then(|p| to_match.remove(&p)) else {
            return false;
        };
        if ep.name.as_deref().unwrap_or("") != eps.name.as_deref().unwrap_or("")
            // A missing protocol is the apiserver's default, TCP (DIFFERENCES 7).
            || ep.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP") != eps.protocol.as_deref().unwrap_or("")
            || ep.app_protocol != eps.app_protocol
        {
            return false;
        }
    }
    true
}

/// Upstream `expectMatchingAddresses`.
fn expect_matching_addresses(
    case: &str,
    subset: &EndpointSubset,
    es_endpoints: &[Endpoint],
    family: IpFamily,
    max: usize,
) {
    let mut expected: BTreeMap<String, (bool, EndpointAddress)> = BTreeMap::new();
    for (list, ready) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
        for a in list.iter().flatten() {
            if let Some((f, _)) = address_to_endpoint(a, true)
                && f == family
                && expected.len() < max
            {
                expected.insert(a.ip.clone(), (ready, a.clone()));
            }
        }
    }
    assert_eq!(expected.len(), es_endpoints.len(), "{case}: number of {family} endpoints");
    for ep in es_endpoints {
        assert_eq!(ep.addresses.len(), 1, "{case}");
        let (ready, want) = expected.get(&ep.addresses[0]).unwrap_or_else(|| panic!("{case}: unexpected {ep:?}"));
        assert_eq!(ep.conditions.as_ref().and_then(|c| c.ready), Some(*ready), "{case}: ready");
        assert_eq!(ep.hostname.as_deref().unwrap_or(""), want.hostname.as_deref().unwrap_or(""), "{case}: hostname");
        if want.node_name.is_some() {
            assert_eq!(ep.node_name, want.node_name, "{case}: nodeName");
        }
    }
}

/// Upstream `expectEndpointSlices`.
fn expect_endpoint_slices(case: &str, num: usize, max: usize, endpoints: &Endpoints, slices: &[EndpointSlice]) {
    assert_eq!(slices.len(), num, "{case}: number of slices: {slices:#?}");
    if num == 0 {
        return;
    }
    let name = endpoints.metadata.name.as_deref().unwrap();
    for s in slices {
        assert!(s.metadata.name.as_deref().unwrap().starts_with(name), "{case}: name {:?}", s.metadata.name);
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!(l.get(LABEL_SERVICE_NAME).map(String::as_str), Some(name), "{case}");
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        assert!(!ann.contains_key(ANNOTATION_LAST_APPLIED_CONFIGURATION), "{case}");
        assert!(!ann.contains_key(ANNOTATION_LAST_CHANGE_TRIGGER_TIME), "{case}");
        for (k, v) in endpoints.metadata.annotations.iter().flatten() {
            if k == ANNOTATION_LAST_APPLIED_CONFIGURATION || k == ANNOTATION_LAST_CHANGE_TRIGGER_TIME {
                continue;
            }
            assert_eq!(ann.get(k), Some(v), "{case}: annotation {k} mirrored");
        }
    }
    for ss in repack_subsets(endpoints.subsets.as_deref().unwrap_or_default()) {
        if ss.addresses.is_none() && ss.not_ready_addresses.is_none() {
            continue;
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for s in slices {
            if ports_match(ss.ports.as_deref(), s.ports.as_deref()) {
                match s.address_type.as_str() {
                    "IPv4" => v4.extend(s.endpoints.iter().flatten().cloned()),
                    "IPv6" => v6.extend(s.endpoints.iter().flatten().cloned()),
                    other => panic!("{case}: unexpected address type {other}"),
                }
            }
        }
        assert!(!(v4.is_empty() && v6.is_empty()), "{case}: no slice matches subset {:?}", ss.ports);
        expect_matching_addresses(case, &ss, &v4, IpFamily::IPv4, max);
        expect_matching_addresses(case, &ss, &v6, IpFamily::IPv6, max);
    }
}

fn ours_in(cluster: &Cluster) -> Vec<EndpointSlice> {
    cluster
        .list()
        .into_iter()
        .filter(|s| {
            s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
                == Some(CONTROLLER_NAME)
        })
        .collect()
}

#[derive(Default)]
struct ReconcileCase {
    name: &'static str,
    subsets: Vec<EndpointSubset>,
    ep_labels: Option<BTreeMap<String, String>>,
    ep_annotations: Option<BTreeMap<String, String>>,
    uid: &'static str,
    deletion_pending: bool,
    max: usize,
    existing: Vec<EndpointSlice>,
    expected_num_slices: usize,
    expected_actions: usize,
    expected_metrics: Option<Em>,
}

const UID: &str = "d8f2c1f6-5285-4b3c-b3c1-9b89f9e7ed7a";

fn owner(uid: &str) -> Vec<OwnerReference> {
    vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: "test-ep".into(),
        uid: uid.into(),
        ..Default::default()
    }]
}

fn existing_pod1(mut meta: ObjectMeta) -> EndpointSlice {
    meta.name = Some("test-ep-1".into());
    EndpointSlice {
        metadata: meta,
        address_type: "IPv4".into(),
        ports: Some(vec![dport("http", 80, "TCP")]),
        endpoints: Some(vec![dep(&["10.0.0.1"], Some("pod-1"), None, Some(true))]),
    }
}

fn last_applied() -> (&'static str, &'static str) {
    (ANNOTATION_LAST_APPLIED_CONFIGURATION, "{\"apiVersion\":\"v1\",\"kind\":\"Endpoints\",\"subsets\":[]}")
}

fn reconcile_cases() -> Vec<ReconcileCase> {
    let one_of_each =
        Em { desired_slices: 1, actual_slices: 1, desired_endpoints: 1, added: 1, created: 1, ..Em::default() };
    vec![
        ReconcileCase {
            name: "Endpoints with no subsets",
            expected_metrics: Some(Em::default()),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with no addresses",
            subsets: vec![subset(vec![], vec![], http80())],
            expected_metrics: Some(Em::default()),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, and address",
            subsets: vec![subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], http80())],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subset, different port and address",
            subsets: vec![
                subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], http80()),
                subset(vec![addr_hn("10.0.0.2", "pod-2", "node-1")], vec![], vec![port("https", 443, "TCP")]),
            ],
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 2,
                added: 2,
                created: 2,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subset, different port and same address",
            subsets: vec![
                subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], http80()),
                subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], vec![port("https", 443, "TCP")]),
            ],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subset, different address and same port",
            subsets: vec![
                subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], http80()),
                subset(vec![addr_hn("10.0.0.2", "pod-2", "node-1")], vec![], http80()),
            ],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(Em { desired_endpoints: 2, added: 2, ..one_of_each }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, and address, pending deletion",
            subsets: vec![subset(vec![addr_hn("10.0.0.1", "pod-1", "node-1")], vec![], http80())],
            deletion_pending: true,
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, and address and existing slice with same fields",
            subsets: one_subset_pod1(),
            uid: UID,
            existing: vec![existing_pod1(ObjectMeta {
                namespace: Some("test".into()),
                owner_references: Some(owner(UID)),
                ..Default::default()
            })],
            expected_num_slices: 1,
            expected_actions: 0,
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, and address and existing slice with same fields but different OwnerReferences",
            subsets: one_subset_pod1(),
            uid: UID,
            existing: vec![existing_pod1(ObjectMeta {
                namespace: Some("test".into()),
                owner_references: Some(owner("fb91e798-1875-4857-b5eb-e2c878157b4d")),
                ..Default::default()
            })],
            expected_num_slices: 1,
            expected_actions: 1,
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, and address and existing slice with an additional annotation",
            subsets: one_subset_pod1(),
            existing: vec![existing_pod1(ObjectMeta {
                annotations: Some(labels(&[("foo", "bar")])),
                ..Default::default()
            })],
            expected_num_slices: 1,
            expected_actions: 1,
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, port, label and address and existing slice with same fields but the label",
            subsets: one_subset_pod1(),
            ep_labels: Some(labels(&[("foo", "bar")])),
            existing: vec![existing_pod1(ObjectMeta {
                annotations: Some(labels(&[("foo", "bar")])),
                ..Default::default()
            })],
            expected_num_slices: 1,
            expected_actions: 1,
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, 2 ports, and 2 addresses",
            subsets: vec![subset(
                vec![addr_hn("10.0.0.1", "pod-1", "node-1"), addr_hn("10.0.0.2", "pod-2", "node-2")],
                vec![],
                two_ports(80, 443),
            )],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(Em { desired_endpoints: 2, added: 2, ..one_of_each }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, 2 ports, and 2 not ready addresses",
            subsets: vec![subset(
                vec![],
                vec![addr_hn("10.0.0.1", "pod-1", "node-1"), addr_hn("10.0.0.2", "pod-2", "node-2")],
                two_ports(80, 443),
            )],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(Em { desired_endpoints: 2, added: 2, ..one_of_each }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 1 subset, 2 ports, and 2 ready and 2 not ready addresses",
            subsets: vec![subset(
                vec![addr_hn("10.1.1.1", "pod-11", "node-1"), addr_hn("10.1.1.2", "pod-12", "node-2")],
                vec![addr_hn("10.0.0.1", "pod-1", "node-1"), addr_hn("10.0.0.2", "pod-2", "node-2")],
                two_ports(80, 443),
            )],
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(Em { desired_endpoints: 4, added: 4, ..one_of_each }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports and addresses",
            subsets: two_subsets(),
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 5,
                added: 5,
                created: 2,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports and addresses, existing empty EndpointSlice",
            subsets: two_subsets(),
            existing: vec![eslice("test-ep-1", vec![dport("http", 80, "TCP"), dport("https", 443, "UDP")], vec![])],
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 5,
                added: 5,
                created: 1,
                updated_slices: 1,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports and addresses, existing EndpointSlice with some addresses",
            subsets: two_subsets(),
            existing: vec![eslice(
                "test-ep-1",
                vec![dport("http", 80, "TCP"), dport("https", 443, "UDP")],
                vec![
                    dep(&["10.0.0.2"], Some("pod-2"), None, None),
                    dep(&["10.0.0.1", "10.0.0.3"], Some("pod-1"), None, None),
                ],
            )],
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 5,
                added: 4,
                updated: 1,
                removed: 1,
                created: 1,
                updated_slices: 1,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports and addresses, existing EndpointSlice identical to subset",
            subsets: two_subsets(),
            existing: vec![eslice(
                "test-ep-1",
                vec![dport("http", 80, "TCP"), dport("https", 443, "UDP")],
                vec![
                    dep(&["10.0.0.1"], Some("pod-1"), Some("node-1"), Some(true)),
                    dep(&["10.0.0.2"], Some("pod-2"), Some("node-2"), Some(true)),
                ],
            )],
            expected_num_slices: 2,
            expected_actions: 1,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 5,
                added: 3,
                created: 1,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports, and dual stack addresses",
            subsets: vec![
                subset(
                    vec![
                        addr_hn("2001:db8:2222:3333:4444:5555:6666:7777", "pod-1", "node-1"),
                        addr_hn("10.0.0.2", "pod-2", "node-2"),
                    ],
                    vec![],
                    two_ports(80, 443),
                ),
                subset(
                    vec![
                        addr_hn("10.0.1.1", "pod-11", "node-1"),
                        addr_hn("10.0.1.2", "pod-12", "node-2"),
                        addr_hn("2001:db8:3333:4444:5555:6666:7777:8888", "pod-13", "node-3"),
                    ],
                    vec![],
                    two_ports(3000, 3001),
                ),
            ],
            expected_num_slices: 4,
            expected_actions: 4,
            expected_metrics: Some(Em {
                desired_slices: 4,
                actual_slices: 4,
                desired_endpoints: 5,
                added: 5,
                created: 4,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports, ipv6 only addresses",
            subsets: vec![
                subset(
                    vec![
                        addr_hn("2001:db8:1111:3333:4444:5555:6666:7777", "pod-1", "node-1"),
                        addr_hn("2001:db8:2222:3333:4444:5555:6666:7777", "pod-2", "node-2"),
                    ],
                    vec![],
                    two_ports(80, 443),
                ),
                subset(
                    vec![
                        addr_hn("2001:db8:3333:3333:4444:5555:6666:7777", "pod-11", "node-1"),
                        addr_hn("2001:db8:4444:3333:4444:5555:6666:7777", "pod-12", "node-2"),
                        addr_hn("2001:db8:5555:3333:4444:5555:6666:7777", "pod-13", "node-3"),
                    ],
                    vec![],
                    two_ports(3000, 3001),
                ),
            ],
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 5,
                added: 5,
                created: 2,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports, some invalid addresses",
            subsets: vec![
                subset(
                    vec![
                        addr_hn("2001:db8:1111:3333:4444:5555:6666:7777", "pod-1", "node-1"),
                        addr_hn("this-is-not-an-ip", "pod-2", "node-2"),
                    ],
                    vec![],
                    two_ports(80, 443),
                ),
                subset(
                    vec![
                        addr_hn("this-is-also-not-an-ip", "pod-11", "node-1"),
                        addr_hn("2001:db8:4444:3333:4444:5555:6666:7777", "pod-12", "node-2"),
                        addr_hn("2001:db8:5555:3333:4444:5555:6666:7777", "pod-13", "node-3"),
                    ],
                    vec![],
                    two_ports(3000, 3001),
                ),
            ],
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 3,
                added: 3,
                skipped: 2,
                created: 2,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, multiple ports, all invalid addresses",
            subsets: vec![
                subset(
                    vec![
                        addr_hn("this-is-not-an-ip1", "pod-1", "node-1"),
                        addr_hn("this-is-not-an-ip12", "pod-2", "node-2"),
                    ],
                    vec![],
                    two_ports(80, 443),
                ),
                subset(
                    vec![
                        addr_hn("this-is-not-an-ip11", "pod-11", "node-1"),
                        addr_hn("this-is-not-an-ip12", "pod-12", "node-2"),
                        addr_hn("this-is-not-an-ip3", "pod-13", "node-3"),
                    ],
                    vec![],
                    two_ports(3000, 3001),
                ),
            ],
            expected_metrics: Some(Em { skipped: 5, ..Em::default() }),
            ..Default::default()
        },
        ReconcileCase {
            name: "Endpoints with 2 subsets, 1 exceeding maxEndpointsPerSubset",
            subsets: two_subsets(),
            max: 2,
            expected_num_slices: 2,
            expected_actions: 2,
            expected_metrics: Some(Em {
                desired_slices: 2,
                actual_slices: 2,
                desired_endpoints: 4,
                added: 4,
                skipped: 1,
                created: 2,
                ..Em::default()
            }),
            ..Default::default()
        },
        ReconcileCase {
            name: "The last-applied-configuration annotation should not get mirrored to created or updated endpoint slices",
            ep_annotations: Some(labels(&[last_applied()])),
            subsets: one_subset_pod1(),
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "The last-applied-configuration annotation shouldn't get added to created endpoint slices",
            subsets: one_subset_pod1(),
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "The last-applied-configuration shouldn't get mirrored to endpoint slices when it's value is empty",
            ep_annotations: Some(labels(&[(ANNOTATION_LAST_APPLIED_CONFIGURATION, "")])),
            subsets: one_subset_pod1(),
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "Annotations other than last-applied-configuration should get correctly mirrored",
            ep_annotations: Some(labels(&[last_applied(), ("foo", "bar")])),
            subsets: one_subset_pod1(),
            expected_num_slices: 1,
            expected_actions: 1,
            expected_metrics: Some(one_of_each),
            ..Default::default()
        },
        ReconcileCase {
            name: "Annotation mirroring should remove the last-applied-configuration annotation from existing endpoint slices",
            subsets: one_subset_pod1(),
            existing: vec![existing_pod1(ObjectMeta {
                annotations: Some(labels(&[last_applied()])),
                ..Default::default()
            })],
            expected_num_slices: 1,
            expected_actions: 1,
            ..Default::default()
        },
    ]
}

// Port of reconciler_test.go TestReconcile (28 cases).
#[test]
fn test_reconcile() {
    let cases = reconcile_cases();
    assert_eq!(cases.len(), 28);
    for tc in cases {
        let namespace = "test";
        let mut ep = endpoints(namespace, "test-ep", tc.subsets.clone());
        ep.metadata.labels = tc.ep_labels.clone();
        ep.metadata.annotations = tc.ep_annotations.clone();
        ep.metadata.uid = Some(tc.uid.to_owned());
        if tc.deletion_pending {
            ep.metadata.deletion_timestamp =
                Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap()));
        }
        // As upstream: existing slices get exactly the two labels, and live in the namespace.
        let existing: Vec<EndpointSlice> = tc
            .existing
            .iter()
            .cloned()
            .map(|mut s| {
                s.metadata.labels = Some(our_labels("test-ep"));
                s.metadata.namespace = Some(namespace.into());
                s
            })
            .collect();
        let max = if tc.max == 0 { DEFAULT_MAX } else { tc.max };
        let config = Config { max_endpoints_per_subset: max, ..Config::default() };
        let mut cluster = Cluster::new(existing);
        let p = plan_for(&ep, &cluster.list(), &config);
        assert_eq!(p.num_writes(), tc.expected_actions, "{}: actions {p:#?}", tc.name);
        if let Some(em) = tc.expected_metrics {
            assert_eq!(metrics_of(&p), em, "{}: metrics", tc.name);
        }
        cluster.apply(&p).unwrap_or_else(|e| panic!("{}: {e}", tc.name));
        expect_endpoint_slices(tc.name, tc.expected_num_slices, max, &ep, &ours_in(&cluster));
        // And the result is stable.
        let again = plan_for(&ep, &cluster.list(), &config);
        if !tc.deletion_pending {
            assert!(again.is_noop(), "{}: second plan {again:#?}", tc.name);
        }
    }
}

#[test]
fn reconcile_events_match_upstream_messages() {
    // "some invalid addresses": 2 invalid IPs, nothing over the limit.
    let cases = reconcile_cases();
    let invalid = cases.iter().find(|c| c.name.contains("some invalid")).unwrap();
    let p = plan_for(&endpoints("test", "test-ep", invalid.subsets.clone()), &[], &Config::default());
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].event_type, EventType::Warning);
    assert_eq!(p.events[0].reason, "InvalidIPAddress");
    assert_eq!(p.events[0].message, "Skipped 2 invalid IP addresses when mirroring to EndpointSlices");

    // "1 exceeding maxEndpointsPerSubset": 1 over the limit of 2.
    let over = cases.iter().find(|c| c.name.contains("exceeding")).unwrap();
    let config = Config { max_endpoints_per_subset: 2, ..Config::default() };
    let p = plan_for(&endpoints("test", "test-ep", over.subsets.clone()), &[], &config);
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, REASON_TOO_MANY_ADDRESSES_TO_MIRROR);
    assert_eq!(
        p.events[0].message,
        "A max of 2 addresses can be mirrored to EndpointSlices per Endpoints subset. 1 addresses were skipped"
    );

    // Valid input: no events.
    let p = plan_for(&endpoints("test", "test-ep", two_subsets()), &[], &Config::default());
    assert!(p.events.is_empty() && p.warnings.is_empty());
}

/// Upstream `generateAddresses`.
fn generate_addresses(n: usize) -> Vec<EndpointAddress> {
    (0..n).map(|i| addr(&format!("10.0.{}.{}", i / 255, i % 255))).collect()
}

// Port of endpointslicemirroring_controller_test.go TestSyncEndpoints (9 cases). Upstream
// counts client actions, the warning Event included; here writes plus events.
#[test]
fn test_sync_endpoints() {
    let name = "testing-sync-endpoints";
    let ns = "default";
    struct Case {
        name: &'static str,
        service: Option<Service>,
        ep_labels: Option<BTreeMap<String, String>>,
        subsets: Vec<EndpointSubset>,
        slices: Vec<EndpointSlice>,
        actions: usize,
        num_slices: usize,
    }
    let blank = || Some(Service::default());
    let port80 = || vec![port("", 80, "")];
    let cases = vec![
        Case {
            name: "Endpoints with no addresses",
            service: blank(),
            ep_labels: None,
            subsets: vec![subset(vec![], vec![], port80())],
            slices: vec![],
            actions: 0,
            num_slices: 0,
        },
        Case {
            name: "Endpoints with skip label true",
            service: blank(),
            ep_labels: Some(labels(&[(LABEL_SKIP_MIRROR, "true")])),
            subsets: vec![subset(vec![addr("10.0.0.1")], vec![], port80())],
            slices: vec![],
            actions: 0,
            num_slices: 0,
        },
        Case {
            name: "Endpoints with skip label false",
            service: blank(),
            ep_labels: Some(labels(&[(LABEL_SKIP_MIRROR, "false")])),
            subsets: vec![subset(vec![addr("10.0.0.1")], vec![], port80())],
            slices: vec![],
            actions: 1,
            num_slices: 1,
        },
        Case {
            name: "Endpoints with missing Service",
            service: None,
            ep_labels: None,
            subsets: vec![subset(vec![addr("10.0.0.1")], vec![], port80())],
            slices: vec![],
            actions: 0,
            num_slices: 0,
        },
        Case {
            name: "Endpoints with Service with selector specified",
            service: Some(Service {
                spec: Some(ServiceSpec { selector: Some(labels(&[("foo", "bar")])), ..Default::default() }),
                ..Default::default()
            }),
            ep_labels: None,
            subsets: vec![subset(vec![addr("10.0.0.1")], vec![], port80())],
            slices: vec![],
            actions: 0,
            num_slices: 0,
        },
        Case {
            name: "Existing EndpointSlices that need to be cleaned up",
            service: blank(),
            ep_labels: None,
            subsets: vec![subset(vec![], vec![], port80())],
            slices: vec![EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-1")),
                    labels: Some(our_labels(name)),
                    ..Default::default()
                },
                ..Default::default()
            }],
            actions: 1,
            num_slices: 0,
        },
        Case {
            name: "Existing EndpointSlices managed by a different controller, no addresses to sync",
            service: blank(),
            ep_labels: None,
            subsets: vec![subset(vec![], vec![], port80())],
            slices: vec![EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-1")),
                    labels: Some(labels(&[(LABEL_MANAGED_BY, "something-else")])),
                    ..Default::default()
                },
                ..Default::default()
            }],
            actions: 0,
            num_slices: 0,
        },
        Case {
            name: "Endpoints with 1000 addresses",
            service: blank(),
            ep_labels: None,
            subsets: vec![subset(generate_addresses(1000), vec![], port80())],
            slices: vec![],
            actions: 1,
            num_slices: 1,
        },
        Case {
            name: "Endpoints with 1001 addresses - 1 should not be mirrored",
            service: blank(),
            ep_labels: None,
            subsets: vec![subset(generate_addresses(1001), vec![], port80())],
            slices: vec![],
            actions: 2, // the create and the warning Event
            num_slices: 1,
        },
    ];
    assert_eq!(cases.len(), 9);
    for tc in cases {
        let mut ep = endpoints(ns, name, tc.subsets);
        ep.metadata.labels = tc.ep_labels;
        let svc = tc.service.map(|mut s| {
            s.metadata.name = Some(name.into());
            s.metadata.namespace = Some(ns.into());
            s
        });
        let slices: Vec<EndpointSlice> = tc
            .slices
            .into_iter()
            .map(|mut s| {
                s.metadata.namespace = Some(ns.into());
                s
            })
            .collect();
        let mut cluster = Cluster::new(slices);
        let existing = cluster.list();
        let refs: Vec<&EndpointSlice> = existing.iter().collect();
        let p = plan(&Input { endpoints: &ep, service: svc.as_ref(), existing_slices: &refs }, &Config::default());
        assert_eq!(p.num_writes() + p.events.len(), tc.actions, "{}: {p:#?}", tc.name);
        cluster.apply(&p).unwrap();
        expect_endpoint_slices(tc.name, tc.num_slices, DEFAULT_MAX, &ep, &ours_in(&cluster));
    }
}

// Port of endpointslicemirroring_controller_test.go TestShouldMirror (4 cases).
#[test]
fn test_should_mirror() {
    let ep = |labels: Option<BTreeMap<String, String>>, annotations: Option<BTreeMap<String, String>>| Endpoints {
        metadata: ObjectMeta { name: Some("test-endpoints".into()), labels, annotations, ..Default::default() },
        subsets: None,
    };
    let cases = [
        ("Standard Endpoints", ep(None, None), true),
        ("Endpoints with skip-mirror=true", ep(Some(labels(&[(LABEL_SKIP_MIRROR, "true")])), None), false),
        ("Endpoints with skip-mirror=invalid", ep(Some(labels(&[(LABEL_SKIP_MIRROR, "invalid")])), None), true),
        (
            "Endpoints with leader election annotation",
            ep(None, Some(labels(&[(ANNOTATION_LEADER_ELECTION, "")]))),
            false,
        ),
    ];
    for (name, endpoints, want) in cases {
        assert_eq!(endpoints_should_mirror(&endpoints), want, "{name}");
    }
}

// Port of endpointslicemirroring_controller_test.go TestEndpointSlicesMirroredForService (6 cases).
#[test]
fn test_endpoint_slices_mirrored_for_service() {
    let slice = |ns: &str, pairs: &[(&str, &str)]| EndpointSlice {
        metadata: ObjectMeta {
            name: Some("example-1".into()),
            namespace: Some(ns.into()),
            labels: Some(labels(pairs)),
            ..Default::default()
        },
        ..Default::default()
    };
    let other_controller = format!("{CONTROLLER_NAME}foo");
    let cases = [
        (
            "Service with matching EndpointSlice",
            slice("ns1", &[(LABEL_SERVICE_NAME, "svc1"), (LABEL_MANAGED_BY, CONTROLLER_NAME)]),
            true,
        ),
        (
            "Service with EndpointSlice that has different namespace",
            slice("ns2", &[(LABEL_SERVICE_NAME, "svc1"), (LABEL_MANAGED_BY, CONTROLLER_NAME)]),
            false,
        ),
        (
            "Service with EndpointSlice that has different service name",
            slice("ns1", &[(LABEL_SERVICE_NAME, "svc2"), (LABEL_MANAGED_BY, CONTROLLER_NAME)]),
            false,
        ),
        (
            "Service with EndpointSlice that has different controller name",
            slice("ns1", &[(LABEL_SERVICE_NAME, "svc1"), (LABEL_MANAGED_BY, other_controller.as_str())]),
            false,
        ),
        (
            "Service with EndpointSlice that has missing controller name",
            slice("ns1", &[(LABEL_SERVICE_NAME, "svc1")]),
            false,
        ),
        (
            "Service with EndpointSlice that has missing service name",
            slice("ns1", &[(LABEL_MANAGED_BY, CONTROLLER_NAME)]),
            false,
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(is_mirrored_slice_of(&s, "ns1", "svc1", CONTROLLER_NAME), want, "{name}");
        // The planner's own filter agrees: only matching slices are ever deleted.
        let p = super::super::plan_delete_all("ns1", "svc1", &[&s], &Config::default());
        assert_eq!(p.delete.len(), usize::from(want), "{name}: delete-all");
    }
}

// Port of utils_test.go TestNewEndpointSlice (5 cases).
#[test]
fn test_new_endpoint_slice() {
    let ports = vec![DPort { name: Some("foo".into()), protocol: Some("TCP".into()), port: None, app_protocol: None }];
    let base = endpoints("test", "foo", vec![subset(vec![], vec![], vec![port("", 80, "")])]);
    let owner = endpoints_owner_reference(&base);
    assert_eq!(
        owner,
        OwnerReference {
            api_version: "v1".into(),
            kind: "Endpoints".into(),
            name: "foo".into(),
            uid: "uid-foo".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    );
    type Tweak = fn(&mut Endpoints);
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: Vec<(&str, Tweak, Pairs, Pairs)> = vec![
        ("create slice from endpoints", |_| {}, &[], &[]),
        (
            "create slice from endpoints with annotations",
            |ep| ep.metadata.annotations = Some(labels(&[("foo", "bar")])),
            &[],
            &[("foo", "bar")],
        ),
        (
            "create slice from endpoints with labels",
            |ep| ep.metadata.labels = Some(labels(&[("foo", "bar")])),
            &[("foo", "bar")],
            &[],
        ),
        (
            "create slice from endpoints with labels and annotations",
            |ep| {
                ep.metadata.labels = Some(labels(&[("foo", "bar")]));
                ep.metadata.annotations = Some(labels(&[("foo2", "bar2")]));
            },
            &[("foo", "bar")],
            &[("foo2", "bar2")],
        ),
        (
            "create slice from endpoints with labels and annotations triggertime",
            |ep| {
                ep.metadata.labels = Some(labels(&[("foo", "bar")]));
                ep.metadata.annotations =
                    Some(labels(&[("foo2", "bar2"), (ANNOTATION_LAST_CHANGE_TRIGGER_TIME, "date")]));
            },
            &[("foo", "bar")],
            &[("foo2", "bar2")],
        ),
    ];
    for (name, tweak, extra_labels, want_annotations) in cases {
        let mut ep = base.clone();
        tweak(&mut ep);
        let before = ep.clone();
        let got = new_endpoint_slice(&ep, &ports, "IPv4", CONTROLLER_NAME);
        let mut want_labels = our_labels("foo");
        want_labels.extend(labels(extra_labels));
        let want = EndpointSlice {
            metadata: ObjectMeta {
                labels: Some(want_labels),
                annotations: (!want_annotations.is_empty()).then(|| labels(want_annotations)),
                namespace: Some("test".into()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            ports: Some(ports.clone()),
            address_type: "IPv4".into(),
            endpoints: Some(vec![]),
        };
        assert_eq!(got, want, "{name}");
        assert_eq!(ep, before, "{name}: the Endpoints is not modified");
    }

    // Upstream sets generateName "<name>-"; the planner names new slices "<name>-<suffix>".
    let ep = endpoints("test", "foo", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("", 80, "TCP")])]);
    let p = plan_for(&ep, &[], &Config::default());
    assert_eq!(p.create.len(), 1);
    let created = p.create[0].metadata.name.as_deref().unwrap();
    assert!(created.starts_with("foo-") && created.len() > 4, "{created}");
    assert_eq!(p.create[0].metadata.generate_name, None);
}

// Port of utils_test.go TestAddressToEndpoint.
#[test]
fn test_address_to_endpoint() {
    let target = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some("foo".into()),
        ..Default::default()
    };
    let address = EndpointAddress {
        ip: "10.1.2.3".into(),
        hostname: Some("foo".into()),
        node_name: Some("node-abc".into()),
        target_ref: Some(target.clone()),
    };
    let want = Endpoint {
        addresses: vec!["10.1.2.3".into()],
        hostname: Some("foo".into()),
        conditions: Some(EndpointConditions { ready: Some(true), serving: None, terminating: None }),
        target_ref: Some(target),
        node_name: Some("node-abc".into()),
        ..Default::default()
    };
    assert_eq!(address_to_endpoint(&address, true), Some((IpFamily::IPv4, want)));
}

fn simple(name: &str, ip: &str, address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        address_type: address_type.into(),
        endpoints: Some(vec![Endpoint { addresses: vec![ip.into()], ..Default::default() }]),
        ports: None,
    }
}

// Port of reconciler_helpers_test.go TestRecycleSlices (7 cases).
#[test]
fn test_recycle_slices() {
    type Set = (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>);
    let v4 = |n: &str, ip: &str| simple(n, ip, "IPv4");
    let v6 = |n: &str, ip: &str| simple(n, ip, "IPv6");
    let cases: Vec<(&str, Set, Set)> = vec![
        ("Empty slices", (vec![], vec![], vec![]), (vec![], vec![], vec![])),
        (
            "1 to create and 1 to delete",
            (vec![v4("foo", "10.1.2.3")], vec![], vec![v4("bar", "10.2.3.4")]),
            (vec![], vec![v4("bar", "10.1.2.3")], vec![]),
        ),
        (
            "1 to create, update, and delete",
            (vec![v4("foo", "10.1.2.3")], vec![v4("baz", "10.2.3.4")], vec![v4("bar", "10.3.4.5")]),
            (vec![], vec![v4("bar", "10.1.2.3"), v4("baz", "10.2.3.4")], vec![]),
        ),
        (
            "2 to create and 1 to delete",
            (vec![v4("foo1", "10.1.2.3"), v4("foo2", "10.3.4.5")], vec![], vec![v4("bar", "10.2.3.4")]),
            (vec![v4("foo2", "10.3.4.5")], vec![v4("bar", "10.1.2.3")], vec![]),
        ),
        (
            "1 to create and 2 to delete",
            (vec![v4("foo1", "10.1.2.3")], vec![], vec![v4("bar1", "10.2.3.4"), v4("bar2", "10.3.4.5")]),
            (vec![], vec![v4("bar1", "10.1.2.3")], vec![v4("bar2", "10.3.4.5")]),
        ),
        (
            "1 to create and 1 to delete for each IP family",
            (
                vec![v4("foo-v4", "10.1.2.3"), v6("foo-v6", "2001:db8:1111:3333:4444:5555:6666:7777")],
                vec![],
                vec![v4("bar-v4", "10.2.2.3"), v6("bar-v6", "2001:db8:2222:3333:4444:5555:6666:7777")],
            ),
            (vec![], vec![v4("bar-v4", "10.1.2.3"), v6("bar-v6", "2001:db8:1111:3333:4444:5555:6666:7777")], vec![]),
        ),
        (
            "1 to create and 1 to delete, wrong IP family",
            (vec![v4("foo-v4", "10.1.2.3")], vec![], vec![v6("bar-v6", "2001:db8:2222:3333:4444:5555:6666:7777")]),
            (vec![v4("foo-v4", "10.1.2.3")], vec![], vec![v6("bar-v6", "2001:db8:2222:3333:4444:5555:6666:7777")]),
        ),
    ];
    assert_eq!(cases.len(), 7);
    // Upstream `expectEqualSlices`: name, address type and addresses, in name order.
    let summary = |mut v: Vec<EndpointSlice>| {
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v.into_iter()
            .map(|s| {
                let ips: Vec<String> = s.endpoints.iter().flatten().flat_map(|e| e.addresses.clone()).collect();
                (s.metadata.name.unwrap_or_default(), s.address_type, ips)
            })
            .collect::<Vec<_>>()
    };
    for (name, (c, u, d), (wc, wu, wd)) in cases {
        let (c, u, d) = recycle(c, u, d);
        assert_eq!(summary(c), summary(wc), "{name}: create");
        assert_eq!(summary(u), summary(wu), "{name}: update");
        assert_eq!(summary(d), summary(wd), "{name}: delete");
    }
}
