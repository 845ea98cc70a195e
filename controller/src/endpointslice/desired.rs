//! Desired state: which endpoints a Service should have, per address type and port set.
//!
//! Ports of upstream `getAddressTypesForService`, `podToEndpoint`, `getEndpointPorts`,
//! `getEndpointAddresses` and the desired-state half of `reconcileByAddressType`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use super::PlanWarning;
use super::equality::{
    AddressList, EndpointKey, EndpointKeyRef, PortMapKey, encode_identity, encode_opt_bool, encode_opt_str, encode_str,
};
use super::labels::LABEL_TOPOLOGY_ZONE;
use crate::pod::CachedPod;
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
pub fn endpoint_ports(service: &Service, pod: &CachedPod) -> Vec<EndpointPort> {
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
pub fn endpoint_addresses(pod: &CachedPod, family: IpFamily) -> Vec<String> {
    pod_addresses(pod).0[family_index(family)].to_vec()
}

fn family_index(family: IpFamily) -> usize {
    match family {
        IpFamily::IPv4 => 0,
        IpFamily::IPv6 => 1,
    }
}

/// The pod's addresses per family (IPv4, IPv6), canonical, sorted and borrowed from the pod
/// where its text is already canonical, and the unparseable IPs (one pass over
/// `status.podIPs`, see [`podutil::pod_ips`]).
fn pod_addresses(pod: &CachedPod) -> ([AddressList<'_>; 2], Vec<&str>) {
    let mut by_family: [AddressList<'_>; 2] = Default::default();
    let mut invalid = Vec::new();
    for pod_ip in pod.status.as_ref().and_then(|s| s.pod_ips.as_deref()).unwrap_or_default() {
        match podutil::canonical_ip_cow(&pod_ip.ip) {
            Some((family, text)) => by_family[family_index(family)].push(text),
            None => invalid.push(&*pod_ip.ip),
        }
    }
    for list in &mut by_family {
        list.sort();
    }
    (by_family, invalid)
}

/// One pod's endpoint in one address type, borrowed from the pod and its Node: exactly what
/// [`pod_to_endpoint`] builds, without allocating. The planner matches and compares these
/// against existing endpoints and builds an owned `Endpoint` ([`DesiredEndpoint::to_endpoint`])
/// only for the slices it writes. Absent and empty strings are the same here, as in
/// `podToEndpoint`, which never writes empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredEndpoint<'a> {
    /// The identity: sorted addresses, hostname, targetRef namespace and name.
    pub key: EndpointKeyRef<'a>,
    /// targetRef UID.
    pub uid: &'a str,
    /// The pod's `spec.nodeName`.
    pub node_name: &'a str,
    /// The Node's zone label.
    pub zone: &'a str,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn as_non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl<'a> DesiredEndpoint<'a> {
    /// The endpoint of `pod` with the given addresses (see [`pod_to_endpoint`]).
    fn new(pod: &'a CachedPod, node: Option<&'a Node>, service: &Service, addresses: AddressList<'a>) -> Self {
        let serving = podutil::is_pod_ready(pod);
        let terminating = podutil::is_pod_terminating(pod);
        let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
        let spec = pod.spec.as_ref();
        let hostname = if podutil::should_set_hostname(pod, service) {
            spec.and_then(|s| s.hostname.as_deref()).unwrap_or("")
        } else {
            ""
        };
        DesiredEndpoint {
            key: EndpointKeyRef {
                addresses,
                hostname,
                namespace: pod.metadata.namespace.as_deref().unwrap_or(""),
                name: pod.metadata.name.as_deref().unwrap_or(""),
            },
            uid: pod.metadata.uid.as_deref().unwrap_or(""),
            node_name: spec.and_then(|s| s.node_name.as_deref()).unwrap_or(""),
            zone: node.and_then(|n| n.metadata.labels.as_ref()?.get(LABEL_TOPOLOGY_ZONE)).map_or("", String::as_str),
            ready: publish_not_ready || (serving && !terminating),
            serving,
            terminating,
        }
    }

    /// The owned `Endpoint` (upstream `podToEndpoint`'s result).
    pub fn to_endpoint(&self) -> Endpoint {
        Endpoint {
            addresses: self.key.addresses.to_vec(),
            conditions: Some(EndpointConditions {
                ready: Some(self.ready),
                serving: Some(self.serving),
                terminating: Some(self.terminating),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                namespace: non_empty(self.key.namespace),
                name: non_empty(self.key.name),
                uid: non_empty(self.uid),
                ..Default::default()
            }),
            node_name: non_empty(self.node_name),
            zone: non_empty(self.zone),
            hostname: non_empty(self.key.hostname),
            deprecated_topology: None,
            hints: None,
        }
    }

    /// [`encode_beyond_hash`](super::equality::encode_beyond_hash) of this endpoint as [`DesiredEndpoint::to_endpoint`] builds it.
    pub fn encode_beyond_hash(&self, out: &mut Vec<u8>) {
        encode_opt_str(out, as_non_empty(self.node_name));
        encode_opt_str(out, as_non_empty(self.zone));
        encode_opt_bool(out, Some(self.ready));
        encode_opt_bool(out, Some(self.serving));
        encode_opt_bool(out, Some(self.terminating));
        // targetRef: apiVersion and fieldPath empty, kind Pod, the UID.
        out.push(1);
        encode_str(out, "");
        encode_str(out, "");
        encode_str(out, "Pod");
        encode_str(out, self.uid);
    }
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
pub fn pod_to_endpoint(pod: &CachedPod, node: Option<&Node>, service: &Service, family: IpFamily) -> Endpoint {
    let [v4, v6] = pod_addresses(pod).0;
    let addresses = match family {
        IpFamily::IPv4 => v4,
        IpFamily::IPv6 => v6,
    };
    DesiredEndpoint::new(pod, node, service, addresses).to_endpoint()
}

/// A fast, non-cryptographic hasher for the planner's per-sync maps (keys are pod names and
/// IPs of one Service; the maps live for one call).
pub type FastHash = foldhash::fast::RandomState;

/// The endpoints of one port set: the resolved port list and the endpoints, keyed by identity
/// (owned; the mirroring controller's desired state).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortSet {
    /// The resolved ports, in Service order.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, keyed by [`EndpointKey`]. May be empty.
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// The desired endpoints of one port set of a Service: the resolved port list and the
/// endpoints, one per identity, borrowed from the pods ([`DesiredEndpoint`]).
#[derive(Debug, Clone, Default)]
pub struct DesiredPortSet<'a> {
    /// The resolved ports, in Service order.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, one per [`EndpointKeyRef`], in pod order (a later pod with the same
    /// identity replaces the earlier one's endpoint in place). May be empty: a port set
    /// exists as soon as an eligible pod resolves to it, even if that pod then yields no
    /// endpoint (missing Node, no IP of the family), as upstream.
    pub endpoints: Vec<DesiredEndpoint<'a>>,
    /// Per endpoint, where its encoded identity and beyond-hash fields lie in `encoded`.
    records: Vec<Record>,
    /// The encodings ([`encode_identity`], [`encode_beyond_hash`](super::equality::encode_beyond_hash))
    /// of the endpoints, packed
    /// so that matching existing endpoints reads compact, recently written memory rather
    /// than the pods.
    encoded: Vec<u8>,
    /// The identity index: from the 64-bit hash of an encoded identity to the last endpoint
    /// with that hash, the others chained through `Record::same_hash`. Identities are always
    /// compared in full.
    by_hash: HashMap<u64, usize, FastHash>,
    hasher: FastHash,
}

#[derive(Debug, Clone)]
struct Record {
    identity: std::ops::Range<usize>,
    beyond_hash: std::ops::Range<usize>,
    /// The previous endpoint with the same hash (`usize::MAX`: none).
    same_hash: usize,
}

impl<'a> DesiredPortSet<'a> {
    fn new(ports: Vec<EndpointPort>, capacity: usize) -> Self {
        DesiredPortSet {
            ports,
            endpoints: Vec::with_capacity(capacity),
            records: Vec::with_capacity(capacity),
            // About 64 bytes per endpoint with short names.
            encoded: Vec::with_capacity(capacity * 64),
            by_hash: HashMap::with_capacity_and_hasher(capacity, FastHash::default()),
            hasher: FastHash::default(),
        }
    }

    /// The hash of an encoded identity in this set's index.
    pub fn hash_identity(&self, identity: &[u8]) -> u64 {
        self.hasher.hash_one(identity)
    }

    /// The position of the endpoint whose encoded identity is `identity`, given its
    /// [`DesiredPortSet::hash_identity`].
    pub fn find(&self, identity: &[u8], hash: u64) -> Option<usize> {
        let mut at = *self.by_hash.get(&hash)?;
        while at != usize::MAX {
            let record = &self.records[at];
            if self.encoded[record.identity.clone()] == *identity {
                return Some(at);
            }
            at = record.same_hash;
        }
        None
    }

    /// The encoded beyond-hash fields of the endpoint at `at`
    /// ([`encode_beyond_hash`](super::equality::encode_beyond_hash)).
    pub fn beyond_hash(&self, at: usize) -> &[u8] {
        &self.encoded[self.records[at].beyond_hash.clone()]
    }

    /// Adds an endpoint; one with the identity of an earlier one replaces it.
    pub fn insert(&mut self, endpoint: DesiredEndpoint<'a>) {
        let start = self.encoded.len();
        encode_identity(&mut self.encoded, &endpoint.key);
        let hash = self.hash_identity(&self.encoded[start..]);
        self.insert_hashed(endpoint, start, hash);
    }

    /// [`DesiredPortSet::insert`] of an endpoint whose identity was just encoded at `start`.
    fn insert_hashed(&mut self, endpoint: DesiredEndpoint<'a>, start: usize, hash: u64) {
        let identity = start..self.encoded.len();
        endpoint.encode_beyond_hash(&mut self.encoded);
        let beyond_hash = identity.end..self.encoded.len();
        match self.find(&self.encoded[identity.clone()], hash) {
            Some(at) => {
                // Keep the chain link; the old encoding stays behind unused.
                self.records[at].identity = identity;
                self.records[at].beyond_hash = beyond_hash;
                self.endpoints[at] = endpoint;
            }
            _ => {
                let at = self.endpoints.len();
                self.endpoints.push(endpoint);
                let same_hash = self.by_hash.insert(hash, at).unwrap_or(usize::MAX);
                self.records.push(Record { identity, beyond_hash, same_hash });
            }
        }
    }

    /// The endpoints as the API objects, in identity order.
    pub fn to_endpoints(&self) -> BTreeMap<EndpointKey, Endpoint> {
        self.endpoints.iter().map(|e| e.to_endpoint()).map(|e| (EndpointKey::of(&e), e)).collect()
    }
}

impl PartialEq for DesiredPortSet<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.ports == other.ports && self.to_endpoints() == other.to_endpoints()
    }
}

/// The desired endpoints of a Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredEndpoints<'a> {
    /// The address types the Service supports.
    pub address_types: BTreeSet<IpFamily>,
    /// Per address type, the port sets ("endpoint sets by port map" upstream).
    pub by_address_type: BTreeMap<IpFamily, BTreeMap<PortMapKey, DesiredPortSet<'a>>>,
    /// Pods skipped or IPs ignored, for the shell to log (and, for a missing Node, to retry).
    pub warnings: Vec<PlanWarning>,
}

impl DesiredEndpoints<'_> {
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
pub fn desired_endpoints<'a>(
    service: &Service,
    pods: &[&'a CachedPod],
    nodes: &'a dyn NodeLookup,
) -> DesiredEndpoints<'a> {
    let address_types = address_types_for_service(service);
    let families: Vec<IpFamily> = address_types.iter().copied().collect();
    let mut warnings = Vec::new();
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_key = || {
        format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or(""),
            service.metadata.name.as_deref().unwrap_or("")
        )
    };
    let service_ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();

    // The port sets, in order of first appearance; `sets[n][f]` is port set n of family
    // `families[f]`. Pods almost always resolve their ports the same way, so each distinct
    // resolution (the port number per Service port, or none) is mapped to its port set once
    // instead of building and comparing port lists per pod.
    let mut port_keys: Vec<PortMapKey> = Vec::new();
    let mut sets: Vec<Vec<DesiredPortSet<'a>>> = Vec::new();
    let mut resolutions: Vec<(Vec<Option<i32>>, usize)> = Vec::new();
    let mut resolved: Vec<Option<i32>> = Vec::with_capacity(service_ports.len());

    for (n, pod) in pods.iter().copied().enumerate() {
        if !podutil::service_selects_pod(service, pod) || !podutil::should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        resolved.clear();
        resolved.extend(service_ports.iter().map(|sp| podutil::find_port_number(pod, sp)));
        let set = match resolutions.iter().find(|(r, _)| *r == resolved) {
            Some((_, set)) => *set,
            None => {
                let ports = endpoint_ports(service, pod);
                let key = PortMapKey::new(Some(&ports));
                let set = match port_keys.iter().position(|k| *k == key) {
                    Some(set) => set,
                    None => {
                        port_keys.push(key);
                        // Sized for all remaining pods: almost always one port set takes them all.
                        let capacity = pods.len() - n;
                        sets.push(families.iter().map(|_| DesiredPortSet::new(ports.clone(), capacity)).collect());
                        sets.len() - 1
                    }
                };
                resolutions.push((resolved.clone(), set));
                set
            }
        };

        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let node = nodes.node(node_name);
        if node.is_none() && !publish_not_ready {
            warnings.push(PlanWarning::NodeNotFound {
                service: service_key(),
                pod: pod.metadata.name.as_deref().unwrap_or_default().to_owned(),
                node: node_name.to_owned(),
            });
            continue;
        }

        let (by_family, invalid) = pod_addresses(pod);
        warnings.extend(invalid.into_iter().map(|ip| PlanWarning::InvalidPodIp {
            service: service_key(),
            pod: pod.metadata.name.as_deref().unwrap_or_default().to_owned(),
            ip: ip.to_owned(),
        }));

        let [v4, v6] = by_family;
        let mut by_family = [Some(v4), Some(v6)];
        for (family, set) in families.iter().zip(&mut sets[set]) {
            let Some(addresses) = by_family[family_index(*family)].take().filter(|a| !a.is_empty()) else {
                continue;
            };
            set.insert(DesiredEndpoint::new(pod, node, service, addresses));
        }
    }

    let mut by_address_type: BTreeMap<IpFamily, BTreeMap<PortMapKey, DesiredPortSet<'a>>> =
        families.iter().map(|f| (*f, BTreeMap::new())).collect();
    for (key, per_family) in port_keys.into_iter().zip(sets) {
        for (family, set) in families.iter().zip(per_family) {
            by_address_type.entry(*family).or_default().insert(key.clone(), set);
        }
    }
    DesiredEndpoints { address_types, by_address_type, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn endpoint<'a>(name: &'a str, node_name: &'a str) -> DesiredEndpoint<'a> {
        DesiredEndpoint {
            key: EndpointKeyRef {
                addresses: AddressList::One(Cow::Borrowed("10.0.0.1")),
                hostname: "",
                namespace: "ns",
                name,
            },
            uid: "",
            node_name,
            zone: "",
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// Different identities with the same hash are told apart; the same identity replaces.
    #[test]
    fn port_set_index_survives_hash_collisions() {
        let identity = |name: &str| {
            let mut out = Vec::new();
            encode_identity(&mut out, &endpoint(name, "").key);
            out
        };
        let beyond = |node: &str| {
            let mut out = Vec::new();
            endpoint("", node).encode_beyond_hash(&mut out);
            out
        };
        let mut set = DesiredPortSet::new(Vec::new(), 0);
        for (name, node) in [("a", "n1"), ("b", "n1"), ("c", "n1"), ("b", "n2")] {
            let start = set.encoded.len();
            encode_identity(&mut set.encoded, &endpoint(name, node).key);
            set.insert_hashed(endpoint(name, node), start, 42);
        }
        assert_eq!(set.endpoints.len(), 3);
        for (name, at) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(set.find(&identity(name), 42), Some(at), "{name}");
            assert_eq!(set.find(&identity(name), 7), None, "{name} under another hash");
        }
        assert_eq!(set.endpoints[1].node_name, "n2", "the later endpoint replaced the earlier");
        assert_eq!(set.beyond_hash(1), beyond("n2"));
        assert_eq!(set.beyond_hash(0), beyond("n1"));
        assert_eq!(set.find(&identity("d"), 42), None);

        // Through the real hash as well.
        let mut set = DesiredPortSet::new(Vec::new(), 0);
        set.insert(endpoint("a", "n1"));
        set.insert(endpoint("a", "n2"));
        assert_eq!(set.find(&identity("a"), set.hash_identity(&identity("a"))), Some(0));
        assert_eq!(set.endpoints.len(), 1);
        assert_eq!(set.beyond_hash(0), beyond("n2"));
    }
}
