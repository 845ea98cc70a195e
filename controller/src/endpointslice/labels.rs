//! Well-known keys, slice labels (`setEndpointSliceLabels`), the last-change trigger-time
//! annotation and the Service key derived from a slice.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::podutil::CLUSTER_IP_NONE;

/// `kubernetes.io/service-name`: the owning Service's name (`discovery.LabelServiceName`).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`: the controller managing a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// `service.kubernetes.io/headless`: set (empty value) on slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `topology.kubernetes.io/zone`: the zone label on Nodes.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// `endpoints.kubernetes.io/last-change-trigger-time` (RFC3339Nano, UTC).
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The manager name of the upstream EndpointSlice controller, our default.
pub const DEFAULT_MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// True for the three label keys the controller owns on slices and never copies from the
/// Service: service-name, managed-by and headless.
pub fn is_reserved_label_key(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == LABEL_HEADLESS
}

/// True if the Service has a cluster IP (not empty, not `None`). Upstream `isServiceIPSet`; a
/// Service without one is headless for labelling purposes.
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != CLUSTER_IP_NONE
}

/// The labels a slice of `service` must carry, and whether the slice's current labels differ
/// from them (upstream `setEndpointSliceLabels`).
///
/// The result is the Service's labels minus the reserved keys, plus
/// `kubernetes.io/service-name=<service>`, `endpointslice.kubernetes.io/managed-by=<managed_by>`
/// and, when the Service has no cluster IP, `service.kubernetes.io/headless=""`.
///
/// The "changed" flag compares only non-reserved keys: the slice's labels minus reserved keys
/// against the Service's labels minus reserved keys (a missing map equals an empty one). A
/// change of a reserved label alone (for example the headless label) does not count; the label
/// is simply recomputed whenever the slice is rewritten.
pub fn desired_slice_labels(
    current: Option<&BTreeMap<String, String>>,
    service: &Service,
    managed_by: &str,
) -> (BTreeMap<String, String>, bool) {
    let changed = slice_labels_changed(current, service);
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !is_reserved_label_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    if !is_service_ip_set(service) {
        labels.insert(LABEL_HEADLESS.to_owned(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.to_owned(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.to_owned(), managed_by.to_owned());
    (labels, changed)
}

/// The "changed" flag of [`desired_slice_labels`], without building the labels: whether the
/// slice's labels minus the reserved keys differ from the Service's labels minus the reserved
/// keys (a missing map equals an empty one).
pub fn slice_labels_changed(current: Option<&BTreeMap<String, String>>, service: &Service) -> bool {
    // Both maps are sorted by key, so the unreserved entries can be compared pairwise.
    fn unreserved(m: Option<&BTreeMap<String, String>>) -> impl Iterator<Item = (&String, &String)> {
        m.into_iter().flatten().filter(|(k, _)| !is_reserved_label_key(k))
    }
    !unreserved(current).eq(unreserved(service.metadata.labels.as_ref()))
}

/// Formats a time as Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z`, the
/// fraction trimmed of trailing zeros and omitted when zero.
pub fn format_rfc3339_nano(t: &DateTime<Utc>) -> String {
    let mut out =
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second());
    // chrono encodes a leap second as nanos >= 1e9; Go has no leap seconds.
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Sets the last-change trigger-time annotation on a slice about to be written, or removes it
/// when there is no trigger time (upstream `addTriggerTimeAnnotation`). An annotation map left
/// empty is dropped.
pub fn set_trigger_time_annotation(slice: &mut EndpointSlice, trigger_time: Option<&DateTime<Utc>>) {
    match trigger_time {
        Some(t) => {
            slice
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANNOTATION_LAST_CHANGE_TRIGGER_TIME.to_owned(), format_rfc3339_nano(t));
        }
        None => {
            if let Some(annotations) = slice.metadata.annotations.as_mut() {
                annotations.remove(ANNOTATION_LAST_CHANGE_TRIGGER_TIME);
                if annotations.is_empty() {
                    slice.metadata.annotations = None;
                }
            }
        }
    }
}

/// A slice without a usable `kubernetes.io/service-name` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingServiceNameLabel;

impl std::fmt::Display for MissingServiceNameLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EndpointSlice missing {LABEL_SERVICE_NAME} label")
    }
}

impl std::error::Error for MissingServiceNameLabel {}

/// The `namespace/name` key of the Service a slice belongs to, from its
/// `kubernetes.io/service-name` label (upstream `ServiceControllerKey`).
pub fn service_controller_key(slice: &EndpointSlice) -> Result<String, MissingServiceNameLabel> {
    let name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
        .filter(|n| !n.is_empty())
        .ok_or(MissingServiceNameLabel)?;
    Ok(format!("{}/{}", slice.metadata.namespace.as_deref().unwrap_or(""), name))
}

/// The value of the slice's managed-by label, if any.
pub fn managed_by(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
}
