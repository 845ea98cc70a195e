//! Slices of one Endpoints object: construction (upstream `newEndpointSlice`), the per-key plan
//! (`reconcileByPortMapping`, `totalChanges`, `needRebuildExistingSlices`) and delete recycling
//! (`recycleSlices`). Pure functions over borrowed snapshots; existing slices are never mutated.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{ANNOTATION_LAST_APPLIED_CONFIGURATION, ANNOTATION_LAST_CHANGE_TRIGGER_TIME};
use crate::endpointslice::equality::{EndpointKey, endpoints_equal_beyond_hash};
use crate::endpointslice::labels::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};

/// The controller owner reference of mirrored slices: `v1/Endpoints`, controller and
/// blockOwnerDeletion set (upstream `metav1.NewControllerRef(endpoints, v1/Endpoints)`).
pub fn endpoints_owner_reference(endpoints: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Endpoints".to_owned(),
        name: endpoints.metadata.name.clone().unwrap_or_default(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of a mirrored slice: all the Endpoints' labels, then
/// `kubernetes.io/service-name=<endpoints name>` and
/// `endpointslice.kubernetes.io/managed-by=<managed_by>` (overwriting any the Endpoints carry).
pub fn slice_labels(endpoints: &Endpoints, managed_by: &str) -> BTreeMap<String, String> {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), endpoints.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.to_owned(), managed_by.to_owned());
    labels
}

/// True for the annotations never mirrored: the last-change trigger time and kubectl's
/// last-applied configuration.
pub fn is_excluded_annotation(key: &str) -> bool {
    key == ANNOTATION_LAST_CHANGE_TRIGGER_TIME || key == ANNOTATION_LAST_APPLIED_CONFIGURATION
}

/// The annotations of a mirrored slice: all the Endpoints' annotations except
/// [`is_excluded_annotation`] ones; `None` when there are none (the apiserver stores an empty
/// map as absent).
pub fn slice_annotations(endpoints: &Endpoints) -> Option<BTreeMap<String, String>> {
    let annotations: BTreeMap<String, String> = endpoints
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !is_excluded_annotation(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!annotations.is_empty()).then_some(annotations)
}

/// A new, unnamed, empty slice mirroring `endpoints` with these ports and address type
/// (upstream `newEndpointSlice` without a name; the planner names it).
pub fn new_endpoint_slice(
    endpoints: &Endpoints,
    ports: &[EndpointPort],
    address_type: &str,
    managed_by: &str,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(slice_labels(endpoints, managed_by)),
            annotations: slice_annotations(endpoints),
            owner_references: Some(vec![endpoints_owner_reference(endpoints)]),
            ..Default::default()
        },
        address_type: address_type.to_owned(),
        endpoints: Some(Vec::new()),
        ports: Some(ports.to_vec()),
    }
}

/// `fresh` (a slice built by [`new_endpoint_slice`]) written over `existing`: the content,
/// labels, annotations and owner references of `fresh`, every other metadata field (name,
/// resourceVersion, UID, finalizers, …) of `existing`.
pub fn rebuild(existing: &EndpointSlice, fresh: EndpointSlice) -> EndpointSlice {
    let EndpointSlice { metadata, address_type, endpoints, ports } = fresh;
    let mut meta = existing.metadata.clone();
    meta.namespace = metadata.namespace;
    meta.labels = metadata.labels;
    meta.annotations = metadata.annotations;
    meta.owner_references = metadata.owner_references;
    EndpointSlice { metadata: meta, address_type, endpoints, ports }
}

/// Endpoint changes needed to turn a slice into the desired set (upstream `totalChanges`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Desired endpoints missing from the slice.
    pub added: usize,
    /// Endpoints present in both whose fields differ (upstream `EndpointsEqualBeyondHash`).
    pub updated: usize,
    /// Endpoints of the slice not desired. A second copy of an endpoint counts here.
    pub removed: usize,
}

impl Totals {
    /// No change at all.
    pub fn is_zero(&self) -> bool {
        self.added == 0 && self.updated == 0 && self.removed == 0
    }

    /// Adds another key's totals.
    pub fn add(&mut self, other: Totals) {
        self.added += other.added;
        self.updated += other.updated;
        self.removed += other.removed;
    }
}

/// Upstream `totalChanges`, except that a duplicate of an endpoint already matched counts as a
/// removal (upstream counts it as another match, which can hide a missing endpoint).
pub fn total_changes(slice: &EndpointSlice, desired: &BTreeMap<EndpointKey, Endpoint>) -> Totals {
    let mut totals = Totals::default();
    let mut matched: BTreeSet<EndpointKey> = BTreeSet::new();
    for endpoint in slice.endpoints.iter().flatten() {
        let key = EndpointKey::of(endpoint);
        match desired.get(&key) {
            Some(want) if !matched.contains(&key) => {
                if !endpoints_equal_beyond_hash(want, endpoint) {
                    totals.updated += 1;
                }
                matched.insert(key);
            }
            _ => totals.removed += 1,
        }
    }
    totals.added = desired.len().saturating_sub(matched.len());
    totals
}

fn without(m: Option<&BTreeMap<String, String>>, skip: impl Fn(&str) -> bool) -> BTreeMap<&str, &str> {
    m.into_iter().flatten().filter(|(k, _)| !skip(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// True if the slice's labels are the Endpoints' labels, ignoring service-name and managed-by
/// on both sides (a missing map equals an empty one).
pub fn labels_match(endpoints: &Endpoints, slice: &EndpointSlice) -> bool {
    let reserved = |k: &str| k == LABEL_SERVICE_NAME || k == LABEL_MANAGED_BY;
    without(endpoints.metadata.labels.as_ref(), reserved) == without(slice.metadata.labels.as_ref(), reserved)
}

/// True if the slice's annotations are exactly the Endpoints' annotations minus the excluded
/// ones (a missing map equals an empty one). A slice carrying an excluded annotation does not
/// match, so it gets rewritten without it (as upstream).
pub fn annotations_match(endpoints: &Endpoints, slice: &EndpointSlice) -> bool {
    without(endpoints.metadata.annotations.as_ref(), is_excluded_annotation)
        == without(slice.metadata.annotations.as_ref(), |_| false)
}

/// Upstream `needRebuildExistingSlices`: the slice has an owner reference to an `Endpoints` of
/// the same name but another UID (the Endpoints was deleted and recreated, issue #125354).
pub fn owned_by_previous_endpoints(endpoints: &Endpoints, slice: &EndpointSlice) -> bool {
    let name = endpoints.metadata.name.as_deref().unwrap_or("");
    let uid = endpoints.metadata.uid.as_deref().unwrap_or("");
    slice.metadata.owner_references.iter().flatten().any(|o| o.kind == "Endpoints" && o.name == name && o.uid != uid)
}

/// True if `slice` needs no write to mirror `desired`: no endpoint change, matching labels and
/// annotations, and no owner reference to a previous Endpoints.
pub fn up_to_date(endpoints: &Endpoints, slice: &EndpointSlice, totals: &Totals) -> bool {
    totals.is_zero()
        && labels_match(endpoints, slice)
        && annotations_match(endpoints, slice)
        && !owned_by_previous_endpoints(endpoints, slice)
}

/// The plan for one (address type, port set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPlan {
    /// A new slice (unnamed).
    pub create: Option<EndpointSlice>,
    /// The kept slice, rewritten.
    pub update: Option<EndpointSlice>,
    /// Slices of this key to delete.
    pub delete: Vec<EndpointSlice>,
    /// Endpoint changes (of the kept slice only, as upstream).
    pub totals: Totals,
    /// Slices of this key once the plan is applied.
    pub slices_after: usize,
}

/// Upstream `reconcileByPortMapping` for one key.
///
/// - Nothing desired: delete every existing slice (their endpoints count as removed).
/// - No existing slice: create one with the desired endpoints.
/// - Otherwise keep one slice and delete the rest. The kept slice is the first (in the given
///   order) that is already [`up_to_date`], else the first one. An up-to-date slice is left
///   alone; otherwise it is rebuilt under its name (an update).
///
/// The slice holds at most `max` endpoints, in identity order.
pub fn reconcile_key(
    endpoints: &Endpoints,
    existing: &[&EndpointSlice],
    desired: &BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    managed_by: &str,
    max: usize,
) -> KeyPlan {
    let mut plan = KeyPlan::default();
    if desired.is_empty() {
        plan.totals.removed = existing.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum();
        plan.delete = existing.iter().map(|s| (*s).clone()).collect();
        return plan;
    }

    let build = || {
        let mut slice = new_endpoint_slice(endpoints, ports, address_type, managed_by);
        slice.endpoints = Some(desired.values().take(max.max(1)).cloned().collect());
        slice
    };

    let evaluated: Vec<(Totals, bool)> = existing
        .iter()
        .map(|s| {
            let totals = total_changes(s, desired);
            (totals, up_to_date(endpoints, s, &totals))
        })
        .collect();
    let keep = evaluated.iter().position(|(_, ok)| *ok).or(if existing.is_empty() { None } else { Some(0) });
    match keep {
        None => {
            plan.totals.added = desired.len();
            plan.create = Some(build());
        }
        Some(k) => {
            let (totals, ok) = evaluated[k];
            plan.totals = totals;
            if !ok {
                plan.update = Some(rebuild(existing[k], build()));
            }
            plan.delete = existing.iter().enumerate().filter(|(i, _)| *i != k).map(|(_, s)| (*s).clone()).collect();
        }
    }
    plan.slices_after = 1;
    plan
}

/// Upstream `recycleSlices`: per address type, the i-th slice to create becomes an update of
/// the i-th slice to delete (its content over the deleted slice's metadata, see [`rebuild`]),
/// so a port change rewrites slices instead of deleting and creating them.
pub fn recycle(
    create: Vec<EndpointSlice>,
    mut update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut delete: Vec<Option<EndpointSlice>> = delete.into_iter().map(Some).collect();
    let mut remaining = Vec::new();
    for slice in create {
        let recycled = delete.iter_mut().find(|d| d.as_ref().is_some_and(|d| d.address_type == slice.address_type));
        match recycled.and_then(Option::take) {
            Some(old) => update.push(rebuild(&old, slice)),
            None => remaining.push(slice),
        }
    }
    (remaining, update, delete.into_iter().flatten().collect())
}
