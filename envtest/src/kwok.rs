//! Fake Nodes and Pod lifecycle with kwok.
//!
//! kwok manages the Nodes annotated `kwok.x-k8s.io/node: fake` (it keeps them Ready) and every
//! Pod bound to such a Node with `spec.nodeName`: it gives the Pod an IP from [`crate::POD_CIDR`],
//! marks it Running and Ready, and deletes it once it has a deletionTimestamp and no finalizers.
//!
//! Tests control other states through two mechanisms:
//! - **Taking over the status**: a Pod annotated `kwok.x-k8s.io/status: custom` is left alone by
//!   kwok; [`set_pod_status`] then writes any status (not ready, terminal, no IP, IPv6 …).
//! - **Terminating**: [`hold_terminating`] deletes a Pod that carries a test finalizer, so it stays
//!   with a deletionTimestamp (Terminating) until [`release`] removes the finalizer.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeSpec as CoreNodeSpec, NodeStatus, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::Error;

/// Annotation selecting the Nodes kwok manages.
pub const NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Annotation that makes kwok leave a Pod's status alone (value `custom`).
pub const STATUS_ANNOTATION: &str = "kwok.x-k8s.io/status";
/// The finalizer [`hold_terminating`] uses.
pub const TEST_FINALIZER: &str = "epslice.io/test-hold";
/// Label every node created here carries.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A fake node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Value of `topology.kubernetes.io/zone`.
    pub zone: String,
    /// Allocatable CPU (cores).
    pub cpu: u32,
}

impl NodeSpec {
    /// A node in `zone` with `cpu` allocatable cores.
    pub fn new(name: &str, zone: &str, cpu: u32) -> Self {
        NodeSpec { name: name.into(), zone: zone.into(), cpu }
    }
}

/// Three zones, two nodes each, 8 CPUs per node.
pub fn default_nodes() -> Vec<NodeSpec> {
    ["zone-a", "zone-b", "zone-c"]
        .iter()
        .flat_map(|z| (0..2).map(move |i| NodeSpec::new(&format!("kwok-{z}-{i}"), z, 8)))
        .collect()
}

/// The Node object for a spec.
pub fn node(spec: &NodeSpec) -> Node {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", spec.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("type", "kwok"),
        (ZONE_LABEL, spec.zone.as_str()),
        ("topology.kubernetes.io/region", "region-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(spec.cpu.to_string())),
        ("memory".to_string(), Quantity("64Gi".into())),
        ("pods".to_string(), Quantity("250".into())),
    ]
    .into_iter()
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            annotations: Some(
                [
                    (NODE_ANNOTATION.to_string(), "fake".to_string()),
                    ("node.alpha.kubernetes.io/ttl".into(), "0".into()),
                ]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        },
        spec: Some(CoreNodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            ..Default::default()
        }),
    }
}

/// Creates (or leaves in place) a fake node.
pub async fn create_node(client: &kube::Client, spec: &NodeSpec) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), &node(spec)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Is the node Ready (kwok has taken it over)?
pub async fn node_ready(client: &kube::Client, name: &str) -> bool {
    let api: Api<Node> = Api::all(client.clone());
    let Ok(n) = api.get(name).await else { return false };
    n.status.and_then(|s| s.conditions).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A minimal Pod bound to `node` with one container exposing `ports` (`(name, port)`).
pub fn pod(name: &str, node: &str, labels: &[(&str, &str)], ports: &[(&str, i32)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/app:1".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Marks a pod so kwok leaves its status to the test ([`set_pod_status`]).
pub fn with_custom_status(mut p: Pod) -> Pod {
    p.metadata.annotations.get_or_insert_with(Default::default).insert(STATUS_ANNOTATION.into(), "custom".into());
    p
}

/// Adds the test finalizer so a delete leaves the pod Terminating (see [`hold_terminating`]).
pub fn with_test_finalizer(mut p: Pod) -> Pod {
    p.metadata.finalizers.get_or_insert_with(Vec::new).push(TEST_FINALIZER.into());
    p
}

/// A Running pod status with the given IPs and readiness.
pub fn running_status(ips: &[&str], ready: bool) -> PodStatus {
    let s = if ready { "True" } else { "False" };
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: ips.first().map(|ip| ip.to_string()),
        pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
        host_ip: Some("10.240.0.1".into()),
        conditions: Some(
            ["Ready", "ContainersReady"]
                .iter()
                .map(|t| PodCondition {
                    type_: t.to_string(),
                    status: s.into(),
                    // As a kubelet (and kwok) writes it; controllers derive trigger times from it.
                    last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    )),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Writes a pod's status (the pod should carry [`STATUS_ANNOTATION`]: custom, or kwok may
/// overwrite it).
pub async fn set_pod_status(api: &Api<Pod>, name: &str, status: PodStatus) -> Result<Pod, Error> {
    let patch = serde_json::json!({ "status": status });
    Ok(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// Deletes a pod carrying [`TEST_FINALIZER`] with a grace period, so it stays Terminating.
pub async fn hold_terminating(api: &Api<Pod>, name: &str) -> Result<(), Error> {
    let dp = DeleteParams { grace_period_seconds: Some(30), ..Default::default() };
    api.delete(name, &dp).await?;
    Ok(())
}

/// Removes [`TEST_FINALIZER`] so a Terminating pod can go.
pub async fn release(api: &Api<Pod>, name: &str) -> Result<(), Error> {
    let p = api.get(name).await?;
    let rest: Vec<String> =
        p.metadata.finalizers.unwrap_or_default().into_iter().filter(|f| f != TEST_FINALIZER).collect();
    let patch = serde_json::json!({ "metadata": { "finalizers": rest } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Waits until `cond` holds for the pod, or fails after `timeout` with the last state seen.
pub async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    timeout: Duration,
    cond: impl Fn(Option<&Pod>) -> bool,
) -> Result<Option<Pod>, Error> {
    let start = std::time::Instant::now();
    loop {
        let p = api.get_opt(name).await?;
        if cond(p.as_ref()) {
            return Ok(p);
        }
        if start.elapsed() > timeout {
            return Err(Error::Client(format!(
                "pod {name}: condition not met after {timeout:?}; last state: {}",
                p.map(|p| serde_json::to_string(&p.status).unwrap_or_default()).unwrap_or_else(|| "absent".into())
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Is the pod Ready with an IP?
pub fn is_ready(p: Option<&Pod>) -> bool {
    p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
        s.pod_ip.is_some()
            && s.conditions.as_ref().is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}
