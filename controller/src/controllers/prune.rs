//! What the caches keep of each object: only the fields the controllers read.
//!
//! Pods dominate memory in large clusters; keeping only identity, labels, deletion state, the
//! fields that shape an endpoint (node, hostname, subdomain, container ports, sidecar restart
//! policy) and the status that decides readiness (phase, IPs, Ready condition) cuts a cached Pod to
//! a small fraction of its size. Managed fields are dropped everywhere, except that slices keep the
//! manager names and times (without the field sets) to detect a second writer.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn slim_container(c: &Container) -> Container {
    Container {
        name: c.name.clone(),
        ports: c.ports.as_ref().map(|ps| {
            ps.iter()
                .map(|p| ContainerPort {
                    name: p.name.clone(),
                    container_port: p.container_port,
                    protocol: p.protocol.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        restart_policy: c.restart_policy.clone(),
        ..Default::default()
    }
}

/// Keeps only what the endpoint controllers read of a Pod.
pub fn pod(p: &mut Pod) {
    let m = std::mem::take(&mut p.metadata);
    p.metadata = ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        deletion_timestamp: m.deletion_timestamp,
        creation_timestamp: m.creation_timestamp,
        ..Default::default()
    };
    if let Some(spec) = p.spec.take() {
        p.spec = Some(PodSpec {
            node_name: spec.node_name,
            hostname: spec.hostname,
            subdomain: spec.subdomain,
            host_network: spec.host_network,
            containers: spec.containers.iter().map(slim_container).collect(),
            init_containers: spec.init_containers.as_ref().map(|cs| cs.iter().map(slim_container).collect()),
            ..Default::default()
        });
    }
    if let Some(status) = p.status.take() {
        p.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            conditions: status.conditions.map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect()),
            ..Default::default()
        });
    }
}

/// Drops the field sets of an EndpointSlice's managed fields (keeps manager, operation, time).
pub fn endpoint_slice(s: &mut EndpointSlice) {
    if let Some(mf) = s.metadata.managed_fields.as_mut() {
        for e in mf.iter_mut() {
            e.fields_v1 = None;
        }
    }
}

/// Drops managed fields.
pub fn managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, PodCondition, PodIP};

    #[test]
    fn pod_keeps_what_endpoints_need() {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                resource_version: Some("7".into()),
                labels: Some([("app".to_string(), "x".to_string())].into()),
                annotations: Some([("big".to_string(), "x".repeat(1000))].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                hostname: Some("h".into()),
                subdomain: Some("s".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("img".into()),
                    env: Some(vec![EnvVar { name: "A".into(), ..Default::default() }]),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                init_containers: Some(vec![Container {
                    name: "side".into(),
                    restart_policy: Some("Always".into()),
                    ports: Some(vec![ContainerPort { container_port: 9, ..Default::default() }]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.0.0.1".into()),
                pod_ips: Some(vec![PodIP { ip: "10.0.0.1".into() }]),
                conditions: Some(vec![
                    PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() },
                    PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..Default::default() },
                ]),
                ..Default::default()
            }),
        };
        pod(&mut p);
        assert!(p.metadata.annotations.is_none());
        assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.containers[0].image, None);
        assert_eq!(spec.containers[0].env, None);
        assert_eq!(spec.containers[0].ports.as_ref().unwrap()[0].container_port, 80);
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].restart_policy.as_deref(), Some("Always"));
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
        assert!(crate::podutil::is_pod_ready(&p));
    }
}
