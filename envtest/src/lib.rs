//! A real Kubernetes control plane for epslice's tests: etcd and kube-apiserver (and optionally
//! kwok and kube-controller-manager), built from pinned Go modules and started on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), envtest::Error> {
//! // One control plane per test binary, started on first use, shared by its tests.
//! let cp = envtest::shared();
//! let client = cp.client().await?;
//! let ns = envtest::create_namespace(&client, "smoke").await?;
//! # Ok(()) }
//! ```
//!
//! Nothing outlives the test binary: every process joins a process group led by a reaper that
//! kills the group and removes the temporary directory once the test binary exits, however it
//! exits (see [`process`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod binaries;
pub mod kwok;
pub mod pki;
pub mod process;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use binaries::{Binary, Versions, versions};
pub use process::Component;

/// Errors of the harness. Each message says what failed and, for start-up failures, carries the
/// tail of the failing process's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries could not be found or built.
    #[error("control-plane binaries: {0}")]
    Install(String),
    /// Certificate generation failed.
    #[error("certificates: {0}")]
    Pki(String),
    /// A file or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A component did not become ready.
    #[error("{component} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    NotReady {
        /// Which component.
        component: String,
        /// Why (timeout, exit status …).
        reason: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// A kubeconfig or client could not be built.
    #[error("client: {0}")]
    Client(String),
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start kwok and create fake nodes (one per entry: `(name, zone, cpu)`).
    pub kwok: bool,
    /// The fake nodes created when `kwok` is on.
    pub nodes: Vec<kwok::NodeSpec>,
    /// Start kube-controller-manager with this `--controllers` list (e.g. `["garbagecollector"]`).
    pub kube_controller_manager: Option<Vec<String>>,
    /// How long each component may take to become ready.
    pub start_timeout: Duration,
    /// Inherit the components' stdout/stderr instead of writing log files.
    pub attach_output: bool,
    /// Extra kube-apiserver flags.
    pub apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        let start_timeout = std::env::var("EPSLICE_ENVTEST_START_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(90));
        let attach_output = std::env::var("KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT").is_ok_and(|v| v == "true");
        Options {
            kwok: true,
            nodes: kwok::default_nodes(),
            kube_controller_manager: None,
            start_timeout,
            attach_output,
            apiserver_args: Vec::new(),
        }
    }
}

/// Service CIDRs given to kube-apiserver (dual-stack: IPv4 primary, IPv6 secondary).
pub const SERVICE_CIDRS: &str = "10.96.0.0/16,fd00:10:96::/112";
/// Pod CIDR kwok assigns pod IPs from.
pub const POD_CIDR: &str = "10.244.0.0/16";

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: Option<tempfile::TempDir>,
    kubeconfig: PathBuf,
    server: String,
    pki: Option<pki::Pki>,
    bin_dir: PathBuf,
    components: std::sync::Mutex<Vec<Component>>,
    reaper: Option<process::Reaper>,
    attach_output: bool,
    start_timeout: Duration,
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on the rare collision).
pub fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::Io("binding a free port".into(), e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::Io("reading a free port".into(), e))
}

fn is_port_collision(tail: &str) -> bool {
    tail.contains("address already in use") || tail.contains("bind: address")
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and kwok / kube-controller-manager as asked), building the
    /// binaries first if they are missing.
    ///
    /// With `EPSLICE_TEST_KUBECONFIG` set, no control plane is started: that cluster is used (kwok
    /// is still started against it when asked).
    pub async fn start(opts: Options) -> Result<Self, Error> {
        if let Ok(path) = std::env::var("EPSLICE_TEST_KUBECONFIG") {
            return Self::existing(PathBuf::from(path), opts).await;
        }
        let mut wanted = vec![Binary::Etcd, Binary::KubeApiserver, Binary::Kubectl];
        if opts.kwok {
            wanted.push(Binary::Kwok);
        }
        if opts.kube_controller_manager.is_some() {
            wanted.push(Binary::KubeControllerManager);
        }
        let bin_dir = tokio::task::spawn_blocking(move || binaries::ensure(&wanted))
            .await
            .map_err(|e| Error::Install(format!("installer task: {e}")))??;

        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = tempfile::Builder::new()
            .prefix("epslice-envtest-")
            .tempdir_in(base)
            .map_err(|e| Error::Io("creating the control plane's directory".into(), e))?;
        let reaper = process::Reaper::start(dir.path())?;
        let pki = pki::generate(dir.path(), &[])?;

        let mut cp = ControlPlane {
            kubeconfig: dir.path().join("admin.kubeconfig"),
            server: String::new(),
            pki: Some(pki),
            bin_dir,
            components: std::sync::Mutex::new(Vec::new()),
            reaper: Some(reaper),
            attach_output: opts.attach_output,
            start_timeout: opts.start_timeout,
            dir: Some(dir),
        };
        cp.start_etcd_and_apiserver(&opts).await?;
        if opts.kwok {
            cp.start_kwok(&opts.nodes).await?;
        }
        if let Some(controllers) = &opts.kube_controller_manager {
            let c = cp.start_kube_controller_manager(controllers, &[]).await?;
            cp.adopt(c);
        }
        Ok(cp)
    }

    async fn existing(kubeconfig: PathBuf, opts: Options) -> Result<Self, Error> {
        let kc = Kubeconfig::read_from(&kubeconfig).map_err(|e| Error::Client(e.to_string()))?;
        let server =
            kc.clusters.first().and_then(|c| c.cluster.as_ref()).and_then(|c| c.server.clone()).unwrap_or_default();
        let mut wanted = vec![Binary::Kubectl];
        if opts.kwok {
            wanted.push(Binary::Kwok);
        }
        let bin_dir = tokio::task::spawn_blocking(move || binaries::ensure(&wanted))
            .await
            .map_err(|e| Error::Install(format!("installer task: {e}")))??;
        let dir = tempfile::Builder::new()
            .prefix("epslice-envtest-")
            .tempdir()
            .map_err(|e| Error::Io("creating a temp directory".into(), e))?;
        let reaper = process::Reaper::start(dir.path())?;
        let mut cp = ControlPlane {
            kubeconfig,
            server,
            pki: None,
            bin_dir,
            components: std::sync::Mutex::new(Vec::new()),
            reaper: Some(reaper),
            attach_output: opts.attach_output,
            start_timeout: opts.start_timeout,
            dir: Some(dir),
        };
        if opts.kwok {
            cp.start_kwok(&opts.nodes).await?;
        }
        Ok(cp)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or_else(|| Path::new("."))
    }

    fn pgid(&self) -> i32 {
        self.reaper.as_ref().map(process::Reaper::pgid).unwrap_or(0)
    }

    /// The directory holding the binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of a binary in [`Self::bin_dir`].
    pub fn binary(&self, b: Binary) -> PathBuf {
        self.bin_dir.join(b.file_name())
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The PEM files (absent when running against an existing cluster).
    pub fn pki(&self) -> Option<&pki::Pki> {
        self.pki.as_ref()
    }

    /// A new client for the admin user. Each tokio runtime needs its own client, so tests call
    /// this rather than sharing one.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_for(&self.kubeconfig).await
    }

    /// A `kubectl` command (the pinned version) pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.binary(Binary::Kubectl));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// Keeps a component running for the control plane's lifetime.
    pub fn adopt(&self, c: Component) {
        self.components.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// The process id of a running component by name (`etcd`, `kube-apiserver`, `kwok`), e.g.
    /// to measure its CPU.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.components.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|c| c.name() == name)?.pid()
    }

    /// Process ids of every running component (for leak checks).
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> =
            self.components.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Component::pid).collect();
        if let Some(r) = &self.reaper {
            v.push(r.pgid() as u32);
        }
        v
    }

    fn spawn(&self, name: &str, cmd: Command) -> Result<Component, Error> {
        let log = self.dir().join(format!("{name}.log"));
        Component::spawn(name, cmd, log, self.pgid(), self.attach_output)
    }

    async fn start_etcd_and_apiserver(&mut self, opts: &Options) -> Result<(), Error> {
        let mut last = None;
        for _attempt in 0..3 {
            match self.try_start_etcd_and_apiserver(opts).await {
                Ok(()) => return Ok(()),
                Err(Error::NotReady { tail, component, reason, log }) if is_port_collision(&tail) => {
                    tracing::warn!(%component, "port collision, retrying with new ports");
                    self.components.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    last = Some(Error::NotReady { tail, component, reason, log });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Client("could not start the control plane".into())))
    }

    async fn try_start_etcd_and_apiserver(&mut self, opts: &Options) -> Result<(), Error> {
        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let data = self.dir().join(format!("etcd-{client_port}"));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(self.binary(Binary::Etcd));
        etcd.arg("--name=envtest")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=envtest={peer_url}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let mut etcd = self.spawn("etcd", etcd)?;
        let health = format!("127.0.0.1:{client_port}");
        wait_until(&mut etcd, self.start_timeout, || {
            let health = health.clone();
            async move { http_get_ok(&health, "/health").await }
        })
        .await?;
        self.adopt(etcd);

        let pki = self.pki.clone().ok_or_else(|| Error::Client("no PKI".into()))?;
        let d = self.dir().to_path_buf();
        let mut api = Command::new(self.binary(Binary::KubeApiserver));
        api.arg(format!("--etcd-servers={client_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", d.join("apiserver-certs").display()))
            .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
            .arg(format!("--tls-private-key-file={}", pki.serving_key.display()))
            .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", pki.sa_pub.display()))
            .arg(format!("--service-account-signing-key-file={}", pki.sa_key.display()))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDRS}"))
            .arg("--authorization-mode=RBAC")
            .arg("--allow-privileged=true")
            // No kube-controller-manager service-account controller by default: no `default`
            // ServiceAccount, so the ServiceAccount admission plugin would reject every Pod.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--endpoint-reconciler-type=lease")
            .arg("--v=1");
        if !has_default_route() {
            // Without a default route kube-apiserver cannot pick an advertise address; nothing
            // connects to it in tests (clients use 127.0.0.1), it only appears in default/kubernetes.
            api.arg("--advertise-address=192.0.2.1");
        }
        api.args(&opts.apiserver_args);
        let mut api = self.spawn("kube-apiserver", api)?;
        self.server = format!("https://127.0.0.1:{api_port}");
        write_kubeconfig(&self.kubeconfig, &self.server, &pki)?;
        let kubeconfig = self.kubeconfig.clone();
        wait_until(&mut api, self.start_timeout, || {
            let kubeconfig = kubeconfig.clone();
            async move { apiserver_ready(&kubeconfig).await }
        })
        .await?;
        self.adopt(api);
        Ok(())
    }

    async fn start_kwok(&mut self, nodes: &[kwok::NodeSpec]) -> Result<(), Error> {
        let mut cmd = Command::new(self.binary(Binary::Kwok));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--manage-all-nodes=false")
            .arg(format!("--manage-nodes-with-annotation-selector={}={}", kwok::NODE_ANNOTATION, "fake"))
            .arg(format!("--disregard-status-with-annotation-selector={}={}", kwok::STATUS_ANNOTATION, "custom"))
            .arg(format!("--config={}", self.bin_dir.join("kwok-stages.yaml").display()))
            .arg(format!("--cidr={POD_CIDR}"))
            .arg("--node-ip=10.240.0.1")
            .arg("--node-lease-duration-seconds=40");
        let mut c = self.spawn("kwok", cmd)?;
        let client = self.client().await?;
        // kwok has no health endpoint without --server-address; a node it marks Ready shows it runs.
        for n in nodes {
            kwok::create_node(&client, n).await?;
        }
        if let Some(first) = nodes.first() {
            let name = first.name.clone();
            wait_until(&mut c, self.start_timeout, || {
                let client = client.clone();
                let name = name.clone();
                async move { kwok::node_ready(&client, &name).await }
            })
            .await?;
        }
        self.adopt(c);
        Ok(())
    }

    /// Starts kube-controller-manager (the pinned version) with the given `--controllers` and
    /// extra flags, and waits for its health endpoint. The returned component stops it on drop;
    /// pass it to [`Self::adopt`] to keep it for the control plane's lifetime.
    pub async fn start_kube_controller_manager(
        &self,
        controllers: &[String],
        extra_args: &[String],
    ) -> Result<Component, Error> {
        let pki =
            self.pki.clone().ok_or_else(|| Error::Client("kube-controller-manager needs the envtest PKI".into()))?;
        let bin_dir = tokio::task::spawn_blocking(|| binaries::ensure(&[Binary::KubeControllerManager]))
            .await
            .map_err(|e| Error::Install(format!("installer task: {e}")))??;
        let port = free_port()?;
        let mut cmd = Command::new(bin_dir.join(Binary::KubeControllerManager.file_name()));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", self.kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!("--controllers={}", controllers.join(",")))
            .arg(format!("--service-account-private-key-file={}", pki.sa_key.display()))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            .arg(format!("--cluster-signing-cert-file={}", pki.ca_cert.display()))
            .arg(format!("--cluster-signing-key-file={}", pki.ca_key.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg("--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics")
            .arg("--use-service-account-credentials=false")
            .arg("--v=1")
            .args(extra_args);
        let name = format!("kube-controller-manager-{port}");
        let mut c = self.spawn(&name, cmd)?;
        let addr = format!("127.0.0.1:{port}");
        wait_until(&mut c, self.start_timeout, || {
            let addr = addr.clone();
            async move { https_insecure_ok(&addr, "/healthz").await }
        })
        .await?;
        Ok(c)
    }

    /// Spawns any command (e.g. the epslice binary) in this control plane's process group, so the
    /// reaper stops it with the rest. Its output goes to `<dir>/<name>.log`.
    pub fn spawn_in_group(&self, name: &str, cmd: Command) -> Result<Component, Error> {
        self.spawn(name, cmd)
    }

    /// The timeout used for component start-up.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// Stops every component and removes the temporary directory.
    pub fn stop(&mut self) {
        let mut comps = std::mem::take(&mut *self.components.lock().unwrap_or_else(|e| e.into_inner()));
        // Stop in reverse start order: clients (kwok, kcm, controllers) first, etcd last.
        while let Some(mut c) = comps.pop() {
            c.stop();
        }
        if let Some(mut r) = self.reaper.take() {
            process::kill_group(r.pgid());
            r.stop();
        }
        self.dir.take();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Client(format!("{}: {e}", kubeconfig.display())))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    config.read_timeout = Some(Duration::from_secs(300));
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

fn write_kubeconfig(path: &Path, server: &str, pki: &pki::Pki) -> Result<(), Error> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: admin
    namespace: default
current-context: envtest
",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    std::fs::write(path, text).map_err(|e| Error::Io(format!("writing {}", path.display()), e))
}

fn has_default_route() -> bool {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| t.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")))
        .unwrap_or(true)
}

/// Polls `probe` until it returns true, failing early if the process exits and with the log
/// tail on timeout.
async fn wait_until<F, Fut>(c: &mut Component, timeout: Duration, mut probe: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if let Some(status) = c.exited() {
            return Err(not_ready(c, format!("exited with {status}")));
        }
        if probe().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(not_ready(
                c,
                format!("not ready after {:?} (raise EPSLICE_ENVTEST_START_TIMEOUT, in seconds)", timeout),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn not_ready(c: &Component, reason: String) -> Error {
    Error::NotReady {
        component: c.name().to_string(),
        reason,
        log: c.log_path().display().to_string(),
        tail: c.log_tail(4000),
    }
}

async fn http_get_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).starts_with("HTTP/1.0 200")
        || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200")
}

/// Is a TLS port accepting connections (the certificate is not checked: the process is ours)?
async fn https_insecure_ok(addr: &str, _path: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await.is_ok_and(|r| r.is_ok())
}

async fn apiserver_ready(kubeconfig: &Path) -> bool {
    let Ok(client) = client_for(kubeconfig).await else { return false };
    let req = http::Request::get("/readyz").body(Vec::new()).expect("static request");
    matches!(tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await, Ok(Ok(t)) if t.trim() == "ok")
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane shared by all tests of this test binary (etcd, kube-apiserver and kwok with
/// [`kwok::default_nodes`]), started on first use. Tests isolate themselves with
/// [`create_namespace`]. Panics with the start-up error (including the failing component's log
/// tail) if the control plane cannot start.
pub fn shared() -> &'static ControlPlane {
    let r = SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(ControlPlane::start(Options::default())).map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the control plane start-up thread panicked".to_string()))
    });
    match r {
        Ok(cp) => cp,
        Err(e) => panic!("envtest: cannot start the shared control plane: {e}"),
    }
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a namespace with a unique name starting with `prefix` and returns its name.
pub async fn create_namespace(client: &kube::Client, prefix: &str) -> Result<String, Error> {
    let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let prefix: String = prefix.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    let name = format!("{}-{}-{n}-{:x}", prefix.to_ascii_lowercase(), std::process::id(), nanos & 0xffff);
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_collision_detection() {
        assert!(is_port_collision("listen tcp 127.0.0.1:2379: bind: address already in use"));
        assert!(!is_port_collision("etcdserver: published local member"));
    }

    #[test]
    fn free_ports_are_loopback_and_nonzero() {
        let p = free_port().unwrap();
        assert_ne!(p, 0);
    }
}
