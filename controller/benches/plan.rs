//! Benchmarks of the EndpointSlice planner (the pure core), run with `just bench` or
//! `cargo bench -p epslice --bench plan`. Results and the machine go to docs/benchmarks.md.
//!
//! - `one_pod_change_in_5000`: one pod flips to not-ready in a Service of 5,000 ready pods whose
//!   slices are up to date; the planner must produce exactly one update.
//! - `full_recompute_5000_noop`: a full recompute of a 5,000-pod Service whose slices are up to
//!   date (the common resync case): no writes. Target: under 2 ms.
//! - `cold_5000`: the first plan of a 5,000-pod Service (50 creates).
//! - `ten_thousand_services_x_10`: planning 10,000 Services of 10 pods each from scratch.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use epslice::endpointslice::{Config, Input, plan};
use epslice::pod::CachedPod;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeStatus, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn main() {
    divan::main();
}

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("bench".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), name.to_string())].into()),
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// As the controllers cache it ([`CachedPod`]).
fn pod(app: &str, i: usize, ready: bool) -> CachedPod {
    let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
    CachedPod::from(Pod {
        metadata: ObjectMeta {
            name: Some(format!("{app}-{i}")),
            namespace: Some("bench".into()),
            uid: Some(format!("pod-uid-{app}-{i}")),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node-{}", i % 30)),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn nodes() -> BTreeMap<String, Node> {
    (0..30)
        .map(|i| {
            let name = format!("node-{i}");
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([("topology.kubernetes.io/zone".to_string(), format!("zone-{}", i % 3))].into()),
                    ..Default::default()
                },
                status: Some(NodeStatus {
                    allocatable: Some([("cpu".to_string(), Quantity("8".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            (name, node)
        })
        .collect()
}

/// Applies a plan to a set of slices as the apiserver would (names kept, resourceVersions bumped).
fn apply(existing: &mut BTreeMap<String, EndpointSlice>, p: &epslice::endpointslice::Plan, rv: &mut u64) {
    for s in p.create.iter().chain(&p.update) {
        *rv += 1;
        let mut s = s.clone();
        s.metadata.resource_version = Some(rv.to_string());
        s.metadata.namespace = Some("bench".into());
        existing.insert(s.metadata.name.clone().unwrap(), s);
    }
    for s in &p.delete {
        existing.remove(s.metadata.name.as_deref().unwrap());
    }
}

/// A 5,000-pod Service with its slices converged.
fn converged(n: usize) -> (Service, Vec<CachedPod>, BTreeMap<String, Node>, Vec<EndpointSlice>) {
    let svc = service("big");
    let pods: Vec<CachedPod> = (0..n).map(|i| pod("big", i, true)).collect();
    let nodes = nodes();
    let cfg = Config::default();
    let refs: Vec<&CachedPod> = pods.iter().collect();
    let mut existing = BTreeMap::new();
    let mut rv = 0;
    let p = plan(&Input::new(&svc, &refs, &nodes, &[]), &cfg);
    apply(&mut existing, &p, &mut rv);
    let slices: Vec<EndpointSlice> = existing.into_values().collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    assert!(plan(&Input::new(&svc, &refs, &nodes, &slice_refs), &cfg).is_noop(), "converged");
    (svc, pods, nodes, slices)
}

#[divan::bench(sample_count = 50)]
fn one_pod_change_in_5000(bencher: divan::Bencher) {
    let (svc, mut pods, nodes, slices) = converged(5000);
    pods[2500] = pod("big", 2500, false);
    let refs: Vec<&CachedPod> = pods.iter().collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    let cfg = Config::default();
    let p = plan(&Input::new(&svc, &refs, &nodes, &slice_refs), &cfg);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    bencher.bench(|| plan(divan::black_box(&Input::new(&svc, &refs, &nodes, &slice_refs)), &cfg));
}

#[divan::bench(sample_count = 50)]
fn full_recompute_5000_noop(bencher: divan::Bencher) {
    let (svc, pods, nodes, slices) = converged(5000);
    let refs: Vec<&CachedPod> = pods.iter().collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    let cfg = Config::default();
    bencher.bench(|| plan(divan::black_box(&Input::new(&svc, &refs, &nodes, &slice_refs)), &cfg));
}

#[divan::bench(sample_count = 50)]
fn cold_5000(bencher: divan::Bencher) {
    let svc = service("big");
    let pods: Vec<CachedPod> = (0..5000).map(|i| pod("big", i, true)).collect();
    let nodes = nodes();
    let refs: Vec<&CachedPod> = pods.iter().collect();
    let cfg = Config::default();
    bencher.bench(|| plan(divan::black_box(&Input::new(&svc, &refs, &nodes, &[])), &cfg));
}

#[divan::bench(sample_count = 5)]
fn ten_thousand_services_x_10(bencher: divan::Bencher) {
    let nodes = nodes();
    let services: Vec<Service> = (0..10_000).map(|i| service(&format!("s{i}"))).collect();
    let pods: Vec<Vec<CachedPod>> =
        (0..10_000).map(|i| (0..10).map(|j| pod(&format!("s{i}"), i * 10 + j, true)).collect()).collect();
    let cfg = Config::default();
    bencher.bench(|| {
        let mut writes = 0;
        for (svc, ps) in services.iter().zip(&pods) {
            let refs: Vec<&CachedPod> = ps.iter().collect();
            writes += plan(&Input::new(svc, &refs, &nodes, &[]), &cfg).create.len();
        }
        assert_eq!(writes, 10_000);
        writes
    });
}
