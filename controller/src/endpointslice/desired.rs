//! Desired state: which endpoints a Service should have, per address type and port set.
//!
//! Ports of upstream `getAddressTypesForService`, `podToEndpoint`, `getEndpointPorts`,
//! `getEndpointAddresses` and the desired-state half of `reconcileByAddressType`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use super::PlanWarning;
use super::equality::{EndpointKey, PortMapKey};
use super::labels::LABEL_TOPOLOGY_ZONE;
use crate::podutil::{self, CLUSTER_IP_NONE, IpFamily};

/// Looks Nodes up by name (the shell's node cache).
///
/// Implemented for maps from name to `Node`, `&Node` or `Arc<Node>` and for slices of those
/// (linear search, for small inputs and tests).
pub trait NodeLookup {
    /// The Node called `name`, if the cache has it.
    fn node(&self, name: &str) -> Option<&Node>;
}

impl<V: Borrow<Node>> NodeLookup for BTreeMap<String, V> {
    fn node(&self, name: &str) -> Option<&Node> {
        self.get(name).map(Borrow::borrow)
    }
}

impl<V: Borrow<Node>, S: BuildHasher> NodeLookup for HashMap<String, V, S> {
    fn node(&self, name: &str) -> Option<&Node> {
        self.get(name).map(Borrow::borrow)
    }
}

impl<V: Borrow<Node>> NodeLookup for [V] {
    fn node(&self, name: &str) -> Option<&Node> {
        self.iter().map(Borrow::borrow).find(|n: &&Node| n.metadata.name.as_deref() == Some(name))
    }
}

impl<V: Borrow<Node>> NodeLookup for Vec<V> {
    fn node(&self, name: &str) -> Option<&Node> {
        self.as_slice().node(name)
    }
}

/// The address types the Service's slices use (upstream `getAddressTypesForService`).
///
/// From `spec.ipFamilies` (`IPv4` → `IPv4`, `IPv6` → `IPv6`, unknown values ignored). When
/// that yields nothing (objects from an old apiserver): a Service with a cluster IP gets the
/// family of that IP; a headless Service (cluster IP `None` or empty) gets both families.
pub fn address_types_for_service(service: &Service) -> BTreeSet<IpFamily> {
    let spec = service.spec.as_ref();
    let from_families: BTreeSet<IpFamily> =
        spec.and_then(|s| s.ip_families.as_ref()).into_iter().flatten().filter_map(|f| IpFamily::from_api(f)).collect();
    if !from_families.is_empty() {
        return from_families;
    }
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    if !cluster_ip.is_empty() && cluster_ip != CLUSTER_IP_NONE {
        let family = if podutil::is_ipv6_string(cluster_ip) { IpFamily::IPv6 } else { IpFamily::IPv4 };
        return BTreeSet::from([family]);
    }
    BTreeSet::from([IpFamily::IPv4, IpFamily::IPv6])
}

/// The EndpointPorts of `pod` for `service` (upstream `getEndpointPorts`): one per Service port,
/// in Service order, whose target port resolves on the pod ([`podutil::find_port`]); ports that
/// do not resolve are omitted. A headless Service without ports gets an empty list.
///
/// Each port is `{name, port, protocol, appProtocol}` with `name` always present (possibly
/// empty) and the protocol defaulted to `TCP` when the Service port has none.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let spec = service.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    ports
        .iter()
        .filter_map(|sp| {
            let port = podutil::find_port(pod, sp).ok()?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(podutil::service_port_protocol(sp).to_owned()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pod's addresses of one family, canonical and sorted (upstream `getEndpointAddresses`;
/// upstream sorts them when hashing). Unparseable IPs are skipped.
pub fn endpoint_addresses(pod: &Pod, family: IpFamily) -> Vec<String> {
    let (valid, _invalid) = podutil::pod_ips(pod);
    let mut addresses: Vec<String> = valid.into_iter().filter(|(f, _)| *f == family).map(|(_, ip)| ip).collect();
    addresses.sort();
    addresses
}

fn non_empty(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

/// The endpoint for `pod` in a slice of `family` (upstream `podToEndpoint`).
///
/// - `serving`: the pod's `Ready` condition is `True`;
/// - `terminating`: the pod has a deletion timestamp;
/// - `ready`: `publishNotReadyAddresses || (serving && !terminating)`;
/// - `targetRef`: `{kind: Pod, namespace, name, uid}`, no resourceVersion;
/// - `nodeName` when set; `zone` from the Node's `topology.kubernetes.io/zone` label when the
///   Node is known and the label non-empty; `hostname` per [`podutil::should_set_hostname`];
/// - no hints.
///
/// The address list may be empty (no IP of that family); callers drop such endpoints.
pub fn pod_to_endpoint(pod: &Pod, node: Option<&Node>, service: &Service, family: IpFamily) -> Endpoint {
    let serving = podutil::is_pod_ready(pod);
    let terminating = podutil::is_pod_terminating(pod);
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let ready = publish_not_ready || (serving && !terminating);
    let spec = pod.spec.as_ref();
    Endpoint {
        addresses: endpoint_addresses(pod, family),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: non_empty(pod.metadata.namespace.as_ref()),
            name: non_empty(pod.metadata.name.as_ref()),
            uid: non_empty(pod.metadata.uid.as_ref()),
            ..Default::default()
        }),
        node_name: non_empty(spec.and_then(|s| s.node_name.as_ref())),
        zone: node.and_then(|n| non_empty(n.metadata.labels.as_ref().and_then(|l| l.get(LABEL_TOPOLOGY_ZONE)))),
        hostname: if podutil::should_set_hostname(pod, service) { spec.and_then(|s| s.hostname.clone()) } else { None },
        deprecated_topology: None,
        hints: None,
    }
}

/// The endpoints of one port set: the resolved port list and the endpoints, keyed by identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortSet {
    /// The resolved ports, in Service order.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, keyed by [`EndpointKey`]. May be empty: a port set exists as soon as an
    /// eligible pod resolves to it, even if that pod then yields no endpoint (missing Node, no
    /// IP of the family), as upstream.
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// The desired endpoints of a Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredEndpoints {
    /// The address types the Service supports.
    pub address_types: BTreeSet<IpFamily>,
    /// Per address type, the port sets ("endpoint sets by port map" upstream).
    pub by_address_type: BTreeMap<IpFamily, BTreeMap<PortMapKey, PortSet>>,
    /// Pods skipped or IPs ignored, for the shell to log (and, for a missing Node, to retry).
    pub warnings: Vec<PlanWarning>,
}

impl DesiredEndpoints {
    /// The number of desired endpoints of one address type.
    pub fn len(&self, family: IpFamily) -> usize {
        self.by_address_type.get(&family).map_or(0, |sets| sets.values().map(|s| s.endpoints.len()).sum())
    }
}

/// Computes the desired endpoints of `service`.
///
/// Pods are first restricted to those the Service selects (same namespace, selector matches),
/// so the caller may pass a superset. Then, per pod:
/// - ineligible pods are skipped ([`podutil::should_pod_be_in_endpoints`] with terminating pods
///   included: terminal phase or no IP);
/// - the pod's ports are resolved and its port set is registered for every address type;
/// - the pod's Node is looked up by `spec.nodeName`; if it is missing the pod is skipped with a
///   [`PlanWarning::NodeNotFound`] (the Service must be retried), unless the Service publishes
///   not-ready addresses, in which case the pod is published without a zone;
/// - unparseable pod IPs are skipped with a [`PlanWarning::InvalidPodIp`];
/// - for each address type, the endpoint is added if the pod has an address of that family.
pub fn desired_endpoints(service: &Service, pods: &[&Pod], nodes: &dyn NodeLookup) -> DesiredEndpoints {
    let address_types = address_types_for_service(service);
    let mut by_address_type: BTreeMap<IpFamily, BTreeMap<PortMapKey, PortSet>> =
        address_types.iter().map(|f| (*f, BTreeMap::new())).collect();
    let mut warnings = Vec::new();
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_key = format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or(""),
        service.metadata.name.as_deref().unwrap_or("")
    );

    for pod in pods.iter().copied() {
        if !podutil::service_selects_pod(service, pod) || !podutil::should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let key = PortMapKey::new(Some(&ports));
        for sets in by_address_type.values_mut() {
            sets.entry(key.clone()).or_insert_with(|| PortSet { ports: ports.clone(), endpoints: BTreeMap::new() });
        }

        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let node = nodes.node(node_name);
        if node.is_none() && !publish_not_ready {
            warnings.push(PlanWarning::NodeNotFound {
                service: service_key.clone(),
                pod: pod_name,
                node: node_name.to_owned(),
            });
            continue;
        }

        let (_, invalid) = podutil::pod_ips(pod);
        warnings.extend(invalid.into_iter().map(|ip| PlanWarning::InvalidPodIp {
            service: service_key.clone(),
            pod: pod_name.clone(),
            ip,
        }));

        for (family, sets) in &mut by_address_type {
            let endpoint = pod_to_endpoint(pod, node, service, *family);
            if endpoint.addresses.is_empty() {
                continue;
            }
            if let Some(set) = sets.get_mut(&key) {
                set.endpoints.insert(EndpointKey::of(&endpoint), endpoint);
            }
        }
    }
    DesiredEndpoints { address_types, by_address_type, warnings }
}
