//! The desired subsets of a Service, built from its pods (upstream `syncService`'s per-pod loop,
//! `podToEndpointAddressForService`, `endpointPortFromServicePort` and `addEndpointSubset`).
//!
//! Every pod that [`podutil::should_pod_be_in_endpoints`] accepts (terminating pods only when
//! the Service publishes not-ready addresses) gives one address of the Service's primary IP
//! family ([`endpoint_family`]). For each Service port the pod resolves ([`podutil::find_port`])
//! a single-address subset is emitted, in `addresses` when the pod is Ready or the Service sets
//! `publishNotReadyAddresses`, otherwise in `notReadyAddresses`. A headless Service (`clusterIP:
//! None`) without ports gives one port-less subset per pod; a Service without ports that is not
//! exactly `None` gives nothing. The result is repacked ([`super::repack::repack_subsets`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Service, ServicePort,
};

use super::PlanWarning;
use super::repack::{count_addresses, repack_subsets};
use crate::pod::CachedPod;
use crate::podutil::{self, CLUSTER_IP_NONE, IpFamily};

/// The IP family of the addresses of `service`'s Endpoints, for `pod` (upstream
/// `podToEndpointAddressForService`):
///
/// 1. `spec.ipFamilies[0]`: `IPv6` means IPv6, any other value IPv4;
/// 2. else, when `spec.clusterIP` is set and not `None`: the family of the cluster IP (text that
///    does not parse counts as IPv4);
/// 3. else (headless or no cluster IP yet): the family of the pod's `status.podIP` (IPv4 when
///    unset or unparseable).
pub fn endpoint_family(service: &Service, pod: &CachedPod) -> IpFamily {
    let spec = service.spec.as_ref();
    let v6 = |yes: bool| if yes { IpFamily::IPv6 } else { IpFamily::IPv4 };
    if let Some(first) = spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        return v6(first == IpFamily::IPv6.as_str());
    }
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    if !cluster_ip.is_empty() && cluster_ip != CLUSTER_IP_NONE {
        return v6(podutil::is_ipv6_string(cluster_ip));
    }
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("");
    v6(podutil::is_ipv6_string(pod_ip))
}

/// The Endpoints address of `pod` for `service`, without hostname (upstream
/// `podToEndpointAddressForService`): the first entry of `status.podIPs` of the
/// [`endpoint_family`], in canonical text (`010.1.2.3` becomes `10.1.2.3`); `nodeName` is
/// `spec.nodeName` and present even when empty, as upstream writes it; `targetRef` is
/// `{kind: Pod, namespace, name, uid}`.
///
/// `None` when the pod has no IP of that family. Entries that do not parse are skipped (see the
/// module DIFFERENCES); [`podutil::pod_ips`] reports them.
pub fn pod_to_endpoint_address(service: &Service, pod: &CachedPod) -> Option<EndpointAddress> {
    let family = endpoint_family(service, pod);
    let (valid, _invalid) = podutil::pod_ips(pod);
    let ip = valid.into_iter().find(|(f, _)| *f == family)?.1;
    Some(EndpointAddress {
        ip,
        node_name: Some(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default().to_owned()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.as_deref().map(str::to_owned),
            name: pod.metadata.name.as_deref().map(str::to_owned),
            uid: pod.metadata.uid.as_deref().map(str::to_owned),
            ..Default::default()
        }),
        hostname: None,
    })
}

/// The Endpoints port for a Service port resolved to `port` (upstream
/// `endpointPortFromServicePort`): the Service port's name, protocol (`TCP` when unset, the
/// apiserver default) and appProtocol. An empty name is left out, as Go's `omitempty` does.
pub fn endpoint_port_from_service_port(service_port: &ServicePort, port: i32) -> EndpointPort {
    EndpointPort {
        name: service_port.name.clone().filter(|n| !n.is_empty()),
        port,
        protocol: Some(podutil::service_port_protocol(service_port).to_owned()),
        app_protocol: service_port.app_protocol.clone(),
    }
}

/// The desired subsets of a Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredSubsets {
    /// Repacked subsets (not truncated).
    pub subsets: Vec<EndpointSubset>,
    /// Ready addresses in [`Self::subsets`], counted per subset.
    pub ready: usize,
    /// Not-ready addresses in [`Self::subsets`], counted per subset.
    pub not_ready: usize,
    /// Pods or ports left out, and why.
    pub warnings: Vec<PlanWarning>,
}

/// Builds the desired, repacked subsets of `service` from `pods` (upstream `syncService` up to
/// `RepackSubsets`).
///
/// Only pods in the Service's namespace that its selector matches are considered, so the
/// caller may pass a superset. Pods are processed in (name, uid) order, so the result does not
/// depend on the order of `pods`: when two pods give the same address (same IP and same pod UID,
/// which a real cluster never produces) the first one's address is kept and
/// [`PlanWarning::DuplicateAddress`] reported.
pub fn desired_subsets(service: &Service, pods: &[&CachedPod]) -> DesiredSubsets {
    let mut warnings = Vec::new();
    let spec = service.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let headless_none = spec.and_then(|s| s.cluster_ip.as_deref()) == Some(CLUSTER_IP_NONE);

    if service_ports.len() > 1 && service_ports.iter().any(|p| p.name.as_deref().unwrap_or("").is_empty()) {
        warnings.push(PlanWarning::UnnamedServicePorts { ports: service_ports.len() });
    }

    let mut selected: Vec<&CachedPod> =
        pods.iter().copied().filter(|p| podutil::service_selects_pod(service, p)).collect();
    selected.sort_by(|a, b| {
        (a.metadata.name.as_deref(), a.metadata.uid.as_deref())
            .cmp(&(b.metadata.name.as_deref(), b.metadata.uid.as_deref()))
    });

    // (ip, uid) -> pod name of the first pod that gave that address.
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut single: Vec<EndpointSubset> = Vec::new();
    for pod in selected {
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default().to_owned();
        if !podutil::should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        for ip in podutil::pod_ips(pod).1 {
            warnings.push(PlanWarning::InvalidPodIp { pod: pod_name.clone(), ip });
        }
        let Some(mut address) = pod_to_endpoint_address(service, pod) else {
            warnings
                .push(PlanWarning::NoAddressOfFamily { pod: pod_name.clone(), family: endpoint_family(service, pod) });
            continue;
        };
        if podutil::should_set_hostname(pod, service) {
            address.hostname = pod.spec.as_ref().and_then(|s| s.hostname.as_deref()).map(str::to_owned);
        }
        let key = (address.ip.clone(), pod.metadata.uid.as_deref().unwrap_or_default().to_owned());
        match seen.get(&key) {
            Some(first) if *first != pod_name => {
                warnings.push(PlanWarning::DuplicateAddress {
                    ip: address.ip.clone(),
                    pod: pod_name.clone(),
                    kept: first.clone(),
                });
            }
            Some(_) => {}
            None => {
                seen.insert(key, pod_name.clone());
            }
        }

        let ready = publish_not_ready || podutil::is_pod_ready(pod);
        let mut add = |ports: Option<Vec<EndpointPort>>| {
            let addresses = Some(vec![address.clone()]);
            single.push(if ready {
                EndpointSubset { addresses, not_ready_addresses: None, ports }
            } else {
                EndpointSubset { addresses: None, not_ready_addresses: addresses, ports }
            });
        };
        if service_ports.is_empty() {
            // Only a Service with clusterIP exactly `None` may have no ports.
            if headless_none {
                add(None);
            }
            continue;
        }
        for service_port in service_ports {
            match podutil::find_port(pod, service_port) {
                Ok(port) => add(Some(vec![endpoint_port_from_service_port(service_port, port)])),
                Err(err) => warnings.push(PlanWarning::PortNotFound(err)),
            }
        }
    }

    let subsets = repack_subsets(&single);
    let (ready, not_ready) = count_addresses(&subsets);
    DesiredSubsets { subsets, ready, not_ready, warnings }
}
