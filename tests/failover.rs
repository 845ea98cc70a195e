//! Leader election with real processes: two (then three) `epslice run` replicas on one control
//! plane. Only the Lease holder writes; SIGKILL of the leader hands over within the lease
//! duration; SIGTERM releases the Lease so the next replica takes over at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use envtest::{Component, kwok};
use epslice_integration_tests::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

struct Replica {
    name: String,
    proc: Component,
    admin: u16,
}

impl Replica {
    /// `epslice run` for `ns`, electing a leader on a Lease in `ns` (lease 10 s, grace 3 s).
    fn start(cp: &envtest::ControlPlane, ns: &str, name: &str) -> Replica {
        Replica::start_with(cp, ns, name, cp.kubeconfig_path(), ns)
    }

    /// The same through `kubeconfig`, with the Lease in `lease_ns`.
    fn start_with(
        cp: &envtest::ControlPlane,
        ns: &str,
        name: &str,
        kubeconfig: &std::path::Path,
        lease_ns: &str,
    ) -> Replica {
        let admin = envtest::free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_epslice-cli"));
        cmd.arg("run")
            .env_remove("KUBECONFIG")
            .env("POD_NAME", name)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns, "--leader-elect-resource-namespace", lease_ns])
            .args(["--leader-elect-lease-duration", "10s", "--leader-elect-renew-grace", "3s"])
            .args(["--admin-bind-address", &format!("127.0.0.1:{admin}")])
            .args(["--field-manager", &format!("epslice-{name}"), "--log-level", "info"]);
        let proc = cp.spawn_in_group(&format!("epslice-{name}"), cmd).unwrap();
        Replica { name: name.into(), proc, admin }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.admin)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, text))
    }

    async fn wait_ready(&self) {
        let t0 = Instant::now();
        while self.get("/readyz").await.map(|r| r.0) != Some(200) {
            assert!(t0.elapsed() < CONVERGE, "replica {} not ready; log:\n{}", self.name, self.proc.log_tail(3000));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Slice writes this replica made.
    async fn writes(&self) -> f64 {
        let Some((_, text)) = self.get("/metrics").await else { return -1.0 };
        text.lines()
            .filter(|l| l.starts_with("endpoint_slice_controller_changes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("epslice").await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

async fn wait_holder(leases: &Api<Lease>, prefix: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if holder(leases).await.is_some_and(|h| h.starts_with(&format!("{prefix}_"))) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{prefix} did not take the Lease within {within:?} (holder {:?})",
            holder(leases).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn add_pod(pods: &Api<Pod>, name: &str, i: usize) {
    let node = &kwok::default_nodes()[i % 6].name;
    pods.create(&PostParams::default(), &kwok::pod(name, node, &[("app", "ha")], &[("http", 8080)])).await.unwrap();
}

#[tokio::test]
async fn only_the_leader_writes_and_failover_is_quick() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "failover").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let mut a = Replica::start(cp, &ns, "a");
    a.wait_ready().await;
    wait_holder(&leases, "a", CONVERGE).await;
    let b = Replica::start(cp, &ns, "b");
    b.wait_ready().await;

    svcs.create(&PostParams::default(), &service("ha", "ha", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    for i in 0..3 {
        add_pod(&pods, &format!("ha-{i}"), i).await;
    }
    wait_slices(&client, &ns, "ha", "3 endpoints", |s| endpoint_count(s) == 3).await;
    assert!(a.writes().await > 0.0, "the leader wrote");
    assert_eq!(b.writes().await, 0.0, "the follower never writes");
    let slices_before = slices(&client, &ns, "ha").await;
    let managers: Vec<String> = slices_before
        .iter()
        .flat_map(|s| s.metadata.managed_fields.clone().unwrap_or_default())
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().all(|m| m == "epslice-a"), "{managers:?}");

    // Crash the leader: the follower takes over once the Lease expires (10 s here; kcm's default 15 s).
    a.proc.kill();
    let t_kill = Instant::now();
    let took = wait_holder(&leases, "b", Duration::from_secs(15)).await;
    add_pod(&pods, "ha-3", 3).await;
    wait_slices(&client, &ns, "ha", "writes resume under the new leader", |s| endpoint_count(s) == 4).await;
    assert!(b.writes().await > 0.0);
    eprintln!("takeover after SIGKILL: {took:?}; writes resumed {:?} after the kill", t_kill.elapsed());

    // Graceful handover: SIGTERM releases the Lease, so a third replica takes over at once.
    let c = Replica::start(cp, &ns, "c");
    c.wait_ready().await;
    let mut b = b;
    let t_term = Instant::now();
    b.proc.stop();
    let handover = wait_holder(&leases, "c", Duration::from_secs(8)).await;
    eprintln!("takeover after SIGTERM: {:?} (stop included: {:?})", handover, t_term.elapsed());
    assert!(t_term.elapsed() < Duration::from_secs(8), "release on shutdown: no wait for expiry");
    add_pod(&pods, "ha-4", 4).await;
    wait_slices(&client, &ns, "ha", "writes resume after a graceful handover", |s| endpoint_count(s) == 5).await;
    assert!(c.writes().await > 0.0);
    drop(c);
}

/// A TCP forwarder from `127.0.0.1:listen` to `target` (`host:port`): the API server as seen
/// through a link that can be cut. Dropping it (aborting the task) closes every connection.
fn forward(listen: u16, target: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// An API server that cannot be reached: `epslice run` stays up (healthz ok), reports not-ready
/// naming the failing watches while they back off, becomes ready when the API server appears and
/// not-ready again when the link is cut.
#[tokio::test]
async fn unreachable_api_server_means_not_ready_not_a_crash() {
    let cp = envtest::shared();
    let link = envtest::free_port().unwrap();
    let (path, target) = linked_kubeconfig(cp, link, "link");
    // Scoped to a namespace of its own: without leader election it writes as soon as it is
    // ready, and the other tests of this binary count their replicas' writes.
    let ns = envtest::create_namespace(&cp.client().await.unwrap(), "unreachable").await.unwrap();

    let admin = envtest::free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_epslice-cli"));
    cmd.arg("run").env_remove("KUBECONFIG").arg("--kubeconfig").arg(&path).args([
        "--leader-elect=false",
        "--namespace",
        &ns,
        "--admin-bind-address",
        &format!("127.0.0.1:{admin}"),
    ]);
    let proc = cp.spawn_in_group("epslice-unreachable", cmd).unwrap();
    let mut r = Replica { name: "unreachable".into(), proc, admin };

    // Nothing listens on the link: alive, not ready, the watches named.
    let t0 = Instant::now();
    let body = loop {
        if let Some((503, body)) = r.get("/readyz").await {
            break body;
        }
        assert!(t0.elapsed() < CONVERGE, "no 503 from /readyz; log:\n{}", r.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("pods watch"), "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(r.proc.exited().is_none(), "exited; log:\n{}", r.proc.log_tail(3000));
    assert_eq!(r.get("/healthz").await.map(|x| x.0), Some(200));
    assert_eq!(r.get("/readyz").await.map(|x| x.0), Some(503));

    // The API server appears: ready once the watches' backoff retries.
    let link_task = forward(link, target);
    let t0 = Instant::now();
    while r.get("/readyz").await.map(|x| x.0) != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(90), "never ready; log:\n{}", r.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The link is cut: not ready again, still alive.
    link_task.abort();
    let _ = link_task.await;
    let t0 = Instant::now();
    while r.get("/readyz").await.map(|x| x.0) != Some(503) {
        assert!(t0.elapsed() < CONVERGE, "still ready with the API server gone; log:\n{}", r.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(r.proc.exited().is_none());
}

/// A kubeconfig for the shared control plane whose server is `127.0.0.1:link`; returns its path
/// and the real `host:port`.
fn linked_kubeconfig(cp: &envtest::ControlPlane, link: u16, tag: &str) -> (std::path::PathBuf, String) {
    let mut kc = kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap();
    let mut target = None;
    for c in &mut kc.clusters {
        if let Some(cluster) = c.cluster.as_mut() {
            let url: http::Uri = cluster.server.clone().unwrap().parse().unwrap();
            target = Some(format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap()));
            cluster.server = Some(format!("https://127.0.0.1:{link}"));
        }
    }
    let path = std::env::temp_dir().join(format!("epslice-failover-{}-{tag}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_json::to_vec_pretty(&kc).unwrap()).unwrap();
    (path, target.unwrap())
}

/// A forwarder like [`forward`] that, once `cut` turns true, goes silent without closing
/// anything: bytes stop flowing both ways and new connections are accepted and then ignored,
/// as with a peer that died without a reset (no RST, no FIN).
fn forward_until_silent(
    listen: u16,
    target: String,
    cut: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            let (target, mut cut) = (target.clone(), cut.clone());
            conns.spawn(async move {
                if *cut.borrow() {
                    let _held = inbound;
                    return std::future::pending::<()>().await;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                let silenced = tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    _ = cut.wait_for(|c| *c) => true,
                };
                if silenced {
                    let _held = (inbound, outbound);
                    std::future::pending::<()>().await;
                }
            });
        }
    })
}

/// A forwarder like [`forward`] whose requests reach the API server `delay` late: what the
/// client sends waits `delay` before it is passed on (answers come back at once). A client that
/// hangs up meanwhile loses what was still waiting, as the API server drops a cancelled request
/// still waiting in its priority-and-fairness queue.
fn forward_slow(listen: u16, target: String, delay: Duration) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((inbound, _)) = listener.accept().await else { continue };
            let target = target.clone();
            conns.spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let up = async move {
                    let mut buf = vec![0_u8; 64 * 1024];
                    'conn: loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut waiting = buf[..n].to_vec();
                        let due = tokio::time::Instant::now() + delay;
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => break,
                                r = from_client.read(&mut buf) => match r {
                                    Ok(0) | Err(_) => break 'conn,
                                    Ok(m) => waiting.extend_from_slice(&buf[..m]),
                                },
                            }
                        }
                        if to_server.write_all(&waiting).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    })
}

/// A deleted Lease is created again (only building a Lease manager creates it) and exactly one
/// replica leads: the leader's manager fails on the missing Lease, the follower's is replaced.
/// (A guard for the replacement rules; the case found in review, a manager that never saw
/// another holder, is covered by the same `lease.is_none()` rule.)
#[tokio::test]
async fn a_deleted_lease_is_created_again_and_a_replica_leads() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "dellease").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let a = Replica::start(cp, &ns, "da");
    a.wait_ready().await;
    wait_holder(&leases, "da", CONVERGE).await;
    let b = Replica::start(cp, &ns, "db");
    b.wait_ready().await;
    // b has seen da hold the Lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    leases.delete("epslice", &Default::default()).await.unwrap();
    let t0 = Instant::now();
    loop {
        let h = holder(&leases).await;
        if h.as_deref().is_some_and(|h| h.starts_with("da_") || h.starts_with("db_")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "nobody took a new Lease (holder {h:?}); logs:\n{}\n{}",
            a.proc.log_tail(2000),
            b.proc.log_tail(2000)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Exactly one gate opens.
    let t0 = Instant::now();
    loop {
        let (ga, gb) = (leader_gauge(&a).await, leader_gauge(&b).await);
        if matches!((ga, gb), (Some(1.0), Some(0.0)) | (Some(0.0), Some(1.0))) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "gates {ga:?} {gb:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Found in review: with the Lease manager's call no longer restarted every second, a renewal
/// stuck on a connection that died without a reset would have kept it believing it leads, with
/// the gate closed, for good. A leader whose link goes silent until its Lease expires leads again
/// once the link is back (no other replica here).
#[tokio::test]
async fn a_leader_whose_link_comes_back_leads_again() {
    let SilentLink { leases, cut_tx, replica: r, .. } = lead_behind_silent_link("relink", "r").await;
    let wait_gauge = |want: f64, within: Duration| {
        let r = &r;
        async move {
            let t0 = Instant::now();
            while leader_gauge(r).await != Some(want) {
                assert!(t0.elapsed() < within, "gauge never {want}; log:\n{}", r.proc.log_tail(3000));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_gauge(1.0, CONVERGE).await;

    // Silent past the Lease's expiry (10 s): connections open now stay silent for good.
    cut_tx.send(true).unwrap();
    wait_gauge(0.0, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    cut_tx.send(false).unwrap();
    // The manager is seen stuck a lease duration plus 5 s after the last renewal, and a fresh
    // one takes the Lease again over new connections.
    wait_gauge(1.0, Duration::from_secs(60)).await;
    assert!(holder(&leases).await.is_some_and(|h| h.starts_with("r_")));
}

/// Found in review: the Lease manager's `changed()`, which sends the acquiring and renewing
/// PATCHes, was raced against a one-second tick and dropped with it, so on an API server slower
/// than a second to answer (APF queueing under load, say) no PATCH ever landed and nobody led.
/// Through a link that delays every request by 1.5 s, a replica takes the Lease and keeps
/// renewing it.
#[tokio::test]
async fn a_slow_api_server_does_not_keep_the_lease_from_being_taken_and_renewed() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "slowlink").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let link = envtest::free_port().unwrap();
    let (path, target) = linked_kubeconfig(cp, link, "slowlink");
    let _link = forward_slow(link, target, Duration::from_millis(1500));
    let mut r = Replica::start_with(cp, &ns, "slow", &path, &ns);

    wait_holder(&leases, "slow", Duration::from_secs(90)).await;
    let renewed = |l: Option<Lease>| l.and_then(|l| l.spec).and_then(|s| s.renew_time).map(|t| t.0);
    let first = renewed(leases.get_opt("epslice").await.unwrap()).expect("a renewTime");
    // Lease 10 s, renewed 3 s before expiry: two renewals within 16 s, each 1.5 s in transit.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let lease = leases.get_opt("epslice").await.unwrap();
    let holder = lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone());
    assert!(holder.is_some_and(|h| h.starts_with("slow_")), "kept; log:\n{}", r.proc.log_tail(3000));
    let last = renewed(lease).expect("a renewTime");
    assert!(last > first, "renewed ({first} → {last}); log:\n{}", r.proc.log_tail(3000));
    assert!(r.proc.exited().is_none(), "log:\n{}", r.proc.log_tail(3000));
}

/// A replica in a namespace of its own that reaches the API server through
/// [`forward_until_silent`] and holds the Lease.
struct SilentLink {
    client: kube::Client,
    ns: String,
    leases: Api<Lease>,
    /// `true` silences the link.
    cut_tx: tokio::sync::watch::Sender<bool>,
    replica: Replica,
    _link: tokio::task::JoinHandle<()>,
}

async fn lead_behind_silent_link(tag: &str, name: &str) -> SilentLink {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, tag).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let link = envtest::free_port().unwrap();
    let (path, target) = linked_kubeconfig(cp, link, tag);
    let (cut_tx, cut) = tokio::sync::watch::channel(false);
    let _link = forward_until_silent(link, target, cut);
    let replica = Replica::start_with(cp, &ns, name, &path, &ns);
    replica.wait_ready().await;
    wait_holder(&leases, name, CONVERGE).await;
    SilentLink { client, ns, leases, cut_tx, replica, _link }
}

async fn leader_gauge(r: &Replica) -> Option<f64> {
    let (_, text) = r.get("/metrics").await?;
    text.lines().find_map(|l| l.strip_prefix("leader_election_master_status{name=\"epslice\"} ")?.trim().parse().ok())
}

/// Found in review: the leader's own check of its Lease had no timeout, so a link to the API
/// server that went silent (no reset) hung it with the write gate open while another replica
/// took over. Now the gate closes before the lease can expire.
#[tokio::test]
async fn a_leader_whose_link_goes_silent_stops_leading_before_its_lease_expires() {
    let cp = envtest::shared();
    let SilentLink { client, ns, leases, cut_tx, replica: s, .. } = lead_behind_silent_link("silent", "s").await;
    let t0 = Instant::now();
    while leader_gauge(&s).await != Some(1.0) {
        assert!(t0.elapsed() < CONVERGE, "s never opened its gate; log:\n{}", s.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Replica::start(cp, &ns, "b2");
    b.wait_ready().await;

    let t_cut = Instant::now();
    cut_tx.send(true).unwrap();
    while leader_gauge(&s).await != Some(0.0) {
        // Lease 10 s, grace 3 s: the gate closes 8.5 s after the last renewal (renewals come
        // every 7 s), before the Lease expires at 10 s. That it closed before anyone else could
        // hold the Lease is checked below; this bound only keeps a replica that never closes
        // from hanging the test, with room for a loaded machine.
        assert!(
            t_cut.elapsed() < Duration::from_secs(20),
            "s still leads over a silent link; log:\n{}",
            s.proc.log_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = t_cut.elapsed();
    let closed_at = k8s_openapi::jiff::Timestamp::now();
    let lease = leases.get("epslice").await.unwrap().spec.unwrap();
    let holder_then = lease.holder_identity.clone();
    assert!(
        holder_then.as_deref().is_some_and(|h| h.starts_with("s_")),
        "s's gate closed before its Lease could pass to anyone else (holder {holder_then:?})"
    );
    // The Lease's own clock (one machine): the gate was seen closed before the last renewal
    // expired, polling included.
    let renewed = lease.renew_time.expect("renewTime").0;
    let expires =
        renewed + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap()));
    assert!(
        closed_at < expires,
        "gate seen closed at {closed_at}, the Lease renewed at {renewed} expired at {expires}"
    );
    let took = wait_holder(&leases, "b2", Duration::from_secs(20)).await;
    eprintln!("gate closed {closed:?} after the link went silent; b2 took the Lease {took:?} after that");
    assert_eq!(leader_gauge(&s).await, Some(0.0), "s stays a follower");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &service("ha", "ha", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    add_pod(&pods, "ha-0", 0).await;
    wait_slices(&client, &ns, "ha", "the new leader writes", |s| endpoint_count(s) == 1).await;
    assert_eq!(s.writes().await, 0.0, "the silenced replica wrote nothing");
}

/// Found in review: a Lease that could not be set up at start (here: its namespace does not
/// exist yet) ended leader election for good, and the replica never wrote. Now it retries.
#[tokio::test]
async fn a_lease_that_cannot_be_set_up_at_start_is_retried() {
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "late-lease").await.unwrap();
    let lease_ns = format!("{ns}-leases");
    let r = Replica::start_with(cp, &ns, "late", cp.kubeconfig_path(), &lease_ns);
    r.wait_ready().await;
    let t0 = Instant::now();
    while !r.proc.log_tail(20_000).contains("cannot set up the Lease") {
        assert!(t0.elapsed() < CONVERGE, "no Lease set-up failure logged:\n{}", r.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leader_gauge(&r).await, Some(0.0), "no Lease, no writes");

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut n = k8s_openapi::api::core::v1::Namespace::default();
    n.metadata.name = Some(lease_ns.clone());
    namespaces.create(&PostParams::default(), &n).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_ns);
    // The retry backs off up to 30 s (plus jitter).
    wait_holder(&leases, "late", Duration::from_secs(75)).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &service("ha", "ha", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    add_pod(&pods, "ha-0", 0).await;
    wait_slices(&client, &ns, "ha", "writes once the Lease is held", |s| endpoint_count(s) == 1).await;
}
