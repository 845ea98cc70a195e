//! TLS for the webhook: a rustls `ServerConfig` (TLS 1.2 and 1.3 only, ring provider, HTTP/1.1)
//! whose certificate is resolved per handshake from an `ArcSwap`, so a new certificate takes
//! effect for the next connection without a restart or dropped connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::metrics::WebhookMetrics;

/// The one crypto provider (ring, as kube uses), passed explicitly so no process default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A serving certificate and key, swapped atomically.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
    /// The PEM pair last loaded, to skip reloading identical files.
    loaded: std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

/// Parses a PEM certificate chain and private key into a rustls `CertifiedKey`.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("certificate PEM: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key PEM: {e}"))?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| format!("private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(ck)
}

/// `notAfter` of the first certificate in a PEM chain, as Unix seconds.
pub fn not_after(cert_pem: &[u8]) -> Option<i64> {
    let der = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl CertResolver {
    /// Loads a PEM pair. Returns whether it changed; on error the previous certificate stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.as_ref().is_some_and(|(c, k)| c == cert_pem && k == key_pem) {
            return Ok(false);
        }
        let ck = certified_key(cert_pem, key_pem)?;
        self.current.store(Some(Arc::new(ck)));
        *loaded = Some((cert_pem.to_vec(), key_pem.to_vec()));
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The server config: TLS 1.3 and 1.2, no client auth, ALPN `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (e.g. a mounted cert-manager Secret), re-read every `poll` and swapped in when
    /// their content changes.
    Files { cert: PathBuf, key: PathBuf, poll: Duration },
    /// PEM held in memory (tests, embedding).
    Pem { cert: String, key: String },
    /// Self-managed CA and leaf in a Secret, with `caBundle` patched into the webhook
    /// configuration (see [`super::certs`]).
    SelfManaged(super::certs::SelfManaged),
}

/// Keeps `resolver` loaded from files until `stop`; sets `ready` once a certificate is loaded.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    poll: Duration,
    resolver: Arc<CertResolver>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<WebhookMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match (tokio::fs::read(&cert).await, tokio::fs::read(&key).await) {
            (Ok(c), Ok(k)) => match resolver.set_pem(&c, &k) {
                Ok(true) => {
                    tracing::info!(cert = %cert.display(), "serving certificate loaded");
                    metrics.certificate_loaded(not_after(&c));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(cert = %cert.display(), error = %e, "serving certificate not loaded; keeping the previous one")
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(cert = %cert.display(), key = %key.display(), error = %e, "cannot read the serving certificate");
            }
        }
        ready.store(resolver.is_loaded(), std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = crate::webhook::stopped(&mut stop) => return,
        }
    }
}
