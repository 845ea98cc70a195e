//! The caches against an API server that refuses streaming lists. It needs a control plane of its
//! own (WatchList off), so it runs in a binary of its own: started beside the other tests of a
//! binary, a second etcd + kube-apiserver + kwok would squeeze their time budgets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use envtest::kwok;
use epslice_integration_tests::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

/// An API server that refuses streaming lists (WatchList off: the default of Kubernetes 1.27–1.31
/// and 1.33): the caches fall back to paginated lists by themselves and the controller works.
#[tokio::test]
async fn caches_fall_back_to_paged_lists_where_streaming_lists_are_refused() {
    if std::env::var_os("EPSLICE_TEST_KUBECONFIG").is_some() {
        eprintln!("skipped: needs its own control plane (EPSLICE_TEST_KUBECONFIG is set)");
        return;
    }
    let cp = envtest::ControlPlane::start(envtest::Options {
        apiserver_args: vec!["--feature-gates=WatchList=false".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "es-paged").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let refused = pods.watch(&kube::api::WatchParams::streaming_lists(), "0").await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "this control plane must refuse streaming lists: {:?}",
        refused.map(|_| "a watch")
    );
    let ctl = start(&client, &ns, |o| o.streaming_lists = true).await;
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service("web", "web", &[("http", 80, IntOrString::String("http".into()))]))
        .await
        .unwrap();
    let mut names = Vec::new();
    for (i, node) in kwok::default_nodes().iter().take(2).enumerate() {
        let name = format!("web-{i}");
        pods.create(&PostParams::default(), &kwok::pod(&name, &node.name, &[("app", "web")], &[("http", 8080)]))
            .await
            .unwrap();
        names.push(name);
    }
    let want: BTreeSet<String> = wait_ready_ips(&pods, &names).await.into_values().collect();
    wait_slices(&client, &ns, "web", "2 ready endpoints", |s| {
        addresses(s).into_iter().collect::<BTreeSet<_>>() == want
    })
    .await;
    ctl.stop().await;
}
