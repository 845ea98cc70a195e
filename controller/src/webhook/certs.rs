//! Self-managed serving certificates: a CA and a leaf generated with rcgen, kept in a Secret (the
//! shared source of truth for replicas), the CA bundle patched into the
//! MutatingWebhookConfiguration, renewed before expiry and hot-swapped into the TLS server.
//!
//! Rotation ([`plan`], pure):
//!
//! * The leaf is renewed when a third of its validity is left, when the wanted names changed, or
//!   when it was not issued by the current CA.
//! * When a third of the CA's validity is left, a *next* CA is generated and published in the
//!   bundle next to the current one; the leaf stays. Once the next CA has been published for the
//!   propagation delay (default 1 h) and a sixth of the current CA's validity is left, it becomes
//!   the current CA and the leaf is re-issued by it. Retired CAs stay in the bundle until they
//!   expire, so replicas still serving an older leaf keep working.
//!
//! Secret keys: `ca.crt`, `ca.key`, `next-ca.crt`, `next-ca.key` (while staged), `tls.crt`,
//! `tls.key`, `ca-bundle.crt` (what goes into `caBundle`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::metrics::WebhookMetrics;
use super::tls::CertResolver;

/// Settings of the self-managed certificates.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Namespace of the Secret (epslice's own).
    pub secret_namespace: String,
    /// Name of the Secret.
    pub secret_name: String,
    /// MutatingWebhookConfiguration whose `caBundle` (every webhook entry) is kept current;
    /// `None` to leave it alone.
    pub webhook_config: Option<String>,
    /// What the leaf is for.
    pub spec: CertSpec,
    /// How often the Secret is checked.
    pub check_every: Duration,
}

/// What to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// DNS names of the leaf (e.g. `epslice-webhook.epslice-system.svc`).
    pub dns_names: Vec<String>,
    /// IP addresses of the leaf.
    pub ip_addresses: Vec<IpAddr>,
    /// Leaf lifetime.
    pub leaf_validity: Duration,
    /// CA lifetime.
    pub ca_validity: Duration,
    /// How long a new CA is published before it signs the leaf.
    pub ca_propagation: Duration,
}

impl CertSpec {
    /// Names for the Service `service` in `namespace`, plus extra names and IPs.
    pub fn for_service(service: &str, namespace: &str, extra: &[String]) -> Self {
        let mut dns_names = vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        let mut ip_addresses = Vec::new();
        for e in extra {
            match e.parse::<IpAddr>() {
                Ok(ip) => ip_addresses.push(ip),
                Err(_) => dns_names.push(e.clone()),
            }
        }
        Self {
            dns_names,
            ip_addresses,
            leaf_validity: Duration::from_secs(30 * 86_400),
            ca_validity: Duration::from_secs(365 * 86_400),
            ca_propagation: Duration::from_secs(3_600),
        }
    }
}

/// The Secret's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub ca_cert: String,
    pub ca_key: String,
    pub next_ca: Option<(String, String)>,
    pub tls_cert: String,
    pub tls_key: String,
    pub ca_bundle: String,
}

impl Stored {
    /// Reads the Secret's data; `None` if a required key is missing or not UTF-8.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<Self> {
        let get = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
        Some(Self {
            ca_cert: get("ca.crt")?,
            ca_key: get("ca.key")?,
            next_ca: get("next-ca.crt").zip(get("next-ca.key")),
            tls_cert: get("tls.crt")?,
            tls_key: get("tls.key")?,
            ca_bundle: get("ca-bundle.crt")?,
        })
    }

    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            m.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        };
        put("ca.crt", &self.ca_cert);
        put("ca.key", &self.ca_key);
        if let Some((c, k)) = &self.next_ca {
            put("next-ca.crt", c);
            put("next-ca.key", k);
        }
        put("tls.crt", &self.tls_cert);
        put("tls.key", &self.tls_key);
        put("ca-bundle.crt", &self.ca_bundle);
        m
    }
}

/// What we read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    not_before: i64,
    not_after: i64,
    subject: String,
    issuer: String,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect()
}

fn info_der(der: &CertificateDer<'_>) -> Option<Info> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(Info {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns,
        ips,
    })
}

fn info(pem: &str) -> Option<Info> {
    certs_of(pem).first().and_then(info_der)
}

fn rc(e: rcgen::Error) -> String {
    e.to_string()
}

fn at(unix: i64) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| e.to_string())
}

/// Backdating of `notBefore`, for clock skew between replicas and the API server.
const BACKDATE: i64 = 300;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

fn new_ca(now: i64, validity: Duration) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.distinguished_name.push(DnType::CommonName, format!("epslice-webhook-ca-{now}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = at(now - BACKDATE)?;
    p.not_after = at(now + secs(validity))?;
    let cert = p.self_signed(&key).map_err(rc)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_leaf(ca_cert: &str, ca_key: &str, spec: &CertSpec, now: i64) -> Result<(String, String), String> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(rc)?;
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::new(spec.dns_names.clone()).map_err(rc)?;
    p.subject_alt_names.extend(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    let cn = spec
        .dns_names
        .iter()
        .find(|n| n.ends_with(".svc"))
        .or(spec.dns_names.first())
        .cloned()
        .unwrap_or_else(|| "epslice-webhook".to_owned());
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = at(now - BACKDATE)?;
    p.not_after = at(now + secs(spec.leaf_validity))?;
    let cert = p.signed_by(&key, &issuer).map_err(rc)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Whether `stored` is usable at all: both certificates and keys parse, the CA is not expired.
fn usable(s: &Stored, now: i64) -> bool {
    let ca_ok = info(&s.ca_cert).is_some_and(|i| i.not_after > now) && KeyPair::from_pem(&s.ca_key).is_ok();
    ca_ok && super::tls::certified_key(s.tls_cert.as_bytes(), s.tls_key.as_bytes()).is_ok()
}

/// The Secret contents wanted at `now` (Unix seconds): `None` if `current` is fine as it is.
pub fn plan(current: Option<&Stored>, spec: &CertSpec, now: i64) -> Result<Option<Stored>, String> {
    let ca_life = secs(spec.ca_validity);
    let leaf_life = secs(spec.leaf_validity);
    let mut s = match current {
        Some(c) if usable(c, now) => c.clone(),
        _ => {
            let (ca_cert, ca_key) = new_ca(now, spec.ca_validity)?;
            let (tls_cert, tls_key) = new_leaf(&ca_cert, &ca_key, spec, now)?;
            let ca_bundle = ca_cert.clone();
            return Ok(Some(Stored { ca_cert, ca_key, next_ca: None, tls_cert, tls_key, ca_bundle }));
        }
    };
    let ca = info(&s.ca_cert).ok_or("CA certificate unreadable")?;
    // A staged CA that does not parse is dropped and staged again.
    if s.next_ca.as_ref().is_some_and(|(c, k)| info(c).is_none() || KeyPair::from_pem(k).is_err()) {
        s.next_ca = None;
    }
    let ca_left = ca.not_after - now;
    if ca_left < ca_life / 3 && s.next_ca.is_none() {
        s.next_ca = Some(new_ca(now, spec.ca_validity)?);
    }
    let mut reissue = false;
    if let Some((next_cert, next_key)) = s.next_ca.clone() {
        let next = info(&next_cert).ok_or("next CA unreadable")?;
        let published_for = now - (next.not_before + BACKDATE);
        if ca_left < ca_life / 6 && published_for >= secs(spec.ca_propagation) {
            s.ca_cert = next_cert;
            s.ca_key = next_key;
            s.next_ca = None;
            reissue = true;
        }
    }
    let ca = info(&s.ca_cert).ok_or("CA certificate unreadable")?;
    let leaf = info(&s.tls_cert);
    reissue = reissue
        || leaf.as_ref().is_none_or(|l| {
            l.not_after - now < leaf_life / 3
                || l.issuer != ca.subject
                || sorted(&l.dns) != sorted(&spec.dns_names)
                || sorted(&l.ips) != sorted(&spec.ip_addresses)
        });
    if reissue {
        let (c, k) = new_leaf(&s.ca_cert, &s.ca_key, spec, now)?;
        s.tls_cert = c;
        s.tls_key = k;
    }
    // Bundle: current CA, staged CA, then older CAs still valid.
    let mut pems: Vec<String> = vec![s.ca_cert.trim_end().to_owned()];
    if let Some((c, _)) = &s.next_ca {
        pems.push(c.trim_end().to_owned());
    }
    let mut seen: Vec<Vec<u8>> = pems.iter().flat_map(|p| certs_of(p)).map(|d| d.to_vec()).collect();
    for der in certs_of(&s.ca_bundle) {
        if seen.contains(&der.to_vec()) || info_der(&der).is_none_or(|i| i.not_after <= now) {
            continue;
        }
        seen.push(der.to_vec());
        pems.push(pem_of(&der));
    }
    s.ca_bundle = pems.join("\n") + "\n";
    Ok((current != Some(&s)).then_some(s))
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    let b64 = crate::envvars::base64_encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----");
    out
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// One pass: read (or create) the Secret, rotate if due, load the leaf, publish the bundle.
/// Returns the bundle published.
async fn sync_once(
    client: &kube::Client,
    cfg: &SelfManaged,
    resolver: &CertResolver,
    metrics: &WebhookMetrics,
) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.secret_namespace);
    let existing = secrets.get_opt(&cfg.secret_name).await.map_err(|e| format!("reading Secret: {e}"))?;
    let current = existing.as_ref().and_then(|s| s.data.as_ref()).and_then(Stored::from_data);
    let stored = match plan(current.as_ref(), &cfg.spec, unix_now())? {
        None => current.ok_or("no certificates")?,
        Some(next) => {
            let mut secret = existing.clone().unwrap_or_else(|| Secret {
                metadata: ObjectMeta {
                    name: Some(cfg.secret_name.clone()),
                    namespace: Some(cfg.secret_namespace.clone()),
                    labels: Some([("app.kubernetes.io/managed-by".to_owned(), "epslice".to_owned())].into()),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                ..Default::default()
            });
            secret.data = Some(next.to_data());
            secret.metadata.managed_fields = None;
            // Optimistic concurrency: create fails if another replica created it, replace fails
            // if it changed since we read it. Either way the next pass re-reads.
            let written = if existing.is_some() {
                secrets.replace(&cfg.secret_name, &PostParams::default(), &secret).await
            } else {
                secrets.create(&PostParams::default(), &secret).await
            };
            written.map_err(|e| format!("writing Secret: {e}"))?;
            tracing::info!(secret = %cfg.secret_name, "webhook certificates issued or rotated");
            next
        }
    };
    if resolver.set_pem(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes())? {
        metrics.certificate_loaded(super::tls::not_after(stored.tls_cert.as_bytes()));
        tracing::info!("serving certificate loaded from the Secret");
    }
    if let Some(name) = &cfg.webhook_config {
        publish_ca_bundle(client, name, stored.ca_bundle.as_bytes()).await?;
    }
    Ok(())
}

/// Sets `caBundle` of every webhook entry of the MutatingWebhookConfiguration `name`.
pub async fn publish_ca_bundle(client: &kube::Client, name: &str, bundle: &[u8]) -> Result<(), String> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut mwc) =
        api.get_opt(name).await.map_err(|e| format!("reading MutatingWebhookConfiguration {name}: {e}"))?
    else {
        return Err(format!("MutatingWebhookConfiguration {name} not found"));
    };
    let mut changed = false;
    for w in mwc.webhooks.iter_mut().flatten() {
        if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle) {
            w.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
            changed = true;
        }
    }
    if changed {
        mwc.metadata.managed_fields = None;
        api.replace(name, &PostParams::default(), &mwc)
            .await
            .map_err(|e| format!("updating caBundle of {name}: {e}"))?;
        tracing::info!(webhook_configuration = name, "caBundle published");
    }
    Ok(())
}

/// The longest one pass of [`run_self_managed`] may take (a few reads and writes).
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps the certificates current until `stop`; `ready` turns true once a certificate is loaded.
/// Failed passes are retried after 5 s.
pub async fn run_self_managed(
    client: kube::Client,
    cfg: SelfManaged,
    resolver: Arc<CertResolver>,
    ready: Arc<AtomicBool>,
    metrics: Arc<WebhookMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // kube's client has no read timeout: a call on a connection that died without a reset
        // would otherwise stop rotation for good.
        let pass = tokio::time::timeout(PASS_TIMEOUT, sync_once(&client, &cfg, &resolver, &metrics));
        let result = pass.await.unwrap_or_else(|_| Err(format!("no answer within {PASS_TIMEOUT:?}")));
        let wait = match result {
            Ok(()) => cfg.check_every,
            Err(e) => {
                tracing::warn!(error = %e, "self-managed certificates: retrying in 5s");
                Duration::from_secs(5)
            }
        };
        ready.store(resolver.is_loaded(), Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::webhook::stopped(&mut stop) => return,
        }
    }
}
