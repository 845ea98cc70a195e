//! Behaviour beyond the upstream tables: taking over slices written by kube-controller-manager
//! without writes, never touching other managers' slices, deterministic names, invalid IPs,
//! unsupported address types and the hints state.

use k8s_openapi::api::core::v1::{ObjectReference, PodIP};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::endpointslice::labels::{ANNOTATION_LAST_CHANGE_TRIGGER_TIME, LABEL_HEADLESS};
use crate::endpointslice::naming::slice_name;
use crate::endpointslice::reconcile::service_owner_reference;
use crate::endpointslice::{PlanWarning, ServiceHintsState};

const NS: &str = "test";

/// A slice exactly as kube-controller-manager v1.37 writes it for `new_service_and_endpoint_meta`
/// and the given pods, after an apiserver round trip: generated name, ports in hash order,
/// `targetRef` with the pod UID (and an old resourceVersion, as pre-1.19 controllers wrote),
/// endpoints in map order, an older trigger-time annotation, empty lists absent.
fn kcm_slice(svc: &Service, name: &str, pods: &[Pod], ports: Vec<EndpointPort>) -> EndpointSlice {
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .map(|p| Endpoint {
            addresses: vec![p.status.as_ref().unwrap().pod_ips.as_ref().unwrap()[0].ip.clone()],
            conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(NS.into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                resource_version: Some("12345".into()),
                ..Default::default()
            }),
            node_name: Some("node-1".into()),
            ..Default::default()
        })
        .collect();
    endpoints.reverse();
    let mut l = labels(&[(LABEL_SERVICE_NAME, "foo"), (LABEL_MANAGED_BY, CONTROLLER_NAME), (LABEL_HEADLESS, "")]);
    l.extend(svc.metadata.labels.clone().unwrap_or_default());
    as_stored(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            generate_name: Some("foo-".into()),
            namespace: Some(NS.into()),
            labels: Some(l),
            annotations: Some(labels(&[(ANNOTATION_LAST_CHANGE_TRIGGER_TIME, "2020-01-01T00:00:00Z")])),
            owner_references: Some(vec![service_owner_reference(svc)]),
            resource_version: Some("777".into()),
            generation: Some(3),
            uid: Some("slice-uid".into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    })
}

fn pods_with_uids(n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let mut p = new_pod(i, NS, true, 1, false);
            p.metadata.uid = Some(format!("uid-{i}"));
            p
        })
        .collect()
}

#[test]
fn slices_written_by_kcm_cause_no_writes() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    // Two ports, so their order can differ from ours.
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap().push(k8s_openapi::api::core::v1::ServicePort {
        name: Some("metrics".into()),
        target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9090)),
        protocol: Some("TCP".into()),
        ..Default::default()
    });
    svc.metadata.labels = Some(labels(&[("app", "foo")]));
    let pods = pods_with_uids(150);
    let hash_order_ports = vec![
        EndpointPort {
            name: Some("metrics".into()),
            port: Some(9090),
            protocol: Some("TCP".into()),
            app_protocol: None,
        },
        EndpointPort { name: Some("foo".into()), port: Some(80), protocol: Some("TCP".into()), app_protocol: None },
    ];
    let existing = vec![
        kcm_slice(&svc, "foo-abcde", &pods[..100], hash_order_ports.clone()),
        kcm_slice(&svc, "foo-fghij", &pods[100..], hash_order_ports),
    ];
    let p = plan_for(&svc, &pods, &vec![node("node-1")], &existing, &config(100), Some(trigger(1_800_000_000, 0)));
    assert!(p.is_noop(), "{p:#?}");
    assert!(p.warnings.is_empty());
    assert_eq!(p.stats[0].actual_slices, 2);
}

#[test]
fn kcm_placeholder_with_absent_lists_is_kept() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let placeholder = kcm_slice(&svc, "foo-xyz12", &[], vec![]);
    assert_eq!((placeholder.ports.as_ref(), placeholder.endpoints.as_ref()), (None, None));
    let p = plan_for(&svc, &[], &vec![node("node-1")], &[placeholder], &config(100), Some(trigger(1, 0)));
    assert!(p.is_noop(), "{p:#?}");
}

#[test]
fn kcm_slices_with_correct_traffic_distribution_hints_are_kept() {
    let (mut svc, meta) = new_service_and_endpoint_meta("foo", NS);
    svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
    let pods = pods_with_uids(3);
    let nodes = vec![zoned_node("node-1", "zone-a")];
    let mut slice = kcm_slice(&svc, "foo-abcde", &pods, meta.ports.clone());
    for ep in slice.endpoints.as_mut().unwrap() {
        ep.zone = Some("zone-a".into());
        ep.hints = Some(EndpointHints { for_zones: Some(vec![ForZone { name: "zone-a".into() }]), for_nodes: None });
    }
    let p = plan_for(&svc, &pods, &nodes, std::slice::from_ref(&slice), &config(100), None);
    assert!(p.is_noop(), "{p:#?}");

    // Without trafficDistribution (and no topology annotation) upstream strips the hints.
    svc.spec.as_mut().unwrap().traffic_distribution = None;
    let p = plan_for(&svc, &pods, &nodes, &[slice], &config(100), None);
    assert_eq!(p.update.len(), 1);
    assert!(p.update[0].endpoints.iter().flatten().all(|e| e.hints.is_none()));
    assert_eq!(p.update[0].metadata.resource_version.as_deref(), Some("777"));
}

#[test]
fn slices_of_other_managers_are_never_touched() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let mut foreign = new_empty_endpoint_slice(1, NS, &meta, &svc);
    foreign.metadata.labels.as_mut().unwrap().insert(LABEL_MANAGED_BY.into(), "someone-else".into());
    foreign.endpoints = Some(vec![Endpoint { addresses: vec!["9.9.9.9".into()], ..Default::default() }]);
    // Same name as the first slice we would create: the planner must pick another one.
    foreign.metadata.name = Some(slice_name("foo", "test-foo", "IPv4", 0));
    let mut unsupported_foreign = foreign.clone();
    unsupported_foreign.metadata.name = Some("foo-fqdn".into());
    unsupported_foreign.address_type = "FQDN".into();

    let pods = vec![new_pod(1, NS, true, 1, false)];
    let mut cluster = Cluster::with([foreign.clone(), unsupported_foreign.clone()]);
    let p = cluster.reconcile(&svc, &pods, &vec![node("node-1")], &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 0));
    assert_eq!(p.create[0].metadata.name.as_deref(), Some(slice_name("foo", "test-foo", "IPv4", 1).as_str()));
    let stored_foreign = &cluster.slices[foreign.metadata.name.as_deref().unwrap()];
    assert_eq!(stored_foreign.endpoints, foreign.endpoints);
    assert!(cluster.slices.contains_key("foo-fqdn"));
}

#[test]
fn unsupported_address_types_of_ours_are_deleted_and_their_hints_forgotten() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let mut v6 = new_empty_endpoint_slice(6, NS, &meta, &svc);
    v6.address_type = "IPv6".into();
    let mut fqdn = new_empty_endpoint_slice(7, NS, &meta, &svc);
    fqdn.address_type = "FQDN".into();
    let state = ServiceHintsState::default().set_hints("IPv6", [("zone-a".to_owned(), 1)].into());
    let ratios = CpuRatios::from_nodes(&[]);
    let mut cluster = Cluster::with([v6, fqdn]);
    let p =
        cluster.reconcile_with_topology(&svc, &[], &vec![node("node-1")], &config(100), Some(&ratios), Some(&state));
    let deleted: Vec<&str> = p.delete.iter().map(|s| s.address_type.as_str()).collect();
    assert_eq!(deleted, vec!["IPv6", "FQDN"]);
    assert_eq!(p.create.len(), 1, "IPv4 placeholder");
    assert!(!p.hints_state.allocated_by_address_type.contains_key("IPv6"));
}

#[test]
fn names_are_deterministic_so_a_stale_cache_replans_the_same_name() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods_with_uids(250);
    let first = plan_for(&svc, &pods, &vec![node("node-1")], &[], &config(100), None);
    let again = plan_for(&svc, &pods, &vec![node("node-1")], &[], &config(100), None);
    let names = |p: &Plan| p.create.iter().map(|s| s.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(names(&first), names(&again));
    assert_eq!(names(&first).len(), 3);
    let expected: Vec<String> = (0..3).map(|i| slice_name("foo", "test-foo", "IPv4", i)).collect();
    assert_eq!(names(&first), expected);

    // Applying the first plan and then applying the plan made from the stale (empty) snapshot
    // would collide on every name: the apiserver answers 409 instead of duplicating.
    let mut cluster = Cluster::default();
    cluster.apply(&first);
    assert!(again.create.iter().all(|s| cluster.slices.contains_key(s.metadata.name.as_deref().unwrap())));

    // A recreated Service (new UID) gets different names.
    let mut recreated = svc.clone();
    recreated.metadata.uid = Some("new-uid".into());
    let other = plan_for(&recreated, &pods, &vec![node("node-1")], &[], &config(100), None);
    assert!(names(&other).iter().all(|n| !expected.contains(n)));
}

#[test]
fn long_service_names_give_valid_slice_names() {
    let name = "a-very-long-service-name-that-is-exactly-sixty-three-characters";
    assert_eq!(name.len(), 63);
    let (svc, _) = new_service_and_endpoint_meta(name, NS);
    let p = plan_for(&svc, &[], &vec![node("node-1")], &[], &config(100), None);
    let n = p.create[0].metadata.name.clone().unwrap();
    assert!(n.len() <= 63, "{n}");
    assert!(n.starts_with(&name[..54]));
}

#[test]
fn invalid_pod_ips_are_skipped_and_reported() {
    let (mut svc, _) = new_service_and_endpoint_meta("foo", NS);
    svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let mut pod = new_pod(1, NS, true, 1, false);
    pod.status.as_mut().unwrap().pod_ips = Some(vec![
        PodIP { ip: "banana".into() },
        PodIP { ip: "010.000.000.001".into() },
        PodIP { ip: "FD00:0:0::0001".into() },
    ]);
    let p = plan_for(&svc, &[pod], &vec![node("node-1")], &[], &config(100), None);
    assert_eq!(p.warnings.len(), 1, "reported once, not per address type: {:?}", p.warnings);
    assert!(matches!(&p.warnings[0], PlanWarning::InvalidPodIp { ip, .. } if ip == "banana"));
    assert!(!p.requires_retry());
    let addresses: Vec<(String, Vec<String>)> = p
        .create
        .iter()
        .map(|s| (s.address_type.clone(), s.endpoints.iter().flatten().flat_map(|e| e.addresses.clone()).collect()))
        .collect();
    assert_eq!(
        addresses,
        vec![("IPv4".to_owned(), vec!["10.0.0.1".to_owned()]), ("IPv6".to_owned(), vec!["fd00::1".to_owned()])]
    );
}

#[test]
fn update_carries_name_and_resource_version_and_keeps_foreign_metadata() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", NS);
    let pods = pods_with_uids(2);
    let mut slice = new_empty_endpoint_slice(1, NS, &meta, &svc);
    slice.metadata.annotations = Some(labels(&[("keep", "me")]));
    slice.endpoints =
        Some(vec![pod_to_endpoint(&pods[0], Some(&node("node-1")), &svc, crate::podutil::IpFamily::IPv4)]);
    let mut cluster = Cluster::with([slice]);
    let rv = cluster.slices["foo-1"].metadata.resource_version.clone();
    let p = cluster.reconcile(&svc, &pods, &vec![node("node-1")], &config(100), None);
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].metadata.name.as_deref(), Some("foo-1"));
    assert_eq!(p.update[0].metadata.resource_version, rv);
    assert_eq!(p.update[0].metadata.annotations, Some(labels(&[("keep", "me")])), "no trigger time: annotation absent");
}

#[test]
fn max_endpoints_is_clamped() {
    let (svc, _) = new_service_and_endpoint_meta("foo", NS);
    let pods: Vec<Pod> = (0..3).map(|i| new_pod(i, NS, true, 1, false)).collect();
    let p = plan_for(&svc, &pods, &vec![node("node-1")], &[], &config(0), None);
    assert_lengths(&p.create, &[1, 1, 1]);
    assert_eq!(config(5000).max_endpoints(), 1000);
}
