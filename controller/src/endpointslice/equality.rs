//! Semantic equality, as upstream compares slices, endpoints and ports.
//!
//! - Port lists are grouped by [`PortMapKey`]: an order-insensitive key in which a missing list
//!   equals an empty one (upstream `NewPortMapKey`, fixed for nil/empty in 2026-01).
//! - Endpoints are matched by [`EndpointKey`] (sorted addresses, hostname, targetRef
//!   namespace/name; upstream `hashEndpoint`) and then compared with
//!   [`endpoints_equal_beyond_hash`] (nodeName, zone, the three conditions, targetRef without
//!   its resourceVersion). Hints are not compared there.
//! - [`placeholder_slice_equal`] is upstream's `placeholderSliceCompare`: namespace and labels of
//!   the metadata, everything else with nil = empty.
//!
//! `ObjectReference` fields are plain strings in Go, so an absent field and an empty one are the
//! same value; the comparisons here treat `None` and `Some("")` alike for them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice};

/// Identifies a group of endpoints sharing the same port list, independent of port order.
///
/// Each port is the tuple `(name, port, protocol, appProtocol)` with the API's optionality kept
/// (a missing name differs from an empty one, as upstream's hash does); the tuples are sorted, so
/// two lists get the same key exactly when they are equal as multisets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapKey(Vec<PortTuple>);

type PortTuple = (Option<String>, Option<i32>, Option<String>, Option<String>);

impl PortMapKey {
    /// The key of a port list; `None` and an empty list give the same key.
    pub fn new(ports: Option<&[EndpointPort]>) -> Self {
        let mut tuples: Vec<PortTuple> = ports
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone()))
            .collect();
        tuples.sort();
        PortMapKey(tuples)
    }

    /// The key of a slice's ports.
    pub fn of_slice(slice: &EndpointSlice) -> Self {
        Self::new(slice.ports.as_deref())
    }

    /// True for the key of an empty port list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The identity of an endpoint inside a port group (upstream `hashEndpoint`): its addresses
/// (sorted), its hostname, and its targetRef's namespace and name. The pod UID is not part of
/// it, so a change of UID is an in-place update rather than a remove and add.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// Addresses, sorted.
    pub addresses: Vec<String>,
    /// Hostname, empty when unset.
    pub hostname: String,
    /// targetRef namespace, empty when unset.
    pub namespace: String,
    /// targetRef name, empty when unset.
    pub name: String,
}

impl EndpointKey {
    /// The identity of an endpoint.
    pub fn of(endpoint: &Endpoint) -> Self {
        let mut addresses = endpoint.addresses.clone();
        addresses.sort();
        let target = endpoint.target_ref.as_ref();
        EndpointKey {
            addresses,
            hostname: endpoint.hostname.clone().unwrap_or_default(),
            namespace: target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
            name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
        }
    }
}

/// Addresses of an endpoint in key order, borrowed where possible. Almost every endpoint has
/// exactly one address, which is stored inline.
///
/// Equality, hashing and ordering are those of the address list (so `One(a)` equals a `Many`
/// holding only `a`), and agree with `Vec<String>` as used in [`EndpointKey`].
#[derive(Debug, Clone)]
pub enum AddressList<'a> {
    /// A single address.
    One(Cow<'a, str>),
    /// Any other number of addresses, sorted once complete.
    Many(Vec<Cow<'a, str>>),
}

impl Default for AddressList<'_> {
    fn default() -> Self {
        AddressList::Many(Vec::new())
    }
}

impl<'a> AddressList<'a> {
    /// The addresses.
    pub fn as_slice(&self) -> &[Cow<'a, str>] {
        match self {
            AddressList::One(a) => std::slice::from_ref(a),
            AddressList::Many(v) => v,
        }
    }

    /// True if there is no address.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Appends an address; call [`AddressList::sort`] when done.
    pub fn push(&mut self, address: Cow<'a, str>) {
        match self {
            AddressList::Many(v) if v.is_empty() => *self = AddressList::One(address),
            AddressList::One(first) => {
                let first = std::mem::take(first);
                *self = AddressList::Many(vec![first, address]);
            }
            AddressList::Many(v) => v.push(address),
        }
    }

    /// Sorts the addresses (key order).
    pub fn sort(&mut self) {
        if let AddressList::Many(v) = self {
            v.sort();
        }
    }

    /// Owned copies, for an `Endpoint`.
    pub fn to_vec(&self) -> Vec<String> {
        self.as_slice().iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl PartialEq for AddressList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for AddressList<'_> {}

impl std::hash::Hash for AddressList<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialOrd for AddressList<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AddressList<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

/// [`EndpointKey`] borrowed from an endpoint (or from a pod, for desired endpoints), so the
/// planner can match thousands of endpoints per sync without copying their strings. Same
/// fields, same equality and the same order as [`EndpointKey`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKeyRef<'a> {
    /// Addresses, sorted.
    pub addresses: AddressList<'a>,
    /// Hostname, empty when unset.
    pub hostname: &'a str,
    /// targetRef namespace, empty when unset.
    pub namespace: &'a str,
    /// targetRef name, empty when unset.
    pub name: &'a str,
}

impl<'a> EndpointKeyRef<'a> {
    /// The identity of an existing endpoint. Allocates only for an endpoint with several
    /// addresses.
    pub fn of(endpoint: &'a Endpoint) -> Self {
        let addresses = match endpoint.addresses.as_slice() {
            [one] => AddressList::One(Cow::Borrowed(one.as_str())),
            many => {
                let mut list: Vec<Cow<'a, str>> = many.iter().map(|a| Cow::Borrowed(a.as_str())).collect();
                list.sort();
                AddressList::Many(list)
            }
        };
        let target = endpoint.target_ref.as_ref();
        EndpointKeyRef {
            addresses,
            hostname: endpoint.hostname.as_deref().unwrap_or(""),
            namespace: target.and_then(|t| t.namespace.as_deref()).unwrap_or(""),
            name: target.and_then(|t| t.name.as_deref()).unwrap_or(""),
        }
    }
}

// The planner's byte encodings. Matching thousands of endpoints per sync is bound by memory
// access, not by comparisons: the strings of a desired endpoint live in its pod, scattered over
// the heap and long evicted from the cache by the time existing slices are walked. So the
// desired side copies what is compared into one compact buffer per port set, and an existing
// endpoint is encoded the same way into a scratch buffer; equal encodings are equal values.
// Every string is length-prefixed and every optional value tagged, so encodings are
// injective.

/// Appends a string, length-prefixed.
pub fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&s.len().to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends an optional string: absent and present (even empty) differ.
pub fn encode_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            encode_str(out, s);
        }
    }
}

/// Appends an optional boolean.
pub fn encode_opt_bool(out: &mut Vec<u8>, b: Option<bool>) {
    out.push(match b {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
}

/// Appends an identity: equal encodings exactly when the keys are equal.
pub fn encode_identity(out: &mut Vec<u8>, key: &EndpointKeyRef<'_>) {
    let addresses = key.addresses.as_slice();
    out.extend_from_slice(&addresses.len().to_le_bytes());
    for address in addresses {
        encode_str(out, address);
    }
    encode_str(out, key.hostname);
    encode_str(out, key.namespace);
    encode_str(out, key.name);
}

/// Appends what [`endpoints_equal_beyond_hash`] compares of an endpoint, except the
/// targetRef's name and namespace, which are part of the identity: for two endpoints with the
/// same [`EndpointKey`], equal encodings exactly when `endpoints_equal_beyond_hash` holds.
/// [`DesiredEndpoint::encode_beyond_hash`](super::desired::DesiredEndpoint::encode_beyond_hash)
/// is the same for an endpoint not yet built.
pub fn encode_beyond_hash(out: &mut Vec<u8>, endpoint: &Endpoint) {
    encode_opt_str(out, endpoint.node_name.as_deref());
    encode_opt_str(out, endpoint.zone.as_deref());
    let conditions = endpoint.conditions.as_ref();
    encode_opt_bool(out, conditions.and_then(|c| c.ready));
    encode_opt_bool(out, conditions.and_then(|c| c.serving));
    encode_opt_bool(out, conditions.and_then(|c| c.terminating));
    match &endpoint.target_ref {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            encode_str(out, s(&t.api_version));
            encode_str(out, s(&t.field_path));
            encode_str(out, s(&t.kind));
            encode_str(out, s(&t.uid));
        }
    }
}

fn conditions(ep: &Endpoint) -> EndpointConditions {
    ep.conditions.clone().unwrap_or_default()
}

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// Compares two object references as Go structs (absent = empty string), ignoring
/// `resourceVersion` (upstream `semanticIgnoreResourceVersion`, issue #50936).
pub fn object_refs_equal_ignoring_resource_version(a: &ObjectReference, b: &ObjectReference) -> bool {
    s(&a.api_version) == s(&b.api_version)
        && s(&a.field_path) == s(&b.field_path)
        && s(&a.kind) == s(&b.kind)
        && s(&a.name) == s(&b.name)
        && s(&a.namespace) == s(&b.namespace)
        && s(&a.uid) == s(&b.uid)
}

fn target_refs_equal(a: Option<&ObjectReference>, b: Option<&ObjectReference>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => object_refs_equal_ignoring_resource_version(a, b),
        _ => false,
    }
}

/// True if two endpoints with the same [`EndpointKey`] need no rewrite (upstream
/// `EndpointsEqualBeyondHash`): same nodeName, zone, ready, serving, terminating (a missing
/// value differs from a present one) and targetRef (resourceVersion ignored, UID included).
/// Hints are deliberately not compared; the hints step owns them.
pub fn endpoints_equal_beyond_hash(a: &Endpoint, b: &Endpoint) -> bool {
    let (ca, cb) = (conditions(a), conditions(b));
    a.node_name == b.node_name
        && a.zone == b.zone
        && ca.ready == cb.ready
        && ca.serving == cb.serving
        && ca.terminating == cb.terminating
        && target_refs_equal(a.target_ref.as_ref(), b.target_ref.as_ref())
}

/// True if the slice has an owner reference to this Service: same UID, `kind: Service`,
/// `apiVersion: v1` (upstream `ownedBy`).
pub fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or("");
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

fn opt_vec_eq<T, F: Fn(&T, &T) -> bool>(a: Option<&[T]>, b: Option<&[T]>, eq: F) -> bool {
    let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y))
}

fn opt_map_eq(a: Option<&BTreeMap<String, String>>, b: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    a.unwrap_or(&empty) == b.unwrap_or(&empty)
}

fn hints_eq(a: Option<&EndpointHints>, b: Option<&EndpointHints>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            opt_vec_eq(a.for_zones.as_deref(), b.for_zones.as_deref(), |x, y| x.name == y.name)
                && opt_vec_eq(a.for_nodes.as_deref(), b.for_nodes.as_deref(), |x, y| x.name == y.name)
        }
        _ => false,
    }
}

/// Deep semantic equality of two endpoints (apimachinery `Semantic.DeepEqual`): every field,
/// addresses in order, nil = empty for lists and maps, absent = empty for targetRef strings.
pub fn endpoints_semantically_equal(a: &Endpoint, b: &Endpoint) -> bool {
    let target = match (&a.target_ref, &b.target_ref) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            object_refs_equal_ignoring_resource_version(x, y) && s(&x.resource_version) == s(&y.resource_version)
        }
        _ => false,
    };
    a.addresses == b.addresses
        && conditions(a) == conditions(b)
        && opt_map_eq(a.deprecated_topology.as_ref(), b.deprecated_topology.as_ref())
        && hints_eq(a.hints.as_ref(), b.hints.as_ref())
        && a.hostname == b.hostname
        && a.node_name == b.node_name
        && a.zone == b.zone
        && target
}

/// Go map semantics for label maps in `placeholderSliceCompare`: a key missing on one side
/// reads as `""`, so `{k: ""}` equals `{}`.
fn labels_equal_go_style(a: Option<&BTreeMap<String, String>>, b: Option<&BTreeMap<String, String>>) -> bool {
    fn get<'m>(m: Option<&'m BTreeMap<String, String>>, k: &str) -> &'m str {
        m.and_then(|m| m.get(k)).map_or("", String::as_str)
    }
    a.into_iter().flatten().all(|(k, v)| get(b, k) == v) && b.into_iter().flatten().all(|(k, v)| get(a, k) == v)
}

/// Upstream `placeholderSliceCompare.DeepEqual`, used to avoid rewriting an existing placeholder
/// slice (PR #110365): of the metadata only the namespace and the labels are compared; the
/// address type, ports and endpoints are compared semantically (nil = empty, order-sensitive).
/// Two `None`s are equal; `None` and `Some` are not.
pub fn placeholder_slice_equal(a: Option<&EndpointSlice>, b: Option<&EndpointSlice>) -> bool {
    let (a, b) = match (a, b) {
        (None, None) => return true,
        (Some(a), Some(b)) => (a, b),
        _ => return false,
    };
    a.metadata.namespace.as_deref().unwrap_or("") == b.metadata.namespace.as_deref().unwrap_or("")
        && labels_equal_go_style(a.metadata.labels.as_ref(), b.metadata.labels.as_ref())
        && a.address_type == b.address_type
        && opt_vec_eq(a.ports.as_deref(), b.ports.as_deref(), |x, y| x == y)
        && opt_vec_eq(a.endpoints.as_deref(), b.endpoints.as_deref(), endpoints_semantically_equal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::endpointslice::desired::DesiredEndpoint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use proptest::prelude::{Strategy as _, any};

    fn ep(ready: Option<bool>, name: &str, node: Option<&str>, zone: Option<&str>, rv: &str) -> Endpoint {
        Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(EndpointConditions { ready, ..Default::default() }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                resource_version: (!rv.is_empty()).then(|| rv.to_owned()),
                ..Default::default()
            }),
            node_name: node.map(str::to_owned),
            zone: zone.map(str::to_owned),
            ..Default::default()
        }
    }

    // Port of TestEndpointsEqualBeyondHash.
    #[test]
    fn test_endpoints_equal_beyond_hash() {
        let with_conditions = |mut e: Endpoint, serving: Option<bool>, terminating: Option<bool>| {
            let c = e.conditions.get_or_insert_with(Default::default);
            c.serving = serving;
            c.terminating = terminating;
            e
        };
        let cases = vec![
            (
                "No change",
                ep(Some(true), "pod0", Some("node-1"), None, ""),
                ep(Some(true), "pod0", Some("node-1"), None, ""),
                true,
            ),
            (
                "NodeName changed",
                ep(Some(true), "pod0", Some("node-1"), None, ""),
                ep(Some(true), "pod0", Some("node-2"), None, ""),
                false,
            ),
            (
                "Zone changed",
                ep(Some(true), "pod0", None, Some("zone-1"), ""),
                ep(Some(true), "pod0", None, Some("zone-2"), ""),
                false,
            ),
            (
                "Ready condition changed",
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""),
                ep(Some(false), "pod0", Some("node-1"), Some("zone-1"), ""),
                false,
            ),
            (
                "Serving condition changed from nil to true",
                with_conditions(ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""), None, None),
                with_conditions(ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""), Some(true), Some(false)),
                false,
            ),
            (
                "Serving condition changed from false to true",
                with_conditions(ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""), Some(false), Some(false)),
                with_conditions(ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""), Some(true), Some(false)),
                false,
            ),
            (
                "Pod name changed",
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""),
                ep(Some(true), "pod1", Some("node-1"), Some("zone-1"), ""),
                false,
            ),
            (
                "Pod resourceVersion changed",
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), "1"),
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), "2"),
                true,
            ),
            (
                "Pod resourceVersion removed",
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), "1"),
                ep(Some(true), "pod0", Some("node-1"), Some("zone-1"), ""),
                true,
            ),
        ];
        for (name, a, b, expected) in cases {
            assert_eq!(endpoints_equal_beyond_hash(&a, &b), expected, "{name}");
            assert_eq!(endpoints_equal_beyond_hash(&b, &a), expected, "{name} (swapped)");
        }
        // UID is part of the comparison; an absent UID equals an empty one.
        let mut a = ep(Some(true), "pod0", None, None, "");
        let mut b = a.clone();
        b.target_ref.as_mut().unwrap().uid = Some(String::new());
        assert!(endpoints_equal_beyond_hash(&a, &b));
        a.target_ref.as_mut().unwrap().uid = Some("uid-1".into());
        assert!(!endpoints_equal_beyond_hash(&a, &b));
        // Hints are not compared.
        b = a.clone();
        b.hints = Some(EndpointHints::default());
        assert!(endpoints_equal_beyond_hash(&a, &b));
    }

    // Port of TestNewPortMapKey_NilVsEmptySlice, plus order insensitivity.
    #[test]
    fn test_new_port_map_key_nil_vs_empty_slice() {
        assert_eq!(PortMapKey::new(None), PortMapKey::new(Some(&[])));
        let p = |name: &str, port: i32| EndpointPort {
            name: Some(name.into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        let ab = [p("a", 1), p("b", 2)];
        let ba = [p("b", 2), p("a", 1)];
        assert_eq!(PortMapKey::new(Some(&ab)), PortMapKey::new(Some(&ba)));
        assert_ne!(PortMapKey::new(Some(&ab)), PortMapKey::new(Some(&ab[..1])));
        assert_ne!(PortMapKey::new(Some(&[p("a", 1)])), PortMapKey::new(Some(&[p("a", 2)])));
        // A missing name differs from an empty one, as in upstream's hash.
        let unnamed = EndpointPort { name: None, ..p("", 1) };
        assert_ne!(PortMapKey::new(Some(&[unnamed])), PortMapKey::new(Some(&[p("", 1)])));
    }

    #[test]
    fn endpoint_key_identity() {
        let mut a = ep(Some(true), "pod0", None, None, "");
        a.addresses = vec!["10.0.0.2".into(), "10.0.0.1".into()];
        let mut b = a.clone();
        b.addresses.reverse();
        b.target_ref.as_mut().unwrap().uid = Some("other".into());
        b.conditions = None;
        assert_eq!(EndpointKey::of(&a), EndpointKey::of(&b), "order, uid and conditions are not identity");
        b.hostname = Some("h".into());
        assert_ne!(EndpointKey::of(&a), EndpointKey::of(&b));
        a.hostname = Some(String::new());
        b.hostname = None;
        assert_eq!(EndpointKey::of(&a), EndpointKey::of(&b), "nil hostname equals empty");
    }

    /// Small alphabets, so that equal values are frequent.
    fn arb_opt_str() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        proptest::option::of(proptest::sample::select(vec!["", "a", "b"]).prop_map(str::to_owned))
    }

    fn arb_endpoint() -> impl proptest::strategy::Strategy<Value = Endpoint> {
        let addresses =
            proptest::collection::vec(proptest::sample::select(vec!["10.0.0.1", "10.0.0.10", "10.0.0.2"]), 0..3);
        let conditions = proptest::option::of(
            (
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
            )
                .prop_map(|(ready, serving, terminating)| EndpointConditions {
                    ready,
                    serving,
                    terminating,
                }),
        );
        let target = proptest::option::of(
            (arb_opt_str(), arb_opt_str(), arb_opt_str(), arb_opt_str(), arb_opt_str(), arb_opt_str(), arb_opt_str())
                .prop_map(|(kind, namespace, name, uid, api_version, field_path, resource_version)| ObjectReference {
                    kind: kind.map(|k| if k == "a" { "Pod".to_owned() } else { k }),
                    namespace,
                    name,
                    uid,
                    api_version,
                    field_path,
                    resource_version,
                }),
        );
        (addresses, conditions, target, arb_opt_str(), arb_opt_str(), arb_opt_str()).prop_map(
            |(addresses, conditions, target_ref, hostname, node_name, zone)| Endpoint {
                addresses: addresses.into_iter().map(str::to_owned).collect(),
                conditions,
                target_ref,
                hostname,
                node_name,
                zone,
                ..Default::default()
            },
        )
    }

    fn hash_of(key: &EndpointKeyRef<'_>) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
    }

    proptest::proptest! {
        /// The borrowed key matches and orders endpoints exactly as the owned one.
        #[test]
        fn endpoint_key_ref_agrees_with_endpoint_key(a in arb_endpoint(), b in arb_endpoint()) {
            let (ka, kb) = (EndpointKeyRef::of(&a), EndpointKeyRef::of(&b));
            proptest::prop_assert_eq!(ka.cmp(&kb), EndpointKey::of(&a).cmp(&EndpointKey::of(&b)));
            proptest::prop_assert_eq!(ka == kb, EndpointKey::of(&a) == EndpointKey::of(&b));
            if ka == kb {
                proptest::prop_assert_eq!(hash_of(&ka), hash_of(&kb));
            }
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            encode_identity(&mut ea, &ka);
            encode_identity(&mut eb, &kb);
            proptest::prop_assert_eq!(ea == eb, ka == kb);
        }

        /// Comparing the encodings of a desired endpoint and an existing one with the same
        /// identity gives the same answer as building it and using `endpoints_equal_beyond_hash`.
        #[test]
        fn desired_equal_beyond_hash_agrees(
            existing in arb_endpoint(),
            node_name in arb_opt_str(), zone in arb_opt_str(), namespace in arb_opt_str(),
            name in arb_opt_str(), uid in arb_opt_str(),
            ready in any::<bool>(), serving in any::<bool>(), terminating in any::<bool>(),
        ) {
            let s = |v: &Option<String>| v.clone().unwrap_or_default();
            let (node_name, zone, namespace, name, uid) = (s(&node_name), s(&zone), s(&namespace), s(&name), s(&uid));
            let desired = DesiredEndpoint {
                key: EndpointKeyRef {
                    addresses: AddressList::One(Cow::Borrowed("10.0.0.1")),
                    hostname: "",
                    namespace: &namespace,
                    name: &name,
                },
                uid: &uid,
                node_name: &node_name,
                zone: &zone,
                ready,
                serving,
                terminating,
            };
            let same_key = desired.key == EndpointKeyRef::of(&existing);
            let (mut want, mut got) = (Vec::new(), Vec::new());
            desired.encode_beyond_hash(&mut want);
            encode_beyond_hash(&mut got, &existing);
            proptest::prop_assert_eq!(
                same_key && want == got,
                same_key && endpoints_equal_beyond_hash(&desired.to_endpoint(), &existing)
            );
            // And an endpoint encodes as it is written.
            got.clear();
            encode_beyond_hash(&mut got, &desired.to_endpoint());
            proptest::prop_assert_eq!(want, got);
        }
    }

    #[test]
    fn address_list_push_and_sort() {
        let mut list = AddressList::default();
        assert!(list.is_empty());
        list.push(Cow::Borrowed("b"));
        assert!(matches!(list, AddressList::One(_)));
        list.push(Cow::Borrowed("a"));
        list.push(Cow::Owned("c".to_owned()));
        list.sort();
        assert_eq!(list.to_vec(), vec!["a", "b", "c"]);
        assert_eq!(AddressList::One(Cow::Borrowed("a")), AddressList::Many(vec![Cow::Owned("a".to_owned())]));
    }

    fn meta_slice(meta: ObjectMeta, address_type: &str) -> EndpointSlice {
        EndpointSlice { metadata: meta, address_type: address_type.into(), endpoints: None, ports: None }
    }

    // Port of TestPlaceHolderSliceCompare (reconciler_test.go).
    #[test]
    fn test_place_holder_slice_compare() {
        let empty = meta_slice(ObjectMeta::default(), "");
        let labels = |k: &str| Some(BTreeMap::from([(k.to_owned(), "true".to_owned())]));
        let ts = |s: i64| Some(Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        let cases = vec![
            ("Both nil", None, None, true),
            ("Y is nil", Some(empty.clone()), None, false),
            ("X is nil", None, Some(empty.clone()), false),
            ("Both are empty and non-nil", Some(empty.clone()), Some(empty.clone()), true),
            (
                "Only ObjectMeta.Name has diff",
                Some(meta_slice(ObjectMeta { name: Some("foo".into()), ..Default::default() }, "")),
                Some(meta_slice(ObjectMeta { name: Some("bar".into()), ..Default::default() }, "")),
                true,
            ),
            (
                "Only ObjectMeta.Labels has diff",
                Some(meta_slice(ObjectMeta { labels: labels("foo"), ..Default::default() }, "")),
                Some(meta_slice(ObjectMeta { labels: labels("bar"), ..Default::default() }, "")),
                false,
            ),
            (
                "Creation time is different",
                Some(meta_slice(ObjectMeta { creation_timestamp: ts(1), ..Default::default() }, "")),
                Some(meta_slice(ObjectMeta { creation_timestamp: ts(2), ..Default::default() }, "")),
                true,
            ),
            (
                "Different except for ObjectMeta",
                Some(meta_slice(ObjectMeta::default(), "IPv4")),
                Some(meta_slice(ObjectMeta::default(), "IPv6")),
                false,
            ),
        ];
        for (name, x, y, want) in cases {
            assert_eq!(placeholder_slice_equal(x.as_ref(), y.as_ref()), want, "{name}");
        }

        // nil and empty lists are equal; annotations and owner references are not compared.
        let mut a = meta_slice(ObjectMeta { namespace: Some("ns".into()), ..Default::default() }, "IPv4");
        let mut b = a.clone();
        a.ports = Some(vec![]);
        a.endpoints = Some(vec![]);
        b.metadata.annotations = Some(BTreeMap::from([("x".to_owned(), "y".to_owned())]));
        assert!(placeholder_slice_equal(Some(&a), Some(&b)));
        b.metadata.namespace = Some("other".into());
        assert!(!placeholder_slice_equal(Some(&a), Some(&b)));
    }
}
