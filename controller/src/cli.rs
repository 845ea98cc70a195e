//! Command-line flags of `epslice run`, with kube-controller-manager's names where one exists.
//! Every value is range-checked here, so a bad flag is refused with a clear message at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::controllers::{self, Options, parse_controllers};

/// Flags of `epslice run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Path to a kubeconfig. Without it: $KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Controllers to run, kube-controller-manager style: `*` for all, `name` to enable,
    /// `-name` to disable. Names: endpointslice-controller, endpoints-controller,
    /// endpointslice-mirroring-controller.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// Maximum endpoints per EndpointSlice (1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,

    /// Services synced at once by the EndpointSlice controller (1–50).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub concurrent_service_endpoint_syncs: u16,

    /// Delay of pod-triggered EndpointSlice syncs, to batch changes (Go duration: 0s, 500ms, 1m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub endpointslice_updates_batch_period: Duration,

    /// Services synced at once by the Endpoints controller (at least 1; kcm sets no upper bound here).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_endpoint_syncs: u16,

    /// Delay of pod-triggered Endpoints syncs (Go duration).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub endpoint_updates_batch_period: Duration,

    /// Not a kube-controller-manager flag: how long an Endpoints sync waits for the same Service's
    /// running or next EndpointSlice sync, so that slices (what kube-proxy reads) are written first;
    /// 0s writes both at once, as kcm does (Go duration, at most 10s).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub endpoints_wait_for_slices: Duration,

    /// Endpoints synced at once by the mirroring controller (1–50).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub mirroring_concurrent_service_endpoint_syncs: u16,

    /// Maximum addresses mirrored per Endpoints subset (1–1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub mirroring_max_endpoints_per_subset: u16,

    /// Delay of a mirroring sync caused by an EndpointSlice change; Service and Endpoints changes
    /// sync at once, as upstream (Go duration).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub mirroring_endpointslice_updates_batch_period: Duration,

    /// managed-by value of mirrored EndpointSlices.
    #[arg(long, default_value = "endpointslicemirroring-controller.k8s.io", value_parser = parse_label_value)]
    pub mirroring_managed_by: String,

    /// Value of the `endpointslice.kubernetes.io/managed-by` label written and owned. The default
    /// takes over kube-controller-manager's slices in place; use another value to run side by side.
    #[arg(long, default_value = "endpointslice-controller.k8s.io", value_parser = parse_label_value)]
    pub managed_by: String,

    /// Watch and manage only this namespace (all namespaces when unset). Not a kube-controller-manager
    /// flag: for tests, tenants of virtual control planes, and staged roll-outs.
    #[arg(long)]
    pub namespace: Option<String>,

    /// Fill the caches from streaming lists (a watch with `sendInitialEvents`, the API server's
    /// WatchList feature; client-go's default since 1.35) instead of paginated lists of 100. Over
    /// JSON it costs the API server more CPU than pages (it encodes each object as a watch event)
    /// for about the same memory here. Where the API server refuses it (WatchList off: the default of
    /// Kubernetes 1.27–1.31 and 1.33) each cache falls back to pages by itself, with a warning.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub streaming_lists: bool,

    /// Elect a leader among replicas through a Lease; only the leader writes. `--leader-elect`
    /// alone means true, as in kube-controller-manager.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else kube-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "epslice")]
    pub leader_elect_resource_name: String,

    /// How long the Lease is valid after a renewal (Go duration, ≥ 2s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// How long before expiry the leader renews (Go duration, ≥ 1s, < the lease duration).
    #[arg(long, default_value = "5s", value_parser = parse_duration, conflicts_with = "leader_elect_renew_deadline")]
    pub leader_elect_renew_grace: Duration,

    /// kube-controller-manager's flag, for drop-in use: the leader stops writing when this long has
    /// passed since its last renewal; with it the leader renews every --leader-elect-retry-period
    /// instead of --leader-elect-renew-grace before expiry (Go duration).
    #[arg(long, value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Option<Duration>,

    /// kube-controller-manager's flag, for drop-in use: with --leader-elect-renew-deadline, how often
    /// the leader renews (default 2s; Go duration).
    #[arg(long, value_parser = parse_duration)]
    pub leader_elect_retry_period: Option<Duration>,

    /// kube-controller-manager's flag, accepted for drop-in use; one value only, its default.
    #[arg(long, default_value = "leases", value_parser = ["leases"])]
    pub leader_elect_resource_lock: String,

    /// Field manager name of every write.
    #[arg(long, default_value = "epslice")]
    pub field_manager: String,

    /// Address of the admin server (/metrics, /healthz, /readyz); `0` disables it.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub admin_bind_address: String,

    /// Allow `trafficDistribution: PreferSameZone / PreferSameNode` (feature gate
    /// PreferSameTrafficDistribution, GA in Kubernetes 1.35).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub prefer_same_traffic_distribution: bool,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as `epslice=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl RunArgs {
    /// Validated controller options.
    pub fn options(&self) -> Result<Options, String> {
        let admin_addr = match self.admin_bind_address.as_str() {
            "0" | "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|e| format!("--admin-bind-address {a:?}: {e}"))?),
        };
        let core = crate::endpointslice::Config {
            max_endpoints_per_slice: usize::from(self.max_endpoints_per_slice),
            managed_by: self.managed_by.clone(),
            prefer_same_traffic_distribution: self.prefer_same_traffic_distribution,
        };
        if self.endpoints_wait_for_slices > MAX_ENDPOINTS_WAIT_FOR_SLICES {
            return Err(format!(
                "--endpoints-wait-for-slices ({:?}) must be at most {MAX_ENDPOINTS_WAIT_FOR_SLICES:?}",
                self.endpoints_wait_for_slices
            ));
        }
        let leader_election = if self.leader_elect {
            // kube-lease-manager counts whole seconds.
            let secs = |d: Duration| Duration::from_secs(d.as_secs());
            let d = secs(self.leader_elect_lease_duration);
            if d < Duration::from_secs(2) {
                return Err(format!("--leader-elect-lease-duration ({d:?}) must be ≥ 2s"));
            }
            // kube-controller-manager's flags: renew every retry period, stop writing once the
            // renew deadline has passed without a renewal.
            let (g, deadline) = match self.leader_elect_renew_deadline {
                Some(deadline) => {
                    let retry = secs(self.leader_elect_retry_period.unwrap_or(Duration::from_secs(2)));
                    if retry < Duration::from_secs(1) || retry >= deadline || deadline >= d {
                        return Err(format!(
                            "--leader-elect-retry-period ({retry:?}, ≥ 1s) must be shorter than --leader-elect-renew-deadline ({deadline:?}), and that shorter than --leader-elect-lease-duration ({d:?})"
                        ));
                    }
                    (d - retry, deadline)
                }
                None => {
                    let g = secs(self.leader_elect_renew_grace);
                    if g < Duration::from_secs(1) || g >= d {
                        return Err(format!(
                            "--leader-elect-renew-grace ({g:?}) must be ≥ 1s and shorter than --leader-elect-lease-duration ({d:?})"
                        ));
                    }
                    (g, controllers::leader::LeaderElection::default_renew_deadline(d, g))
                }
            };
            let pod =
                std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "epslice".into());
            let suffix = std::process::id();
            Some(controllers::leader::LeaderElection {
                namespace: self.leader_elect_resource_namespace.clone(),
                name: self.leader_elect_resource_name.clone(),
                identity: format!("{pod}_{suffix}"),
                lease_duration: d,
                grace: g,
                renew_deadline: deadline,
            })
        } else {
            None
        };
        Ok(Options {
            leader_election,
            controllers: parse_controllers(&self.controllers)?,
            endpointslice: controllers::endpointslice::Settings {
                core,
                workers: usize::from(self.concurrent_service_endpoint_syncs),
                batch_period: self.endpointslice_updates_batch_period,
            },
            namespace: self.namespace.clone(),
            streaming_lists: self.streaming_lists,
            endpoints_wait_for_slices: self.endpoints_wait_for_slices,
            endpoints: controllers::endpoints::Settings {
                core: crate::endpoints::Config::default(),
                workers: usize::from(self.concurrent_endpoint_syncs),
                batch_period: self.endpoint_updates_batch_period,
            },
            mirroring: controllers::mirroring::Settings {
                core: crate::mirroring::Config {
                    max_endpoints_per_subset: usize::from(self.mirroring_max_endpoints_per_subset),
                    managed_by: self.mirroring_managed_by.clone(),
                },
                workers: usize::from(self.mirroring_concurrent_service_endpoint_syncs),
                batch_period: self.mirroring_endpointslice_updates_batch_period,
            },
            admin_addr,
            field_manager: self.field_manager.clone(),
        })
    }
}

/// Upper bound of `--endpoints-wait-for-slices`: it is meant to cover one slice sync.
const MAX_ENDPOINTS_WAIT_FOR_SLICES: Duration = Duration::from_secs(10);

/// Parses a Go-style duration (`0`, `1.5s`, `500ms`, `1m30s`, `2h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}: expected a number at {rest:?}"));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("invalid duration {s:?}: missing unit (ns, us, ms, s, m, h)")),
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total += n * secs;
    }
    if !total.is_finite() || total > 86_400.0 * 365.0 {
        return Err(format!("invalid duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Checks a label value (≤ 63 characters, alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
pub fn parse_label_value(s: &str) -> Result<String, String> {
    let ok = s.len() <= 63
        && !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid label value (≤ 63 characters: a-z, 0-9, '-', '_', '.')"))
    }
}

/// Installs the tracing subscriber.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("--log-level {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let r = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    r.map_err(|e| format!("logging: {e}"))
}

/// The subcommands every `epslice` build has (the binary adds `demo`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the controllers against a cluster (the production mode).
    Run(Box<RunArgs>),
    /// Compare every Service's EndpointSlices and Endpoints with what the controllers would
    /// write (exit code 1 on any difference, 2 if it cannot check). Also `kubectl epslice
    /// verify` when installed as `kubectl-epslice` on the PATH.
    Verify(crate::verify::VerifyArgs),
    /// Run the service-env admission webhook (HTTPS `/mutate`) and the admin server.
    Webhook(Box<crate::webhook::WebhookArgs>),
    /// Print the CustomResourceDefinitions (YAML) epslice uses.
    Crds,
}

/// Runs a subcommand to completion and returns the process exit code.
pub async fn dispatch(command: Command) -> std::process::ExitCode {
    use std::process::ExitCode;
    // kube's client builds its TLS settings from the process-wide rustls provider, and rustls
    // panics there when more than one provider is compiled in and none is installed: pick ring
    // (kube's `ring` feature, the webhook's) before any client exists. Idempotent; an error only
    // says one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match command {
        Command::Verify(args) => {
            // 0: everything matches; 1: differences; 2: could not verify.
            return match crate::verify::run(args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("epslice verify: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Run(args) => run(*args).await,
        Command::Webhook(args) => crate::webhook::cli::main(*args).await,
        Command::Crds => crate::envpolicy::crd_yaml().map(|y| print!("{y}")).map_err(anyhow::Error::msg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epslice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `epslice run`: connects to the cluster and runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level, args.log_format).map_err(anyhow::Error::msg)?;
    let options = args.options().map_err(anyhow::Error::msg)?;
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
    // No retries inside the client (kube's default retries 429, 503 and 504 up to 15 times):
    // a failed write goes back to the work queue, which backs off, re-plans from the caches and
    // checks leadership before writing again. A write retried inside the client could land
    // after this replica stopped leading.
    let mut config = config;
    config.default_retry = false;
    let client = kube::Client::try_from(config)?;
    crate::controllers::preflight::check(&client, &options).await?;
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing syncs in flight");
    };
    crate::controllers::run(client, options, Default::default(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn out_of_range_flags_are_refused_with_the_range() {
        let err = T::try_parse_from(["x", "--max-endpoints-per-slice", "1001"]).unwrap_err().to_string();
        assert!(err.contains("1..=1000"), "{err}");
        let err = T::try_parse_from(["x", "--concurrent-service-endpoint-syncs", "0"]).unwrap_err().to_string();
        assert!(err.contains("1..=50"), "{err}");
        // kube-controller-manager's bounds: 1–50 for the slice controllers; the Endpoints
        // controller's is unbounded upstream, so a kcm command line with 100 must start.
        assert!(T::try_parse_from(["x", "--concurrent-service-endpoint-syncs", "51"]).is_err());
        assert!(T::try_parse_from(["x", "--mirroring-concurrent-service-endpoint-syncs", "51"]).is_err());
        let t = T::try_parse_from(["x", "--concurrent-endpoint-syncs", "100"]).unwrap();
        assert_eq!(t.run.options().unwrap().endpoints.workers, 100);
        assert!(T::try_parse_from(["x", "--concurrent-endpoint-syncs", "0"]).is_err());
        let err = T::try_parse_from(["x", "--managed-by", "not valid!"]).unwrap_err().to_string();
        assert!(err.contains("not a valid label value"), "{err}");
        let t = T::try_parse_from(["x", "--controllers", "nope"]).unwrap();
        assert!(t.run.options().unwrap_err().contains("unknown controller"));
        let t = T::try_parse_from(["x", "--admin-bind-address", "nope"]).unwrap();
        assert!(t.run.options().unwrap_err().contains("--admin-bind-address"));
    }

    #[test]
    fn defaults_match_kube_controller_manager() {
        let t = T::try_parse_from(["x"]).unwrap();
        let o = t.run.options().unwrap();
        assert_eq!(o.endpointslice.core.max_endpoints_per_slice, 100);
        assert_eq!(o.endpointslice.workers, 5);
        assert_eq!(o.endpointslice.batch_period, Duration::ZERO);
        assert_eq!(o.endpointslice.core.managed_by, "endpointslice-controller.k8s.io");
        // A deliberate difference: client-go streams since 1.35; over JSON pages are cheaper.
        assert!(!o.streaming_lists);
        // Another (slices first); the library's default is the flag's, and 0s is kcm's way.
        assert_eq!(o.endpoints_wait_for_slices, controllers::DEFAULT_ENDPOINTS_WAIT_FOR_SLICES);
        assert_eq!(o.endpoints_wait_for_slices, controllers::Options::default().endpoints_wait_for_slices);
        let t = T::try_parse_from(["x", "--endpoints-wait-for-slices=0s"]).unwrap();
        assert!(t.run.options().unwrap().endpoints_wait_for_slices.is_zero());
        let t = T::try_parse_from(["x", "--endpoints-wait-for-slices=1h"]).unwrap();
        let err = t.run.options().unwrap_err();
        assert!(err.contains("--endpoints-wait-for-slices (3600s) must be at most 10s"), "{err}");
    }

    #[test]
    fn leader_elect_bare_or_with_a_value_as_in_kube_controller_manager() {
        let elect = |args: &[&str]| {
            let t = T::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
            t.run.leader_elect
        };
        assert!(elect(&[]));
        assert!(elect(&["--leader-elect"]));
        assert!(elect(&["--leader-elect=true"]));
        assert!(!elect(&["--leader-elect=false"]));
        // kube-controller-manager's other leader-election flags, as its manifests pass them.
        let t = T::try_parse_from([
            "x",
            "--leader-elect",
            "--leader-elect-lease-duration=15s",
            "--leader-elect-renew-deadline=10s",
            "--leader-elect-retry-period=2s",
            "--leader-elect-resource-lock=leases",
        ])
        .unwrap();
        let le = t.run.options().unwrap().leader_election.unwrap();
        let s = Duration::from_secs;
        assert_eq!((le.lease_duration, le.grace, le.renew_deadline), (s(15), s(13), s(10)), "renew every 2 s");
        // A longer deadline tolerates a longer outage, as in kube-controller-manager (found in
        // review: the first mapping made it shorter).
        let t = T::try_parse_from(["x", "--leader-elect-lease-duration=137s", "--leader-elect-renew-deadline=107s"])
            .unwrap();
        let le = t.run.options().unwrap().leader_election.unwrap();
        assert_eq!((le.grace, le.renew_deadline), (s(135), s(107)));
        // Without kcm's flags: renew 5 s before expiry, stop writing 2.5 s before it.
        let le = T::try_parse_from(["x"]).unwrap().run.options().unwrap().leader_election.unwrap();
        assert_eq!((le.grace, le.renew_deadline), (s(5), Duration::from_millis(12_500)));
        // Whole seconds, as the Lease counts them: 15.5 s with a 15.3 s grace is refused.
        let t = T::try_parse_from(["x", "--leader-elect-lease-duration=15500ms", "--leader-elect-renew-grace=15300ms"])
            .unwrap();
        assert!(t.run.options().unwrap_err().contains("--leader-elect-renew-grace"));
        assert!(T::try_parse_from(["x", "--leader-elect-resource-lock=endpointsleases"]).is_err());
        assert!(
            T::try_parse_from(["x", "--leader-elect-renew-deadline=10s", "--leader-elect-renew-grace=5s"]).is_err()
        );
        let t = T::try_parse_from(["x", "--leader-elect-renew-deadline=15s"]).unwrap();
        assert!(t.run.options().is_err(), "a deadline as long as the lease");
        // A bare flag does not swallow the next flag.
        let t = T::try_parse_from(["x", "--leader-elect", "--leader-elect-resource-name", "other"]).unwrap();
        assert!(t.run.leader_elect);
        assert_eq!(t.run.leader_elect_resource_name, "other");
        let err = T::try_parse_from(["x", "--leader-elect=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--leader-elect"), "{err}");
    }

    #[test]
    fn streaming_lists_can_be_turned_on_and_off() {
        let t = T::try_parse_from(["x", "--streaming-lists=true"]).unwrap();
        assert!(t.run.options().unwrap().streaming_lists);
        let t = T::try_parse_from(["x", "--streaming-lists=false"]).unwrap();
        assert!(!t.run.options().unwrap().streaming_lists);
        let err = T::try_parse_from(["x", "--streaming-lists=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--streaming-lists"), "{err}");
    }
}
