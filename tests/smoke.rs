//! Smoke tests: the real control plane (etcd + kube-apiserver + kwok) behaves as the other tests
//! rely on. Each test works in its own namespace on the control plane shared by this binary.

use std::time::Duration;

use envtest::kwok;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

const T: Duration = Duration::from_secs(30);

fn service(name: &str, app: &str) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), app.to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn nodes_span_three_zones_and_are_ready() -> anyhow::Result<()> {
    let cp = envtest::shared();
    let client = cp.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for spec in kwok::default_nodes() {
        let start = std::time::Instant::now();
        while !kwok::node_ready(&client, &spec.name).await {
            anyhow::ensure!(start.elapsed() < T, "node {} never became Ready", spec.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let n = nodes.get(&spec.name).await?;
        let labels = n.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(kwok::ZONE_LABEL), Some(&spec.zone));
        let cpu = n.status.and_then(|s| s.allocatable).and_then(|a| a.get("cpu").cloned());
        assert_eq!(cpu.map(|q| q.0), Some(spec.cpu.to_string()));
    }
    let zones: std::collections::BTreeSet<_> = kwok::default_nodes().into_iter().map(|n| n.zone).collect();
    assert!(zones.len() >= 3, "{zones:?}");
    Ok(())
}

#[tokio::test]
async fn pods_become_ready_with_ips_and_a_watch_sees_it() -> anyhow::Result<()> {
    let cp = envtest::shared();
    let client = cp.client().await?;
    let ns = envtest::create_namespace(&client, "smoke-ready").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let svc = services.create(&PostParams::default(), &service("web", "web")).await?;
    assert!(
        svc.spec.and_then(|s| s.cluster_ip).is_some_and(|ip| ip.starts_with("10.96.")),
        "ClusterIP from the v4 range"
    );

    // Watch first, so the test sees the transitions kwok makes.
    let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
    let nodes = kwok::default_nodes();
    for (i, node) in nodes.iter().take(3).enumerate() {
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("web-{i}"), &node.name, &[("app", "web")], &[("http", 8080)]),
        )
        .await?;
    }
    let mut ready = std::collections::BTreeSet::new();
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(T, async {
        while let Some(p) = stream.try_next().await? {
            if kwok::is_ready(Some(&p)) {
                ready.insert(p.metadata.name.clone().unwrap_or_default());
            }
            if ready.len() == 3 {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("only {ready:?} became ready through the watch"))??;

    let listed = pods.list(&ListParams::default().labels("app=web")).await?;
    let mut ips = std::collections::BTreeSet::new();
    for p in &listed.items {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        assert!(ip.starts_with("10.244."), "pod IP {ip} from kwok's CIDR");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");

    // The real kubectl (pinned version) sees the same pods.
    let out = cp.kubectl().args(["get", "pods", "-n", &ns, "-l", "app=web", "-o", "wide", "--no-headers"]).output()?;
    assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(text.lines().count(), 3, "{text}");
    for ip in &ips {
        assert!(text.contains(ip.as_str()), "kubectl output lacks {ip}:\n{text}");
    }
    assert!(text.lines().all(|l| l.contains("Running") && l.contains("1/1")), "{text}");
    Ok(())
}

#[tokio::test]
async fn tests_can_make_pods_not_ready_terminal_and_terminating() -> anyhow::Result<()> {
    let cp = envtest::shared();
    let client = cp.client().await?;
    let ns = envtest::create_namespace(&client, "smoke-states").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let node = &kwok::default_nodes()[0].name;

    // Not ready: take over the status, then write it.
    let p = kwok::with_custom_status(kwok::pod("custom", node, &[("app", "x")], &[]));
    pods.create(&PostParams::default(), &p).await?;
    kwok::set_pod_status(&pods, "custom", kwok::running_status(&["10.250.0.7", "fd00:250::7"], false)).await?;
    // kwok must leave it alone: still not ready a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = pods.get("custom").await?;
    assert!(!kwok::is_ready(Some(&got)), "kwok overwrote a custom status: {:?}", got.status);
    let ips: Vec<String> = got.status.and_then(|s| s.pod_ips).unwrap_or_default().into_iter().map(|i| i.ip).collect();
    assert_eq!(ips, vec!["10.250.0.7", "fd00:250::7"]);

    // Terminal.
    let mut failed = kwok::running_status(&["10.250.0.8"], false);
    failed.phase = Some("Failed".into());
    kwok::set_pod_status(&pods, "custom", failed).await?;
    assert_eq!(pods.get("custom").await?.status.and_then(|s| s.phase).as_deref(), Some("Failed"));

    // Terminating: kwok makes the pod ready; a finalizer keeps it Terminating after delete.
    pods.create(&PostParams::default(), &kwok::with_test_finalizer(kwok::pod("held", node, &[("app", "x")], &[])))
        .await?;
    kwok::wait_pod(&pods, "held", T, kwok::is_ready).await?;
    kwok::hold_terminating(&pods, "held").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = pods.get("held").await?;
    assert!(held.metadata.deletion_timestamp.is_some(), "pod should be Terminating");
    kwok::release(&pods, "held").await?;
    kwok::wait_pod(&pods, "held", T, |p| p.is_none()).await?;

    // A plain delete of a kwok-managed pod completes without a kubelet.
    pods.create(&PostParams::default(), &kwok::pod("plain", node, &[("app", "x")], &[])).await?;
    kwok::wait_pod(&pods, "plain", T, kwok::is_ready).await?;
    pods.delete("plain", &Default::default()).await?;
    kwok::wait_pod(&pods, "plain", T, |p| p.is_none()).await?;
    Ok(())
}

#[tokio::test]
async fn dual_stack_services_are_accepted() -> anyhow::Result<()> {
    let cp = envtest::shared();
    let client = cp.client().await?;
    let ns = envtest::create_namespace(&client, "smoke-dual").await?;
    let services: Api<Service> = Api::namespaced(client, &ns);
    let mut svc = service("dual", "dual");
    if let Some(spec) = svc.spec.as_mut() {
        spec.ip_family_policy = Some("RequireDualStack".into());
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
    }
    let created = services.create(&PostParams::default(), &svc).await?;
    let ips = created.spec.and_then(|s| s.cluster_ips).unwrap_or_default();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips[0].contains(':') && !ips[1].contains(':'), "IPv6 first as requested: {ips:?}");
    Ok(())
}

#[tokio::test]
async fn pinned_kubectl_talks_to_the_pinned_apiserver() -> anyhow::Result<()> {
    let cp = envtest::shared();
    let out = cp.kubectl().args(["version", "-o", "json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let want = envtest::versions().kubernetes;
    assert_eq!(v["serverVersion"]["gitVersion"], want.as_str());
    assert_eq!(v["clientVersion"]["gitVersion"], want.as_str());
    // Watch-list style streaming works end to end.
    let client = cp.client().await?;
    let nodes: Api<Node> = Api::all(client);
    let n = watcher(nodes, watcher::Config::default()).applied_objects().boxed().next().await;
    assert!(n.is_some());
    Ok(())
}

#[tokio::test]
async fn kube_controller_manager_from_the_cache_collects_garbage() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let cp = envtest::shared();
    let client = cp.client().await?;
    let ns = envtest::create_namespace(&client, "smoke-gc").await?;
    // Only the garbage collector: the endpoint controllers stay off.
    let mut kcm = cp.start_kube_controller_manager(&["garbagecollector".to_string()], &[]).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta { name: Some("owner".into()), ..Default::default() },
                ..Default::default()
            },
        )
        .await?;
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &dependent).await?;
    cms.delete("owner", &Default::default()).await?;
    let start = std::time::Instant::now();
    while cms.get_opt("dependent").await?.is_some() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "garbage collector did not delete the dependent; kcm log:\n{}",
            kcm.log_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    kcm.stop();
    Ok(())
}
