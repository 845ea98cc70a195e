//! The EndpointSlice mirroring controller against a real kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use epslice::controllers::ControllerName;
use epslice_integration_tests::*;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

const MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";

fn custom_endpoints(name: &str, ips: &[&str], port: i32) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("team".to_string(), "db".to_string())].into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ips.iter().map(|ip| EndpointAddress { ip: ip.to_string(), ..Default::default() }).collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("pg".into()),
                port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    }
}

fn selectorless(name: &str) -> Service {
    let mut s = service(name, "unused", &[("pg", 5432, IntOrString::Int(5432))]);
    s.spec.as_mut().unwrap().selector = None;
    s
}

fn mirrored(s: &[EndpointSlice]) -> Vec<&EndpointSlice> {
    s.iter()
        .filter(|x| {
            x.metadata.labels.as_ref().and_then(|l| l.get("endpointslice.kubernetes.io/managed-by")).map(String::as_str)
                == Some(MIRRORING)
        })
        .collect()
}

async fn setup(
    prefix: &str,
    tweak: impl FnOnce(&mut epslice::controllers::Options),
) -> (kube::Client, String, Running) {
    let client = envtest::shared().client().await.unwrap();
    let ns = envtest::create_namespace(&client, prefix).await.unwrap();
    let ctl = start(&client, &ns, |o| {
        o.controllers = vec![ControllerName::EndpointSliceMirroring];
        tweak(o);
    })
    .await;
    (client, ns, ctl)
}

/// Upstream conformance: "should mirror a custom Endpoints resource through create update and delete".
#[tokio::test]
async fn mirrors_custom_endpoints_through_create_update_delete() {
    let (client, ns, ctl) = setup("mirror-crud", |_| {}).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &selectorless("db")).await.unwrap();
    let created =
        eps.create(&PostParams::default(), &custom_endpoints("db", &["192.0.2.1", "192.0.2.2"], 5432)).await.unwrap();
    let s = wait_slices(&client, &ns, "db", "mirrored", |s| mirrored(s).len() == 1 && endpoint_count(s) == 2).await;
    let m = mirrored(&s)[0];
    assert_eq!(m.address_type, "IPv4");
    let port = &m.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("pg"), Some(5432)));
    assert_eq!(m.metadata.labels.as_ref().unwrap().get("team").map(String::as_str), Some("db"), "labels mirrored");
    let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Endpoints", created.metadata.uid.as_deref().unwrap()));

    eps.replace("db", &PostParams::default(), &{
        let mut e = custom_endpoints("db", &["192.0.2.3"], 6432);
        e.metadata.resource_version = eps.get("db").await.unwrap().metadata.resource_version;
        e
    })
    .await
    .unwrap();
    wait_slices(&client, &ns, "db", "updated", |s| {
        let m = mirrored(s);
        m.len() == 1 && addresses(s) == vec!["192.0.2.3"] && m[0].ports.as_ref().unwrap()[0].port == Some(6432)
    })
    .await;

    eps.delete("db", &DeleteParams::default()).await.unwrap();
    wait_slices(&client, &ns, "db", "deleted", |s| mirrored(s).is_empty()).await;
    ctl.stop().await;
}

#[tokio::test]
async fn a_service_gaining_a_selector_stops_mirroring_and_losing_it_resumes() {
    let (client, ns, ctl) = setup("mirror-selector", |_| {}).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &selectorless("flip")).await.unwrap();
    eps.create(&PostParams::default(), &custom_endpoints("flip", &["192.0.2.9"], 5432)).await.unwrap();
    wait_slices(&client, &ns, "flip", "mirrored", |s| mirrored(s).len() == 1).await;
    svcs.patch(
        "flip",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"selector": {"app": "flip"}}})),
    )
    .await
    .unwrap();
    wait_slices(&client, &ns, "flip", "mirrored slices removed", |s| mirrored(s).is_empty()).await;
    svcs.patch("flip", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"selector": null}})))
        .await
        .unwrap();
    // The Endpoints object may have been rewritten meanwhile by nobody (only the mirroring
    // controller runs here), so it is mirrored again.
    wait_slices(&client, &ns, "flip", "mirrored again", |s| {
        mirrored(s).len() == 1 && addresses(s) == vec!["192.0.2.9"]
    })
    .await;
    ctl.stop().await;
}

#[tokio::test]
async fn skip_mirror_label_and_too_many_addresses() {
    let (client, ns, ctl) = setup("mirror-bad", |o| o.mirroring.core.max_endpoints_per_subset = 3).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    // Skip-mirror label: never mirrored.
    svcs.create(&PostParams::default(), &selectorless("skip")).await.unwrap();
    let mut skip = custom_endpoints("skip", &["192.0.2.20"], 5432);
    skip.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("endpointslice.kubernetes.io/skip-mirror".into(), "true".into());
    eps.create(&PostParams::default(), &skip).await.unwrap();
    // Five addresses with a maximum of three per subset: three mirrored, an event.
    svcs.create(&PostParams::default(), &selectorless("many")).await.unwrap();
    eps.create(
        &PostParams::default(),
        &custom_endpoints("many", &["192.0.2.31", "192.0.2.32", "192.0.2.33", "192.0.2.34", "192.0.2.35"], 5432),
    )
    .await
    .unwrap();
    wait_slices(&client, &ns, "many", "3 of 5 mirrored", |s| mirrored(s).len() == 1 && endpoint_count(s) == 3).await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let t0 = std::time::Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap().items;
        if list.iter().any(|e| e.reason.as_deref() == Some("TooManyAddressesToMirror")) {
            break;
        }
        assert!(
            t0.elapsed() < CONVERGE,
            "no TooManyAddressesToMirror event: {:?}",
            list.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(mirrored(&slices(&client, &ns, "skip").await).is_empty(), "skip-mirror honoured");
    ctl.stop().await;
}
