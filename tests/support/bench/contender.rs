//! Starting and stopping the contenders: kube-controller-manager and `epslice run` as processes
//! in the control plane's process group (so nothing outlives the harness), and the write floor.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envtest::{Component, ControlPlane};
use epslice::pod::{CachedPod, Interner, WatchedPod};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::cli::{Args, Contender};
use super::cluster::{Layout, list_all};

/// kube-controller-manager's names of the three controllers.
pub const KCM_CONTROLLERS: [&str; 3] =
    ["endpointslice-controller", "endpoints-controller", "endpointslice-mirroring-controller"];

/// The `epslice` binary: `--epslice-bin`, else `epslice-cli` next to this executable.
pub fn epslice_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.epslice_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let p = exe.with_file_name("epslice-cli");
    anyhow::ensure!(
        p.is_file(),
        "{} not found: build it with `cargo build --release -p epslice-integration-tests --bins` \
         (`just bench` does), or pass --epslice-bin",
        p.display()
    );
    Ok(p)
}

/// A running controller process.
#[derive(Debug)]
pub struct Proc {
    /// Which contender.
    pub contender: Contender,
    comp: Component,
    admin: Option<u16>,
}

impl Proc {
    /// Starts a contender (not the floor). kube-controller-manager is started and its port
    /// answers when this returns; epslice is only spawned (see [`Proc::wait_up`]).
    pub async fn start(cp: &ControlPlane, args: &Args, bin: &Path, c: Contender, seq: usize) -> anyhow::Result<Proc> {
        match c {
            Contender::Kcm | Contender::KcmFast => {
                let (qps, burst) =
                    if c == Contender::Kcm { (20, 30) } else { (args.kcm_fast_qps, args.kcm_fast_burst) };
                let controllers: Vec<String> = KCM_CONTROLLERS.iter().map(|s| s.to_string()).collect();
                let extra = vec![format!("--kube-api-qps={qps}"), format!("--kube-api-burst={burst}")];
                let comp = cp
                    .start_kube_controller_manager(&controllers, &extra)
                    .await
                    .context("starting kube-controller-manager")?;
                Ok(Proc { contender: c, comp, admin: None })
            }
            Contender::Epslice => {
                let admin = envtest::free_port()?;
                let mut cmd = Command::new(bin);
                cmd.arg("run")
                    .env_remove("KUBECONFIG")
                    .env_remove("RUST_LOG")
                    .arg("--kubeconfig")
                    .arg(cp.kubeconfig_path())
                    .args(["--controllers=*", "--leader-elect=false", "--log-level=warn"])
                    .arg(format!("--admin-bind-address=127.0.0.1:{admin}"));
                let comp = cp.spawn_in_group(&format!("epslice-bench-{seq}"), cmd).context("starting epslice")?;
                Ok(Proc { contender: c, comp, admin: Some(admin) })
            }
            Contender::Floor => anyhow::bail!("the floor is not a process"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.comp.pid()
    }

    /// Fails with the log tail if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.comp.exited() {
            anyhow::bail!("{} exited ({status}); last log lines:\n{}", self.contender.name(), self.comp.log_tail(3000));
        }
        Ok(())
    }

    /// Waits until the process serves: epslice's `/readyz` answers 200 (caches synced);
    /// kube-controller-manager's port already answered in [`Proc::start`].
    pub async fn wait_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(port) = self.admin else { return self.check_alive() };
        let t0 = Instant::now();
        loop {
            self.check_alive()?;
            if http_status(port, "/readyz").await == Some(200) {
                return Ok(());
            }
            anyhow::ensure!(
                t0.elapsed() < timeout,
                "epslice not ready within {timeout:?}:\n{}",
                self.comp.log_tail(3000)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process (SIGTERM; SIGKILL after 35 s: epslice finishes syncs in flight for up
    /// to 30 s).
    pub fn stop(mut self) {
        tokio::task::block_in_place(|| self.comp.stop_with(Duration::from_secs(35)));
    }
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
}

/// What the floor did.
#[derive(Debug, Clone, Default)]
pub struct FloorRun {
    /// Time spent listing the objects and planning.
    pub plan_time: Duration,
    /// Requests that failed.
    pub errors: usize,
    /// The first error, if any.
    pub first_error: Option<String>,
}

enum Op {
    CreateSlice(EndpointSlice),
    UpdateSlice(EndpointSlice),
    DeleteSlice(EndpointSlice),
    CreateEp(Endpoints),
    UpdateEp(Endpoints),
    DeleteEp(String, String),
}

impl Op {
    async fn send(self, client: &kube::Client) -> Result<(), kube::Error> {
        let ns_of = |m: &kube::api::ObjectMeta| m.namespace.clone().unwrap_or_default();
        let pp = PostParams::default();
        match self {
            Op::CreateSlice(s) => {
                Api::<EndpointSlice>::namespaced(client.clone(), &ns_of(&s.metadata)).create(&pp, &s).await.map(drop)
            }
            Op::UpdateSlice(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                Api::<EndpointSlice>::namespaced(client.clone(), &ns_of(&s.metadata))
                    .replace(&name, &pp, &s)
                    .await
                    .map(drop)
            }
            Op::DeleteSlice(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                Api::<EndpointSlice>::namespaced(client.clone(), &ns_of(&s.metadata))
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(drop)
            }
            Op::CreateEp(e) => {
                Api::<Endpoints>::namespaced(client.clone(), &ns_of(&e.metadata)).create(&pp, &e).await.map(drop)
            }
            Op::UpdateEp(e) => {
                let name = e.metadata.name.clone().unwrap_or_default();
                Api::<Endpoints>::namespaced(client.clone(), &ns_of(&e.metadata))
                    .replace(&name, &pp, &e)
                    .await
                    .map(drop)
            }
            Op::DeleteEp(ns, name) => Api::<Endpoints>::namespaced(client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await
                .map(drop),
        }
    }
}

/// `(namespace, name)`.
pub type Key = (String, String);

/// What both floors read before planning (as informers would list it): the Services, their
/// slices (by the `kubernetes.io/service-name` label) and Endpoints (by name), and the Nodes.
pub struct Listed {
    /// The benchmark's Services.
    pub services: Vec<Service>,
    /// Slices by their Service.
    pub slices: HashMap<Key, Vec<EndpointSlice>>,
    /// Endpoints by namespace and name.
    pub endpoints: HashMap<Key, Endpoints>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
}

impl Listed {
    /// Lists the benchmark's Services, slices and Endpoints, and every Node.
    pub async fn list(client: &kube::Client, layout: &Layout) -> anyhow::Result<Listed> {
        let (services, slices, endpoints, nodes) = tokio::try_join!(
            list_all::<Service>(client, layout),
            list_all::<EndpointSlice>(client, layout),
            list_all::<Endpoints>(client, layout),
            async { Ok(Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items) },
        )?;
        let ns_name =
            |m: &kube::api::ObjectMeta| (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default());
        let mut by_svc: HashMap<Key, Vec<EndpointSlice>> = HashMap::new();
        for s in slices {
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                by_svc.entry((s.metadata.namespace.clone().unwrap_or_default(), svc.clone())).or_default().push(s);
            }
        }
        Ok(Listed {
            services,
            slices: by_svc,
            endpoints: endpoints.into_iter().map(|e| (ns_name(&e.metadata), e)).collect(),
            nodes: nodes.into_iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n)).collect(),
        })
    }
}

/// The write floor: list the objects (as informers would), plan every Service with epslice's
/// pure planners (`endpointslice::plan`, `endpoints::plan`), then send exactly those writes,
/// `concurrency` at a time per resource. No watches, queues, retries or rate limits.
pub async fn run_floor(client: &kube::Client, layout: &Layout, concurrency: usize) -> anyhow::Result<FloorRun> {
    let t0 = Instant::now();
    let (Listed { services, slices: slices_by_svc, endpoints: eps_by_name, nodes }, pods) =
        tokio::try_join!(Listed::list(client, layout), list_all::<WatchedPod>(client, layout))?;
    let mut strings = Interner::default();
    let pods: Vec<CachedPod> = pods.into_iter().map(|p| p.into_cached(&mut strings)).collect();
    let mut pods_by_app: HashMap<(String, String), Vec<&CachedPod>> = HashMap::new();
    for p in &pods {
        if let Some(app) = p.labels.get("app") {
            pods_by_app
                .entry((p.metadata.namespace.as_deref().unwrap_or_default().to_owned(), app.to_owned()))
                .or_default()
                .push(p);
        }
    }
    let (mut slice_ops, mut ep_ops) = (Vec::new(), Vec::new());
    let slice_cfg = epslice::endpointslice::Config::default();
    let ep_cfg = epslice::endpoints::Config::default();
    for svc in &services {
        let key = (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
        let selector_app = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.get("app")).cloned();
        let svc_pods: &[&CachedPod] =
            selector_app.and_then(|a| pods_by_app.get(&(key.0.clone(), a))).map(Vec::as_slice).unwrap_or(&[]);
        let existing: Vec<&EndpointSlice> = slices_by_svc.get(&key).map(|v| v.iter().collect()).unwrap_or_default();
        let p = epslice::endpointslice::plan(
            &epslice::endpointslice::Input::new(svc, svc_pods, &nodes, &existing),
            &slice_cfg,
        );
        slice_ops.extend(p.create.into_iter().map(Op::CreateSlice));
        slice_ops.extend(p.update.into_iter().map(Op::UpdateSlice));
        slice_ops.extend(p.delete.into_iter().map(Op::DeleteSlice));
        let e =
            epslice::endpoints::plan(&epslice::endpoints::Input::new(svc, svc_pods, eps_by_name.get(&key)), &ep_cfg);
        match e.action {
            epslice::endpoints::Action::Nothing => {}
            epslice::endpoints::Action::Create(o) => ep_ops.push(Op::CreateEp(o)),
            epslice::endpoints::Action::Update(o) => ep_ops.push(Op::UpdateEp(o)),
            epslice::endpoints::Action::Delete { namespace, name } => ep_ops.push(Op::DeleteEp(namespace, name)),
        }
    }
    let plan_time = t0.elapsed();
    let send = |ops: Vec<Op>| async move {
        futures::stream::iter(ops.into_iter().map(|op| op.send(client)))
            .buffer_unordered(concurrency)
            .filter_map(|r| async move { r.err() })
            .collect::<Vec<kube::Error>>()
            .await
    };
    let (e1, e2) = tokio::join!(send(slice_ops), send(ep_ops));
    let errors: Vec<kube::Error> = e1.into_iter().chain(e2).collect();
    Ok(FloorRun { plan_time, errors: errors.len(), first_error: errors.first().map(|e| e.to_string()) })
}
