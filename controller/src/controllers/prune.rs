//! What the caches keep of each object: only the fields the controllers read. Each function is a
//! projection for [`crate::runtime::cache::run_cache`].
//!
//! Managed fields are dropped everywhere, except that slices keep the manager names and times
//! (without the field sets) to detect a second writer. Pods need no pruning: they are decoded
//! straight into their compact projection ([`crate::pod::CachedPod`]), so what is not kept is
//! never allocated.

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Drops the field sets of an EndpointSlice's managed fields (keeps manager, operation, time).
pub fn endpoint_slice(mut s: EndpointSlice) -> EndpointSlice {
    if let Some(mf) = s.metadata.managed_fields.as_mut() {
        for e in mf.iter_mut() {
            e.fields_v1 = None;
        }
    }
    s
}

/// Drops managed fields.
pub fn managed_fields<K: kube::Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}
