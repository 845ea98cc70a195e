//! The benchmark's objects: namespaces, Services and Pods with deterministic names and IPs.
//!
//! Every Pod carries `kwok.x-k8s.io/status: custom`, so kwok leaves its status alone and the
//! harness writes it (Running, an IP, Ready): the pod states are exactly the harness's, and the
//! S2 readiness flips set a fresh `lastTransitionTime` on the Ready condition. kwok keeps the
//! fake Nodes Ready (heartbeats) as usual.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use envtest::kwok;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use super::cli::Args;

/// Prefix of every namespace the benchmark creates.
pub const NS_PREFIX: &str = "epslice-bench-";
/// Label on every Service and Pod of the benchmark (the controllers copy Service labels onto
/// slices and Endpoints).
pub const BENCH_LABEL: &str = "epslice-bench";

/// One Service of the layout.
#[derive(Debug, Clone)]
pub struct Svc {
    /// Namespace.
    pub ns: String,
    /// Name (also the `app` label value its Pods carry).
    pub name: String,
    /// Number of Pods it selects.
    pub pods: usize,
}

/// One Pod of the layout.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// Index of its Service in [`Layout::services`].
    pub svc: usize,
    /// Its IP (written by the harness).
    pub ip: String,
    /// Its node.
    pub node: String,
}

/// All objects of a run.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Services.
    pub services: Vec<Svc>,
    /// Pods.
    pub pods: Vec<PodSpec>,
    /// The time written into the Pods' conditions at creation (RFC 3339).
    pub created_at: String,
}

/// The fake nodes: `kwok-bench-<i>` in zone-a/b/c round-robin.
pub fn nodes(n: usize) -> Vec<kwok::NodeSpec> {
    let zones = ["zone-a", "zone-b", "zone-c"];
    (0..n).map(|i| kwok::NodeSpec::new(&format!("kwok-bench-{i}"), zones[i % 3], 8)).collect()
}

fn pod_ip(g: usize) -> String {
    let n = g + 1;
    format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)
}

/// Now, as the RFC 3339 text the API uses.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Layout {
    /// The layout for the flags.
    pub fn new(args: &Args) -> Layout {
        let node_names: Vec<String> = nodes(args.nodes).into_iter().map(|n| n.name).collect();
        let mut namespaces = Vec::new();
        let mut services = Vec::new();
        let mut pods = Vec::new();
        let groups =
            [("s", args.services, args.pods_per_service), ("big", args.big_services, args.big_pods_per_service)];
        for (kind, count, per) in groups {
            for i in 0..count {
                let ns = format!("{NS_PREFIX}{kind}-{}", i / args.services_per_namespace);
                if namespaces.last() != Some(&ns) {
                    namespaces.push(ns.clone());
                }
                let name = format!("{kind}{i}");
                for j in 0..per {
                    let g = pods.len();
                    pods.push(PodSpec {
                        ns: ns.clone(),
                        name: format!("{name}-{j}"),
                        svc: services.len(),
                        ip: pod_ip(g),
                        node: node_names[g % node_names.len()].clone(),
                    });
                }
                services.push(Svc { ns: ns.clone(), name, pods: per });
            }
        }
        Layout { namespaces, services, pods, created_at: now_rfc3339() }
    }

    /// `namespace/name` of a Service.
    pub fn svc_key(&self, i: usize) -> String {
        format!("{}/{}", self.services[i].ns, self.services[i].name)
    }
}

fn service(s: &Svc) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(s.name.clone()),
            namespace: Some(s.ns.clone()),
            labels: Some([(BENCH_LABEL.to_string(), "1".to_string())].into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), s.name.clone())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status patch of a Running pod with `ip`, Ready or not, the Ready and ContainersReady
/// conditions last changed at `changed` (the others at `created`).
pub fn status_patch(ip: &str, ready: bool, created: &str, changed: &str) -> serde_json::Value {
    let r = if ready { "True" } else { "False" };
    serde_json::json!({ "status": {
        "phase": "Running",
        "hostIP": "10.240.0.1",
        "hostIPs": [{ "ip": "10.240.0.1" }],
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "startTime": created,
        "conditions": [
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": created },
            { "type": "Initialized", "status": "True", "lastTransitionTime": created },
            { "type": "ContainersReady", "status": r, "lastTransitionTime": changed },
            { "type": "Ready", "status": r, "lastTransitionTime": changed },
        ],
    }})
}

/// Writes a pod's status; returns the new resourceVersion.
pub async fn set_ready(
    client: &kube::Client,
    layout: &Layout,
    g: usize,
    ready: bool,
    changed: &str,
) -> anyhow::Result<String> {
    let p = &layout.pods[g];
    let api: Api<Pod> = Api::namespaced(client.clone(), &p.ns);
    let patch = status_patch(&p.ip, ready, &layout.created_at, changed);
    let pod = api.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(pod.metadata.resource_version.unwrap_or_default())
}

/// Creates the namespaces, Services and Ready Pods (not measured). Returns how long it took.
pub async fn create(client: &kube::Client, layout: &Layout, concurrency: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &layout.namespaces {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                labels: Some([(BENCH_LABEL.to_string(), "1".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ns_api.create(&PostParams::default(), &obj).await.with_context(|| format!("creating namespace {ns}"))?;
    }
    futures::stream::iter(layout.services.iter().map(|s| async move {
        let api: Api<Service> = Api::namespaced(client.clone(), &s.ns);
        api.create(&PostParams::default(), &service(s))
            .await
            .with_context(|| format!("creating Service {}/{}", s.ns, s.name))
    }))
    .buffer_unordered(concurrency)
    .try_for_each(|_| async { Ok(()) })
    .await?;
    let total = layout.pods.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    futures::stream::iter((0..total).map(|g| async move {
        let p = &layout.pods[g];
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.ns);
        let svc = &layout.services[p.svc].name;
        let mut pod = kwok::with_custom_status(kwok::pod(
            &p.name,
            &p.node,
            &[("app", svc.as_str()), (BENCH_LABEL, "1")],
            &[("http", 8080)],
        ));
        pod.metadata.namespace = Some(p.ns.clone());
        api.create(&PostParams::default(), &pod).await.with_context(|| format!("creating Pod {}/{}", p.ns, p.name))?;
        set_ready(client, layout, g, true, &layout.created_at)
            .await
            .with_context(|| format!("writing the status of Pod {}/{}", p.ns, p.name))?;
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(2000) || n == total {
            eprintln!("  {n}/{total} pods Ready ({:.0?})", t0.elapsed());
        }
        anyhow::Ok(())
    }))
    .buffer_unordered(concurrency)
    .try_for_each(|_| async { Ok(()) })
    .await?;
    Ok(t0.elapsed())
}

/// Deletes every EndpointSlice and Endpoints object in the benchmark's namespaces.
pub async fn delete_outputs(client: &kube::Client, layout: &Layout) -> anyhow::Result<()> {
    for ns in &layout.namespaces {
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        slices
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .with_context(|| format!("deleting the EndpointSlices of {ns}"))?;
        let eps: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        eps.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .with_context(|| format!("deleting the Endpoints of {ns}"))?;
    }
    Ok(())
}

/// Lists every object of a kind in the benchmark's namespaces, in pages.
pub async fn list_all<K>(client: &kube::Client, layout: &Layout) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let mut out = Vec::new();
    for ns in &layout.namespaces {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let mut lp = ListParams::default().limit(500);
        loop {
            let page =
                api.list(&lp).await.with_context(|| format!("listing {} in {ns}", K::plural(&Default::default())))?;
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
    }
    Ok(out)
}
