//! The controllers' shell: shared watch caches, the enabled controllers' workers, and the admin
//! server. Everything that decides *what* to write lives in the functional core modules.

pub mod endpoints;
pub mod endpointslice;
pub mod informers;
pub mod leader;
pub mod mirroring;
pub mod overlay;
pub mod preflight;
pub mod prune;
pub mod trigger;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::admin::Readiness;
use crate::runtime::metrics::Metrics;

/// The controllers epslice can run (kube-controller-manager's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerName {
    /// `endpointslice-controller`.
    EndpointSlice,
    /// `endpoints-controller`.
    Endpoints,
    /// `endpointslice-mirroring-controller`.
    EndpointSliceMirroring,
}

impl ControllerName {
    /// All controllers, in kube-controller-manager's naming.
    pub const ALL: [ControllerName; 3] =
        [ControllerName::EndpointSlice, ControllerName::Endpoints, ControllerName::EndpointSliceMirroring];

    /// The kube-controller-manager name.
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerName::EndpointSlice => "endpointslice-controller",
            ControllerName::Endpoints => "endpoints-controller",
            ControllerName::EndpointSliceMirroring => "endpointslice-mirroring-controller",
        }
    }

    /// Whether epslice implements it yet.
    pub fn implemented(self) -> bool {
        true
    }
}

/// Parses a kube-controller-manager style `--controllers` list: `*` (all), `name`, `-name`.
pub fn parse_controllers(list: &[String]) -> Result<Vec<ControllerName>, String> {
    let mut enabled: Vec<ControllerName> = Vec::new();
    let mut star = false;
    let mut disabled = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" {
            star = true;
            continue;
        }
        let (neg, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item),
        };
        let c = ControllerName::ALL.iter().copied().find(|c| c.as_str() == name).ok_or_else(|| {
            format!(
                "unknown controller {name:?} in --controllers (known: {})",
                ControllerName::ALL.map(ControllerName::as_str).join(", ")
            )
        })?;
        if neg {
            disabled.push(c);
        } else if !enabled.contains(&c) {
            enabled.push(c);
        }
    }
    if star {
        for c in ControllerName::ALL {
            if !enabled.contains(&c) {
                enabled.push(c);
            }
        }
    }
    enabled.retain(|c| !disabled.contains(c));
    Ok(enabled)
}

/// One controller's settings (validated flags).
#[derive(Debug, Clone)]
pub struct ControllerSettings<C> {
    /// The pure planner's configuration (max endpoints per slice or subset, managed-by value …).
    pub core: C,
    /// Workers (`--concurrent-service-endpoint-syncs`, `--concurrent-endpoint-syncs`,
    /// `--mirroring-concurrent-service-endpoint-syncs`).
    pub workers: usize,
    /// Delay of pod- or Endpoints-triggered syncs (the controller's `…-updates-batch-period`).
    pub batch_period: Duration,
}

impl<C: Default> Default for ControllerSettings<C> {
    fn default() -> Self {
        ControllerSettings { core: C::default(), workers: 5, batch_period: Duration::ZERO }
    }
}

/// Settings of the controllers (validated flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Enabled controllers.
    pub controllers: Vec<ControllerName>,
    /// EndpointSlice controller settings.
    pub endpointslice: endpointslice::Settings,
    /// Endpoints controller settings.
    pub endpoints: endpoints::Settings,
    /// Mirroring controller settings.
    pub mirroring: mirroring::Settings,
    /// Admin server address (`/metrics`, `/healthz`, `/readyz`); `None` disables it.
    pub admin_addr: Option<SocketAddr>,
    /// Field manager used for every write.
    pub field_manager: String,
    /// Watch and manage only this namespace (`--namespace`); all namespaces when `None`.
    pub namespace: Option<String>,
    /// Fetch the caches' initial state as streaming lists (`--streaming-lists`) rather than pages.
    pub streaming_lists: bool,
    /// How long an Endpoints sync waits for the same Service's running or next EndpointSlice
    /// sync (`--endpoints-wait-for-slices`); zero lets the two write independently, as in
    /// kube-controller-manager. Only with both controllers enabled.
    pub endpoints_wait_for_slices: Duration,
    /// Leader election; `None` writes unconditionally (a single replica, or tests).
    pub leader_election: Option<leader::LeaderElection>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controllers: vec![ControllerName::EndpointSlice],
            endpointslice: endpointslice::Settings::default(),
            endpoints: endpoints::Settings::default(),
            mirroring: mirroring::Settings::default(),
            admin_addr: None,
            field_manager: "epslice".into(),
            namespace: None,
            streaming_lists: false,
            endpoints_wait_for_slices: DEFAULT_ENDPOINTS_WAIT_FOR_SLICES,
            leader_election: None,
        }
    }
}

/// Default of [`Options::endpoints_wait_for_slices`] and `--endpoints-wait-for-slices`: an
/// EndpointSlice sync writes in a few milliseconds; this bounds what a slow one (a Service of
/// thousands of endpoints, an overloaded API server) can add to an Endpoints sync.
pub const DEFAULT_ENDPOINTS_WAIT_FOR_SLICES: Duration = Duration::from_millis(250);

/// Handles to a running set of controllers, shared with the caller (tests read metrics).
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Metrics (also served on `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Readiness (also served on `/readyz`).
    pub ready: Arc<Readiness>,
}

/// A controller's run function: informers, stop signal, write gate.
type RunFn = Box<
    dyn FnOnce(informers::Informers, watch::Receiver<bool>, leader::Gate) -> futures::future::BoxFuture<'static, ()>
        + Send,
>;

/// Runs the enabled controllers until `shutdown` resolves.
///
/// Shutdown is graceful: `/readyz` turns false, the workers stop taking keys and finish the syncs
/// in flight (up to 30 s), then the Lease is released so another replica takes over at once,
/// and last the admin server stops.
pub async fn run(
    client: kube::Client,
    options: Options,
    handles: Handles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Handles { metrics, ready } = handles;
    for c in &options.controllers {
        if !c.implemented() {
            anyhow::bail!(
                "controller {} is not implemented yet; disable it with --controllers=-{}",
                c.as_str(),
                c.as_str()
            );
        }
    }
    // Passes once every controller and cache has registered its own checks, until shutdown.
    let running = ready.check("started, not shutting down");

    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin = options.admin_addr.map(|addr| {
        let (m, r) = (metrics.clone(), ready.clone());
        let mut rx = admin_stop_rx;
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::runtime::admin::serve(addr, m, r, stop).await {
                tracing::error!(%addr, error = %e, "admin server failed");
            }
        })
    });

    let mut subs = informers::Subscribers::default();
    let mut runs: Vec<RunFn> = Vec::new();
    let mut slice_queue = None;
    if options.controllers.contains(&ControllerName::EndpointSlice) {
        let ctl = endpointslice::Controller::new(
            client.clone(),
            options.endpointslice.clone(),
            options.field_manager.clone(),
            metrics.clone(),
            &ready,
        );
        slice_queue = Some(ctl.queue());
        subs.extend(ctl.subscribers());
        runs.push(Box::new(move |inf, rx, gate| Box::pin(ctl.run(inf, rx, gate))));
    }
    if options.controllers.contains(&ControllerName::Endpoints) {
        let ctl = endpoints::Controller::new(
            client.clone(),
            options.endpoints.clone(),
            options.field_manager.clone(),
            metrics.clone(),
            &ready,
        );
        if let Some(q) = slice_queue.filter(|_| !options.endpoints_wait_for_slices.is_zero()) {
            ctl.wait_for_slices(q, options.endpoints_wait_for_slices, options.endpointslice.workers);
        }
        subs.extend(ctl.subscribers());
        runs.push(Box::new(move |inf, rx, gate| Box::pin(ctl.run(inf, rx, gate))));
    }
    if options.controllers.contains(&ControllerName::EndpointSliceMirroring) {
        let ctl = mirroring::Controller::new(
            client.clone(),
            options.mirroring.clone(),
            options.field_manager.clone(),
            metrics.clone(),
            &ready,
        );
        subs.extend(ctl.subscribers());
        runs.push(Box::new(move |inf, rx, gate| Box::pin(ctl.run(inf, rx, gate))));
    }

    // The write gate: open at once without leader election, else driven by the Lease.
    let (gate_tx, gate) = match &options.leader_election {
        None => leader::always_open(),
        Some(_) => watch::channel(false),
    };
    // `leader_election_master_status{name}` (client-go's name): 1 while this replica may write.
    let leader_metric = {
        let name = options.leader_election.as_ref().map_or("epslice", |le| le.name.as_str()).to_owned();
        let gauge = metrics.leader.get_or_create(&crate::runtime::metrics::LeaderLabels { name }).clone();
        let mut gate = gate.clone();
        tokio::spawn(async move {
            loop {
                gauge.set(i64::from(*gate.borrow_and_update()));
                if gate.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    let (leader_stop_tx, leader_stop_rx) = watch::channel(false);
    let mut leader_task = options.leader_election.clone().map(|le| {
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = leader::run(client, le, gate_tx, leader_stop_rx).await {
                tracing::error!(error = %e, "leader election failed");
            }
        })
    });

    let (informers, watches) = informers::start(&client, options.namespace.as_deref(), options.streaming_lists, subs);
    // A replica whose watches fail (API server unreachable or refusing) is not ready while the
    // watches back off; it recovers with the next event, or once a watch has been quiet for
    // `WATCH_RECOVERY` after its last error.
    for (name, flag) in informers.watch_health() {
        ready.register(name, flag);
    }
    let mut watches = tokio::spawn(watches);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for run in runs {
        tasks.spawn(run(informers.clone(), stop_rx.clone(), gate.clone()));
    }
    running.store(true, std::sync::atomic::Ordering::Relaxed);

    let early = until_shutdown(shutdown, &mut tasks, &mut watches, &mut leader_task).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(why) = &early {
        tracing::error!(%why, "stopping: the process cannot go on without it");
    }
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(30);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("controllers did not stop within {grace:?}; exiting anyway");
    }
    let _ = leader_stop_tx.send(true);
    if let Some(t) = leader_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    watches.abort();
    leader_metric.abort();
    let _ = admin_stop_tx.send(true);
    if let Some(a) = admin {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    match early {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// Waits for `shutdown`. A controller, the watches feeding the caches and leader election must
/// run until then; if one ends first (a panic, say), this returns what ended, so the process stops
/// with an error (and is restarted) instead of staying ready with a dead controller, frozen caches
/// or nobody renewing the Lease (kube-controller-manager exits when it stops leading). A leader
/// task that ended is taken out of `leader`.
async fn until_shutdown(
    shutdown: impl std::future::Future<Output = ()>,
    tasks: &mut tokio::task::JoinSet<()>,
    watches: &mut tokio::task::JoinHandle<()>,
    leader: &mut Option<tokio::task::JoinHandle<()>>,
) -> Option<String> {
    fn how(r: Result<(), tokio::task::JoinError>) -> &'static str {
        match r {
            Ok(()) => "returned",
            Err(e) if e.is_panic() => "panicked",
            Err(_) => "cancelled",
        }
    }
    let leader_ended = async {
        match leader.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let (why, leader_ended) = tokio::select! {
        () = shutdown => (None, false),
        Some(r) = tasks.join_next() => (Some(format!("a controller stopped on its own ({})", how(r))), false),
        r = watches => (Some(format!("the watches stopped on their own ({})", how(r))), false),
        r = leader_ended => (Some(format!("leader election stopped on its own ({})", how(r))), true),
    };
    if leader_ended {
        *leader = None;
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_controller_or_the_watches_ending_before_shutdown_is_reported() {
        let pending = || std::future::pending::<()>();
        // Shutdown first: nothing to report.
        let (mut tasks, mut watches) = (tokio::task::JoinSet::new(), tokio::spawn(pending()));
        tasks.spawn(pending());
        let mut leader = Some(tokio::spawn(pending()));
        assert_eq!(until_shutdown(async {}, &mut tasks, &mut watches, &mut leader).await, None);
        // No controller and no leader election at all is not an early end.
        let mut none = tokio::task::JoinSet::new();
        let mut no_leader = None;
        let t = until_shutdown(pending(), &mut none, &mut watches, &mut no_leader);
        assert!(tokio::time::timeout(Duration::from_millis(50), t).await.is_err(), "waits for shutdown");
        // A controller that panics.
        tasks.spawn(async { panic!("a bug") });
        let why = until_shutdown(pending(), &mut tasks, &mut watches, &mut leader).await;
        assert_eq!(why.as_deref(), Some("a controller stopped on its own (panicked)"));
        // Leader election that panics (in kube-lease-manager, say): nobody renews the Lease.
        let mut leader = Some(tokio::spawn(async { panic!("a bug") }));
        let why = until_shutdown(pending(), &mut tasks, &mut watches, &mut leader).await;
        assert_eq!(why.as_deref(), Some("leader election stopped on its own (panicked)"));
        assert!(leader.is_none(), "the ended task is taken out, so the shutdown path does not poll it again");
        // The watches returning.
        let mut watches = tokio::spawn(async {});
        let why = until_shutdown(pending(), &mut tasks, &mut watches, &mut leader).await;
        assert_eq!(why.as_deref(), Some("the watches stopped on their own (returned)"));
    }

    fn p(s: &str) -> Result<Vec<&'static str>, String> {
        parse_controllers(&[s.to_string()]).map(|v| v.into_iter().map(ControllerName::as_str).collect())
    }

    #[test]
    fn controllers_flag_follows_kcm_syntax() {
        assert_eq!(p("*").unwrap().len(), 3);
        assert_eq!(
            p("*,-endpoints-controller").unwrap(),
            vec!["endpointslice-controller", "endpointslice-mirroring-controller"]
        );
        assert_eq!(p("endpointslice-controller").unwrap(), vec!["endpointslice-controller"]);
        assert!(p("").unwrap().is_empty());
        let err = p("endpointslice").unwrap_err();
        assert!(err.contains("unknown controller \"endpointslice\""), "{err}");
    }
}
