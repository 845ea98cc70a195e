//! The benchmark's world: a control plane of its own, a namespace of ClusterIP Services opted in
//! to injection, a `Selected` policy, the webhook started in-process through `epslice webhook`'s
//! own flag parsing, and the AdmissionReview the API server would send.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use epslice::envpolicy::{NAMESPACE_MODE_LABEL, PolicyMode, ServiceEnvPolicy, ServiceEnvPolicySpec, ServiceSelection};
use epslice::runtime::admin::Readiness;
use epslice::webhook::{WebhookArgs, WebhookMetrics};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use super::cli::{Args, Profile};

/// Pod label selecting the request profile.
pub const PROFILE_LABEL: &str = "bench.epslice.io/profile";
/// Placeholder uid in the AdmissionReview template (36 bytes, replaced per request).
pub const UID_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

/// A CA and a serving certificate for 127.0.0.1.
pub struct Pki {
    /// CA certificate, PEM (the `caBundle`).
    pub ca_pem: String,
    /// CA certificate, DER (the load generator's trust root).
    pub ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

/// Generates the test PKI (ECDSA P-256, like the self-managed mode).
pub fn pki() -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "epslice-webhook-bench-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki { ca_pem: ca_cert.pem(), ca_der: ca_cert.der().clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Installs the ServiceEnvPolicy CRD and waits until it is served.
pub async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ServiceEnvPolicy::crd();
    let pp = PatchParams::apply("epslice-webhook-bench").force();
    crds.patch(crd.metadata.name.as_deref().unwrap_or_default(), &pp, &Patch::Apply(&crd)).await?;
    let t0 = Instant::now();
    while Api::<ServiceEnvPolicy>::all(client.clone()).list(&Default::default()).await.is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the ServiceEnvPolicy CRD was not served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

const STEMS: &[&str] =
    &["orders", "payments", "users", "catalog", "search", "auth", "cart", "inventory", "shipping", "billing"];
const PORTS: &[(&str, i32, i32)] = &[
    ("http", 80, 8080),
    ("https", 443, 8443),
    ("grpc", 9000, 9000),
    ("metrics", 9090, 9090),
    ("admin", 8081, 8081),
    ("debug", 6060, 6060),
    ("amqp", 5672, 5672),
    ("redis", 6379, 6379),
];

/// Name of Service `i`.
pub fn service_name(i: usize) -> String {
    format!("{}-{i:04}", STEMS[i % STEMS.len()])
}

fn service(i: usize, ports: u16) -> Service {
    let ports: Vec<Value> = PORTS[..usize::from(ports)]
        .iter()
        .map(|(name, port, target)| json!({"name": name, "port": port, "targetPort": target, "protocol": "TCP"}))
        .collect();
    let name = service_name(i);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name, "tier": STEMS[i % STEMS.len()]}},
        "spec": {"type": "ClusterIP", "selector": {"app": name}, "ports": ports},
    }))
    .unwrap_or_default()
}

/// The namespace: `epslice.io/service-env=all`, `args.services` Services, and a `Selected` policy
/// for pods labelled with the `selected` profile. Returns the namespace, the selected Services'
/// names and the time taken.
pub async fn namespace(client: &kube::Client, args: &Args) -> anyhow::Result<(String, Vec<String>, Duration)> {
    let t0 = Instant::now();
    let ns = envtest::create_namespace(client, "webhook-bench").await?;
    let patch = json!({"metadata": {"labels": {NAMESPACE_MODE_LABEL: "all"}}});
    Api::<Namespace>::all(client.clone()).patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let ports = args.ports_per_service;
    let mut creates = futures::stream::iter(0..args.services)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &service(i, ports)).await }
        })
        .buffer_unordered(16);
    while let Some(r) = creates.next().await {
        r.context("creating a Service")?;
    }
    // Spread over the namespace, like the few dependencies a workload really has.
    let step = args.services / args.selected;
    let selected: Vec<String> = (0..args.selected).map(|k| service_name(k * step)).collect();
    let spec = ServiceEnvPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some([(PROFILE_LABEL.to_owned(), Profile::Selected.name().to_owned())].into()),
            match_expressions: None,
        }),
        mode: PolicyMode::Selected,
        services: Some(ServiceSelection { names: selected.clone(), selector: None }),
        disable_kubelet_service_links: true,
        ..Default::default()
    };
    let policy = ServiceEnvPolicy::new("checkout-deps", spec);
    Api::<ServiceEnvPolicy>::namespaced(client.clone(), &ns).create(&PostParams::default(), &policy).await?;
    Ok((ns, selected, t0.elapsed()))
}

/// A realistic pod of a Deployment: an application container, an Envoy sidecar and a log
/// shipper, with probes, resources, mounts and a few env entries of its own.
pub fn pod(name: &str, profile: Profile) -> Pod {
    let v = json!({
        "metadata": {
            "name": name,
            "labels": {"app": "checkout", "pod-template-hash": "7d9c5b8f6d", "version": "1.4.2", PROFILE_LABEL: profile.name()},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        },
        "spec": {
            "containers": [
                {
                    "name": "checkout",
                    "image": "registry.invalid/shop/checkout:1.4.2",
                    "args": ["--listen=:8080", "--metrics=:9090"],
                    "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                    "env": [
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "password"}}},
                    ],
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 10},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout"}],
                },
                {
                    "name": "envoy",
                    "image": "registry.invalid/envoyproxy/envoy:v1.31.2",
                    "args": ["-c", "/etc/envoy/envoy.yaml", "--drain-time-s", "20"],
                    "ports": [{"name": "proxy", "containerPort": 15001}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "envoy", "mountPath": "/etc/envoy"}],
                },
                {
                    "name": "log-shipper",
                    "image": "registry.invalid/fluent/fluent-bit:3.1",
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app"}],
                },
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout"}},
                {"name": "envoy", "configMap": {"name": "checkout-envoy"}},
                {"name": "logs", "emptyDir": {}},
            ],
            "terminationGracePeriodSeconds": 30,
        },
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// The AdmissionReview kube-apiserver sends for `pod` (as defaulted by the API server: a dry-run
/// create without the webhook), with [`UID_PLACEHOLDER`] as the request uid.
pub async fn review_template(client: &kube::Client, ns: &str, profile: Profile) -> anyhow::Result<Vec<u8>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry = PostParams { dry_run: true, ..Default::default() };
    let mut object = api.create(&dry, &pod("checkout-7d9c5b8f6d-x2x7q", profile)).await?;
    object.metadata.managed_fields = None;
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    let review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID_PLACEHOLDER,
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "checkout-7d9c5b8f6d-x2x7q",
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "3f1c2a9e-5b7d-4c1e-9a8f-2d6b4e0c1a7f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kube-controller-manager"},
        },
    });
    Ok(serde_json::to_vec(&review)?)
}

/// The webhook running in this process.
pub struct Webhook {
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
    /// Its metrics.
    pub metrics: Arc<WebhookMetrics>,
    /// The PEM files' directory (removed on drop).
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

#[derive(clap::Parser)]
struct WebhookCli {
    #[command(flatten)]
    args: WebhookArgs,
}

impl Webhook {
    /// Starts `epslice webhook` in-process: the same flag parsing (`WebhookArgs::options`) and
    /// `webhook::run` (caches, certificate files, status controller, axum router over rustls) as
    /// the binary; only logging, signals and the admin server are left out. The certificate comes
    /// from PEM files (`--tls-cert/--tls-key`, the cert-manager path).
    pub async fn start(client: &kube::Client, pki: &Pki, max_added_bytes: Option<usize>) -> anyhow::Result<Self> {
        use clap::Parser as _;
        let dir = std::env::temp_dir().join(format!("epslice-webhook-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &pki.cert_pem)?;
        std::fs::write(&key, &pki.key_pem)?;
        let port = envtest::free_port()?;
        let mut argv: Vec<String> = vec![
            "epslice-webhook".into(),
            format!("--bind-address=127.0.0.1:{port}"),
            "--admin-bind-address=0".into(),
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
        ];
        if let Some(n) = max_added_bytes {
            argv.push(format!("--max-added-bytes={n}"));
        }
        let cli = WebhookCli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("webhook flags: {e}"))?;
        let (options, _admin) = cli.args.options().map_err(anyhow::Error::msg)?;
        let metrics = options.metrics.clone();
        let ready = Arc::new(Readiness::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(epslice::webhook::run(client.clone(), options, ready, async move {
            let _ = rx.await;
        }));
        Ok(Webhook { port, metrics, dir, stop: Some(tx), task: Some(task) })
    }

    /// Whether the server task ended (an error at start-up, e.g. the port was taken).
    pub fn finished(&self) -> bool {
        self.task.as_ref().is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// Stops the server and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.context("webhook task")??;
        }
        Ok(())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
