//! Phase A: `POST /mutate` over HTTPS on loopback, closed loop, C keep-alive HTTP/1.1
//! connections (the webhook's ALPN offers only `http/1.1`, so that is what kube-apiserver uses
//! too), every answer checked.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::setup::UID_PLACEHOLDER;

type Sender = SendRequest<Full<Bytes>>;

/// The client side: TLS config and address.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// 127.0.0.1:`port`, trusting `ca`.
    pub fn new(port: u16, ca: CertificateDer<'static>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target { addr: (Ipv4Addr::LOCALHOST, port).into(), tls: Arc::new(tls) })
    }

    /// A new TLS connection (TCP_NODELAY, as Go's net/http sets it) speaking HTTP/1.1.
    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// GET `path`: the status code and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut s = self.connect().await?;
        let req = http::Request::get(path).header(http::header::HOST, self.addr.to_string()).body(Full::default())?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn mutate_request(&self, body: Vec<u8>) -> anyhow::Result<http::Request<Full<Bytes>>> {
        Ok(http::Request::post("/mutate?timeout=3s")
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, */*")
            .body(Full::new(Bytes::from(body)))?)
    }

    /// One review, answered and checked: `Ok(answer)` or a description of what was wrong.
    pub async fn review_once(&self, template: &[u8], uid: &str) -> anyhow::Result<Answer> {
        let mut s = self.connect().await?;
        let (body, _) = with_uid(template, uid)?;
        let resp = s.send_request(self.mutate_request(body)?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        check(status, &bytes, uid).map_err(anyhow::Error::msg)
    }
}

/// What a checked answer held.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// A JSON patch was returned.
    pub patched: bool,
    /// Its base64 length.
    pub patch_b64_bytes: usize,
    /// Response body bytes.
    pub body_bytes: usize,
    /// Warnings returned.
    pub warnings: Vec<String>,
}

fn with_uid(template: &[u8], uid: &str) -> anyhow::Result<(Vec<u8>, usize)> {
    let at = template
        .windows(UID_PLACEHOLDER.len())
        .position(|w| w == UID_PLACEHOLDER.as_bytes())
        .context("uid placeholder missing from the template")?;
    let mut body = template.to_vec();
    body[at..at + uid.len()].copy_from_slice(uid.as_bytes());
    Ok((body, at))
}

/// Checks an answer: HTTP 200, an AdmissionReview whose `response.uid` is `uid`, `allowed: true`,
/// and a `JSONPatch` when a patch is present.
pub fn check(status: u16, body: &[u8], uid: &str) -> Result<Answer, String> {
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let r = v.get("response").ok_or("no response")?;
    if r.get("uid").and_then(Value::as_str) != Some(uid) {
        return Err("uid not echoed".into());
    }
    if r.get("allowed").and_then(Value::as_bool) != Some(true) {
        return Err("not allowed".into());
    }
    let patch = r.get("patch").and_then(Value::as_str);
    if patch.is_some() && r.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
        return Err("patch without patchType JSONPatch".into());
    }
    let warnings = r
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Answer {
        patched: patch.is_some_and(|p| !p.is_empty()),
        patch_b64_bytes: patch.map_or(0, str::len),
        body_bytes: body.len(),
        warnings,
    })
}

/// One (profile, concurrency) measurement.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Connections.
    pub concurrency: usize,
    /// Measured window.
    pub window: Duration,
    /// Checked answers in the window.
    pub ok: u64,
    /// Failed or wrong answers in the window (and during warm-up), by description.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Client-observed latencies of the window, sorted, nanoseconds.
    pub latencies: Vec<u64>,
}

impl LoadResult {
    /// Admissions per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Quantile `q` of the client-observed latency.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q).map(Duration::from_nanos)
    }

    /// Total errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Runs `concurrency` closed-loop connections for `warmup + window`; counts what starts after the
/// warm-up. `expect_patch`: whether every answer must (true) or must not (false) carry a patch.
pub async fn run(
    target: Target,
    template: Arc<Vec<u8>>,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    expect_patch: bool,
) -> anyhow::Result<LoadResult> {
    let (_, at) = with_uid(&template, UID_PLACEHOLDER)?;
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (target, template) = (target.clone(), template.clone());
        workers.spawn(async move {
            let mut out = LoadResult::default();
            let mut sender: Option<Sender> = None;
            let mut n: u64 = 0;
            let mut body = template.to_vec();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                n += 1;
                let uid = format!("{w:08x}-0000-4000-8000-{n:012x}");
                body[at..at + uid.len()].copy_from_slice(uid.as_bytes());
                let result: Result<Answer, String> = async {
                    if sender.is_none() {
                        sender = Some(target.connect().await.map_err(|e| format!("connect: {e}"))?);
                    }
                    let s = sender.as_mut().ok_or("no connection")?;
                    s.ready().await.map_err(|e| format!("connection: {e}"))?;
                    let req = target.mutate_request(body.clone()).map_err(|e| e.to_string())?;
                    let resp = s.send_request(req).await.map_err(|e| format!("request: {e}"))?;
                    let status = resp.status().as_u16();
                    let bytes = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
                    check(status, &bytes, &uid)
                }
                .await;
                let elapsed = t0.elapsed();
                let measured = t0 >= measure_from;
                match result {
                    Ok(a) if a.patched == expect_patch => {
                        if measured {
                            out.ok += 1;
                            out.latencies.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                        }
                    }
                    Ok(a) => {
                        let e = if a.patched { "unexpected patch" } else { "patch missing" };
                        *out.errors.entry(e.to_owned()).or_default() += 1;
                    }
                    Err(e) => {
                        // A broken connection is replaced.
                        sender = None;
                        *out.errors.entry(e).or_default() += 1;
                    }
                }
            }
            out
        });
    }
    let mut total = LoadResult { concurrency, window, ..Default::default() };
    while let Some(r) = workers.join_next().await {
        let r = r.context("load worker")?;
        total.ok += r.ok;
        total.latencies.extend(r.latencies);
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    total.latencies.sort_unstable();
    Ok(total)
}

/// The webhook's `epslice_webhook_admission_duration_seconds` histogram (body read → response
/// built, measured by the handler itself), parsed from its OpenMetrics text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; the last bound is +∞.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl Histogram {
    /// Parses the histogram out of `WebhookMetrics::encode()`.
    pub fn parse(text: &str) -> Self {
        const NAME: &str = "epslice_webhook_admission_duration_seconds";
        let mut h = Histogram::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(NAME) else { continue };
            let Some((key, value)) = rest.rsplit_once(' ') else { continue };
            if let Some(le) = key.strip_prefix("_bucket{le=\"").and_then(|k| k.strip_suffix("\"}")) {
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                h.buckets.push((bound, value.parse().unwrap_or(0)));
            } else if key == "_sum" {
                h.sum = value.parse().unwrap_or(0.0);
            } else if key == "_count" {
                h.count = value.parse().unwrap_or(0);
            }
        }
        h
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(b, c)| {
                let before = earlier.buckets.iter().find(|(eb, _)| *eb == b).map_or(0, |x| x.1);
                (b, c.saturating_sub(before))
            })
            .collect();
        Histogram { buckets, sum: self.sum - earlier.sum, count: self.count.saturating_sub(earlier.count) }
    }

    /// Mean observation.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.sum / self.count as f64))
    }

    /// Quantile `q`, interpolated linearly inside its bucket (as Prometheus' `histogram_quantile`).
    /// `None` when empty; `Some(INFINITY)` when it falls in the +∞ bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut prev = (0.0, 0u64);
        for &(bound, cum) in &self.buckets {
            if cum as f64 >= rank {
                if bound.is_infinite() {
                    return Some(f64::INFINITY);
                }
                let inside = (cum - prev.1) as f64;
                let frac = if inside > 0.0 { (rank - prev.1 as f64) / inside } else { 1.0 };
                return Some(prev.0 + (bound - prev.0) * frac);
            }
            prev = (bound, cum);
        }
        Some(f64::INFINITY)
    }
}
