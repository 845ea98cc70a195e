//! Property tests of the mirroring planner.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as DPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use proptest::collection::vec;
use proptest::prelude::*;

use super::super::desired::endpoint_port;
use super::super::repack::{port_value, repack_subsets};
use super::super::{ANNOTATION_LAST_APPLIED_CONFIGURATION, ANNOTATION_LAST_CHANGE_TRIGGER_TIME, Config};
use super::*;
use crate::endpointslice::equality::{EndpointKey, PortMapKey};
use crate::podutil::canonical_ip;

/// Distinct canonical IPs (no two entries canonicalise to the same address), plus invalid ones.
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.5",
    "::ffff:10.0.0.7",
    "010.0.0.8",
    "2001:db8::1",
    "2001:DB8::2",
    "fd00::3",
    "not-an-ip",
    "",
    "1.2.3",
    "10.0.0.256",
];

type PortDef = (&'static str, i32, &'static str, Option<&'static str>);
const PORTS: &[PortDef] =
    &[("http", 80, "TCP", None), ("https", 443, "TCP", Some("https")), ("", 53, "UDP", None), ("dns", 53, "TCP", None)];

const LABELS: &[(&str, &str)] = &[("app", "x"), (LABEL_SERVICE_NAME, "other"), (LABEL_MANAGED_BY, "me"), ("tier", "y")];
const ANNOTATIONS: &[(&str, &str)] =
    &[("a", "1"), (ANNOTATION_LAST_CHANGE_TRIGGER_TIME, "t"), (ANNOTATION_LAST_APPLIED_CONFIGURATION, "{}")];

fn core_port(i: usize) -> EndpointPort {
    let (name, port, protocol, app) = PORTS[i];
    EndpointPort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port,
        protocol: Some(protocol.to_owned()),
        app_protocol: app.map(str::to_owned),
    }
}

fn pick<'a>(pool: &'a [(&'a str, &'a str)], mask: u8) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = pool
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (k, v))| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (!m.is_empty()).then_some(m)
}

fn arb_subset() -> impl Strategy<Value = EndpointSubset> {
    (vec(0..IPS.len(), 0..6), vec(0..IPS.len(), 0..3), vec(0..PORTS.len(), 0..3)).prop_map(|(r, n, p)| {
        subset(
            r.into_iter().map(|i| addr(IPS[i])).collect(),
            n.into_iter().map(|i| addr(IPS[i])).collect(),
            p.into_iter().map(core_port).collect(),
        )
    })
}

fn arb_endpoints() -> impl Strategy<Value = Endpoints> {
    (vec(arb_subset(), 0..4), any::<u8>(), any::<u8>()).prop_map(|(subsets, lm, am)| {
        let mut ep = endpoints("ns", "svc", subsets);
        ep.metadata.labels = pick(LABELS, lm);
        ep.metadata.annotations = pick(ANNOTATIONS, am);
        ep
    })
}

/// A random slice: address type, ports, endpoints from the pools.
fn arb_slice_body() -> impl Strategy<Value = EndpointSlice> {
    (
        prop_oneof![Just("IPv4"), Just("IPv6"), Just("FQDN")],
        vec(0..PORTS.len(), 0..3),
        vec((0..10usize, any::<bool>()), 0..4),
    )
        .prop_map(|(t, ports, eps)| EndpointSlice {
            metadata: ObjectMeta::default(),
            address_type: t.into(),
            ports: Some(ports.into_iter().map(|i| endpoint_port(&port_value(&core_port(i)))).collect()),
            endpoints: Some(
                eps.into_iter()
                    .map(|(i, ready)| Endpoint {
                        addresses: vec![canonical_ip(IPS[i]).unwrap().1],
                        conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
}

/// Slices of this controller for ns/svc left by anyone (some pending deletion).
fn arb_junk() -> impl Strategy<Value = Vec<EndpointSlice>> {
    vec((arb_slice_body(), any::<bool>(), any::<bool>()), 0..4).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (mut s, pending, owned))| {
                s.metadata.name = Some(format!("junk-{i}"));
                s.metadata.namespace = Some("ns".into());
                s.metadata.labels = Some(our_labels("svc"));
                if pending {
                    s.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
                }
                if owned {
                    s.metadata.owner_references =
                        Some(vec![super::super::reconcile::endpoints_owner_reference(&endpoints("ns", "svc", vec![]))]);
                }
                s
            })
            .collect()
    })
}

/// Slices that are not this controller's for ns/svc.
fn arb_foreign() -> impl Strategy<Value = Vec<EndpointSlice>> {
    vec((arb_slice_body(), 0..3usize), 0..4).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (mut s, kind))| {
                s.metadata.name = Some(format!("foreign-{i}"));
                let (ns, l) = match kind {
                    0 => (
                        "ns",
                        labels(&[(LABEL_SERVICE_NAME, "svc"), (LABEL_MANAGED_BY, "endpointslice-controller.k8s.io")]),
                    ),
                    1 => ("ns", our_labels("other-svc")),
                    _ => ("elsewhere", our_labels("svc")),
                };
                s.metadata.namespace = Some(ns.into());
                s.metadata.labels = Some(l);
                s
            })
            .collect()
    })
}

fn is_ours_live(s: &EndpointSlice) -> bool {
    s.metadata.deletion_timestamp.is_none() && super::super::is_mirrored_slice_of(s, "ns", "svc", CONTROLLER_NAME)
}

type Content = Vec<(String, PortMapKey, Vec<(EndpointKey, Option<bool>)>)>;

/// Our live slices as (address type, port key, endpoints with readiness), sorted.
fn content(slices: &[EndpointSlice]) -> Content {
    let mut out: Content = slices
        .iter()
        .filter(|s| is_ours_live(s))
        .map(|s| {
            let mut eps: Vec<(EndpointKey, Option<bool>)> = s
                .endpoints
                .iter()
                .flatten()
                .map(|e| (EndpointKey::of(e), e.conditions.as_ref().and_then(|c| c.ready)))
                .collect();
            eps.sort();
            (s.address_type.clone(), PortMapKey::of_slice(s), eps)
        })
        .collect();
    out.sort();
    out
}

fn family_of(ip: &str) -> &'static str {
    canonical_ip(ip).map_or("", |(f, _)| f.as_str())
}

/// (name, port, protocol, appProtocol) of a slice port.
type PortTuple = (String, i32, String, Option<String>);

/// (address type, canonical IP, port).
type PairKey = (String, String, PortTuple);

fn dport_value(p: &DPort) -> PortTuple {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or(0),
        p.protocol.clone().unwrap_or_default(),
        p.app_protocol.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With room for everything, every valid (address, port) pair of the input is mirrored
    /// exactly once, in a slice of its family carrying that port, and is ready iff it is ready
    /// in every subset offering that port. Nothing else is mirrored.
    #[test]
    fn prop_every_valid_address_appears_exactly_once(ep in arb_endpoints()) {
        let config = Config::default();
        let mut cluster = Cluster::default();
        let p = plan_for(&ep, &[], &config);
        cluster.apply(&p).unwrap();

        let mut expected: BTreeMap<PairKey, bool> = BTreeMap::new();
        for s in ep.subsets.iter().flatten() {
            for port in s.ports.iter().flatten() {
                let pv = dport_value(&endpoint_port(&port_value(port)));
                let all = s.addresses.iter().flatten().map(|a| (a, true))
                    .chain(s.not_ready_addresses.iter().flatten().map(|a| (a, false)));
                for (a, ready) in all {
                    if let Some((f, ip)) = canonical_ip(&a.ip) {
                        let e = expected.entry((f.as_str().to_owned(), ip, pv.clone())).or_insert(true);
                        *e = *e && ready;
                    }
                }
            }
        }
        let mut seen: BTreeMap<PairKey, Vec<bool>> = BTreeMap::new();
        for s in cluster.list() {
            for port in s.ports.iter().flatten() {
                for e in s.endpoints.iter().flatten() {
                    prop_assert_eq!(e.addresses.len(), 1);
                    prop_assert_eq!(family_of(&e.addresses[0]), s.address_type.as_str());
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap();
                    seen.entry((s.address_type.clone(), e.addresses[0].clone(), dport_value(port))).or_default().push(ready);
                }
            }
        }
        for (k, ready) in &expected {
            prop_assert_eq!(seen.get(k), Some(&vec![*ready]), "{:?}", k);
        }
        prop_assert_eq!(seen.len(), expected.len());
        prop_assert!(p.events.iter().all(|e| e.reason == "InvalidIPAddress"), "no overflow at 1000: {:?}", p.events);
    }

    /// Per repacked subset, exactly min(max, valid addresses) are mirrored; no slice holds more
    /// than the maximum; at most one slice per (address type, ports); the skipped count is
    /// everything else; the events follow upstream's rule.
    #[test]
    fn prop_per_subset_maximum(ep in arb_endpoints(), max in 1usize..5) {
        let config = Config { max_endpoints_per_subset: max, ..Config::default() };
        let mut cluster = Cluster::default();
        let p = plan_for(&ep, &[], &config);
        cluster.apply(&p).unwrap();
        let slices = cluster.list();

        let mut per_key: BTreeMap<PortMapKey, usize> = BTreeMap::new();
        let mut keys = BTreeSet::new();
        for s in &slices {
            let n = s.endpoints.as_ref().map_or(0, Vec::len);
            prop_assert!(n <= max && n > 0, "{} endpoints, max {}", n, max);
            let ids: BTreeSet<EndpointKey> = s.endpoints.iter().flatten().map(EndpointKey::of).collect();
            prop_assert_eq!(ids.len(), n, "an endpoint twice in one slice");
            prop_assert!(keys.insert((s.address_type.clone(), PortMapKey::of_slice(s))), "two slices for one key");
            *per_key.entry(PortMapKey::of_slice(s)).or_default() += n;
        }
        let mut skipped = 0;
        for r in repack_subsets(ep.subsets.as_deref().unwrap_or_default()) {
            let all: Vec<_> = r.addresses.iter().flatten().chain(r.not_ready_addresses.iter().flatten()).collect();
            let valid = all.iter().filter(|a| canonical_ip(&a.ip).is_some()).count();
            let ports: Vec<DPort> = r.ports.iter().flatten().map(|p| endpoint_port(&port_value(p))).collect();
            let got = per_key.get(&PortMapKey::new(Some(&ports))).copied().unwrap_or(0);
            prop_assert_eq!(got, valid.min(max));
            skipped += all.len() - valid.min(max);
        }
        prop_assert_eq!(p.stats.addresses_skipped, skipped);
        let over = p.events.iter().any(|e| e.reason == "TooManyAddressesToMirror");
        let invalid = p.events.iter().any(|e| e.reason == "InvalidIPAddress");
        let num_invalid = p.warnings.iter().map(|w| match w {
            super::super::PlanWarning::InvalidIpAddresses { count, .. } => *count,
            _ => 0,
        }).sum::<usize>();
        prop_assert_eq!(invalid, num_invalid > 0);
        prop_assert_eq!(over, skipped > num_invalid);
        prop_assert_eq!(p.stats.desired_endpoints, slices.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum::<usize>());
        prop_assert_eq!(p.stats.num_slices, slices.len());
    }

    /// From any history (an earlier Endpoints' slices, leftovers of this controller including
    /// slices pending deletion, other controllers' slices): applying the plan and planning again
    /// gives an empty plan; the result is the same as mirroring from scratch; slices that are
    /// not ours, or pending deletion, are never written; and the stats describe the result.
    #[test]
    fn prop_apply_then_replan_is_empty_and_others_untouched(
        e1 in arb_endpoints(),
        e2 in arb_endpoints(),
        junk in arb_junk(),
        foreign in arb_foreign(),
        max in prop_oneof![Just(1000usize), 1usize..4],
    ) {
        let config = Config { max_endpoints_per_subset: max, ..Config::default() };
        let mut start = junk.clone();
        start.extend(foreign.clone());
        let mut cluster = Cluster::new(start);
        cluster.apply(&plan_for(&e1, &cluster.list(), &config)).unwrap();
        let untouchable: BTreeMap<String, EndpointSlice> = cluster
            .slices
            .iter()
            .filter(|(_, s)| !is_ours_live(s))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();

        let p = plan_for(&e2, &cluster.list(), &config);
        for s in p.update.iter().chain(&p.delete) {
            let n = s.metadata.name.as_deref().unwrap();
            prop_assert!(!untouchable.contains_key(n), "wrote {}", n);
        }
        cluster.apply(&p).unwrap();
        for (n, s) in &untouchable {
            prop_assert_eq!(cluster.slices.get(n), Some(s));
        }
        let again = plan_for(&e2, &cluster.list(), &config);
        prop_assert!(again.is_noop(), "{:#?}", again);

        let mut fresh = Cluster::default();
        fresh.apply(&plan_for(&e2, &[], &config)).unwrap();
        prop_assert_eq!(content(&cluster.list()), content(&fresh.list()));

        let live: Vec<EndpointSlice> = cluster.list().into_iter().filter(is_ours_live).collect();
        prop_assert_eq!(p.stats.num_slices, live.len());
        prop_assert_eq!(
            p.stats.desired_endpoints,
            live.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum::<usize>()
        );
        for s in &live {
            prop_assert_eq!(s.metadata.owner_references.as_ref().map(Vec::len), Some(1));
            let l = s.metadata.labels.as_ref().unwrap();
            prop_assert_eq!(l.get(LABEL_SERVICE_NAME).map(String::as_str), Some("svc"));
            let ann = s.metadata.annotations.clone().unwrap_or_default();
            prop_assert!(!ann.contains_key(ANNOTATION_LAST_APPLIED_CONFIGURATION));
            prop_assert!(!ann.contains_key(ANNOTATION_LAST_CHANGE_TRIGGER_TIME));
        }

        // When mirroring stops, everything of ours that is live goes, nothing else.
        let refs: Vec<&EndpointSlice> = cluster.slices.values().collect();
        let stop = super::super::plan(
            &super::super::Input { endpoints: &e2, service: None, existing_slices: &refs },
            &config,
        );
        prop_assert!(stop.create.is_empty() && stop.update.is_empty());
        prop_assert_eq!(stop.delete.len(), live.len());
    }

    /// The plan is a function of its input.
    #[test]
    fn prop_deterministic(ep in arb_endpoints(), junk in arb_junk()) {
        let config = Config::default();
        prop_assert_eq!(plan_for(&ep, &junk, &config), plan_for(&ep, &junk, &config));
        let mut reversed = junk.clone();
        reversed.reverse();
        prop_assert_eq!(plan_for(&ep, &junk, &config), plan_for(&ep, &reversed, &config));
    }
}
