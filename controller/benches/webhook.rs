//! Benchmarks of the webhook's request path (pure: policy decision + AdmissionReview handling,
//! no TLS, no socket), run with `cargo bench -p epslice --bench webhook`. See docs/webhook.md
//! ("Benchmark plan") for targets: p99 < 5 ms with ≤ 500 Services, < 20 ms at 5,000.
//!
//! - `review_all(n)`: a pod of 3 containers in a namespace of `n` single-port Services, mode `All`
//!   (namespace label), through `decide` + `review`.
//! - `review_selected_5_of_5000`: a `Selected` policy picking 5 Services by name out of 5,000.
//! - `review_selected_10_of_1000x3` / `review_all_1000x3_over_cap`: the two profiles of
//!   `just bench-webhook` without TLS or sockets: 1,000 Services of 3 ports, a realistic pod of
//!   3 containers (app, proxy sidecar, log shipper; probes, resources, mounts, own env entries),
//!   a `Selected` policy naming 10 Services, or the namespace label `all` (over the size cap).
//! - `parse_only_large_pod`: a ~1 MiB pod whose namespace is not opted in (parse + answer, no patch).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use epslice::envpolicy::{
    ClusterView, DefaultMode, NAMESPACE_MODE_LABEL, PolicyMode, ServiceEnvPolicy, ServiceEnvPolicySpec,
    ServiceSelection, decide,
};
use epslice::envvars::{GenerationMemo, ReviewConfig, review, review_memo};
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
    /// Indexed, like the webhook's cache (`ServicesByNamespace`): the names are in order.
    fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        let i = self.services.binary_search_by(|s| s.metadata.name.as_deref().unwrap_or("").cmp(name)).ok()?;
        Some(self.services[i].clone()).filter(|s| s.metadata.namespace.as_deref() == Some(ns))
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

fn services_x3(n: usize) -> Vec<Arc<Service>> {
    (0..n)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i:05}"), "namespace": "bench"},
                    "spec": {"clusterIP": format!("10.96.{}.{}", i / 256, i % 256),
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                       {"name": "https", "port": 443, "protocol": "TCP"},
                                       {"name": "grpc", "port": 9000, "protocol": "TCP"}]}
                }))
                .unwrap(),
            )
        })
        .collect()
}

/// The pod of `just bench-webhook` (tests/support/webhook_bench/setup.rs), roughly as defaulted.
fn realistic_body() -> Vec<u8> {
    let probe = |path: &str| {
        json!({"httpGet": {"path": path, "port": 8080, "scheme": "HTTP"}, "periodSeconds": 5,
        "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
    };
    let defaults = json!({"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"});
    let mut cs = vec![
        json!({"name": "checkout", "image": "registry.invalid/shop/checkout:1.4.2",
            "args": ["--listen=:8080", "--metrics=:9090"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "password"}}}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "readinessProbe": probe("/ready"), "livenessProbe": probe("/healthz"),
            "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout"},
                             {"name": "kube-api-access-x", "readOnly": true,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}),
        json!({"name": "envoy", "image": "registry.invalid/envoyproxy/envoy:v1.31.2",
            "args": ["-c", "/etc/envoy/envoy.yaml", "--drain-time-s", "20"],
            "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": [{"name": "envoy", "mountPath": "/etc/envoy"}]}),
        json!({"name": "log-shipper", "image": "registry.invalid/fluent/fluent-bit:3.1",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app"}]}),
    ];
    for c in &mut cs {
        for (k, v) in defaults.as_object().unwrap() {
            c[k] = v.clone();
        }
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "checkout-7d9c5b8f6d-x2x7q", "namespace": "bench", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "a7c3e2f0", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "checkout-7d9c5b8f6d-x2x7q", "namespace": "bench",
                    "labels": {"app": "checkout", "pod-template-hash": "7d9c5b8f6d", "version": "1.4.2", "profile": "selected"},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
                "spec": {"containers": cs, "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
                    "securityContext": {}, "schedulerName": "default-scheduler", "priority": 0,
                    "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                    "volumes": [{"name": "config", "configMap": {"name": "checkout", "defaultMode": 420}},
                                {"name": "envoy", "configMap": {"name": "checkout-envoy", "defaultMode": 420}},
                                {"name": "logs", "emptyDir": {}}]},
                "status": {"phase": "Pending", "qosClass": "Burstable"}},
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}
    }))
    .unwrap()
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
    let r = review(body, config, |req| decide(req.namespace, req.labels, view, DefaultMode::Off).0);
    r.body.len()
}

/// As the webhook runs it: through a generation memo shared by the reviews.
fn run_memo(view: &View, body: &[u8], config: &ReviewConfig, memo: &GenerationMemo) -> usize {
    let r = review_memo(body, config, memo, |req| decide(req.namespace, req.labels, view, DefaultMode::Off).0);
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

fn selected_policy(names: Vec<String>) -> Arc<ServiceEnvPolicy> {
    let spec = ServiceEnvPolicySpec {
        mode: PolicyMode::Selected,
        services: Some(ServiceSelection { names, selector: None }),
        disable_kubelet_service_links: true,
        ..Default::default()
    };
    let mut p = ServiceEnvPolicy::new("p", spec);
    p.metadata.namespace = Some("bench".into());
    Arc::new(p)
}

/// `memo`: through the webhook's generation memo, warm (the Services do not change), as the
/// webhook runs it; without, every review generates the variables.
#[divan::bench(args = [false, true])]
fn review_selected_10_of_1000x3(bencher: divan::Bencher, memo: bool) {
    let policy = selected_policy((0..10).map(|i| format!("svc-{:05}", i * 100)).collect());
    let view = View { services: services_x3(1000), policies: vec![policy], labelled: false };
    bench_1000x3(bencher, &view, memo, |len| assert!(len > 10_000, "a patch is expected"));
}

/// `memo` as above.
#[divan::bench(args = [false, true])]
fn review_all_1000x3_over_cap(bencher: divan::Bencher, memo: bool) {
    let view = View { services: services_x3(1000), policies: Vec::new(), labelled: true };
    bench_1000x3(bencher, &view, memo, |len| assert!(len < 1_000, "refused: over the cap, no patch"));
}

fn bench_1000x3(bencher: divan::Bencher, view: &View, memo: bool, check: impl Fn(usize)) {
    let body = realistic_body();
    let config = ReviewConfig::default();
    let cache = GenerationMemo::default();
    let plain = run(view, &body, &config);
    check(plain);
    assert_eq!(run_memo(view, &body, &config, &cache), plain, "the memo changes nothing");
    if memo {
        bencher.bench_local(|| run_memo(view, &body, &config, &cache));
    } else {
        bencher.bench_local(|| run(view, &body, &config));
    }
}

#[divan::bench]
fn parse_only_large_pod(bencher: divan::Bencher) {
    let view = View { services: services(10), policies: Vec::new(), labelled: false };
    let body = body(4, 256 * 1024);
    let config = ReviewConfig::default();
    bencher.bench_local(|| run(&view, &body, &config));
}
