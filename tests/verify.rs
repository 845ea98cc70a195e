//! `kubectl epslice verify` against the real apiserver: OK after convergence, then DRIFT, MISSING
//! and EXTRA after corrupting the objects by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use envtest::kwok;
use epslice::controllers::ControllerName;
use epslice_integration_tests::*;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};

/// `kubectl epslice verify …`, with `kubectl-epslice` (this crate's build of the epslice CLI) on PATH.
fn kubectl_epslice(args: &[&str]) -> (i32, String) {
    let dir = tempfile_dir();
    let link = dir.join("kubectl-epslice");
    match std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_epslice-cli"), &link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("symlink: {e}"),
    }
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let cp = envtest::shared();
    // kubectl refuses flags before a plugin name, so the kubeconfig goes through the environment.
    let out = Command::new(cp.binary(envtest::Binary::Kubectl))
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .arg("epslice")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && out.status.code() != Some(1) {
        text += &String::from_utf8_lossy(&out.stderr);
    }
    (out.status.code().unwrap_or(-1), text)
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("epslice-verify-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn status_of(json: &str, kind: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v.as_array().unwrap().iter().find(|r| r["kind"] == kind).map(|r| r["status"].as_str().unwrap().to_string()).unwrap()
}

#[tokio::test]
async fn verify_reports_ok_drift_missing_and_extra() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "verify").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ctl =
        start(&client, &ns, |o| o.controllers = vec![ControllerName::EndpointSlice, ControllerName::Endpoints]).await;
    svcs.create(&PostParams::default(), &service("v", "v", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    for i in 0..3 {
        let node = &kwok::default_nodes()[i].name;
        pods.create(&PostParams::default(), &kwok::pod(&format!("v-{i}"), node, &[("app", "v")], &[("http", 8080)]))
            .await
            .unwrap();
    }
    wait_slices(&client, &ns, "v", "3 endpoints", |s| endpoint_count(s) == 3).await;
    wait_endpoints(&client, &ns, "v", "3 addresses", |e| endpoints_counts(e) == (3, 0)).await;
    ctl.stop().await;

    let (code, text) = kubectl_epslice(&["-n", &ns]);
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().next().unwrap().starts_with("NAMESPACE"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains(" OK ")).count(), 2, "{text}");

    // Drift: an endpoint removed by hand.
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let mut s = slices(&client, &ns, "v").await.remove(0);
    s.endpoints.as_mut().unwrap().pop();
    slices_api.replace(&s.metadata.name.clone().unwrap(), &PostParams::default(), &s).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "v", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, "EndpointSlice"), "DRIFT");
    assert_eq!(status_of(&text, "Endpoints"), "OK");

    // Missing: the Endpoints object deleted.
    Api::<Endpoints>::namespaced(client.clone(), &ns).delete("v", &DeleteParams::default()).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "v", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, "Endpoints"), "MISSING");

    // Missing slices: all of ours deleted.
    slices_api.delete(&s.metadata.name.clone().unwrap(), &DeleteParams::default()).await.unwrap();
    let (_, text) = kubectl_epslice(&["-n", &ns, "v", "-o", "json"]);
    assert_eq!(status_of(&text, "EndpointSlice"), "MISSING");

    // Bad input: a Service name without a namespace, and an unknown Service.
    let (code, text) = kubectl_epslice(&["v"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("needs --namespace"), "{text}");
    let (code, text) = kubectl_epslice(&["-n", &ns, "nope"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not found"), "{text}");
}

#[tokio::test]
async fn verify_reports_extra_slices() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "verify-extra").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let ctl = start(&client, &ns, |_| {}).await;
    let svc =
        svcs.create(&PostParams::default(), &service("x", "x", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    let placeholder = wait_slices(&client, &ns, "x", "placeholder", |s| s.len() == 1).await.remove(0);
    ctl.stop().await;
    // A second placeholder-like slice owned by the Service: one too many.
    let mut extra = placeholder.clone();
    extra.metadata = kube::api::ObjectMeta {
        name: Some("x-extra".into()),
        labels: placeholder.metadata.labels.clone(),
        owner_references: placeholder.metadata.owner_references.clone(),
        ..Default::default()
    };
    extra.endpoints = Some(vec![]);
    Api::<EndpointSlice>::namespaced(client.clone(), &ns).create(&PostParams::default(), &extra).await.unwrap();
    assert!(svc.metadata.uid.is_some());
    let (code, text) = kubectl_epslice(&["-n", &ns, "x", "--endpoints=false", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, "EndpointSlice"), "EXTRA", "{text}");
}

/// Selector-less Services: the slices mirrored from their custom Endpoints are checked with the
/// mirroring core (OK, then DRIFT, MISSING and EXTRA).
#[tokio::test]
async fn verify_checks_mirrored_slices() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "verify-mirror").await.unwrap();
    let ctl = start(&client, &ns, |o| o.controllers = vec![ControllerName::EndpointSliceMirroring]).await;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ext"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns).create(&PostParams::default(), &svc).await.unwrap();
    let eps: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ext"},
        "subsets": [{
            "addresses": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}],
            "notReadyAddresses": [{"ip": "192.0.2.12"}],
            "ports": [{"name": "http", "port": 8080}],
        }],
    }))
    .unwrap();
    let endpoints_api = Api::<Endpoints>::namespaced(client.clone(), &ns);
    endpoints_api.create(&PostParams::default(), &eps).await.unwrap();
    let mirrored = wait_slices(&client, &ns, "ext", "3 mirrored endpoints", |s| endpoint_count(s) == 3).await;
    ctl.stop().await;
    const KIND: &str = "EndpointSlice (mirrored)";

    let (code, text) = kubectl_epslice(&["-n", &ns]);
    assert_eq!(code, 0, "{text}");
    let row = text.lines().find(|l| l.contains(KIND)).unwrap_or_else(|| panic!("no mirrored row:\n{text}"));
    assert!(row.contains(" OK ") && row.contains("2 ready, 1 not ready"), "{text}");

    // Drift: an endpoint removed from the mirrored slice.
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let mut s = mirrored[0].clone();
    s.endpoints.as_mut().unwrap().pop();
    slices_api.replace(&s.metadata.name.clone().unwrap(), &PostParams::default(), &s).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "ext", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, KIND), "DRIFT", "{text}");

    // Extra: the Endpoints gone, the mirrored slice left behind.
    let kept = endpoints_api.get("ext").await.unwrap();
    endpoints_api.delete("ext", &DeleteParams::default()).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "ext", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, KIND), "EXTRA", "{text}");

    // Missing: the Endpoints back, no mirrored slice.
    slices_api.delete(&s.metadata.name.clone().unwrap(), &DeleteParams::default()).await.unwrap();
    let mut again = kept.clone();
    again.metadata = kube::api::ObjectMeta { name: Some("ext".into()), ..Default::default() };
    endpoints_api.create(&PostParams::default(), &again).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "ext", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, KIND), "MISSING", "{text}");

    // Without --mirroring there is no such row.
    let (_, text) = kubectl_epslice(&["-n", &ns, "ext", "--mirroring=false", "-o", "json"]);
    assert!(!text.contains(KIND), "{text}");
}

fn rows_of(json: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap_or_else(|e| panic!("{e}: {json}"))
        .as_array()
        .unwrap()
        .clone()
}

fn row_of<'a>(rows: &'a [serde_json::Value], service: &str, kind: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["service"] == service && r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row for {service}: {rows:#?}"))
}

fn labelled_slice(name: &str, service: &str, managed_by: &str) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": managed_by,
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.20"]}],
    }))
    .unwrap()
}

/// What the loop over Services never saw: slices of another manager (WARNING, exit 0), mirrored
/// slices of a Service with a selector, and objects whose Service is gone (EXTRA, exit 1); and
/// Services with nothing to check (exit 0, not "not found").
#[tokio::test]
async fn verify_reports_leftovers_and_services_with_nothing_to_check() {
    const MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "verify-leftover").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let ctl = start(&client, &ns, |o| o.controllers = vec![ControllerName::EndpointSlice]).await;
    svcs.create(&pp, &service("x", "x", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    wait_slices(&client, &ns, "x", "placeholder", |s| s.len() == 1).await;
    ctl.stop().await;

    // Nothing to check: exit 0 with a row saying why.
    for (name, spec) in [
        ("ext", serde_json::json!({"type": "ExternalName", "externalName": "example.com"})),
        ("bare", serde_json::json!({"ports": [{"port": 80}]})),
    ] {
        let svc: Service =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        svcs.create(&pp, &svc).await.unwrap();
        let (code, text) = kubectl_epslice(&["-n", &ns, name, "-o", "json"]);
        assert_eq!(code, 0, "{text}");
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 1, "{text}");
        assert_eq!(rows[0]["status"], "OK", "{text}");
        assert!(rows[0]["detail"].as_str().unwrap().contains("nothing to check"), "{text}");
    }

    // A slice of another manager: a warning, not a difference.
    slices_api.create(&pp, &labelled_slice("x-by-hand", "x", "someone.example.com")).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "x", "--endpoints=false", "-o", "json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status_of(&text, "EndpointSlice"), "OK", "{text}");
    assert_eq!(status_of(&text, "EndpointSlice (other manager)"), "WARNING", "{text}");
    let (_, table) = kubectl_epslice(&["-n", &ns, "x", "--endpoints=false"]);
    assert!(table.lines().any(|l| l.contains(" WARNING ") && l.contains("x-by-hand")), "{table}");

    // A mirrored slice left over for a Service with a selector.
    slices_api.create(&pp, &labelled_slice("x-mirrored", "x", MIRRORING)).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "x", "--endpoints=false", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(status_of(&text, "EndpointSlice (mirrored)"), "EXTRA", "{text}");

    // Objects of a Service that does not exist (a leader-election record excepted).
    let eps = |name: &str, annotations: serde_json::Value| -> Endpoints {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "subsets": [{"addresses": [{"ip": "192.0.2.30"}], "ports": [{"port": 8080}]}],
        }))
        .unwrap()
    };
    endpoints_api.create(&pp, &eps("gone", serde_json::json!({}))).await.unwrap();
    let leader = serde_json::json!({"control-plane.alpha.kubernetes.io/leader": "{}"});
    endpoints_api.create(&pp, &eps("leader", leader)).await.unwrap();
    slices_api.create(&pp, &labelled_slice("gone-mirrored", "gone", MIRRORING)).await.unwrap();
    slices_api.create(&pp, &labelled_slice("gone-ours", "gone", "endpointslice-controller.k8s.io")).await.unwrap();
    let (code, text) = kubectl_epslice(&["-n", &ns, "gone", "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    let rows = rows_of(&text);
    assert_eq!(rows.len(), 3, "{text}");
    for kind in ["Endpoints", "EndpointSlice", "EndpointSlice (mirrored)"] {
        assert_eq!(row_of(&rows, "gone", kind)["status"], "EXTRA", "{text}");
    }
    assert!(row_of(&rows, "gone", "EndpointSlice")["detail"].as_str().unwrap().contains("gone-ours"), "{text}");
    let (code, text) = kubectl_epslice(&["-n", &ns, "-o", "json"]);
    assert_eq!(code, 1, "{text}");
    assert!(rows_of(&text).iter().all(|r| r["service"] != "leader"), "{text}");
    // A Service that does not exist and left nothing behind is still "could not check".
    let (code, text) = kubectl_epslice(&["-n", &ns, "nope"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not found"), "{text}");
}
