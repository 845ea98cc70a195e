//! Canonical layout of Endpoints subsets: upstream `endpointsv1.RepackSubsets`
//! (`pkg/api/v1/endpoints/util.go`), which the mirroring reconciler applies before mapping
//! subsets to slices.
//!
//! 1. Every address is identified by (IP text, targetRef UID); the first occurrence (subsets in
//!    order, ready before not-ready) is the one kept.
//! 2. Every distinct port maps to the set of addresses offering it; an address that is not
//!    ready in any subset offering the port is not ready for that port ("not ready trumps
//!    ready"). Subsets without ports use a sentinel port, so their addresses are kept; a port
//!    numbered 0 or less is treated like the sentinel (upstream only emits ports > 0).
//! 3. Ports whose address sets (with readiness) are equal form one subset.
//! 4. Addresses are sorted by IP bytes, then UID; ports and subsets by value (upstream sorts
//!    ports and subsets by hash, an arbitrary but fixed order).
//!
//! Ports are compared by value (name, port, protocol, appProtocol, with a missing string equal
//! to an empty one, as Go strings). Upstream keys a Go map by the `EndpointPort` struct, whose
//! `appProtocol` is a pointer, so there two ports with an appProtocol are never equal; see the
//! mirroring module's DIFFERENCES.
//!
//! Cost: linear in the input plus, per group of ports offered by the same subsets, the number
//! of addresses of those subsets (upstream: ports × addresses).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

/// An address's identity in a subset: (IP text, targetRef UID). A missing targetRef and an
/// empty UID are the same identity, as upstream.
pub type AddressKey<'a> = (&'a str, &'a str);

/// A port's value: (name, port, protocol, appProtocol); missing strings are empty.
pub type PortValue<'a> = (&'a str, i32, &'a str, Option<&'a str>);

/// One repacked subset, borrowing from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Repacked<'a> {
    /// The ports, sorted by value. Empty for addresses that offer no port.
    pub ports: Vec<PortValue<'a>>,
    /// Ready addresses, sorted by (IP, UID).
    pub ready: Vec<&'a EndpointAddress>,
    /// Not-ready addresses, sorted by (IP, UID).
    pub not_ready: Vec<&'a EndpointAddress>,
}

/// The identity of an address.
pub fn address_key(address: &EndpointAddress) -> AddressKey<'_> {
    (address.ip.as_str(), address.target_ref.as_ref().and_then(|r| r.uid.as_deref()).unwrap_or(""))
}

/// The value of a port.
pub fn port_value(port: &EndpointPort) -> PortValue<'_> {
    (
        port.name.as_deref().unwrap_or(""),
        port.port,
        port.protocol.as_deref().unwrap_or(""),
        port.app_protocol.as_deref(),
    )
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The API port of a port value (empty strings become absent, as Go's `omitempty`).
pub fn port_from_value(v: &PortValue<'_>) -> EndpointPort {
    EndpointPort { name: non_empty(v.0), port: v.1, protocol: non_empty(v.2), app_protocol: v.3.map(str::to_owned) }
}

fn addresses(subset: &EndpointSubset) -> impl Iterator<Item = (&EndpointAddress, bool)> {
    let ready = subset.addresses.iter().flatten().map(|a| (a, true));
    let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
    ready.chain(not_ready)
}

/// Repacks subsets into the canonical layout, borrowing from them.
pub fn repack(subsets: &[EndpointSubset]) -> Vec<Repacked<'_>> {
    // 1. The first occurrence of every address.
    let mut first: HashMap<AddressKey<'_>, &EndpointAddress> = HashMap::new();
    for subset in subsets {
        for (address, _) in addresses(subset) {
            first.entry(address_key(address)).or_insert(address);
        }
    }

    // 2. Which subsets offer each port (`None` is the sentinel of subsets without ports). A
    //    subset without addresses contributes nothing, as upstream.
    let mut subsets_by_port: BTreeMap<Option<PortValue<'_>>, Vec<usize>> = BTreeMap::new();
    for (i, subset) in subsets.iter().enumerate() {
        if addresses(subset).next().is_none() {
            continue;
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let keys: Vec<Option<PortValue<'_>>> =
            if ports.is_empty() { vec![None] } else { ports.iter().map(|p| Some(port_value(p))).collect() };
        for key in keys {
            let idxs = subsets_by_port.entry(key).or_default();
            if idxs.last() != Some(&i) {
                idxs.push(i);
            }
        }
    }

    // 3. Ports offered by the same subsets have the same address map; compute it once per group.
    let mut ports_by_subsets: BTreeMap<Vec<usize>, Vec<Option<PortValue<'_>>>> = BTreeMap::new();
    for (port, idxs) in subsets_by_port {
        ports_by_subsets.entry(idxs).or_default().push(port);
    }

    // 4. Group ports by their address map (address -> ready).
    let mut ports_by_addresses: BTreeMap<Vec<(AddressKey<'_>, bool)>, BTreeSet<PortValue<'_>>> = BTreeMap::new();
    for (idxs, ports) in ports_by_subsets {
        let mut readiness: BTreeMap<AddressKey<'_>, bool> = BTreeMap::new();
        for subset in idxs.iter().filter_map(|&i| subsets.get(i)) {
            for (address, ready) in addresses(subset) {
                // Not ready always trumps ready.
                let entry = readiness.entry(address_key(address)).or_insert(ready);
                *entry = *entry && ready;
            }
        }
        let set = ports_by_addresses.entry(readiness.into_iter().collect()).or_default();
        // Ports numbered 0 or less are treated like the sentinel (upstream `if port.Port > 0`):
        // their addresses are kept, the port is not.
        set.extend(ports.into_iter().flatten().filter(|p| p.1 > 0));
    }

    // 5. Build the subsets.
    ports_by_addresses
        .into_iter()
        .map(|(addrs, ports)| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for (key, is_ready) in addrs {
                if let Some(address) = first.get(&key) {
                    if is_ready { ready.push(*address) } else { not_ready.push(*address) }
                }
            }
            Repacked { ports: ports.into_iter().collect(), ready, not_ready }
        })
        .collect()
}

/// Upstream `RepackSubsets` with owned API objects: empty lists are absent.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let owned = |v: Vec<&EndpointAddress>| (!v.is_empty()).then(|| v.into_iter().cloned().collect());
    repack(subsets)
        .into_iter()
        .map(|r| EndpointSubset {
            addresses: owned(r.ready),
            not_ready_addresses: owned(r.not_ready),
            ports: (!r.ports.is_empty()).then(|| r.ports.iter().map(port_from_value).collect()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn addr(ip: &str) -> EndpointAddress {
        EndpointAddress { ip: ip.into(), ..Default::default() }
    }

    fn addr_uid(ip: &str, uid: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            target_ref: Some(ObjectReference { uid: Some(uid.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn addr_ref(ip: &str, name: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            target_ref: Some(ObjectReference { name: Some(name.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn port(p: i32) -> EndpointPort {
        EndpointPort { port: p, ..Default::default() }
    }

    fn ss(ready: Vec<EndpointAddress>, not_ready: Vec<EndpointAddress>, ports: Vec<EndpointPort>) -> EndpointSubset {
        EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        }
    }

    /// Order-insensitive comparison of subsets (upstream compares after `SortSubsets`, a hash
    /// order; ours is a value order).
    fn canon(mut v: Vec<EndpointSubset>) -> Vec<String> {
        let mut out: Vec<String> = v.iter_mut().map(|s| format!("{s:?}")).collect();
        out.sort();
        out
    }

    // Port of pkg/api/v1/endpoints TestPackSubsets (all 33 cases).
    #[test]
    fn test_pack_subsets() {
        let foo = addr_ref("1.2.3.4", "foo");
        let bar = addr_ref("1.2.3.4", "bar");
        let cases: Vec<(&str, Vec<EndpointSubset>, Vec<EndpointSubset>)> = vec![
            (
                "empty everything",
                vec![EndpointSubset { addresses: Some(vec![]), ports: Some(vec![]), ..Default::default() }],
                vec![],
            ),
            (
                "empty addresses",
                vec![EndpointSubset { addresses: Some(vec![]), ports: Some(vec![port(111)]), ..Default::default() }],
                vec![],
            ),
            (
                "empty ports",
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![])],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![])],
            ),
            (
                "empty ports (not ready)",
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![])],
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![])],
            ),
            (
                "one set, one ip, one port",
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111)])],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111)])],
            ),
            (
                "one set, one ip, one port (IPv6)",
                vec![ss(vec![addr("beef::1:2:3:4")], vec![], vec![port(111)])],
                vec![ss(vec![addr("beef::1:2:3:4")], vec![], vec![port(111)])],
            ),
            (
                "one set, one notReady ip, one port",
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![port(111)])],
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, one ip, one UID, one port",
                vec![ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)])],
                vec![ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)])],
            ),
            (
                "one set, one notReady ip, one UID, one port",
                vec![ss(vec![], vec![addr_uid("1.2.3.4", "uid-1")], vec![port(111)])],
                vec![ss(vec![], vec![addr_uid("1.2.3.4", "uid-1")], vec![port(111)])],
            ),
            (
                "one set, one ip, empty UID, one port",
                vec![ss(vec![addr_uid("1.2.3.4", "")], vec![], vec![port(111)])],
                vec![ss(vec![addr_uid("1.2.3.4", "")], vec![], vec![port(111)])],
            ),
            (
                "one set, one notReady ip, empty UID, one port",
                vec![ss(vec![], vec![addr_uid("1.2.3.4", "")], vec![port(111)])],
                vec![ss(vec![], vec![addr_uid("1.2.3.4", "")], vec![port(111)])],
            ),
            (
                "one set, two ips, one port",
                vec![ss(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![], vec![port(111)])],
                vec![ss(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![], vec![port(111)])],
            ),
            (
                "one set, two mixed ips, one port",
                vec![ss(vec![addr("1.2.3.4")], vec![addr("5.6.7.8")], vec![port(111)])],
                vec![ss(vec![addr("1.2.3.4")], vec![addr("5.6.7.8")], vec![port(111)])],
            ),
            (
                "one set, two duplicate ips, one port, notReady is covered by ready",
                vec![ss(vec![addr("1.2.3.4")], vec![addr("1.2.3.4")], vec![port(111)])],
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, one ip, two ports",
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111), port(222)])],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111), port(222)])],
            ),
            (
                "one set, dup ips, one port",
                vec![ss(vec![addr("1.2.3.4"), addr("1.2.3.4")], vec![], vec![port(111)])],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111)])],
            ),
            (
                "one set, dup ips, one port (IPv6)",
                vec![ss(vec![addr("beef::1"), addr("beef::1")], vec![], vec![port(111)])],
                vec![ss(vec![addr("beef::1")], vec![], vec![port(111)])],
            ),
            (
                "one set, dup ips with target-refs, one port",
                vec![ss(vec![foo.clone(), bar.clone()], vec![], vec![port(111)])],
                vec![ss(vec![foo.clone()], vec![], vec![port(111)])],
            ),
            (
                "one set, dup mixed ips with target-refs, one port",
                vec![ss(vec![foo.clone()], vec![bar.clone()], vec![port(111)])],
                // Only the first address is kept; not ready trumps ready.
                vec![ss(vec![], vec![foo.clone()], vec![port(111)])],
            ),
            (
                "one set, one ip, dup ports",
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111), port(111)])],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111)])],
            ),
            (
                "two sets, dup ip, dup port",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                ],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111)])],
            ),
            (
                "two sets, dup mixed ip, dup port",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![ss(vec![], vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "two sets, dup ip, two ports",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(222)]),
                ],
                vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(111), port(222)])],
            ),
            (
                "two sets, dup ip, dup uids, two ports",
                vec![
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(222)]),
                ],
                vec![ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111), port(222)])],
            ),
            (
                "two sets, dup mixed ip, dup uids, two ports",
                vec![
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr_uid("1.2.3.4", "uid-1")], vec![port(222)]),
                ],
                vec![
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr_uid("1.2.3.4", "uid-1")], vec![port(222)]),
                ],
            ),
            (
                "two sets, two ips, dup port",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("5.6.7.8")], vec![], vec![port(111)]),
                ],
                vec![ss(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![], vec![port(111)])],
            ),
            (
                "two set, dup ip, two uids, dup ports",
                vec![
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![addr_uid("1.2.3.4", "uid-2")], vec![], vec![port(111)]),
                ],
                vec![ss(vec![addr_uid("1.2.3.4", "uid-1"), addr_uid("1.2.3.4", "uid-2")], vec![], vec![port(111)])],
            ),
            (
                "two set, dup ip, with and without uid, dup ports",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr_uid("1.2.3.4", "uid-2")], vec![], vec![port(111)]),
                ],
                vec![ss(vec![addr("1.2.3.4"), addr_uid("1.2.3.4", "uid-2")], vec![], vec![port(111)])],
            ),
            (
                "two sets, two ips, two dup ip with uid, dup port, wrong order",
                vec![
                    ss(vec![addr("5.6.7.8")], vec![], vec![port(111)]),
                    ss(vec![addr_uid("5.6.7.8", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![addr_uid("1.2.3.4", "uid-1")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                ],
                vec![ss(
                    vec![addr("1.2.3.4"), addr_uid("1.2.3.4", "uid-1"), addr("5.6.7.8"), addr_uid("5.6.7.8", "uid-1")],
                    vec![],
                    vec![port(111)],
                )],
            ),
            (
                "two sets, two mixed ips, two dup ip with uid, dup port, wrong order, ends up with split addresses",
                vec![
                    ss(vec![addr("5.6.7.8")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr_uid("5.6.7.8", "uid-1")], vec![port(111)]),
                    ss(vec![], vec![addr_uid("1.2.3.4", "uid-1")], vec![port(111)]),
                    ss(vec![], vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![ss(
                    vec![addr("5.6.7.8")],
                    vec![addr("1.2.3.4"), addr_uid("1.2.3.4", "uid-1"), addr_uid("5.6.7.8", "uid-1")],
                    vec![port(111)],
                )],
            ),
            (
                "two sets, two ips, two ports",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("5.6.7.8")], vec![], vec![port(222)]),
                ],
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("5.6.7.8")], vec![], vec![port(222)]),
                ],
            ),
            (
                "four sets, three ips, three ports, jumbled",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.5")], vec![], vec![port(222)]),
                    ss(vec![addr("1.2.3.6")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.5")], vec![], vec![port(333)]),
                ],
                vec![
                    ss(vec![addr("1.2.3.4"), addr("1.2.3.6")], vec![], vec![port(111)]),
                    ss(vec![addr("1.2.3.5")], vec![], vec![port(222), port(333)]),
                ],
            ),
            (
                "four sets, three mixed ips, three ports, jumbled",
                vec![
                    ss(vec![addr("1.2.3.4")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr("1.2.3.5")], vec![port(222)]),
                    ss(vec![addr("1.2.3.6")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr("1.2.3.5")], vec![port(333)]),
                ],
                vec![
                    ss(vec![addr("1.2.3.4"), addr("1.2.3.6")], vec![], vec![port(111)]),
                    ss(vec![], vec![addr("1.2.3.5")], vec![port(222), port(333)]),
                ],
            ),
        ];
        assert_eq!(cases.len(), 33);
        for (name, given, expect) in cases {
            let got = repack_subsets(&given);
            assert_eq!(canon(got.clone()), canon(expect), "{name}");
            // The canonical layout is a fixed point.
            assert_eq!(repack_subsets(&got), got, "{name}: repacking twice");
        }
    }

    #[test]
    fn portless_addresses_fold_into_a_port_group_with_the_same_addresses() {
        let given = vec![ss(vec![addr("1.2.3.4")], vec![], vec![]), ss(vec![addr("1.2.3.4")], vec![], vec![port(80)])];
        assert_eq!(repack_subsets(&given), vec![ss(vec![addr("1.2.3.4")], vec![], vec![port(80)])]);
    }

    #[test]
    fn ports_compare_by_value_including_app_protocol() {
        let p = |app: Option<&str>| EndpointPort {
            name: Some("http".into()),
            port: 80,
            protocol: Some("TCP".into()),
            app_protocol: app.map(str::to_owned),
        };
        let given = vec![
            ss(vec![addr("1.1.1.1")], vec![], vec![p(Some("h2c"))]),
            ss(vec![addr("2.2.2.2")], vec![], vec![p(Some("h2c"))]),
            ss(vec![addr("3.3.3.3")], vec![], vec![p(None)]),
        ];
        let got = repack(&given);
        assert_eq!(got.len(), 2);
        let ips = |r: &Repacked<'_>| r.ready.iter().map(|a| a.ip.clone()).collect::<Vec<_>>();
        let h2c = got.iter().find(|r| r.ports[0].3 == Some("h2c")).unwrap();
        assert_eq!(ips(h2c), ["1.1.1.1", "2.2.2.2"]);
        // A missing name equals an empty one (Go strings).
        let unnamed = vec![
            ss(vec![addr("1.1.1.1")], vec![], vec![EndpointPort { name: None, port: 1, ..Default::default() }]),
            ss(
                vec![addr("2.2.2.2")],
                vec![],
                vec![EndpointPort { name: Some(String::new()), port: 1, ..Default::default() }],
            ),
        ];
        assert_eq!(repack(&unnamed).len(), 1);
    }
}
