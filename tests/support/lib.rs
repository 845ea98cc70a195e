//! Shared helpers for the integration tests: run epslice's controllers in-process against the
//! test binary's control plane, scoped to one namespace, and wait for what they write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod benchdoc;
pub mod differential;
pub mod webhookcfg;
pub mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use epslice::controllers::{self, Handles, Options};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta};

/// How long a test waits for the controller to converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// epslice's controllers running in this process for one namespace; stopped on drop.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Metrics and readiness.
    pub handles: Handles,
}

impl Running {
    /// Stops the controllers and waits for them to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// The value of a counter or gauge line in the metrics output (`name{labels}` exact prefix).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.handles.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Slice writes so far (`endpoint_slice_controller_changes_total`), by operation.
    pub fn writes(&self) -> (f64, f64, f64) {
        let m = |op: &str| self.metric(&format!("endpoint_slice_controller_changes_total{{operation=\"{op}\"}}"));
        (m("create"), m("update"), m("delete"))
    }

    /// Endpoints writes so far (`epslice_endpoints_controller_changes_total`), by operation.
    pub fn endpoints_writes(&self) -> (f64, f64, f64) {
        let m = |op: &str| self.metric(&format!("epslice_endpoints_controller_changes_total{{operation=\"{op}\"}}"));
        (m("create"), m("update"), m("delete"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts the controllers for namespace `ns` (EndpointSlice controller by default), after `tweak`
/// adjusts the options, and waits until their caches are synced.
pub async fn start(client: &kube::Client, ns: &str, tweak: impl FnOnce(&mut Options)) -> Running {
    let mut options = Options { namespace: Some(ns.to_string()), ..Default::default() };
    tweak(&mut options);
    let handles = Handles::default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controllers::run(client.clone(), options, handles.clone(), async move {
        let _ = rx.await;
    }));
    let t0 = Instant::now();
    while !handles.ready.is_ready() {
        assert!(t0.elapsed() < CONVERGE, "controllers not ready: {:?}", handles.ready.failing());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { stop: Some(tx), task: Some(task), handles }
}

/// A ClusterIP Service selecting `app=<app>` with the given ports `(name, port, targetPort)`.
pub fn service(name: &str, app: &str, ports: &[(&str, i32, IntOrString)]) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), app.to_string())].into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, t)| ServicePort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: *p,
                        target_port: Some(t.clone()),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The slices of a Service (by the `kubernetes.io/service-name` label).
pub async fn slices(client: &kube::Client, ns: &str, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let mut v =
        api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"))).await.unwrap().items;
    v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    v
}

/// Waits until `pred` holds for the Service's slices; panics with the last state on timeout.
pub async fn wait_slices(
    client: &kube::Client,
    ns: &str,
    svc: &str,
    what: &str,
    pred: impl Fn(&[EndpointSlice]) -> bool,
) -> Vec<EndpointSlice> {
    let t0 = Instant::now();
    loop {
        let s = slices(client, ns, svc).await;
        if pred(&s) {
            return s;
        }
        if t0.elapsed() > CONVERGE {
            panic!("{what}: not reached after {CONVERGE:?}; slices of {ns}/{svc}:\n{}", describe(&s));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A compact text form of slices for failure messages.
pub fn describe(slices: &[EndpointSlice]) -> String {
    slices
        .iter()
        .map(|s| {
            let eps: Vec<String> = s
                .endpoints
                .iter()
                .flatten()
                .map(|e| {
                    let c = e.conditions.clone().unwrap_or_default();
                    format!("{}[r={:?},s={:?},t={:?}]", e.addresses.join("|"), c.ready, c.serving, c.terminating)
                })
                .collect();
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
                .collect();
            format!(
                "  {} {} ports={ports:?} endpoints={eps:?}",
                s.metadata.name.clone().unwrap_or_default(),
                s.address_type
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `pred` holds for the Endpoints object `ns/name` (`None`: absent).
pub async fn wait_endpoints(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&k8s_openapi::api::core::v1::Endpoints>) -> bool,
) -> Option<k8s_openapi::api::core::v1::Endpoints> {
    let api: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    loop {
        let e = api.get_opt(name).await.unwrap();
        if pred(e.as_ref()) {
            return e;
        }
        if t0.elapsed() > CONVERGE {
            let subsets = e.as_ref().map(|e| serde_json::to_string(&e.subsets).unwrap_or_default());
            panic!(
                "{what}: not reached after {CONVERGE:?}; Endpoints {ns}/{name}: {subsets:?} annotations {:?}",
                e.and_then(|e| e.metadata.annotations)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (ready, not ready) address counts of an Endpoints object.
pub fn endpoints_counts(e: Option<&k8s_openapi::api::core::v1::Endpoints>) -> (usize, usize) {
    let subsets = e.and_then(|e| e.subsets.clone()).unwrap_or_default();
    (
        subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum(),
        subsets.iter().map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum(),
    )
}

/// All endpoint addresses across slices.
pub fn addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut v: Vec<String> =
        slices.iter().flat_map(|s| s.endpoints.iter().flatten().flat_map(|e| e.addresses.clone())).collect();
    v.sort();
    v
}

/// Total endpoints across slices.
pub fn endpoint_count(slices: &[EndpointSlice]) -> usize {
    slices.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum()
}

/// Pod IPs by pod name, once every named pod is Ready.
pub async fn wait_ready_ips(pods: &Api<Pod>, names: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in names {
        let p = envtest::kwok::wait_pod(pods, n, CONVERGE, envtest::kwok::is_ready).await.unwrap().unwrap();
        out.insert(n.clone(), p.status.and_then(|s| s.pod_ip).unwrap());
    }
    out
}

/// What [`Refusal`] needs of the objects it probes with: a namespaced API type.
pub trait Probe:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + k8s_openapi::serde::Serialize
    + k8s_openapi::serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Probe for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// A ValidatingAdmissionPolicy (and its binding) that refuses CREATE and UPDATE of `resource`
/// in API group `group` in one namespace whenever the CEL `allow` expression is false: a real
/// API server refusing a controller's writes. [`Refusal::remove`] deletes both and waits until
/// the API server lets writes through again; dropped without it (a failed test), it deletes
/// them with kubectl, since they are cluster-scoped.
pub struct Refusal<K: Probe> {
    client: kube::Client,
    name: String,
    /// An object the policy refuses, and its namespace's API.
    probe: (Api<K>, K),
    removed: bool,
}

impl<K: Probe> Refusal<K> {
    /// Installs the policy and waits until the API server enforces it: `probe` is created
    /// (and deleted again) until it is refused, so `probe` must be an object the policy refuses.
    pub async fn install(
        client: &kube::Client,
        ns: &str,
        (group, resource): (&str, &str),
        allow: &str,
        probe: K,
    ) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        use kube::api::PostParams;
        let name = format!("refuse-{resource}-{ns}");
        let version = if group.is_empty() { "v1" } else { "*" };
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [group], "apiVersions": [version], "operations": ["CREATE", "UPDATE"], "resources": [resource]
                }]},
                "validations": [{"expression": allow, "message": format!("{resource} refused by the test's policy")}]
            }
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            }
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone()).create(&PostParams::default(), &policy).await.unwrap();
        let refusal = Refusal {
            client: client.clone(),
            name,
            probe: (Api::namespaced(client.clone(), ns), probe),
            removed: false,
        };
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        // The API server loads policies from a watch: wait until this one refuses the probe.
        let t0 = Instant::now();
        while refusal.probe_created().await {
            assert!(t0.elapsed() < CONVERGE, "the policy {} never took effect", refusal.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        refusal
    }

    /// Deletes the policy and its binding, and waits until the probe can be created again.
    pub async fn remove(mut self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        use kube::api::DeleteParams;
        let dp = DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone()).delete(&self.name, &dp).await.unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone()).delete(&self.name, &dp).await.unwrap();
        self.removed = true;
        let t0 = Instant::now();
        while !self.probe_created().await {
            assert!(t0.elapsed() < CONVERGE, "the policy {} was never lifted", self.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the probe could be created (it is deleted again at once).
    async fn probe_created(&self) -> bool {
        use kube::api::{DeleteParams, PostParams};
        let (api, probe) = &self.probe;
        if api.create(&PostParams::default(), probe).await.is_err() {
            return false;
        }
        match api.delete(&probe.meta().name.clone().unwrap(), &DeleteParams::default()).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => panic!("cannot delete the probe: {e}"),
        }
    }
}

impl<K: Probe> Drop for Refusal<K> {
    fn drop(&mut self) {
        if !self.removed {
            for kind in ["validatingadmissionpolicybinding", "validatingadmissionpolicy"] {
                let _ = envtest::shared().kubectl().args(["delete", kind, &self.name, "--ignore-not-found"]).output();
            }
        }
    }
}
