//! Desired state: the endpoints each (address type, port set) slice should hold, from the
//! Endpoints' subsets (upstream `desiredCalc`, `addressToEndpoint`, `epPortsToEpsPorts` and the
//! address loop of `reconciler.reconcile`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use super::repack::{PortValue, repack};
use crate::endpointslice::desired::PortSet;
use crate::endpointslice::equality::{EndpointKey, PortMapKey};
use crate::podutil::{self, IpFamily, PROTOCOL_TCP};

/// Identifies the one slice mirrored for a group of endpoints: (address type, port set).
pub type SliceKey = (String, PortMapKey);

/// How many invalid IPs [`DesiredSlices::invalid_ip_examples`] keeps.
pub const MAX_INVALID_IP_EXAMPLES: usize = 10;

/// The desired slices of one Endpoints object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredSlices {
    /// Per (address type, port set): the ports and the endpoints, keyed by identity. Both
    /// address types get a key for every subset, possibly with no endpoints, so that slices of
    /// a family no longer used are deleted (as upstream).
    pub by_key: BTreeMap<SliceKey, PortSet>,
    /// Addresses whose IP does not parse (upstream `numInvalidAddresses`).
    pub invalid_addresses: usize,
    /// The first [`MAX_INVALID_IP_EXAMPLES`] invalid IPs, verbatim, for the log.
    pub invalid_ip_examples: Vec<String>,
    /// Addresses not mirrored, invalid ones included (upstream `addressesSkipped`).
    pub addresses_skipped: usize,
}

/// The EndpointSlice port of an Endpoints port (upstream `epPortsToEpsPorts`): name, port,
/// protocol and appProtocol. The name is always present (empty when unnamed), as upstream
/// writes it; a missing protocol is the apiserver's default, `TCP`.
pub fn endpoint_port(value: &PortValue<'_>) -> EndpointPort {
    let (name, port, protocol, app_protocol) = *value;
    EndpointPort {
        name: Some(name.to_owned()),
        port: Some(port),
        protocol: Some(if protocol.is_empty() { PROTOCOL_TCP } else { protocol }.to_owned()),
        app_protocol: app_protocol.map(str::to_owned),
    }
}

fn port_tuple(p: &EndpointPort) -> (&Option<String>, &Option<i32>, &Option<String>, &Option<String>) {
    (&p.name, &p.port, &p.protocol, &p.app_protocol)
}

/// The endpoint mirroring an Endpoints address, with its address type (upstream
/// `addressToEndpoint`), or `None` if the IP does not parse.
///
/// The IP is parsed leniently (`ParseIPSloppy`) and written in canonical form; an IPv4-mapped
/// IPv6 address is IPv4. `conditions.ready` is `ready`; serving and terminating stay unset.
/// `targetRef` and `nodeName` are copied verbatim, `hostname` when non-empty.
pub fn address_to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(IpFamily, Endpoint)> {
    let (family, ip) = podutil::canonical_ip(&address.ip)?;
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions { ready: Some(ready), serving: None, terminating: None }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        zone: None,
        hints: None,
        deprecated_topology: None,
    };
    Some((family, endpoint))
}

/// Computes the desired slices of `endpoints`, mirroring at most `max_per_subset` valid
/// addresses of each (repacked) subset: ready addresses first, then not-ready ones, each in
/// (IP, UID) order. Counting stops at the maximum, so invalid IPs past it count as skipped,
/// not as invalid (as upstream).
///
/// Endpoints with the same identity ([`EndpointKey`]) in one key collapse into one, the last
/// one winning (upstream `EndpointSet.Insert`). Should two subsets fold into one key (only
/// possible for objects the apiserver did not default) and hold more than the maximum, the
/// extra endpoints are dropped and counted as skipped.
pub fn desired_slices(endpoints: &Endpoints, max_per_subset: usize) -> DesiredSlices {
    let max = max_per_subset.max(1);
    let mut out = DesiredSlices::default();
    let subsets = endpoints.subsets.as_deref().unwrap_or_default();
    for subset in repack(subsets) {
        // Sorted and de-duplicated after conversion: ports that differ only by an unset vs `TCP`
        // protocol are the same port on a slice.
        let mut ports: Vec<EndpointPort> = subset.ports.iter().map(endpoint_port).collect();
        ports.sort_by(|a, b| port_tuple(a).cmp(&port_tuple(b)));
        ports.dedup_by(|a, b| port_tuple(a) == port_tuple(b));
        let port_key = PortMapKey::new(Some(&ports));
        let key_v4: SliceKey = (IpFamily::IPv4.as_str().to_owned(), port_key.clone());
        let key_v6: SliceKey = (IpFamily::IPv6.as_str().to_owned(), port_key);
        for key in [&key_v4, &key_v6] {
            out.by_key
                .entry(key.clone())
                .or_insert_with(|| PortSet { ports: ports.clone(), endpoints: BTreeMap::new() });
        }

        let total = subset.ready.len() + subset.not_ready.len();
        let mut added = 0usize;
        let all = subset.ready.iter().map(|a| (*a, true)).chain(subset.not_ready.iter().map(|a| (*a, false)));
        for (address, ready) in all {
            if added >= max {
                break;
            }
            match address_to_endpoint(address, ready) {
                Some((family, endpoint)) => {
                    let key = if family == IpFamily::IPv4 { &key_v4 } else { &key_v6 };
                    if let Some(set) = out.by_key.get_mut(key) {
                        set.endpoints.insert(EndpointKey::of(&endpoint), endpoint);
                    }
                    added += 1;
                }
                None => {
                    out.invalid_addresses += 1;
                    if out.invalid_ip_examples.len() < MAX_INVALID_IP_EXAMPLES {
                        out.invalid_ip_examples.push(address.ip.clone());
                    }
                }
            }
        }
        out.addresses_skipped += total.saturating_sub(added);
    }

    // One slice per key: never more than the maximum in it.
    for set in out.by_key.values_mut() {
        while set.endpoints.len() > max {
            set.endpoints.pop_last();
            out.addresses_skipped += 1;
        }
    }
    out
}
