//! AdmissionReview handling.

use std::cell::Cell;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

use super::super::review::base64;
use super::super::{Decision, MAX_WARNING_CHARS, Mode, Outcome, PatchOptions, ReviewConfig, Reviewed, review};
use super::{container, pod, svc, unbase64};

fn services() -> Vec<Service> {
    vec![
        svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        svc("ns", "web", "10.0.0.1", &[("", 80, "TCP")]),
    ]
}

fn body_for(object: Value, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ns",
        "operation": "CREATE",
        "userInfo": {"username": "u"},
        "object": object,
        "oldObject": null,
        "dryRun": false,
    });
    for (k, v) in extra {
        request[*k] = v.clone();
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))
    .unwrap()
}

fn simple_pod_json() -> Value {
    serde_json::to_value(pod("ns", Some(true), vec![container("c", None)])).unwrap()
}

fn run(body: &[u8]) -> Reviewed {
    let svcs = services();
    review(body, &ReviewConfig::default(), |_| Decision {
        mode: Mode::All,
        services: svcs.iter().collect(),
        warnings: Vec::new(),
        ..Decision::off()
    })
}

fn json_of(r: &Reviewed) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn assert_status(r: &Reviewed, code: u16, needle: &str) {
    assert_eq!(r.status, code);
    let v = json_of(r);
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], code);
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg}");
}

fn assert_allowed_unpatched(r: &Reviewed, uid: &str) {
    assert_eq!(r.status, 200);
    let v = json_of(r);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], uid);
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none());
    assert!(v["response"].get("patchType").is_none());
}

#[test]
fn bad_bodies_are_400() {
    assert_status(&run(b"{not json"), 400, "malformed JSON");
    assert_status(&run(b""), 400, "malformed JSON");
    assert_status(&run(b"[]"), 400, "not a JSON object");
    assert_status(&run(br#"{"apiVersion":"v1","kind":"AdmissionReview","request":{"uid":"x"}}"#), 400, "apiVersion");
    assert_status(&run(br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"x"}}"#), 400, "kind");
    assert_status(&run(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#), 400, "missing request");
    for uid in ["", "null", "1", "{}"] {
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":{}}}}}"#,
            if uid.is_empty() { "\"\"" } else { uid }
        );
        assert_status(&run(body.as_bytes()), 400, "missing request.uid");
    }
    assert_status(
        &run(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#),
        400,
        "missing request.uid",
    );
}

#[test]
fn oversized_body_is_413_before_parsing() {
    let cfg = ReviewConfig { max_body_bytes: 10, ..ReviewConfig::default() };
    let called = Cell::new(false);
    let r = review(b"{\"x\": \"0123456789\"}", &cfg, |_| {
        called.set(true);
        Decision::<Service>::off()
    });
    assert_status(&r, 413, "exceeds the limit of 10 bytes");
    assert_eq!(r.outcome, Outcome::TooLarge);
    assert!(!called.get());
    // At the limit: parsed (and rejected for other reasons).
    let r = review(b"{}", &ReviewConfig { max_body_bytes: 2, ..cfg }, |_| Decision::<Service>::off());
    assert_eq!(r.status, 400);
}

#[test]
fn non_create_and_non_pod_are_allowed_untouched() {
    let uid = "705ab4f5-6393-11e8-b7cc-42010a800002";
    let cases = [
        vec![("operation", json!("UPDATE"))],
        vec![("operation", json!("DELETE"))],
        vec![("operation", json!("CONNECT"))],
        vec![("operation", json!(null))],
        vec![("resource", json!({"group": "apps", "version": "v1", "resource": "deployments"}))],
        vec![("resource", json!({"group": "", "version": "v1", "resource": "services"}))],
        vec![("resource", json!("pods"))],
        vec![("subResource", json!("ephemeralcontainers"))],
        vec![("subResource", json!("status"))],
    ];
    for extra in cases {
        let called = Cell::new(false);
        let r = review(&body_for(simple_pod_json(), &extra), &ReviewConfig::default(), |_| {
            called.set(true);
            Decision::<Service>::off()
        });
        assert_allowed_unpatched(&r, uid);
        assert_eq!(r.outcome, Outcome::Ignored, "{extra:?}");
        assert!(!called.get(), "{extra:?}");
    }
    // Matching is on request.resource, not on the object's or request's kind.
    let r =
        run(&body_for(simple_pod_json(), &[("kind", json!({"group": "apps", "version": "v1", "kind": "Deployment"}))]));
    assert_eq!(r.outcome, Outcome::Patched);
    // A null subResource counts as none.
    let r = run(&body_for(simple_pod_json(), &[("subResource", json!(null))]));
    assert_eq!(r.outcome, Outcome::Patched);
}

#[test]
fn pod_create_is_patched_with_base64_json_patch() {
    let object = simple_pod_json();
    let r = run(&body_for(object.clone(), &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.outcome, Outcome::Patched);
    assert_eq!(r.injected, 15);
    let v = json_of(&r);
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let b64 = v["response"]["patch"].as_str().expect("patch is a base64 string");
    let ops: json_patch::Patch = serde_json::from_slice(&unbase64(b64).unwrap()).unwrap();
    let mut doc = object;
    json_patch::patch(&mut doc, &ops.0).unwrap();
    let patched: Pod = serde_json::from_value(doc.clone()).unwrap();
    let env = patched.spec.unwrap().containers[0].env.clone().unwrap();
    assert_eq!(env[0].name, "KUBERNETES_SERVICE_HOST");
    assert_eq!(env.len(), 15);

    // Second pass over the patched object: allowed, no patch.
    let r2 = run(&body_for(doc, &[]));
    assert_eq!(r2.outcome, Outcome::Unchanged);
    assert_allowed_unpatched(&r2, "705ab4f5-6393-11e8-b7cc-42010a800002");
}

#[test]
fn v1beta1_is_echoed() {
    let mut v: Value = serde_json::from_slice(&body_for(simple_pod_json(), &[])).unwrap();
    v["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let r = run(&serde_json::to_vec(&v).unwrap());
    assert_eq!(json_of(&r)["apiVersion"], "admission.k8s.io/v1beta1");
}

#[test]
fn dry_run_gives_the_same_patch_and_is_reported() {
    let seen = Cell::new(None);
    let svcs = services();
    let r = review(&body_for(simple_pod_json(), &[("dryRun", json!(true))]), &ReviewConfig::default(), |req| {
        seen.set(Some(req.dry_run));
        Decision { mode: Mode::All, services: svcs.iter().collect(), warnings: Vec::new(), ..Decision::off() }
    });
    let normal = run(&body_for(simple_pod_json(), &[]));
    assert_eq!(seen.get(), Some(true));
    assert!(r.dry_run);
    assert!(!normal.dry_run);
    assert_eq!(json_of(&r)["response"]["patch"], json_of(&normal)["response"]["patch"]);
}

#[test]
fn unreadable_pod_fails_open_with_warning() {
    let uid = "705ab4f5-6393-11e8-b7cc-42010a800002";
    for object in [
        json!(null),
        json!("a string"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
        json!({"spec": {"containers": "nope"}}),
    ] {
        let r = run(&body_for(object.clone(), &[]));
        assert_allowed_unpatched(&r, uid);
        assert_eq!(r.outcome, Outcome::Unreadable, "{object}");
        let w = &json_of(&r)["response"]["warnings"];
        assert!(w[0].as_str().unwrap().contains("unreadable"), "{w}");
    }
    // Missing object key entirely.
    let mut v: Value = serde_json::from_slice(&body_for(json!(null), &[])).unwrap();
    v["request"].as_object_mut().unwrap().remove("object");
    let r = run(&serde_json::to_vec(&v).unwrap());
    assert_eq!(r.outcome, Outcome::Unreadable);
}

#[test]
fn namespace_falls_back_to_object_then_fails_open() {
    let seen = std::cell::RefCell::new(String::new());
    let b = body_for(simple_pod_json(), &[("namespace", json!(""))]);
    let r = review(&b, &ReviewConfig::default(), |req| {
        *seen.borrow_mut() = req.namespace.to_owned();
        Decision::<Service>::off()
    });
    assert_eq!(*seen.borrow(), "ns");
    assert_eq!(r.outcome, Outcome::Unchanged);

    let mut object = simple_pod_json();
    object["metadata"].as_object_mut().unwrap().remove("namespace");
    let r = run(&body_for(object, &[("namespace", json!(null))]));
    assert_eq!(r.outcome, Outcome::Unreadable);
}

#[test]
fn decision_warnings_are_cut_and_capped() {
    let cfg = ReviewConfig { max_warnings: 3, ..ReviewConfig::default() };
    let r = review(&body_for(simple_pod_json(), &[]), &cfg, |_| Decision::<Service> {
        mode: Mode::All,
        services: Vec::new(),
        warnings: (0..10).map(|i| format!("{i}{}", "w".repeat(200))).collect(),
        ..Decision::off()
    });
    let w = json_of(&r)["response"]["warnings"].as_array().unwrap().clone();
    assert_eq!(w.len(), 3);
    assert!(w.iter().all(|w| w.as_str().unwrap().chars().count() <= MAX_WARNING_CHARS));
    assert_eq!(w[2], "8 more service env warnings omitted");
}

#[test]
fn cap_in_config_reaches_the_patch() {
    let cfg = ReviewConfig {
        patch: PatchOptions { max_added_bytes: 10, ..PatchOptions::default() },
        ..ReviewConfig::default()
    };
    let svcs = services();
    let r = review(&body_for(simple_pod_json(), &[]), &cfg, |_| Decision {
        mode: Mode::All,
        services: svcs.iter().collect(),
        warnings: Vec::new(),
        ..Decision::off()
    });
    assert_eq!(r.outcome, Outcome::Unchanged);
    let w = &json_of(&r)["response"]["warnings"][0];
    assert!(w.as_str().unwrap().contains("cap"));
}

/// The AdmissionReview fixture from kube-core's own tests (a real GKE pod CREATE).
#[test]
fn real_world_review_body() {
    let body = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"0c9a8d74-9cb7-44dd-b98e-09fd62def2f4","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},"name":"echo-pod","namespace":"colin-coder","operation":"CREATE","userInfo":{"username":"colin@coder.com","groups":["system:authenticated"]},"object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"echo-pod","namespace":"colin-coder","creationTimestamp":null,"labels":{"app":"echo-server"}},"spec":{"containers":[{"name":"echo-server","image":"jmalloc/echo-server","ports":[{"name":"http-port","containerPort":8080,"protocol":"TCP"}],"resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"Always"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","enableServiceLinks":true},"status":{}},"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}"#;
    let svcs = [
        svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        svc("colin-coder", "echo", "10.0.0.7", &[("http", 80, "TCP")]),
    ];
    let r = review(body.as_bytes(), &ReviewConfig::default(), |req| {
        assert_eq!(req.name, "echo-pod");
        Decision { mode: Mode::All, services: svcs.iter().collect(), warnings: Vec::new(), ..Decision::off() }
    });
    assert_eq!(r.outcome, Outcome::Patched);
    let v = json_of(&r);
    assert_eq!(v["response"]["uid"], "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4");
    let ops: Value = serde_json::from_slice(&unbase64(v["response"]["patch"].as_str().unwrap()).unwrap()).unwrap();
    let ops = ops.as_array().unwrap();
    assert_eq!(ops[0]["path"], "/spec/containers/0/env");
    assert_eq!(ops[0]["value"][0]["name"], "ECHO_SERVICE_HOST");
    assert_eq!(ops[1]["path"], "/metadata/annotations");
}

#[test]
fn base64_rfc4648_vectors() {
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
        assert_eq!(unbase64(enc).unwrap(), plain.as_bytes());
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(unbase64(&base64(&all)).unwrap(), all);
}
