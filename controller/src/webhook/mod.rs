//! The service-env admission webhook: the imperative shell around [`crate::envvars`] (AdmissionReview
//! handling, variable generation, patching) and [`crate::envpolicy`] (which pods get what).
//!
//! * [`server`]: axum router (`POST /mutate`, `/healthz`, `/readyz`) served over rustls.
//! * [`state`]: reflector caches of Services, Namespaces and ServiceEnvPolicies.
//! * [`tls`]: hot-swappable serving certificate (files polled, or self-managed).
//! * [`certs`]: self-managed CA and leaf in a Secret, `caBundle` publishing, rotation.
//! * [`metrics`]: `epslice_webhook_*`, registered into the process registry by the caller.
//!
//! See `docs/webhook.md` for the design, failure modes and manifests.

pub mod certs;
pub mod cli;
pub mod metrics;
pub mod server;
pub mod state;
pub mod tls;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use cli::WebhookArgs;
pub use metrics::WebhookMetrics;
pub use tls::{CertResolver, TlsSource};

use crate::envpolicy::DefaultMode;
use crate::envvars::ReviewConfig;
use crate::runtime::admin::Readiness;

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct Options {
    /// HTTPS address of `/mutate`.
    pub bind: SocketAddr,
    /// Serving certificate source.
    pub tls: TlsSource,
    /// Body limit, warning cap and patch options.
    pub review: ReviewConfig,
    /// For pods no policy or namespace label covers.
    pub default_mode: DefaultMode,
    /// Run the ServiceEnvPolicy status controller.
    pub status_controller: bool,
    /// Field manager of status writes.
    pub field_manager: String,
    /// Metrics (register them with [`WebhookMetrics::register`] to serve them).
    pub metrics: Arc<WebhookMetrics>,
}

impl Options {
    /// Defaults for `bind` and `tls`: 8443, in-memory PEM.
    pub fn new(bind: SocketAddr, tls: TlsSource) -> Self {
        Self {
            bind,
            tls,
            review: ReviewConfig::default(),
            default_mode: DefaultMode::Off,
            status_controller: true,
            field_manager: "epslice".to_owned(),
            metrics: Arc::default(),
        }
    }
}

/// Runs the webhook (caches, certificate source, status controller, HTTPS server) until
/// `shutdown` resolves. Adds the readiness checks `webhook-caches` and `webhook-tls` to
/// `readiness`; `/readyz` (here and on the admin server) is false until both pass.
pub async fn run(
    client: kube::Client,
    options: Options,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let caches_ready = readiness.check("webhook-caches");
    let tls_ready = readiness.check("webhook-tls");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Bind first: a taken port is a start-up error, not a log line.
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| anyhow::anyhow!("binding the webhook address {}: {e}", options.bind))?;

    let mut tasks = tokio::task::JoinSet::new();
    let (caches, watches) = state::Caches::start(&client);
    for w in watches {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = w => {}
                _ = crate::webhook::stopped(&mut stop) => {}
            }
        });
    }
    {
        let caches = caches.clone();
        let flag = caches_ready.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = async {
                    caches.services.wait_synced().await;
                    caches.namespaces.wait_synced().await;
                    caches.policies.wait_synced().await;
                } => {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("webhook caches synced");
                }
                _ = crate::webhook::stopped(&mut stop) => {}
            }
        });
    }

    let resolver = Arc::new(CertResolver::default());
    match options.tls.clone() {
        TlsSource::Pem { cert, key } => {
            resolver
                .set_pem(cert.as_bytes(), key.as_bytes())
                .map_err(|e| anyhow::anyhow!("serving certificate: {e}"))?;
            options.metrics.certificate_loaded(tls::not_after(cert.as_bytes()));
            tls_ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        TlsSource::Files { cert, key, poll } => {
            let (r, f, m, s) = (resolver.clone(), tls_ready.clone(), options.metrics.clone(), stop_rx.clone());
            tasks.spawn(tls::watch_files(cert, key, poll, r, f, m, s));
        }
        TlsSource::SelfManaged(cfg) => {
            let (r, f, m, s) = (resolver.clone(), tls_ready.clone(), options.metrics.clone(), stop_rx.clone());
            tasks.spawn(certs::run_self_managed(client.clone(), cfg, r, f, m, s));
        }
    }

    if options.status_controller {
        tasks.spawn(crate::envpolicy::run_status_controller(
            client.clone(),
            options.field_manager.clone(),
            caches.policies.clone(),
            caches.namespaces.clone(),
            caches.changed.clone(),
            stop_rx.clone(),
        ));
    }

    let state = server::AppState {
        view: Arc::new(caches),
        config: Arc::new(options.review.clone()),
        default_mode: options.default_mode,
        metrics: options.metrics.clone(),
        ready: readiness.clone(),
        memo: Arc::default(),
    };
    let tls_config = tls::server_config(resolver).map_err(anyhow::Error::msg)?;
    server::serve_tls(listener, server::router(state), Arc::new(tls_config), stop_rx.clone()).await;
    // The server returned: shutdown was asked. Stop the rest.
    caches_ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let grace = std::time::Duration::from_secs(5);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone). Holds no borrow of the channel's value,
/// so futures awaiting it stay `Send`.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
