//! Phase B: pod creates through kube-apiserver, without and then with the webhook registered
//! (`failurePolicy: Fail`, `timeoutSeconds: 3`, so a broken webhook fails the run instead of
//! hiding), every created pod checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use epslice::envvars::MARKER_ANNOTATION;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};

use super::cli::Profile;
use super::load::{Histogram, quantile};
use super::setup::{Webhook, pod};

/// Name of the benchmark's MutatingWebhookConfiguration.
pub const MWC_NAME: &str = "epslice-webhook-bench";
/// Creates before each measured series, not counted.
pub const WARMUP_PODS: usize = 20;

/// deploy/base's configuration, but calling the in-process server by URL, scoped to `ns`, and
/// with `failurePolicy: Fail`.
pub fn configuration(ns: &str, port: u16, ca_pem: &str) -> MutatingWebhookConfiguration {
    epslice_integration_tests::webhookcfg::configuration(MWC_NAME, ns, port, Some(ca_pem), "Fail")
}

/// What a created pod must look like.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Untouched: no `*_SERVICE_HOST` entry, no marker.
    Untouched,
    /// Every container has `<NAME>_SERVICE_HOST=<ip>` for each entry, the marker is set and
    /// `enableServiceLinks` is false.
    Injected(Vec<(String, String)>),
    /// At least this many `*_SERVICE_HOST` entries per container and the marker.
    AtLeast(usize),
}

fn env_name(service: &str) -> String {
    format!("{}_SERVICE_HOST", service.to_ascii_uppercase().replace('-', "_"))
}

/// `(variable, ClusterIP)` of the given Services.
pub async fn expected_hosts(
    client: &kube::Client,
    ns: &str,
    names: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for n in names {
        let s = api.get(n).await?;
        let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        out.push((env_name(n), ip));
    }
    Ok(out)
}

fn verify(p: &Pod, expect: &Expect) -> Result<(), String> {
    let spec = p.spec.as_ref().ok_or("no spec")?;
    let marker = p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MARKER_ANNOTATION));
    for c in &spec.containers {
        let env: BTreeMap<&str, &str> =
            c.env.iter().flatten().map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or(""))).collect();
        let hosts = env.keys().filter(|k| k.ends_with("_SERVICE_HOST")).count();
        match expect {
            Expect::Untouched if hosts > 0 || marker => {
                return Err(format!("container {} was injected", c.name));
            }
            Expect::Untouched => {}
            Expect::Injected(want) => {
                for (k, v) in want {
                    if env.get(k.as_str()) != Some(&v.as_str()) {
                        return Err(format!("container {}: {k} is {:?}, want {v}", c.name, env.get(k.as_str())));
                    }
                }
                if !marker || spec.enable_service_links != Some(false) {
                    return Err("marker or enableServiceLinks=false missing".into());
                }
            }
            Expect::AtLeast(n) if hosts < *n || !marker => {
                return Err(format!("container {}: {hosts} *_SERVICE_HOST entries, want ≥ {n}", c.name));
            }
            Expect::AtLeast(_) => {}
        }
    }
    Ok(())
}

/// One series of creates.
#[derive(Debug, Clone)]
pub struct Series {
    /// `None`: without the webhook.
    pub profile: Option<Profile>,
    /// Without the webhook, creating the pod as the webhook leaves it (`selected`: its variables,
    /// marker and `enableServiceLinks: false` already in the spec): the cost of the bigger pod
    /// itself, apart from the admission call.
    pub preinjected: bool,
    /// Creates in flight.
    pub concurrency: usize,
    /// Create-call latencies, sorted, nanoseconds.
    pub latencies: Vec<u64>,
    /// Failed creates, with the first error.
    pub failed: usize,
    /// First create error.
    pub first_error: Option<String>,
    /// Pods that failed verification, with the first problem.
    pub unverified: usize,
    /// First verification problem.
    pub first_problem: Option<String>,
    /// Wall time of the series.
    pub wall: Duration,
    /// Webhook reviews during the series (measured part), when registered.
    pub reviews: Option<Histogram>,
    /// kube-apiserver's own view of the webhook calls in the measured part (its
    /// `apiserver_admission_webhook_admission_duration_seconds`): mean seconds, calls.
    pub apiserver_call: Option<(f64, u64)>,
}

/// Sum and count of `apiserver_admission_webhook_admission_duration_seconds` for this webhook
/// (admitted calls), from kube-apiserver's `/metrics`.
pub async fn apiserver_webhook_calls(client: &kube::Client) -> Option<(f64, u64)> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    let (mut sum, mut count) = (0.0, 0u64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_admission_webhook_admission_duration_seconds_") else {
            continue;
        };
        if !rest.contains("name=\"service-env.epslice.io\"") || !rest.contains("rejected=\"false\"") {
            continue;
        }
        let value = rest.rsplit_once(' ').map_or("", |x| x.1);
        if rest.starts_with("sum{") {
            sum += value.parse::<f64>().unwrap_or(0.0);
        } else if rest.starts_with("count{") {
            count += value.parse::<u64>().unwrap_or(0);
        }
    }
    Some((sum, count))
}

impl Series {
    /// Quantile of the create latency.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q).map(Duration::from_nanos)
    }
}

async fn creates(
    api: &Api<Pod>,
    names: Vec<String>,
    make: &(dyn Fn(&str) -> Pod + Sync),
    concurrency: usize,
) -> Vec<(Duration, Result<Pod, kube::Error>)> {
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let p = make(&name);
                let t0 = Instant::now();
                let r = api.create(&PostParams::default(), &p).await;
                (t0.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The `selected` pod as the webhook leaves it, from a dry-run create while the webhook is
/// registered: labels, annotations (the marker) and spec; nothing the API server sets on
/// creation. Creating copies of it without the webhook isolates the webhook's own cost.
pub async fn injected_template(client: &kube::Client, ns: &str) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry = PostParams { dry_run: true, ..Default::default() };
    let out = api.create(&dry, &pod("template", Profile::Selected)).await?;
    let meta = out.metadata;
    Ok(Pod {
        metadata: ObjectMeta { labels: meta.labels, annotations: meta.annotations, ..ObjectMeta::default() },
        spec: out.spec,
        status: None,
    })
}

/// Warm-up, then `n` measured creates at `concurrency`, each pod checked against `expect`.
/// `profile`: the pods' profile label (`None`: no webhook registered; the pods carry the
/// `selected` label, which nothing reads then). `template`: without the webhook, create copies of
/// this pod (see [`injected_template`]) instead.
#[allow(clippy::too_many_arguments)]
pub async fn series(
    client: &kube::Client,
    ns: &str,
    webhook: &Webhook,
    profile: Option<Profile>,
    concurrency: usize,
    n: usize,
    expect: &Expect,
    template: Option<&Pod>,
) -> Series {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let label = match (profile, template) {
        (Some(p), _) => p.name(),
        (None, Some(_)) => "injected",
        (None, None) => "off",
    };
    let pod_profile = profile.unwrap_or(Profile::Selected);
    let make = |name: &str| match template {
        Some(t) => {
            let mut p = t.clone();
            p.metadata.name = Some(name.to_owned());
            p
        }
        None => pod(name, pod_profile),
    };
    let warm: Vec<String> = (0..WARMUP_PODS).map(|i| format!("{label}-c{concurrency}-w{i:02}")).collect();
    let _ = creates(&api, warm, &make, concurrency).await;
    let h0 = Histogram::parse(&webhook.metrics.encode());
    let a0 = if profile.is_some() { apiserver_webhook_calls(client).await } else { None };
    let names: Vec<String> = (0..n).map(|i| format!("{label}-c{concurrency}-{i:04}")).collect();
    let t0 = Instant::now();
    let results = creates(&api, names, &make, concurrency).await;
    let wall = t0.elapsed();
    let h1 = Histogram::parse(&webhook.metrics.encode());
    let a1 = if profile.is_some() { apiserver_webhook_calls(client).await } else { None };
    let apiserver_call = match (a0, a1) {
        (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some(((s1 - s0) / (c1 - c0) as f64, c1 - c0)),
        _ => None,
    };
    let mut s = Series {
        profile,
        preinjected: profile.is_none() && template.is_some(),
        concurrency,
        latencies: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
        unverified: 0,
        first_problem: None,
        wall,
        reviews: profile.is_some().then(|| h1.since(&h0)),
        apiserver_call,
    };
    for (d, r) in results {
        match r {
            Ok(p) => {
                s.latencies.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                if let Err(e) = verify(&p, expect) {
                    s.unverified += 1;
                    s.first_problem.get_or_insert(e);
                }
            }
            Err(e) => {
                s.failed += 1;
                s.first_error.get_or_insert(e.to_string());
            }
        }
    }
    if profile.is_none() && h1.count != h0.count {
        s.first_problem.get_or_insert(format!("{} reviews while unregistered", h1.count - h0.count));
    }
    s.latencies.sort_unstable();
    s
}

/// Registers the configuration and waits until creates go through the webhook (a dry-run
/// create is reviewed).
pub async fn register(client: &kube::Client, ns: &str, webhook: &Webhook, ca_pem: &str) -> anyhow::Result<()> {
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = mwcs.delete(MWC_NAME, &DeleteParams::default()).await;
    mwcs.create(&PostParams::default(), &configuration(ns, webhook.port, ca_pem)).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry = PostParams { dry_run: true, ..Default::default() };
    let t0 = Instant::now();
    loop {
        let before = Histogram::parse(&webhook.metrics.encode()).count;
        let r = api.create(&dry, &pod("probe", Profile::Selected)).await;
        if r.is_ok() && Histogram::parse(&webhook.metrics.encode()).count > before {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the webhook configuration never took effect (last create: {:?})", r.err());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the configuration.
pub async fn unregister(client: &kube::Client) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(MWC_NAME, &DeleteParams::default()).await;
}
