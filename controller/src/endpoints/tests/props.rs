//! Property tests of [`plan`] over random Services, pods and existing objects.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Endpoints, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::endpoints::{ANNOTATION_OVER_CAPACITY, MAX_CAPACITY, OVER_CAPACITY_TRUNCATED};

const NS: &str = "ns";
const IP_POOL: &[&str] =
    &["10.0.0.1", "10.0.0.2", "10.0.0.3", "010.0.0.4", "::ffff:10.0.0.5", "fd00::1", "fd00::2", "FD00::3", "bogus", ""];
const PORT_NAMES: &[&str] = &["http", "dns", "metrics"];
const PROTOCOLS: &[Option<&str>] = &[Some("TCP"), Some("UDP"), None];

#[derive(Debug, Clone)]
struct PodSpecGen {
    other_namespace: bool,
    selected: bool,
    phase: Option<&'static str>,
    ready: bool,
    terminating: bool,
    ips: Vec<usize>,
    ports: Vec<(usize, i32, usize)>,
    hostname: bool,
    subdomain_matches: bool,
    node: Option<u8>,
}

fn pod_gen() -> impl Strategy<Value = PodSpecGen> {
    (
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.9),
        prop::sample::select(vec![
            None,
            Some("Running"),
            Some("Pending"),
            Some("Unknown"),
            Some("Failed"),
            Some("Succeeded"),
        ]),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::collection::vec(0..IP_POOL.len(), 0..3),
        prop::collection::vec((0..PORT_NAMES.len(), 1..4i32, 0..PROTOCOLS.len()), 0..3),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0..3u8),
    )
        .prop_map(
            |(other_namespace, selected, phase, ready, terminating, ips, ports, hostname, subdomain_matches, node)| {
                PodSpecGen {
                    other_namespace,
                    selected,
                    phase,
                    ready,
                    terminating,
                    ips,
                    ports,
                    hostname,
                    subdomain_matches,
                    node,
                }
            },
        )
}

fn build_pod(i: usize, g: &PodSpecGen) -> Pod {
    let ips: Vec<PodIP> = g.ips.iter().map(|&k| PodIP { ip: IP_POOL[k].to_owned() }).collect();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(if g.other_namespace { "other" } else { NS }.into()),
            name: Some(format!("pod{i}")),
            uid: Some(format!("uid-{i}")),
            labels: Some(map(&[("app", if g.selected { "x" } else { "y" })])),
            deletion_timestamp: g.terminating.then(|| time(1_700_000_000)),
            resource_version: Some(i.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            hostname: g.hostname.then(|| format!("h{i}")),
            subdomain: Some(if g.subdomain_matches { "svc" } else { "other" }.into()),
            node_name: g.node.map(|n| format!("node-{n}")),
            containers: vec![Container {
                ports: Some(
                    g.ports
                        .iter()
                        .map(|&(n, p, proto)| ContainerPort {
                            name: Some(PORT_NAMES[n].into()),
                            container_port: 9000 + p,
                            protocol: PROTOCOLS[proto].map(str::to_owned),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: g.phase.map(str::to_owned),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if g.ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            pod_ip: ips.first().map(|p| p.ip.clone()),
            pod_ips: Some(ips),
            ..Default::default()
        }),
    }
}

fn service_gen() -> impl Strategy<Value = Service> {
    let port = (prop::option::of(0..4usize), 1..4i32, 0..PROTOCOLS.len(), prop::option::of(prop::bool::ANY), 0..4usize);
    (
        prop::collection::vec(port, 0..4),
        prop::sample::select(vec!["10.96.0.1", "None", "", "fd00::10"]),
        prop::sample::select(vec![vec![], vec!["IPv4"], vec!["IPv6"], vec!["IPv4", "IPv6"], vec!["IPv6", "IPv4"]]),
        any::<bool>(),
        prop::sample::select(vec![None, Some("ClusterIP"), Some("ExternalName")]),
        prop::sample::select(vec![0u8, 1, 1, 1, 1, 1, 2]),
        prop::collection::btree_set(0..4usize, 0..3),
    )
        .prop_map(|(ports, cluster_ip, families, pnra, type_, selector, labels)| {
            let label_pool = [("team", "a"), ("tier", "b"), (LABEL_HEADLESS, "x"), (LABEL_MANAGED_BY, "other")];
            Service {
                metadata: ObjectMeta {
                    namespace: Some(NS.into()),
                    name: Some("svc".into()),
                    labels: Some(
                        labels.iter().map(|&k| (label_pool[k].0.to_owned(), label_pool[k].1.to_owned())).collect(),
                    ),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    type_: type_.map(str::to_owned),
                    // 0: no selector; 1: app=x; 2: empty (selects all).
                    selector: match selector {
                        0 => None,
                        1 => Some(map(&[("app", "x")])),
                        _ => Some(Default::default()),
                    },
                    cluster_ip: (!cluster_ip.is_empty()).then(|| cluster_ip.to_owned()),
                    ip_families: (!families.is_empty()).then(|| families.iter().map(|f| (*f).to_owned()).collect()),
                    publish_not_ready_addresses: Some(pnra),
                    ports: Some(
                        ports
                            .into_iter()
                            .enumerate()
                            .map(|(i, (name, port, proto, named_target, target))| ServicePort {
                                name: name.map(|n| ["a", "b", "c", ""][n].to_owned()),
                                port: 80 + port + i as i32,
                                protocol: PROTOCOLS[proto].map(str::to_owned),
                                target_port: named_target.map(|named| {
                                    if named {
                                        IntOrString::String(PORT_NAMES[target % PORT_NAMES.len()].into())
                                    } else {
                                        IntOrString::Int(9000 + target as i32)
                                    }
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                status: None,
            }
        })
}

/// Random existing objects: none, an arbitrary one, or one planned from other pods.
fn existing_gen() -> impl Strategy<Value = Option<(Vec<PodSpecGen>, bool)>> {
    prop::option::of((prop::collection::vec(pod_gen(), 0..6), any::<bool>()))
}

fn check_output(e: &Endpoints, p: &Plan) -> Result<(), TestCaseError> {
    let subsets = e.subsets.as_deref().unwrap_or_default();
    let mut total = 0;
    for s in subsets {
        let key = |a: &EndpointAddress| (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()));
        let ready: BTreeSet<_> = s.addresses.iter().flatten().map(key).collect();
        let not_ready: BTreeSet<_> = s.not_ready_addresses.iter().flatten().map(key).collect();
        prop_assert!(ready.is_disjoint(&not_ready), "address both ready and not ready: {s:?}");
        prop_assert!(!ready.is_empty() || !not_ready.is_empty(), "subset without addresses");
        prop_assert_eq!(ready.len(), s.addresses.as_ref().map_or(0, Vec::len), "duplicate ready address");
        prop_assert_eq!(
            not_ready.len(),
            s.not_ready_addresses.as_ref().map_or(0, Vec::len),
            "duplicate not-ready address"
        );
        for a in s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()) {
            prop_assert!(a.ip.parse::<std::net::IpAddr>().is_ok(), "invalid address {}", a.ip);
            prop_assert!(!a.ip.starts_with("::ffff:"), "mapped address not canonical: {}", a.ip);
        }
        total += ready.len() + not_ready.len();
    }
    prop_assert!(total <= MAX_CAPACITY);
    let annotation = e.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_OVER_CAPACITY));
    prop_assert_eq!(annotation.map(String::as_str), p.counts.truncated.then_some(OVER_CAPACITY_TRUNCATED));
    prop_assert_eq!(p.counts.truncated, p.counts.ready + p.counts.not_ready > MAX_CAPACITY);
    prop_assert_eq!(
        e.metadata.labels.as_ref().unwrap().get(LABEL_MANAGED_BY).map(String::as_str),
        Some(DEFAULT_MANAGED_BY)
    );
    Ok(())
}

fn plan_for(svc: &Service, pods: &[Pod], existing: Option<&Endpoints>, trigger: Option<DateTime<Utc>>) -> Plan {
    run_at(svc, pods, existing, trigger)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Output invariants, idempotence (planning against the applied result gives nothing, even
    /// with a different trigger time) and independence of pod order.
    #[test]
    fn prop_plan_invariants(
        svc in service_gen(),
        pod_gens in prop::collection::vec(pod_gen(), 0..24),
        existing in existing_gen(),
        seed in any::<u64>(),
        trigger in prop::option::of(0i64..2_000_000_000),
    ) {
        let pods: Vec<Pod> = pod_gens.iter().enumerate().map(|(i, g)| build_pod(i, g)).collect();
        let trigger = trigger.map(|s| DateTime::from_timestamp(s, 0).unwrap());
        // An existing object: planned from other pods and applied, or garbage.
        let stored: Option<Endpoints> = existing.map(|(gens, garbage)| {
            if garbage {
                let mut e = endpoints(NS, "5", &[("junk", "1")], &[(ANNOTATION_OVER_CAPACITY, "warning")], None);
                e.metadata.name = Some("svc".into());
                e.subsets = Some(vec![subset(vec![bare_addr("10.0.0.1"), bare_addr("10.0.0.1")], vec![bare_addr("10.0.0.1")], vec![])]);
                e
            } else {
                let other: Vec<Pod> = gens.iter().enumerate().map(|(i, g)| build_pod(i + 100, g)).collect();
                let mut svc_all = svc.clone();
                svc_all.spec.as_mut().unwrap().type_ = None;
                svc_all.spec.as_mut().unwrap().selector = Some(Default::default());
                apply(None, &plan_for(&svc_all, &other, None, None)).unwrap()
            }
        });

        let p = plan_for(&svc, &pods, stored.as_ref(), trigger);
        match &p.action {
            Action::Create(e) | Action::Update(e) => check_output(e, &p)?,
            Action::Nothing => {}
            Action::Delete { .. } => prop_assert!(false, "delete with a Service"),
        }
        if p.skipped.is_some() {
            prop_assert_eq!(&p.action, &Action::Nothing);
        }

        // Idempotent: the applied result needs no further write.
        let after = apply(stored.clone(), &p);
        let again = plan_for(&svc, &pods, after.as_ref(), trigger.map(|t| t + chrono::Duration::seconds(1)));
        prop_assert_eq!(&again.action, &Action::Nothing);

        // Pod order does not matter.
        let mut shuffled = pods.clone();
        let n = shuffled.len();
        if n > 1 {
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
        }
        prop_assert_eq!(plan_for(&svc, &shuffled, stored.as_ref(), trigger), p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Truncation: at most 1000 addresses, the annotation exactly when truncated, ready
    /// addresses first, idempotent, order-independent.
    #[test]
    fn prop_truncation(
        n in 900usize..1300,
        not_ready_every in 2usize..9,
        second_port_every in 1usize..5,
        seed in any::<u64>(),
    ) {
        let pods: Vec<Pod> = (0..n)
            .map(|i| {
                let mut p = test_pod(NS, i, 2, i % not_ready_every != 0, IPV4);
                if i % second_port_every != 0 {
                    p.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap().truncate(1);
                }
                p
            })
            .collect();
        let named = |name: &str, target: &str| ServicePort {
            name: Some(name.into()),
            port: 80,
            target_port: Some(IntOrString::String(target.into())),
            ..Default::default()
        };
        let svc = service(NS, "foo", Some(&[("foo", "bar")]), vec![named("a", "port0"), named("b", "port1")], IPV4);
        let p = run(&svc, &pods, None);
        let e = expect_create(&p).clone();
        check_output(&e, &p)?;
        let (ready, not_ready) = counts(&e);
        let desired = p.counts.ready + p.counts.not_ready;
        prop_assert_eq!(p.counts.truncated, desired > MAX_CAPACITY);
        if desired > MAX_CAPACITY {
            prop_assert_eq!(ready + not_ready, MAX_CAPACITY.min(desired));
            // Ready first: not-ready addresses only when every ready one fits.
            prop_assert!(not_ready == 0 || ready == p.counts.ready);
        } else {
            prop_assert_eq!((ready, not_ready), (p.counts.ready, p.counts.not_ready));
        }
        let stored = apply(None, &p);
        prop_assert_eq!(run(&svc, &pods, stored.as_ref()).action, Action::Nothing);
        let mut shuffled = pods.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(run(&svc, &shuffled, None), p);
    }
}
