//! The churn-minimising write plan: upstream `reconcileByAddressType`, `reconcileByPortMapping`,
//! the placeholder step and `finalize`, as pure functions over owned copies.
//!
//! Existing slices are never mutated; every slice to write is a modified clone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{DesiredEndpoint, DesiredPortSet};
use super::equality::{
    EndpointKeyRef, PortMapKey, encode_beyond_hash, encode_identity, owned_by, placeholder_slice_equal,
};
use super::hints::SliceInfo;
use super::labels::{desired_slice_labels, set_trigger_time_annotation, slice_labels_changed};
use super::{AddressTypeStats, PortSetStats};
use crate::podutil::IpFamily;

/// The controller owner reference of slices of `service`: `v1/Service`, controller and
/// blockOwnerDeletion set (upstream `metav1.NewControllerRef`).
pub fn service_owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new, unnamed slice of `service` with the given ports and address type and no endpoints
/// (upstream `newEndpointSlice`; the name is assigned after planning, see `naming`).
pub fn new_endpoint_slice(
    service: &Service,
    ports: &[EndpointPort],
    address_type: &str,
    managed_by: &str,
) -> EndpointSlice {
    let (labels, _) = desired_slice_labels(None, service, managed_by);
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![service_owner_reference(service)]),
            ..Default::default()
        },
        address_type: address_type.to_owned(),
        endpoints: Some(Vec::new()),
        ports: Some(ports.to_vec()),
    }
}

/// Upstream `getSliceToFill`: among `lengths` (endpoint counts of unchanged slices), the
/// position of the one that would be closest to full, without going over, after adding
/// `num_endpoints`; an exact fit wins at once.
pub fn slice_to_fill(lengths: &[usize], num_endpoints: usize, max: usize) -> Option<usize> {
    let mut closest_diff = max;
    let mut closest = None;
    for (pos, len) in lengths.iter().enumerate() {
        let Some(diff) = num_endpoints.checked_add(*len).and_then(|total| max.checked_sub(total)) else {
            continue;
        };
        if diff < closest_diff {
            closest_diff = diff;
            closest = Some(pos);
            if diff == 0 {
                break;
            }
        }
    }
    closest
}

fn endpoints_mut(slice: &mut EndpointSlice) -> &mut Vec<Endpoint> {
    slice.endpoints.get_or_insert_with(Vec::new)
}

fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}

/// The desired endpoints of one port set that no existing slice holds yet, in identity order
/// (upstream places them in Go map order; see DIFFERENCES 3).
struct Remaining<'d, 'a> {
    desired: &'d [DesiredEndpoint<'a>],
    order: Vec<usize>,
    next: usize,
}

impl<'d, 'a> Remaining<'d, 'a> {
    fn new(desired: &'d [DesiredEndpoint<'a>], placed: &[bool]) -> Self {
        let mut order: Vec<usize> = (0..desired.len()).filter(|&d| !placed[d]).collect();
        // Identities are unique within a port set, so an unstable sort is deterministic.
        order.sort_unstable_by(|&a, &b| desired[a].key.cmp(&desired[b].key));
        Remaining { desired, order, next: 0 }
    }

    fn len(&self) -> usize {
        self.order.len() - self.next
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next endpoint in identity order, built for writing.
    fn pop_first(&mut self) -> Option<Endpoint> {
        let d = *self.order.get(self.next)?;
        self.next += 1;
        Some(self.desired[d].to_endpoint())
    }
}

/// Moves endpoints from `desired` (smallest key first) into `slice` until it is full.
fn fill(slice: &mut EndpointSlice, desired: &mut Remaining<'_, '_>, max: usize) {
    let endpoints = endpoints_mut(slice);
    while endpoints.len() < max {
        let Some(endpoint) = desired.pop_first() else {
            break;
        };
        endpoints.push(endpoint);
    }
}

/// A copy of `orig` with other endpoints and labels: what an update writes. Clones
/// everything but the endpoints, which are about to be replaced.
fn rewritten(orig: &EndpointSlice, endpoints: Vec<Endpoint>, labels: BTreeMap<String, String>) -> EndpointSlice {
    let mut metadata = orig.metadata.clone();
    metadata.labels = Some(labels);
    EndpointSlice {
        metadata,
        address_type: orig.address_type.clone(),
        endpoints: Some(endpoints),
        ports: orig.ports.clone(),
    }
}

/// What happens to one existing slice.
#[derive(Debug)]
enum Fate {
    Unchanged,
    Update(Box<EndpointSlice>),
    Delete,
}

struct Working<'a> {
    orig: &'a EndpointSlice,
    fate: Fate,
}

/// Settings shared by the per-address-type functions.
pub(super) struct Ctx<'a> {
    pub service: &'a Service,
    pub managed_by: &'a str,
    pub max: usize,
}

struct PortMappingOutcome {
    creates: Vec<EndpointSlice>,
    updates: Vec<usize>,
    deletes: Vec<usize>,
    added: usize,
    removed: usize,
}

/// Upstream `reconcileByPortMapping` for the existing slices `idxs` of one port set.
///
/// 1. Walk the existing slices: keep each endpoint that is still desired (in its desired
///    version), drop the others. A slice that lost or changed endpoints is deleted if now empty,
///    else updated (with recomputed labels); a slice whose only change is its labels is
///    updated; the rest are unchanged.
/// 2. Fill the slices being updated, fullest first, up to the maximum (no extra writes).
/// 3. Place what is left: while at least `max` remain, or no unchanged slice can take them all,
///    create a new full slice; otherwise put the remainder into the unchanged slice that ends
///    closest to full.
fn reconcile_by_port_mapping(
    ctx: &Ctx<'_>,
    working: &mut [Working<'_>],
    idxs: &[usize],
    set: DesiredPortSet<'_>,
    address_type: IpFamily,
) -> PortMappingOutcome {
    let desired = &set.endpoints;
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    let mut unchanged = Vec::new();
    let mut removed = 0;
    // Desired endpoints already kept in an existing slice (each is kept at most once).
    let mut placed = vec![false; desired.len()];
    let mut kept: Vec<usize> = Vec::new();
    // An existing endpoint's encodings (see `equality::encode_identity`).
    let mut scratch: Vec<u8> = Vec::new();

    // 1. Existing slices. Endpoints are matched and compared through their encodings; owned
    //    endpoints are built only for slices that get rewritten.
    for &i in idxs {
        let orig = working[i].orig;
        let old = orig.endpoints.as_deref().unwrap_or_default();
        kept.clear();
        let mut endpoint_updated = false;
        for endpoint in old {
            scratch.clear();
            encode_identity(&mut scratch, &EndpointKeyRef::of(endpoint));
            let Some(d) = set.find(&scratch, set.hash_identity(&scratch)).filter(|&d| !placed[d]) else {
                continue;
            };
            placed[d] = true;
            // Same identity; the rest as `endpoints_equal_beyond_hash` compares it.
            scratch.clear();
            encode_beyond_hash(&mut scratch, endpoint);
            if *scratch != *set.beyond_hash(d) {
                endpoint_updated = true;
            }
            kept.push(d);
        }
        let labels_changed = slice_labels_changed(orig.metadata.labels.as_ref(), ctx.service);
        if endpoint_updated || old.len() != kept.len() {
            removed += old.len().saturating_sub(kept.len());
            if kept.is_empty() {
                working[i].fate = Fate::Delete;
                deletes.push(i);
            } else {
                // Kept endpoints are written in their desired version.
                let endpoints = kept.iter().map(|&d| desired[d].to_endpoint()).collect();
                let labels = desired_slice_labels(orig.metadata.labels.as_ref(), ctx.service, ctx.managed_by).0;
                working[i].fate = Fate::Update(Box::new(rewritten(orig, endpoints, labels)));
                updates.push(i);
            }
        } else if labels_changed {
            let mut copy = orig.clone();
            copy.metadata.labels =
                Some(desired_slice_labels(orig.metadata.labels.as_ref(), ctx.service, ctx.managed_by).0);
            working[i].fate = Fate::Update(Box::new(copy));
            updates.push(i);
        } else {
            unchanged.push(i);
        }
    }

    let mut desired = Remaining::new(desired, &placed);
    let added = desired.len();

    // 2. Fill slices already being updated, fullest first.
    if !desired.is_empty() && !updates.is_empty() {
        let mut by_len: Vec<usize> = updates.clone();
        by_len.sort_by_key(|&i| match &working[i].fate {
            Fate::Update(s) => std::cmp::Reverse(endpoint_count(s)),
            _ => std::cmp::Reverse(0),
        });
        for i in by_len {
            if let Fate::Update(slice) = &mut working[i].fate {
                fill(slice, &mut desired, ctx.max);
            }
        }
    }

    // 3. Place the rest: closest-to-full unchanged slice, else new slices.
    let mut creates = Vec::new();
    while !desired.is_empty() {
        let mut target = None;
        if desired.len() < ctx.max && !unchanged.is_empty() {
            let lengths: Vec<usize> = unchanged.iter().map(|&i| endpoint_count(working[i].orig)).collect();
            target = slice_to_fill(&lengths, desired.len(), ctx.max);
        }
        match target {
            Some(pos) => {
                let i = unchanged.remove(pos);
                let mut copy = working[i].orig.clone();
                fill(&mut copy, &mut desired, ctx.max);
                working[i].fate = Fate::Update(Box::new(copy));
                updates.push(i);
            }
            None => {
                let mut slice = new_endpoint_slice(ctx.service, &set.ports, address_type.as_str(), ctx.managed_by);
                fill(&mut slice, &mut desired, ctx.max);
                creates.push(slice);
            }
        }
    }

    PortMappingOutcome { creates, updates, deletes, added, removed }
}

/// The plan of one address type before the hints step and `finalize`.
pub(super) struct AddressTypeOutcome<'a> {
    /// Slices to create, update, and existing slices left unchanged.
    pub info: SliceInfo<'a>,
    /// Slices to delete, in upstream's order: not owned by the Service first, then emptied
    /// slices, then slices of port sets no longer desired.
    pub delete: Vec<EndpointSlice>,
    pub stats: AddressTypeStats,
}

/// Upstream `reconcileByAddressType` up to (not including) the hints step.
///
/// `existing` are this controller's slices of this address type (any owner), `desired` the
/// port sets of this address type.
pub(super) fn reconcile_address_type<'a>(
    ctx: &Ctx<'_>,
    address_type: IpFamily,
    existing: &[&'a EndpointSlice],
    desired: BTreeMap<PortMapKey, DesiredPortSet<'_>>,
) -> AddressTypeOutcome<'a> {
    let mut working: Vec<Working<'a>> = existing.iter().map(|s| Working { orig: s, fate: Fate::Unchanged }).collect();
    let mut delete_order = Vec::new();
    let mut owned_by_key: BTreeMap<PortMapKey, Vec<usize>> = BTreeMap::new();
    for (i, w) in working.iter_mut().enumerate() {
        if owned_by(w.orig, ctx.service) {
            owned_by_key.entry(PortMapKey::of_slice(w.orig)).or_default().push(i);
        } else {
            // Left behind by an earlier Service of the same name (TestReconcileEndpointSlicesRecreation).
            w.fate = Fate::Delete;
            delete_order.push(i);
        }
    }

    let mut creates = Vec::new();
    let mut update_order = Vec::new();
    let mut added = 0;
    let mut removed = 0;
    let mut desired_endpoints = 0;
    let mut port_sets: BTreeMap<PortMapKey, PortSetStats> = BTreeMap::new();
    let desired_keys: Vec<PortMapKey> = desired.keys().cloned().collect();

    for (key, set) in desired {
        let endpoints = set.endpoints.len();
        desired_endpoints += endpoints;
        let idxs = owned_by_key.get(&key).cloned().unwrap_or_default();
        let out = reconcile_by_port_mapping(ctx, &mut working, &idxs, set, address_type);
        added += out.added;
        removed += out.removed;
        port_sets.insert(
            key,
            PortSetStats { endpoints, slices: (idxs.len() + out.creates.len()).saturating_sub(out.deletes.len()) },
        );
        creates.extend(out.creates);
        update_order.extend(out.updates);
        delete_order.extend(out.deletes);
    }

    // Port sets no longer desired: delete all their slices.
    for (key, idxs) in &owned_by_key {
        if desired_keys.binary_search(key).is_err() {
            for &i in idxs {
                working[i].fate = Fate::Delete;
                delete_order.push(i);
            }
        }
    }

    // Placeholder: when nothing would exist otherwise, keep (or create) one empty slice.
    if existing.len() == delete_order.len() && creates.is_empty() {
        let placeholder = new_endpoint_slice(ctx.service, &[], address_type.as_str(), ctx.managed_by);
        if delete_order.len() == 1 && placeholder_slice_equal(Some(working[delete_order[0]].orig), Some(&placeholder)) {
            // Already an equivalent placeholder: neither delete nor recreate it (PR #110365).
            working[delete_order[0]].fate = Fate::Unchanged;
            delete_order.clear();
        } else {
            creates.push(placeholder);
        }
        port_sets.insert(PortMapKey::new(Some(&[])), PortSetStats { endpoints: 0, slices: 1 });
    }

    // Unchanged slices are passed on borrowed: the hints step copies only those it edits.
    let unchanged: Vec<&'a EndpointSlice> =
        working.iter().filter(|w| matches!(w.fate, Fate::Unchanged)).map(|w| w.orig).collect();
    let delete: Vec<EndpointSlice> = delete_order.iter().map(|&i| working[i].orig.clone()).collect();
    let to_update: Vec<EndpointSlice> = update_order
        .iter()
        // Each slice is in `update_order` at most once, so its copy can be moved out.
        .filter_map(|&i| match std::mem::replace(&mut working[i].fate, Fate::Unchanged) {
            Fate::Update(s) => Some(*s),
            _ => None,
        })
        .collect();

    let stats = AddressTypeStats::new(address_type.as_str(), desired_endpoints, added, removed, port_sets, ctx.max);
    AddressTypeOutcome {
        info: SliceInfo { address_type: address_type.as_str().to_owned(), to_create: creates, to_update, unchanged },
        delete,
        stats,
    }
}

/// Upstream `finalize`, minus the API calls.
///
/// 1. Recycle deletes into updates: while there are creates and deletes, a slice to delete of
///    the same address type that the Service owns gives its name (and resourceVersion) to the
///    last planned create, which becomes an update.
/// 2. A Service being deleted gets no creates (avoids racing the garbage collector); updates
///    and deletes still go through.
/// 3. Every create and update gets the trigger-time annotation (or loses it when there is no
///    trigger time).
pub(super) fn finalize(
    service: &Service,
    mut create: Vec<EndpointSlice>,
    mut update: Vec<EndpointSlice>,
    mut delete: Vec<EndpointSlice>,
    trigger_time: Option<&DateTime<Utc>>,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut i = 0;
    while i < delete.len() {
        let Some(last) = create.last() else {
            break;
        };
        if delete[i].address_type == last.address_type && owned_by(&delete[i], service) {
            let recycled = delete.remove(i);
            if let Some(mut slice) = create.pop() {
                slice.metadata.name = recycled.metadata.name;
                slice.metadata.resource_version = recycled.metadata.resource_version;
                update.push(slice);
            }
        } else {
            i += 1;
        }
    }

    if service.metadata.deletion_timestamp.is_some() {
        create.clear();
    }

    for slice in create.iter_mut().chain(update.iter_mut()) {
        set_trigger_time_annotation(slice, trigger_time);
    }
    (create, update, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_to_fill_picks_closest_to_full() {
        // 27 remaining, max 100: 62 -> 89 beats 61 -> 88.
        assert_eq!(slice_to_fill(&[61, 62], 27, 100), Some(1));
        // Nothing fits: 74 + 52 > 100.
        assert_eq!(slice_to_fill(&[74, 74], 52, 100), None);
        // Exact fit wins immediately, even if a later one would tie.
        assert_eq!(slice_to_fill(&[10, 90, 90], 10, 100), Some(1));
        assert_eq!(slice_to_fill(&[], 1, 100), None);
        // Oversized existing slices never qualify (no overflow either).
        assert_eq!(slice_to_fill(&[usize::MAX - 1], 5, 100), None);
    }
}
