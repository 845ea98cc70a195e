//! Zero writes on takeover: kube-controller-manager's own endpointslice-controller converges a
//! varied workload, is stopped, and epslice starts on the objects it wrote. epslice must find
//! every slice already correct and write nothing. (Own test binary: kube-controller-manager acts
//! on every namespace, so it must not share a control plane with the other tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::kwok;
use epslice::controllers::ControllerName;
use epslice_integration_tests::*;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

fn node(i: usize) -> String {
    let nodes = kwok::default_nodes();
    nodes[i % nodes.len()].name.clone()
}

async fn workload(svcs: &Api<Service>, pods: &Api<Pod>) -> BTreeMap<String, usize> {
    let mut want = BTreeMap::new();
    // Plain, int target port, 250 pods (100/100/50 packing).
    svcs.create(&PostParams::default(), &service("big", "big", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    for i in 0..250 {
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("big-{i}"), &node(i), &[("app", "big")], &[("http", 8080)]),
        )
        .await
        .unwrap();
    }
    want.insert("big".to_string(), 250);
    // Named port resolving to two different container ports, plus one not-ready pod.
    svcs.create(&PostParams::default(), &service("named", "named", &[("web", 80, IntOrString::String("web".into()))]))
        .await
        .unwrap();
    for i in 0..4 {
        let port = if i % 2 == 0 { 8080 } else { 9090 };
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("named-{i}"), &node(i), &[("app", "named")], &[("web", port)]),
        )
        .await
        .unwrap();
    }
    let p = kwok::with_custom_status(kwok::pod("named-nr", &node(5), &[("app", "named")], &[("web", 8080)]));
    pods.create(&PostParams::default(), &p).await.unwrap();
    kwok::set_pod_status(pods, "named-nr", kwok::running_status(&["10.250.9.9"], false)).await.unwrap();
    want.insert("named".to_string(), 5);
    // Dual-stack.
    let mut dual = service("dual", "dual", &[("http", 80, IntOrString::Int(8080))]);
    dual.spec.as_mut().unwrap().ip_family_policy = Some("RequireDualStack".into());
    svcs.create(&PostParams::default(), &dual).await.unwrap();
    for i in 0..3 {
        let name = format!("dual-{i}");
        pods.create(
            &PostParams::default(),
            &kwok::with_custom_status(kwok::pod(&name, &node(i), &[("app", "dual")], &[("http", 8080)])),
        )
        .await
        .unwrap();
        kwok::set_pod_status(
            pods,
            &name,
            kwok::running_status(&[&format!("10.250.8.{i}"), &format!("fd00:250::8:{i}")], true),
        )
        .await
        .unwrap();
    }
    want.insert("dual".to_string(), 6);
    // Headless with hostnames, publishNotReadyAddresses.
    let mut hl = service("hl", "hl", &[]);
    let spec = hl.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ports = None;
    spec.publish_not_ready_addresses = Some(true);
    svcs.create(&PostParams::default(), &hl).await.unwrap();
    for i in 0..3 {
        let mut p = kwok::pod(&format!("hl-{i}"), &node(i), &[("app", "hl")], &[]);
        p.spec.as_mut().unwrap().hostname = Some(format!("hl-{i}"));
        p.spec.as_mut().unwrap().subdomain = Some("hl".into());
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    want.insert("hl".to_string(), 3);
    // Topology-aware hints.
    let mut topo = service("topo", "topo", &[("http", 80, IntOrString::Int(8080))]);
    topo.metadata.annotations = Some([("service.kubernetes.io/topology-mode".to_string(), "Auto".to_string())].into());
    svcs.create(&PostParams::default(), &topo).await.unwrap();
    for i in 0..12 {
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("topo-{i}"), &node(i), &[("app", "topo")], &[("http", 8080)]),
        )
        .await
        .unwrap();
    }
    want.insert("topo".to_string(), 12);
    // Selector-less with custom Endpoints: mirrored.
    let mut ext = service("ext", "unused", &[("pg", 5432, IntOrString::Int(5432))]);
    ext.spec.as_mut().unwrap().selector = None;
    svcs.create(&PostParams::default(), &ext).await.unwrap();
    let eps: Api<Endpoints> = Api::namespaced(svcs.clone().into_client(), svcs.namespace().unwrap_or("default"));
    eps.create(
        &PostParams::default(),
        &Endpoints {
            metadata: kube::api::ObjectMeta { name: Some("ext".into()), ..Default::default() },
            subsets: Some(vec![k8s_openapi::api::core::v1::EndpointSubset {
                addresses: Some(
                    ["192.0.2.1", "192.0.2.2"]
                        .iter()
                        .map(|ip| k8s_openapi::api::core::v1::EndpointAddress {
                            ip: ip.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                    name: Some("pg".into()),
                    port: 5432,
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
        },
    )
    .await
    .unwrap();
    want.insert("ext".to_string(), 2);
    // Selects nothing: placeholder.
    svcs.create(&PostParams::default(), &service("empty", "nobody", &[("http", 80, IntOrString::Int(80))]))
        .await
        .unwrap();
    want.insert("empty".to_string(), 0);
    want
}

async fn snapshot_endpoints(api: &Api<Endpoints>) -> BTreeMap<String, String> {
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.unwrap(), s.metadata.resource_version.unwrap()))
        .collect()
}

async fn snapshot(api: &Api<EndpointSlice>) -> BTreeMap<String, String> {
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.unwrap(), s.metadata.resource_version.unwrap()))
        .collect()
}

#[tokio::test]
async fn zero_writes_when_taking_over_from_kube_controller_manager() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "takeover").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);

    let mut kcm = cp
        .start_kube_controller_manager(
            &[
                "endpointslice-controller".to_string(),
                "endpoints-controller".to_string(),
                "endpointslice-mirroring-controller".to_string(),
            ],
            &[],
        )
        .await
        .unwrap();
    let want = workload(&svcs, &pods).await;
    for (svc, n) in &want {
        let n = *n;
        wait_slices(&client, &ns, svc, "kube-controller-manager converged", |s| {
            endpoint_count(s) == n && !s.is_empty()
        })
        .await;
    }
    // The Endpoints: the primary family only (dual: 3 of 6).
    for (svc, n) in want.iter().filter(|(s, _)| *s != "ext") {
        let n = if svc == "dual" { 3 } else { *n };
        wait_endpoints(&client, &ns, svc, "kube-controller-manager converged Endpoints", |e| {
            let (r, nr) = endpoints_counts(e);
            e.is_some() && r + nr == n
        })
        .await;
    }
    // Quiescence: nothing changes for 3 s.
    let mut last = snapshot(&slices_api).await;
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = snapshot(&slices_api).await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    kcm.stop();
    // After kube-controller-manager stopped: whatever it wrote until then is the baseline.
    let endpoints_before = snapshot_endpoints(&endpoints_api).await;
    let topo = slices(&client, &ns, "topo").await;
    assert!(
        topo.iter().flat_map(|s| s.endpoints.iter().flatten()).all(|e| e.hints.is_some()),
        "kube-controller-manager set topology hints: {}",
        describe(&topo)
    );

    let ctl = start(&client, &ns, |o| {
        o.controllers =
            vec![ControllerName::EndpointSlice, ControllerName::Endpoints, ControllerName::EndpointSliceMirroring];
    })
    .await;
    // Every Service synced at least once, then a little longer for slice-triggered resyncs.
    let t0 = Instant::now();
    while ctl.metric("endpoint_slice_controller_syncs_total{result=\"success\"}") < (want.len() - 1) as f64 {
        assert!(t0.elapsed() < CONVERGE, "not every Service was synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ctl.writes(), (0.0, 0.0, 0.0), "epslice wrote to slices kube-controller-manager had converged");
    assert_eq!(snapshot(&slices_api).await, last, "no slice changed");
    assert_eq!(
        ctl.endpoints_writes(),
        (0.0, 0.0, 0.0),
        "epslice wrote to Endpoints kube-controller-manager had converged"
    );
    assert_eq!(snapshot_endpoints(&endpoints_api).await, endpoints_before, "no Endpoints changed");
    let mirror_writes: f64 = ["create", "update", "delete"]
        .iter()
        .map(|op| ctl.metric(&format!("endpoint_slice_mirroring_controller_changes_total{{operation=\"{op}\"}}")))
        .sum();
    assert_eq!(mirror_writes, 0.0, "epslice rewrote slices kube-controller-manager had mirrored");
    ctl.stop().await;
}
