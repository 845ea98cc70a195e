//! Benchmarks of the webhook's request path (pure: policy decision + AdmissionReview handling,
//! no TLS, no socket), run with `cargo bench -p epslice --bench webhook`. See docs/webhook.md
//! ("Benchmark plan") for targets: p99 < 5 ms with ≤ 500 Services, < 20 ms at 5,000.
//!
//! - `review_all(n)`: a pod of 3 containers in a namespace of `n` single-port Services, mode `All`
//!   (namespace label), through `decide` + `review`.
//! - `review_selected_5_of_5000`: a `Selected` policy picking 5 Services by name out of 5,000.
//! - `parse_only_large_pod`: a ~1 MiB pod whose namespace is not opted in (parse + answer, no patch).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use epslice::envpolicy::{
    ClusterView, DefaultMode, NAMESPACE_MODE_LABEL, PolicyMode, ServiceEnvPolicy, ServiceEnvPolicySpec,
    ServiceSelection, decide,
};
use epslice::envvars::{ReviewConfig, review};
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

fn main() {
    divan::main();
}

struct View {
    services: Vec<Arc<Service>>,
    policies: Vec<Arc<ServiceEnvPolicy>>,
    labelled: bool,
}

impl ClusterView for View {
    fn namespace_labels(&self, _ns: &str) -> Option<BTreeMap<String, String>> {
        let mut m = BTreeMap::new();
        if self.labelled {
            m.insert(NAMESPACE_MODE_LABEL.to_owned(), "all".to_owned());
        }
        Some(m)
    }
    fn policies(&self, _ns: &str) -> Vec<Arc<ServiceEnvPolicy>> {
        self.policies.clone()
    }
    fn services(&self, ns: &str) -> Vec<Arc<Service>> {
        self.services.iter().filter(|s| s.metadata.namespace.as_deref() == Some(ns)).cloned().collect()
    }
}

fn services(n: usize) -> Vec<Arc<Service>> {
    (0..n)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i:05}"), "namespace": "bench"},
                    "spec": {"clusterIP": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
                }))
                .unwrap(),
            )
        })
        .collect()
}

fn body(containers: usize, padding: usize) -> Vec<u8> {
    let cs: Vec<_> = (0..containers)
        .map(|i| json!({"name": format!("c{i}"), "image": "i", "env": [{"name": "PAD", "value": "x".repeat(padding)}]}))
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "bench", "operation": "CREATE",
                    "object": {"metadata": {"name": "p"}, "spec": {"containers": cs}}}
    }))
    .unwrap()
}

fn run(view: &View, body: &[u8], config: &ReviewConfig) -> usize {
    let r = review(body, config, |req| decide(req.namespace, req.pod, view, DefaultMode::Off).0);
    r.body.len()
}

#[divan::bench(args = [10, 500, 5000])]
fn review_all(bencher: divan::Bencher, n: usize) {
    let view = View { services: services(n), policies: Vec::new(), labelled: true };
    let body = body(3, 10);
    // 5,000 Services exceed the default 256 KiB cap; raise it to measure the full work.
    let mut config = ReviewConfig::default();
    config.patch.max_added_bytes = usize::MAX;
    bencher.bench_local(|| run(&view, &body, &config));
}

#[divan::bench]
fn review_selected_5_of_5000(bencher: divan::Bencher) {
    let spec = ServiceEnvPolicySpec {
        mode: PolicyMode::Selected,
        services: Some(ServiceSelection {
            names: (0..5).map(|i| format!("svc-{:05}", i * 997)).collect(),
            selector: None,
        }),
        disable_kubelet_service_links: true,
        ..Default::default()
    };
    let mut p = ServiceEnvPolicy::new("p", spec);
    p.metadata.namespace = Some("bench".into());
    let view = View { services: services(5000), policies: vec![Arc::new(p)], labelled: false };
    let body = body(3, 10);
    let config = ReviewConfig::default();
    bencher.bench_local(|| run(&view, &body, &config));
}

#[divan::bench]
fn parse_only_large_pod(bencher: divan::Bencher) {
    let view = View { services: services(10), policies: Vec::new(), labelled: false };
    let body = body(4, 256 * 1024);
    let config = ReviewConfig::default();
    bencher.bench_local(|| run(&view, &body, &config));
}
