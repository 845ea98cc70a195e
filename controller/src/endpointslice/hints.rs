//! The interface between the reconcile planner and the two hint stages: topology-aware hints
//! (`service.kubernetes.io/topology-mode: Auto`, [`super::topology`]) and
//! `spec.trafficDistribution` ([`super::trafficdist`]).
//!
//! The planner computes, per Service and address type, which EndpointSlices it will create,
//! update or leave unchanged, and hands them over as a [`SliceInfo`]. [`plan_hints`] then does
//! what upstream `Reconciler.reconcileByAddressType` does between planning and `finalize`
//! (`k8s.io/endpointslice` v0.37.1, reconciler.go): it picks the topology or the
//! trafficDistribution path, edits hints, may move unchanged slices into the update list,
//! and returns the events to record on the Service together with the Service's new
//! [`ServiceHintsState`], which the shell keeps between syncs.
//!
//! Everything here is pure: no client, no clock, no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::topology::{
    self, CpuRatios, REASON_TOPOLOGY_AWARE_HINTS_DISABLED, ServiceHintsState, TOPOLOGY_AWARE_HINTS_DISABLED,
};
use super::trafficdist;

/// The slices of one Service and one address type, as the planner has sorted them.
///
/// Port of upstream `topologycache.SliceInfo` without `ServiceKey`: the per-Service state
/// that upstream keys by it is passed explicitly instead (see [`ServiceHintsState`]).
/// `unchanged` holds the existing slices that are neither updated nor deleted (upstream
/// `unchangedSlices(existing, toUpdate, toDelete)`); the hint stages may move some of them,
/// edited, into `to_update`.
///
/// `unchanged` slices are borrowed from the snapshot: most syncs leave most slices alone,
/// and copying them (thousands of endpoints) would dominate the planner's cost. A hint stage
/// that must edit one copies it into `to_update`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceInfo<'a> {
    /// `IPv4`, `IPv6` or `FQDN`; only used in event messages and as the state key.
    pub address_type: String,
    pub to_create: Vec<EndpointSlice>,
    pub to_update: Vec<EndpointSlice>,
    pub unchanged: Vec<&'a EndpointSlice>,
}

/// The `type` of a Kubernetes Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    /// `"Normal"` or `"Warning"`, as in `core/v1` `EventTypeNormal` / `EventTypeWarning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An Event to record on the Service (port of upstream `topologycache.EventBuilder`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintsEvent {
    pub event_type: EventType,
    /// `TopologyAwareHintsEnabled` or `TopologyAwareHintsDisabled`.
    pub reason: &'static str,
    /// Upstream's message, suffixed with `, addressType: <type>`.
    pub message: String,
}

/// The result of a hint stage for one Service and address type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HintsOutcome<'a> {
    /// The slices to write. `to_create` and `to_update` carry the final hints; `unchanged`
    /// are the slices that still need no write.
    pub slices: SliceInfo<'a>,
    /// Events to record on the Service, in order.
    pub events: Vec<HintsEvent>,
    /// The Service's topology state after this sync. The shell stores it under the
    /// Service's key, or drops the entry when [`ServiceHintsState::is_empty`].
    pub state: ServiceHintsState,
}

/// Applies the hint policy of upstream `reconcileByAddressType` to one address type.
///
/// - `topology`: the cluster's node CPU ratios ([`CpuRatios::from_nodes`]), or `None` to
///   model a Reconciler without a topology cache (upstream `topologyCache == nil`; the
///   v1.37 controller always has one).
/// - `prefer_same_traffic_distribution`: the `PreferSameTrafficDistribution` feature gate
///   (GA and locked on in v1.35+), which makes `PreferSameZone` and `PreferSameNode` usable.
/// - `state`: what this Service's previous syncs left behind (`Default` for a new Service).
///
/// Behaviour, as upstream:
/// - topology hints enabled ([`topology::hints_enabled`]) and a topology cache present:
///   [`topology::add_hints`]; `trafficDistribution` is ignored;
/// - otherwise: if hints were populated for this Service, emit the Warning
///   `TopologyAwareHintsDisabled` ("Topology Aware Hints has been disabled, addressType: …")
///   and forget this address type's allocation; then, if `trafficDistribution` is usable
///   ([`trafficdist::valid_traffic_distribution`]) run [`trafficdist::reconcile_hints`],
///   else strip every hint ([`topology::remove_hints_from_slices`]).
pub fn plan_hints<'a>(
    si: SliceInfo<'a>,
    service: &Service,
    prefer_same_traffic_distribution: bool,
    topology: Option<&CpuRatios>,
    state: &ServiceHintsState,
) -> HintsOutcome<'a> {
    let annotations = service.metadata.annotations.as_ref();
    let traffic_distribution = service.spec.as_ref().and_then(|spec| spec.traffic_distribution.as_deref());
    let hints_on = topology::hints_enabled(annotations);
    let can_use_traffic_distribution =
        !hints_on && trafficdist::valid_traffic_distribution(traffic_distribution, prefer_same_traffic_distribution);

    if let (Some(ratios), true) = (topology, hints_on) {
        return topology::add_hints(si, ratios, state);
    }

    let mut events = Vec::new();
    let mut state = state.clone();
    if topology.is_some() {
        if state.hints_populated {
            events.push(HintsEvent {
                event_type: EventType::Warning,
                reason: REASON_TOPOLOGY_AWARE_HINTS_DISABLED,
                message: topology::format_with_address_type(TOPOLOGY_AWARE_HINTS_DISABLED, &si.address_type),
            });
        }
        state = state.remove_hints(&si.address_type);
    }

    let slices = if can_use_traffic_distribution {
        trafficdist::reconcile_hints(si, traffic_distribution, prefer_same_traffic_distribution)
    } else {
        topology::remove_hints_from_slices(si)
    };
    HintsOutcome { slices, events, state }
}

/// The `topology` label of `endpoint_slice_controller_endpointslices_changed_per_sync`:
/// `"Auto"` when the topology path is taken, else `"Disabled"`.
pub fn topology_metric_label(
    annotations: Option<&BTreeMap<String, String>>,
    topology_cache_enabled: bool,
) -> &'static str {
    if topology_cache_enabled && topology::hints_enabled(annotations) { "Auto" } else { "Disabled" }
}

/// The `traffic_distribution` label of `endpointslices_changed_per_sync`, and the Service's
/// bucket in `services_count_by_traffic_distribution`: the value when it is usable and
/// topology hints are off, else `None` (upstream's empty label / no bucket).
pub fn traffic_distribution_metric_label<'a>(
    annotations: Option<&BTreeMap<String, String>>,
    traffic_distribution: Option<&'a str>,
    prefer_same_traffic_distribution: bool,
) -> Option<&'a str> {
    if topology::hints_enabled(annotations) {
        return None;
    }
    traffic_distribution
        .filter(|td| trafficdist::valid_traffic_distribution(Some(td), prefer_same_traffic_distribution))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Hint-level ports of upstream reconciler_test.go `TestReconcileTopology` and
    //! `TestReconcile_TrafficDistribution` (the planner owns the client/metrics parts).

    use super::*;
    use crate::endpointslice::topology::{DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS, LABEL_TOPOLOGY_ZONE};
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointHints, ForNode, ForZone};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, zone: &str, cpu: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(LABEL_TOPOLOGY_ZONE.to_string(), zone.to_string())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                allocatable: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ep(ip: &str, zone: &str, node: &str) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            zone: Some(zone.into()),
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
            ..Default::default()
        }
    }

    fn slice(name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ..Default::default()
        }
    }

    fn service(annotation: &str, td: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("foo".into()),
                namespace: Some("testing".into()),
                annotations: Some(
                    [(DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS.to_string(), annotation.to_string())].into(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec { traffic_distribution: td.map(Into::into), ..Default::default() }),
            ..Default::default()
        }
    }

    /// 3 zones × 10 nodes of 100m (TestReconcileTopology).
    fn thirty_nodes() -> Vec<Node> {
        let mut nodes = Vec::new();
        for zone in ["zone-a", "zone-b", "zone-c"] {
            for j in 0..10 {
                nodes.push(node(&format!("node-{zone}-{j}"), zone, "100m"));
            }
        }
        nodes
    }

    /// Pod `i*100+j` runs on node `j` of zone `i` (TestReconcileTopology).
    fn topo_ep(pod: usize) -> Endpoint {
        let zone = ["zone-a", "zone-b", "zone-c"][pod / 10];
        ep(&format!("10.0.{}.{}", pod / 10, pod % 10), zone, &format!("node-{zone}-{}", pod % 10))
    }

    /// (hints by zone, cross-zone hints, endpoints without zone hint) over create+update+unchanged.
    fn hint_counts(si: &SliceInfo<'_>) -> (BTreeMap<String, usize>, usize, usize) {
        let mut by_zone = BTreeMap::new();
        let (mut cross, mut none) = (0, 0);
        for s in si.to_create.iter().chain(&si.to_update).chain(si.unchanged.iter().copied()) {
            for e in s.endpoints.iter().flatten() {
                match e.hints.as_ref().and_then(|h| h.for_zones.as_ref()).map(Vec::as_slice) {
                    Some([z]) => {
                        *by_zone.entry(z.name.clone()).or_default() += 1;
                        if e.zone.as_deref() != Some(z.name.as_str()) {
                            cross += 1;
                        }
                    }
                    _ => none += 1,
                }
            }
        }
        (by_zone, cross, none)
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(z, n)| (z.to_string(), *n)).collect()
    }

    #[test]
    fn reconcile_topology_no_topology_cache_strips_hints() {
        // "no change, topologyCache disabled, annotation == auto"
        let existing = [slice("zone-c", vec![topo_ep(27), topo_ep(28), topo_ep(29)])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(si.clone(), &service("auto", None), true, None, &Default::default());
        assert_eq!(out.slices, si, "no hints, no update");
        assert!(out.events.is_empty());
        assert!(out.state.is_empty());
    }

    #[test]
    fn reconcile_topology_enabling() {
        // "enabling topologyCache, hintsAnnotation == auto"
        let ratios = CpuRatios::from_nodes(&thirty_nodes());
        let existing = [slice("zone-c", vec![topo_ep(27), topo_ep(28), topo_ep(29)])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(si, &service("auto", None), true, Some(&ratios), &Default::default());
        assert_eq!(out.slices.to_update.len(), 1);
        assert!(out.slices.to_create.is_empty() && out.slices.unchanged.is_empty());
        let (by_zone, cross, none) = hint_counts(&out.slices);
        assert_eq!(by_zone, counts(&[("zone-a", 1), ("zone-b", 1), ("zone-c", 1)]));
        assert_eq!((cross, none), (2, 0));
        assert_eq!(
            out.events,
            vec![HintsEvent {
                event_type: EventType::Normal,
                reason: "TopologyAwareHintsEnabled",
                message: "Topology Aware Hints has been enabled, addressType: IPv4".into(),
            }]
        );
        assert!(out.state.hints_populated);
    }

    #[test]
    fn reconcile_topology_ratio_beyond_threshold() {
        // "topology enabled, hintsAnnotation==auto, ratio beyond threshold": 4 endpoints in 3
        // equal zones need a minimum of 2 each.
        let ratios = CpuRatios::from_nodes(&thirty_nodes());
        let existing = [slice("zone-a-c", vec![topo_ep(5), topo_ep(6), topo_ep(25), topo_ep(26)])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(si.clone(), &service("auto", None), true, Some(&ratios), &Default::default());
        assert_eq!(out.slices, si, "no hints and no update");
        assert_eq!(out.events.len(), 1);
        assert_eq!(
            out.events[0].message,
            "Unable to allocate minimum required endpoints to each zone without exceeding \
             overload threshold (4 endpoints, 3 zones), addressType: IPv4"
        );
    }

    #[test]
    fn reconcile_topology_more_slices_and_endpoints() {
        // "topology enabled, hintsAnnotation==Auto, more slices and endpoints"
        let ratios = CpuRatios::from_nodes(&thirty_nodes());
        let existing = [
            slice("zone-a-c", vec![topo_ep(5), topo_ep(6), topo_ep(25), topo_ep(26)]),
            slice("zone-a-b", vec![topo_ep(7), topo_ep(8), topo_ep(16), topo_ep(17), topo_ep(18)]),
        ];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(si, &service("Auto", None), true, Some(&ratios), &Default::default());
        assert_eq!(out.slices.to_update.len(), 2);
        let (by_zone, cross, none) = hint_counts(&out.slices);
        assert_eq!(by_zone, counts(&[("zone-a", 3), ("zone-b", 3), ("zone-c", 3)]));
        assert_eq!((cross, none), (1, 0));
    }

    #[test]
    fn reconcile_topology_annotation_disabled() {
        // "topology enabled, hintsAnnotation==disabled, more slices and endpoints"
        let ratios = CpuRatios::from_nodes(&thirty_nodes());
        let existing = [slice("zone-a-c", vec![topo_ep(5), topo_ep(6), topo_ep(25), topo_ep(26)])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(si.clone(), &service("disabled", None), true, Some(&ratios), &Default::default());
        assert_eq!(out.slices, si);
        assert!(out.events.is_empty());
    }

    #[test]
    fn turning_annotation_off_emits_disabled_once_and_strips_hints() {
        let ratios = CpuRatios::from_nodes(&thirty_nodes());
        let existing = [slice("zone-c", vec![topo_ep(27), topo_ep(28), topo_ep(29)])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let on = plan_hints(si, &service("Auto", None), true, Some(&ratios), &Default::default());
        let hinted = SliceInfo {
            address_type: "IPv4".into(),
            unchanged: on.slices.to_update.iter().collect(),
            ..Default::default()
        };
        let off = plan_hints(hinted.clone(), &service("Disabled", None), true, Some(&ratios), &on.state);
        assert_eq!(
            off.events,
            vec![HintsEvent {
                event_type: EventType::Warning,
                reason: "TopologyAwareHintsDisabled",
                message: "Topology Aware Hints has been disabled, addressType: IPv4".into(),
            }]
        );
        assert!(off.state.is_empty());
        assert_eq!(off.slices.to_update.len(), 1);
        assert_eq!(hint_counts(&off.slices).2, 3, "all hints removed");
        // A second sync with the returned state emits nothing more.
        let again = plan_hints(hinted, &service("Disabled", None), true, Some(&ratios), &off.state);
        assert!(again.events.is_empty());
    }

    /// TestReconcile_TrafficDistribution topology: node-0/zone-a {pod-0},
    /// node-1/zone-b {pod-1..3}, node-2/zone-c {pod-4, pod-5}; one new slice.
    fn td_case(
        td: Option<&str>,
        annotation: &str,
        prefer_same: bool,
    ) -> (HintsOutcome<'static>, BTreeMap<String, usize>) {
        let nodes: Vec<Node> =
            (0..3).map(|i| node(&format!("node-{i}"), &format!("zone-{}", ['a', 'b', 'c'][i]), "100m")).collect();
        let ratios = CpuRatios::from_nodes(&nodes);
        let placement = [0usize, 1, 1, 1, 2, 2];
        let endpoints = placement
            .iter()
            .enumerate()
            .map(|(pod, &n)| {
                ep(&format!("10.0.0.{pod}"), &format!("zone-{}", ['a', 'b', 'c'][n]), &format!("node-{n}"))
            })
            .collect();
        let si = SliceInfo { address_type: "IPv4".into(), to_create: vec![slice("", endpoints)], ..Default::default() };
        let out = plan_hints(si, &service(annotation, td), prefer_same, Some(&ratios), &Default::default());
        let mut by_node = BTreeMap::new();
        for e in out.slices.to_create[0].endpoints.iter().flatten() {
            if let Some(nodes) = e.hints.as_ref().and_then(|h| h.for_nodes.as_ref()) {
                for n in nodes {
                    *by_node.entry(n.name.clone()).or_default() += 1;
                }
            }
        }
        (out, by_node)
    }

    #[test]
    fn traffic_distribution_prefer_close_topology_disabled() {
        let (out, by_node) = td_case(Some("PreferClose"), "Disabled", false);
        let (by_zone, cross, none) = hint_counts(&out.slices);
        assert_eq!(by_zone, counts(&[("zone-a", 1), ("zone-b", 3), ("zone-c", 2)]));
        assert_eq!((cross, none), (0, 0));
        assert!(by_node.is_empty());
        assert!(out.events.is_empty());
    }

    #[test]
    fn traffic_distribution_prefer_close_topology_auto_takes_precedence() {
        let (out, _) = td_case(Some("PreferClose"), "Auto", false);
        let (by_zone, cross, none) = hint_counts(&out.slices);
        assert_eq!(by_zone, counts(&[("zone-a", 2), ("zone-b", 2), ("zone-c", 2)]));
        assert_eq!((cross, none), (1, 0));
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].reason, "TopologyAwareHintsEnabled");
    }

    #[test]
    fn traffic_distribution_nil_topology_empty() {
        let (out, _) = td_case(None, "", false);
        assert_eq!(hint_counts(&out.slices).2, 6, "no hints");
    }

    #[test]
    fn traffic_distribution_prefer_same_node_gate_enabled() {
        let (out, by_node) = td_case(Some("PreferSameNode"), "Disabled", true);
        let (by_zone, cross, _) = hint_counts(&out.slices);
        assert_eq!(by_zone, counts(&[("zone-a", 1), ("zone-b", 3), ("zone-c", 2)]));
        assert_eq!(cross, 0);
        assert_eq!(by_node, counts(&[("node-0", 1), ("node-1", 3), ("node-2", 2)]));
    }

    #[test]
    fn traffic_distribution_prefer_same_zone_gate_disabled() {
        let (out, _) = td_case(Some("PreferSameZone"), "Disabled", false);
        assert_eq!(hint_counts(&out.slices).2, 6, "no hints");
    }

    #[test]
    fn traffic_distribution_keeps_existing_hints_without_stripping_first() {
        // When trafficDistribution is usable the hints are not stripped first: an unchanged
        // slice with correct hints stays unchanged.
        let mut e = ep("10.0.0.1", "zone-a", "node-1");
        e.hints = Some(EndpointHints {
            for_zones: Some(vec![ForZone { name: "zone-a".into() }]),
            for_nodes: Some(vec![ForNode { name: "node-1".into() }]),
        });
        let existing = [slice("a", vec![e])];
        let si = SliceInfo { address_type: "IPv4".into(), unchanged: existing.iter().collect(), ..Default::default() };
        let out = plan_hints(
            si.clone(),
            &service("", Some("PreferSameNode")),
            true,
            Some(&CpuRatios::default()),
            &Default::default(),
        );
        assert_eq!(out.slices, si);
    }

    #[test]
    fn metric_labels() {
        let auto: BTreeMap<String, String> =
            [("service.kubernetes.io/topology-mode".to_string(), "Auto".to_string())].into();
        assert_eq!(topology_metric_label(Some(&auto), true), "Auto");
        assert_eq!(topology_metric_label(Some(&auto), false), "Disabled");
        assert_eq!(topology_metric_label(None, true), "Disabled");
        assert_eq!(traffic_distribution_metric_label(None, Some("PreferClose"), false), Some("PreferClose"));
        assert_eq!(traffic_distribution_metric_label(Some(&auto), Some("PreferClose"), true), None);
        assert_eq!(traffic_distribution_metric_label(None, Some("PreferSameNode"), false), None);
        assert_eq!(traffic_distribution_metric_label(None, Some("PreferSameNode"), true), Some("PreferSameNode"));
        assert_eq!(traffic_distribution_metric_label(None, Some("Bogus"), true), None);
    }
}
