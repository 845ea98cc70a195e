//! `epslice demo`: a local control plane with fake nodes in three zones, epslice's controllers
//! running against it, and a sample workload whose EndpointSlices you can watch change.

use std::time::{Duration, Instant};

use anyhow::Context;
use envtest::kwok;
use epslice::controllers::{self, Handles, Options};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// Flags of `epslice demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pods behind the sample `web` Service.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pods: u16,
    /// Print the result and stop instead of running until Ctrl-C (for scripted checks).
    #[arg(long)]
    no_wait: bool,
}

const NS: &str = "demo";

pub async fn run(args: Args) -> anyhow::Result<()> {
    eprintln!("Starting etcd, kube-apiserver and kwok (built from pinned Go modules on first use)...");
    let cp = envtest::ControlPlane::start(envtest::Options::default()).await.context("starting the control plane")?;
    let client = cp.client().await?;

    let admin_port = envtest::free_port()?;
    let options = Options {
        controllers: controllers::ControllerName::ALL.to_vec(),
        admin_addr: Some(([127, 0, 0, 1], admin_port).into()),
        ..Default::default()
    };
    let handles = Handles::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(controllers::run(client.clone(), options, handles.clone(), async move {
        let _ = stop_rx.await;
    }));

    let expected = create_workload(&client, args.pods).await?;
    wait_converged(&client, expected).await;

    let kubectl = cp.binary(envtest::Binary::Kubectl);
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    for what in ["endpointslices", "endpoints"] {
        let out = cp.kubectl().args(["get", what, "-n", NS, "-o", "wide"]).output()?;
        println!("$ kubectl get {what} -n {NS} -o wide");
        println!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!("Control plane {} with epslice's EndpointSlice, Endpoints and mirroring controllers", cp.server());
    println!("(metrics: http://127.0.0.1:{admin_port}/metrics).");
    println!("In another shell:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  alias kubectl={}", kubectl.display());
    println!("  kubectl -n {NS} get endpointslices -o wide -w");
    println!("Scale up (pods are bound to a fake node; kwok makes them Ready):");
    println!(
        "  kubectl -n {NS} run web-new --image=registry.invalid/app:1 --labels=app=web --port=8080 --overrides='{{\"spec\":{{\"nodeName\":\"kwok-zone-b-1\",\"containers\":[{{\"name\":\"web-new\",\"image\":\"registry.invalid/app:1\",\"ports\":[{{\"name\":\"http\",\"containerPort\":8080}}]}}]}}}}'"
    );
    println!("Scale down:  kubectl -n {NS} delete pod web-0");
    println!("Flip readiness (take the status over from kwok, then write it):");
    println!("  kubectl -n {NS} annotate pod web-1 kwok.x-k8s.io/status=custom");
    println!(
        "  kubectl -n {NS} patch pod web-1 --subresource=status --type=merge -p '{{\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"False\"}}]}}}}'"
    );
    if !args.no_wait {
        println!("Press Ctrl-C to stop and clean up.");
        tokio::signal::ctrl_c().await?;
        eprintln!("Stopping.");
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    drop(cp);
    Ok(())
}

fn svc(name: &str, app: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), app.to_string())].into()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: 80,
        target_port: Some(IntOrString::String("http".into())),
        ..Default::default()
    }
}

/// Creates the sample workload and returns the endpoint count expected per Service.
async fn create_workload(client: &kube::Client, pods: u16) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(NS.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let nodes = kwok::default_nodes();
    // The web pods go round the nodes, the db pods on the first three, the dual-stack pods on the
    // next two (`node`: by position, round the list).
    anyhow::ensure!(!nodes.is_empty(), "the demo needs kwok nodes");
    let node = |i: usize| nodes[i % nodes.len()].name.as_str();

    // A plain Service over `pods` pods spread across the zones.
    services.create(&PostParams::default(), &svc("web", "web", vec![http_port()])).await?;
    for i in 0..pods as usize {
        let p = kwok::pod(&format!("web-{i}"), node(i), &[("app", "web")], &[("http", 8080)]);
        pod_api.create(&PostParams::default(), &p).await?;
    }

    // A headless Service whose pods have stable hostnames (as a StatefulSet gives them).
    let mut db = svc("db", "db", vec![]);
    if let Some(spec) = db.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
        spec.ports = None;
    }
    services.create(&PostParams::default(), &db).await?;
    for i in 0..3 {
        let mut p = kwok::pod(&format!("db-{i}"), node(i), &[("app", "db")], &[]);
        if let Some(spec) = p.spec.as_mut() {
            spec.hostname = Some(format!("db-{i}"));
            spec.subdomain = Some("db".into());
        }
        pod_api.create(&PostParams::default(), &p).await?;
    }

    // A dual-stack Service (the demo's apiserver has IPv4 and IPv6 service ranges); its pods
    // carry both address families.
    let mut dual = svc("dual", "dual", vec![http_port()]);
    if let Some(spec) = dual.spec.as_mut() {
        spec.ip_family_policy = Some("RequireDualStack".into());
    }
    services.create(&PostParams::default(), &dual).await?;
    for i in 0..2 {
        let name = format!("dual-{i}");
        let p = kwok::with_custom_status(kwok::pod(&name, node(i + 3), &[("app", "dual")], &[("http", 8080)]));
        pod_api.create(&PostParams::default(), &p).await?;
        let ips = [format!("10.250.0.{}", i + 10), format!("fd00:250::{}", i + 10)];
        kwok::set_pod_status(&pod_api, &name, kwok::running_status(&[&ips[0], &ips[1]], true)).await?;
    }
    // A selector-less Service with hand-written Endpoints: the mirroring controller turns them
    // into an EndpointSlice.
    let mut ext =
        svc("external-db", "unused", vec![ServicePort { name: Some("pg".into()), port: 5432, ..Default::default() }]);
    if let Some(spec) = ext.spec.as_mut() {
        spec.selector = None;
    }
    services.create(&PostParams::default(), &ext).await?;
    let endpoints = k8s_openapi::api::core::v1::Endpoints {
        metadata: ObjectMeta { name: Some("external-db".into()), ..Default::default() },
        subsets: Some(vec![k8s_openapi::api::core::v1::EndpointSubset {
            addresses: Some(
                ["192.0.2.10", "192.0.2.11"]
                    .iter()
                    .map(|ip| k8s_openapi::api::core::v1::EndpointAddress { ip: ip.to_string(), ..Default::default() })
                    .collect(),
            ),
            ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                name: Some("pg".into()),
                port: 5432,
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &endpoints)
        .await?;
    Ok(vec![("web", pods as usize), ("db", 3), ("dual", 4), ("external-db", 2)])
}

async fn wait_converged(client: &kube::Client, expected: Vec<(&'static str, usize)>) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let mut done = true;
        for (svc, n) in &expected {
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
            let count: usize = api
                .list(&lp)
                .await
                .map(|l| l.items.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum())
                .unwrap_or(0);
            done &= count == *n;
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("(the slices have not converged after 30 s; showing them as they are)");
}
