//! Hints for `spec.trafficDistribution` (KEP-4444 `PreferClose`, KEP-3015 `PreferSameZone`
//! and `PreferSameNode`).
//!
//! Port of upstream `k8s.io/endpointslice/trafficdist` v0.37.1 plus the Reconciler's
//! `validTrafficDistribution`. Pure functions. In v1.37 the `PreferSameTrafficDistribution`
//! gate is GA and locked on, so callers normally pass `true` for it; the topology annotation,
//! when enabled, takes precedence over this field (see [`super::hints::plan_hints`]).

use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice, ForNode, ForZone};

use super::hints::SliceInfo;
use super::topology::endpoint_ready;

/// `core/v1` `ServiceTrafficDistributionPreferClose`.
pub const PREFER_CLOSE: &str = "PreferClose";
/// `core/v1` `ServiceTrafficDistributionPreferSameZone`.
pub const PREFER_SAME_ZONE: &str = "PreferSameZone";
/// `core/v1` `ServiceTrafficDistributionPreferSameNode`.
pub const PREFER_SAME_NODE: &str = "PreferSameNode";

/// Whether a Service's `trafficDistribution` is set and usable in this cluster (upstream
/// `Reconciler.validTrafficDistribution`): `PreferClose` always; `PreferSameZone` and
/// `PreferSameNode` only when `prefer_same_traffic_distribution` (the feature gate) is on.
/// Any other value counts as unset.
pub fn valid_traffic_distribution(traffic_distribution: Option<&str>, prefer_same_traffic_distribution: bool) -> bool {
    match traffic_distribution {
        Some(PREFER_CLOSE) => true,
        Some(PREFER_SAME_ZONE | PREFER_SAME_NODE) => prefer_same_traffic_distribution,
        _ => false,
    }
}

/// How hints are derived for one Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heuristic {
    /// Cluster-wide routing: no hints at all.
    Default,
    /// Same-zone hints for ready endpoints; with `node_hints`, same-node hints as well.
    PreferClose { node_hints: bool },
}

impl Heuristic {
    /// Whether a slice's hints differ from what [`Heuristic::update`] would write.
    fn needs_update(self, slice: &EndpointSlice) -> bool {
        match self {
            Heuristic::Default => slice.endpoints.iter().flatten().any(|e| e.hints.is_some()),
            Heuristic::PreferClose { node_hints } => {
                slice.endpoints.iter().flatten().filter(|e| endpoint_ready(e)).any(|e| {
                    let zones = e.hints.as_ref().and_then(|h| h.for_zones.as_deref());
                    let nodes = e.hints.as_ref().and_then(|h| h.for_nodes.as_deref());
                    let zone_wrong = match &e.zone {
                        // Want exactly [own zone]: missing or incorrect?
                        Some(zone) => !matches!(zones, Some([z]) if &z.name == zone),
                        // Want none: stale?
                        None => zones.is_some_and(|z| !z.is_empty()),
                    };
                    let node_wrong = match (&e.node_name, node_hints) {
                        (Some(node), true) => !matches!(nodes, Some([n]) if &n.name == node),
                        _ => nodes.is_some_and(|n| !n.is_empty()),
                    };
                    zone_wrong || node_wrong
                })
            }
        }
    }

    /// Rewrites the hints of a slice that is going to be written anyway.
    fn update(self, slice: &mut EndpointSlice) {
        match self {
            Heuristic::Default => {
                for e in slice.endpoints.iter_mut().flatten() {
                    e.hints = None;
                }
            }
            Heuristic::PreferClose { node_hints } => {
                // Not-ready endpoints are left exactly as they are.
                for e in slice.endpoints.iter_mut().flatten().filter(|e| endpoint_ready(e)) {
                    let for_zones = e.zone.as_ref().map(|z| vec![ForZone { name: z.clone() }]);
                    let for_nodes =
                        e.node_name.as_ref().filter(|_| node_hints).map(|n| vec![ForNode { name: n.clone() }]);
                    e.hints =
                        (for_zones.is_some() || for_nodes.is_some()).then_some(EndpointHints { for_zones, for_nodes });
                }
            }
        }
    }
}

/// Reconciles hints with `trafficDistribution` (upstream `trafficdist.ReconcileHints`).
///
/// - `PreferClose`, and `PreferSameZone` when `prefer_same_traffic_distribution`: each ready
///   endpoint gets `forZones: [own zone]`, or no hints when it has no zone.
/// - `PreferSameNode` when `prefer_same_traffic_distribution`: the same, plus
///   `forNodes: [own node]` whenever the endpoint has a `nodeName` (even without zone).
/// - Anything else (unset, unknown, or gated off): every hint is removed.
///
/// Not-ready endpoints are not touched by the first two. An unchanged slice moves to
/// `to_update` (edited) only if its hints differ from the wanted ones; the slices to create
/// and update are edited in place.
///
/// Difference from upstream: upstream's `ReconcileHints` accepts `PreferSameZone` and
/// `PreferSameNode` regardless of the gate and leaves the gate to its caller, which then
/// strips hints with `RemoveHintsFromSlices`. Here a gated-off value takes the "remove every
/// hint" branch directly, which has the same effect.
pub fn reconcile_hints<'a>(
    mut si: SliceInfo<'a>,
    traffic_distribution: Option<&str>,
    prefer_same_traffic_distribution: bool,
) -> SliceInfo<'a> {
    let heuristic = if valid_traffic_distribution(traffic_distribution, prefer_same_traffic_distribution) {
        Heuristic::PreferClose { node_hints: traffic_distribution == Some(PREFER_SAME_NODE) }
    } else {
        Heuristic::Default
    };

    let unchanged = std::mem::take(&mut si.unchanged);
    for slice in unchanged {
        if heuristic.needs_update(slice) {
            si.to_update.push(slice.clone());
        } else {
            si.unchanged.push(slice);
        }
    }
    for slice in si.to_create.iter_mut().chain(si.to_update.iter_mut()) {
        heuristic.update(slice);
    }
    si
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use proptest::prelude::*;

    /// An endpoint `10.0.0.<n>`, optionally in a zone, on `node-<n>`, ready or not.
    fn e(n: u32, zone: Option<&str>, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.0.0.{n}")],
            zone: zone.map(Into::into),
            node_name: Some(format!("node-{n}")),
            conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
            ..Default::default()
        }
    }

    fn with_hints(mut ep: Endpoint, zone: Option<&str>, node: bool) -> Endpoint {
        ep.hints = Some(EndpointHints {
            for_zones: zone.map(|z| vec![ForZone { name: z.into() }]),
            for_nodes: node.then(|| vec![ForNode { name: ep.node_name.clone().unwrap() }]),
        });
        ep
    }

    /// Same-zone hint (and same-node hint when `node`).
    fn close(ep: Endpoint, node: bool) -> Endpoint {
        let zone = ep.zone.clone();
        with_hints(ep, zone.as_deref(), node)
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice { endpoints: Some(endpoints), ..Default::default() }
    }

    /// A [`SliceInfo`] that owns its unchanged slices, for tables.
    #[derive(Clone, Debug, PartialEq)]
    struct Si {
        to_create: Vec<EndpointSlice>,
        to_update: Vec<EndpointSlice>,
        unchanged: Vec<EndpointSlice>,
    }

    fn si(to_create: Vec<EndpointSlice>, to_update: Vec<EndpointSlice>, unchanged: Vec<EndpointSlice>) -> Si {
        Si { to_create, to_update, unchanged }
    }

    /// [`reconcile_hints`] on an owned input. Also checks that the slices left unchanged are
    /// the input's own (borrowed, not copies), in order.
    fn reconcile_owned(input: Si, td: Option<&str>, gate: bool) -> Si {
        let si = SliceInfo {
            address_type: "IPv4".into(),
            to_create: input.to_create,
            to_update: input.to_update,
            unchanged: input.unchanged.iter().collect(),
        };
        let out = reconcile_hints(si, td, gate);
        let mut candidates = input.unchanged.iter();
        for kept in &out.unchanged {
            assert!(candidates.any(|c| std::ptr::eq(c, *kept)), "unchanged slice is not the input's");
        }
        Si {
            to_create: out.to_create,
            to_update: out.to_update,
            unchanged: out.unchanged.into_iter().cloned().collect(),
        }
    }

    /// The shared input of the first three cases: slicesToCreate [[1a,2b],[3a,4b]],
    /// slicesToUpdate [[5a,6a],[7b,8c]], all ready, each on its own node.
    fn zoned_input(hint: impl Fn(Endpoint) -> Endpoint) -> Si {
        let z = |n, zone| hint(e(n, Some(zone), true));
        si(
            vec![slice(vec![z(1, "zone-a"), z(2, "zone-b")]), slice(vec![z(3, "zone-a"), z(4, "zone-b")])],
            vec![slice(vec![z(5, "zone-a"), z(6, "zone-a")]), slice(vec![z(7, "zone-b"), z(8, "zone-c")])],
            vec![],
        )
    }

    /// Same shape without zones.
    fn zoneless_input(hint: impl Fn(Endpoint) -> Endpoint) -> Si {
        let z = |n| hint(e(n, None, true));
        si(
            vec![slice(vec![z(1), z(2)]), slice(vec![z(3), z(4)])],
            vec![slice(vec![z(5), z(6)]), slice(vec![z(7), z(8)])],
            vec![],
        )
    }

    /// TestReconcileHints (trafficdist_test.go): 9 cases, same tables.
    #[test]
    fn test_reconcile_hints() {
        let cases: Vec<(&str, Option<&str>, Si, Si)> = vec![
            (
                "should set zone hints with PreferClose",
                Some(PREFER_CLOSE),
                zoned_input(|e| e),
                zoned_input(|e| close(e, false)),
            ),
            (
                "should set zone hints with PreferSameZone",
                Some(PREFER_SAME_ZONE),
                zoned_input(|e| e),
                zoned_input(|e| close(e, false)),
            ),
            (
                "should set zone and node hints with PreferSameNode",
                Some(PREFER_SAME_NODE),
                zoned_input(|e| e),
                zoned_input(|e| close(e, true)),
            ),
            (
                "should correct incorrect hints with PreferClose",
                Some(PREFER_CLOSE),
                si(
                    vec![],
                    vec![slice(vec![with_hints(e(1, Some("zone-a"), true), Some("zone-b"), false)])],
                    vec![
                        slice(vec![with_hints(e(2, Some("zone-b"), true), Some("zone-c"), false)]),
                        slice(vec![e(3, Some("zone-c"), true)]),
                    ],
                ),
                si(
                    vec![],
                    vec![
                        slice(vec![close(e(1, Some("zone-a"), true), false)]),
                        slice(vec![close(e(2, Some("zone-b"), true), false)]),
                        slice(vec![close(e(3, Some("zone-c"), true), false)]),
                    ],
                    vec![],
                ),
            ),
            (
                "should not create hints with PreferClose if there are no zones",
                Some(PREFER_CLOSE),
                zoneless_input(|e| e),
                zoneless_input(|e| e),
            ),
            (
                "should create only node hints with PreferSameNode if there are no zones",
                Some(PREFER_SAME_NODE),
                zoneless_input(|e| e),
                zoneless_input(|e| with_hints(e, None, true)),
            ),
            (
                "unready endpoints should not trigger updates",
                Some(PREFER_CLOSE),
                si(vec![], vec![], vec![slice(vec![e(2, Some("zone-b"), false)])]),
                si(vec![], vec![], vec![slice(vec![e(2, Some("zone-b"), false)])]),
            ),
            (
                "should remove hints when trafficDistribution is unrecognized",
                Some("Unknown"),
                si(
                    vec![
                        slice(vec![close(e(1, Some("zone-a"), true), false), close(e(2, Some("zone-b"), true), false)]),
                        slice(vec![close(e(3, Some("zone-a"), true), false)]),
                    ],
                    vec![slice(vec![close(e(5, Some("zone-a"), true), false)])],
                    vec![],
                ),
                si(
                    vec![
                        slice(vec![e(1, Some("zone-a"), true), e(2, Some("zone-b"), true)]),
                        slice(vec![e(3, Some("zone-a"), true)]),
                    ],
                    vec![slice(vec![e(5, Some("zone-a"), true)])],
                    vec![],
                ),
            ),
            (
                "should remove hints when trafficDistribution is unset",
                None,
                si(
                    vec![],
                    vec![slice(vec![close(e(5, Some("zone-a"), true), false)])],
                    vec![slice(vec![close(e(6, Some("zone-b"), true), false)])],
                ),
                si(
                    vec![],
                    vec![slice(vec![e(5, Some("zone-a"), true)]), slice(vec![e(6, Some("zone-b"), true)])],
                    vec![],
                ),
            ),
        ];
        for (name, td, input, want) in cases {
            let got = reconcile_owned(input, td, true);
            assert_eq!(got.to_create, want.to_create, "{name}: slicesToCreate");
            assert_eq!(got.to_update, want.to_update, "{name}: slicesToUpdate");
            assert_eq!(got.unchanged, want.unchanged, "{name}: slicesUnchanged");
        }
    }

    /// TestReconcileHints_doesNotMutateUnchangedSlices. Ownership already rules out
    /// mutating the caller's cache; what remains checkable is that the slice needing hints
    /// is moved to `to_update` (upstream: a deep copy) and is not left in `unchanged`.
    #[test]
    fn test_reconcile_hints_does_not_mutate_unchanged_slices() {
        let original = slice(vec![e(1, Some("zone-a"), true)]);
        let got = reconcile_owned(si(vec![], vec![], vec![original.clone()]), Some(PREFER_CLOSE), true);
        assert!(got.unchanged.is_empty());
        assert_eq!(got.to_update, vec![slice(vec![close(e(1, Some("zone-a"), true), false)])]);
        assert_ne!(got.to_update[0], original);
    }

    #[test]
    fn gated_off_values_remove_hints() {
        for td in [PREFER_SAME_ZONE, PREFER_SAME_NODE] {
            let got = reconcile_owned(zoned_input(|e| close(e, true)), Some(td), false);
            assert_eq!(got, zoned_input(|e| e), "{td}");
        }
    }

    #[test]
    fn stale_node_hint_triggers_update_unless_prefer_same_node() {
        let node_hinted = || slice(vec![close(e(1, Some("zone-a"), true), true)]);
        let got = reconcile_owned(si(vec![], vec![], vec![node_hinted()]), Some(PREFER_CLOSE), true);
        assert_eq!(got.to_update, vec![slice(vec![close(e(1, Some("zone-a"), true), false)])]);
        let got = reconcile_owned(si(vec![], vec![], vec![node_hinted()]), Some(PREFER_SAME_NODE), true);
        assert_eq!(got.unchanged, vec![node_hinted()]);
        assert!(got.to_update.is_empty());
    }

    #[test]
    fn stale_zone_hint_without_zone_triggers_update() {
        let stale = slice(vec![with_hints(e(1, None, true), Some("zone-a"), false)]);
        let got = reconcile_owned(si(vec![], vec![], vec![stale]), Some(PREFER_CLOSE), true);
        assert_eq!(got.to_update, vec![slice(vec![e(1, None, true)])]);
    }

    #[test]
    fn test_valid_traffic_distribution() {
        let cases: &[(Option<&str>, bool, bool)] = &[
            (None, true, false),
            (Some("PreferClose"), false, true),
            (Some("PreferClose"), true, true),
            (Some("PreferSameZone"), false, false),
            (Some("PreferSameZone"), true, true),
            (Some("PreferSameNode"), false, false),
            (Some("PreferSameNode"), true, true),
            (Some("preferclose"), true, false),
            (Some(""), true, false),
        ];
        for (td, gate, want) in cases {
            assert_eq!(valid_traffic_distribution(*td, *gate), *want, "{td:?} {gate}");
        }
    }

    fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
        (
            0u32..50,
            prop::option::of(prop::sample::select(vec!["zone-a", "zone-b", ""])),
            any::<bool>(),
            prop::option::of((prop::option::of(prop::sample::select(vec!["zone-a", "zone-c"])), any::<bool>())),
        )
            .prop_map(|(n, zone, ready, hints)| {
                let ep = e(n, zone, ready);
                match hints {
                    Some((z, node)) => with_hints(ep, z, node),
                    None => ep,
                }
            })
    }

    fn arb_slices() -> impl Strategy<Value = Vec<EndpointSlice>> {
        prop::collection::vec(prop::collection::vec(arb_endpoint(), 0..5).prop_map(slice), 0..4)
    }

    proptest! {
        /// Reconciling is idempotent: feeding every written slice back as unchanged
        /// produces no further update, and slices that stay unchanged are untouched.
        #[test]
        fn prop_reconcile_hints_idempotent(
            create in arb_slices(), update in arb_slices(), unchanged in arb_slices(),
            td in prop::option::of(prop::sample::select(vec![
                PREFER_CLOSE, PREFER_SAME_ZONE, PREFER_SAME_NODE, "Other",
            ])),
            gate in any::<bool>(),
        ) {
            let first = reconcile_owned(si(create, update, unchanged.clone()), td, gate);
            for kept in &first.unchanged {
                prop_assert!(unchanged.contains(kept));
            }
            let all: Vec<EndpointSlice> = first.to_create.iter().chain(&first.to_update)
                .chain(&first.unchanged).cloned().collect();
            let second = reconcile_owned(si(vec![], vec![], all.clone()), td, gate);
            prop_assert!(second.to_update.is_empty());
            prop_assert_eq!(second.unchanged, all);
        }
    }
}
