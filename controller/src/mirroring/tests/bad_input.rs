//! Bad input: upstream's outcome plus a clear event, never a panic, never a write loop.

use std::time::Instant;

use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, Endpoints, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::super::queue::{self, SliceUpdate};
use super::super::{
    Config, Input, NotMirrored, PlanWarning, REASON_INVALID_IP_ADDRESS, REASON_TOO_MANY_ADDRESSES_TO_MIRROR,
    not_mirrored_reason, plan, plan_delete_all, should_mirror,
};
use super::*;

/// Plans, applies, and checks that a second plan is empty (no write loop).
fn converge(ep: &Endpoints, existing: Vec<EndpointSlice>, config: &Config) -> (Plan, Cluster) {
    let mut cluster = Cluster::new(existing);
    let p = plan_for(ep, &cluster.list(), config);
    cluster.apply(&p).unwrap();
    let again = plan_for(ep, &cluster.list(), config);
    assert!(again.is_noop(), "second plan must be empty: {again:#?}");
    assert_eq!(again.events, p.events, "events repeat each sync, as upstream");
    (p, cluster)
}

fn all_ips(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> =
        c.list().iter().flat_map(|s| s.endpoints.iter().flatten().flat_map(|e| e.addresses.clone())).collect();
    v.sort();
    v
}

#[test]
fn invalid_ips_are_skipped_with_an_event() {
    let bad = ["", "not-an-ip", "1.2.3", "10.0.0.256", "fe80::1%eth0", "10.0.0.0/8", " 10.0.0.1", "::ffff:zz"];
    let mut ready: Vec<_> = bad.iter().map(|ip| addr(ip)).collect();
    ready.push(addr("10.0.0.9"));
    ready.push(addr("010.000.000.010")); // leading zeros: decimal, 10.0.0.10 (ParseIPSloppy)
    ready.push(addr("::ffff:10.0.0.11")); // IPv4-mapped: an IPv4 address
    ready.push(addr("2001:DB8::1")); // canonical text is lowercase
    let ep = endpoints("ns", "svc", vec![subset(ready, vec![], vec![port("http", 80, "TCP")])]);
    let (p, cluster) = converge(&ep, vec![], &Config::default());
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, REASON_INVALID_IP_ADDRESS);
    assert_eq!(
        p.events[0].message,
        format!("Skipped {} invalid IP addresses when mirroring to EndpointSlices", bad.len())
    );
    assert_eq!(p.stats.addresses_skipped, bad.len());
    match &p.warnings[..] {
        [PlanWarning::InvalidIpAddresses { endpoints, count, examples }] => {
            assert_eq!((endpoints.as_str(), *count), ("ns/svc", bad.len()));
            assert!(examples.contains(&"not-an-ip".to_owned()));
            assert!(p.warnings[0].to_string().contains("ns/svc"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(all_ips(&cluster), ["10.0.0.10", "10.0.0.11", "10.0.0.9", "2001:db8::1"]);
    let types: Vec<String> = cluster.list().iter().map(|s| s.address_type.clone()).collect();
    assert_eq!(types.iter().filter(|t| *t == "IPv4").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "IPv6").count(), 1);
}

#[test]
fn only_invalid_ips_give_no_slices_and_delete_old_ones() {
    let good = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("http", 80, "TCP")])]);
    let (_, cluster) = converge(&good, vec![], &Config::default());
    assert_eq!(cluster.list().len(), 1);
    let bad = endpoints("ns", "svc", vec![subset(vec![addr("nope")], vec![], vec![port("http", 80, "TCP")])]);
    let (p, cluster) = converge(&bad, cluster.list(), &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 0, 1));
    assert_eq!(p.stats.endpoints_removed, 1);
    assert_eq!(p.events.len(), 1);
    assert!(cluster.list().is_empty(), "no placeholder slices");
}

#[test]
fn duplicate_addresses_are_mirrored_once_and_not_ready_wins() {
    let ep = endpoints(
        "ns",
        "svc",
        vec![
            subset(
                vec![addr("10.0.0.1"), addr("10.0.0.1"), addr("10.0.0.2")],
                vec![addr("10.0.0.2")],
                vec![port("a", 1, "TCP")],
            ),
            subset(vec![addr("10.0.0.1")], vec![], vec![port("a", 1, "TCP")]),
        ],
    );
    let (p, cluster) = converge(&ep, vec![], &Config::default());
    assert!(p.events.is_empty());
    assert_eq!(all_ips(&cluster), ["10.0.0.1", "10.0.0.2"]);
    let s = &cluster.list()[0];
    let ready = |ip: &str| {
        s.endpoints.iter().flatten().find(|e| e.addresses[0] == ip).unwrap().conditions.as_ref().unwrap().ready
    };
    assert_eq!((ready("10.0.0.1"), ready("10.0.0.2")), (Some(true), Some(false)));
}

#[test]
fn same_ip_with_different_targets_gives_distinct_endpoints() {
    use k8s_openapi::api::core::v1::ObjectReference;
    let with = |name: &str| k8s_openapi::api::core::v1::EndpointAddress {
        target_ref: Some(ObjectReference { name: Some(name.into()), uid: Some(name.into()), ..Default::default() }),
        ..addr("10.0.0.1")
    };
    let ep = endpoints("ns", "svc", vec![subset(vec![with("a"), with("b")], vec![], vec![port("p", 1, "TCP")])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    assert_eq!(all_ips(&cluster), ["10.0.0.1", "10.0.0.1"]);
}

#[test]
fn empty_subsets_give_nothing() {
    let shapes: Vec<Option<Vec<EndpointSubset>>> = vec![
        None,
        Some(vec![]),
        Some(vec![EndpointSubset::default()]),
        Some(vec![EndpointSubset { addresses: Some(vec![]), not_ready_addresses: Some(vec![]), ports: Some(vec![]) }]),
        Some(vec![subset(vec![], vec![], vec![port("a", 1, "TCP")]); 3]),
    ];
    for subsets in shapes {
        let mut ep = endpoints("ns", "svc", vec![]);
        ep.subsets = subsets.clone();
        let (p, cluster) = converge(&ep, vec![], &Config::default());
        assert!(p.is_noop() && p.events.is_empty(), "{subsets:?}");
        assert!(cluster.list().is_empty());
    }
}

#[test]
fn addresses_without_ports_get_a_slice_without_ports() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let slices = cluster.list();
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].ports, None);
    assert_eq!(all_ips(&cluster), ["10.0.0.1"]);
}

#[test]
fn ten_thousand_addresses_are_capped_per_subset_with_an_event() {
    let many: Vec<_> =
        (0..10_000).map(|i| addr(&format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))).collect();
    let start = Instant::now();
    let ep = endpoints("ns", "big", vec![subset(many.clone(), vec![], vec![port("http", 80, "TCP")])]);
    let (p, cluster) = converge(&ep, vec![], &Config::default());
    assert_eq!(cluster.list().len(), 1);
    assert_eq!(cluster.list()[0].endpoints.as_ref().unwrap().len(), 1000);
    assert_eq!(p.stats.addresses_skipped, 9000);
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, REASON_TOO_MANY_ADDRESSES_TO_MIRROR);
    assert_eq!(
        p.events[0].message,
        "A max of 1000 addresses can be mirrored to EndpointSlices per Endpoints subset. 9000 addresses were skipped"
    );
    // The first 1000 in (IP, UID) byte order are mirrored, deterministically.
    let mut sorted: Vec<String> = many.iter().map(|a| a.ip.clone()).collect();
    sorted.sort();
    let mut want: Vec<String> = sorted[..1000].to_vec();
    want.sort();
    assert_eq!(all_ips(&cluster), want);

    // Split over 10 subsets with distinct ports: 10 full slices, nothing skipped.
    let subsets: Vec<_> = many
        .chunks(1000)
        .enumerate()
        .map(|(i, c)| subset(c.to_vec(), vec![], vec![port("p", 1000 + i as i32, "TCP")]))
        .collect();
    let ep = endpoints("ns", "big", subsets);
    let (p, cluster) = converge(&ep, vec![], &Config::default());
    assert_eq!(cluster.list().len(), 10);
    assert!(p.events.is_empty());
    assert_eq!(all_ips(&cluster).len(), 10_000);
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}

#[test]
fn invalid_ips_and_overflow_give_both_events_in_upstream_order() {
    // Addresses are visited in IP byte order: "" and "-bad" come before "10.…", so both are
    // counted invalid before the maximum of 3 valid ones is reached; "zzz" is after the break
    // and only counts as skipped (as upstream).
    let mut ready = vec![addr(""), addr("-bad"), addr("zzz")];
    ready.extend((1..=5).map(|i| addr(&format!("10.0.0.{i}"))));
    let ep = endpoints("ns", "svc", vec![subset(ready, vec![], vec![port("p", 1, "TCP")])]);
    let config = Config { max_endpoints_per_subset: 3, ..Config::default() };
    let (p, _) = converge(&ep, vec![], &config);
    let reasons: Vec<&str> = p.events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, [REASON_INVALID_IP_ADDRESS, REASON_TOO_MANY_ADDRESSES_TO_MIRROR]);
    assert_eq!(p.events[0].message, "Skipped 2 invalid IP addresses when mirroring to EndpointSlices");
    assert_eq!(p.stats.addresses_skipped, 5);
    assert_eq!(
        p.events[1].message,
        "A max of 3 addresses can be mirrored to EndpointSlices per Endpoints subset. 5 addresses were skipped"
    );
}

#[test]
fn unnamed_and_odd_ports_never_crash() {
    let odd = vec![
        EndpointPort { name: None, port: 80, protocol: None, app_protocol: None },
        EndpointPort { name: Some(String::new()), port: 80, protocol: Some("TCP".into()), app_protocol: None },
        EndpointPort { name: None, port: 0, protocol: Some("SCTP".into()), app_protocol: Some(String::new()) },
        EndpointPort { name: Some("neg".into()), port: -1, protocol: Some("UDP".into()), app_protocol: None },
        EndpointPort {
            name: None,
            port: i32::MAX,
            protocol: Some("weird".into()),
            app_protocol: Some("x".repeat(1000)),
        },
    ];
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![addr("10.0.0.2")], odd)]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let slices = cluster.list();
    assert_eq!(slices.len(), 1);
    let ports = slices[0].ports.as_ref().unwrap();
    // The first two are the same port (no name = empty name, no protocol = TCP); ports
    // numbered 0 or less are dropped, as upstream's repacking does.
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(ports[0].port, Some(80));
    assert_eq!(ports[1].port, Some(i32::MAX));
    assert!(ports.iter().all(|p| p.name.is_some() && p.protocol.is_some()));
    // Ports without protocol fold with TCP ones even across subsets.
    let ep = endpoints(
        "ns",
        "svc",
        vec![
            subset(vec![addr("10.0.0.1")], vec![], vec![EndpointPort { port: 80, ..Default::default() }]),
            subset(vec![addr("10.0.0.2")], vec![], vec![port("", 80, "TCP")]),
        ],
    );
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    assert_eq!(cluster.list().len(), 1);
    assert_eq!(all_ips(&cluster), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn folding_subsets_over_the_maximum_is_reported() {
    // DIFFERENCES 12: two subsets that only differ by an unset vs TCP protocol fold into one key.
    let ep = endpoints(
        "ns",
        "svc",
        vec![
            subset(
                vec![addr("10.0.0.1"), addr("10.0.0.2")],
                vec![],
                vec![EndpointPort { port: 80, ..Default::default() }],
            ),
            subset(vec![addr("10.0.0.3"), addr("10.0.0.4")], vec![], vec![port("", 80, "TCP")]),
        ],
    );
    let config = Config { max_endpoints_per_subset: 3, ..Config::default() };
    let (p, cluster) = converge(&ep, vec![], &config);
    assert_eq!(all_ips(&cluster).len(), 3);
    assert_eq!(p.stats.addresses_skipped, 1);
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, REASON_TOO_MANY_ADDRESSES_TO_MIRROR);
}

#[test]
fn objects_without_metadata_never_crash() {
    let ep = Endpoints {
        metadata: ObjectMeta::default(),
        subsets: Some(vec![subset(vec![addr("10.0.0.1")], vec![], vec![])]),
    };
    // No Service at all: nothing to delete, nothing to create.
    let p = plan(&Input { endpoints: &ep, service: None, existing_slices: &[] }, &Config::default());
    assert_eq!(p.not_mirrored, Some(NotMirrored::ServiceMissing));
    assert!(p.is_noop());
    // A Service without metadata matches an Endpoints without metadata.
    let svc = Service::default();
    let nameless = EndpointSlice::default();
    let p = plan(&Input { endpoints: &ep, service: Some(&svc), existing_slices: &[&nameless] }, &Config::default());
    assert_eq!(p.create.len(), 1);
    assert!(
        p.create[0].metadata.name.as_deref().is_some_and(|n| n.starts_with('-')),
        "{:?}",
        p.create[0].metadata.name
    );
    let p = plan_delete_all("", "", &[&nameless], &Config::default());
    assert!(p.is_noop());
}

#[test]
fn odd_existing_slices_are_replaced_or_deleted() {
    let ep = endpoints(
        "ns",
        "svc",
        vec![subset(vec![addr("10.0.0.1"), addr("10.0.0.2")], vec![], vec![port("p", 1, "TCP")])],
    );
    let ours =
        |name: &str, address_type: &str, ports: Option<Vec<_>>, endpoints: Option<Vec<Endpoint>>| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(our_labels("svc")),
                ..Default::default()
            },
            address_type: address_type.into(),
            ports,
            endpoints,
        };
    let dp = || {
        Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some("p".into()),
            port: Some(1),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }])
    };
    let ep1 = |ip: &str| Endpoint { addresses: vec![ip.into()], ..Default::default() };
    let existing = vec![
        ours("fqdn", "FQDN", dp(), Some(vec![ep1("example.com")])),
        ours("dup", "IPv4", dp(), Some(vec![ep1("10.0.0.1"), ep1("10.0.0.1")])),
        ours("huge", "IPv4", dp(), Some((0..1500).map(|i| ep1(&format!("10.1.{}.{}", i / 256, i % 256))).collect())),
        ours("empty", "IPv4", None, None),
        ours("no-addresses", "IPv6", dp(), Some(vec![Endpoint::default()])),
    ];
    let (p, cluster) = converge(&ep, existing, &Config::default());
    // One slice remains for the one key; the rest were deleted or recycled.
    assert_eq!(cluster.list().len(), 1, "{:#?}", cluster.list());
    assert!(p.create.is_empty(), "recycled or kept: {p:#?}");
    assert_eq!(all_ips(&cluster), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn a_duplicate_endpoint_does_not_hide_a_missing_one() {
    // DIFFERENCES 6: upstream counts [A, A] as matching {A, B}.
    let ep = endpoints(
        "ns",
        "svc",
        vec![subset(vec![addr("10.0.0.1"), addr("10.0.0.2")], vec![], vec![port("p", 1, "TCP")])],
    );
    let (_, first) = converge(&ep, vec![], &Config::default());
    let mut s = first.list().remove(0);
    let a = s.endpoints.as_ref().unwrap()[0].clone();
    s.endpoints = Some(vec![a.clone(), a]);
    let p = plan_for(&ep, &[s], &Config::default());
    assert_eq!(p.update.len(), 1);
    assert_eq!((p.stats.endpoints_added, p.stats.endpoints_removed), (1, 1));
}

#[test]
fn slices_pending_deletion_are_left_alone_but_reserve_their_names() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("p", 1, "TCP")])]);
    let first = plan_for(&ep, &[], &Config::default());
    let mut dying = first.create[0].clone();
    dying.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
    let p = plan_for(&ep, &[dying.clone()], &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 0));
    assert_ne!(p.create[0].metadata.name, dying.metadata.name, "the name is reserved");
    // Not mirrored any more: the pending slice is not deleted again.
    let p = plan_delete_all("ns", "svc", &[&dying], &Config::default());
    assert!(p.is_noop());
}

#[test]
fn stale_cache_replans_the_same_name() {
    // The create reached the apiserver but not the cache: the same name is planned again and
    // the apiserver answers 409 instead of creating a duplicate.
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("p", 1, "TCP")])]);
    let p1 = plan_for(&ep, &[], &Config::default());
    let mut cluster = Cluster::default();
    cluster.apply(&p1).unwrap();
    let p2 = plan_for(&ep, &[], &Config::default());
    assert_eq!(p1, p2);
    assert!(cluster.apply(&p2).unwrap_err().starts_with("409"));
    // A stale update fails with a conflict too.
    let ep2 = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.2")], vec![], vec![port("p", 1, "TCP")])]);
    let stale = cluster.list();
    let mut newer = stale[0].clone();
    newer.metadata.resource_version = Some("999".into());
    let mut c2 = Cluster::default();
    c2.slices.insert(newer.metadata.name.clone().unwrap(), newer);
    let p3 = plan_for(&ep2, &stale, &Config::default());
    assert_eq!(p3.update.len(), 1);
    assert!(c2.apply(&p3).unwrap_err().starts_with("409"));
}

#[test]
fn not_mirrored_reasons_and_cleanup() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("p", 1, "TCP")])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let existing = cluster.list();
    let refs: Vec<&EndpointSlice> = existing.iter().collect();
    let svc = service("ns", "svc");
    let mut with_selector = svc.clone();
    with_selector.spec = Some(ServiceSpec { selector: Some(Default::default()), ..Default::default() });
    let external = Service {
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("x.example".into()),
            ..Default::default()
        }),
        ..svc.clone()
    };
    let other_ns = service("other", "svc");
    let mut skip = ep.clone();
    skip.metadata.labels = Some(labels(&[(super::super::LABEL_SKIP_MIRROR, "true")]));
    let mut leader = ep.clone();
    leader.metadata.annotations = Some(labels(&[(super::super::ANNOTATION_LEADER_ELECTION, "{}")]));

    let cases: Vec<(&str, &Endpoints, Option<&Service>, Option<NotMirrored>)> = vec![
        ("mirrored", &ep, Some(&svc), None),
        ("ExternalName without selector is mirrored (as upstream)", &ep, Some(&external), None),
        ("no Service", &ep, None, Some(NotMirrored::ServiceMissing)),
        ("Service of another namespace", &ep, Some(&other_ns), Some(NotMirrored::ServiceMissing)),
        ("empty selector counts as a selector", &ep, Some(&with_selector), Some(NotMirrored::ServiceHasSelector)),
        ("skip-mirror", &skip, Some(&svc), Some(NotMirrored::SkipMirrorLabel)),
        ("leader election", &leader, Some(&svc), Some(NotMirrored::LeaderElection)),
        ("skip-mirror before Service checks", &skip, None, Some(NotMirrored::SkipMirrorLabel)),
    ];
    for (name, e, s, want) in cases {
        assert_eq!(not_mirrored_reason(s, e), want, "{name}");
        assert_eq!(should_mirror(s, e), want.is_none(), "{name}");
        let p = plan(&Input { endpoints: e, service: s, existing_slices: &refs }, &Config::default());
        assert_eq!(p.not_mirrored, want, "{name}");
        if want.is_some() {
            assert_eq!(p.delete.len(), 1, "{name}: all mirrored slices are deleted");
            assert!(p.create.is_empty() && p.update.is_empty() && p.events.is_empty(), "{name}");
            assert_eq!(p.stats, Default::default(), "{name}");
        } else {
            assert!(p.is_noop(), "{name}");
        }
    }
    let p = plan_delete_all("ns", "svc", &refs, &Config::default());
    assert_eq!((p.delete.len(), p.not_mirrored), (1, Some(NotMirrored::EndpointsMissing)));
}

#[test]
fn config_is_clamped() {
    assert_eq!(Config { max_endpoints_per_subset: 0, ..Config::default() }.max_endpoints(), 1);
    assert_eq!(Config { max_endpoints_per_subset: 5000, ..Config::default() }.max_endpoints(), 1000);
    assert_eq!(Config::default().max_endpoints(), 1000);
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1"), addr("10.0.0.2")], vec![], vec![])]);
    let (p, _) = converge(&ep, vec![], &Config { max_endpoints_per_subset: 0, ..Config::default() });
    assert_eq!(p.stats.addresses_skipped, 1);
}

#[test]
fn endpoints_being_deleted_get_no_creates_but_updates_and_deletes() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("p", 1, "TCP")])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let mut dying = endpoints(
        "ns",
        "svc",
        vec![
            subset(vec![addr("10.0.0.2")], vec![], vec![port("p", 1, "TCP")]),
            subset(vec![addr("10.0.0.3")], vec![], vec![port("q", 2, "TCP")]),
        ],
    );
    dying.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
    let p = plan_for(&dying, &cluster.list(), &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0), "{p:#?}");
}

#[test]
fn queue_decisions() {
    let svc = service("ns", "svc");
    let mut sel = svc.clone();
    sel.spec = Some(ServiceSpec { selector: Some(labels(&[("a", "b")])), ..Default::default() });
    assert!(queue::service_added_or_deleted(&svc));
    assert!(!queue::service_added_or_deleted(&sel));
    assert!(queue::service_updated(&svc, &sel) && queue::service_updated(&sel, &svc));
    assert!(!queue::service_updated(&svc, &svc) && !queue::service_updated(&sel, &sel));

    let ep = endpoints("ns", "svc", vec![]);
    let mut skip = ep.clone();
    skip.metadata.labels = Some(labels(&[(super::super::LABEL_SKIP_MIRROR, "true")]));
    assert!(queue::endpoints_added_or_deleted(&ep) && !queue::endpoints_added_or_deleted(&skip));
    assert!(queue::endpoints_updated(&ep, &skip) && queue::endpoints_updated(&skip, &ep));
    assert!(!queue::endpoints_updated(&skip, &skip));

    let slice = |name: Option<&str>, mb: Option<&str>| {
        let mut l = std::collections::BTreeMap::new();
        if let Some(n) = name {
            l.insert(LABEL_SERVICE_NAME.to_owned(), n.to_owned());
        }
        if let Some(m) = mb {
            l.insert(LABEL_MANAGED_BY.to_owned(), m.to_owned());
        }
        EndpointSlice {
            metadata: ObjectMeta { namespace: Some("ns".into()), labels: Some(l), ..Default::default() },
            ..Default::default()
        }
    };
    let ours = slice(Some("svc"), Some(CONTROLLER_NAME));
    let theirs = slice(Some("svc"), Some("other"));
    assert_eq!(queue::slice_added_or_deleted(&ours, CONTROLLER_NAME), SliceUpdate::UnlessOwnWrite("ns/svc".into()));
    assert_eq!(queue::slice_added_or_deleted(&theirs, CONTROLLER_NAME), SliceUpdate::Ignore);
    assert_eq!(
        queue::slice_added_or_deleted(&slice(None, Some(CONTROLLER_NAME)), CONTROLLER_NAME),
        SliceUpdate::Ignore
    );
    assert_eq!(queue::slice_updated(&ours, &ours, CONTROLLER_NAME), SliceUpdate::UnlessOwnWrite("ns/svc".into()));
    assert_eq!(queue::slice_updated(&theirs, &ours, CONTROLLER_NAME), SliceUpdate::Queue(vec!["ns/svc".into()]));
    assert_eq!(queue::slice_updated(&ours, &theirs, CONTROLLER_NAME), SliceUpdate::Queue(vec!["ns/svc".into()]));
    assert_eq!(queue::slice_updated(&theirs, &theirs, CONTROLLER_NAME), SliceUpdate::Ignore);
    let renamed = slice(Some("svc2"), Some("other"));
    assert_eq!(
        queue::slice_updated(&ours, &renamed, CONTROLLER_NAME),
        SliceUpdate::Queue(vec!["ns/svc2".into(), "ns/svc".into()])
    );
    assert_eq!(queue::slice_updated(&slice(None, None), &slice(Some(""), None), CONTROLLER_NAME), SliceUpdate::Ignore);
}

#[test]
fn a_port_change_recycles_the_slice_instead_of_create_and_delete() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("http", 80, "TCP")])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let old = cluster.list().remove(0);
    let moved = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("http", 8080, "TCP")])]);
    let (p, cluster) = converge(&moved, cluster.list(), &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0), "{p:#?}");
    assert_eq!(p.update[0].metadata.name, old.metadata.name);
    assert_eq!(p.update[0].metadata.resource_version, old.metadata.resource_version);
    assert_eq!(cluster.list()[0].ports.as_ref().unwrap()[0].port, Some(8080));
    // Recycling stays within an address type: IPv4 -> IPv6 is a create and a delete.
    let v6 = endpoints("ns", "svc", vec![subset(vec![addr("fd00::1")], vec![], vec![port("http", 8080, "TCP")])]);
    let (p, _) = converge(&v6, cluster.list(), &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1), "{p:#?}");
}

#[test]
fn the_up_to_date_slice_of_a_key_is_kept_even_if_not_first() {
    let ep = endpoints("ns", "svc", vec![subset(vec![addr("10.0.0.1")], vec![], vec![port("p", 1, "TCP")])]);
    let (_, cluster) = converge(&ep, vec![], &Config::default());
    let good = cluster.list().remove(0);
    let mut stale = good.clone();
    stale.metadata.name = Some("a-first-by-name".into());
    stale.endpoints = Some(vec![Endpoint { addresses: vec!["10.9.9.9".into()], ..Default::default() }]);
    let p = plan_for(&ep, &[stale.clone(), good.clone()], &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 0, 1), "{p:#?}");
    assert_eq!(p.delete[0].metadata.name, stale.metadata.name);
    // Without an up-to-date one, the first by name is rewritten and the rest deleted.
    let mut stale2 = stale.clone();
    stale2.metadata.name = Some("b-second".into());
    let p = plan_for(&ep, &[stale2, stale.clone()], &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 1), "{p:#?}");
    assert_eq!(p.update[0].metadata.name, stale.metadata.name);
}
