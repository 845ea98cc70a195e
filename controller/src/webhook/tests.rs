//! Router tests (through `tower::ServiceExt::oneshot`, no socket), TLS and certificate rotation
//! tests, and a property test over arbitrary HTTP bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::WebhookMetrics;
use super::certs::{CertSpec, Stored, plan};
use super::server::{AppState, View, router};
use super::tls::{CertResolver, certified_key, not_after};
use crate::envpolicy::{ClusterView, DefaultMode, ServiceEnvPolicy};
use crate::envvars::ReviewConfig;
use crate::runtime::admin::Readiness;

type Labels = BTreeMap<String, String>;

struct Fixture {
    synced: AtomicBool,
    services: Vec<Arc<Service>>,
    labels: BTreeMap<String, Labels>,
}

impl ClusterView for Fixture {
    fn namespace_labels(&self, namespace: &str) -> Option<Labels> {
        self.labels.get(namespace).cloned()
    }
    fn policies(&self, _namespace: &str) -> Vec<Arc<ServiceEnvPolicy>> {
        Vec::new()
    }
    fn services(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.services.iter().filter(|s| s.metadata.namespace.as_deref() == Some(namespace)).cloned().collect()
    }
}

impl View for Fixture {
    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}

fn service(ns: &str, name: &str, ip: &str, port: i32) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": port, "protocol": "TCP"}]}
        }))
        .unwrap(),
    )
}

fn setup(synced: bool, max_body: usize) -> (Router, Arc<Fixture>, Arc<WebhookMetrics>) {
    let fixture = Arc::new(Fixture {
        synced: AtomicBool::new(synced),
        services: vec![service("default", "kubernetes", "10.96.0.1", 443), service("app", "db", "10.0.0.7", 5432)],
        labels: [("app".to_owned(), [(crate::envpolicy::NAMESPACE_MODE_LABEL.to_owned(), "all".to_owned())].into())]
            .into(),
    });
    let metrics = Arc::new(WebhookMetrics::default());
    let state = AppState {
        view: fixture.clone(),
        config: Arc::new(ReviewConfig { max_body_bytes: max_body, ..ReviewConfig::default() }),
        default_mode: DefaultMode::Off,
        metrics: metrics.clone(),
        ready: Arc::new(Readiness::default()),
        memo: Arc::default(),
    };
    (router(state), fixture, metrics)
}

fn review_body(ns: &str, dry_run: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "abc-123",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "dryRun": dry_run,
            "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "enableServiceLinks": true}},
        }
    }))
    .unwrap()
}

async fn post(r: Router, body: Vec<u8>) -> (StatusCode, Value, String) {
    let req = Request::post("/mutate").header(header::CONTENT_TYPE, "application/json").body(Body::from(body)).unwrap();
    let resp = r.oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), ct)
}

#[tokio::test]
async fn mutate_patches_a_pod_of_an_opted_in_namespace() {
    let (r, _, metrics) = setup(true, 1 << 20);
    let (status, v, ct) = post(r, review_body("app", false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/json");
    assert_eq!(v["response"]["uid"], "abc-123");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    assert!(v["response"]["patch"].is_string(), "base64 string, not an array: {v}");
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"epslice_webhook_admissions_total{outcome="patched",source="namespace-label",dry_run="false"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("epslice_webhook_injected_vars_total 14"), "{text}");
}

#[tokio::test]
async fn other_namespaces_default_to_off_and_dry_run_is_counted_apart() {
    let (r, _, metrics) = setup(true, 1 << 20);
    let (status, v, _) = post(r, review_body("elsewhere", true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["response"].get("patch").is_none(), "{v}");
    assert!(metrics.encode().contains(r#"outcome="unchanged",source="default",dry_run="true"} 1"#));
}

#[tokio::test]
async fn unsynced_caches_allow_without_patch_and_warn() {
    let (r, fixture, _) = setup(false, 1 << 20);
    let (status, v, _) = post(r.clone(), review_body("app", false)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["response"].get("patch").is_none());
    assert!(v["response"]["warnings"][0].as_str().unwrap().contains("not synced"), "{v}");
    fixture.synced.store(true, Ordering::Relaxed);
    let (_, v, _) = post(r, review_body("app", false)).await;
    assert!(v["response"]["patch"].is_string());
}

#[tokio::test]
async fn oversized_bodies_get_413_with_or_without_content_length() {
    let (r, _, metrics) = setup(true, 70_000);
    let (status, v, _) = post(r.clone(), vec![b' '; 70_001]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 413);
    // Streamed (no Content-Length): the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b' '; 10_000])).collect();
    let body = Body::from_stream(futures::stream::iter(chunks));
    let resp = r.oneshot(Request::post("/mutate").body(body).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(metrics.encode().contains(r#"outcome="too_large",source="none",dry_run="false"} 2"#));
}

#[tokio::test]
async fn malformed_reviews_get_400_and_wrong_methods_405() {
    let (r, _, _) = setup(true, 1 << 20);
    for body in [
        &b"not json"[..],
        br#"{"apiVersion":"v1","kind":"Pod"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let (status, v, _) = post(r.clone(), body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        assert_eq!(v["kind"], "Status");
    }
    let resp = r.clone().oneshot(Request::get("/mutate").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = r.oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_reports_the_failing_checks() {
    let ready = Arc::new(Readiness::default());
    let caches = ready.check("webhook-caches");
    let (_, fixture, metrics) = setup(true, 1 << 20);
    let r = router(AppState {
        view: fixture,
        config: Arc::default(),
        default_mode: DefaultMode::Off,
        metrics,
        ready,
        memo: Arc::default(),
    });
    let resp = r.clone().oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("webhook-caches"));
    caches.store(true, Ordering::Relaxed);
    let resp = r.oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---- certificates ----

fn spec() -> CertSpec {
    CertSpec {
        dns_names: vec!["epslice-webhook.epslice-system.svc".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        leaf_validity: Duration::from_secs(30_000),
        ca_validity: Duration::from_secs(300_000),
        ca_propagation: Duration::from_secs(3_600),
    }
}

fn pem_count(s: &str) -> usize {
    s.matches("BEGIN CERTIFICATE").count()
}

#[test]
fn fresh_certificates_are_consistent_and_stable() {
    let t0 = 1_800_000_000;
    let s = plan(None, &spec(), t0).unwrap().expect("issued");
    certified_key(s.tls_cert.as_bytes(), s.tls_key.as_bytes()).unwrap();
    assert_eq!(pem_count(&s.ca_bundle), 1);
    assert_eq!(not_after(s.tls_cert.as_bytes()), Some(t0 + 30_000));
    // Round trip through the Secret's data, then nothing to do.
    let back = Stored::from_data(&s.to_data()).unwrap();
    assert_eq!(back, s);
    assert_eq!(plan(Some(&back), &spec(), t0 + 100).unwrap(), None);
    // Garbage is replaced.
    let broken = Stored { tls_key: "nope".into(), ..s.clone() };
    let fixed = plan(Some(&broken), &spec(), t0 + 100).unwrap().unwrap();
    assert_ne!(fixed.ca_cert, s.ca_cert, "a fresh CA when the stored set is unusable");
}

#[test]
fn the_leaf_renews_with_a_third_left_or_new_names() {
    let t0 = 1_800_000_000;
    let s = plan(None, &spec(), t0).unwrap().unwrap();
    assert_eq!(plan(Some(&s), &spec(), t0 + 19_000).unwrap(), None);
    let renewed = plan(Some(&s), &spec(), t0 + 21_000).unwrap().unwrap();
    assert_eq!(renewed.ca_cert, s.ca_cert);
    assert_ne!(renewed.tls_cert, s.tls_cert);
    assert_eq!(not_after(renewed.tls_cert.as_bytes()), Some(t0 + 21_000 + 30_000));
    let mut other = spec();
    other.dns_names.push("extra.example".into());
    let renamed = plan(Some(&s), &other, t0 + 10).unwrap().unwrap();
    assert_ne!(renamed.tls_cert, s.tls_cert);
}

#[test]
fn the_ca_is_staged_published_then_promoted_and_retired() {
    let t0 = 1_800_000_000;
    let mut s = plan(None, &spec(), t0).unwrap().unwrap();
    let first_ca = s.ca_cert.clone();
    // A third of the CA's life left: stage the next CA, publish both, keep the leaf.
    let t1 = t0 + 200_001;
    let staged = plan(Some(&s), &spec(), t1).unwrap().unwrap();
    assert!(staged.next_ca.is_some());
    assert_eq!(staged.ca_cert, first_ca);
    assert_eq!(pem_count(&staged.ca_bundle), 2);
    s = staged;
    // Past a sixth left, and published for over an hour: promote; the leaf is re-issued.
    let t2 = t0 + 260_000;
    let promoted = plan(Some(&s), &spec(), t2).unwrap().unwrap();
    assert!(promoted.next_ca.is_none());
    assert_eq!(promoted.ca_cert, s.next_ca.as_ref().unwrap().0);
    assert_ne!(promoted.tls_cert, s.tls_cert);
    assert_eq!(pem_count(&promoted.ca_bundle), 2, "the old CA stays until it expires");
    assert!(promoted.ca_bundle.contains(first_ca.lines().nth(1).unwrap()));
    s = promoted;
    assert_eq!(plan(Some(&s), &spec(), t2 + 10).unwrap(), None);
    // The old CA expired: it leaves the bundle.
    let t3 = t0 + 300_001;
    let retired = plan(Some(&s), &spec(), t3).unwrap().unwrap();
    assert_eq!(pem_count(&retired.ca_bundle), 1);
    assert_eq!(retired.ca_cert, s.ca_cert);
}

#[test]
fn resolver_swaps_certificates_and_keeps_the_old_one_on_bad_input() {
    let t0 = 1_800_000_000;
    let a = plan(None, &spec(), t0).unwrap().unwrap();
    let b = plan(None, &spec(), t0).unwrap().unwrap();
    let r = CertResolver::default();
    assert!(!r.is_loaded());
    assert!(r.set_pem(a.tls_cert.as_bytes(), a.tls_key.as_bytes()).unwrap());
    assert!(!r.set_pem(a.tls_cert.as_bytes(), a.tls_key.as_bytes()).unwrap(), "same PEM: no reload");
    assert!(r.set_pem(a.tls_cert.as_bytes(), b.tls_key.as_bytes()).unwrap_err().contains("do not match"));
    assert!(r.set_pem(b"", b"").is_err());
    assert!(r.is_loaded());
    assert!(r.set_pem(b.tls_cert.as_bytes(), b.tls_key.as_bytes()).unwrap());
}

// ---- fuzz-style: arbitrary bodies through the router never panic and always answer sanely ----

fn arbitrary_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = review_body("app", false);
    prop_oneof![
        // Raw bytes.
        proptest::collection::vec(any::<u8>(), 0..512),
        // A valid review with bytes flipped or cut.
        (proptest::collection::vec((0usize..valid.len(), any::<u8>()), 0..8), 0usize..=valid.len()).prop_map(
            move |(flips, cut)| {
                let mut b = valid.clone();
                for (i, x) in flips {
                    b[i] = x;
                }
                b.truncate(cut.max(1));
                b
            }
        ),
        // Structured JSON with random shapes in the places the parser reads.
        (
            any::<bool>(),
            "[a-zA-Z/.0-9]{0,20}",
            prop_oneof![Just(json!(null)), Just(json!(1)), Just(json!("x")), Just(json!({})), Just(json!([]))]
        )
            .prop_map(|(op, version, object)| serde_json::to_vec(&json!({
                "apiVersion": if op { "admission.k8s.io/v1".to_owned() } else { version },
                "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": if op { "CREATE" } else { "DELETE" },
                            "resource": {"group": "", "resource": "pods"}, "namespace": "app", "object": object}
            }))
            .unwrap()),
    ]
}

/// Number of generated bodies (`docs/webhook.md` quotes it).
const FUZZ_CASES: u32 = 2_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: FUZZ_CASES, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bodies_never_panic_and_get_a_well_formed_answer(body in arbitrary_body()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (r, _, _) = setup(true, 1 << 20);
        let (status, v, ct) = rt.block_on(post(r, body));
        prop_assert_eq!(ct, "application/json");
        match status {
            StatusCode::OK => {
                prop_assert_eq!(&v["kind"], "AdmissionReview");
                prop_assert_eq!(&v["response"]["allowed"], true);
                prop_assert!(v["response"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
            }
            StatusCode::BAD_REQUEST => prop_assert_eq!(&v["kind"], "Status"),
            other => prop_assert!(false, "unexpected status {}", other),
        }
    }
}

#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change() {
    let dir = std::env::temp_dir().join(format!("epslice-webhook-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let a = plan(None, &spec(), 1_800_000_000).unwrap().unwrap();
    std::fs::write(&cert, &a.tls_cert).unwrap();
    std::fs::write(&key, &a.tls_key).unwrap();
    let resolver = Arc::new(CertResolver::default());
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(WebhookMetrics::default());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(super::tls::watch_files(
        cert.clone(),
        key.clone(),
        Duration::from_millis(20),
        resolver.clone(),
        ready.clone(),
        metrics.clone(),
        rx,
    ));
    let wait = |what: &'static str, f: Box<dyn Fn() -> bool>| async move {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let r = ready.clone();
    wait("first load", Box::new(move || r.load(Ordering::Relaxed))).await;
    assert_eq!(metrics.certificate_loads.get(), 1);
    assert_eq!(metrics.certificate_expiry.get(), 1_800_000_000 + 30_000);
    // A half-written pair (new cert, old key) is refused; the old certificate keeps serving.
    let b = plan(None, &spec(), 1_800_000_500).unwrap().unwrap();
    std::fs::write(&cert, &b.tls_cert).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metrics.certificate_loads.get(), 1);
    assert!(ready.load(Ordering::Relaxed));
    std::fs::write(&key, &b.tls_key).unwrap();
    let m = metrics.clone();
    wait("reload", Box::new(move || m.certificate_loads.get() == 2)).await;
    assert_eq!(metrics.certificate_expiry.get(), 1_800_000_500 + 30_000);
    tx.send(true).unwrap();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
