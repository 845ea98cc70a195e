//! What the caches keep of each object: only the fields the controllers read, in lists without
//! spare capacity. Each function is a projection for [`crate::runtime::cache::run_cache`].
//!
//! Managed fields are dropped everywhere, except that slices keep the manager names and times
//! (without the field sets) to detect a second writer. Pods need no pruning: they are decoded
//! straight into their compact projection ([`crate::pod::CachedPod`]), so what is not kept is
//! never allocated.
//!
//! JSON gives serde no length for a list, so a decoded `Vec` grows by doubling from a capacity
//! of 4: a slice of 10 endpoints holds room for 16 (≈340 bytes each), an endpoint's one address
//! room for 4. The slices and Endpoints are most of what the caches hold, so their lists are
//! shrunk to fit.

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Drops the field sets of an EndpointSlice's managed fields (keeps manager, operation, time),
/// and the spare capacity of its lists.
pub fn endpoint_slice(mut s: EndpointSlice) -> EndpointSlice {
    if let Some(mf) = s.metadata.managed_fields.as_mut() {
        for e in mf.iter_mut() {
            e.fields_v1 = None;
        }
        mf.shrink_to_fit();
    }
    if let Some(endpoints) = s.endpoints.as_mut() {
        for e in endpoints.iter_mut() {
            e.addresses.shrink_to_fit();
            if let Some(h) = e.hints.as_mut() {
                h.for_zones.as_mut().map(Vec::shrink_to_fit);
                h.for_nodes.as_mut().map(Vec::shrink_to_fit);
            }
        }
        endpoints.shrink_to_fit();
    }
    s.ports.as_mut().map(Vec::shrink_to_fit);
    s
}

/// Drops the managed fields of an Endpoints object, and the spare capacity of its lists.
pub fn endpoints(mut e: Endpoints) -> Endpoints {
    e.metadata.managed_fields = None;
    if let Some(subsets) = e.subsets.as_mut() {
        for s in subsets.iter_mut() {
            s.addresses.as_mut().map(Vec::shrink_to_fit);
            s.not_ready_addresses.as_mut().map(Vec::shrink_to_fit);
            s.ports.as_mut().map(Vec::shrink_to_fit);
        }
        subsets.shrink_to_fit();
    }
    e
}

/// Drops managed fields.
pub fn managed_fields<K: kube::Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cached_lists_have_no_spare_capacity_and_keep_their_items() {
        let slice: EndpointSlice = serde_json::from_str(
            &serde_json::json!({
                "metadata": {"name": "s", "managedFields": [{"manager": "m", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:endpoints": {}}}]},
                "addressType": "IPv4",
                "endpoints": (0..10).map(|i| serde_json::json!({"addresses": [format!("10.0.0.{i}")],
                    "hints": {"forZones": [{"name": "a"}]}})).collect::<Vec<_>>(),
                "ports": [{"port": 80}],
            })
            .to_string(),
        )
        .unwrap();
        let cap = slice.endpoints.as_ref().unwrap().capacity();
        assert!(cap > 10, "serde leaves spare room ({cap})");
        let pruned = endpoint_slice(slice.clone());
        assert_eq!(pruned.endpoints, slice.endpoints);
        let kept = pruned.endpoints.as_ref().unwrap();
        assert_eq!(kept.capacity(), 10);
        assert!(kept.iter().all(|e| e.addresses.capacity() == 1));
        assert_eq!(pruned.ports.as_ref().unwrap().capacity(), 1);
        let mf = &pruned.metadata.managed_fields.as_ref().unwrap()[0];
        assert_eq!((mf.manager.as_deref(), mf.fields_v1.is_none()), (Some("m"), true));

        let ep: Endpoints = serde_json::from_str(&serde_json::json!({
            "metadata": {"name": "e", "managedFields": [{"manager": "m"}]},
            "subsets": [{"addresses": (0..10).map(|i| serde_json::json!({"ip": format!("10.0.0.{i}")})).collect::<Vec<_>>(),
                         "notReadyAddresses": [{"ip": "10.0.1.1"}], "ports": [{"port": 80}]}],
        })
        .to_string())
        .unwrap();
        let pruned = endpoints(ep.clone());
        assert_eq!(pruned.subsets, ep.subsets);
        assert!(pruned.metadata.managed_fields.is_none());
        let s = &pruned.subsets.as_ref().unwrap()[0];
        assert_eq!(s.addresses.as_ref().unwrap().capacity(), 10);
        assert_eq!(s.not_ready_addresses.as_ref().unwrap().capacity(), 1);
    }
}
