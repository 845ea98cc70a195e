//! `epslice verify` (also `kubectl epslice verify`): recomputes, with the same pure core the
//! controllers use, what the EndpointSlices and Endpoints of each Service should be, and compares
//! that with what the cluster holds. Works on any cluster, including one where
//! kube-controller-manager manages the objects (`--managed-by`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::endpoints as ep_core;
use crate::endpointslice as es_core;

/// Flags of `epslice verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Path to a kubeconfig (else $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only this namespace (default: all).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only this Service (needs --namespace).
    pub service: Option<String>,
    /// The managed-by value of the EndpointSlices to check.
    #[arg(long, default_value = "endpointslice-controller.k8s.io")]
    pub managed_by: String,
    /// Maximum endpoints per slice the controller runs with.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
    /// Also check v1 Endpoints.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub endpoints: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output format of `epslice verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// JSON.
    Json,
}

/// The verdict for one Service and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Matches.
    Ok,
    /// Exists but differs.
    Drift,
    /// Something should exist and does not.
    Missing,
    /// Something exists that should not.
    Extra,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// `EndpointSlice` or `Endpoints`.
    pub kind: &'static str,
    /// Verdict.
    pub status: Status,
    /// Why.
    pub detail: String,
}

/// What was read from the cluster.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Services.
    pub services: Vec<Service>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// EndpointSlices labelled with a service name.
    pub slices: Vec<EndpointSlice>,
    /// Endpoints.
    pub endpoints: Vec<Endpoints>,
}

fn names(v: &[EndpointSlice]) -> String {
    v.iter().map(|s| s.name_any()).collect::<Vec<_>>().join(",")
}

/// Compares the desired state with the cluster state (pure).
pub fn compare(state: &ClusterState, args: &VerifyArgs) -> Vec<Row> {
    let cfg = es_core::Config {
        max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
        managed_by: args.managed_by.clone(),
        ..Default::default()
    };
    let ratios = es_core::topology::CpuRatios::from_nodes(state.nodes.values());
    let mut rows = Vec::new();
    for svc in &state.services {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        if args.service.as_ref().is_some_and(|s| *s != name) {
            continue;
        }
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.selector.is_none() || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let pods: Vec<&Pod> = state.pods.iter().filter(|p| p.namespace().as_deref() == Some(ns.as_str())).collect();
        let slices: Vec<&EndpointSlice> = state
            .slices
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && s.labels().get("kubernetes.io/service-name") == Some(&name)
            })
            .collect();
        let mut input = es_core::Input::new(svc, &pods, &state.nodes, &slices);
        input.topology = Some(&ratios);
        let plan = es_core::plan(&input, &cfg);
        let ours = slices
            .iter()
            .filter(|s| s.labels().get("endpointslice.kubernetes.io/managed-by") == Some(&args.managed_by))
            .count();
        let (status, detail) = if plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty() {
            (Status::Ok, format!("{ours} slice(s)"))
        } else if ours == 0 {
            (
                Status::Missing,
                format!("no EndpointSlice managed by {}; {} would be created", args.managed_by, plan.create.len()),
            )
        } else {
            let mut d = String::new();
            if !plan.update.is_empty() {
                let _ = write!(d, "would update {}", names(&plan.update));
            }
            if !plan.create.is_empty() {
                let _ = write!(d, "{}would create {}", if d.is_empty() { "" } else { "; " }, plan.create.len());
            }
            if !plan.delete.is_empty() {
                let _ = write!(d, "{}would delete {}", if d.is_empty() { "" } else { "; " }, names(&plan.delete));
            }
            // More slices than needed (duplicates, a second placeholder …) is EXTRA; anything
            // else that would be written is DRIFT.
            if plan.delete.len() > plan.create.len() { (Status::Extra, d) } else { (Status::Drift, d) }
        };
        rows.push(Row { namespace: ns.clone(), service: name.clone(), kind: "EndpointSlice", status, detail });

        if args.endpoints {
            let existing =
                state.endpoints.iter().find(|e| e.namespace().as_deref() == Some(ns.as_str()) && e.name_any() == name);
            let plan = ep_core::plan(&ep_core::Input::new(svc, &pods, existing), &ep_core::Config::default());
            let (status, detail) = match &plan.action {
                ep_core::Action::Nothing => {
                    let (r, nr) = existing.map(count_addresses).unwrap_or((0, 0));
                    (Status::Ok, format!("{r} ready, {nr} not ready"))
                }
                ep_core::Action::Create(_) => (Status::Missing, "no Endpoints object".to_string()),
                ep_core::Action::Update(_) => {
                    (Status::Drift, "subsets, labels or the capacity annotation differ".to_string())
                }
                ep_core::Action::Delete { .. } => (Status::Extra, "Endpoints without a Service".to_string()),
            };
            rows.push(Row { namespace: ns, service: name, kind: "Endpoints", status, detail });
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.service, a.kind).cmp(&(&b.namespace, &b.service, b.kind)));
    rows
}

fn count_addresses(e: &Endpoints) -> (usize, usize) {
    let s = e.subsets.as_deref().unwrap_or_default();
    (
        s.iter().map(|x| x.addresses.as_ref().map_or(0, Vec::len)).sum(),
        s.iter().map(|x| x.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum(),
    )
}

/// Reads the cluster state for the arguments.
pub async fn read(client: &kube::Client, args: &VerifyArgs) -> anyhow::Result<ClusterState> {
    fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = args.namespace.as_deref();
    let lp = ListParams::default();
    let ctx = |what: &'static str| move |e: kube::Error| anyhow::anyhow!("listing {what}: {e}");
    let services = api::<Service>(client, ns).list(&lp).await.map_err(ctx("services"))?.items;
    let pods = api::<Pod>(client, ns).list(&lp).await.map_err(ctx("pods"))?.items;
    let nodes = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map_err(ctx("nodes"))?
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let slices = api::<EndpointSlice>(client, ns)
        .list(&ListParams::default().labels("kubernetes.io/service-name"))
        .await
        .map_err(ctx("endpointslices"))?
        .items;
    let endpoints = if args.endpoints {
        api::<Endpoints>(client, ns).list(&lp).await.map_err(ctx("endpoints"))?.items
    } else {
        Vec::new()
    };
    Ok(ClusterState { services, pods, nodes, slices, endpoints })
}

/// Renders the rows.
pub fn render(rows: &[Row], output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
        Output::Table => {
            let mut out = String::new();
            let w = |f: fn(&Row) -> String, h: &str| rows.iter().map(|r| f(r).len()).max().unwrap_or(0).max(h.len());
            let (wn, ws, wk, wt) = (
                w(|r| r.namespace.clone(), "NAMESPACE"),
                w(|r| r.service.clone(), "SERVICE"),
                w(|r| r.kind.to_string(), "KIND"),
                w(|r| format!("{:?}", r.status).to_uppercase(), "STATUS"),
            );
            let _ = writeln!(out, "{:wn$}  {:ws$}  {:wk$}  {:wt$}  DETAIL", "NAMESPACE", "SERVICE", "KIND", "STATUS");
            for r in rows {
                let st = format!("{:?}", r.status).to_uppercase();
                let _ =
                    writeln!(out, "{:wn$}  {:ws$}  {:wk$}  {:wt$}  {}", r.namespace, r.service, r.kind, st, r.detail);
            }
            out
        }
    }
}

/// `epslice verify`: prints the report; returns whether everything is OK.
pub async fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    if args.service.is_some() && args.namespace.is_none() {
        anyhow::bail!("a Service name needs --namespace");
    }
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let state = read(&client, &args).await?;
    let rows = compare(&state, &args);
    if let Some(svc) = &args.service
        && rows.is_empty()
    {
        anyhow::bail!(
            "Service {}/{svc} not found, or it has no selector",
            args.namespace.as_deref().unwrap_or_default()
        );
    }
    print!("{}", render(&rows, args.output));
    Ok(rows.iter().all(|r| r.status == Status::Ok))
}
