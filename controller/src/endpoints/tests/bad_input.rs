//! Bad input, edge cases and the deliberate differences (see the module docs of
//! `crate::endpoints`).

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::endpoints::{
    ANNOTATION_OVER_CAPACITY, MAX_CAPACITY, OVER_CAPACITY_TRUNCATED, PlanWarning, Skipped, desired_labels,
};
use crate::endpointslice::labels::ANNOTATION_LAST_CHANGE_TRIGGER_TIME;
use crate::podutil::IpFamily;

fn svc80(ns: &str) -> Service {
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("http", 80, "TCP", 8080)], IPV4);
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.1".into());
    svc
}

fn set_ips(pod: &mut Pod, ips: &[&str]) {
    let status = pod.status.as_mut().unwrap();
    status.pod_ip = ips.first().map(|s| (*s).to_owned());
    status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: (*ip).to_owned() }).collect());
}

fn all_addresses(e: &Endpoints) -> Vec<&EndpointAddress> {
    e.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()))
        .collect()
}

#[test]
fn invalid_pod_ips_are_skipped_and_reported() {
    let ns = "ns";
    let mut good_after_bad = test_pod(ns, 0, 1, true, IPV4);
    set_ips(&mut good_after_bad, &["bogus", "10.0.0.1"]);
    let mut only_bad = test_pod(ns, 1, 1, true, IPV4);
    set_ips(&mut only_bad, &["300.1.1.1"]);
    let p = run(&svc80(ns), &[good_after_bad, only_bad], None);
    let e = expect_create(&p);
    let ips: Vec<&str> = all_addresses(e).iter().map(|a| a.ip.as_str()).collect();
    assert_eq!(ips, vec!["10.0.0.1"], "no <nil> address, the next valid IP is used");
    assert_eq!(
        p.warnings,
        vec![
            PlanWarning::InvalidPodIp { pod: "pod0".into(), ip: "bogus".into() },
            PlanWarning::InvalidPodIp { pod: "pod1".into(), ip: "300.1.1.1".into() },
            PlanWarning::NoAddressOfFamily { pod: "pod1".into(), family: IpFamily::IPv4 },
        ]
    );
}

#[test]
fn ips_are_canonicalised() {
    let ns = "ns";
    let mut v4 = test_pod(ns, 0, 1, true, IPV4);
    set_ips(&mut v4, &["010.000.000.001"]);
    let mut v6 = test_pod(ns, 1, 1, true, IPV6);
    set_ips(&mut v6, &["FD00:0:0:0:0:0:0:0001"]);
    let e = run(&svc80(ns), &[v4], None);
    assert_eq!(all_addresses(expect_create(&e))[0].ip, "10.0.0.1");
    let mut svc6 = svc80(ns);
    svc6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let e = run(&svc6, &[v6], None);
    assert_eq!(all_addresses(expect_create(&e))[0].ip, "fd00::1");
}

#[test]
fn pods_without_an_ip_of_the_family_are_reported() {
    let ns = "ns";
    let pod = test_pod(ns, 0, 1, true, IPV4);
    let mut svc = svc80(ns);
    svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let p = run(&svc, &[pod], None);
    assert_eq!(expect_create(&p).subsets, None);
    assert_eq!(p.warnings, vec![PlanWarning::NoAddressOfFamily { pod: "pod0".into(), family: IpFamily::IPv6 }]);

    // status.podIP without status.podIPs: eligible, but upstream reads only podIPs.
    let mut pod = test_pod(ns, 0, 1, true, IPV4);
    pod.status.as_mut().unwrap().pod_ips = None;
    let p = run(&svc80(ns), &[pod], None);
    assert_eq!(expect_create(&p).subsets, None);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn duplicate_addresses() {
    let ns = "ns";
    // Two pods with the same IP and UID (impossible in a real cluster): one address, reported.
    let mut a = test_pod(ns, 0, 1, true, IPV4);
    let mut b = test_pod(ns, 1, 1, true, IPV4);
    for p in [&mut a, &mut b] {
        set_ips(p, &["10.0.0.1"]);
        p.metadata.uid = Some("same".into());
    }
    let p = run(&svc80(ns), &[b.clone(), a.clone()], None);
    let e = expect_create(&p);
    let addrs = all_addresses(e);
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].target_ref.as_ref().unwrap().name.as_deref(), Some("pod0"), "first pod by name wins");
    assert_eq!(
        p.warnings,
        vec![PlanWarning::DuplicateAddress { ip: "10.0.0.1".into(), pod: "pod1".into(), kept: "pod0".into() }]
    );

    // hostNetwork pods share an IP but not a UID: both kept, even one ready and one not.
    a.metadata.uid = Some("uid-a".into());
    b.metadata.uid = Some("uid-b".into());
    b.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    let p = run(&svc80(ns), &[a, b], None);
    let e = expect_create(&p);
    assert_eq!(counts(e), (1, 1));
    assert!(p.warnings.is_empty());
}

#[test]
fn existing_with_duplicates_and_empty_subsets_is_not_rewritten() {
    let ns = "ns";
    let pods = add_pods(ns, 2, 1, 0, IPV4);
    let svc = svc80(ns);
    let stored = apply(None, &run(&svc, &pods, None)).unwrap();
    // Same content, but packed badly: duplicates, an empty subset, split subsets.
    let mut messy = stored.clone();
    let s = messy.subsets.as_ref().unwrap()[0].clone();
    let port = s.ports.clone().unwrap();
    let a = s.addresses.clone().unwrap();
    messy.subsets = Some(vec![
        EndpointSubset { addresses: Some(vec![a[1].clone(), a[0].clone(), a[1].clone()]), ..s.clone() },
        EndpointSubset { ports: Some(port.clone()), ..Default::default() },
        EndpointSubset { addresses: Some(vec![a[0].clone()]), not_ready_addresses: Some(vec![]), ports: Some(port) },
    ]);
    assert_eq!(run(&svc, &pods, Some(&messy)).action, Action::Nothing);
}

#[test]
fn ten_thousand_pods() {
    let ns = "ns";
    // 6,000 ready and 4,000 not-ready pods, two ports.
    let pods = add_pods(ns, 6000, 2, 4000, IPV4);
    let svc = service(
        ns,
        "foo",
        Some(&[("foo", "bar")]),
        vec![
            sport("a", 80, "TCP", 8080),
            ServicePort {
                name: Some("b".into()),
                port: 81,
                target_port: Some(IntOrString::String("port1".into())),
                ..Default::default()
            },
        ],
        IPV4,
    );
    let p = run(&svc, &pods, None);
    let e = expect_create(&p);
    assert_eq!(counts(e), (MAX_CAPACITY, 0));
    assert_eq!(
        e.metadata.annotations.as_ref().unwrap().get(ANNOTATION_OVER_CAPACITY).unwrap(),
        OVER_CAPACITY_TRUNCATED
    );
    assert_eq!(p.counts.ready, 6000);
    assert_eq!(p.counts.not_ready, 4000);
    assert!(p.warnings.contains(&PlanWarning::Truncated { total: 10_000, kept: MAX_CAPACITY }));
    // One subset (both ports share the address set), the first 1000 addresses in IP byte order.
    assert_eq!(e.subsets.as_ref().unwrap().len(), 1);
    let stored = apply(None, &p);
    assert_eq!(run(&svc, &pods, stored.as_ref()).action, Action::Nothing, "DIFFERENCES 2: no rewrite");
}

#[test]
fn ports_without_names() {
    let ns = "ns";
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    // One unnamed port is fine.
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    let p = run(&svc, &pods, None);
    assert!(p.warnings.is_empty());
    assert_eq!(expect_create(&p).subsets.as_ref().unwrap()[0].ports, Some(vec![eport("", 8080, "TCP")]));
    // Several, some unnamed: upstream's outcome (both ports, no names), plus a warning.
    let svc =
        service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080), sport("", 81, "TCP", 8081)], IPV4);
    let p = run(&svc, &pods, None);
    assert_eq!(p.warnings, vec![PlanWarning::UnnamedServicePorts { ports: 2 }]);
    assert_eq!(
        expect_create(&p).subsets.as_ref().unwrap()[0].ports,
        Some(vec![eport("", 8080, "TCP"), eport("", 8081, "TCP")])
    );
}

#[test]
fn unresolvable_ports_are_skipped() {
    let ns = "ns";
    let pods = add_pods(ns, 1, 1, 0, IPV4); // declares port0 only
    let named = |name: &str, target: &str| ServicePort {
        name: Some(name.into()),
        port: 80,
        target_port: Some(IntOrString::String(target.into())),
        ..Default::default()
    };
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![named("a", "port0"), named("b", "missing")], IPV4);
    let p = run(&svc, &pods, None);
    assert_eq!(
        expect_create(&p).subsets,
        Some(vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("a", 8080, "TCP")])])
    );
    assert!(matches!(&p.warnings[..], [PlanWarning::PortNotFound(e)] if e.port_name == "missing"));
    // Every port fails: the pod contributes nothing.
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![named("b", "missing")], IPV4);
    assert_eq!(expect_create(&run(&svc, &pods, None)).subsets, None);
}

#[test]
fn truncation_drops_subsets_it_empties() {
    // DIFFERENCES 3: 999 ready addresses on port a, then one not-ready pod on port b and one on
    // port c. One slot is left for two subsets: the second one would be empty.
    let ns = "ns";
    let named = |name: &str| ServicePort {
        name: Some(name.into()),
        port: 80,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    };
    let with_port = |id: usize, ready: bool, port: &str| {
        let mut p = test_pod(ns, id, 0, ready, IPV4);
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some(port.into()),
            container_port: 9000,
            ..Default::default()
        }]);
        p
    };
    let mut pods: Vec<Pod> = (0..999).map(|i| with_port(i, true, "a")).collect();
    pods.push(with_port(999, false, "b"));
    pods.push(with_port(1000, false, "c"));
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![named("a"), named("b"), named("c")], IPV4);
    let p = run(&svc, &pods, None);
    let e = expect_create(&p);
    assert_eq!(counts(e), (999, 1));
    let subsets = e.subsets.as_ref().unwrap();
    assert_eq!(subsets.len(), 2, "the emptied subset is gone");
    assert!(subsets.iter().all(|s| s.addresses.is_some() || s.not_ready_addresses.is_some()));
}

#[test]
fn truncated_object_is_not_rewritten_and_untruncates() {
    // DIFFERENCES 2, and the annotation goes away once back under capacity.
    let ns = "ns";
    let svc = svc80(ns);
    let pods = add_pods(ns, 1001, 1, 0, IPV4);
    let stored = apply(None, &run(&svc, &pods, None));
    assert_eq!(counts(stored.as_ref().unwrap()), (1000, 0));
    let later = run_at(&svc, &pods, stored.as_ref(), Some(trigger_time()));
    assert_eq!(later.action, Action::Nothing);
    let p = run(&svc, &pods[..1000], stored.as_ref());
    let e = expect_update(&p);
    assert_eq!(e.metadata.annotations, None);
    assert_eq!(counts(e), (1000, 0));
    // The pod that was cut off is in now.
    assert!(all_addresses(e).iter().any(|a| a.ip == test_ip(999, "IPv4")));
}

#[test]
fn service_labels_with_reserved_keys_converge() {
    // DIFFERENCES 4: upstream would rewrite these on every sync.
    let ns = "ns";
    let mut svc = svc80(ns);
    svc.metadata.labels = Some(map(&[(LABEL_HEADLESS, "x"), (LABEL_MANAGED_BY, "someone"), ("app", "a")]));
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let p = run(&svc, &pods, None);
    assert_eq!(expect_create(&p).metadata.labels, Some(map(&[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY), ("app", "a")])));
    let stored = apply(None, &p);
    assert_eq!(run(&svc, &pods, stored.as_ref()).action, Action::Nothing);
}

#[test]
fn annotation_drift_alone_causes_no_write() {
    let ns = "ns";
    let svc = svc80(ns);
    let pods = add_pods(ns, 2, 1, 0, IPV4);
    let mut stored = apply(None, &run_at(&svc, &pods, None, Some(trigger_time()))).unwrap();
    // A later trigger time, a removed trigger time, a foreign annotation, a missing headless
    // label: none of these alone is a reason to write.
    assert_eq!(run_at(&svc, &pods, Some(&stored), None).action, Action::Nothing);
    stored.metadata.annotations.as_mut().unwrap().insert("x".into(), "y".into());
    assert_eq!(run(&svc, &pods, Some(&stored)).action, Action::Nothing);
    // A wrong over-capacity annotation is.
    stored.metadata.annotations.as_mut().unwrap().insert(ANNOTATION_OVER_CAPACITY.into(), "warning".into());
    let p = run(&svc, &pods, Some(&stored));
    let e = expect_update(&p);
    let annotations = e.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations.get(ANNOTATION_OVER_CAPACITY), None);
    assert_eq!(annotations.get("x").map(String::as_str), Some("y"), "other annotations are kept");
    assert_eq!(annotations.get(ANNOTATION_LAST_CHANGE_TRIGGER_TIME), None, "no trigger time: removed");
}

#[test]
fn update_keeps_unrelated_metadata() {
    let ns = "ns";
    let svc = svc80(ns);
    let mut existing = endpoints(ns, "7", &[("old", "label")], &[("keep", "me")], None);
    existing.metadata.uid = Some("uid-e".into());
    existing.metadata.finalizers = Some(vec!["f".into()]);
    let p = run(&svc, &add_pods(ns, 1, 1, 0, IPV4), Some(&existing));
    let e = expect_update(&p);
    assert_eq!(e.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(e.metadata.uid.as_deref(), Some("uid-e"));
    assert_eq!(e.metadata.finalizers, Some(vec!["f".into()]));
    assert_eq!(e.metadata.annotations, Some(map(&[("keep", "me")])));
    assert_eq!(e.metadata.labels, Some(map(&[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)])), "labels replaced");
}

#[test]
fn cached_object_without_resource_version_is_created() {
    let ns = "ns";
    let existing = endpoints(ns, "", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], None);
    let p = run(&svc80(ns), &[], Some(&existing));
    assert!(matches!(p.action, Action::Create(_)));
}

#[test]
fn kcm_subset_order_is_not_a_change() {
    let ns = "ns";
    let named = |name: &str, port: i32, target: &str| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        ..Default::default()
    };
    // pod0 serves both ports, pod1 only port0: two subsets.
    let mut pods = add_pods(ns, 2, 2, 0, IPV4);
    pods[1].spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap().truncate(1);
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![named("a", 80, "port0"), named("b", 81, "port1")], IPV4);
    let stored = apply(None, &run(&svc, &pods, None)).unwrap();
    assert_eq!(stored.subsets.as_ref().unwrap().len(), 2);
    let mut kcm = stored.clone();
    kcm.subsets.as_mut().unwrap().reverse();
    for s in kcm.subsets.as_mut().unwrap() {
        s.addresses.as_mut().unwrap().reverse();
        // kcm's targetRef carries nothing else, but an old resourceVersion would not matter.
        for a in s.addresses.as_mut().unwrap() {
            a.target_ref.as_mut().unwrap().resource_version = Some("42".into());
        }
    }
    assert_eq!(run(&svc, &pods, Some(&kcm)).action, Action::Nothing);
}

#[test]
fn degenerate_objects_do_not_panic() {
    let ns = "ns";
    // A Service without spec has no selector.
    let bare =
        Service { metadata: ObjectMeta { namespace: Some(ns.into()), ..Default::default() }, ..Default::default() };
    assert_eq!(run(&bare, &[], None).skipped, Some(Skipped::NoSelector));
    // Empty pods, a bogus IP family, a nameless Service, garbage existing subsets.
    let svc = Service {
        metadata: ObjectMeta { namespace: Some(ns.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some(Default::default()),
            ip_families: Some(vec!["bogus".into()]),
            ports: Some(vec![ServicePort::default()]),
            ..Default::default()
        }),
        status: None,
    };
    let pods = vec![
        Pod { metadata: ObjectMeta { namespace: Some(ns.into()), ..Default::default() }, ..Default::default() },
        test_pod(ns, 0, 0, true, IPV4),
    ];
    let garbage = Endpoints {
        metadata: ObjectMeta { resource_version: Some("1".into()), ..Default::default() },
        subsets: Some(vec![
            EndpointSubset::default(),
            EndpointSubset { addresses: Some(vec![EndpointAddress::default()]), ..Default::default() },
            EndpointSubset { ports: Some(vec![EndpointPort { port: -5, ..Default::default() }]), ..Default::default() },
        ]),
    };
    let p = run(&svc, &pods, Some(&garbage));
    // A bogus family counts as IPv4; ServicePort::default() resolves to port 0 (not a valid
    // port, so upstream-like repacking drops it from the port list).
    let e = expect_update(&p);
    assert_eq!(all_addresses(e).iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(), vec!["1.2.3.4"]);
    assert_eq!(e.subsets.as_ref().unwrap()[0].ports, None);
}

#[test]
fn tolerate_unready_annotation_is_not_honoured() {
    let ns = "ns";
    let mut svc = svc80(ns);
    svc.metadata.annotations = Some(map(&[("service.alpha.kubernetes.io/tolerate-unready-endpoints", "true")]));
    let p = run(&svc, &add_pods(ns, 0, 1, 1, IPV4), None);
    assert_eq!(counts(expect_create(&p)), (0, 1));
}

#[test]
fn hostname_rule() {
    let ns = "ns";
    let svc = svc80(ns);
    let mut pod = test_pod(ns, 0, 1, true, IPV4);
    let spec = pod.spec.as_mut().unwrap();
    spec.hostname = Some("h0".into());
    spec.subdomain = Some("foo".into());
    spec.node_name = Some("node-1".into());
    pod.metadata.uid = Some("uid-0".into());
    let p = run(&svc, std::slice::from_ref(&pod), None);
    let a = all_addresses(expect_create(&p))[0].clone();
    assert_eq!(a.hostname.as_deref(), Some("h0"));
    assert_eq!(a.node_name.as_deref(), Some("node-1"));
    assert_eq!(a.target_ref.unwrap().uid.as_deref(), Some("uid-0"));
    pod.spec.as_mut().unwrap().subdomain = Some("other".into());
    let p = run(&svc, &[pod], None);
    assert_eq!(all_addresses(expect_create(&p))[0].hostname, None);
}

#[test]
fn headless_without_ports_needs_cluster_ip_none() {
    let ns = "ns";
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![], IPV4);
    // clusterIP "" (not yet allocated): no port-less subset, but the headless label.
    let p = run(&svc, &pods, None);
    let e = expect_create(&p);
    assert_eq!(e.subsets, None);
    assert_eq!(e.metadata.labels.as_ref().unwrap().get(LABEL_HEADLESS).map(String::as_str), Some(""));
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.1".into());
    assert_eq!(desired_labels(&svc, &Config::default()).get(LABEL_HEADLESS), None);
}

#[test]
fn pods_of_other_namespaces_or_selectors_are_ignored() {
    let svc = svc80("ns");
    let mut other_label = test_pod("ns", 1, 1, true, IPV4);
    other_label.metadata.labels = Some(map(&[("foo", "baz")]));
    let pods = vec![test_pod("elsewhere", 0, 1, true, IPV4), other_label];
    assert_eq!(expect_create(&run(&svc, &pods, None)).subsets, None);
}
