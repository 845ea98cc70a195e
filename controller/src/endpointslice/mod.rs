//! The EndpointSlice controller's functional core.
//!
//! [`plan`] takes a snapshot (a Service, the pods it selects, the Nodes, the existing
//! EndpointSlices labelled with the Service's name, the last-change trigger time and the
//! topology-hints inputs) and returns a [`Plan`]: the slices to create, update and delete, plus
//! warnings, events, per-address-type counts for metrics and the Service's new hints state. No
//! client, no clock, no I/O, no async. The shell applies the plan (creates, then updates, then
//! deletes), records the events, and requeues the Service when [`Plan::requires_retry`].
//!
//! It reproduces upstream kube-controller-manager v1.37 (`k8s.io/endpointslice` reconciler,
//! utils, util/): which pods become endpoints ([`desired`]), the churn-minimising placement
//! with placeholders and delete recycling ([`reconcile`]), semantic equality so that slices
//! written by kube-controller-manager cause no writes ([`equality`]), labels and the
//! trigger-time annotation ([`labels`]), and the hints hook ([`hints`], [`topology`],
//! [`trafficdist`]).
//!
//! # DIFFERENCES
//!
//! Deliberate differences from upstream, each with its reason:
//!
//! 1. **Deterministic slice names instead of `generateName`.** New slices are named
//!    `<service name, truncated so the whole name is ≤ 63 chars>-<suffix>`, the suffix an
//!    8-character base-36 hash of (Service UID, address type, ordinal), with the first ordinal
//!    whose name no slice in the snapshot uses ([`naming`]). With a stale informer cache the
//!    planner re-plans the *same* name and the apiserver answers `409 AlreadyExists` instead of
//!    creating a duplicate slice; stale updates already fail with `409 Conflict` (they carry the
//!    cached resourceVersion) and stale deletes with `404` (harmless). This replaces upstream's
//!    generation tracker as the guard against duplicates. Existing slices keep their names.
//! 2. **Recycled updates carry the recycled slice's resourceVersion.** When a planned create is
//!    turned into an update of a slice that would be deleted, upstream PUTs a fresh object
//!    without resourceVersion (an unconditional update); we copy the resourceVersion so every
//!    update is conditional.
//! 3. **Deterministic placement.** Upstream picks endpoints and slices in Go map order. Here
//!    existing slices are walked in name order, desired endpoints are placed in identity order
//!    (sorted addresses, hostname, pod namespace/name), address types IPv4 before IPv6. Every
//!    outcome is one upstream can produce; upstream's tests assert counts and lengths only.
//! 4. **Port order of new slices is Service order.** Upstream sorts ports in place by their
//!    hash. Port lists are compared as multisets everywhere, so this never causes a rewrite of
//!    slices upstream wrote.
//! 5. **Unparseable pod IPs are skipped and reported** ([`PlanWarning::InvalidPodIp`]). Upstream
//!    writes the text `<nil>` as an IPv4 address and the apiserver rejects the whole write.
//! 6. **Objects without apiserver defaults**: a missing `protocol` counts as `TCP` and a missing
//!    `targetPort` as the Service `port` (the apiserver defaults); upstream would compare against
//!    the empty protocol / port 0.
//! 7. **A missing Node is reported once per pod** ([`PlanWarning::NodeNotFound`]); upstream adds
//!    one error per address type.
//! 8. **Metrics counts are per address type** ([`AddressTypeStats`]). Upstream's metrics cache
//!    is keyed by Service, so for dual-stack Services the last address type processed
//!    overwrites the other's counts.
//! 9. **`max_endpoints_per_slice` is clamped to 1..=1000** (kube-controller-manager rejects other
//!    values at start-up).
//!
//! Not differences, but worth knowing: the core itself applies the filters upstream's
//! `syncService` applies with listers (ExternalName and selector-less Services are skipped;
//! only slices in the Service's namespace labelled with its name and this controller's
//! managed-by value are considered; slices with a deletion timestamp are ignored; pods are
//! restricted to those the selector matches), so the shell may pass supersets.

pub mod desired;
pub mod equality;
pub mod hints;
pub mod labels;
pub mod naming;
pub mod reconcile;
pub mod topology;
pub mod trafficdist;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::pod::CachedPod;

pub use desired::{DesiredEndpoint, DesiredEndpoints, DesiredPortSet, NodeLookup, PortSet, desired_endpoints};
pub use equality::PortMapKey;
pub use hints::{EventType, SliceInfo};
pub use labels::DEFAULT_MANAGED_BY;
pub use topology::{CpuRatios, ServiceHintsState};

use crate::podutil::IpFamily;

/// An Event to record on the Service (from the hints step).
pub type PlanEvent = hints::HintsEvent;

/// Default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Largest allowed `--max-endpoints-per-slice` (the API's limit on endpoints per slice).
pub const MAX_MAX_ENDPOINTS_PER_SLICE: usize = 1000;

/// Controller settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--max-endpoints-per-slice`: 1..=1000 (clamped), default 100.
    pub max_endpoints_per_slice: usize,
    /// The value of the `endpointslice.kubernetes.io/managed-by` label this controller writes
    /// and owns. Default `endpointslice-controller.k8s.io`, so slices written by
    /// kube-controller-manager are taken over in place.
    pub managed_by: String,
    /// The `PreferSameTrafficDistribution` feature gate: whether `PreferSameZone` and
    /// `PreferSameNode` are usable `trafficDistribution` values. GA and locked on since v1.35,
    /// so default `true`.
    pub prefer_same_traffic_distribution: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            managed_by: DEFAULT_MANAGED_BY.to_owned(),
            prefer_same_traffic_distribution: true,
        }
    }
}

impl Config {
    /// The effective maximum: `max_endpoints_per_slice` clamped to 1..=1000.
    pub fn max_endpoints(&self) -> usize {
        self.max_endpoints_per_slice.clamp(1, MAX_MAX_ENDPOINTS_PER_SLICE)
    }
}

/// The snapshot one plan is computed from.
pub struct Input<'a> {
    /// The Service.
    pub service: &'a Service,
    /// The pods of the Service's namespace that its selector matches, in any state. A superset
    /// is fine: pods in other namespaces or not matching the selector are ignored.
    pub pods: &'a [&'a CachedPod],
    /// The Node cache, to look up each pod's zone.
    pub nodes: &'a dyn NodeLookup,
    /// Every EndpointSlice labelled `kubernetes.io/service-name=<service>` in the namespace,
    /// managed by anyone, including slices pending deletion. Only this controller's are
    /// planned; all of them reserve their names.
    pub existing_slices: &'a [&'a EndpointSlice],
    /// The last-change trigger time (upstream `TriggerTimeTracker`, computed by the shell);
    /// `None` removes the annotation from written slices.
    pub trigger_time: Option<DateTime<Utc>>,
    /// The cluster's node CPU ratios for topology-aware hints; `None` models a controller
    /// without a topology cache.
    pub topology: Option<&'a CpuRatios>,
    /// The Service's hints state left by its previous sync (`None`: never synced).
    pub hints_state: Option<&'a ServiceHintsState>,
}

impl<'a> Input<'a> {
    /// An input without trigger time, topology or hints state.
    pub fn new(
        service: &'a Service,
        pods: &'a [&'a CachedPod],
        nodes: &'a dyn NodeLookup,
        existing_slices: &'a [&'a EndpointSlice],
    ) -> Self {
        Input { service, pods, nodes, existing_slices, trigger_time: None, topology: None, hints_state: None }
    }
}

/// Something the shell should log; [`PlanWarning::requires_retry`] ones also require a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanWarning {
    /// The pod's Node is not in the cache and the Service does not publish not-ready
    /// addresses: the pod was left out and the Service must be retried (upstream returns an
    /// error, records `FailedToUpdateEndpointSlices` and requeues, after applying the rest).
    NodeNotFound {
        /// `namespace/name` of the Service.
        service: String,
        /// The pod's name.
        pod: String,
        /// The pod's `spec.nodeName` (possibly empty).
        node: String,
    },
    /// An entry of the pod's `status.podIPs` does not parse as an IP address; it was ignored.
    InvalidPodIp {
        /// `namespace/name` of the Service.
        service: String,
        /// The pod's name.
        pod: String,
        /// The offending text.
        ip: String,
    },
}

impl PlanWarning {
    /// True if the Service must be synced again later even though the plan was applied.
    pub fn requires_retry(&self) -> bool {
        matches!(self, PlanWarning::NodeNotFound { .. })
    }
}

impl std::fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanWarning::NodeNotFound { service, pod, node } => {
                write!(f, "skipping Pod {pod} for Service {service}: Node {node} Not Found")
            }
            PlanWarning::InvalidPodIp { service, pod, ip } => {
                write!(f, "ignoring invalid IP {ip:?} of Pod {pod} for Service {service}")
            }
        }
    }
}

/// Why a Service gets no plan at all (upstream `syncService` returns early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// `spec.type: ExternalName` (issue #105986). Existing slices are left alone.
    ExternalName,
    /// No `spec.selector`: endpoints are managed out of band (users, mirroring controller).
    NoSelector,
}

/// Counts of one port set, for the `desired_endpoint_slices` / `num_endpoint_slices` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortSetStats {
    /// Desired endpoints in this port set.
    pub endpoints: usize,
    /// Slices of this port set once the plan is applied (a placeholder counts as 1).
    pub slices: usize,
}

/// Per-address-type counts for metrics (upstream's `ServicePortCache` plus the per-sync
/// histograms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressTypeStats {
    /// `IPv4` or `IPv6`.
    pub address_type: String,
    /// Desired endpoints (`endpoints_desired`).
    pub desired_endpoints: usize,
    /// Endpoints added this sync (`endpoints_added_per_sync`).
    pub endpoints_added: usize,
    /// Endpoints removed this sync (`endpoints_removed_per_sync`).
    pub endpoints_removed: usize,
    /// Slices once the plan is applied (`num_endpoint_slices`).
    pub actual_slices: usize,
    /// Slices with perfect packing, at least 1 (`desired_endpoint_slices`).
    pub desired_slices: usize,
    /// Per port set.
    pub port_sets: Vec<PortSetStats>,
}

impl AddressTypeStats {
    fn new(
        address_type: &str,
        desired_endpoints: usize,
        endpoints_added: usize,
        endpoints_removed: usize,
        port_sets: BTreeMap<PortMapKey, PortSetStats>,
        max: usize,
    ) -> Self {
        let port_sets: Vec<PortSetStats> = port_sets.into_values().collect();
        let actual_slices = port_sets.iter().map(|p| p.slices).sum();
        let desired_slices = port_sets.iter().map(|p| p.endpoints.div_ceil(max.max(1))).sum::<usize>().max(1);
        AddressTypeStats {
            address_type: address_type.to_owned(),
            desired_endpoints,
            endpoints_added,
            endpoints_removed,
            actual_slices,
            desired_slices,
            port_sets,
        }
    }
}

/// What to write for one Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Slices to POST. Each has a deterministic name (see [`naming`]); a `409 AlreadyExists`
    /// means the cache is stale.
    pub create: Vec<EndpointSlice>,
    /// Slices to PUT. Each carries the existing slice's name and resourceVersion.
    pub update: Vec<EndpointSlice>,
    /// Slices to DELETE (`404` counts as success).
    pub delete: Vec<EndpointSlice>,
    /// Things to log; some require a retry.
    pub warnings: Vec<PlanWarning>,
    /// Events to record on the Service (topology hints).
    pub events: Vec<PlanEvent>,
    /// Per address type counts, for metrics.
    pub stats: Vec<AddressTypeStats>,
    /// The Service's hints state after this sync; the shell stores it for the next one.
    pub hints_state: ServiceHintsState,
    /// Set when the Service is not handled at all.
    pub skipped: Option<Skipped>,
}

impl Plan {
    /// True if there is nothing to write.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }

    /// Number of writes (`endpointslices_changed_per_sync`).
    pub fn num_writes(&self) -> usize {
        self.create.len() + self.update.len() + self.delete.len()
    }

    /// True if the Service must be synced again after applying this plan.
    pub fn requires_retry(&self) -> bool {
        self.warnings.iter().any(PlanWarning::requires_retry)
    }
}

fn is_ours(slice: &EndpointSlice, service: &Service, config: &Config) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    slice.metadata.namespace.as_deref().unwrap_or("") == service.metadata.namespace.as_deref().unwrap_or("")
        && label(labels::LABEL_SERVICE_NAME) == Some(service.metadata.name.as_deref().unwrap_or(""))
        && label(labels::LABEL_MANAGED_BY) == Some(config.managed_by.as_str())
}

/// Computes the write plan for one Service (upstream `syncService` after the listers, and
/// `Reconciler.Reconcile`).
///
/// Never panics on objects the apiserver accepts (nor on most it does not).
pub fn plan(input: &Input<'_>, config: &Config) -> Plan {
    let service = input.service;
    let mut plan = Plan { hints_state: input.hints_state.cloned().unwrap_or_default(), ..Default::default() };
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        plan.skipped = Some(Skipped::ExternalName);
        return plan;
    }
    if spec.and_then(|s| s.selector.as_ref()).is_none() {
        plan.skipped = Some(Skipped::NoSelector);
        return plan;
    }

    let ctx = reconcile::Ctx { service, managed_by: &config.managed_by, max: config.max_endpoints() };

    // This controller's slices, not pending deletion, in name order.
    let mut ours: Vec<&EndpointSlice> = input
        .existing_slices
        .iter()
        .copied()
        .filter(|s| s.metadata.deletion_timestamp.is_none() && is_ours(s, service, config))
        .collect();
    ours.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let desired = desired_endpoints(service, input.pods, input.nodes);
    plan.warnings = desired.warnings;

    // Slices of address types the Service no longer supports go away.
    let mut by_type: BTreeMap<IpFamily, Vec<&EndpointSlice>> =
        desired.address_types.iter().map(|f| (*f, Vec::new())).collect();
    let mut unsupported = Vec::new();
    for slice in ours {
        match IpFamily::from_api(&slice.address_type).and_then(|f| by_type.get_mut(&f)) {
            Some(list) => list.push(slice),
            None => {
                if input.topology.is_some() {
                    plan.hints_state = std::mem::take(&mut plan.hints_state).remove_hints(&slice.address_type);
                }
                unsupported.push(slice.clone());
            }
        }
    }

    let mut by_address_type = desired.by_address_type;
    for (family, existing) in &by_type {
        let sets = by_address_type.remove(family).unwrap_or_default();
        let outcome = reconcile::reconcile_address_type(&ctx, *family, existing, sets);
        plan.stats.push(outcome.stats);

        let hinted = hints::plan_hints(
            outcome.info,
            service,
            config.prefer_same_traffic_distribution,
            input.topology,
            &plan.hints_state,
        );
        plan.events.extend(hinted.events);
        plan.hints_state = hinted.state;

        let (create, update, delete) = reconcile::finalize(
            service,
            hinted.slices.to_create,
            hinted.slices.to_update,
            outcome.delete,
            input.trigger_time.as_ref(),
        );
        plan.create.extend(create);
        plan.update.extend(update);
        plan.delete.extend(delete);
    }
    plan.delete.extend(unsupported);

    // Name the new slices: the first free ordinal per address type.
    let mut used: BTreeSet<String> = input.existing_slices.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let service_name = service.metadata.name.as_deref().unwrap_or("");
    let service_uid = service.metadata.uid.as_deref().unwrap_or("");
    for slice in &mut plan.create {
        let name = naming::first_free_slice_name(service_name, service_uid, &slice.address_type, &used);
        used.insert(name.clone());
        slice.metadata.name = Some(name);
    }
    plan
}
