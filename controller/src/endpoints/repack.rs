//! Canonical subsets, semantic comparison and truncation.
//!
//! - [`repack_subsets`] is upstream `RepackSubsets` (`pkg/api/v1/endpoints/util.go`): addresses
//!   de-duplicated by (IP, targetRef UID), the first occurrence kept; per port the set of
//!   addresses with a ready flag, not-ready winning over ready; ports with the same (address,
//!   ready) set grouped into one subset; subsets without addresses dropped.
//! - [`subsets_equal_ignore_resource_version`] is upstream `endpointSubsetsEqualIgnoreResourceVersion`
//!   with Go semantics (a missing list equals an empty one, a missing string equals an empty
//!   one, `nodeName` and `appProtocol` are pointers), made order-insensitive.
//! - [`truncate_subsets`] is upstream `truncateEndpoints` (`maxCapacity`).
//!
//! **Order.** Upstream sorts addresses by IP bytes then UID (reproduced), but ports and subsets
//! by an FNV-128a hash of a `spew` dump of the Go structs, which is not reproduced. Here ports
//! are sorted by (port, protocol, name, appProtocol) and subsets by (ports, ready addresses,
//! not-ready addresses). Comparisons never depend on port or subset order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference};

/// A port as Go compares `v1.EndpointPort` values: strings with empty = unset. `appProtocol`
/// is a pointer in Go, so unset differs from empty; it is compared by value here (Go's map keys
/// compare the pointer, which only matters for non-canonical input).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PortKey {
    port: i32,
    protocol: String,
    name: String,
    app_protocol: Option<String>,
}

impl PortKey {
    /// Upstream's sentinel for subsets without ports.
    fn sentinel() -> Self {
        PortKey { port: -1, protocol: String::new(), name: String::new(), app_protocol: None }
    }

    fn of(p: &EndpointPort) -> Self {
        PortKey {
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_default(),
            name: p.name.clone().unwrap_or_default(),
            app_protocol: p.app_protocol.clone(),
        }
    }

    fn to_port(&self) -> EndpointPort {
        EndpointPort {
            name: non_empty(&self.name),
            port: self.port,
            protocol: non_empty(&self.protocol),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn opt_str(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// The de-duplication key of an address: (IP, targetRef UID), an absent targetRef counting as
/// an empty UID (upstream `addressKey`).
fn address_key(a: &EndpointAddress) -> (&str, &str) {
    (a.ip.as_str(), a.target_ref.as_ref().map_or("", |r| opt_str(&r.uid)))
}

/// Upstream `LessEndpointAddress` as an ordering: IP bytes, then targetRef UID (an absent
/// targetRef first). Addresses with equal keys compare equal.
pub fn address_order(a: &EndpointAddress, b: &EndpointAddress) -> Ordering {
    a.ip.as_bytes().cmp(b.ip.as_bytes()).then_with(|| match (&a.target_ref, &b.target_ref) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => opt_str(&x.uid).cmp(opt_str(&y.uid)),
    })
}

/// An address as it round-trips through Go: empty strings become absent (`omitempty`);
/// `nodeName` (a pointer) is kept as is.
fn go_address(a: &EndpointAddress) -> EndpointAddress {
    EndpointAddress {
        ip: a.ip.clone(),
        hostname: a.hostname.clone().filter(|h| !h.is_empty()),
        node_name: a.node_name.clone(),
        target_ref: a.target_ref.as_ref().map(|r| ObjectReference {
            api_version: r.api_version.clone().filter(|s| !s.is_empty()),
            field_path: r.field_path.clone().filter(|s| !s.is_empty()),
            kind: r.kind.clone().filter(|s| !s.is_empty()),
            name: r.name.clone().filter(|s| !s.is_empty()),
            namespace: r.namespace.clone().filter(|s| !s.is_empty()),
            resource_version: r.resource_version.clone().filter(|s| !s.is_empty()),
            uid: r.uid.clone().filter(|s| !s.is_empty()),
        }),
    }
}

fn some_if_non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// Puts subsets into canonical form (upstream `RepackSubsets`); see the module docs. The input
/// is not modified. Never panics.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    // Every distinct address (first occurrence wins), and per port: address index -> ready.
    let mut addrs: Vec<EndpointAddress> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<usize, bool>> = BTreeMap::new();

    let mut map_address = |addr: &EndpointAddress, port: &PortKey, ready: bool, by_port: &mut BTreeMap<_, _>| {
        let (ip, uid) = address_key(addr);
        let idx = *index.entry((ip.to_owned(), uid.to_owned())).or_insert_with(|| {
            addrs.push(go_address(addr));
            addrs.len() - 1
        });
        let set: &mut BTreeMap<usize, bool> = by_port.entry(port.clone()).or_default();
        // Not ready always trumps ready.
        let entry = set.entry(idx).or_insert(ready);
        *entry = *entry && ready;
    };

    for subset in subsets {
        let ports: Vec<PortKey> = match subset.ports.as_deref() {
            None | Some([]) => vec![PortKey::sentinel()],
            Some(ports) => ports.iter().map(PortKey::of).collect(),
        };
        for port in &ports {
            for addr in subset.addresses.as_deref().unwrap_or_default() {
                map_address(addr, port, true, &mut by_port);
            }
            for addr in subset.not_ready_addresses.as_deref().unwrap_or_default() {
                map_address(addr, port, false, &mut by_port);
            }
        }
    }

    // Group ports by their (address, ready) set. Sentinels (port <= 0) only make sure the set
    // has a subset.
    let mut groups: BTreeMap<Vec<(usize, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, set) in by_port {
        let ports = groups.entry(set.into_iter().collect()).or_default();
        if port.port > 0 {
            ports.push(port);
        }
    }

    let mut out: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, mut ports)| {
            let (mut ready, mut not_ready): (Vec<EndpointAddress>, Vec<EndpointAddress>) = (Vec::new(), Vec::new());
            for (idx, is_ready) in set {
                if let Some(a) = addrs.get(idx) {
                    if is_ready { ready.push(a.clone()) } else { not_ready.push(a.clone()) }
                }
            }
            ready.sort_by(address_order);
            not_ready.sort_by(address_order);
            ports.sort();
            EndpointSubset {
                addresses: some_if_non_empty(ready),
                not_ready_addresses: some_if_non_empty(not_ready),
                ports: some_if_non_empty(ports.iter().map(PortKey::to_port).collect()),
            }
        })
        .collect();
    sort_subsets(&mut out);
    out
}

/// Sorts subsets in this crate's canonical order: by their ports, then ready addresses, then
/// not-ready addresses (each by [`address_order`] keys).
fn sort_subsets(subsets: &mut [EndpointSubset]) {
    type AddressKeys = Vec<(String, String)>;
    fn key(s: &EndpointSubset) -> (Vec<PortKey>, AddressKeys, AddressKeys) {
        let addrs = |l: &Option<Vec<EndpointAddress>>| -> AddressKeys {
            l.as_deref()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    let (ip, uid) = address_key(a);
                    (ip.to_owned(), uid.to_owned())
                })
                .collect()
        };
        (
            s.ports.as_deref().unwrap_or_default().iter().map(PortKey::of).collect(),
            addrs(&s.addresses),
            addrs(&s.not_ready_addresses),
        )
    }
    subsets.sort_by_cached_key(key);
}

/// `(ready, not ready)` address counts over all subsets (duplicates counted).
pub fn count_addresses(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| {
        (r + s.addresses.as_ref().map_or(0, Vec::len), n + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
    })
}

/// An address as Go's semantic equality sees it, without targetRef resourceVersion.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NormAddress<'a> {
    ip: &'a str,
    hostname: &'a str,
    node_name: Option<&'a str>,
    /// (kind, namespace, name, uid, apiVersion, fieldPath)
    target_ref: Option<[&'a str; 6]>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NormSubset<'a> {
    addresses: Vec<NormAddress<'a>>,
    not_ready: Vec<NormAddress<'a>>,
    ports: Vec<(i32, &'a str, &'a str, Option<&'a str>)>,
}

fn normalize(subsets: &[EndpointSubset]) -> Vec<NormSubset<'_>> {
    fn addrs(l: &Option<Vec<EndpointAddress>>) -> Vec<NormAddress<'_>> {
        let mut v: Vec<NormAddress<'_>> = l
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| NormAddress {
                ip: &a.ip,
                hostname: opt_str(&a.hostname),
                node_name: a.node_name.as_deref(),
                target_ref: a.target_ref.as_ref().map(|r| {
                    [
                        opt_str(&r.kind),
                        opt_str(&r.namespace),
                        opt_str(&r.name),
                        opt_str(&r.uid),
                        opt_str(&r.api_version),
                        opt_str(&r.field_path),
                    ]
                }),
            })
            .collect();
        v.sort();
        v
    }
    let mut out: Vec<NormSubset<'_>> = subsets
        .iter()
        .map(|s| {
            let mut ports: Vec<_> = s
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|p| (p.port, opt_str(&p.protocol), opt_str(&p.name), p.app_protocol.as_deref()))
                .collect();
            ports.sort();
            NormSubset { addresses: addrs(&s.addresses), not_ready: addrs(&s.not_ready_addresses), ports }
        })
        .collect();
    out.sort();
    out
}

/// True if the two subset lists are equal under Go's semantic equality, ignoring targetRef
/// resourceVersion (upstream `endpointSubsetsEqualIgnoreResourceVersion`), and ignoring the
/// order of subsets, of addresses and of ports (compared as multisets).
pub fn subsets_equal_ignore_resource_version(a: &[EndpointSubset], b: &[EndpointSubset]) -> bool {
    a.len() == b.len() && normalize(a) == normalize(b)
}

/// Truncates subsets to at most `max` addresses in total (upstream `truncateEndpoints`, with
/// `max` = `maxCapacity` = 1000). Returns true if the total was above `max`.
///
/// - Total at most `max`: nothing changes.
/// - More than `max` ready addresses: every not-ready address is dropped and each subset, in
///   order, keeps the first `ceil(ready_in_subset / total_ready × max)` ready addresses, capped
///   by what is left of `max`.
/// - Otherwise all ready addresses stay and the `max − total_ready` not-ready slots are shared
///   the same way.
///
/// The arithmetic is upstream's, in `f64`. Subsets left without any address are kept here
/// (see [`super::plan`], which drops them).
pub fn truncate_subsets(subsets: &mut [EndpointSubset], max: usize) -> bool {
    let (total_ready, total_not_ready) = count_addresses(subsets);
    if total_ready + total_not_ready <= max {
        return false;
    }
    let truncate_ready = total_ready > max;
    let (budget, num_total) = if truncate_ready { (max, total_ready) } else { (max - total_ready, total_not_ready) };
    let mut can_be_added = budget;
    for subset in subsets.iter_mut() {
        let list = if truncate_ready { &mut subset.addresses } else { &mut subset.not_ready_addresses };
        let in_subset = list.as_ref().map_or(0, Vec::len);
        // num_total > 0: it is the larger part of a total above max.
        let share = (in_subset as f64 / num_total as f64) * budget as f64;
        let to_be_added = (share.ceil() as usize).min(can_be_added);
        if let Some(l) = list.as_mut() {
            l.truncate(to_be_added);
        }
        can_be_added = can_be_added.saturating_sub(list.as_ref().map_or(0, Vec::len));
        if truncate_ready {
            subset.not_ready_addresses = None;
        }
    }
    true
}
