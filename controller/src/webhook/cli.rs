//! Flags of `epslice webhook`, and its entry point.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{LogFormat, init_logging, parse_duration};
use crate::envpolicy::DefaultMode;
use crate::envvars::{DEFAULT_MAX_ADDED_BYTES, DEFAULT_MAX_BODY_BYTES, PatchOptions, ReviewConfig};

use super::certs::{CertSpec, SelfManaged};
use super::{Options, TlsSource, WebhookMetrics};

/// A duration flag that must not be zero: [`parse_duration`], refusing `0` (and `0s`, `0ms`, …).
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// Default mode for pods no policy or namespace label covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultModeArg {
    /// Inject nothing: the webhook is opt-in (policy or namespace label).
    Off,
    /// Inject the kubelet's set (frozen at admission).
    All,
}

/// Flags of `epslice webhook`.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("certificate").required(true).args(["tls_cert", "self_signed"]))]
pub struct WebhookArgs {
    /// Path to a kubeconfig. Without it: $KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// HTTPS address of the webhook (`POST /mutate`, `/healthz`, `/readyz`).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub bind_address: SocketAddr,

    /// Address of the plain-HTTP admin server (/metrics, /healthz, /readyz); `0` disables it.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub admin_bind_address: String,

    /// Serving certificate (PEM chain) file, re-read when it changes (e.g. a mounted cert-manager Secret).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Serving key (PEM) file.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub tls_poll_interval: Duration,

    /// Manage the certificates: a CA and a leaf kept in a Secret, `caBundle` published into
    /// the MutatingWebhookConfiguration, rotated before expiry.
    #[arg(long)]
    pub self_signed: bool,

    /// Namespace of epslice (the certificate Secret lives here; also part of the certificate's DNS names).
    #[arg(long, env = "POD_NAMESPACE", default_value = "epslice-system")]
    pub namespace: String,

    /// Name of the certificate Secret (self-signed mode).
    #[arg(long, default_value = "epslice-webhook-tls")]
    pub cert_secret: String,

    /// Name of the webhook's Service (DNS names `<svc>.<namespace>.svc` etc.).
    #[arg(long, default_value = "epslice-webhook")]
    pub service_name: String,

    /// Extra certificate names (DNS names or IP addresses), repeatable.
    #[arg(long)]
    pub extra_san: Vec<String>,

    /// MutatingWebhookConfiguration whose caBundle is kept current (self-signed mode); empty: none.
    #[arg(long, default_value = "epslice-service-env")]
    pub webhook_config_name: String,

    /// Lifetime of the serving certificate (self-signed mode); renewed with a third left.
    #[arg(long, default_value = "720h", value_parser = positive_duration)]
    pub cert_validity: Duration,

    /// Lifetime of the CA (self-signed mode); rolled over with a third left.
    #[arg(long, default_value = "8760h", value_parser = positive_duration)]
    pub ca_validity: Duration,

    /// Mode for pods that no ServiceEnvPolicy and no `epslice.io/service-env` namespace label cover.
    #[arg(long, value_enum, default_value_t = DefaultModeArg::Off)]
    pub default_mode: DefaultModeArg,

    /// Request body limit in bytes (larger requests get 413).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Largest addition to a pod, in bytes of JSON; above it nothing is injected (with a warning).
    #[arg(long, default_value_t = DEFAULT_MAX_ADDED_BYTES)]
    pub max_added_bytes: usize,

    /// Run the ServiceEnvPolicy status controller.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub status_controller: bool,

    /// Field manager of status writes.
    #[arg(long, default_value = "epslice")]
    pub field_manager: String,

    /// Log filter.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl WebhookArgs {
    /// Validated options, and the admin address (`None`: disabled).
    pub fn options(&self) -> Result<(Options, Option<SocketAddr>), String> {
        let admin = match self.admin_bind_address.as_str() {
            "0" | "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|e| format!("--admin-bind-address {a:?}: {e}"))?),
        };
        let tls = match (&self.tls_cert, &self.tls_key, self.self_signed) {
            (Some(_), _, true) => return Err("--tls-cert and --self-signed exclude each other".into()),
            (Some(cert), Some(key), false) => {
                TlsSource::Files { cert: cert.clone(), key: key.clone(), poll: self.tls_poll_interval }
            }
            (None, None, true) => {
                let mut spec = CertSpec::for_service(&self.service_name, &self.namespace, &self.extra_san);
                spec.leaf_validity = self.cert_validity;
                spec.ca_validity = self.ca_validity;
                if self.cert_validity < Duration::from_secs(3600) || self.ca_validity < self.cert_validity * 2 {
                    return Err("--cert-validity must be ≥ 1h and --ca-validity at least twice it".into());
                }
                TlsSource::SelfManaged(SelfManaged {
                    secret_namespace: self.namespace.clone(),
                    secret_name: self.cert_secret.clone(),
                    webhook_config: (!self.webhook_config_name.is_empty()).then(|| self.webhook_config_name.clone()),
                    spec,
                    check_every: Duration::from_secs(300),
                })
            }
            _ => return Err("pass --tls-cert and --tls-key, or --self-signed".into()),
        };
        if self.max_body_bytes < 64 * 1024 {
            return Err("--max-body-bytes must be at least 65536".into());
        }
        let review = ReviewConfig {
            max_body_bytes: self.max_body_bytes,
            patch: PatchOptions { max_added_bytes: self.max_added_bytes, ..PatchOptions::default() },
            ..ReviewConfig::default()
        };
        let mut o = Options::new(self.bind_address, tls);
        o.review = review;
        o.default_mode = match self.default_mode {
            DefaultModeArg::Off => DefaultMode::Off,
            DefaultModeArg::All => DefaultMode::All,
        };
        o.status_controller = self.status_controller;
        o.field_manager = self.field_manager.clone();
        Ok((o, admin))
    }
}

/// `epslice webhook`: the webhook and the admin server, until SIGTERM or Ctrl-C.
pub async fn main(args: WebhookArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level, args.log_format).map_err(anyhow::Error::msg)?;
    let (mut options, admin) = args.options().map_err(anyhow::Error::msg)?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no cluster configuration found ({e}); pass --kubeconfig"))?,
    };
    let client = kube::Client::try_from(config)?;

    let webhook_metrics = Arc::new(WebhookMetrics::default());
    let mut metrics = crate::runtime::metrics::Metrics::default();
    webhook_metrics.register(&mut metrics.registry);
    let metrics = Arc::new(metrics);
    options.metrics = webhook_metrics;
    let readiness = Arc::new(crate::runtime::admin::Readiness::default());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down the webhook");
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(addr) = admin {
        let (m, r, stop) = (metrics.clone(), readiness.clone(), wait(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = crate::runtime::admin::serve(addr, m, r, stop).await {
                tracing::error!(%addr, error = %e, "admin server failed");
            }
        });
    }
    super::run(client, options, readiness, wait(stop_rx)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: WebhookArgs,
    }

    fn parse(args: &[&str]) -> Result<(Options, Option<SocketAddr>), String> {
        let mut v = vec!["x"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map_err(|e| e.to_string())?.args.options()
    }

    #[test]
    fn a_certificate_source_is_required_and_exclusive() {
        assert!(parse(&[]).unwrap_err().contains("--tls-cert"));
        assert!(parse(&["--tls-cert", "c"]).unwrap_err().contains("--tls-key"));
        assert!(parse(&["--tls-cert", "c", "--tls-key", "k", "--self-signed"]).is_err());
        let (o, admin) = parse(&["--tls-cert", "c", "--tls-key", "k", "--admin-bind-address", "0"]).unwrap();
        assert!(matches!(o.tls, TlsSource::Files { .. }));
        assert_eq!(admin, None);
        assert_eq!(o.default_mode, DefaultMode::Off);
    }

    #[test]
    fn self_signed_names_follow_the_service_and_namespace() {
        let (o, admin) = parse(&[
            "--self-signed",
            "--namespace",
            "ops",
            "--extra-san",
            "10.0.0.5",
            "--extra-san",
            "hook.example",
            "--default-mode",
            "all",
        ])
        .unwrap();
        assert_eq!(admin, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(o.default_mode, DefaultMode::All);
        let TlsSource::SelfManaged(cfg) = o.tls else { panic!("self-managed expected") };
        assert_eq!(cfg.secret_namespace, "ops");
        assert_eq!(cfg.webhook_config.as_deref(), Some("epslice-service-env"));
        assert!(cfg.spec.dns_names.contains(&"epslice-webhook.ops.svc".to_owned()));
        assert!(cfg.spec.dns_names.contains(&"hook.example".to_owned()));
        assert_eq!(cfg.spec.ip_addresses, vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
        assert!(parse(&["--self-signed", "--cert-validity", "10m"]).unwrap_err().contains("--cert-validity"));
        assert!(parse(&["--self-signed", "--max-body-bytes", "10"]).unwrap_err().contains("--max-body-bytes"));
    }

    /// A zero duration is refused for every duration flag (a zero `--tls-poll-interval` would make
    /// the certificate watcher re-read the files in a busy loop), whatever the certificate source.
    #[test]
    fn zero_durations_are_refused() {
        for flag in ["--tls-poll-interval", "--cert-validity", "--ca-validity"] {
            for zero in ["0", "0s", "0ms", "0.0h"] {
                for source in [&["--tls-cert", "c", "--tls-key", "k"][..], &["--self-signed"][..]] {
                    let mut args = source.to_vec();
                    args.extend([flag, zero]);
                    let err = parse(&args).unwrap_err();
                    assert!(err.contains(flag) && err.contains("greater than zero"), "{args:?}: {err}");
                }
            }
        }
        let (o, _) = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-poll-interval", "1s"]).unwrap();
        assert!(matches!(o.tls, TlsSource::Files { poll, .. } if poll == Duration::from_secs(1)));
    }
}
