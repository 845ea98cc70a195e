//! Property tests of the planner over random Services, Pods, Nodes and existing slices.
//!
//! The existing slices come from an earlier random world (another Service variant and pod set,
//! planned and applied), plus random extra slices: other managers', other owners', unsupported
//! address types, pending deletion, duplicated and stale endpoints.
//!
//! Properties, after applying the plan to a fake apiserver ([`Cluster`]):
//! 1. every eligible endpoint (computed by an independent oracle below) appears exactly once per
//!    address type and port set among this controller's slices, with the expected content, and
//!    nothing else does;
//! 2. no slice written exceeds the maximum, nor does any of ours afterwards;
//! 3. planning again from the result is a no-op;
//! 4. slices of other managers, other Services or pending deletion are never written; updates
//!    and deletes name existing slices of ours and carry their resourceVersion; creates never
//!    reuse a name (all enforced by `Cluster::apply` and checked below).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, ObjectReference, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::endpointslice::equality::{EndpointKey, object_refs_equal_ignoring_resource_version};
use crate::endpointslice::labels::LABEL_HEADLESS;

const NS: &str = "ns";
const SVC: &str = "svc";
const UIDS: [&str; 2] = ["uid-1", "uid-2"];

#[derive(Debug, Clone)]
struct SvcGen {
    uid: usize,
    families: u8,
    cluster_ip: u8,
    pnra: bool,
    ports: Vec<(u8, bool, bool)>,
    labels: u8,
    no_selector: bool,
    deleting: bool,
    traffic_distribution: bool,
}

fn svc_gen() -> impl Strategy<Value = SvcGen> {
    (
        0..2usize,
        0..6u8,
        0..4u8,
        any::<bool>(),
        prop::collection::vec((0..4u8, any::<bool>(), any::<bool>()), 0..4),
        0..4u8,
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(
            |(uid, families, cluster_ip, pnra, ports, labels, no_selector, deleting, traffic_distribution)| SvcGen {
                uid,
                families,
                cluster_ip,
                pnra,
                ports,
                labels,
                no_selector,
                deleting,
                traffic_distribution,
            },
        )
}

fn build_service(g: &SvcGen) -> Service {
    let families = match g.families {
        0 => None,
        1 => Some(vec!["IPv4"]),
        2 => Some(vec!["IPv6"]),
        3 => Some(vec!["IPv4", "IPv6"]),
        4 => Some(vec!["IPv6", "IPv4"]),
        _ => Some(vec![]),
    };
    let cluster_ip = match g.cluster_ip {
        0 => None,
        1 => Some("None"),
        2 => Some("10.0.0.1"),
        _ => Some("fd00::1"),
    };
    let ports = g
        .ports
        .iter()
        .enumerate()
        .map(|(i, (target, udp, app))| ServicePort {
            name: Some(format!("p{i}")),
            port: 1000 + i as i32,
            target_port: Some(match target {
                0 => IntOrString::Int(80),
                1 => IntOrString::Int(81),
                2 => IntOrString::String("http".into()),
                _ => IntOrString::String("dns".into()),
            }),
            protocol: Some(if *udp { "UDP" } else { "TCP" }.into()),
            app_protocol: app.then(|| "h2c".to_owned()),
            ..Default::default()
        })
        .collect();
    let svc_labels = match g.labels {
        0 => None,
        1 => Some(labels(&[("app", "x")])),
        2 => Some(labels(&[("app", "x"), ("tier", "web")])),
        _ => Some(labels(&[(LABEL_SERVICE_NAME, "evil"), (LABEL_HEADLESS, "no")])),
    };
    Service {
        metadata: ObjectMeta {
            name: Some(SVC.into()),
            namespace: Some(NS.into()),
            uid: Some(UIDS[g.uid].into()),
            labels: svc_labels,
            deletion_timestamp: g.deleting.then(|| time(1_700_000_000)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(str::to_owned),
            ip_families: families.map(|f| f.into_iter().map(str::to_owned).collect()),
            publish_not_ready_addresses: Some(g.pnra),
            ports: Some(ports),
            selector: (!g.no_selector).then(|| labels(&[("app", "x")])),
            traffic_distribution: g.traffic_distribution.then(|| "PreferClose".to_owned()),
            ..Default::default()
        }),
        status: None,
    }
}

#[derive(Debug, Clone)]
struct PodGen {
    other_ns: bool,
    selected: bool,
    phase: u8,
    ready: bool,
    terminating: bool,
    ips: u8,
    node: u8,
    http: u8,
    dns: bool,
    sidecar: bool,
    hostname: u8,
}

fn pod_gen() -> impl Strategy<Value = PodGen> {
    (
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.9),
        0..6u8,
        any::<bool>(),
        prop::bool::weighted(0.2),
        0..8u8,
        0..5u8,
        0..3u8,
        any::<bool>(),
        prop::bool::weighted(0.2),
        0..3u8,
    )
        .prop_map(|(other_ns, selected, phase, ready, terminating, ips, node, http, dns, sidecar, hostname)| {
            PodGen { other_ns, selected, phase, ready, terminating, ips, node, http, dns, sidecar, hostname }
        })
}

fn v4(i: usize) -> String {
    format!("10.1.{}.{}", i / 256, i % 256)
}

fn v6(i: usize) -> String {
    format!("fd00::{:x}", i + 1)
}

fn build_pod(i: usize, g: &PodGen) -> Pod {
    let (pod_ip, pod_ips): (Option<String>, Vec<String>) = match g.ips {
        0 => (None, vec![]),
        1 => (Some(v4(i)), vec![v4(i)]),
        2 => (Some(v6(i)), vec![v6(i)]),
        3 => (Some(v4(i)), vec![v4(i), v6(i)]),
        4 => (Some(v6(i)), vec![v6(i), v4(i)]),
        5 => (Some("bad".into()), vec!["bad".into()]),
        6 => (Some(v4(i)), vec![v4(i), "bad".into()]),
        _ => (Some(v4(i)), vec![]),
    };
    let mut ports = Vec::new();
    if g.http > 0 {
        ports.push(ContainerPort {
            name: Some("http".into()),
            container_port: 8079 + i32::from(g.http),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    if g.dns {
        ports.push(ContainerPort {
            name: Some("dns".into()),
            container_port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        });
    }
    let init = g.sidecar.then(|| {
        vec![Container {
            name: "sidecar".into(),
            restart_policy: Some("Always".into()),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 9000,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i}")),
            namespace: Some(if g.other_ns { "other" } else { NS }.into()),
            uid: Some(format!("pod-uid-{i}")),
            labels: Some(labels(&[("app", if g.selected { "x" } else { "y" })])),
            deletion_timestamp: g.terminating.then(|| time(1_700_000_000)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "c".into(), ports: Some(ports), ..Default::default() }],
            init_containers: init,
            node_name: match g.node {
                0 | 1 => Some("node-a".into()),
                2 => Some("node-b".into()),
                3 => Some("node-missing".into()),
                _ => None,
            },
            hostname: (g.hostname > 0).then(|| format!("host-{i}")),
            subdomain: (g.hostname == 2).then(|| SVC.to_owned()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(
                ["Running", "Running", "Running", "Pending", "Succeeded", "Failed"][usize::from(g.phase)].into(),
            ),
            pod_ip,
            pod_ips: Some(pod_ips.into_iter().map(|ip| PodIP { ip }).collect()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if g.ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn test_nodes() -> Vec<Node> {
    vec![zoned_node("node-a", "z1"), node("node-b")]
}

#[derive(Debug, Clone)]
struct SliceGen {
    ours: bool,
    owner: u8,
    address_type: u8,
    ports: u8,
    endpoints: Vec<(usize, bool, bool)>,
    deleting: bool,
    extra_label: bool,
}

fn slice_gen() -> impl Strategy<Value = SliceGen> {
    (
        prop::bool::weighted(0.7),
        0..3u8,
        0..4u8,
        0..4u8,
        prop::collection::vec((0..50usize, any::<bool>(), any::<bool>()), 0..6),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(|(ours, owner, address_type, ports, endpoints, deleting, extra_label)| SliceGen {
            ours,
            owner,
            address_type,
            ports,
            endpoints,
            deleting,
            extra_label,
        })
}

fn build_slice(k: usize, g: &SliceGen, max: usize) -> EndpointSlice {
    let address_type = ["IPv4", "IPv6", "FQDN", "IP"][usize::from(g.address_type)];
    let ports = match g.ports {
        0 => None,
        1 => Some(vec![]),
        2 => Some(vec![EndpointPort {
            name: Some("p0".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
        _ => Some(vec![EndpointPort {
            name: Some("p0".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    };
    let endpoints = g
        .endpoints
        .iter()
        .take(max)
        .map(|(i, v6_addr, ready)| Endpoint {
            addresses: vec![if *v6_addr { v6(*i) } else { v4(*i) }],
            conditions: Some(EndpointConditions {
                ready: Some(*ready),
                serving: Some(*ready),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(NS.into()),
                name: Some(format!("pod-{i}")),
                uid: Some(format!("pod-uid-{i}")),
                ..Default::default()
            }),
            node_name: Some("node-a".into()),
            ..Default::default()
        })
        .collect();
    let mut l =
        labels(&[(LABEL_SERVICE_NAME, SVC), (LABEL_MANAGED_BY, if g.ours { CONTROLLER_NAME } else { "other" })]);
    if g.extra_label {
        l.insert("stale".into(), "label".into());
    }
    let owner = |uid: &str| OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: SVC.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("random-{k}")),
            namespace: Some(NS.into()),
            labels: Some(l),
            owner_references: match g.owner {
                0 => Some(vec![owner(UIDS[0])]),
                1 => Some(vec![owner(UIDS[1])]),
                _ => None,
            },
            deletion_timestamp: g.deleting.then(|| time(1_700_000_000)),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Some(endpoints),
        ports,
    }
}

// ---------------------------------------------------------------------------------------------
// Oracle: an independent, naive statement of which endpoints must exist.
// ---------------------------------------------------------------------------------------------

type PortTuple = (Option<String>, Option<i32>, Option<String>, Option<String>);
type Identity = (String, Vec<PortTuple>, EndpointKey);

fn port_tuples(ports: Option<&Vec<EndpointPort>>) -> Vec<PortTuple> {
    let mut t: Vec<PortTuple> = ports
        .into_iter()
        .flatten()
        .map(|p| (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone()))
        .collect();
    t.sort();
    t
}

fn oracle_families(svc: &Service) -> BTreeSet<String> {
    let spec = svc.spec.as_ref().unwrap();
    let fams: BTreeSet<String> = spec.ip_families.clone().unwrap_or_default().into_iter().collect();
    if !fams.is_empty() {
        return fams;
    }
    match spec.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            BTreeSet::from([if ip.contains(':') { "IPv6" } else { "IPv4" }.to_owned()])
        }
        _ => BTreeSet::from(["IPv4".to_owned(), "IPv6".to_owned()]),
    }
}

fn oracle(svc: &Service, pods: &[Pod], nodes: &[Node]) -> BTreeMap<Identity, Endpoint> {
    let spec = svc.spec.as_ref().unwrap();
    let pnra = spec.publish_not_ready_addresses == Some(true);
    let mut out = BTreeMap::new();
    for pod in pods {
        let labels_ok = pod.metadata.labels.as_ref().unwrap()["app"] == "x";
        if pod.metadata.namespace.as_deref() != Some(NS) || !labels_ok {
            continue;
        }
        let status = pod.status.as_ref().unwrap();
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let ips = status.pod_ips.clone().unwrap_or_default();
        if ips.is_empty() && status.pod_ip.as_deref().unwrap_or("").is_empty() {
            continue;
        }
        let pspec = pod.spec.as_ref().unwrap();
        let node_name = pspec.node_name.clone().unwrap_or_default();
        let node = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()));
        if node.is_none() && !pnra {
            continue;
        }
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let proto = sp.protocol.clone().unwrap();
            let resolved = match sp.target_port.clone().unwrap() {
                IntOrString::Int(n) => Some(n),
                IntOrString::String(name) => {
                    let sidecars = pspec
                        .init_containers
                        .iter()
                        .flatten()
                        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
                    pspec
                        .containers
                        .iter()
                        .chain(sidecars)
                        .flat_map(|c| c.ports.iter().flatten())
                        .find(|p| {
                            p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref() == Some(proto.as_str())
                        })
                        .map(|p| p.container_port)
                }
            };
            if let Some(port) = resolved {
                ports.push(EndpointPort {
                    name: sp.name.clone(),
                    port: Some(port),
                    protocol: Some(proto),
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        let key_ports = port_tuples(Some(&ports));
        let ready = pod.status.as_ref().unwrap().conditions.as_ref().unwrap()[0].status == "True";
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let hostname = match (&pspec.hostname, pspec.subdomain.as_deref()) {
            (Some(h), Some(SVC)) => Some(h.clone()),
            _ => None,
        };
        for family in oracle_families(svc) {
            let mut addresses: Vec<String> = ips
                .iter()
                .filter_map(|ip| ip.ip.parse::<IpAddr>().ok())
                .filter(|ip| (family == "IPv6") == ip.is_ipv6())
                .map(|ip| ip.to_string())
                .collect();
            addresses.sort();
            if addresses.is_empty() {
                continue;
            }
            let endpoint = Endpoint {
                addresses,
                conditions: Some(EndpointConditions {
                    ready: Some(pnra || (ready && !terminating)),
                    serving: Some(ready),
                    terminating: Some(terminating),
                }),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(NS.into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                }),
                node_name: pspec.node_name.clone().filter(|n| !n.is_empty()),
                zone: node.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get(LABEL_TOPOLOGY_ZONE)).cloned(),
                hostname: hostname.clone(),
                ..Default::default()
            };
            out.insert((family, key_ports.clone(), EndpointKey::of(&endpoint)), endpoint);
        }
    }
    out
}

fn is_ours_and_live(slice: &EndpointSlice) -> bool {
    let l = slice.metadata.labels.as_ref().unwrap();
    l.get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
        && l.get(LABEL_SERVICE_NAME).map(String::as_str) == Some(SVC)
        && slice.metadata.deletion_timestamp.is_none()
}

fn owned_by_uid(slice: &EndpointSlice, uid: &str) -> bool {
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

#[derive(Debug, Clone)]
struct World {
    prev_svc: SvcGen,
    prev_pods: Vec<PodGen>,
    /// `None`: the Service is unchanged since the earlier world.
    svc: Option<SvcGen>,
    /// Per earlier pod: 0 drop, 1 flip readiness, 2 flip terminating, 3 move node, 4 change IPs,
    /// 5 change ports, else keep.
    mutations: Vec<u8>,
    new_pods: Vec<PodGen>,
    extra: Vec<SliceGen>,
    max: usize,
}

fn world() -> impl Strategy<Value = World> {
    (
        svc_gen(),
        prop::collection::vec(pod_gen(), 0..40),
        prop::option::weighted(0.4, svc_gen()),
        prop::collection::vec(0..12u8, 40),
        prop::collection::vec(pod_gen(), 0..10),
        prop::collection::vec(slice_gen(), 0..5),
        1..8usize,
    )
        .prop_map(|(prev_svc, prev_pods, svc, mutations, new_pods, extra, max)| World {
            prev_svc,
            prev_pods,
            svc,
            mutations,
            new_pods,
            extra,
            max,
        })
}

fn build_pods(gens: &[(usize, PodGen)]) -> Vec<Pod> {
    gens.iter().map(|(i, g)| build_pod(*i, g)).collect()
}

fn current_pods(w: &World) -> Vec<(usize, PodGen)> {
    let mut out = Vec::new();
    for (i, g) in w.prev_pods.iter().enumerate() {
        let mut g = g.clone();
        match w.mutations[i % w.mutations.len()] {
            0 => continue,
            1 => g.ready = !g.ready,
            2 => g.terminating = !g.terminating,
            3 => g.node = (g.node + 1) % 5,
            4 => g.ips = (g.ips + 1) % 8,
            5 => g.http = (g.http + 1) % 3,
            _ => {}
        }
        out.push((i, g));
    }
    let offset = w.prev_pods.len();
    out.extend(w.new_pods.iter().cloned().enumerate().map(|(j, g)| (offset + j, g)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn plan_properties(w in world()) {
        let nodes = test_nodes();
        let cfg = config(w.max);

        // The earlier world: another Service variant and pod set, planned and applied.
        let mut cluster = Cluster::default();
        let prev_pods: Vec<(usize, PodGen)> = w.prev_pods.iter().cloned().enumerate().collect();
        cluster.reconcile(&build_service(&w.prev_svc), &build_pods(&prev_pods), &nodes, &cfg, Some(trigger(1, 0)));
        for (k, g) in w.extra.iter().enumerate() {
            cluster.insert(build_slice(k, g, w.max));
        }
        let before = cluster.clone();

        let svc = build_service(w.svc.as_ref().unwrap_or(&w.prev_svc));
        let pods = build_pods(&current_pods(&w));
        let p = cluster.reconcile(&svc, &pods, &nodes, &cfg, Some(trigger(2, 0)));

        // 4. Only live slices of ours are written; updates keep name and resourceVersion.
        for s in p.update.iter().chain(&p.delete) {
            let name = s.metadata.name.as_deref().unwrap();
            let orig = &before.slices[name];
            prop_assert!(is_ours_and_live(orig), "touched {name}, not ours or pending deletion");
        }
        for s in &p.update {
            let orig = &before.slices[s.metadata.name.as_deref().unwrap()];
            prop_assert_eq!(&s.metadata.resource_version, &orig.metadata.resource_version);
        }
        for s in &p.create {
            prop_assert!(!before.slices.contains_key(s.metadata.name.as_deref().unwrap()));
        }
        for (name, orig) in &before.slices {
            if !is_ours_and_live(orig) {
                prop_assert_eq!(cluster.slices.get(name), Some(orig), "{} changed", name);
            }
        }

        if p.skipped.is_some() {
            prop_assert!(p.is_noop());
            return Ok(());
        }

        // 2. Sizes.
        for s in p.create.iter().chain(&p.update) {
            prop_assert!(endpoint_count(s) <= w.max, "written slice with {} > {}", endpoint_count(s), w.max);
        }
        for s in cluster.slices.values().filter(|s| is_ours_and_live(s)) {
            prop_assert!(endpoint_count(s) <= w.max);
        }

        // 1. Exactly once, with the expected content (creates are suppressed while deleting).
        if svc.metadata.deletion_timestamp.is_none() {
            let expected = oracle(&svc, &pods, &nodes);
            let families = oracle_families(&svc);
            let uid = svc.metadata.uid.clone().unwrap();
            let mut seen: BTreeMap<Identity, usize> = BTreeMap::new();
            for s in cluster.slices.values().filter(|s| is_ours_and_live(s) && owned_by_uid(s, &uid)) {
                prop_assert!(families.contains(&s.address_type), "slice of unsupported type {} left", s.address_type);
                let ports = port_tuples(s.ports.as_ref());
                for ep in s.endpoints.iter().flatten() {
                    let id = (s.address_type.clone(), ports.clone(), EndpointKey::of(ep));
                    let want = expected.get(&id);
                    prop_assert!(want.is_some(), "unexpected endpoint {:?}", id);
                    let want = want.unwrap();
                    prop_assert_eq!(&ep.conditions, &want.conditions);
                    prop_assert_eq!(&ep.node_name, &want.node_name);
                    prop_assert_eq!(&ep.zone, &want.zone);
                    prop_assert_eq!(&ep.hostname, &want.hostname);
                    prop_assert!(object_refs_equal_ignoring_resource_version(
                        ep.target_ref.as_ref().unwrap(),
                        want.target_ref.as_ref().unwrap()
                    ));
                    *seen.entry(id).or_insert(0) += 1;
                }
            }
            for (id, count) in &seen {
                prop_assert_eq!(*count, 1, "endpoint {:?} appears {} times", id, count);
            }
            let expected_ids: BTreeSet<&Identity> = expected.keys().collect();
            let seen_ids: BTreeSet<&Identity> = seen.keys().collect();
            prop_assert_eq!(seen_ids, expected_ids);
            // Every supported address type has at least one slice (placeholder included).
            for family in &families {
                prop_assert!(cluster.slices.values().any(|s| is_ours_and_live(s) && &s.address_type == family));
            }
        }

        // 3. Idempotence.
        let again = cluster.reconcile(&svc, &pods, &nodes, &cfg, Some(trigger(3, 0)));
        prop_assert!(again.is_noop(), "second plan not empty: {:#?}", again);
    }
}
