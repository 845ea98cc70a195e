//! Ports of the `syncService`-level parts of kubernetes v1.37.1
//! `pkg/controller/endpointslice/endpointslice_controller_test.go`: the decisions the core makes
//! (skips, selection of pods and slices, placeholders, trigger time). Queueing, batching, the
//! stale-cache tracker and node events belong to the shell.

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodCondition, PodIP, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::endpointslice::Skipped;
use crate::endpointslice::labels::{ANNOTATION_LAST_CHANGE_TRIGGER_TIME, format_rfc3339_nano};

const DEFAULT_NS: &str = "default";

fn node1() -> Vec<k8s_openapi::api::core::v1::Node> {
    vec![node("node-1")]
}

/// Upstream `createService`: ports `[{targetPort: 80}]`, selector `foo=bar`, IPv4, UID
/// `<ns>-<name>`, created "now".
fn create_service(namespace: &str, name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            creation_timestamp: Some(time(1_700_000_000)),
            uid: Some(format!("{namespace}-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort { target_port: Some(IntOrString::Int(80)), ..Default::default() }]),
            selector: Some(labels(&[("foo", "bar")])),
            ip_families: Some(vec!["IPv4".into()]),
            ..Default::default()
        }),
        status: None,
    }
}

// TestSyncServiceNoSelector.
#[test]
fn test_sync_service_no_selector() {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("testing-1".into()),
            namespace: Some(DEFAULT_NS.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort { target_port: Some(IntOrString::Int(80)), ..Default::default() }]),
            ..Default::default()
        }),
        status: None,
    };
    let p = plan_for(&svc, &[new_pod(1, DEFAULT_NS, true, 0, false)], &node1(), &[], &Config::default(), None);
    assert!(p.is_noop());
    assert_eq!(p.skipped, Some(Skipped::NoSelector));
}

// TestServiceExternalNameTypeSync.
#[test]
fn test_service_external_name_type_sync() {
    let cases = [
        ("External name with selector and ports should not receive endpoint slices", true, true),
        ("External name with ports should not receive endpoint slices", false, true),
        ("External name with selector should not receive endpoint slices", true, false),
        ("External name without selector and ports should not receive endpoint slices", false, false),
    ];
    for (name, selector, ports) in cases {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("testing-1".into()),
                namespace: Some(DEFAULT_NS.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.then(|| labels(&[("foo", "bar")])),
                ports: ports.then(|| vec![ServicePort { port: 80, ..Default::default() }]),
                type_: Some("ExternalName".into()),
                ..Default::default()
            }),
            status: None,
        };
        let existing =
            [new_empty_endpoint_slice(1, DEFAULT_NS, &new_service_and_endpoint_meta("testing-1", DEFAULT_NS).1, &svc)];
        let p =
            plan_for(&svc, &[new_pod(1, DEFAULT_NS, true, 0, false)], &node1(), &existing, &Config::default(), None);
        assert!(p.is_noop(), "{name}");
        assert_eq!(p.skipped, Some(Skipped::ExternalName), "{name}");
    }
}

// TestSyncServicePendingDeletion: a Service being deleted gets no placeholder.
#[test]
fn test_sync_service_pending_deletion() {
    let mut svc = create_service(DEFAULT_NS, "testing-1");
    svc.metadata.deletion_timestamp = Some(time(1_700_000_001));
    let p = plan_for(&svc, &[], &node1(), &[], &Config::default(), Some(trigger(1, 0)));
    assert!(p.is_noop(), "{p:?}");
}

// TestSyncServiceWithSelector: a placeholder with the trigger-time annotation.
#[test]
fn test_sync_service_with_selector() {
    let svc = create_service(DEFAULT_NS, "testing-1");
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &[], &node1(), &Config::default(), Some(trigger(1_700_000_000, 0)));
    assert_eq!((p.create.len(), p.num_writes()), (1, 1));
    let slices = cluster.list();
    assert_eq!(slices.len(), 1);
    let s = &p.create[0];
    assert!(s.metadata.name.as_deref().unwrap().starts_with("testing-1"));
    assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME], "testing-1");
    assert_eq!(s.ports, Some(vec![]));
    assert_eq!(s.endpoints, Some(vec![]));
    assert!(!s.metadata.annotations.as_ref().unwrap()[ANNOTATION_LAST_CHANGE_TRIGGER_TIME].is_empty());
}

// TestSyncServicePodSelection: only pods matching the selector become endpoints.
#[test]
fn test_sync_service_pod_selection() {
    let svc = create_service(DEFAULT_NS, "testing-1");
    let pod1 = new_pod(1, DEFAULT_NS, true, 0, false);
    let mut pod2 = new_pod(2, DEFAULT_NS, true, 0, false);
    pod2.metadata.labels = Some(labels(&[("foo", "boo")]));
    // Not in the upstream test: a matching pod of another namespace is ignored too.
    let pod3 = new_pod(3, "elsewhere", true, 0, false);
    let mut cluster = Cluster::default();
    let p = cluster.reconcile(&svc, &[pod1, pod2, pod3], &node1(), &Config::default(), Some(trigger(1, 0)));
    assert_eq!(p.create.len(), 1);
    let slice = &cluster.list()[0];
    let eps = slice.endpoints.as_ref().unwrap();
    assert_eq!(eps.len(), 1);
    assert!(!slice.metadata.annotations.as_ref().unwrap()[ANNOTATION_LAST_CHANGE_TRIGGER_TIME].is_empty());
    assert_eq!(
        eps[0].target_ref,
        Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(DEFAULT_NS.into()),
            name: Some("pod1".into()),
            ..Default::default()
        })
    );
}

fn labelled_slice(
    name: &str,
    svc: &Service,
    service_label: Option<&str>,
    managed_by: Option<&str>,
    owned: bool,
) -> EndpointSlice {
    let mut l = labels(&[]);
    if let Some(s) = service_label {
        l.insert(LABEL_SERVICE_NAME.into(), s.into());
    }
    if let Some(m) = managed_by {
        l.insert(LABEL_MANAGED_BY.into(), m.into());
    }
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(DEFAULT_NS.into()),
            owner_references: owned.then(|| vec![crate::endpointslice::reconcile::service_owner_reference(svc)]),
            labels: Some(l),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: None,
        ports: None,
    }
}

// TestSyncServiceEndpointSlicePendingDeletion: a slice with a deletion timestamp is ignored.
#[test]
fn test_sync_service_endpoint_slice_pending_deletion() {
    let svc = create_service(DEFAULT_NS, "testing-1");
    let mut cluster = Cluster::default();
    cluster.reconcile(&svc, &[], &node1(), &Config::default(), None);
    let mut deleting = labelled_slice("epSlice-1", &svc, Some("testing-1"), Some(CONTROLLER_NAME), true);
    deleting.metadata.deletion_timestamp = Some(time(1_700_000_000));
    deleting.ports = Some(vec![EndpointPort { port: Some(1), ..Default::default() }]);
    cluster.insert(deleting);
    let p = cluster.reconcile(&svc, &[], &node1(), &Config::default(), None);
    assert!(p.is_noop(), "{p:?}");
}

// TestSyncServiceEndpointSliceLabelSelection: of 5 slices only the 2 with both labels count;
// one is recycled into the placeholder, the other deleted.
#[test]
fn test_sync_service_endpoint_slice_label_selection() {
    let svc = create_service(DEFAULT_NS, "testing-1");
    let slices = vec![
        labelled_slice("matching-1", &svc, Some("testing-1"), Some(CONTROLLER_NAME), true),
        labelled_slice("matching-2", &svc, Some("testing-1"), Some(CONTROLLER_NAME), true),
        labelled_slice("partially-matching-1", &svc, Some("testing-1"), None, false),
        labelled_slice("not-matching-1", &svc, Some("something-else"), Some(CONTROLLER_NAME), false),
        labelled_slice("not-matching-2", &svc, Some("testing-1"), Some("something-else"), false),
    ];
    let snapshot = slices.clone();
    let p = plan_for(&svc, &[], &node1(), &slices, &Config::default(), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 1));
    let touched: Vec<&str> = p.update.iter().chain(&p.delete).map(|s| s.metadata.name.as_deref().unwrap()).collect();
    assert!(touched.iter().all(|n| n.starts_with("matching-")), "{touched:?}");
    assert_eq!(slices, snapshot, "inputs are not mutated");
}

fn pod(name: &str, ips: &[&str], ready: bool, terminating: bool, extra_conditions: bool) -> Pod {
    let mut p = new_pod(0, DEFAULT_NS, ready, 0, terminating);
    p.metadata.name = Some(name.into());
    p.metadata.resource_version = None;
    let status = p.status.as_mut().unwrap();
    status.pod_ip = Some(ips[0].into());
    status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: (*ip).into() }).collect());
    if extra_conditions {
        let ready_status = if ready { "True" } else { "False" };
        status.conditions = Some(vec![
            PodCondition { type_: "Initialized".into(), status: "True".into(), ..Default::default() },
            PodCondition { type_: "Ready".into(), status: ready_status.into(), ..Default::default() },
            PodCondition { type_: "ContainersReady".into(), status: ready_status.into(), ..Default::default() },
        ]);
    }
    p
}

fn expected_ep(name: &str, address: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        addresses: vec![address.into()],
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(DEFAULT_NS.into()),
            name: Some(name.into()),
            ..Default::default()
        }),
        node_name: Some("node-1".into()),
        ..Default::default()
    }
}

fn sorted<T: std::fmt::Debug>(mut v: Vec<T>) -> Vec<String> {
    let mut out: Vec<String> = v.drain(..).map(|x| format!("{x:?}")).collect();
    out.sort();
    out
}

// TestSyncService: multi-IP pods, terminating pods, duplicate IPs.
#[test]
fn test_sync_service() {
    let service = |family: &str| Service {
        metadata: ObjectMeta {
            name: Some("foobar".into()),
            namespace: Some(DEFAULT_NS.into()),
            creation_timestamp: Some(time(1_700_000_000)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![
                ServicePort {
                    name: Some("tcp-example".into()),
                    target_port: Some(IntOrString::Int(80)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("udp-example".into()),
                    target_port: Some(IntOrString::Int(161)),
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("sctp-example".into()),
                    target_port: Some(IntOrString::Int(3456)),
                    protocol: Some("SCTP".into()),
                    ..Default::default()
                },
            ]),
            selector: Some(labels(&[("foo", "bar")])),
            ip_families: Some(vec![family.into()]),
            ..Default::default()
        }),
        status: None,
    };
    let expected_ports = vec![
        EndpointPort {
            name: Some("sctp-example".into()),
            protocol: Some("SCTP".into()),
            port: Some(3456),
            app_protocol: None,
        },
        EndpointPort {
            name: Some("udp-example".into()),
            protocol: Some("UDP".into()),
            port: Some(161),
            app_protocol: None,
        },
        EndpointPort {
            name: Some("tcp-example".into()),
            protocol: Some("TCP".into()),
            port: Some(80),
            app_protocol: None,
        },
    ];
    let multi_ip = vec![
        pod("pod0", &["10.0.0.1"], true, false, false),
        pod("pod1", &["10.0.0.2", "fd08::5678:0000:0000:9abc:def0"], true, false, false),
    ];
    let cases: Vec<(&str, Service, Vec<Pod>, Vec<Endpoint>)> = vec![
        (
            "pods with multiple IPs and Service with ipFamilies=ipv4",
            service("IPv4"),
            multi_ip.clone(),
            vec![
                expected_ep("pod0", "10.0.0.1", true, true, false),
                expected_ep("pod1", "10.0.0.2", true, true, false),
            ],
        ),
        (
            "pods with multiple IPs and Service with ipFamilies=ipv6",
            service("IPv6"),
            multi_ip,
            vec![expected_ep("pod1", "fd08::5678:0:0:9abc:def0", true, true, false)],
        ),
        (
            "Terminating pods",
            service("IPv4"),
            vec![pod("pod0", &["10.0.0.1"], true, false, false), pod("pod1", &["10.0.0.2"], true, true, false)],
            vec![
                expected_ep("pod0", "10.0.0.1", true, true, false),
                expected_ep("pod1", "10.0.0.2", false, true, true),
            ],
        ),
        (
            "Not ready terminating pods",
            service("IPv4"),
            vec![pod("pod0", &["10.0.0.1"], true, false, false), pod("pod1", &["10.0.0.2"], false, true, false)],
            vec![
                expected_ep("pod0", "10.0.0.1", true, true, false),
                expected_ep("pod1", "10.0.0.2", false, false, true),
            ],
        ),
        (
            "Ready and Complete pods with same IPs",
            service("IPv4"),
            vec![pod("pod0", &["10.0.0.1"], true, false, true), pod("pod1", &["10.0.0.1"], false, false, true)],
            vec![
                expected_ep("pod0", "10.0.0.1", true, true, false),
                expected_ep("pod1", "10.0.0.1", false, false, false),
            ],
        ),
        (
            "Two Ready pods with same IPs",
            service("IPv4"),
            vec![pod("pod0", &["10.0.0.1"], true, false, true), pod("pod1", &["10.0.0.1"], true, false, true)],
            vec![
                expected_ep("pod0", "10.0.0.1", true, true, false),
                expected_ep("pod1", "10.0.0.1", true, true, false),
            ],
        ),
    ];
    for (name, svc, pods, want_endpoints) in cases {
        let creation = trigger(1_700_000_000, 0);
        let mut cluster = Cluster::default();
        let p = cluster.reconcile(&svc, &pods, &node1(), &Config::default(), Some(creation));
        assert_eq!((p.create.len(), p.num_writes()), (1, 1), "{name}");
        let slices = cluster.list();
        assert_eq!(slices.len(), 1, "{name}");
        let slice = &slices[0];
        assert_eq!(
            slice.metadata.annotations.as_ref().unwrap()[ANNOTATION_LAST_CHANGE_TRIGGER_TIME],
            format_rfc3339_nano(&creation),
            "{name}"
        );
        assert_eq!(sorted(slice.ports.clone().unwrap()), sorted(expected_ports.clone()), "{name}: ports");
        assert_eq!(sorted(slice.endpoints.clone().unwrap()), sorted(want_endpoints), "{name}: endpoints");
    }
}

// Test_dropEndpointSlicesPendingDeletion: slices with a deletion timestamp play no part (they
// are neither updated, deleted, nor counted when deciding about placeholders).
#[test]
fn test_drop_endpoint_slices_pending_deletion() {
    let (svc, meta) = new_service_and_endpoint_meta("foo", "test");
    let mut deleting = new_empty_endpoint_slice(1, "test", &meta, &svc);
    deleting.metadata.deletion_timestamp = Some(time(1_700_000_000));
    let mut v4 = new_empty_endpoint_slice(2, "test", &meta, &svc);
    let pod = new_pod(1, "test", true, 1, false);
    v4.endpoints = Some(vec![pod_to_endpoint(&pod, Some(&node("node-1")), &svc, crate::podutil::IpFamily::IPv4)]);
    let existing = vec![deleting.clone(), v4];
    let p = plan_for(&svc, &[pod], &node1(), &existing, &config(100), None);
    assert!(p.is_noop(), "{p:?}");

    // Without pods the live slice is recycled as the placeholder; the deleting one is untouched.
    let p = plan_for(&svc, &[], &node1(), &existing, &config(100), None);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    assert_eq!(p.update[0].metadata.name.as_deref(), Some("foo-2"));
    assert_eq!(existing[0], deleting, "input not mutated");
}
