//! Ports of `pkg/controller/endpoint/endpoints_controller_test.go` (v1.37.1).

use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, PodSpec, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::endpoints::{
    ANNOTATION_LEADER, ANNOTATION_OVER_CAPACITY, MAX_CAPACITY, PlanWarning, Skipped, endpoint_port_from_service_port,
    repack_subsets, should_delete_orphan, truncate_subsets,
};
use crate::endpointslice::labels::ANNOTATION_LAST_CHANGE_TRIGGER_TIME;

/// The object upstream PUTs in most tests: the preexisting `foo` (resourceVersion 1) with the
/// given labels and subsets.
fn updated(namespace: &str, labels: &[(&str, &str)], subsets: Vec<EndpointSubset>) -> Endpoints {
    endpoints(namespace, "1", labels, &[], Some(subsets).filter(|s| !s.is_empty()))
}

fn preexisting_6789(namespace: &str, protocol: &str) -> Endpoints {
    endpoints(
        namespace,
        "1",
        &[],
        &[],
        Some(vec![subset(vec![bare_addr("6.7.8.9")], vec![], vec![eport("", 1000, protocol)])]),
    )
}

#[test]
fn sync_endpoints_items_preserve_no_selector() {
    let ns = "default";
    let existing =
        endpoints(ns, "1", &[], &[], Some(vec![subset(vec![bare_addr("6.7.8.9")], vec![], vec![eport("", 1000, "")])]));
    let svc = service(ns, "foo", None, vec![bare_port(80)], &[]);
    let p = run(&svc, &[], Some(&existing));
    assert_eq!(p.action, Action::Nothing);
    assert_eq!(p.skipped, Some(Skipped::NoSelector));
}

#[test]
fn sync_endpoints_existing_nil_subsets() {
    let ns = "default";
    let existing = endpoints(ns, "1", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], None);
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], &[]);
    assert_eq!(run(&svc, &[], Some(&existing)).action, Action::Nothing);
}

#[test]
fn sync_endpoints_existing_empty_subsets() {
    let ns = "default";
    let existing = endpoints(ns, "1", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], Some(vec![]));
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], &[]);
    assert_eq!(run(&svc, &[], Some(&existing)).action, Action::Nothing);
}

#[test]
fn sync_endpoints_with_pod_resource_version_update_only() {
    let ns = "default";
    let mut pod0 = test_pod(ns, 0, 1, true, IPV4);
    let mut pod1 = test_pod(ns, 1, 1, false, IPV4);
    let with_rv = |pod: &str, rv: &str| ObjectReference { resource_version: Some(rv.into()), ..target_ref(ns, pod) };
    let existing = endpoints(
        ns,
        "1",
        &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)],
        &[],
        Some(vec![subset(
            vec![EndpointAddress { target_ref: Some(with_rv("pod0", "1")), ..bare_addr(&test_ip(0, "IPv4")) }],
            vec![EndpointAddress { target_ref: Some(with_rv("pod1", "2")), ..bare_addr(&test_ip(1, "IPv4")) }],
            vec![eport("", 8080, "TCP")],
        )]),
    );
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    pod0.metadata.resource_version = Some("3".into());
    pod1.metadata.resource_version = Some("4".into());
    assert_eq!(run(&svc, &[pod0, pod1], Some(&existing)).action, Action::Nothing);
}

#[test]
fn sync_endpoints_new_no_subsets() {
    let ns = "default";
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], &[]);
    let p = run(&svc, &[], None);
    let want = endpoints(ns, "", &managed_headless(), &[], None);
    assert_eq!(expect_create(&p), &want);
}

#[test]
fn check_leftover_endpoints() {
    let ns = "default";
    let leftover =
        endpoints(ns, "1", &[], &[], Some(vec![subset(vec![bare_addr("6.7.8.9")], vec![], vec![eport("", 1000, "")])]));
    // Upstream queues it and syncService, finding no Service, deletes it.
    assert!(should_delete_orphan(&leftover, false));
    assert_eq!(
        plan(&Input::service_deleted(ns, "foo", Some(&leftover)), &Config::default()).action,
        Action::Delete { namespace: ns.into(), name: "foo".into() }
    );
    // Not with a Service, nor with the leader-election annotation.
    assert!(!should_delete_orphan(&leftover, true));
    let lock = endpoints(ns, "1", &[], &[(ANNOTATION_LEADER, "{\"holderIdentity\":\"x\"}")], None);
    assert!(!should_delete_orphan(&lock, false));
}

#[test]
fn sync_endpoints_protocol_tcp() {
    let ns = "other";
    let existing = preexisting_6789(ns, "TCP");
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let svc = service(ns, "foo", Some(&[]), vec![sport("", 80, "TCP", 8080)], IPV4);
    let p = run(&svc, &pods, Some(&existing));
    let want = updated(
        ns,
        &managed_headless(),
        vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP")])],
    );
    assert_eq!(expect_update(&p), &want);
}

#[test]
fn sync_endpoints_headless_service_label() {
    let ns = "default";
    let existing = endpoints(ns, "1", &managed_headless(), &[], Some(vec![]));
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], &[]);
    assert_eq!(run(&svc, &[], Some(&existing)).action, Action::Nothing);
}

#[test]
fn sync_service_external_name_type() {
    let ns = "default";
    let cases: [(&str, Option<&[(&str, &str)]>, Vec<ServicePort>); 4] = [
        (
            "External name with selector and ports should not receive endpoints",
            Some(&[("foo", "bar")]),
            vec![bare_port(80)],
        ),
        ("External name with ports should not receive endpoints", None, vec![bare_port(80)]),
        ("External name with selector should not receive endpoints", Some(&[("foo", "bar")]), vec![]),
        ("External name without selector and ports should not receive endpoints", None, vec![]),
    ];
    for (name, selector, ports) in cases {
        let mut svc = service(ns, "testing-1", selector, ports, &[]);
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let pods = add_pods(ns, 1, 1, 0, IPV4);
        let p = run(&svc, &pods, None);
        assert_eq!(p.action, Action::Nothing, "{name}");
        assert_eq!(p.skipped, Some(Skipped::ExternalName), "{name}");
    }
}

#[test]
fn sync_endpoints_protocol_udp_and_sctp() {
    for protocol in ["UDP", "SCTP"] {
        let ns = "other";
        let existing = preexisting_6789(ns, protocol);
        let pods = add_pods(ns, 1, 1, 0, IPV4);
        let svc = service(ns, "foo", Some(&[]), vec![sport("", 80, protocol, 8080)], IPV4);
        let want = updated(
            ns,
            &managed_headless(),
            vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, protocol)])],
        );
        assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want, "{protocol}");
    }
}

#[test]
fn sync_endpoints_protocol_multi_protocol_same_port() {
    let ns = "other";
    let existing = endpoints(ns, "1", &[], &[], None);
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let svc = service(ns, "foo", Some(&[]), vec![sport("", 80, "TCP", 8080), sport("", 80, "UDP", 8080)], IPV4);
    let p = run(&svc, &pods, Some(&existing));
    // Upstream's hash order puts UDP first; ours sorts by protocol (same set).
    let want = updated(
        ns,
        &managed_headless(),
        vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP"), eport("", 8080, "UDP")])],
    );
    assert_eq!(expect_update(&p), &want);
    // kube-controller-manager's order is not a change.
    let mut kcm = want.clone();
    kcm.subsets.as_mut().unwrap()[0].ports.as_mut().unwrap().reverse();
    assert_eq!(run(&svc, &pods, Some(&kcm)).action, Action::Nothing);
}

#[test]
fn sync_endpoints_items_empty_selector_selects_all() {
    // Upstream's three tests: all ready, all not ready, mixed.
    let ns = "other";
    let cases = [
        ("SelectsAll", 1, 0, vec![addr("1.2.3.4", ns, "pod0")], vec![]),
        ("SelectsAllNotReady", 0, 1, vec![], vec![addr("1.2.3.4", ns, "pod0")]),
        ("SelectsAllMixed", 1, 1, vec![addr("1.2.3.4", ns, "pod0")], vec![addr("1.2.3.5", ns, "pod1")]),
    ];
    for (name, n_ready, n_not_ready, ready, not_ready) in cases {
        let existing = endpoints(ns, "1", &[], &[], Some(vec![]));
        let pods = add_pods(ns, n_ready, 1, n_not_ready, IPV4);
        let svc = service(ns, "foo", Some(&[]), vec![sport("", 80, "TCP", 8080)], IPV4);
        let want = updated(ns, &managed_headless(), vec![subset(ready, not_ready, vec![eport("", 8080, "TCP")])]);
        assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want, "{name}");
    }
}

#[test]
fn sync_endpoints_items_preexisting() {
    let ns = "bar";
    let existing = endpoints(
        ns,
        "1",
        &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)],
        &[],
        Some(vec![subset(vec![bare_addr("6.7.8.9")], vec![], vec![eport("", 1000, "")])]),
    );
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    let want = updated(
        ns,
        &managed_headless(),
        vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP")])],
    );
    assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want);
}

#[test]
fn sync_endpoints_items_preexisting_identical() {
    let ns = "default";
    let existing = endpoints(
        ns,
        "1",
        &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)],
        &[],
        Some(vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP")])]),
    );
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    assert_eq!(run(&svc, &pods, Some(&existing)).action, Action::Nothing);
}

#[test]
fn sync_endpoints_items_preexisting_identical_unsorted() {
    let ns = "default";
    let pods = vec![test_pod(ns, 0, 1, true, IPV4), test_pod(ns, 1, 1, true, IPV4)];
    let subsets = vec![subset(
        vec![addr(&test_ip(1, "IPv4"), ns, "pod1"), addr(&test_ip(0, "IPv4"), ns, "pod0")],
        vec![],
        vec![eport("", 8080, "TCP")],
    )];
    // Not in canonical order: this must not cause a write.
    assert_ne!(repack_subsets(&subsets), subsets);
    let existing = endpoints(ns, "1", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], Some(subsets));
    let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    assert_eq!(run(&svc, &pods, Some(&existing)).action, Action::Nothing);
}

fn three_pods_two_ports(ns: &str) -> Vec<EndpointSubset> {
    vec![subset(
        vec![addr("1.2.3.4", ns, "pod0"), addr("1.2.3.5", ns, "pod1"), addr("1.2.3.6", ns, "pod2")],
        vec![],
        vec![eport("port0", 8080, "TCP"), eport("port1", 8088, "TCP")],
    )]
}

#[test]
fn sync_endpoints_items() {
    let ns = "other";
    let mut pods = add_pods(ns, 3, 2, 0, IPV4);
    pods.extend(add_pods("blah", 5, 2, 0, IPV4)); // make sure these aren't found!
    let svc = service(
        ns,
        "foo",
        Some(&[("foo", "bar")]),
        vec![sport("port0", 80, "TCP", 8080), sport("port1", 88, "TCP", 8088)],
        IPV4,
    );
    let p = run(&svc, &pods, None);
    let want = endpoints(ns, "", &managed_headless(), &[], Some(three_pods_two_ports(ns)));
    assert_eq!(expect_create(&p), &want);
}

#[test]
fn sync_endpoints_items_with_labels() {
    let ns = "other";
    let pods = add_pods(ns, 3, 2, 0, IPV4);
    let mut svc = service(
        ns,
        "foo",
        Some(&[("foo", "bar")]),
        vec![sport("port0", 80, "TCP", 8080), sport("port1", 88, "TCP", 8088)],
        IPV4,
    );
    svc.metadata.labels = Some(map(&[("foo", "bar")]));
    let p = run(&svc, &pods, None);
    let mut labels = managed_headless();
    labels.push(("foo", "bar"));
    let want = endpoints(ns, "", &labels, &[], Some(three_pods_two_ports(ns)));
    assert_eq!(expect_create(&p), &want);
}

#[test]
fn sync_endpoints_items_preexisting_labels_change() {
    let ns = "bar";
    let existing = endpoints(
        ns,
        "1",
        &[("foo", "bar")],
        &[],
        Some(vec![subset(vec![bare_addr("6.7.8.9")], vec![], vec![eport("", 1000, "")])]),
    );
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    svc.metadata.labels = Some(map(&[("baz", "blah")]));
    let mut labels = managed_headless();
    labels.push(("baz", "blah"));
    let want =
        updated(ns, &labels, vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP")])]);
    assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want);
}

#[test]
fn sync_endpoints_headless_service() {
    let ns = "headless";
    let existing = preexisting_6789(ns, "TCP");
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let mut svc = service(ns, "foo", Some(&[]), vec![], IPV4);
    svc.metadata.labels = Some(map(&[("a", "b")]));
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let original = svc.clone();
    let mut labels = managed_headless();
    labels.push(("a", "b"));
    let want = updated(ns, &labels, vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![])]);
    assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want);
    assert_eq!(svc, original, "syncing must not change the Service");
}

/// Upstream `addNotReadyPodsWithSpecifiedRestartPolicyAndPhase`: not-ready pods with only
/// `status.podIP` set.
fn not_ready_pods_with_phase(ns: &str, n: usize, restart_policy: &str, phase: &str) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let mut p = test_pod(ns, i, 1, false, IPV4);
            p.metadata.resource_version = None;
            p.spec.as_mut().unwrap().restart_policy = Some(restart_policy.into());
            let status = p.status.as_mut().unwrap();
            status.pod_ips = None;
            status.pod_ip = Some(format!("1.2.3.{}", 4 + i));
            status.phase = Some(phase.into());
            p
        })
        .collect()
}

#[test]
fn sync_endpoints_items_exclude_not_ready_pods_with_restart_policy_and_phase() {
    let ns = "other";
    let cases = [
        ("NeverAndPhaseFailed", "Never", "Failed", vec![(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY), ("foo", "bar")]),
        ("NeverAndPhaseSucceeded", "Never", "Succeeded", vec![("foo", "bar")]),
        ("OnFailureAndPhaseSucceeded", "OnFailure", "Succeeded", vec![("foo", "bar")]),
    ];
    for (name, policy, phase, existing_labels) in cases {
        let existing = endpoints(ns, "1", &existing_labels, &[], Some(vec![]));
        let pods = not_ready_pods_with_phase(ns, 1, policy, phase);
        let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
        let want = updated(ns, &managed_headless(), vec![]);
        assert_eq!(expect_update(&run(&svc, &pods, Some(&existing))), &want, "{name}");
    }
}

#[test]
fn sync_endpoints_headless_without_port() {
    let ns = "default";
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![], IPV4);
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ports = None;
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let want = endpoints(
        ns,
        "",
        &managed_headless(),
        &[],
        Some(vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![])]),
    );
    assert_eq!(expect_create(&run(&svc, &pods, None)), &want);
}

/// Upstream `addBadIPPod`: `testPod(ns, 0, 1, true, families)` with a `0` prefixed to the first
/// IP (`01.2.3.4`, `02000::4`).
fn bad_ip_pod(ns: &str, families: &[&str]) -> Pod {
    let mut pod = test_pod(ns, 0, 1, true, families);
    let status = pod.status.as_mut().unwrap();
    let ips = status.pod_ips.as_mut().unwrap();
    ips[0].ip = format!("0{}", ips[0].ip);
    status.pod_ip = Some(ips[0].ip.clone());
    pod
}

#[test]
fn pod_to_endpoint_address_for_service() {
    let cases: [(&str, &[&str], &str, &[&str], Option<&str>); 9] = [
        ("v4 service, in a single stack cluster", IPV4, "10.0.0.1", IPV4, Some("IPv4")),
        ("v4 service, in a dual stack cluster", IPV4_IPV6, "10.0.0.1", IPV4, Some("IPv4")),
        ("v4 service, in a dual stack ipv6-primary cluster", IPV6_IPV4, "10.0.0.1", IPV4, Some("IPv4")),
        ("v4 headless service, in a single stack cluster", IPV4, "None", IPV4, Some("IPv4")),
        ("v4 headless service, in a dual stack cluster", IPV4_IPV6, "None", IPV4, Some("IPv4")),
        ("v6 service, in a dual stack cluster", IPV4_IPV6, "3000::1", IPV6, Some("IPv6")),
        ("v6 headless service, in a single stack cluster", IPV6, "None", IPV6, Some("IPv6")),
        ("v6 headless service, in a dual stack cluster", IPV4_IPV6, "None", IPV6, Some("IPv6")),
        ("v6 service, in a v4 only cluster", IPV4, "3000::1", IPV6, None),
    ];
    for (name, pod_families, cluster_ip, svc_families, want) in cases {
        let mut svc = service("test", "foo", Some(&[]), vec![], svc_families);
        svc.spec.as_mut().unwrap().cluster_ip = Some(cluster_ip.into());
        let pod = bad_ip_pod("test", pod_families);
        let got = pod_to_endpoint_address(&svc, &pod);
        let Some(want) = want else {
            assert_eq!(got, None, "{name}");
            continue;
        };
        let epa = got.unwrap_or_else(|| panic!("{name}: no address"));
        assert_eq!(crate::podutil::is_ipv6_string(&epa.ip), want == "IPv6", "{name}: {}", epa.ip);
        assert!(!epa.ip.starts_with('0'), "{name}: IP not fixed up: {}", epa.ip);
        assert_eq!(epa.node_name.as_deref(), Some(""), "{name}");
        let r = epa.target_ref.unwrap();
        assert_eq!(r.kind.as_deref(), Some("Pod"), "{name}");
        assert_eq!(r.namespace.as_deref(), Some("test"), "{name}");
        assert_eq!(r.name.as_deref(), Some("pod0"), "{name}");
        assert_eq!(r.uid, pod.metadata.uid, "{name}");
        assert_eq!(r.resource_version, None, "{name}");
    }
}

#[test]
fn pod_to_endpoint_address_for_service_empty_ip_families() {
    let cases: [(&str, &str, &[&str], &str, Option<&str>); 5] = [
        ("headful IPv4, IPv4 pod", "10.0.0.1", &["10.244.0.1"], "", Some("IPv4")),
        ("headful IPv6, IPv6 pod", "fd00::1", &["fd00::10"], "", Some("IPv6")),
        ("headful IPv4, no matching pod IP", "10.0.0.1", &["fd00::10"], "", None),
        ("headless, IPv4 pod", "None", &["10.244.0.1"], "10.244.0.1", Some("IPv4")),
        ("headless, IPv6 pod", "None", &["fd00::10"], "fd00::10", Some("IPv6")),
    ];
    for (name, cluster_ip, pod_ips, pod_ip, want) in cases {
        let mut svc = service("bar", "foo", None, vec![], &[]);
        svc.spec.as_mut().unwrap().cluster_ip = Some(cluster_ip.into());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("foo-pod".into()),
                namespace: Some("bar".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some("node-1".into()), ..Default::default() }),
            status: Some(PodStatus {
                pod_ip: (!pod_ip.is_empty()).then(|| pod_ip.to_owned()),
                pod_ips: Some(pod_ips.iter().map(|ip| PodIP { ip: (*ip).to_owned() }).collect()),
                ..Default::default()
            }),
        };
        let got = pod_to_endpoint_address(&svc, &pod);
        match want {
            None => assert_eq!(got, None, "{name}"),
            Some(family) => {
                let a = got.unwrap_or_else(|| panic!("{name}: no address"));
                assert_eq!(crate::podutil::is_ipv6_string(&a.ip), family == "IPv6", "{name}");
                assert_eq!(a.node_name.as_deref(), Some("node-1"), "{name}");
                assert_eq!(a.target_ref.unwrap().uid.as_deref(), Some("uid-1"), "{name}");
            }
        }
    }
}

#[test]
fn last_trigger_change_time_annotation() {
    // Upstream's three tests: set, overridden (an older value replaced), cleared (no trigger).
    let ns = "other";
    let old = "2017-12-31T23:00:00Z";
    let now = "2018-01-01T00:00:00Z";
    let cases: [(&str, &[(&str, &str)], Option<DateTime<Utc>>, &[(&str, &str)]); 3] = [
        ("Annotation", &[], Some(trigger_time()), &[(ANNOTATION_LAST_CHANGE_TRIGGER_TIME, now)]),
        (
            "AnnotationOverridden",
            &[(ANNOTATION_LAST_CHANGE_TRIGGER_TIME, old)],
            Some(trigger_time()),
            &[(ANNOTATION_LAST_CHANGE_TRIGGER_TIME, now)],
        ),
        ("AnnotationCleared", &[(ANNOTATION_LAST_CHANGE_TRIGGER_TIME, now)], None, &[]),
    ];
    for (name, existing_annotations, trigger, want_annotations) in cases {
        let mut existing = preexisting_6789(ns, "TCP");
        existing.metadata.annotations = (!existing_annotations.is_empty()).then(|| map(existing_annotations));
        let pods = add_pods(ns, 1, 1, 0, IPV4);
        let mut svc = service(ns, "foo", Some(&[]), vec![sport("", 80, "TCP", 8080)], IPV4);
        svc.metadata.creation_timestamp = Some(time(1_514_764_800));
        let want = endpoints(
            ns,
            "1",
            &managed_headless(),
            want_annotations,
            Some(vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![eport("", 8080, "TCP")])]),
        );
        assert_eq!(expect_update(&run_at(&svc, &pods, Some(&existing), trigger)), &want, "{name}");
    }
}

#[test]
fn sync_endpoints_service_not_found() {
    let ns = "default";
    let existing = endpoints(ns, "1", &[], &[], None);
    let p = plan(&Input::service_deleted(ns, "foo", Some(&existing)), &Config::default());
    assert_eq!(p.action, Action::Delete { namespace: ns.into(), name: "foo".into() });
    // Upstream deletes even when the cache has no Endpoints (404 is success).
    let p = plan(&Input::service_deleted(ns, "foo", None), &Config::default());
    assert_eq!(p.action, Action::Delete { namespace: ns.into(), name: "foo".into() });
}

#[test]
fn sync_service_over_capacity() {
    struct Case {
        name: &'static str,
        starting_annotation: Option<&'static str>,
        num_existing: usize,
        num_desired: usize,
        num_desired_not_ready: usize,
        num_expected_ready: usize,
        num_expected_not_ready: usize,
        expected_annotation: bool,
    }
    let m = MAX_CAPACITY;
    let cases = [
        Case {
            name: "empty",
            starting_annotation: None,
            num_existing: 0,
            num_desired: 0,
            num_desired_not_ready: 0,
            num_expected_ready: 0,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation added past capacity, < than maxCapacity of Ready Addresses",
            starting_annotation: None,
            num_existing: m - 1,
            num_desired: m - 3,
            num_desired_not_ready: 4,
            num_expected_ready: m - 3,
            num_expected_not_ready: 3,
            expected_annotation: true,
        },
        Case {
            name: "annotation added past capacity, maxCapacity of Ready Addresses ",
            starting_annotation: None,
            num_existing: m - 1,
            num_desired: m,
            num_desired_not_ready: 10,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
        Case {
            name: "annotation removed below capacity",
            starting_annotation: Some("truncated"),
            num_existing: m - 1,
            num_desired: m - 1,
            num_desired_not_ready: 0,
            num_expected_ready: m - 1,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation was set to warning previously, annotation removed at capacity",
            starting_annotation: Some("warning"),
            num_existing: m,
            num_desired: m,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation was set to warning previously but still over capacity",
            starting_annotation: Some("warning"),
            num_existing: m + 1,
            num_desired: m + 1,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
        Case {
            name: "annotation removed at capacity",
            starting_annotation: Some("truncated"),
            num_existing: m,
            num_desired: m,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "no endpoints change, annotation value corrected",
            starting_annotation: Some("invalid"),
            num_existing: m + 1,
            num_desired: m + 1,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
    ];
    for c in cases {
        let ns = "test";
        let pods = add_pods(ns, c.num_desired, 1, c.num_desired_not_ready, IPV4);
        let svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], IPV4);
        let existing_subset = EndpointSubset {
            addresses: Some(pods[..c.num_existing].iter().map(|p| pod_to_endpoint_address(&svc, p).unwrap()).collect()),
            ..Default::default()
        };
        let annotations: Vec<(&str, &str)> =
            c.starting_annotation.map(|a| vec![(ANNOTATION_OVER_CAPACITY, a)]).unwrap_or_default();
        let existing = endpoints(ns, "1", &[], &annotations, Some(vec![existing_subset]));
        let p = run(&svc, &pods, Some(&existing));
        let actual = apply(Some(existing), &p).unwrap();
        let annotation = actual.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_OVER_CAPACITY));
        if c.expected_annotation {
            assert_eq!(annotation.map(String::as_str), Some("truncated"), "{}", c.name);
        } else {
            assert_eq!(annotation, None, "{}", c.name);
        }
        assert_eq!(counts(&actual), (c.num_expected_ready, c.num_expected_not_ready), "{}", c.name);
        assert_eq!(p.counts.truncated, c.expected_annotation, "{}", c.name);
        assert_eq!(
            p.warnings.iter().any(|w| matches!(w, PlanWarning::Truncated { .. })),
            c.expected_annotation,
            "{}",
            c.name
        );
    }
}

#[test]
fn truncate_endpoints() {
    let cases: [(&str, &[usize], &[usize], &[usize], &[usize]); 5] = [
        ("empty", &[], &[], &[], &[]),
        (
            "total endpoints < max capacity",
            &[50, 100, 100, 100, 100],
            &[50, 100, 100, 100, 100],
            &[50, 100, 100, 100, 100],
            &[50, 100, 100, 100, 100],
        ),
        (
            "total endpoints = max capacity",
            &[100, 100, 100, 100, 100],
            &[100, 100, 100, 100, 100],
            &[100, 100, 100, 100, 100],
            &[100, 100, 100, 100, 100],
        ),
        (
            "total ready endpoints < max capacity, but total endpoints > max capacity",
            &[90, 110, 50, 10, 20],
            &[101, 200, 200, 201, 298],
            &[90, 110, 50, 10, 20],
            &[73, 144, 144, 145, 214],
        ),
        (
            "total ready endpoints > max capacity",
            &[205, 400, 402, 400, 693],
            &[100, 200, 200, 200, 300],
            &[98, 191, 192, 191, 328],
            &[0, 0, 0, 0, 0],
        ),
    ];
    for (name, ready, not_ready, want_ready, want_not_ready) in cases {
        let mut subsets: Vec<EndpointSubset> = ready
            .iter()
            .zip(not_ready)
            .map(|(r, n)| EndpointSubset {
                addresses: Some(vec![EndpointAddress::default(); *r]),
                not_ready_addresses: Some(vec![EndpointAddress::default(); *n]),
                ports: None,
            })
            .collect();
        let truncated = truncate_subsets(&mut subsets, MAX_CAPACITY);
        assert_eq!(truncated, ready.iter().chain(not_ready).sum::<usize>() > MAX_CAPACITY, "{name}");
        let len = |l: &Option<Vec<EndpointAddress>>| l.as_ref().map_or(0, Vec::len);
        let got_ready: Vec<usize> = subsets.iter().map(|s| len(&s.addresses)).collect();
        let got_not_ready: Vec<usize> = subsets.iter().map(|s| len(&s.not_ready_addresses)).collect();
        assert_eq!(got_ready, want_ready, "{name}");
        assert_eq!(got_not_ready, want_not_ready, "{name}");
    }
}

#[test]
fn endpoint_port_from_service_port_app_protocol() {
    for (name, app_protocol) in [("empty app protocol", None), ("http app protocol", Some("http".to_owned()))] {
        let sp = ServicePort { name: Some("test".into()), app_protocol: app_protocol.clone(), ..Default::default() };
        let epp = endpoint_port_from_service_port(&sp, 80);
        assert_eq!(epp.app_protocol, app_protocol, "{name}");
        assert_eq!((epp.name.as_deref(), epp.port), (Some("test"), 80), "{name}");
    }
}

/// Core part of `TestMultipleServiceChanges`: add, delete and re-add a Service while the
/// Endpoints cache lags. The shell requeues the Service on the Endpoints delete event.
#[test]
fn multiple_service_changes() {
    let ns = "default";
    let pods = add_pods(ns, 1, 1, 0, IPV4);
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![], IPV4);
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ports = None;
    let want_subsets = vec![subset(vec![addr("1.2.3.4", ns, "pod0")], vec![], vec![])];

    // Service added: create.
    let p = run(&svc, &pods, None);
    assert_eq!(expect_create(&p).subsets.as_ref(), Some(&want_subsets));
    let stored = apply(None, &p);
    // Service deleted: delete.
    let p = plan(&Input::service_deleted(ns, "foo", stored.as_ref()), &Config::default());
    assert_eq!(p.action, Action::Delete { namespace: ns.into(), name: "foo".into() });
    let cache = stored.clone(); // the informer has not seen the deletion yet
    let stored = apply(stored, &p);
    assert_eq!(stored, None);
    // Service re-added while the cache still holds the old object: nothing to do yet.
    assert_eq!(run(&svc, &pods, cache.as_ref()).action, Action::Nothing);
    // The Endpoints delete event arrives and requeues the Service: created again.
    let p = run(&svc, &pods, None);
    assert_eq!(expect_create(&p).subsets.as_ref(), Some(&want_subsets));
}

/// Core part of `TestMultiplePodChanges`: Ready → NotReady → Ready while the cache lags. The
/// core alone would skip the last write (the stale cache matches); the shell must refuse to plan
/// on a cached resourceVersion it already replaced, then converge once the cache catches up.
#[test]
fn multiple_pod_changes() {
    let ns = "default";
    let mut svc = service(ns, "foo", Some(&[("foo", "bar")]), vec![sport("", 80, "TCP", 8080)], IPV4);
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.1".into());
    let ready = vec![test_pod(ns, 0, 1, true, IPV4)];
    let not_ready = vec![test_pod(ns, 0, 1, false, IPV4)];

    let stored = apply(None, &run(&svc, &ready, None));
    let v1 = stored.clone().unwrap();
    assert_eq!(counts(&v1), (1, 0));
    // Ready -> NotReady: update.
    let p = run(&svc, &not_ready, Some(&v1));
    let v2 = apply(stored, &p).unwrap();
    assert_eq!(counts(&v2), (0, 1));
    // NotReady -> Ready with the cache still at v1: the core sees no change. This is why the
    // shell tracks the replaced resourceVersion and requeues instead of planning.
    assert_eq!(run(&svc, &ready, Some(&v1)).action, Action::Nothing);
    // Once the cache has v2, the update happens.
    let p = run(&svc, &ready, Some(&v2));
    assert_eq!(counts(expect_update(&p)), (1, 0));
}

#[test]
fn sync_service_addresses() {
    let make_service = |tolerate_unready: bool| {
        let mut svc = service("ns", "foo", Some(&[("foo", "bar")]), vec![bare_port(80)], IPV4);
        let spec = svc.spec.as_mut().unwrap();
        spec.publish_not_ready_addresses = Some(tolerate_unready);
        spec.type_ = Some("ClusterIP".into());
        spec.cluster_ip = Some("1.1.1.1".into());
        svc
    };
    let make_pod = |phase: &str, ready: bool, terminating: bool| {
        let mut pod = test_pod("ns", 0, 1, ready, IPV4);
        pod.metadata.name = Some("fakepod".into());
        pod.metadata.deletion_timestamp = terminating.then(|| time(1_700_000_000));
        let status = pod.status.as_mut().unwrap();
        status.phase = Some(phase.into());
        status.pod_ip = Some("10.1.1.1".into());
        status.pod_ips = Some(vec![PodIP { ip: "10.1.1.1".into() }]);
        pod
    };
    let cases = [
        ("pod running phase", "Running", true, false, false, 1, 0),
        ("pod running phase being deleted", "Running", true, true, false, 0, 0),
        ("pod unknown phase container ready", "Unknown", true, false, false, 1, 0),
        ("pod unknown phase container ready being deleted", "Unknown", true, true, false, 0, 0),
        ("pod pending phase container ready", "Pending", true, false, false, 1, 0),
        ("pod pending phase container ready being deleted", "Pending", true, true, false, 0, 0),
        ("pod unknown phase container not ready", "Unknown", false, false, false, 0, 1),
        ("pod pending phase container not ready", "Pending", false, false, false, 0, 1),
        ("pod failed phase", "Failed", false, false, false, 0, 0),
        ("pod succeeded phase", "Succeeded", false, false, false, 0, 0),
        ("pod running phase and tolerate unready", "Running", false, false, true, 1, 0),
        ("pod running phase and tolerate unready being deleted", "Running", false, true, true, 1, 0),
        ("pod unknown phase and tolerate unready", "Unknown", false, false, true, 1, 0),
        ("pod unknown phase and tolerate unready being deleted", "Unknown", false, true, true, 1, 0),
        ("pod pending phase and tolerate unready", "Pending", false, false, true, 1, 0),
        ("pod pending phase and tolerate unready being deleted", "Pending", false, true, true, 1, 0),
        ("pod failed phase and tolerate unready", "Failed", false, false, true, 0, 0),
        ("pod succeeded phase and tolerate unready endpoints", "Succeeded", false, false, true, 0, 0),
    ];
    for (name, phase, ready, terminating, tolerate, want_ready, want_not_ready) in cases {
        let svc = make_service(tolerate);
        let p = run(&svc, &[make_pod(phase, ready, terminating)], None);
        assert_eq!(counts(expect_create(&p)), (want_ready, want_not_ready), "{name}");
    }
}

#[test]
fn endpoint_subsets_equal_ignore_resource_version() {
    use crate::endpoints::subsets_equal_ignore_resource_version as eq;
    let a = |ip: &str, pod: &str, ns: &str, rv: &str| EndpointAddress {
        ip: ip.into(),
        target_ref: Some(ObjectReference { resource_version: Some(rv.into()), ..target_ref(ns, pod) }),
        ..Default::default()
    };
    let es1 = subset(
        vec![a("1.1.1.1", "pod1-1", "ns", "1")],
        vec![a("1.1.1.2", "pod1-2", "ns2", "2")],
        vec![eport("", 8081, "TCP")],
    );
    let es2 = subset(
        vec![a("2.2.2.1", "pod2-1", "ns", "3")],
        vec![a("2.2.2.2", "pod2-2", "ns2", "4")],
        vec![eport("", 8082, "TCP")],
    );
    let mutate = |s: &EndpointSubset, f: &dyn Fn(&mut EndpointSubset)| {
        let mut s = s.clone();
        f(&mut s);
        s
    };
    let cases = [
        ("Subsets removed", vec![es1.clone(), es2.clone()], vec![es1.clone()], false),
        (
            "Ready Pod IP changed",
            vec![es1.clone(), es2.clone()],
            vec![mutate(&es1, &|s| s.addresses.as_mut().unwrap()[0].ip = "1.1.1.10".into()), es2.clone()],
            false,
        ),
        (
            "NotReady Pod IP changed",
            vec![es1.clone(), es2.clone()],
            vec![es1.clone(), mutate(&es2, &|s| s.not_ready_addresses.as_mut().unwrap()[0].ip = "2.2.2.10".into())],
            false,
        ),
        (
            "Pod ResourceVersion changed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es2, &|s| {
                    s.addresses.as_mut().unwrap()[0].target_ref.as_mut().unwrap().resource_version = Some("100".into())
                }),
            ],
            true,
        ),
        (
            "Pod ResourceVersion removed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es2, &|s| {
                    s.addresses.as_mut().unwrap()[0].target_ref.as_mut().unwrap().resource_version = None
                }),
            ],
            true,
        ),
        (
            "Ports changed",
            vec![es1.clone(), es2.clone()],
            vec![es1.clone(), mutate(&es1, &|s| s.ports.as_mut().unwrap()[0].port = 8082)],
            false,
        ),
    ];
    for (name, s1, s2, want) in cases {
        assert_eq!(eq(&s1, &s2), want, "{name}");
        assert_eq!(eq(&s2, &s1), want, "{name} (swapped)");
    }
}

/// `TestSyncEndpointsAddDeletePorts`: add a port and a pod, then delete the first port.
#[test]
fn sync_endpoints_add_delete_ports() {
    let ns = "ns";
    let mut svc = service(
        ns,
        "foo",
        Some(&[("foo", "bar")]),
        vec![ServicePort {
            name: Some("portname1".into()),
            port: 80,
            target_port: Some(IntOrString::String("svc1".into())),
            ..Default::default()
        }],
        IPV4,
    );
    let spec = svc.spec.as_mut().unwrap();
    spec.type_ = Some("ClusterIP".into());
    spec.cluster_ip = Some("1.1.1.1".into());
    let pod = |name: &str, ip: &str, port_name: &str, port: i32| {
        let mut p = test_pod(ns, 0, 0, true, IPV4);
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = None;
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some(port_name.into()),
            container_port: port,
            ..Default::default()
        }]);
        let status = p.status.as_mut().unwrap();
        status.pod_ip = Some(ip.into());
        status.pod_ips = Some(vec![PodIP { ip: ip.into() }]);
        p
    };
    let existing = endpoints(ns, "1", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], Some(vec![]));
    let mut pods = vec![pod("pod1", "10.1.1.1", "svc1", 100)];

    let s1 = subset(vec![addr("10.1.1.1", ns, "pod1")], vec![], vec![eport("portname1", 100, "TCP")]);
    let s2 = subset(vec![addr("10.1.1.2", ns, "pod2")], vec![], vec![eport("portname2", 101, "TCP")]);
    let expect = |subsets: Vec<EndpointSubset>| {
        endpoints(ns, "", &[(LABEL_MANAGED_BY, DEFAULT_MANAGED_BY)], &[], Some(subsets).filter(|s| !s.is_empty()))
    };
    let strip_rv = |mut e: Endpoints| {
        e.metadata.resource_version = None;
        e
    };

    let p = run(&svc, &pods, Some(&existing));
    let stored = apply(Some(existing), &p);
    assert_eq!(strip_rv(stored.clone().unwrap()), expect(vec![s1.clone()]), "after adding first pod");

    // Add another port to the Service and another pod.
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap().push(ServicePort {
        name: Some("portname2".into()),
        port: 81,
        target_port: Some(IntOrString::String("svc2".into())),
        ..Default::default()
    });
    pods.push(pod("pod2", "10.1.1.2", "svc2", 101));
    let p = run(&svc, &pods, stored.as_ref());
    let stored = apply(stored, &p);
    assert_eq!(strip_rv(stored.clone().unwrap()), expect(vec![s1, s2.clone()]), "after adding second pod");

    // Delete the first port.
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap().remove(0);
    let p = run(&svc, &pods, stored.as_ref());
    let stored = apply(stored, &p);
    assert_eq!(strip_rv(stored.unwrap()), expect(vec![s2]), "after deleting first port");
}
