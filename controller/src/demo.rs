//! `epslice demo`: a local control plane with fake nodes and a sample workload.

use std::time::Duration;

use anyhow::Context;
use envtest::kwok;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, PostParams};

/// Flags of `epslice demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pods in the sample `web` Service.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pods: u16,
    /// Start, print, and stop at once instead of waiting for Ctrl-C (for scripted checks).
    #[arg(long)]
    no_wait: bool,
}

const NS: &str = "demo";

pub async fn run(args: Args) -> anyhow::Result<()> {
    eprintln!("Starting etcd, kube-apiserver and kwok (binaries are built from Go modules on first use)...");
    let cp = envtest::ControlPlane::start(envtest::Options::default()).await.context("starting the control plane")?;
    let client = cp.client().await?;
    create_workload(&client, args.pods).await?;

    let kubectl = cp.binary(envtest::Binary::Kubectl);
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let mut wait = std::time::Instant::now();
    loop {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let ready = pods.list(&Default::default()).await?.items.iter().filter(|p| kwok::is_ready(Some(p))).count();
        if ready >= args.pods as usize || wait.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = cp.kubectl().args(["get", "pods", "-n", NS, "-o", "wide"]).output()?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("Control plane: {}", cp.server());
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  alias kubectl={}", kubectl.display());
    println!("  kubectl get nodes -L topology.kubernetes.io/zone");
    println!("  kubectl -n {NS} get pods,services -o wide");
    if args.no_wait {
        return Ok(());
    }
    println!("Press Ctrl-C to stop and clean up.");
    wait = std::time::Instant::now();
    tokio::signal::ctrl_c().await?;
    eprintln!("Stopping (ran for {:?}).", wait.elapsed());
    drop(cp);
    Ok(())
}

async fn create_workload(client: &kube::Client, pods: u16) -> anyhow::Result<()> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(NS.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc = Service {
        metadata: ObjectMeta { name: Some("web".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services.create(&PostParams::default(), &svc).await?;
    let nodes = kwok::default_nodes();
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for i in 0..pods as usize {
        let node = &nodes[i % nodes.len()].name;
        api.create(&PostParams::default(), &kwok::pod(&format!("web-{i}"), node, &[("app", "web")], &[("http", 8080)]))
            .await?;
    }
    Ok(())
}
