//! The legacy Endpoints controller against a real kube-apiserver with kwok pods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use envtest::kwok;
use epslice::controllers::ControllerName;
use epslice_integration_tests::*;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

fn node(i: usize) -> String {
    let nodes = kwok::default_nodes();
    nodes[i % nodes.len()].name.clone()
}

async fn setup(prefix: &str) -> (kube::Client, String, Api<Service>, Api<Pod>, Running) {
    let client = envtest::shared().client().await.unwrap();
    let ns = envtest::create_namespace(&client, prefix).await.unwrap();
    let ctl = start(&client, &ns, |o| o.controllers = vec![ControllerName::Endpoints]).await;
    (client.clone(), ns.clone(), Api::namespaced(client.clone(), &ns), Api::namespaced(client, &ns), ctl)
}

fn over_capacity(e: Option<&Endpoints>) -> Option<String> {
    e.and_then(|e| e.metadata.annotations.clone()).and_then(|a| a.get("endpoints.kubernetes.io/over-capacity").cloned())
}

#[tokio::test]
async fn ready_and_not_ready_addresses_and_service_deletion() {
    let (client, ns, svcs, pods, ctl) = setup("ep-basic").await;
    svcs.create(&PostParams::default(), &service("web", "web", &[("http", 80, IntOrString::String("http".into()))]))
        .await
        .unwrap();
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("web-{i}"), &node(i), &[("app", "web")], &[("http", 8080)]),
        )
        .await
        .unwrap();
    }
    let p = kwok::with_custom_status(kwok::pod("web-nr", &node(3), &[("app", "web")], &[("http", 8080)]));
    pods.create(&PostParams::default(), &p).await.unwrap();
    kwok::set_pod_status(&pods, "web-nr", kwok::running_status(&["10.250.3.3"], false)).await.unwrap();
    let e =
        wait_endpoints(&client, &ns, "web", "3 ready + 1 not ready", |e| endpoints_counts(e) == (3, 1)).await.unwrap();
    let subsets = e.subsets.unwrap();
    assert_eq!(subsets.len(), 1, "one subset: same port for all pods");
    let port = &subsets[0].ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip, "10.250.3.3");
    let a = &subsets[0].addresses.as_ref().unwrap()[0];
    assert_eq!(a.target_ref.as_ref().and_then(|t| t.kind.as_deref()), Some("Pod"));
    assert!(a.node_name.is_some());
    assert!(
        e.metadata.annotations.unwrap_or_default().contains_key("endpoints.kubernetes.io/last-change-trigger-time")
    );

    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    wait_endpoints(&client, &ns, "web", "deleted with the Service", |e| e.is_none()).await;
    ctl.stop().await;
}

#[tokio::test]
async fn truncation_at_1000_prefers_ready_and_is_undone_below() {
    let (client, ns, svcs, pods, ctl) = setup("ep-1200").await;
    svcs.create(&PostParams::default(), &service("big", "big", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    // 900 ready pods (kwok) and 300 not ready ones (custom status).
    for i in 0..900 {
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("big-{i}"), &node(i), &[("app", "big")], &[("http", 8080)]),
        )
        .await
        .unwrap();
    }
    for i in 0..300 {
        let name = format!("big-nr-{i}");
        pods.create(
            &PostParams::default(),
            &kwok::with_custom_status(kwok::pod(&name, &node(i), &[("app", "big")], &[("http", 8080)])),
        )
        .await
        .unwrap();
        kwok::set_pod_status(
            &pods,
            &name,
            kwok::running_status(&[&format!("10.251.{}.{}", i / 250, i % 250 + 1)], false),
        )
        .await
        .unwrap();
    }
    let e = wait_endpoints(&client, &ns, "big", "truncated to 1000, ready first", |e| {
        endpoints_counts(e) == (900, 100) && over_capacity(e).as_deref() == Some("truncated")
    })
    .await;
    assert_eq!(over_capacity(e.as_ref()).as_deref(), Some("truncated"));

    // Back under the capacity: delete 300 of the not-ready pods' worth (all of them).
    for i in 0..300 {
        pods.delete(&format!("big-nr-{i}"), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .unwrap();
    }
    wait_endpoints(&client, &ns, "big", "900 addresses, annotation removed", |e| {
        endpoints_counts(e) == (900, 0) && over_capacity(e).is_none()
    })
    .await;
    ctl.stop().await;
}

#[tokio::test]
async fn selectorless_endpoints_are_left_alone_and_orphans_cleaned_at_start() {
    let client = envtest::shared().client().await.unwrap();
    let ns = envtest::create_namespace(&client, "ep-orphans").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let custom = |name: &str, annotations: Option<(&str, &str)>| Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: annotations.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress { ip: "192.0.2.10".into(), ..Default::default() }]),
            ports: Some(vec![EndpointPort { port: 5432, ..Default::default() }]),
            ..Default::default()
        }]),
    };
    // A selectorless Service with hand-written Endpoints.
    let mut ext = service("external-db", "x", &[("", 5432, IntOrString::Int(5432))]);
    ext.spec.as_mut().unwrap().selector = None;
    svcs.create(&PostParams::default(), &ext).await.unwrap();
    eps.create(&PostParams::default(), &custom("external-db", None)).await.unwrap();
    // Leftovers: one without a Service, one leader-election record.
    eps.create(&PostParams::default(), &custom("orphan", None)).await.unwrap();
    eps.create(&PostParams::default(), &custom("lock", Some(("control-plane.alpha.kubernetes.io/leader", "{}"))))
        .await
        .unwrap();

    let ctl = start(&client, &ns, |o| o.controllers = vec![ControllerName::Endpoints]).await;
    wait_endpoints(&client, &ns, "orphan", "orphan deleted at start-up", |e| e.is_none()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(eps.get_opt("lock").await.unwrap().is_some(), "leader-election record kept");
    let kept = eps.get("external-db").await.unwrap();
    assert_eq!(kept.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip, "192.0.2.10", "selectorless left alone");
    assert_eq!(ctl.endpoints_writes(), (0.0, 0.0, 1.0), "only the orphan's delete");
    ctl.stop().await;
}

/// Upstream's "rapid readiness flap": a pod goes not-ready and back before the watch delivers
/// the controller's own write. The final object must show the final state.
#[tokio::test]
async fn rapid_readiness_flaps_end_in_the_right_state() {
    let (client, ns, svcs, pods, ctl) = setup("ep-flap").await;
    svcs.create(&PostParams::default(), &service("flap", "flap", &[("http", 80, IntOrString::Int(8080))]))
        .await
        .unwrap();
    let p = kwok::with_custom_status(kwok::pod("flap-0", &node(0), &[("app", "flap")], &[("http", 8080)]));
    pods.create(&PostParams::default(), &p).await.unwrap();
    kwok::set_pod_status(&pods, "flap-0", kwok::running_status(&["10.250.4.4"], true)).await.unwrap();
    wait_endpoints(&client, &ns, "flap", "ready", |e| endpoints_counts(e) == (1, 0)).await;
    for round in 0..20 {
        kwok::set_pod_status(&pods, "flap-0", kwok::running_status(&["10.250.4.4"], round % 2 == 0)).await.unwrap();
    }
    // 20 flips starting with ready=true: the last write is ready=false.
    wait_endpoints(&client, &ns, "flap", "final state not ready", |e| endpoints_counts(e) == (0, 1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        endpoints_counts(Api::<Endpoints>::namespaced(client.clone(), &ns).get_opt("flap").await.unwrap().as_ref()),
        (0, 1)
    );
    pods.patch(
        "flap-0",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    wait_endpoints(&client, &ns, "flap", "pod no longer selected", |e| endpoints_counts(e) == (0, 0)).await;
    ctl.stop().await;
}

/// `--endpoints-wait-for-slices` (on by default): each readiness change is written to the
/// Service's slice before its Endpoints. The two writes are ordered by their resourceVersions,
/// which on this control plane are etcd revisions (opaque to clients in general). The bound is
/// raised here so that a slow slice write on a loaded test machine cannot end the wait.
#[tokio::test]
async fn a_readiness_change_reaches_the_slice_before_the_endpoints() {
    let client = envtest::shared().client().await.unwrap();
    let ns = envtest::create_namespace(&client, "ep-order").await.unwrap();
    let ctl = start(&client, &ns, |o| {
        o.controllers = vec![ControllerName::EndpointSlice, ControllerName::Endpoints];
        o.endpoints_wait_for_slices = Duration::from_secs(10);
    })
    .await;
    let (svcs, pods): (Api<Service>, Api<Pod>) =
        (Api::namespaced(client.clone(), &ns), Api::namespaced(client.clone(), &ns));
    svcs.create(&PostParams::default(), &service("order", "order", &[("http", 80, IntOrString::Int(8080))]))
        .await
        .unwrap();
    let p = kwok::with_custom_status(kwok::pod("order-0", &node(0), &[("app", "order")], &[("http", 8080)]));
    pods.create(&PostParams::default(), &p).await.unwrap();
    let ready_in_slice = |s: &[k8s_openapi::api::discovery::v1::EndpointSlice]| {
        s.iter().flat_map(|s| s.endpoints.iter().flatten()).find_map(|e| e.conditions.as_ref().and_then(|c| c.ready))
    };
    let rv = |m: &ObjectMeta| m.resource_version.as_deref().unwrap().parse::<u64>().unwrap();
    for round in 0..8 {
        let ready = round % 2 == 0;
        kwok::set_pod_status(&pods, "order-0", kwok::running_status(&["10.250.5.5"], ready)).await.unwrap();
        let want = if ready { (1, 0) } else { (0, 1) };
        let e =
            wait_endpoints(&client, &ns, "order", "Endpoints follow", |e| endpoints_counts(e) == want).await.unwrap();
        let s = wait_slices(&client, &ns, "order", "slice follows", |s| ready_in_slice(s) == Some(ready)).await;
        let (slice_rv, endpoints_rv) = (rv(&s[0].metadata), rv(&e.metadata));
        assert!(slice_rv < endpoints_rv, "round {round}: slice written at {slice_rv}, Endpoints at {endpoints_rv}");
    }
    let waited = ctl.metric("epslice_endpoints_controller_slices_first_wait_seconds_count");
    assert!(waited >= 8.0, "every Endpoints sync went through the wait: {waited}");
    ctl.stop().await;
}

/// Found in review: the trigger-time tracker remembered Services the controller skips (no
/// selector), so a Service given a selector later took its first pod's Ready time where upstream
/// takes the Service's creation time (it never computes trigger times for skipped Services).
#[tokio::test]
async fn a_service_given_a_selector_later_starts_from_its_creation_time() {
    let (client, ns, svcs, pods, ctl) = setup("ep-late-selector").await;
    let mut svc = service("late", "late", &[("http", 80, IntOrString::Int(8080))]);
    svc.spec.as_mut().unwrap().selector = None;
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let t0 = created.metadata.creation_timestamp.unwrap().0;
    // Past the creation's whole second, so the pod's Ready time differs from it.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    pods.create(&PostParams::default(), &kwok::pod("late-0", &node(0), &[("app", "late")], &[("http", 8080)]))
        .await
        .unwrap();
    wait_ready_ips(&pods, &["late-0".to_string()]).await;
    svcs.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"selector": {"app": "late"}}})),
    )
    .await
    .unwrap();
    let e = wait_endpoints(&client, &ns, "late", "the pod's address", |e| endpoints_counts(e) == (1, 0)).await.unwrap();
    let annotation = e.metadata.annotations.unwrap()["endpoints.kubernetes.io/last-change-trigger-time"].clone();
    let trigger: k8s_openapi::jiff::Timestamp = annotation.parse().unwrap();
    assert_eq!(trigger, t0, "the Service's creation time, not the pod's Ready time ({annotation})");
    ctl.stop().await;
}

/// Found in review: a failed write's `FailedToUpdateEndpoint` event was recorded on the Service;
/// upstream records it on the Endpoints object. Here an admission policy refuses every Endpoints
/// write in the test's namespace.
#[tokio::test]
async fn a_failed_write_is_reported_on_the_endpoints_object() {
    use k8s_openapi::api::events::v1::Event;
    let (client, ns, svcs, pods, ctl) = setup("ep-failed").await;
    let probe = Endpoints { metadata: ObjectMeta { name: Some("probe".into()), ..Default::default() }, subsets: None };
    let refusal = Refusal::install(&client, &ns, ("", "endpoints"), "false", probe).await;
    svcs.create(&PostParams::default(), &service("refused", "refused", &[("http", 80, IntOrString::Int(8080))]))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &kwok::pod("refused-0", &node(0), &[("app", "refused")], &[("http", 8080)]))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let t0 = std::time::Instant::now();
    let ev = loop {
        let found = events.list(&Default::default()).await.unwrap().items;
        if let Some(e) = found.into_iter().find(|e| e.reason.as_deref() == Some("FailedToUpdateEndpoint")) {
            break e;
        }
        assert!(t0.elapsed() < CONVERGE, "no FailedToUpdateEndpoint event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let regarding = ev.regarding.unwrap();
    assert_eq!((regarding.kind.as_deref(), regarding.name.as_deref()), (Some("Endpoints"), Some("refused")));
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    refusal.remove().await;
    ctl.stop().await;
}
