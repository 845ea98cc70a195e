//! The service-env webhook against a real kube-apiserver: the API server calls epslice's webhook
//! (running in this process) over HTTPS on loopback through a MutatingWebhookConfiguration with
//! `clientConfig.url`. Each test scopes its own configuration to its own namespace (namespaceSelector
//! on `kubernetes.io/metadata.name`), runs its own webhook on its own port, and deletes the
//! configuration at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use epslice::envpolicy::{
    EXPORT_LABEL, NAMESPACE_MODE_LABEL, PolicyMode, ServiceEnvPolicy, ServiceEnvPolicySpec, ServiceSelection,
};
use epslice::envvars::MARKER_ANNOTATION;
use epslice::runtime::admin::Readiness;
use epslice::webhook::certs::{CertSpec, SelfManaged};
use epslice::webhook::{Options, TlsSource, WebhookMetrics};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Container, EnvVar, Namespace, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

const T: Duration = Duration::from_secs(30);

/// A CA and a serving certificate for 127.0.0.1, as PEM.
struct TestPki {
    ca: String,
    cert: String,
    key: String,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "webhook-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    TestPki { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// The webhook running in this process.
struct Webhook {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    metrics: Arc<WebhookMetrics>,
}

impl Webhook {
    async fn start(client: &kube::Client, tls: TlsSource) -> Self {
        let port = envtest::free_port().unwrap();
        let mut options = Options::new(([127, 0, 0, 1], port).into(), tls);
        let metrics = options.metrics.clone();
        // Several webhooks (each with a status controller) run at once in this binary.
        options.field_manager = format!("epslice-test-{port}");
        let ready = Arc::new(Readiness::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(epslice::webhook::run(client.clone(), options, ready.clone(), async move {
            let _ = rx.await;
        }));
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        while !ready.failing().is_empty() {
            assert!(!task.is_finished(), "webhook exited early");
            assert!(t0.elapsed() < T, "webhook not ready: {:?}", ready.failing());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Webhook { port, stop: Some(tx), task: Some(task), metrics }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Installs the CRD (once per control plane) and waits until it is served.
async fn install_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ServiceEnvPolicy::crd();
    let pp = PatchParams::apply("epslice-test").force();
    crds.patch(crd.metadata.name.as_deref().unwrap(), &pp, &Patch::Apply(&crd)).await.unwrap();
    let t0 = Instant::now();
    loop {
        let api: Api<ServiceEnvPolicy> = Api::all(client.clone());
        if api.list(&Default::default()).await.is_ok() {
            return;
        }
        assert!(t0.elapsed() < T, "CRD never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The registration deploy/base has, calling the in-process webhook, scoped to `ns`.
fn configuration(name: &str, ns: &str, port: u16, ca: Option<&str>) -> MutatingWebhookConfiguration {
    epslice_integration_tests::webhookcfg::configuration(name, ns, port, ca, "Ignore")
}

async fn register(client: &kube::Client, mwc: &MutatingWebhookConfiguration) {
    Api::<MutatingWebhookConfiguration>::all(client.clone()).create(&PostParams::default(), mwc).await.unwrap();
}

async fn unregister(client: &kube::Client, name: &str) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(name, &DeleteParams::default()).await;
}

fn service(name: &str, port: i32) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("main".into()),
                port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create_service(client: &kube::Client, ns: &str, name: &str, port: i32) -> String {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let s = api.create(&PostParams::default(), &service(name, port)).await.unwrap();
    s.spec.unwrap().cluster_ip.unwrap()
}

fn pod(name: &str, labels: &[(&str, &str)], env: Option<Vec<EnvVar>>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/app:1".into()),
                env,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_of(p: &Pod) -> Vec<(String, String)> {
    p.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn has_var(p: &Pod, name: &str) -> bool {
    env_of(p).iter().any(|(n, _)| n == name)
}

async fn label_namespace(client: &kube::Client, ns: &str, key: &str, value: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Dry-run creates a probe pod until `pred` holds for the answer (webhook configurations and
/// cache updates reach the API server and the webhook asynchronously).
async fn wait_effective(
    client: &kube::Client,
    ns: &str,
    labels: &[(&str, &str)],
    what: &str,
    pred: impl Fn(&Pod) -> bool,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    loop {
        let p =
            api.create(&PostParams { dry_run: true, ..Default::default() }, &pod("probe", labels, None)).await.unwrap();
        if pred(&p) {
            return;
        }
        assert!(t0.elapsed() < T, "never effective: {what}; last pod env {:?}", env_of(&p));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pods_get_service_env_in_the_stored_spec_and_kubectl_shows_it() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-all").await.unwrap();
    let pki = test_pki();
    let wh = Webhook::start(&client, TlsSource::Pem { cert: pki.cert.clone(), key: pki.key.clone() }).await;
    let name = format!("{ns}-env");
    register(&client, &configuration(&name, &ns, wh.port, Some(&pki.ca))).await;

    let db_ip = create_service(&client, &ns, "db", 5432).await;
    label_namespace(&client, &ns, NAMESPACE_MODE_LABEL, "all").await;
    wait_effective(&client, &ns, &[], "namespace label all", |p| has_var(p, "DB_SERVICE_HOST")).await;

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let user = vec![EnvVar { name: "DB_SERVICE_PORT".into(), value: Some("1".into()), value_from: None }];
    api.create(&PostParams::default(), &pod("p", &[], Some(user))).await.unwrap();
    let stored = api.get("p").await.unwrap();
    let env = env_of(&stored);
    assert!(env.contains(&("DB_SERVICE_HOST".into(), db_ip.clone())), "{env:?}");
    assert!(env.contains(&("DB_PORT".into(), format!("tcp://{db_ip}:5432"))), "{env:?}");
    assert!(env.iter().any(|(n, _)| n == "KUBERNETES_SERVICE_HOST"), "{env:?}");
    // The user's own entry wins and stays last; ours come first.
    assert_eq!(env.iter().filter(|(n, _)| n == "DB_SERVICE_PORT").count(), 1);
    assert_eq!(env.last().unwrap(), &("DB_SERVICE_PORT".to_owned(), "1".to_owned()));
    let marker = stored.metadata.annotations.as_ref().and_then(|a| a.get(MARKER_ANNOTATION)).cloned().unwrap();
    assert!(marker.starts_with("all;"), "{marker}");
    assert_eq!(stored.spec.as_ref().unwrap().enable_service_links, Some(true));

    let out = cp.kubectl().args(["get", "pod", "p", "-n", &ns, "-o", "yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("name: DB_SERVICE_HOST") && yaml.contains(&format!("value: {db_ip}")), "{yaml}");
    assert!(yaml.contains(MARKER_ANNOTATION), "{yaml}");

    let text = wh.metrics.encode();
    assert!(
        text.contains(
            r#"epslice_webhook_admissions_total{outcome="patched",source="namespace-label",dry_run="false"}"#
        ),
        "{text}"
    );
    unregister(&client, &name).await;
}

#[tokio::test]
async fn selected_policy_with_links_disabled_injects_only_the_pick() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-selected").await.unwrap();
    let pki = test_pki();
    let wh = Webhook::start(&client, TlsSource::Pem { cert: pki.cert.clone(), key: pki.key.clone() }).await;
    let name = format!("{ns}-env");
    register(&client, &configuration(&name, &ns, wh.port, Some(&pki.ca))).await;
    create_service(&client, &ns, "db", 5432).await;
    create_service(&client, &ns, "cache", 6379).await;
    let policies: Api<ServiceEnvPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = ServiceEnvPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
            match_expressions: None,
        }),
        mode: PolicyMode::Selected,
        services: Some(ServiceSelection { names: vec!["db".into()], selector: None }),
        disable_kubelet_service_links: true,
        ..Default::default()
    };
    policies.create(&PostParams::default(), &ServiceEnvPolicy::new("web", spec)).await.unwrap();
    wait_effective(&client, &ns, &[("app", "web")], "policy", |p| has_var(p, "DB_SERVICE_HOST")).await;

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &pod("web", &[("app", "web")], None)).await.unwrap();
    let stored = api.get("web").await.unwrap();
    let env = env_of(&stored);
    assert!(env.iter().all(|(n, _)| n.starts_with("DB_")), "only db's variables: {env:?}");
    assert_eq!(env.len(), 8, "{env:?}");
    assert_eq!(stored.spec.as_ref().unwrap().enable_service_links, Some(false));
    // A pod the policy does not select: untouched (namespace has no label, default off).
    api.create(&PostParams::default(), &pod("other", &[("app", "other")], None)).await.unwrap();
    let other = api.get("other").await.unwrap();
    assert!(env_of(&other).is_empty());
    assert_eq!(other.spec.as_ref().unwrap().enable_service_links, Some(true));

    // The status controller marks the policy Valid (server-side apply).
    let t0 = Instant::now();
    loop {
        let p = policies.get("web").await.unwrap();
        let valid = p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid").cloned());
        if let Some(c) = valid {
            assert_eq!(c.status, "True");
            assert_eq!(c.observed_generation, p.metadata.generation);
            break;
        }
        assert!(t0.elapsed() < T, "no status written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The schema's CEL rule refuses a Selected policy without services.
    let bad = ServiceEnvPolicySpec { mode: PolicyMode::Selected, ..Default::default() };
    let err = policies.create(&PostParams::default(), &ServiceEnvPolicy::new("bad", bad)).await.unwrap_err();
    assert!(err.to_string().contains("mode Selected needs services"), "{err}");
    unregister(&client, &name).await;
}

#[tokio::test]
async fn cross_namespace_services_need_the_export_label() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-cross").await.unwrap();
    let other = envtest::create_namespace(&client, "wh-export").await.unwrap();
    let pki = test_pki();
    let wh = Webhook::start(&client, TlsSource::Pem { cert: pki.cert.clone(), key: pki.key.clone() }).await;
    let name = format!("{ns}-env");
    register(&client, &configuration(&name, &ns, wh.port, Some(&pki.ca))).await;
    create_service(&client, &ns, "db", 5432).await;
    let auth_ip = create_service(&client, &other, "auth", 443).await;
    let policies: Api<ServiceEnvPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = ServiceEnvPolicySpec {
        mode: PolicyMode::Selected,
        namespaces: vec![other.clone()],
        services: Some(ServiceSelection { names: vec!["db".into(), format!("{other}/auth")], selector: None }),
        ..Default::default()
    };
    policies.create(&PostParams::default(), &ServiceEnvPolicy::new("p", spec)).await.unwrap();
    wait_effective(&client, &ns, &[], "policy", |p| has_var(p, "DB_SERVICE_HOST")).await;

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &pod("before", &[], None)).await.unwrap();
    let before = api.get("before").await.unwrap();
    assert!(has_var(&before, "DB_SERVICE_HOST"));
    assert!(!has_var(&before, "AUTH_SERVICE_HOST"), "refused without the opt-in label: {:?}", env_of(&before));

    label_namespace(&client, &other, EXPORT_LABEL, "true").await;
    wait_effective(&client, &ns, &[], "export label", |p| has_var(p, "AUTH_SERVICE_HOST")).await;
    api.create(&PostParams::default(), &pod("after", &[], None)).await.unwrap();
    let after = api.get("after").await.unwrap();
    assert!(env_of(&after).contains(&("AUTH_SERVICE_HOST".into(), auth_ip)), "{:?}", env_of(&after));
    unregister(&client, &name).await;
}

#[tokio::test]
async fn dry_run_is_answered_and_nothing_is_stored() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-dry").await.unwrap();
    let pki = test_pki();
    let wh = Webhook::start(&client, TlsSource::Pem { cert: pki.cert.clone(), key: pki.key.clone() }).await;
    let name = format!("{ns}-env");
    register(&client, &configuration(&name, &ns, wh.port, Some(&pki.ca))).await;
    create_service(&client, &ns, "db", 5432).await;
    label_namespace(&client, &ns, NAMESPACE_MODE_LABEL, "all").await;
    wait_effective(&client, &ns, &[], "namespace label", |p| has_var(p, "DB_SERVICE_HOST")).await;

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let p = api.create(&PostParams { dry_run: true, ..Default::default() }, &pod("dry", &[], None)).await.unwrap();
    assert!(has_var(&p, "DB_SERVICE_HOST"));
    assert!(api.get_opt("dry").await.unwrap().is_none(), "dry run stored nothing");
    assert!(wh.metrics.encode().contains(r#"outcome="patched",source="namespace-label",dry_run="true"}"#));
    unregister(&client, &name).await;
}

#[tokio::test]
async fn pods_are_created_when_the_webhook_is_down() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-down").await.unwrap();
    let pki = test_pki();
    let mut wh = Webhook::start(&client, TlsSource::Pem { cert: pki.cert.clone(), key: pki.key.clone() }).await;
    let name = format!("{ns}-env");
    register(&client, &configuration(&name, &ns, wh.port, Some(&pki.ca))).await;
    create_service(&client, &ns, "db", 5432).await;
    label_namespace(&client, &ns, NAMESPACE_MODE_LABEL, "all").await;
    wait_effective(&client, &ns, &[], "namespace label", |p| has_var(p, "DB_SERVICE_HOST")).await;

    wh.stop().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    api.create(&PostParams::default(), &pod("p", &[], None)).await.expect("failurePolicy Ignore admits the pod");
    assert!(t0.elapsed() < Duration::from_secs(3), "connection refused fails fast: {:?}", t0.elapsed());
    let stored = api.get("p").await.unwrap();
    assert!(env_of(&stored).is_empty(), "not mutated: {:?}", env_of(&stored));
    assert!(stored.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key(MARKER_ANNOTATION)));
    unregister(&client, &name).await;
}

#[tokio::test]
async fn self_managed_certificates_publish_the_ca_bundle() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    install_crd(&client).await;
    let ns = envtest::create_namespace(&client, "wh-certs").await.unwrap();
    let name = format!("{ns}-env");
    let port = envtest::free_port().unwrap();
    // Registered first, without a caBundle: the webhook fills it in.
    register(&client, &configuration(&name, &ns, port, None)).await;
    let mut spec = CertSpec::for_service("epslice-webhook", &ns, &["127.0.0.1".to_owned()]);
    spec.leaf_validity = Duration::from_secs(3600);
    let cfg = SelfManaged {
        secret_namespace: ns.clone(),
        secret_name: "epslice-webhook-tls".into(),
        webhook_config: Some(name.clone()),
        spec,
        check_every: Duration::from_secs(300),
    };
    let mut options = Options::new(([127, 0, 0, 1], port).into(), TlsSource::SelfManaged(cfg));
    options.status_controller = false;
    let ready = Arc::new(Readiness::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(epslice::webhook::run(client.clone(), options, ready.clone(), async move {
        let _ = rx.await;
    }));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    while !ready.failing().is_empty() {
        assert!(t0.elapsed() < T, "not ready: {:?}", ready.failing());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("epslice-webhook-tls")
        .await
        .unwrap();
    let bundle = secret.data.as_ref().unwrap().get("ca-bundle.crt").unwrap().0.clone();
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone()).get(&name).await.unwrap();
    assert_eq!(mwc.webhooks.unwrap()[0].client_config.ca_bundle.as_ref().map(|b| b.0.clone()), Some(bundle));

    create_service(&client, &ns, "db", 5432).await;
    label_namespace(&client, &ns, NAMESPACE_MODE_LABEL, "all").await;
    wait_effective(&client, &ns, &[], "self-managed TLS", |p| has_var(p, "DB_SERVICE_HOST")).await;
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    unregister(&client, &name).await;
}
