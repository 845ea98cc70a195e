//! Ports of `k8s.io/endpointslice` v0.37.1 `reconciler_test.go`.
//!
//! Upstream counts fake-clientset actions and reads Prometheus metrics; here the same numbers
//! come from the [`Plan`] (`create` / `update` / `delete` lengths, [`AddressTypeStats`]) and the
//! fake [`Cluster`]. Upstream's metric counters accumulate over a test; expectations below are
//! per plan, with the upstream totals noted where they differ.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, ObjectReference, PodIP};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::endpointslice::hints::{topology_metric_label, traffic_distribution_metric_label};
use crate::endpointslice::labels::{ANNOTATION_LAST_CHANGE_TRIGGER_TIME, LABEL_HEADLESS, format_rfc3339_nano};
use crate::endpointslice::reconcile::{finalize, new_endpoint_slice};
use crate::endpointslice::topology::DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS;
use crate::endpointslice::{AddressTypeStats, Plan};
use crate::podutil::IpFamily;

const NS: &str = "test";

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| node(n)).collect()
}

/// Upstream `expectedMetrics`, per plan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Metrics {
    desired_slices: usize,
    actual_slices: usize,
    desired_endpoints: usize,
    added: usize,
    removed: usize,
    created: usize,
    updated: usize,
    deleted: usize,
}

fn metrics_of(p: &Plan) -> Metrics {
    let sum = |f: fn(&AddressTypeStats) -> usize| p.stats.iter().map(f).sum::<usize>();
    Metrics {
        desired_slices: sum(|s| s.desired_slices),
        actual_slices: sum(|s| s.actual_slices),
        desired_endpoints: sum(|s| s.desired_endpoints),
        added: sum(|s| s.endpoints_added),
        removed: sum(|s| s.endpoints_removed),
        created: p.create.len(),
        updated: p.update.len(),
        deleted: p.delete.len(),
    }
}

#[allow(clippy::too_many_arguments)]
fn m(
    desired_slices: usize,
    actual_slices: usize,
    desired_endpoints: usize,
    added: usize,
    removed: usize,
    created: usize,
    updated: usize,
    deleted: usize,
) -> Metrics {
    Metrics { desired_slices, actual_slices, desired_endpoints, added, removed, created, updated, deleted }
}

fn pods(count: usize) -> Vec<Pod> {
    (0..count).map(|i| new_pod(i, NS, i % 3 != 0, 1, false)).collect()
}

fn ipv4_endpoint(pod: &Pod, svc: &Service) -> Endpoint {
    pod_to_endpoint(pod, Some(&Node::default()), svc, IpFamily::IPv4)
}

// TestReconcileEmpty: even without pods there is a placeholder slice.
#[test]
fn test_reconcile_empty() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &[], &nodes(&["node-1"]), &config(100), Some(trigger(1_700_000_000, 0)));
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 0));
    let slices = cluster.list();
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert!(s.metadata.name.as_deref().unwrap().starts_with("foo"));
    assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME], "foo");
    assert_eq!(p.create[0].ports, Some(vec![]));
    assert_eq!(p.create[0].endpoints, Some(vec![]));
    assert_eq!(metrics_of(&p), m(1, 1, 0, 0, 0, 1, 0, 0));
}

// TestReconcile1Pod: one pod, several Service flavours.
#[test]
fn test_reconcile_1_pod() {
    let ns = NS;
    let (base, _) = new_service_and_endpoint_meta("foo", ns);
    let with = |f: &dyn Fn(&mut Service)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let no_family = with(&|s| {
        let sp = s.spec.as_mut().unwrap();
        sp.cluster_ip = Some("10.0.0.10".into());
        sp.ip_families = None;
    });
    let v4 = base.clone();
    let v4_cluster_ip = with(&|s| s.spec.as_mut().unwrap().cluster_ip = Some("1.1.1.1".into()));
    let v4_labels = with(&|s| s.metadata.labels = Some(labels(&[("foo", "bar")])));
    let v4_bad_labels = with(&|s| {
        s.metadata.labels =
            Some(labels(&[(LABEL_SERVICE_NAME, "bad"), (LABEL_MANAGED_BY, "actor"), (LABEL_HEADLESS, "invalid")]))
    });
    let v6 = with(&|s| s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]));
    let v6_cluster_ip = with(&|s| {
        let sp = s.spec.as_mut().unwrap();
        sp.cluster_ip = Some("1234::5678:0000:0000:9abc:def1".into());
        sp.ip_families = Some(vec!["IPv6".into()]);
    });
    let dual = with(&|s| {
        let sp = s.spec.as_mut().unwrap();
        sp.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        sp.cluster_ip = Some("10.0.0.10".into());
        sp.cluster_ips = Some(vec!["10.0.0.10".into(), "2000::1".into()]);
    });

    let mut pod1 = new_pod(1, ns, true, 1, false);
    pod1.status.as_mut().unwrap().pod_ips =
        Some(vec![PodIP { ip: "1.2.3.4".into() }, PodIP { ip: "1234::5678:0000:0000:9abc:def0".into() }]);
    pod1.spec.as_mut().unwrap().hostname = Some("example-hostname".into());
    let mut node1 = node("node-1");
    node1.metadata.labels = Some(labels(&[
        ("topology.kubernetes.io/zone", "us-central1-a"),
        ("topology.kubernetes.io/region", "us-central1"),
    ]));

    let expected_endpoint = |address: &str| Endpoint {
        addresses: vec![address.to_owned()],
        conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
        zone: Some("us-central1-a".into()),
        node_name: Some("node-1".into()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.into()),
            name: Some("pod1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v4_ep = expected_endpoint("1.2.3.4");
    let v6_ep = expected_endpoint("1234::5678:0:0:9abc:def0");
    let plain = labels(&[(LABEL_MANAGED_BY, CONTROLLER_NAME), (LABEL_SERVICE_NAME, "foo")]);
    let headless = labels(&[(LABEL_MANAGED_BY, CONTROLLER_NAME), (LABEL_SERVICE_NAME, "foo"), (LABEL_HEADLESS, "")]);
    let headless_foo = labels(&[
        (LABEL_MANAGED_BY, CONTROLLER_NAME),
        (LABEL_SERVICE_NAME, "foo"),
        ("foo", "bar"),
        (LABEL_HEADLESS, ""),
    ]);

    let cases: Vec<(&str, Service, Vec<(&str, Endpoint)>, BTreeMap<String, String>)> = vec![
        ("no-family-service", no_family, vec![("IPv4", v4_ep.clone())], plain.clone()),
        ("ipv4", v4, vec![("IPv4", v4_ep.clone())], headless.clone()),
        ("ipv4-clusterip", v4_cluster_ip, vec![("IPv4", v4_ep.clone())], plain.clone()),
        ("ipv4-labels", v4_labels, vec![("IPv4", v4_ep.clone())], headless_foo),
        ("ipv4-bad-labels", v4_bad_labels, vec![("IPv4", v4_ep.clone())], headless.clone()),
        ("ipv6", v6, vec![("IPv6", v6_ep.clone())], headless),
        ("ipv6-clusterip", v6_cluster_ip, vec![("IPv6", v6_ep.clone())], plain.clone()),
        ("dualstack-service", dual, vec![("IPv4", v4_ep), ("IPv6", v6_ep)], plain),
    ];

    let trigger_time = trigger(1_700_000_000, 123_456_000);
    for (name, svc, expected, expected_labels) in cases {
        let mut cluster = Cluster::default();
        let p = cluster.reconcile(
            &svc,
            std::slice::from_ref(&pod1),
            &vec![node1.clone()],
            &config(100),
            Some(trigger_time),
        );
        assert_eq!(p.num_writes(), expected.len(), "{name}: actions");
        assert_eq!(p.create.len(), expected.len(), "{name}: creates");
        let slices = cluster.list();
        assert_eq!(slices.len(), expected.len(), "{name}: slices");
        for slice in &slices {
            assert!(slice.metadata.name.as_deref().unwrap().starts_with("foo"), "{name}");
            assert_eq!(slice.metadata.labels.as_ref(), Some(&expected_labels), "{name}: labels");
            assert_eq!(
                slice.metadata.annotations.as_ref().unwrap()[ANNOTATION_LAST_CHANGE_TRIGGER_TIME],
                "2023-11-14T22:13:20.123456Z",
                "{name}: trigger time"
            );
            let want = expected
                .iter()
                .find(|(at, _)| *at == slice.address_type)
                .unwrap_or_else(|| panic!("{name}: unexpected address type {}", slice.address_type));
            assert_eq!(slice.endpoints.as_deref(), Some(std::slice::from_ref(&want.1)), "{name}: endpoint");
        }
        for stats in &p.stats {
            assert_eq!(
                (stats.desired_slices, stats.actual_slices, stats.desired_endpoints, stats.endpoints_added),
                (1, 1, 1, 1),
                "{name}: {}",
                stats.address_type
            );
        }
    }
}

// TestReconcile1EndpointSlice: an existing placeholder is not rewritten.
#[test]
fn test_reconcile_1_endpoint_slice() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let mut different = new_empty_endpoint_slice(1, NS, &meta, &svc);
    // Upstream replaces the labels by {bar: baz}; the reserved ones stay here so the slice is
    // still ours (see the fixture's doc). The slice differs from a placeholder either way.
    different.metadata.labels.as_mut().unwrap().insert("bar".into(), "baz".into());
    let mut same = new_endpoint_slice(&svc, &[], "IPv4", CONTROLLER_NAME);
    same.metadata.name = Some("foo-placeholder".into());

    let cases: Vec<(&str, Option<EndpointSlice>, usize, Metrics)> = vec![
        ("No existing placeholder", None, 1, m(1, 1, 0, 0, 0, 1, 0, 0)),
        ("Existing placeholder that's the same", Some(same), 0, m(1, 1, 0, 0, 0, 0, 0, 0)),
        ("Existing placeholder that's different", Some(different), 1, m(1, 1, 0, 0, 0, 0, 1, 0)),
    ];
    for (name, existing, writes, metrics) in cases {
        let had_existing = existing.is_some();
        let mut cluster = Cluster::with(existing);
        let p = cluster.reconcile(&svc, &[], &nodes(&["node-1"]), &config(100), Some(trigger(1, 0)));
        assert_eq!(p.num_writes(), writes, "{name}");
        let slices = cluster.list();
        assert_eq!(slices.len(), 1, "{name}");
        assert!(slices[0].metadata.name.as_deref().unwrap().starts_with("foo"), "{name}");
        assert_eq!(slices[0].metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME], "foo", "{name}");
        assert_eq!(endpoint_count(&slices[0]), 0, "{name}");
        assert!(slices[0].ports.as_ref().is_none_or(Vec::is_empty), "{name}");
        assert_eq!(metrics_of(&p), metrics, "{name}");
        if had_existing && writes == 0 {
            assert!(p.is_noop());
        }
    }
}

// TestReconcile1EndpointSlicePublishNotReadyAddresses.
#[test]
fn test_reconcile_1_endpoint_slice_publish_not_ready_addresses() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let pods = pods(50);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.num_writes()), (1, 1));
    let slices = cluster.list();
    for ep in slices.iter().flat_map(|s| s.endpoints.iter().flatten()) {
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(true));
    }
    assert_lengths(&slices, &[50]);
}

// TestReconcileManyPods: 250 pods, 3 creates of 100, 100, 50.
#[test]
fn test_reconcile_many_pods() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods(250), &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.num_writes()), (3, 3));
    assert_lengths(&cluster.list(), &[100, 100, 50]);
    assert_eq!(metrics_of(&p), m(3, 3, 250, 250, 0, 3, 0, 0));
}

fn two_preexisting(pod_count: usize) -> (Service, Vec<Pod>, Vec<EndpointSlice>) {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(pod_count);
    let mut s1 = new_empty_endpoint_slice(1, NS, &meta, &svc);
    let mut s2 = new_empty_endpoint_slice(2, NS, &meta, &svc);
    for i in (1..pod_count - 4).step_by(4) {
        s1.endpoints.as_mut().unwrap().push(ipv4_endpoint(&pods[i], &svc));
    }
    for i in (3..pod_count - 4).step_by(4) {
        s2.endpoints.as_mut().unwrap().push(ipv4_endpoint(&pods[i], &svc));
    }
    (svc, pods, vec![s1, s2])
}

// TestReconcileEndpointSlicesSomePreexisting: 62 + 61 existing, 250 pods: the 27 left over
// after one full create go to the 62-slice (closest to full): 1 create + 1 update.
#[test]
fn test_reconcile_endpoint_slices_some_preexisting() {
    let (svc, pods, existing) = two_preexisting(250);
    assert_lengths(&existing, &[62, 61]);
    let snapshot = existing.clone();
    let mut cluster = Cluster::with(existing);
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 1, 0));
    assert_eq!(p.update[0].metadata.name.as_deref(), Some("foo-1"));
    assert_lengths(&cluster.list(), &[89, 61, 100]);
    assert_eq!(metrics_of(&p), m(3, 3, 250, 127, 0, 1, 1, 0));
    // The inputs are borrowed immutably, so there is no cache mutation to check; the fixture
    // snapshot still has its original lengths.
    assert_lengths(&snapshot, &[62, 61]);
}

// TestReconcileEndpointSlicesSomePreexistingWorseAllocation: 74 + 74 existing, 300 pods:
// 2 creates (100, 52) rather than 2 updates + 1 create.
#[test]
fn test_reconcile_endpoint_slices_some_preexisting_worse_allocation() {
    let (svc, pods, existing) = two_preexisting(300);
    assert_lengths(&existing, &[74, 74]);
    let mut cluster = Cluster::with(existing);
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (2, 0, 0));
    assert_lengths(&cluster.list(), &[74, 74, 100, 52]);
    assert_eq!(metrics_of(&p), m(3, 4, 300, 152, 0, 2, 0, 0));
}

// TestReconcileEndpointSlicesUpdating: a target port change rewrites the 3 slices in place.
#[test]
fn test_reconcile_endpoint_slices_updating() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(250);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!(p.create.len(), 3);
    assert_lengths(&cluster.list(), &[100, 100, 50]);

    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(81));
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 3, 0));
    let slices = cluster.list();
    assert_lengths(&slices, &[100, 100, 50]);
    assert!(slices.iter().all(|s| s.ports.as_ref().unwrap()[0].port == Some(81)));
}

// TestReconcileEndpointSlicesServicesLabelsUpdating: a Service label change updates every slice.
#[test]
fn test_reconcile_endpoint_slices_services_labels_updating() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(250);
    let mut cluster = Cluster::default();
    cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_lengths(&cluster.list(), &[100, 100, 50]);

    svc.metadata.labels = Some(labels(&[("foo", "bar")]));
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 3, 0));
    let slices = cluster.list();
    assert_lengths(&slices, &[100, 100, 50]);
    for s in &slices {
        assert_eq!(s.metadata.labels.as_ref().unwrap().get("foo").map(String::as_str), Some("bar"));
    }
}

// TestReconcileEndpointSlicesServicesReservedLabels: reserved labels on the Service change nothing.
#[test]
fn test_reconcile_endpoint_slices_services_reserved_labels() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(250);
    let mut cluster = Cluster::default();
    cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    svc.metadata.labels =
        Some(labels(&[(LABEL_SERVICE_NAME, "bad"), (LABEL_MANAGED_BY, "actor"), (LABEL_HEADLESS, "invalid")]));
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert!(p.is_noop(), "{p:?}");
    assert_lengths(&cluster.list(), &[100, 100, 50]);
}

// TestReconcileEndpointSlicesRecycling: 10 slices of 30 are left alone; after a port change they
// are repacked into 3 full slices through 3 updates and 7 deletes.
#[test]
fn test_reconcile_endpoint_slices_recycling() {
    let (mut svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(300);
    let mut existing: Vec<EndpointSlice> = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        if i % 30 == 0 {
            existing.push(new_empty_endpoint_slice(i / 30, NS, &meta, &svc));
        }
        existing[i / 30].endpoints.as_mut().unwrap().push(ipv4_endpoint(pod, &svc));
    }
    let mut cluster = Cluster::with(existing);
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert!(p.is_noop(), "initial reconcile must not repack");

    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(81));
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!(p.num_writes(), 10);
    assert_lengths(&cluster.list(), &[100, 100, 100]);
    assert_eq!(metrics_of(&p), m(3, 3, 300, 300, 0, 0, 3, 7));
}

// TestReconcileEndpointSlicesUpdatePacking: new endpoints go to the slice that ends closest to
// full even among slices already being updated.
#[test]
fn test_reconcile_endpoint_slices_update_packing() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let mut pods = Vec::new();
    let mut s1 = new_empty_endpoint_slice(1, NS, &meta, &svc);
    for i in 0..80 {
        let pod = new_pod(i, NS, true, 1, false);
        s1.endpoints.as_mut().unwrap().push(ipv4_endpoint(&pod, &svc));
        pods.push(pod);
    }
    let mut s2 = new_empty_endpoint_slice(2, NS, &meta, &svc);
    for i in 100..120 {
        let pod = new_pod(i, NS, true, 1, false);
        s2.endpoints.as_mut().unwrap().push(ipv4_endpoint(&pod, &svc));
        pods.push(pod);
    }
    // Make an endpoint of each slice change.
    for (i, pod) in pods.iter_mut().enumerate() {
        if i % 10 == 0 {
            pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        }
    }
    pods.extend((200..215).map(|i| new_pod(i, NS, true, 1, false)));

    let mut cluster = Cluster::with([s1, s2]);
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 2, 0));
    assert_eq!(metrics_of(&p), m(2, 2, 115, 15, 0, 0, 2, 0));
    assert_lengths(&cluster.list(), &[95, 20]);
}

// TestReconcileEndpointSlicesReplaceDeprecated: slices of the deprecated `IP` address type are
// deleted and replaced by perfectly packed IPv4 slices.
#[test]
fn test_reconcile_endpoint_slices_replace_deprecated() {
    let (svc, mut meta) = new_service_and_endpoint_meta("foo", NS);
    meta.address_type = "IP".into();
    let plain = Service { spec: Some(Default::default()), ..Default::default() };
    let mut pods = Vec::new();
    let mut s1 = new_empty_endpoint_slice(1, NS, &meta, &svc);
    for i in 0..80 {
        let pod = new_pod(i, NS, true, 1, false);
        s1.endpoints.as_mut().unwrap().push(pod_to_endpoint(&pod, Some(&Node::default()), &plain, IpFamily::IPv4));
        pods.push(pod);
    }
    let mut s2 = new_empty_endpoint_slice(2, NS, &meta, &svc);
    for i in 100..150 {
        let pod = new_pod(i, NS, true, 1, false);
        s2.endpoints.as_mut().unwrap().push(pod_to_endpoint(&pod, Some(&Node::default()), &plain, IpFamily::IPv4));
        pods.push(pod);
    }
    let mut cluster = Cluster::with([s1, s2]);
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    // The last two actions are the deletes of the IP slices.
    assert_eq!(p.delete.len(), 2);
    assert!(p.delete.iter().all(|s| s.address_type == "IP"));
    assert_eq!((p.create.len(), p.update.len()), (2, 0));
    let slices = cluster.list();
    assert_lengths(&slices, &[100, 30]);
    assert!(slices.iter().all(|s| s.address_type == "IPv4"));
}

// TestReconcileEndpointSlicesRecreation: slices owned by an earlier Service of the same name are
// replaced.
#[test]
fn test_reconcile_endpoint_slices_recreation() {
    for (name, owned, expect_changes) in
        [("slice owned by Service", true, false), ("slice owned by other Service UID", false, true)]
    {
        let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
        let mut slice = new_empty_endpoint_slice(1, NS, &meta, &svc);
        let pod = new_pod(1, NS, true, 1, false);
        let plain = Service { spec: Some(Default::default()), ..Default::default() };
        slice.endpoints.as_mut().unwrap().push(pod_to_endpoint(&pod, Some(&Node::default()), &plain, IpFamily::IPv4));
        if !owned {
            slice.metadata.owner_references.as_mut().unwrap()[0].uid = "different".into();
        }
        let mut cluster = Cluster::with([slice]);
        let p = cluster.reconcile(&svc, &[pod], &nodes(&["node-1"]), &config(100), None);
        if expect_changes {
            assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1), "{name}");
            assert_eq!(cluster.list().len(), 1, "{name}");
        } else {
            assert!(p.is_noop(), "{name}");
        }
    }
}

// TestReconcileEndpointSlicesNamedPorts: a named port resolving to 5 different numbers gives
// 5 slices of 60.
#[test]
fn test_reconcile_endpoint_slices_named_ports() {
    let (mut svc, _) = new_service_and_endpoint_meta("named-port-example", NS);
    svc.metadata.uid = None;
    {
        let sp = svc.spec.as_mut().unwrap();
        sp.ports.as_mut().unwrap()[0].name = None;
        sp.ports.as_mut().unwrap()[0].target_port = Some(IntOrString::String("http".into()));
    }
    let pods: Vec<Pod> = (0..300)
        .map(|i| {
            let mut pod = new_pod(i, NS, i % 3 != 0, 1, false);
            pod.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080 + (i % 5) as i32,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
            pod
        })
        .collect();
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.num_writes()), (5, 5));
    assert_eq!(metrics_of(&p), m(5, 5, 300, 300, 0, 5, 0, 0));
    let slices = cluster.list();
    assert_lengths(&slices, &[60, 60, 60, 60, 60]);
    let mut ports: Vec<Vec<EndpointPort>> = slices.iter().map(|s| s.ports.clone().unwrap()).collect();
    ports.sort_by_key(|p| p[0].port);
    for (i, p) in ports.iter().enumerate() {
        assert_eq!(
            p,
            &vec![EndpointPort {
                name: Some(String::new()),
                protocol: Some("TCP".into()),
                port: Some(8080 + i as i32),
                app_protocol: None
            }]
        );
    }
    assert!(slices.iter().all(|s| s.address_type == "IPv4"));
}

// TestReconcileMaxEndpointsPerSlice.
#[test]
fn test_reconcile_max_endpoints_per_slice() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods(250);
    let cases: [(usize, &[usize], Metrics); 5] = [
        (50, &[50, 50, 50, 50, 50], m(5, 5, 250, 250, 0, 5, 0, 0)),
        (80, &[80, 80, 80, 10], m(4, 4, 250, 250, 0, 4, 0, 0)),
        (150, &[150, 100], m(2, 2, 250, 250, 0, 2, 0, 0)),
        (250, &[250], m(1, 1, 250, 250, 0, 1, 0, 0)),
        (500, &[250], m(1, 1, 250, 250, 0, 1, 0, 0)),
    ];
    for (max, lengths, metrics) in cases {
        let mut cluster = Cluster::default();
        let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(max), None);
        assert_lengths(&cluster.list(), lengths);
        assert_eq!(metrics_of(&p), metrics, "max {max}");
    }
}

// TestReconcileEndpointSlicesMetrics: 20 pods, then 10 of them.
#[test]
fn test_reconcile_endpoint_slices_metrics() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods: Vec<Pod> = (0..20).map(|i| new_pod(i, NS, true, 1, false)).collect();
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), None);
    assert_eq!(p.create.len(), 1);
    assert_eq!(metrics_of(&p), m(1, 1, 20, 20, 0, 1, 0, 0));
    let p = cluster.reconcile(&svc, &pods[..10], &nodes(&["node-1"]), &config(100), None);
    // Upstream's cumulative values after both syncs: added 20, removed 10, created 1, updated 1,
    // slicesChangedPerSync 2.
    assert_eq!(metrics_of(&p), m(1, 1, 10, 0, 10, 0, 1, 0));
}

// TestReconcileEndpointSlicesMetrics_EndpointsAddedPerSync_CollectAndCompare.
#[test]
fn test_reconcile_endpoint_slices_metrics_endpoints_added_per_sync() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let keep = new_pod(1, NS, true, 1, false);
    let new = new_pod(2, NS, true, 1, false);
    let mut existing = new_empty_endpoint_slice(1, NS, &meta, &svc);
    existing.endpoints = Some(vec![ipv4_endpoint(&keep, &svc)]);
    let mut cluster = Cluster::with([existing]);
    let p = cluster.reconcile(&svc, &[keep, new], &nodes(&["node-1"]), &config(100), None);
    assert_eq!(p.stats.len(), 1);
    assert_eq!(p.stats[0].endpoints_added, 1);
    assert_eq!(p.stats[0].endpoints_removed, 0);
}

// TestReconcileEndpointSlicesMetrics_EndpointsRemovedPerSync_CollectAndCompare.
#[test]
fn test_reconcile_endpoint_slices_metrics_endpoints_removed_per_sync() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let stale = new_pod(0, NS, true, 1, false);
    let keep = new_pod(1, NS, true, 1, false);
    let mut existing = new_empty_endpoint_slice(1, NS, &meta, &svc);
    existing.endpoints = Some(vec![ipv4_endpoint(&stale, &svc), ipv4_endpoint(&keep, &svc)]);
    let mut cluster = Cluster::with([existing]);
    let p = cluster.reconcile(&svc, &[keep], &nodes(&["node-1"]), &config(100), None);
    assert_eq!(p.stats[0].endpoints_removed, 1);
    assert_eq!(p.stats[0].endpoints_added, 0);
}

// TestReconcileEndpointSlicesMetrics_GaugeUpdates.
#[test]
fn test_reconcile_endpoint_slices_metrics_gauge_updates() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
    let pods = [new_pod(1, NS, true, 1, false), new_pod(2, NS, true, 1, false)];
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &pods, &nodes(&["node-1"]), &config(100), Some(trigger(0, 0)));
    let s = &p.stats[0];
    assert_eq!((s.desired_slices, s.desired_endpoints, s.actual_slices), (1, 2, 1));
    assert_eq!(
        traffic_distribution_metric_label(svc.metadata.annotations.as_ref(), Some("PreferClose"), true),
        Some("PreferClose"),
        "services_count_by_traffic_distribution{{PreferClose}}"
    );
}

// TestReconcilerFinalizeSvcDeletionTimestamp: a Service being deleted gets no creates, updates
// and deletes still go through; recycling still applies.
#[test]
fn test_reconciler_finalize_svc_deletion_timestamp() {
    struct Case {
        name: &'static str,
        deleting: bool,
        create: bool,
        update: bool,
        delete: bool,
        created_found: bool,
        updated_found: bool,
        deleted_found: bool,
    }
    let cases = [
        Case {
            name: "create+update, not deleting",
            deleting: false,
            create: true,
            update: true,
            delete: false,
            created_found: true,
            updated_found: true,
            deleted_found: true,
        },
        Case {
            name: "create+update, deleting",
            deleting: true,
            create: true,
            update: true,
            delete: false,
            created_found: false,
            updated_found: true,
            deleted_found: true,
        },
        Case {
            name: "create+update+delete, not deleting, recycling",
            deleting: false,
            create: true,
            update: true,
            delete: true,
            created_found: false,
            updated_found: true,
            deleted_found: true,
        },
        Case {
            name: "create+update+delete, deleting, recycling",
            deleting: true,
            create: true,
            update: true,
            delete: true,
            created_found: false,
            updated_found: true,
            deleted_found: true,
        },
        Case {
            name: "update+delete, deleting",
            deleting: true,
            create: false,
            update: true,
            delete: true,
            created_found: false,
            updated_found: true,
            deleted_found: false,
        },
    ];
    for c in cases {
        let (mut svc, meta) = new_service_and_endpoint_meta("foo", NS);
        if c.deleting {
            svc.metadata.deletion_timestamp = Some(time(1_700_000_000));
        }
        let named = |name: &str| {
            let mut s = new_empty_endpoint_slice(0, NS, &meta, &svc);
            s.metadata.name = Some(name.into());
            s
        };
        let mut cluster = Cluster::with([named("to-update"), named("to-delete")]);
        let mut to_update = cluster.slices["to-update"].clone();
        to_update.endpoints = Some(vec![Endpoint { addresses: vec!["10.2.3.4".into()], ..Default::default() }]);
        let to_delete = cluster.slices["to-delete"].clone();

        let (create, update, delete) = finalize(
            &svc,
            if c.create { vec![named("to-create")] } else { vec![] },
            if c.update { vec![to_update.clone()] } else { vec![] },
            if c.delete { vec![to_delete] } else { vec![] },
            Some(&trigger(1, 0)),
        );
        let p = Plan { create, update, delete, ..Default::default() };
        cluster.apply(&p);
        assert_eq!(cluster.slices.contains_key("to-create"), c.created_found, "{}: created", c.name);
        assert_eq!(cluster.slices.contains_key("to-update"), c.updated_found, "{}: updated", c.name);
        assert_eq!(cluster.slices.contains_key("to-delete"), c.deleted_found, "{}: deleted", c.name);
        if c.update {
            assert_eq!(endpoint_count(&cluster.slices["to-update"]), 1, "{}", c.name);
        }
    }
}

// TestReconcilerPodMissingNode.
#[test]
fn test_reconciler_pod_missing_node() {
    let node0 = node("node-0");
    let node1 = node("node-1");
    let mut pod0 = new_pod(0, NS, true, 1, false);
    pod0.spec.as_mut().unwrap().node_name = Some("node-0".into());
    let mut pod1 = new_pod(1, NS, true, 1, false);
    pod1.spec.as_mut().unwrap().node_name = Some("node-1".into());
    let pods = vec![pod0.clone(), pod1.clone()];
    let (service, meta) = new_service_and_endpoint_meta("foo", NS);
    let full_slice = || {
        let mut s = new_empty_endpoint_slice(1, NS, &meta, &service);
        s.endpoints = Some(vec![
            pod_to_endpoint(&pod0, Some(&node0), &service, IpFamily::IPv4),
            pod_to_endpoint(&pod1, Some(&node1), &service, IpFamily::IPv4),
        ]);
        s
    };

    let cases: Vec<(&str, bool, Vec<Node>, Option<EndpointSlice>, Metrics, bool)> = vec![
        ("Create and publishNotReady false", false, vec![node0.clone()], None, m(1, 1, 1, 1, 0, 1, 0, 0), true),
        ("Create and publishNotReady true", true, vec![node0.clone()], None, m(1, 1, 2, 2, 0, 1, 0, 0), false),
        (
            "Update and publishNotReady false",
            false,
            vec![node0.clone()],
            Some(full_slice()),
            m(1, 1, 1, 0, 1, 0, 1, 0),
            true,
        ),
        (
            "Update and publishNotReady true and all nodes missing",
            true,
            vec![],
            Some(full_slice()),
            m(1, 1, 2, 0, 0, 0, 0, 0),
            false,
        ),
        (
            "Update and publishNotReady true",
            true,
            vec![node0.clone()],
            Some(full_slice()),
            m(1, 1, 2, 0, 0, 0, 0, 0),
            false,
        ),
        // The slice is updated (recycled into the placeholder), not deleted.
        (
            "Update if publishNotReady false and no nodes are present",
            false,
            vec![],
            Some(full_slice()),
            m(1, 1, 0, 0, 2, 0, 1, 0),
            true,
        ),
    ];
    for (name, pnra, existing_nodes, existing, metrics, expect_error) in cases {
        let mut svc = service.clone();
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(pnra);
        let mut cluster = Cluster::with(existing);
        let p = cluster.reconcile(&svc, &pods, &existing_nodes, &config(100), None);
        assert_eq!(p.requires_retry(), expect_error, "{name}: error");
        assert_eq!(cluster.list().len(), metrics.actual_slices, "{name}: slices");
        assert_eq!(metrics_of(&p), metrics, "{name}");
        if expect_error {
            assert!(
                p.warnings.iter().any(|w| w.to_string().contains("Node node-1 Not Found")),
                "{name}: {:?}",
                p.warnings
            );
        }
    }
}

fn ready_node(name: &str, zone: &str) -> Node {
    let mut n = zoned_node(name, zone);
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
        allocatable: Some(BTreeMap::from([("cpu".to_owned(), Quantity("100m".into()))])),
        ..Default::default()
    });
    n
}

/// Hints per zone and the number of endpoints hinted to another zone than their own.
fn zone_hints(slices: &[EndpointSlice]) -> (BTreeMap<String, usize>, usize, usize) {
    let mut by_zone = BTreeMap::new();
    let mut cross = 0;
    let mut without = 0;
    for ep in slices.iter().flat_map(|s| s.endpoints.iter().flatten()) {
        match ep.hints.as_ref().and_then(|h| h.for_zones.as_ref()).filter(|z| !z.is_empty()) {
            Some(zones) => {
                assert_eq!(zones.len(), 1, "one zone hint per endpoint");
                *by_zone.entry(zones[0].name.clone()).or_insert(0) += 1;
                if ep.zone.as_deref() != Some(zones[0].name.as_str()) {
                    cross += 1;
                }
            }
            None => without += 1,
        }
    }
    (by_zone, cross, without)
}

// TestReconcileTopology (planner level; the hint algorithm itself is tested in topology.rs).
#[test]
fn test_reconcile_topology() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", "testing");
    let zones = ["zone-a", "zone-b", "zone-c"];
    let mut pods = Vec::new();
    let mut all_nodes = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        for j in 0..10 {
            let n = ready_node(&format!("node-{zone}-{j}"), zone);
            let mut pod = new_pod(i * 100 + j, "testing", true, 1, false);
            pod.spec.as_mut().unwrap().node_name = n.metadata.name.clone();
            pods.push(pod);
            all_nodes.push(n);
        }
    }
    let slice_of = |name: &str, idx: &[usize]| {
        let mut s = new_empty_endpoint_slice(0, "testing", &meta, &svc);
        s.metadata.name = Some(name.into());
        s.endpoints = Some(
            idx.iter()
                .map(|&i| {
                    let node = all_nodes.node(pods[i].spec.as_ref().unwrap().node_name.as_deref().unwrap());
                    pod_to_endpoint(&pods[i], node, &svc, IpFamily::IPv4)
                })
                .collect(),
        );
        (s, idx.iter().map(|&i| pods[i].clone()).collect::<Vec<Pod>>())
    };
    let (a_b, a_b_pods) = slice_of("zone-a-b", &[7, 8, 16, 17, 18]);
    let (a_c, a_c_pods) = slice_of("zone-a-c", &[5, 6, 25, 26]);
    let (c, c_pods) = slice_of("zone-c", &[27, 28, 29]);
    let both_pods: Vec<Pod> = a_c_pods.iter().chain(&a_b_pods).cloned().collect();

    struct Case {
        name: &'static str,
        cache: bool,
        annotation: &'static str,
        existing: Vec<EndpointSlice>,
        pods: Vec<Pod>,
        hints: Option<BTreeMap<String, usize>>,
        cross: usize,
        metrics: Metrics,
        topology_label: &'static str,
    }
    let hints =
        |a, b, c| Some(BTreeMap::from([("zone-a".to_owned(), a), ("zone-b".to_owned(), b), ("zone-c".to_owned(), c)]));
    let cases = vec![
        Case {
            name: "no change, topologyCache disabled, annotation == auto",
            cache: false,
            annotation: "auto",
            existing: vec![c.clone()],
            pods: c_pods.clone(),
            hints: None,
            cross: 0,
            metrics: m(1, 1, 3, 0, 0, 0, 0, 0),
            topology_label: "Disabled",
        },
        Case {
            name: "enabling topologyCache, hintsAnnotation == auto",
            cache: true,
            annotation: "auto",
            existing: vec![c.clone()],
            pods: c_pods.clone(),
            hints: hints(1, 1, 1),
            cross: 2,
            metrics: m(1, 1, 3, 0, 0, 0, 1, 0),
            topology_label: "Auto",
        },
        Case {
            name: "topology enabled, hintsAnnotation==auto, ratio beyond threshold",
            cache: true,
            annotation: "auto",
            existing: vec![a_c.clone()],
            pods: a_c_pods.clone(),
            hints: None,
            cross: 0,
            metrics: m(1, 1, 4, 0, 0, 0, 0, 0),
            topology_label: "Auto",
        },
        Case {
            name: "topology enabled, hintsAnnotation==Auto, more slices and endpoints",
            cache: true,
            annotation: "Auto",
            existing: vec![a_c.clone(), a_b.clone()],
            pods: both_pods.clone(),
            hints: hints(3, 3, 3),
            cross: 1,
            metrics: m(1, 2, 9, 0, 0, 0, 2, 0),
            topology_label: "Auto",
        },
        Case {
            name: "topology enabled, hintsAnnotation==disabled, more slices and endpoints",
            cache: true,
            annotation: "disabled",
            existing: vec![a_c.clone(), a_b.clone()],
            pods: both_pods.clone(),
            hints: None,
            cross: 0,
            metrics: m(1, 2, 9, 0, 0, 0, 0, 0),
            topology_label: "Disabled",
        },
    ];
    for case in cases {
        let mut service = svc.clone();
        service.metadata.namespace = Some("testing".into());
        service.metadata.annotations = Some(labels(&[(DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS, case.annotation)]));
        let ratios = CpuRatios::from_nodes(&all_nodes);
        let mut cluster = Cluster::with(case.existing.clone());
        let p = cluster.reconcile_with_topology(
            &service,
            &case.pods,
            &all_nodes,
            &config(100),
            case.cache.then_some(&ratios),
            None,
        );
        assert_eq!(metrics_of(&p), case.metrics, "{}", case.name);
        assert_eq!(
            topology_metric_label(service.metadata.annotations.as_ref(), case.cache),
            case.topology_label,
            "{}",
            case.name
        );
        let slices = cluster.list();
        assert_eq!(slices.len(), case.metrics.actual_slices, "{}", case.name);
        let (by_zone, cross, without) = zone_hints(&slices);
        match &case.hints {
            None => assert!(by_zone.is_empty(), "{}: unexpected hints {by_zone:?}", case.name),
            Some(want) => {
                assert_eq!(without, 0, "{}: endpoints without hints", case.name);
                assert_eq!(&by_zone, want, "{}", case.name);
                assert_eq!(cross, case.cross, "{}: cross-zone hints", case.name);
            }
        }
    }
}

// TestReconcile_TrafficDistribution (planner level).
#[test]
fn test_reconcile_traffic_distribution() {
    let ns = "ns1";
    let (svc, _) = new_service_and_endpoint_meta("foo", ns);
    let all_nodes: Vec<Node> =
        (0..3u8).map(|i| ready_node(&format!("node-{i}"), &format!("zone-{}", char::from(b'a' + i)))).collect();
    let placement = [0, 1, 1, 1, 2, 2];
    let pods: Vec<Pod> = placement
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut pod = new_pod(i, ns, true, 1, false);
            pod.spec.as_mut().unwrap().node_name = Some(format!("node-{n}"));
            pod
        })
        .collect();
    let ratios = CpuRatios::from_nodes(&all_nodes);

    type Dist = BTreeMap<String, usize>;
    let dist = |pairs: &[(&str, usize)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<Dist>();
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, bool, Option<&str>, &str, Dist, Dist, usize, &str, Option<&str>)> = vec![
        (
            "trafficDistribution=PreferClose, topologyAnnotation=Disabled",
            false,
            Some("PreferClose"),
            "Disabled",
            dist(&[("zone-a", 1), ("zone-b", 3), ("zone-c", 2)]),
            dist(&[]),
            0,
            "Disabled",
            Some("PreferClose"),
        ),
        (
            "trafficDistribution=PreferClose, topologyAnnotation=Auto",
            false,
            Some("PreferClose"),
            "Auto",
            dist(&[("zone-a", 2), ("zone-b", 2), ("zone-c", 2)]),
            dist(&[]),
            1,
            "Auto",
            None,
        ),
        (
            "trafficDistribution=nil, topologyAnnotation=<empty>",
            false,
            None,
            "",
            dist(&[("", 6)]),
            dist(&[]),
            0,
            "Disabled",
            None,
        ),
        (
            "trafficDistribution=PreferSameNode, PSTD enabled",
            true,
            Some("PreferSameNode"),
            "Disabled",
            dist(&[("zone-a", 1), ("zone-b", 3), ("zone-c", 2)]),
            dist(&[("node-0", 1), ("node-1", 3), ("node-2", 2)]),
            0,
            "Disabled",
            Some("PreferSameNode"),
        ),
        (
            "trafficDistribution=PreferSameZone, PSTD disabled",
            false,
            Some("PreferSameZone"),
            "Disabled",
            dist(&[("", 6)]),
            dist(&[]),
            0,
            "Disabled",
            None,
        ),
    ];
    for (name, pstd, td, annotation, want_zones, want_nodes, want_cross, topology_label, td_label) in cases {
        let mut service = svc.clone();
        service.spec.as_mut().unwrap().traffic_distribution = td.map(str::to_owned);
        service.metadata.annotations = Some(labels(&[(DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS, annotation)]));
        let cfg = Config { prefer_same_traffic_distribution: pstd, ..config(100) };
        let mut cluster = Cluster::default();
        let p = cluster.reconcile_with_topology(&service, &pods, &all_nodes, &cfg, Some(&ratios), None);
        assert_eq!(metrics_of(&p), m(1, 1, 6, 6, 0, 1, 0, 0), "{name}");
        assert_eq!(topology_metric_label(service.metadata.annotations.as_ref(), true), topology_label, "{name}");
        assert_eq!(
            traffic_distribution_metric_label(service.metadata.annotations.as_ref(), td, pstd),
            td_label,
            "{name}"
        );

        let slices = cluster.list();
        let mut zones = Dist::new();
        let mut nodes_hinted = Dist::new();
        let mut cross = 0;
        for ep in slices.iter().flat_map(|s| s.endpoints.iter().flatten()) {
            let zone_hint = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .filter(|z| z.len() == 1)
                .map(|z| z[0].name.clone())
                .unwrap_or_default();
            if !zone_hint.is_empty() && ep.zone.as_deref() != Some(zone_hint.as_str()) {
                cross += 1;
            }
            *zones.entry(zone_hint).or_insert(0) += 1;
            if let Some(n) = ep.hints.as_ref().and_then(|h| h.for_nodes.as_ref()).filter(|n| n.len() == 1) {
                *nodes_hinted.entry(n[0].name.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(zones, want_zones, "{name}: zones");
        assert_eq!(nodes_hinted, want_nodes, "{name}: nodes");
        assert_eq!(cross, want_cross, "{name}: cross-zone");
    }
}

// TestReconcileHeadlessServiceNoPorts (issue #133474): nil ports from the apiserver cause no churn.
#[test]
fn test_reconcile_headless_service_no_ports() {
    let svc = Service {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("headless-no-ports".into()),
            namespace: Some(NS.into()),
            uid: Some("test-uid".into()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels(&[("foo", "bar")])),
            ip_families: Some(vec!["IPv4".into()]),
            ..Default::default()
        }),
        status: None,
    };
    let pod = new_pod(1, NS, true, 1, false);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, std::slice::from_ref(&pod), &nodes(&["node-1"]), &config(100), None);
    assert_eq!((p.create.len(), p.num_writes()), (1, 1));
    assert_eq!(p.create[0].ports, Some(vec![]));
    for s in cluster.slices.values_mut() {
        s.ports = None; // what the apiserver returns
    }
    let p = cluster.reconcile(&svc, &[pod], &nodes(&["node-1"]), &config(100), None);
    assert!(p.is_noop(), "{p:?}");
}

#[test]
fn trigger_time_format_matches_go_rfc3339nano() {
    assert_eq!(format_rfc3339_nano(&trigger(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
    assert_eq!(format_rfc3339_nano(&trigger(1_700_000_000, 500_000_000)), "2023-11-14T22:13:20.5Z");
    assert_eq!(format_rfc3339_nano(&trigger(1_700_000_000, 1)), "2023-11-14T22:13:20.000000001Z");
    assert_eq!(format_rfc3339_nano(&trigger(0, 120_000)), "1970-01-01T00:00:00.00012Z");
}

// Found by the differential test (seed 401): topology Auto, publishNotReadyAddresses, one ready
// pod on a Node that is not cached (its endpoint has no zone, so hints are disabled). The second
// plan over what the first wrote must be empty, as upstream's is.
#[test]
fn a_hinted_service_with_a_zoneless_endpoint_plans_nothing_the_second_time() {
    let ns = "ns1";
    let (mut svc, _) = new_service_and_endpoint_meta("foo", ns);
    svc.metadata.annotations = Some(labels(&[("service.kubernetes.io/topology-mode", "Auto")]));
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let all_nodes: Vec<Node> =
        (0..3u8).map(|i| ready_node(&format!("node-{i}"), &format!("zone-{}", char::from(b'a' + i)))).collect();
    let pods: Vec<Pod> = (0..13)
        .map(|i| {
            let mut pod = new_pod(i, ns, true, 1, false);
            pod.spec.as_mut().unwrap().node_name =
                Some(if i == 12 { "gone".into() } else { format!("node-{}", i % 3) });
            pod
        })
        .collect();
    let ratios = CpuRatios::from_nodes(&all_nodes);
    let cfg = config(100);
    let mut cluster = Cluster::default();
    let first = cluster.reconcile_with_topology(&svc, &pods, &all_nodes, &cfg, Some(&ratios), None);
    assert_eq!(first.create.len(), 1);
    assert_eq!(first.events[0].message, "One or more endpoints do not have a zone specified, addressType: IPv4");
    let again = cluster.reconcile_with_topology(&svc, &pods, &all_nodes, &cfg, Some(&ratios), Some(&first.hints_state));
    assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty(), "{again:#?}");
}
