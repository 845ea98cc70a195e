//! Ports of `k8s.io/endpointslice` v0.37.1 `utils_test.go` (the parts not already next to their
//! code: `TestFindPort` is in `podutil`, `Test_hintsEnabled` in `topology`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, ObjectReference, Pod, PodIP, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::endpointslice::desired::address_types_for_service;
use crate::endpointslice::labels::{LABEL_HEADLESS, desired_slice_labels, service_controller_key};
use crate::endpointslice::reconcile::{new_endpoint_slice, service_owner_reference};
use crate::podutil::IpFamily;

// TestNewEndpointSlice. Upstream's `generateName: foo-` has no counterpart: new slices are named
// when the plan is complete (see `naming`), so `name` is unset here.
#[test]
fn test_new_endpoint_slice() {
    let ports =
        vec![EndpointPort { name: Some("foo".into()), protocol: Some("TCP".into()), port: None, app_protocol: None }];
    let service = Service {
        metadata: ObjectMeta { name: Some("foo".into()), namespace: Some("test".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some("1.1.1.1".into()),
            ports: Some(vec![ServicePort { port: 80, ..Default::default() }]),
            selector: Some(labels(&[("foo", "bar")])),
            ..Default::default()
        }),
        status: None,
    };
    let expected = |extra: &[(&str, &str)]| {
        let mut l = labels(&[(LABEL_SERVICE_NAME, "foo"), (LABEL_MANAGED_BY, CONTROLLER_NAME)]);
        l.extend(labels(extra));
        EndpointSlice {
            metadata: ObjectMeta {
                labels: Some(l),
                owner_references: Some(vec![service_owner_reference(&service)]),
                namespace: Some("test".into()),
                ..Default::default()
            },
            ports: Some(ports.clone()),
            address_type: "IPv4".into(),
            endpoints: Some(vec![]),
        }
    };
    let cases: Vec<(&str, Box<dyn Fn(&mut Service)>, EndpointSlice)> = vec![
        ("Service without labels", Box::new(|_| {}), expected(&[])),
        (
            "Service with labels",
            Box::new(|s| s.metadata.labels = Some(labels(&[("foo", "bar")]))),
            expected(&[("foo", "bar")]),
        ),
        (
            "Headless Service with labels",
            Box::new(|s| {
                s.metadata.labels = Some(labels(&[("foo", "bar")]));
                s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
            }),
            expected(&[("foo", "bar"), (LABEL_HEADLESS, "")]),
        ),
        (
            "Service with multiple labels",
            Box::new(|s| s.metadata.labels = Some(labels(&[("foo", "bar"), ("foo2", "bar2")]))),
            expected(&[("foo", "bar"), ("foo2", "bar2")]),
        ),
        (
            "Evil service hijacking endpoint slices labels",
            Box::new(|s| {
                s.metadata.labels =
                    Some(labels(&[(LABEL_SERVICE_NAME, "bad"), (LABEL_MANAGED_BY, "actor"), ("foo", "bar")]))
            }),
            expected(&[("foo", "bar")]),
        ),
        (
            "Service with annotations",
            Box::new(|s| s.metadata.annotations = Some(labels(&[("foo", "bar")]))),
            expected(&[]),
        ),
    ];
    for (name, update, want) in cases {
        let mut svc = service.clone();
        update(&mut svc);
        assert_eq!(new_endpoint_slice(&svc, &ports, "IPv4", CONTROLLER_NAME), want, "{name}");
    }
}

// TestPodToEndpoint.
#[test]
fn test_pod_to_endpoint() {
    let ns = "test";
    let (svc, _) = new_service_and_endpoint_meta("foo", ns);
    let (mut svc_pnra, _) = new_service_and_endpoint_meta("publishnotready", ns);
    svc_pnra.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);

    let ready_pod = new_pod(1, ns, true, 1, false);
    let ready_terminating_pod = new_pod(1, ns, true, 1, true);
    let mut ready_pod_hostname = new_pod(1, ns, true, 1, false);
    ready_pod_hostname.spec.as_mut().unwrap().subdomain = Some("foo".into());
    ready_pod_hostname.spec.as_mut().unwrap().hostname = Some("example-hostname".into());
    let unready_pod = new_pod(1, ns, false, 1, false);
    let unready_terminating_pod = new_pod(1, ns, false, 1, true);
    let mut multi_ip_pod = new_pod(1, ns, true, 1, false);
    multi_ip_pod.status.as_mut().unwrap().pod_ips =
        Some(vec![PodIP { ip: "1.2.3.4".into() }, PodIP { ip: "1234::5678:0000:0000:9abc:def0".into() }]);
    let mut node1 = node("node-1");
    node1.metadata.labels = Some(labels(&[
        ("topology.kubernetes.io/zone", "us-central1-a"),
        ("topology.kubernetes.io/region", "us-central1"),
    ]));

    let ep =
        |address: &str, ready: bool, serving: bool, terminating: bool, zone: Option<&str>, hostname: Option<&str>| {
            Endpoint {
                addresses: vec![address.into()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                node_name: Some("node-1".into()),
                zone: zone.map(str::to_owned),
                hostname: hostname.map(str::to_owned),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(ns.into()),
                    name: Some("pod1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
    let zone = Some("us-central1-a");
    let cases: Vec<(&str, &Pod, Option<&Node>, &Service, Endpoint)> = vec![
        ("Ready pod", &ready_pod, None, &svc, ep("1.2.3.5", true, true, false, None, None)),
        (
            "Ready pod + publishNotReadyAddresses",
            &ready_pod,
            None,
            &svc_pnra,
            ep("1.2.3.5", true, true, false, None, None),
        ),
        ("Unready pod", &unready_pod, None, &svc, ep("1.2.3.5", false, false, false, None, None)),
        (
            "Unready pod + publishNotReadyAddresses",
            &unready_pod,
            None,
            &svc_pnra,
            ep("1.2.3.5", true, false, false, None, None),
        ),
        ("Ready pod + node labels", &ready_pod, Some(&node1), &svc, ep("1.2.3.5", true, true, false, zone, None)),
        (
            "Multi IP Ready pod + node labels",
            &multi_ip_pod,
            Some(&node1),
            &svc,
            ep("1.2.3.4", true, true, false, zone, None),
        ),
        (
            "Ready pod + hostname",
            &ready_pod_hostname,
            Some(&node1),
            &svc,
            ep("1.2.3.5", true, true, false, zone, Some("example-hostname")),
        ),
        ("Ready terminating pod", &ready_terminating_pod, None, &svc, ep("1.2.3.5", false, true, true, None, None)),
        (
            "Not ready terminating pod",
            &unready_terminating_pod,
            None,
            &svc,
            ep("1.2.3.5", false, false, true, None, None),
        ),
    ];
    for (name, pod, node, svc, want) in cases {
        assert_eq!(pod_to_endpoint(pod, node, svc, IpFamily::IPv4), want, "{name}");
    }

    // Not an upstream case: the UID is part of the targetRef, and the IPv6 address of the
    // multi-IP pod goes to IPv6 slices, canonicalised.
    let mut with_uid = ready_pod.clone();
    with_uid.metadata.uid = Some("uid-1".into());
    let got = pod_to_endpoint(&with_uid, None, &svc, IpFamily::IPv4);
    assert_eq!(got.target_ref.unwrap().uid.as_deref(), Some("uid-1"));
    let got = pod_to_endpoint(&multi_ip_pod, None, &svc, IpFamily::IPv6);
    assert_eq!(got.addresses, vec!["1234::5678:0:0:9abc:def0".to_owned()]);
}

// TestServiceControllerKey. Upstream's "nil EndpointSlice" case has no Rust counterpart.
#[test]
fn test_service_controller_key() {
    assert!(service_controller_key(&EndpointSlice::default()).is_err(), "empty EndpointSlice");
    assert_eq!(
        service_controller_key(&EndpointSlice::default()).unwrap_err().to_string(),
        "EndpointSlice missing kubernetes.io/service-name label"
    );
    let valid = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            labels: Some(labels(&[(LABEL_SERVICE_NAME, "svc")])),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(service_controller_key(&valid).unwrap(), "ns/svc");
    let empty_name = EndpointSlice {
        metadata: ObjectMeta { labels: Some(labels(&[(LABEL_SERVICE_NAME, "")])), ..Default::default() },
        ..Default::default()
    };
    assert!(service_controller_key(&empty_name).is_err());
}

fn sport(name: &str, port: i32, target: IntOrString, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(str::to_owned),
        ..Default::default()
    }
}

fn eport(name: &str, port: i32, app_protocol: Option<&str>) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(str::to_owned),
    }
}

fn cport(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, protocol: Some("TCP".into()), ..Default::default() }
}

// TestGetEndpointPorts.
#[test]
fn test_get_endpoint_ports() {
    let svc_with = |ports: Vec<ServicePort>| Service {
        spec: Some(ServiceSpec { ports: Some(ports), ..Default::default() }),
        ..Default::default()
    };
    let pod_with = |containers: Vec<Container>, init: Vec<Container>| Pod {
        spec: Some(PodSpec { containers, init_containers: Some(init), ..Default::default() }),
        ..Default::default()
    };
    let ctr = |ports: Vec<ContainerPort>| Container { ports: Some(ports), ..Default::default() };
    let sidecar = |ports: Vec<ContainerPort>| Container {
        ports: Some(ports),
        restart_policy: Some("Always".into()),
        ..Default::default()
    };
    let cases = vec![
        (
            "service with AppProtocol on one port",
            svc_with(vec![sport("http", 80, IntOrString::Int(80), Some("example.com/custom-protocol"))]),
            pod_with(vec![ctr(vec![])], vec![]),
            vec![eport("http", 80, Some("example.com/custom-protocol"))],
        ),
        (
            "service with named port and AppProtocol on one port",
            svc_with(vec![
                sport("http", 80, IntOrString::Int(80), None),
                sport("https", 0, IntOrString::String("https".into()), Some("https")),
            ]),
            pod_with(vec![ctr(vec![cport("https", 443)])], vec![]),
            vec![eport("http", 80, None), eport("https", 443, Some("https"))],
        ),
        (
            "service with named port for restartable init container",
            svc_with(vec![
                sport("http-sidecar", 8080, IntOrString::Int(8080), None),
                sport("http", 8090, IntOrString::String("http".into()), None),
            ]),
            pod_with(vec![ctr(vec![cport("http", 8090)])], vec![sidecar(vec![cport("http-sidecar", 8080)])]),
            vec![eport("http-sidecar", 8080, None), eport("http", 8090, None)],
        ),
        (
            "service with same named port for regular and restartable init container",
            svc_with(vec![sport("http", 80, IntOrString::String("http".into()), None)]),
            pod_with(vec![ctr(vec![cport("http", 8090)])], vec![sidecar(vec![cport("http", 8080)])]),
            vec![eport("http", 8090, None)],
        ),
    ];
    for (name, svc, pod, want) in cases {
        assert_eq!(endpoint_ports(&svc, &pod), want, "{name}");
    }

    // Not upstream rows: an unresolvable named port is omitted; a headless Service without
    // ports gets an empty list.
    let svc = svc_with(vec![
        sport("a", 80, IntOrString::String("missing".into()), None),
        sport("b", 81, IntOrString::Int(81), None),
    ]);
    assert_eq!(endpoint_ports(&svc, &pod_with(vec![], vec![])), vec![eport("b", 81, None)]);
    let headless = Service {
        spec: Some(ServiceSpec { cluster_ip: Some("None".into()), ..Default::default() }),
        ..Default::default()
    };
    assert!(endpoint_ports(&headless, &pod_with(vec![], vec![])).is_empty());
}

// TestSetEndpointSliceLabels.
#[test]
fn test_set_endpoint_slice_labels() {
    let service = Service {
        metadata: ObjectMeta { name: Some("foo".into()), namespace: Some("test".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort { port: 80, ..Default::default() }]),
            selector: Some(labels(&[("foo", "bar")])),
            cluster_ip: Some("1.1.1.1".into()),
            ..Default::default()
        }),
        status: None,
    };
    let reserved = [(LABEL_SERVICE_NAME, "foo"), (LABEL_MANAGED_BY, CONTROLLER_NAME)];
    let with_reserved = |extra: &[(&str, &str)]| {
        let mut l = labels(&reserved);
        l.extend(labels(extra));
        Some(l)
    };
    let headless = |s: &mut Service| s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let set_labels =
        |pairs: &'static [(&'static str, &'static str)]| move |s: &mut Service| s.metadata.labels = Some(labels(pairs));

    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        Option<BTreeMap<String, String>>,
        Box<dyn Fn(&mut Service)>,
        BTreeMap<String, String>,
        bool,
    )> = vec![
        ("Service without labels and empty endpoint slice", None, Box::new(|_| {}), with_reserved(&[]).unwrap(), false),
        (
            "Headless service with labels and empty endpoint slice",
            None,
            Box::new(move |s| {
                headless(s);
                set_labels(&[("foo", "bar")])(s);
            }),
            with_reserved(&[(LABEL_HEADLESS, ""), ("foo", "bar")]).unwrap(),
            true,
        ),
        (
            "Headless service without labels and empty endpoint slice",
            None,
            Box::new(headless),
            with_reserved(&[(LABEL_HEADLESS, "")]).unwrap(),
            false,
        ),
        (
            "Non Headless service with Headless label and empty endpoint slice",
            None,
            Box::new(set_labels(&[(LABEL_HEADLESS, "")])),
            with_reserved(&[]).unwrap(),
            false,
        ),
        (
            "Headless Service change to ClusterIP Service with headless label",
            with_reserved(&[(LABEL_HEADLESS, "")]),
            Box::new(set_labels(&[(LABEL_HEADLESS, "")])),
            with_reserved(&[]).unwrap(),
            false,
        ),
        (
            "Headless Service change to ClusterIP Service",
            with_reserved(&[(LABEL_HEADLESS, "")]),
            Box::new(|_| {}),
            with_reserved(&[]).unwrap(),
            false,
        ),
        (
            "Headless service and endpoint slice with same labels",
            with_reserved(&[("foo", "bar")]),
            Box::new(move |s| {
                headless(s);
                set_labels(&[("foo", "bar")])(s);
            }),
            with_reserved(&[(LABEL_HEADLESS, ""), ("foo", "bar")]).unwrap(),
            false,
        ),
        (
            "Service with labels and empty endpoint slice",
            None,
            Box::new(set_labels(&[("foo", "bar")])),
            with_reserved(&[("foo", "bar")]).unwrap(),
            true,
        ),
        (
            "Slice with labels and service without labels",
            with_reserved(&[("foo", "bar")]),
            Box::new(|_| {}),
            with_reserved(&[]).unwrap(),
            true,
        ),
        (
            "Slice with headless label and service with ClusterIP",
            with_reserved(&[(LABEL_HEADLESS, "")]),
            Box::new(|_| {}),
            with_reserved(&[]).unwrap(),
            false,
        ),
        (
            "Slice with reserved labels and service with labels",
            with_reserved(&[]),
            Box::new(set_labels(&[("foo", "bar")])),
            with_reserved(&[("foo", "bar")]).unwrap(),
            true,
        ),
        (
            "Evil service trying to hijack slice labels only well-known slice labels",
            with_reserved(&[]),
            Box::new(set_labels(&[
                (LABEL_SERVICE_NAME, "bad"),
                (LABEL_MANAGED_BY, "actor"),
                (LABEL_HEADLESS, "invalid"),
            ])),
            with_reserved(&[]).unwrap(),
            false,
        ),
        (
            "Evil service trying to hijack slice labels with updates",
            with_reserved(&[]),
            Box::new(set_labels(&[(LABEL_SERVICE_NAME, "bad"), (LABEL_MANAGED_BY, "actor"), ("foo", "bar")])),
            with_reserved(&[("foo", "bar")]).unwrap(),
            true,
        ),
    ];
    for (name, slice_labels, update, want_labels, want_changed) in cases {
        let mut svc = service.clone();
        update(&mut svc);
        let (got, changed) = desired_slice_labels(slice_labels.as_ref(), &svc, CONTROLLER_NAME);
        assert_eq!(changed, want_changed, "{name}: changed");
        assert_eq!(got, want_labels, "{name}: labels");
    }
}

// TestSupportedServiceAddressType.
#[test]
fn test_supported_service_address_type() {
    use IpFamily::{IPv4, IPv6};
    let svc = |cluster_ip: Option<&str>, families: Option<&[&str]>, selector: bool| Service {
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(str::to_owned),
            ip_families: families.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
            selector: selector.then(|| labels(&[("foo", "bar")])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases: Vec<(&str, Service, Vec<IpFamily>)> = vec![
        ("v4 service with no ip families (cluster upgrade)", svc(Some("10.0.0.10"), None, false), vec![IPv4]),
        ("v6 service with no ip families (cluster upgrade)", svc(Some("2000::1"), None, false), vec![IPv6]),
        ("v4 service", svc(None, Some(&["IPv4"]), false), vec![IPv4]),
        ("v6 services", svc(None, Some(&["IPv6"]), false), vec![IPv6]),
        ("v4,v6 service", svc(None, Some(&["IPv4", "IPv6"]), false), vec![IPv4, IPv6]),
        ("v6,v4 service", svc(None, Some(&["IPv6", "IPv4"]), false), vec![IPv6, IPv4]),
        (
            "headless with no selector and no families (old api-server)",
            svc(Some("None"), None, false),
            vec![IPv6, IPv4],
        ),
        ("headless with selector and no families (old api-server)", svc(Some("None"), None, true), vec![IPv6, IPv4]),
        (
            "headless with no selector with families",
            svc(Some("None"), Some(&["IPv4", "IPv6"]), false),
            vec![IPv4, IPv6],
        ),
        ("headless with selector with families", svc(Some("None"), Some(&["IPv4", "IPv6"]), true), vec![IPv4, IPv6]),
    ];
    for (name, service, want) in cases {
        let got = address_types_for_service(&service);
        assert_eq!(got, want.into_iter().collect(), "{name}");
    }
    // Not upstream rows: an empty family list and an empty cluster IP fall back to both; unknown
    // family strings are ignored.
    assert_eq!(address_types_for_service(&svc(Some(""), Some(&[]), true)).len(), 2);
    assert_eq!(address_types_for_service(&svc(Some("10.0.0.1"), Some(&["IPv7"]), true)), [IPv4].into_iter().collect());
    assert_eq!(address_types_for_service(&Service::default()).len(), 2);
}
