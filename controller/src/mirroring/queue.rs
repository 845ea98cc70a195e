//! Which watch events queue which Endpoints key (upstream `on{Service,Endpoints,EndpointSlice}*`
//! handlers), as pure decisions. The shell adds its own-write filter (upstream's tracker
//! `ShouldSync`/`Has`/`HandleDeletion`) where [`SliceUpdate::UnlessOwnWrite`] says so.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints_should_mirror;
use crate::endpointslice::labels::{LABEL_SERVICE_NAME, managed_by, service_controller_key};

fn has_selector(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|s| s.selector.is_some())
}

/// A Service was added or deleted: queue its Endpoints if it has no selector.
pub fn service_added_or_deleted(service: &Service) -> bool {
    !has_selector(service)
}

/// A Service was updated: queue its Endpoints if the selector appeared or disappeared.
pub fn service_updated(old: &Service, new: &Service) -> bool {
    has_selector(old) != has_selector(new)
}

/// An Endpoints was added or deleted: queue it if it should be mirrored (label and
/// annotation checks only; the Service is checked at sync time).
pub fn endpoints_added_or_deleted(endpoints: &Endpoints) -> bool {
    endpoints_should_mirror(endpoints)
}

/// An Endpoints was updated: queue it if the old or the new version should be mirrored.
pub fn endpoints_updated(old: &Endpoints, new: &Endpoints) -> bool {
    endpoints_should_mirror(old) || endpoints_should_mirror(new)
}

/// True if `slice` is managed by this controller (its managed-by label is `managed_by`).
pub fn managed_by_us(slice: &EndpointSlice, managed_by_value: &str) -> bool {
    managed_by(slice) == Some(managed_by_value)
}

/// The `namespace/name` key of the Endpoints a slice mirrors, from its service-name label
/// (upstream `endpointsControllerKey`); `None` without a non-empty label.
pub fn endpoints_key(slice: &EndpointSlice) -> Option<String> {
    service_controller_key(slice).ok()
}

/// What to do about an EndpointSlice event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceUpdate {
    /// Nothing.
    Ignore,
    /// Queue these keys (after the batch period), whatever the tracker says.
    Queue(Vec<String>),
    /// Queue this key unless the event is the echo of this controller's own write (upstream:
    /// `tracker.ShouldSync(slice)`, or for a deletion `!tracker.HandleDeletion(slice)`).
    UnlessOwnWrite(String),
}

/// A slice was added or deleted: queue its Endpoints if the slice is ours, unless it is the
/// echo of our own write.
pub fn slice_added_or_deleted(slice: &EndpointSlice, managed_by_value: &str) -> SliceUpdate {
    match endpoints_key(slice) {
        Some(key) if managed_by_us(slice, managed_by_value) => SliceUpdate::UnlessOwnWrite(key),
        _ => SliceUpdate::Ignore,
    }
}

/// A slice was updated (upstream `onEndpointSliceUpdate`):
/// - its service-name label changed: queue the Endpoints of both names;
/// - its managed-by label changed from or to this controller: queue it;
/// - it is ours: queue it unless the event is the echo of our own write.
pub fn slice_updated(old: &EndpointSlice, new: &EndpointSlice, managed_by_value: &str) -> SliceUpdate {
    let name = |s: &EndpointSlice| s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME)).cloned();
    if name(old) != name(new) {
        let keys: Vec<String> = [new, old].into_iter().filter_map(endpoints_key).collect();
        return if keys.is_empty() { SliceUpdate::Ignore } else { SliceUpdate::Queue(keys) };
    }
    let Some(key) = endpoints_key(new) else {
        return SliceUpdate::Ignore;
    };
    if managed_by_us(old, managed_by_value) != managed_by_us(new, managed_by_value) {
        SliceUpdate::Queue(vec![key])
    } else if managed_by_us(new, managed_by_value) {
        SliceUpdate::UnlessOwnWrite(key)
    } else {
        SliceUpdate::Ignore
    }
}
