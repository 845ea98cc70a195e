//! Slices as kube-controller-manager's mirroring controller writes them (after the apiserver
//! stored them) must cause no writes: taking over from upstream is a no-op.

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as DPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Time};

use super::super::{ANNOTATION_LAST_APPLIED_CONFIGURATION, ANNOTATION_LAST_CHANGE_TRIGGER_TIME, Config};
use super::*;

fn target(name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some("ns".into()),
        name: Some(name.into()),
        uid: Some(format!("pod-uid-{name}")),
        resource_version: Some("4711".into()),
        ..Default::default()
    }
}

fn address(ip: &str, pod: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        hostname: Some(pod.into()),
        node_name: Some("node-1".into()),
        target_ref: Some(target(pod)),
    }
}

/// A custom Endpoints: labels and annotations (including the two never mirrored), two subsets,
/// dual-stack and not-ready addresses, an unnamed port, an appProtocol.
fn custom_endpoints() -> Endpoints {
    let mut ep = endpoints(
        "ns",
        "ext",
        vec![
            subset(
                vec![address("10.0.0.1", "a"), address("2001:db8::1", "b")],
                vec![address("10.0.0.2", "c")],
                vec![
                    EndpointPort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: Some("TCP".into()),
                        app_protocol: Some("http".into()),
                    },
                    port("metrics", 9090, "TCP"),
                ],
            ),
            subset(
                vec![address("10.0.1.1", "d")],
                vec![],
                vec![EndpointPort { name: None, port: 53, protocol: Some("UDP".into()), app_protocol: None }],
            ),
        ],
    );
    ep.metadata.labels = Some(labels(&[("app", "ext"), ("team", "net")]));
    ep.metadata.annotations = Some(labels(&[
        ("note", "hello"),
        (ANNOTATION_LAST_APPLIED_CONFIGURATION, "{}"),
        (ANNOTATION_LAST_CHANGE_TRIGGER_TIME, "2026-01-01T00:00:00Z"),
    ]));
    ep
}

fn dport(name: &str, port: i32, protocol: &str, app: Option<&str>) -> DPort {
    DPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some(protocol.into()),
        app_protocol: app.map(str::to_owned),
    }
}

fn kcm_endpoint(ip: &str, pod: &str, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions { ready: Some(ready), serving: None, terminating: None }),
        hostname: Some(pod.into()),
        node_name: Some("node-1".into()),
        target_ref: Some(target(pod)),
        ..Default::default()
    }
}

/// The slice upstream's `newEndpointSlice` builds, as the apiserver returns it: generated name,
/// server-set metadata, ports and endpoints in hash (here: reversed) order.
fn kcm_slice(
    ep: &Endpoints,
    suffix: &str,
    address_type: &str,
    mut ports: Vec<DPort>,
    mut endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    ports.reverse();
    endpoints.reverse();
    let mut l = ep.metadata.labels.clone().unwrap_or_default();
    l.extend(our_labels("ext"));
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("ext-{suffix}")),
            generate_name: Some("ext-".into()),
            namespace: Some("ns".into()),
            uid: Some(format!("kcm-{suffix}")),
            resource_version: Some("100".into()),
            generation: Some(3),
            creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())),
            labels: Some(l),
            annotations: Some(labels(&[("note", "hello")])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Endpoints".into(),
                name: "ext".into(),
                uid: "uid-ext".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kube-controller-manager".into()),
                operation: Some("Update".into()),
                ..Default::default()
            }]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    }
}

fn kcm_slices(ep: &Endpoints) -> Vec<EndpointSlice> {
    let web = || vec![dport("http", 80, "TCP", Some("http")), dport("metrics", 9090, "TCP", None)];
    vec![
        kcm_slice(
            ep,
            "x7k2p",
            "IPv4",
            web(),
            vec![kcm_endpoint("10.0.0.1", "a", true), kcm_endpoint("10.0.0.2", "c", false)],
        ),
        kcm_slice(ep, "q9w3z", "IPv6", web(), vec![kcm_endpoint("2001:db8::1", "b", true)]),
        kcm_slice(ep, "m4n5b", "IPv4", vec![dport("", 53, "UDP", None)], vec![kcm_endpoint("10.0.1.1", "d", true)]),
    ]
}

#[test]
fn slices_written_by_kube_controller_manager_need_no_write() {
    let ep = custom_endpoints();
    let existing = kcm_slices(&ep);
    let p = plan_for(&ep, &existing, &Config::default());
    assert!(p.is_noop(), "{p:#?}");
    assert!(p.events.is_empty());
    assert_eq!((p.stats.endpoints_added, p.stats.endpoints_updated, p.stats.endpoints_removed), (0, 0, 0));
    assert_eq!((p.stats.desired_endpoints, p.stats.num_slices, p.stats.desired_slices), (4, 3, 3));
}

#[test]
fn a_changed_address_rewrites_only_its_kcm_slice_in_place() {
    let mut ep = custom_endpoints();
    let existing = kcm_slices(&ep);
    // 10.0.0.2 becomes ready.
    let subsets = ep.subsets.as_mut().unwrap();
    let moved = subsets[0].not_ready_addresses.take().unwrap();
    subsets[0].addresses.as_mut().unwrap().extend(moved);
    let mut cluster = Cluster::new(existing);
    let cached = cluster.list();
    let p = plan_for(&ep, &cached, &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0), "{p:#?}");
    let u = &p.update[0];
    assert_eq!(u.metadata.name.as_deref(), Some("ext-x7k2p"));
    assert_eq!(
        u.metadata.resource_version,
        cached.iter().find(|s| s.metadata.name == u.metadata.name).unwrap().metadata.resource_version,
        "conditional update"
    );
    assert_eq!(u.metadata.uid.as_deref(), Some("kcm-x7k2p"));
    assert_eq!(p.stats.endpoints_updated, 1);
    cluster.apply(&p).unwrap();
    assert!(plan_for(&ep, &cluster.list(), &Config::default()).is_noop());
}

#[test]
fn duplicate_kcm_slices_from_a_stale_cache_are_pruned_to_one() {
    let ep = custom_endpoints();
    let mut existing = kcm_slices(&ep);
    let mut dup = existing[0].clone();
    dup.metadata.name = Some("ext-aaaaa".into());
    dup.metadata.uid = Some("kcm-dup".into());
    existing.push(dup);
    let p = plan_for(&ep, &existing, &Config::default());
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 0, 1), "{p:#?}");
    // Both are up to date; the first by name is kept.
    assert_eq!(p.delete[0].metadata.name.as_deref(), Some("ext-x7k2p"));
}

#[test]
fn an_endpoints_with_reserved_labels_is_not_rewritten_every_sync() {
    // DIFFERENCES 5: upstream rewrites this slice on every sync.
    let mut ep = custom_endpoints();
    ep.metadata.labels.as_mut().unwrap().insert(LABEL_SERVICE_NAME.into(), "something-else".into());
    let mut cluster = Cluster::default();
    cluster.apply(&plan_for(&ep, &[], &Config::default())).unwrap();
    for s in cluster.list() {
        assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME], "ext", "the reserved label wins");
    }
    assert!(plan_for(&ep, &cluster.list(), &Config::default()).is_noop());
}
