//! The EndpointSlice mirroring controller's functional core.
//!
//! Custom Endpoints of selector-less Services are mirrored to EndpointSlices. [`plan`] takes a
//! snapshot (the Endpoints, its Service if any, the existing slices labelled with its name) and
//! returns a [`Plan`]: slices to create, update and delete, Events to record on the Endpoints,
//! log warnings and metric counts. No client, no clock, no I/O. The shell applies the plan
//! (creates, updates, deletes, in that order), records the events and feeds [`Plan::stats`] to
//! the `endpoint_slice_mirroring_controller_*` metrics (see [`metrics::MetricsCache`]).
//!
//! It reproduces upstream kube-controller-manager v1.37
//! (`pkg/controller/endpointslicemirroring`):
//!
//! - **Whether to mirror** ([`should_mirror`]): the Endpoints lacks the label
//!   `endpointslice.kubernetes.io/skip-mirror=true` and the leader-election annotation, and a
//!   Service of the same name exists with no selector. ExternalName Services are *not*
//!   excluded (upstream does not check the type). Otherwise every mirrored slice is deleted.
//! - **Desired state** ([`desired`]): the subsets are repacked into canonical form
//!   ([`repack`]); per subset at most `max_endpoints_per_subset` valid addresses are mirrored,
//!   ready ones first; invalid IPs are skipped. One slice per (address type, port set).
//! - **Per-key plan** ([`reconcile`]): keep one slice per key, leave it alone when it already
//!   has the desired endpoints, labels and annotations, else rewrite it; delete the others and
//!   the slices of keys no longer desired; recycle deletes into updates. No placeholders.
//! - **Events**: `Warning InvalidIPAddress` and `Warning TooManyAddressesToMirror`, with
//!   upstream's messages, on every sync that skips addresses.
//!
//! # DIFFERENCES
//!
//! Deliberate differences from upstream, each with its reason:
//!
//! 1. **Deterministic names instead of `generateName`.** New slices are named like the
//!    EndpointSlice controller's ([`crate::endpointslice::naming`]): `<endpoints name,
//!    truncated>-<hash of (Endpoints UID, address type, ordinal)>`, the first ordinal no slice in
//!    the snapshot uses. A stale informer cache re-plans the *same* name and gets `409
//!    AlreadyExists` instead of creating a duplicate. Existing slices keep their names.
//! 2. **Updates are conditional and keep foreign metadata.** An update is the existing slice's
//!    metadata (name, resourceVersion, UID, finalizers, …) with the mirrored labels, annotations
//!    and owner reference, so a stale update fails with `409 Conflict`. Upstream PUTs a fresh
//!    object without resourceVersion (an unconditional update that also drops finalizers).
//! 3. **Which slice of a key is kept is deterministic and write-minimising.** Upstream keeps the
//!    first slice in lister (random) order and deletes the rest; we keep the first slice, in
//!    name order, that needs no write, else the first by name.
//! 4. **Slices pending deletion are ignored** (neither kept, updated nor deleted again; their
//!    names stay reserved). Upstream would rewrite a slice stuck on a finalizer as the key's
//!    slice, as the EndpointSlice controller did before issue #108779.
//! 5. **Labels are compared without the two reserved keys on both sides.** Upstream compares
//!    the Endpoints' labels whole against the slice's labels minus service-name and managed-by,
//!    so an Endpoints that itself carries one of those labels is rewritten on every sync.
//! 6. **A duplicated endpoint inside an existing slice counts as a removal.** Upstream's
//!    `totalChanges` counts it as a second match, so a slice `[A, A]` for desired `{A, B}` looks
//!    up to date and `B` is never mirrored.
//! 7. **Repacking compares ports by value** ([`repack`]). Upstream keys a Go map by
//!    `EndpointPort`, whose `appProtocol` is a pointer: ports with an appProtocol never merge
//!    across subsets, and which readiness wins for an address listed in several such subsets
//!    follows hash order. Here "not ready trumps ready" applies to them too. A port without
//!    protocol is `TCP` (the apiserver default).
//! 8. **Deterministic order** of subsets, ports, endpoints, creates and deletes (value order
//!    instead of hash or map order). Every outcome is one upstream can produce.
//! 9. **Invalid IPs are logged once per sync** ([`PlanWarning::InvalidIpAddresses`], with up to
//!    10 examples) instead of one log line per address. The Events are upstream's.
//! 10. **`max_endpoints_per_subset` is clamped to 1..=1000** (kube-controller-manager rejects
//!     other values at start-up).
//! 11. **A Service whose namespace or name differs from the Endpoints' counts as missing**
//!     (the shell passes the Service of the same key; this guards against misuse).
//! 12. **Overflow after folding is reported.** Should two repacked subsets fold into one key
//!     (only possible for objects the apiserver did not default, e.g. protocol unset and `TCP`)
//!     and exceed the maximum, the surplus counts as skipped and raises
//!     `TooManyAddressesToMirror`; upstream drops it silently.
//!
//! Not differences, but worth knowing: the core filters the snapshot itself (only slices in
//! the Endpoints' namespace whose service-name label is the Endpoints' name and whose
//! managed-by label is [`Config::managed_by`] are planned; every slice passed reserves its
//! name), so the shell may pass every slice labelled with the name.

pub mod desired;
pub mod metrics;
pub mod queue;
pub mod reconcile;
pub mod repack;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use crate::endpointslice::{EventType, PortSetStats};
pub use desired::{DesiredSlices, SliceKey, address_to_endpoint, desired_slices};
pub use reconcile::{Totals, new_endpoint_slice};
pub use repack::repack_subsets;

use crate::endpointslice::equality::PortMapKey;
use crate::endpointslice::labels::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use crate::endpointslice::naming;

/// The managed-by value of upstream's mirroring controller, our default, so slices written by
/// kube-controller-manager are taken over in place.
pub const DEFAULT_MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// `endpointslice.kubernetes.io/skip-mirror`: with value `true`, the Endpoints is not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The leader-election record annotation (`resourcelock.LeaderElectionRecordAnnotationKey`).
pub const ANNOTATION_LEADER_ELECTION: &str = "control-plane.alpha.kubernetes.io/leader";
/// `endpoints.kubernetes.io/last-change-trigger-time`: never mirrored.
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str = crate::endpointslice::labels::ANNOTATION_LAST_CHANGE_TRIGGER_TIME;
/// `kubectl.kubernetes.io/last-applied-configuration`: never mirrored.
pub const ANNOTATION_LAST_APPLIED_CONFIGURATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Default `--mirroring-max-endpoints-per-subset`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SUBSET: usize = 1000;
/// Largest allowed `--mirroring-max-endpoints-per-subset`.
pub const MAX_MAX_ENDPOINTS_PER_SUBSET: usize = 1000;
/// Event reason: addresses with invalid IPs were skipped.
pub const REASON_INVALID_IP_ADDRESS: &str = "InvalidIPAddress";
/// Event reason: addresses over the per-subset maximum were skipped.
pub const REASON_TOO_MANY_ADDRESSES_TO_MIRROR: &str = "TooManyAddressesToMirror";

/// Controller settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--mirroring-max-endpoints-per-subset`: 1..=1000 (clamped), default 1000.
    pub max_endpoints_per_subset: usize,
    /// The `endpointslice.kubernetes.io/managed-by` value this controller writes and owns.
    pub managed_by: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_endpoints_per_subset: DEFAULT_MAX_ENDPOINTS_PER_SUBSET, managed_by: DEFAULT_MANAGED_BY.to_owned() }
    }
}

impl Config {
    /// The effective maximum: `max_endpoints_per_subset` clamped to 1..=1000.
    pub fn max_endpoints(&self) -> usize {
        self.max_endpoints_per_subset.clamp(1, MAX_MAX_ENDPOINTS_PER_SUBSET)
    }
}

/// The snapshot one plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Endpoints (when it is gone, use [`plan_delete_all`]).
    pub endpoints: &'a Endpoints,
    /// The Service of the same namespace and name, if it exists.
    pub service: Option<&'a Service>,
    /// Every EndpointSlice labelled `kubernetes.io/service-name=<name>` in the namespace,
    /// managed by anyone, including slices pending deletion. Only this controller's are
    /// planned; all of them reserve their names.
    pub existing_slices: &'a [&'a EndpointSlice],
}

/// Why an Endpoints is not mirrored; its mirrored slices are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotMirrored {
    /// The Endpoints does not exist ([`plan_delete_all`]).
    EndpointsMissing,
    /// The Endpoints has `endpointslice.kubernetes.io/skip-mirror: "true"`.
    SkipMirrorLabel,
    /// The Endpoints carries the leader-election annotation.
    LeaderElection,
    /// No Service of the same name.
    ServiceMissing,
    /// The Service has a selector: the EndpointSlice controller manages its slices.
    ServiceHasSelector,
}

/// An Event to record on the Endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroringEvent {
    /// Always `Warning` for the mirroring controller.
    pub event_type: EventType,
    /// [`REASON_INVALID_IP_ADDRESS`] or [`REASON_TOO_MANY_ADDRESSES_TO_MIRROR`].
    pub reason: &'static str,
    /// Upstream's message.
    pub message: String,
}

/// Something for the shell to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanWarning {
    /// Addresses whose IP does not parse were not mirrored.
    InvalidIpAddresses {
        /// `namespace/name` of the Endpoints.
        endpoints: String,
        /// How many.
        count: usize,
        /// The first few, verbatim.
        examples: Vec<String>,
    },
    /// Addresses over the per-subset maximum were not mirrored.
    TooManyAddresses {
        /// `namespace/name` of the Endpoints.
        endpoints: String,
        /// Addresses skipped, invalid ones included (upstream's count).
        skipped: usize,
        /// The per-subset maximum.
        max: usize,
    },
}

impl std::fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanWarning::InvalidIpAddresses { endpoints, count, examples } => write!(
                f,
                "{count} addresses in Endpoints {endpoints} are not valid IPs and will not be mirrored to EndpointSlices (e.g. {examples:?})"
            ),
            PlanWarning::TooManyAddresses { endpoints, skipped, max } => write!(
                f,
                "{skipped} addresses in Endpoints {endpoints} were skipped due to exceeding the maximum of {max} per subset"
            ),
        }
    }
}

/// Counts for the `endpoint_slice_mirroring_controller_*` metrics of one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `endpoints_added_per_sync`.
    pub endpoints_added: usize,
    /// `endpoints_updated_per_sync`.
    pub endpoints_updated: usize,
    /// `endpoints_removed_per_sync`.
    pub endpoints_removed: usize,
    /// `addresses_skipped_per_sync` (invalid or over the per-subset maximum).
    pub addresses_skipped: usize,
    /// This Endpoints' contribution to `endpoints_desired`.
    pub desired_endpoints: usize,
    /// This Endpoints' contribution to `num_endpoint_slices` (slices once the plan is applied).
    pub num_slices: usize,
    /// This Endpoints' contribution to `desired_endpoint_slices`.
    pub desired_slices: usize,
    /// Per (address type, port set), for [`metrics::MetricsCache::update`].
    pub port_sets: Vec<PortSetStats>,
}

/// What to write for one Endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Slices to POST, each with a deterministic name; `409 AlreadyExists` means the cache is
    /// stale.
    pub create: Vec<EndpointSlice>,
    /// Slices to PUT, each carrying the existing slice's name and resourceVersion.
    pub update: Vec<EndpointSlice>,
    /// Slices to DELETE (`404` counts as success).
    pub delete: Vec<EndpointSlice>,
    /// Events to record on the Endpoints, in order.
    pub events: Vec<MirroringEvent>,
    /// Things to log.
    pub warnings: Vec<PlanWarning>,
    /// Metric counts. All zero when [`Plan::not_mirrored`] is set: the shell then drops the
    /// Endpoints from its metrics cache and observes no per-sync histogram (as upstream).
    pub stats: Stats,
    /// Set when the Endpoints is not mirrored (every mirrored slice is in `delete`).
    pub not_mirrored: Option<NotMirrored>,
}

impl Plan {
    /// True if there is nothing to write.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }

    /// Number of writes.
    pub fn num_writes(&self) -> usize {
        self.create.len() + self.update.len() + self.delete.len()
    }
}

/// Upstream `Controller.shouldMirror`: false if the Endpoints has
/// `endpointslice.kubernetes.io/skip-mirror: "true"` or the leader-election annotation. Used
/// to filter Endpoints events; does not look at the Service.
pub fn endpoints_should_mirror(endpoints: &Endpoints) -> bool {
    endpoints_not_mirrored_reason(endpoints).is_none()
}

fn endpoints_not_mirrored_reason(endpoints: &Endpoints) -> Option<NotMirrored> {
    let meta = &endpoints.metadata;
    if meta.labels.as_ref().and_then(|l| l.get(LABEL_SKIP_MIRROR)).is_some_and(|v| v == "true") {
        return Some(NotMirrored::SkipMirrorLabel);
    }
    if meta.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION_LEADER_ELECTION)) {
        return Some(NotMirrored::LeaderElection);
    }
    None
}

/// Why `endpoints` is not mirrored, checked in upstream's `syncEndpoints` order: the
/// Endpoints' label and annotation, then the Service's existence, then its selector.
pub fn not_mirrored_reason(service: Option<&Service>, endpoints: &Endpoints) -> Option<NotMirrored> {
    if let Some(reason) = endpoints_not_mirrored_reason(endpoints) {
        return Some(reason);
    }
    let same_key = |s: &Service| {
        s.metadata.namespace.as_deref().unwrap_or("") == endpoints.metadata.namespace.as_deref().unwrap_or("")
            && s.metadata.name.as_deref().unwrap_or("") == endpoints.metadata.name.as_deref().unwrap_or("")
    };
    match service {
        Some(s) if same_key(s) => {
            if s.spec.as_ref().is_some_and(|spec| spec.selector.is_some()) {
                Some(NotMirrored::ServiceHasSelector)
            } else {
                None
            }
        }
        _ => Some(NotMirrored::ServiceMissing),
    }
}

/// True if `endpoints` should be mirrored: [`endpoints_should_mirror`], and a Service of the
/// same name exists and has no selector.
pub fn should_mirror(service: Option<&Service>, endpoints: &Endpoints) -> bool {
    not_mirrored_reason(service, endpoints).is_none()
}

/// True if `slice` is one this controller mirrored for the Endpoints `namespace/name`
/// (upstream `endpointSlicesMirroredForService`: same namespace, service-name label `name`,
/// managed-by label `managed_by`).
pub fn is_mirrored_slice_of(slice: &EndpointSlice, namespace: &str, name: &str, managed_by: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    slice.metadata.namespace.as_deref().unwrap_or("") == namespace
        && label(LABEL_SERVICE_NAME) == Some(name)
        && label(LABEL_MANAGED_BY) == Some(managed_by)
}

/// This controller's slices for `namespace/name` that are not pending deletion.
fn live_mirrored<'a>(
    existing: &[&'a EndpointSlice],
    namespace: &str,
    name: &str,
    config: &Config,
) -> Vec<&'a EndpointSlice> {
    let mut ours: Vec<&EndpointSlice> = existing
        .iter()
        .copied()
        .filter(|s| {
            s.metadata.deletion_timestamp.is_none() && is_mirrored_slice_of(s, namespace, name, &config.managed_by)
        })
        .collect();
    ours.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    ours
}

/// The plan when the Endpoints `namespace/name` no longer exists: delete every slice this
/// controller mirrored for it (upstream `deleteMirroredSlices`).
pub fn plan_delete_all(namespace: &str, name: &str, existing: &[&EndpointSlice], config: &Config) -> Plan {
    delete_all(namespace, name, existing, config, NotMirrored::EndpointsMissing)
}

fn delete_all(namespace: &str, name: &str, existing: &[&EndpointSlice], config: &Config, why: NotMirrored) -> Plan {
    Plan {
        delete: live_mirrored(existing, namespace, name, config).into_iter().cloned().collect(),
        not_mirrored: Some(why),
        ..Default::default()
    }
}

/// Computes the write plan for one Endpoints (upstream `syncEndpoints` after the listers, and
/// `reconciler.reconcile`).
///
/// Never panics, whatever the input.
pub fn plan(input: &Input<'_>, config: &Config) -> Plan {
    let endpoints = input.endpoints;
    let namespace = endpoints.metadata.namespace.as_deref().unwrap_or("");
    let name = endpoints.metadata.name.as_deref().unwrap_or("");
    if let Some(why) = not_mirrored_reason(input.service, endpoints) {
        return delete_all(namespace, name, input.existing_slices, config, why);
    }

    let max = config.max_endpoints();
    let managed_by = config.managed_by.as_str();
    let key = format!("{namespace}/{name}");
    let mut plan = Plan::default();

    // Desired state, events and warnings.
    let desired = desired_slices(endpoints, max);
    if desired.invalid_addresses > 0 {
        plan.events.push(MirroringEvent {
            event_type: EventType::Warning,
            reason: REASON_INVALID_IP_ADDRESS,
            message: format!(
                "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                desired.invalid_addresses
            ),
        });
        plan.warnings.push(PlanWarning::InvalidIpAddresses {
            endpoints: key.clone(),
            count: desired.invalid_addresses,
            examples: desired.invalid_ip_examples.clone(),
        });
    }
    if desired.addresses_skipped > desired.invalid_addresses {
        plan.events.push(MirroringEvent {
            event_type: EventType::Warning,
            reason: REASON_TOO_MANY_ADDRESSES_TO_MIRROR,
            message: format!(
                "A max of {max} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                desired.addresses_skipped
            ),
        });
        plan.warnings.push(PlanWarning::TooManyAddresses {
            endpoints: key.clone(),
            skipped: desired.addresses_skipped,
            max,
        });
    }

    // Existing state, by key, in name order.
    let mut existing_by_key: BTreeMap<SliceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in live_mirrored(input.existing_slices, namespace, name, config) {
        existing_by_key.entry((slice.address_type.clone(), PortMapKey::of_slice(slice))).or_default().push(slice);
    }

    let mut create = Vec::new();
    let mut update = Vec::new();
    let mut delete = Vec::new();
    let mut totals = Totals::default();
    let mut stats = Stats { addresses_skipped: desired.addresses_skipped, ..Default::default() };
    for (slice_key, set) in &desired.by_key {
        let existing = existing_by_key.get(slice_key).map(Vec::as_slice).unwrap_or_default();
        let kp =
            reconcile::reconcile_key(endpoints, existing, &set.endpoints, &set.ports, &slice_key.0, managed_by, max);
        totals.add(kp.totals);
        stats.port_sets.push(PortSetStats { endpoints: set.endpoints.len(), slices: kp.slices_after });
        create.extend(kp.create);
        update.extend(kp.update);
        delete.extend(kp.delete);
    }
    // Keys no longer desired (upstream does not count their endpoints as removed).
    for (slice_key, slices) in &existing_by_key {
        if !desired.by_key.contains_key(slice_key) {
            delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }

    stats.endpoints_added = totals.added;
    stats.endpoints_updated = totals.updated;
    stats.endpoints_removed = totals.removed;
    stats.desired_endpoints = stats.port_sets.iter().map(|p| p.endpoints).sum();
    stats.num_slices = stats.port_sets.iter().map(|p| p.slices).sum();
    stats.desired_slices = stats.port_sets.iter().map(|p| p.endpoints.div_ceil(max)).sum();
    plan.stats = stats;

    // finalize: recycle, no creates while the Endpoints is being deleted, name the creates.
    let (mut create, update, delete) = reconcile::recycle(create, update, delete);
    if endpoints.metadata.deletion_timestamp.is_some() {
        create.clear();
    }
    let mut used: BTreeSet<String> = input.existing_slices.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let uid = endpoints.metadata.uid.as_deref().unwrap_or("");
    for slice in &mut create {
        let slice_name = naming::first_free_slice_name(name, uid, &slice.address_type, &used);
        used.insert(slice_name.clone());
        slice.metadata.name = Some(slice_name);
    }
    plan.create = create;
    plan.update = update;
    plan.delete = delete;
    plan
}
