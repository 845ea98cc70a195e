//! `epslice verify` (also `kubectl epslice verify`): recomputes, with the same pure cores the
//! controllers use, what the EndpointSlices and Endpoints of each Service should be (and, for a
//! selector-less Service, the slices mirrored from its custom Endpoints), and compares that with
//! what the cluster holds. Works on any cluster, including one where
//! kube-controller-manager manages the objects (`--managed-by`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::endpoints as ep_core;
use crate::endpointslice as es_core;
use crate::mirroring as mirror_core;
use crate::pod::{CachedPod, Interner, WatchedPod};

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
    /// Also check the slices mirrored from the custom Endpoints of selector-less Services.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub mirroring: bool,
    /// The managed-by value of mirrored EndpointSlices.
    #[arg(long, default_value = mirror_core::DEFAULT_MANAGED_BY)]
    pub mirroring_managed_by: String,
    /// `--mirroring-max-endpoints-per-subset` the mirroring controller runs with.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub mirroring_max_endpoints_per_subset: u16,
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
    /// Worth a look, but not a difference (exit status 0): another manager's slices.
    Warning,
}

impl Status {
    /// Whether the row is a difference (exit status 1).
    pub fn is_difference(self) -> bool {
        matches!(self, Status::Drift | Status::Missing | Status::Extra)
    }
}

/// Kind of the rows about the slices the mirroring controller writes.
pub const KIND_MIRRORED: &str = "EndpointSlice (mirrored)";
/// Kind of the rows about slices of a Service written by neither controller.
pub const KIND_OTHER_MANAGER: &str = "EndpointSlice (other manager)";
/// Kind of the rows about a Service with nothing to check.
pub const KIND_SERVICE: &str = "Service";

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// `EndpointSlice`, `Endpoints`, [`KIND_MIRRORED`], [`KIND_OTHER_MANAGER`] or
    /// [`KIND_SERVICE`].
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
    /// Pods (their compact projection, as the controllers cache them).
    pub pods: Vec<CachedPod>,
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
        if spec.selector.is_none() {
            // The mirroring controller does not look at the type (upstream `syncEndpoints`): the
            // custom Endpoints of a selector-less ExternalName Service are mirrored too.
            rows.push(if args.mirroring {
                compare_mirrored(state, svc, args)
            } else {
                nothing_to_check(&ns, &name, "no selector, and --mirroring=false")
            });
            continue;
        }
        if args.mirroring {
            rows.extend(stray_mirrored(state, &ns, &name, args));
        }
        if spec.type_.as_deref() == Some("ExternalName") {
            // Issue #105986: neither the EndpointSlice nor the Endpoints controller touches it.
            rows.push(nothing_to_check(&ns, &name, "ExternalName: no EndpointSlices or Endpoints are computed for it"));
            continue;
        }
        let pods: Vec<&CachedPod> =
            state.pods.iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
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
        let mut plan = es_core::plan(&input, &cfg);
        // An update that would write what the slice already holds is not drift (see
        // `rewrites_nothing`).
        plan.update.retain(|u| !slices.iter().any(|s| rewrites_nothing(s, u)));
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
        rows.extend(other_managers(&slices, &ns, &name, args));

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
    rows.extend(orphans(state, args));
    rows.sort_by(|a, b| (&a.namespace, &a.service, a.kind).cmp(&(&b.namespace, &b.service, b.kind)));
    rows
}

/// The OK row of a Service for which nothing is computed.
fn nothing_to_check(ns: &str, name: &str, why: &str) -> Row {
    Row {
        namespace: ns.to_string(),
        service: name.to_string(),
        kind: KIND_SERVICE,
        status: Status::Ok,
        detail: format!("{why}: nothing to check"),
    }
}

/// Whether the slice is labelled for `ns/name`, managed by `managed_by` (`None`: any manager),
/// and not pending deletion.
fn live_slice_of(s: &EndpointSlice, ns: &str, name: &str, managed_by: Option<&str>) -> bool {
    let label = |k: &str| s.labels().get(k).map(String::as_str);
    s.metadata.deletion_timestamp.is_none()
        && s.namespace().as_deref() == Some(ns)
        && label(es_core::labels::LABEL_SERVICE_NAME) == Some(name)
        && managed_by.is_none_or(|m| label(es_core::labels::LABEL_MANAGED_BY) == Some(m))
}

/// The EXTRA row for the mirrored slices of a Service with a selector: the mirroring
/// controller deletes them (upstream `syncEndpoints`), and until then kube-proxy routes to them
/// as to any slice labelled with the Service's name.
fn stray_mirrored(state: &ClusterState, ns: &str, name: &str, args: &VerifyArgs) -> Option<Row> {
    let stray: Vec<EndpointSlice> =
        state.slices.iter().filter(|s| live_slice_of(s, ns, name, Some(&args.mirroring_managed_by))).cloned().collect();
    (!stray.is_empty()).then(|| Row {
        namespace: ns.to_string(),
        service: name.to_string(),
        kind: KIND_MIRRORED,
        status: Status::Extra,
        detail: format!(
            "would delete {}: the Service has a selector, mirrored slices are left over (kube-proxy still routes to them)",
            names(&stray)
        ),
    })
}

/// The WARNING row for the slices of a Service with a selector managed by neither the
/// EndpointSlice controller checked nor the mirroring controller: a second writer, whose
/// endpoints kube-proxy routes to as well. Not a difference: custom slices are allowed.
fn other_managers(slices: &[&EndpointSlice], ns: &str, name: &str, args: &VerifyArgs) -> Option<Row> {
    let others: Vec<String> = slices
        .iter()
        .filter(|s| live_slice_of(s, ns, name, None))
        .filter_map(|s| match s.labels().get(es_core::labels::LABEL_MANAGED_BY) {
            Some(m) if *m == args.managed_by || *m == args.mirroring_managed_by => None,
            Some(m) => Some(format!("{} (managed by {m})", s.name_any())),
            None => Some(format!("{} (no managed-by label)", s.name_any())),
        })
        .collect();
    (!others.is_empty()).then(|| Row {
        namespace: ns.to_string(),
        service: name.to_string(),
        kind: KIND_OTHER_MANAGER,
        status: Status::Warning,
        detail: format!("another writer: {} (kube-proxy routes to these too)", others.join(", ")),
    })
}

/// The EXTRA rows for objects whose Service does not exist: Endpoints (the Endpoints
/// controller deletes them, except leader-election records), mirrored slices (the mirroring
/// controller deletes them; the garbage collector does not, their owner is the Endpoints) and
/// slices managed by the EndpointSlice controller checked (the garbage collector deletes those
/// the Service owned).
fn orphans(state: &ClusterState, args: &VerifyArgs) -> Vec<Row> {
    let has_service = |ns: &str, name: &str| {
        state.services.iter().any(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
    };
    let wanted = |name: &str| args.service.as_deref().is_none_or(|s| s == name);
    let mut rows = Vec::new();
    if args.endpoints {
        for e in &state.endpoints {
            let (ns, name) = (e.namespace().unwrap_or_default(), e.name_any());
            if !wanted(&name)
                || has_service(&ns, &name)
                || e.metadata.deletion_timestamp.is_some()
                || e.annotations().contains_key(mirror_core::ANNOTATION_LEADER_ELECTION)
            {
                continue;
            }
            let (r, nr) = count_addresses(e);
            rows.push(Row {
                namespace: ns,
                service: name,
                kind: "Endpoints",
                status: Status::Extra,
                detail: format!("no Service: the Endpoints controller would delete it ({r} ready, {nr} not ready)"),
            });
        }
    }
    // By (namespace, service name): (ours, mirrored).
    let mut slices: BTreeMap<(String, String), (Vec<EndpointSlice>, Vec<EndpointSlice>)> = BTreeMap::new();
    for s in &state.slices {
        let (Some(ns), Some(name)) = (s.namespace(), s.labels().get(es_core::labels::LABEL_SERVICE_NAME)) else {
            continue;
        };
        if !wanted(name) || has_service(&ns, name) || s.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let key = (ns.clone(), name.clone());
        match s.labels().get(es_core::labels::LABEL_MANAGED_BY) {
            Some(m) if *m == args.managed_by => slices.entry(key).or_default().0.push(s.clone()),
            Some(m) if *m == args.mirroring_managed_by && args.mirroring => {
                slices.entry(key).or_default().1.push(s.clone());
            }
            _ => {}
        }
    }
    for ((ns, name), (ours, mirrored)) in slices {
        if !ours.is_empty() {
            rows.push(Row {
                namespace: ns.clone(),
                service: name.clone(),
                kind: "EndpointSlice",
                status: Status::Extra,
                detail: format!(
                    "no Service: orphaned {} (the garbage collector deletes those the Service owned)",
                    names(&ours)
                ),
            });
        }
        if !mirrored.is_empty() {
            rows.push(Row {
                namespace: ns,
                service: name,
                kind: KIND_MIRRORED,
                status: Status::Extra,
                detail: format!(
                    "no Service: would delete {} (the mirroring controller deletes them)",
                    names(&mirrored)
                ),
            });
        }
    }
    rows
}

/// Whether `update` would write what `existing` already holds, apart from the last-change
/// trigger-time annotation, which `verify` cannot know (it plans without the controller's
/// trigger-time tracker, so every planned update drops the annotation).
///
/// The planner, like upstream, lists an unchanged slice for update whenever its topology hints
/// fail the allocation check, and leaves its content as it was when the hints cannot be
/// improved (a ready endpoint without zone under `publishNotReadyAddresses`, or a zone that
/// stays above its maximum: see `endpointslice::topology`'s
/// `add_hints_rewrites_identical_slice_when_zone_stays_above_maximum`). Both controllers then
/// send a PUT the apiserver treats as a no-op; a converged cluster must still verify as OK.
fn rewrites_nothing(existing: &EndpointSlice, update: &EndpointSlice) -> bool {
    let annotations = |s: &EndpointSlice| {
        let mut a = s.metadata.annotations.clone().unwrap_or_default();
        a.remove(es_core::labels::ANNOTATION_LAST_CHANGE_TRIGGER_TIME);
        a
    };
    existing.metadata.name.is_some()
        && existing.metadata.name == update.metadata.name
        && existing.metadata.labels == update.metadata.labels
        && annotations(existing) == annotations(update)
        && existing.metadata.owner_references == update.metadata.owner_references
        && existing.address_type == update.address_type
        && existing.endpoints == update.endpoints
        && existing.ports == update.ports
}

/// The row for the mirrored slices of a selector-less Service (OK, nothing to check, when it has
/// no Endpoints and no mirrored slices, e.g. a Service whose Endpoints nobody wrote).
fn compare_mirrored(state: &ClusterState, svc: &Service, args: &VerifyArgs) -> Row {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let cfg = mirror_core::Config {
        max_endpoints_per_subset: usize::from(args.mirroring_max_endpoints_per_subset),
        managed_by: args.mirroring_managed_by.clone(),
    };
    let labelled: Vec<&EndpointSlice> = state
        .slices
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str()) && s.labels().get("kubernetes.io/service-name") == Some(&name)
        })
        .collect();
    let ours = labelled
        .iter()
        .filter(|s| s.labels().get("endpointslice.kubernetes.io/managed-by") == Some(&args.mirroring_managed_by))
        .count();
    let endpoints =
        state.endpoints.iter().find(|e| e.namespace().as_deref() == Some(ns.as_str()) && e.name_any() == name);
    let plan = match endpoints {
        Some(e) => mirror_core::plan(
            &mirror_core::Input { endpoints: e, service: Some(svc), existing_slices: &labelled },
            &cfg,
        ),
        None if ours == 0 => {
            return Row {
                kind: KIND_MIRRORED,
                ..nothing_to_check(&ns, &name, "no selector and no Endpoints to mirror")
            };
        }
        None => mirror_core::plan_delete_all(&ns, &name, &labelled, &cfg),
    };
    let (status, detail) = if plan.is_noop() {
        match (&plan.not_mirrored, endpoints) {
            (Some(why), _) => (Status::Ok, format!("not mirrored ({why:?})")),
            (None, Some(e)) => {
                let (r, nr) = count_addresses(e);
                (Status::Ok, format!("{ours} slice(s) mirroring {r} ready, {nr} not ready"))
            }
            (None, None) => (Status::Ok, format!("{ours} slice(s)")),
        }
    } else if ours == 0 {
        (
            Status::Missing,
            format!(
                "no EndpointSlice managed by {}; {} would be created",
                args.mirroring_managed_by,
                plan.create.len()
            ),
        )
    } else {
        let mut parts = Vec::new();
        if !plan.update.is_empty() {
            parts.push(format!("would update {}", names(&plan.update)));
        }
        if !plan.create.is_empty() {
            parts.push(format!("would create {}", plan.create.len()));
        }
        if !plan.delete.is_empty() {
            parts.push(format!("would delete {}", names(&plan.delete)));
        }
        let status = if plan.delete.len() > plan.create.len() { Status::Extra } else { Status::Drift };
        (status, parts.join("; "))
    };
    Row { namespace: ns, service: name, kind: KIND_MIRRORED, status, detail }
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
    let mut strings = Interner::default();
    let pods = api::<WatchedPod>(client, ns)
        .list(&lp)
        .await
        .map_err(ctx("pods"))?
        .items
        .into_iter()
        .map(|p| p.into_cached(&mut strings))
        .collect();
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
    let endpoints = if args.endpoints || args.mirroring {
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

/// `epslice verify`: prints the report; returns whether there is no difference (`WARNING`
/// rows are not differences).
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
    // Every Service checked has a row (`Service` when there is nothing to check); a named
    // Service without one does not exist and left nothing behind.
    if let Some(svc) = &args.service
        && rows.is_empty()
    {
        anyhow::bail!("Service {}/{svc} not found", args.namespace.as_deref().unwrap_or_default());
    }
    print!("{}", render(&rows, args.output));
    Ok(rows.iter().all(|r| !r.status.is_difference()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, Pod, PodCondition, PodIP, PodSpec, PodStatus};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn node(name: &str, zone: &str, cpu: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("topology.kubernetes.io/zone".to_string(), zone.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                allocatable: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(i: usize, node: &str) -> CachedPod {
        let ip = format!("10.0.0.{}", i + 1);
        CachedPod::from(Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i}")),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{i}")),
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some(node.into()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.clone()),
                pod_ips: Some(vec![PodIP { ip }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(publish_not_ready: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("svc".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                annotations: Some([("service.kubernetes.io/topology-mode".to_string(), "Auto".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "x".to_string())].into()),
                cluster_ip: Some("10.96.0.10".into()),
                ip_families: Some(vec!["IPv4".into()]),
                publish_not_ready_addresses: Some(publish_not_ready),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// `verify` of EndpointSlices only, with the default managed-by.
    fn slices_only_args() -> VerifyArgs {
        VerifyArgs {
            kubeconfig: None,
            namespace: None,
            service: None,
            managed_by: es_core::DEFAULT_MANAGED_BY.into(),
            max_endpoints_per_slice: 100,
            endpoints: false,
            mirroring: false,
            mirroring_managed_by: mirror_core::DEFAULT_MANAGED_BY.into(),
            mirroring_max_endpoints_per_subset: 1000,
            output: Output::Table,
        }
    }

    /// The cluster after the core's own first plan was applied, and `verify` on it.
    fn verify_after_first_write(svc: Service, pods: Vec<CachedPod>, nodes: Vec<Node>) -> Vec<Row> {
        let nodes: BTreeMap<String, Node> = nodes.into_iter().map(|n| (n.name_any(), n)).collect();
        let ratios = es_core::topology::CpuRatios::from_nodes(nodes.values());
        let pod_refs: Vec<&CachedPod> = pods.iter().collect();
        let mut input = es_core::Input::new(&svc, &pod_refs, &nodes, &[]);
        input.topology = Some(&ratios);
        let plan = es_core::plan(&input, &es_core::Config::default());
        assert_eq!(plan.create.len(), 1);
        let mut slice = plan.create[0].clone();
        slice.metadata.namespace = Some("ns".into());
        slice.metadata.resource_version = Some("1".into());
        let state = ClusterState { services: vec![svc.clone()], pods, nodes, slices: vec![slice], endpoints: vec![] };
        let args = slices_only_args();
        compare(&state, &args)
    }

    /// Found by the differential test (seed 2): with `publishNotReadyAddresses`, a pod on a
    /// missing Node is a ready endpoint without zone; topology hints are disabled and the
    /// planner lists the unchanged slice for an identical update on every sync, as upstream
    /// does. That is not drift.
    #[test]
    fn identical_rewrite_for_a_ready_endpoint_without_zone_is_ok() {
        // The allocation must succeed for the hints step to list the slice (8 ready
        // endpoints fit the zones' minimums 2/3/3 under CPU 7/11/13).
        let nodes = vec![node("n-a", "zone-a", "7"), node("n-b", "zone-b", "11"), node("n-c", "zone-c", "13")];
        let on = ["n-a", "n-a", "n-b", "n-b", "n-b", "n-c", "n-c", "gone"];
        let pods = on.iter().enumerate().map(|(i, n)| pod(i, n)).collect();
        let rows = verify_after_first_write(service(true), pods, nodes);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, Status::Ok, "{rows:?}");
    }

    /// Found by the differential test (seed 22): 11 ready endpoints, 3/3/5 per zone, CPU
    /// 7/11/13: zone-c keeps 5 hints though its maximum is 4 (its surplus is below the give
    /// threshold), so every sync lists the slice for an identical update. Not drift.
    #[test]
    fn identical_rewrite_for_a_zone_above_its_maximum_is_ok() {
        let nodes = vec![node("n-a", "zone-a", "7"), node("n-b", "zone-b", "11"), node("n-c", "zone-c", "13")];
        let zones = ["n-a", "n-a", "n-a", "n-b", "n-b", "n-b", "n-c", "n-c", "n-c", "n-c", "n-c"];
        let pods = zones.iter().enumerate().map(|(i, n)| pod(i, n)).collect();
        let rows = verify_after_first_write(service(false), pods, nodes);
        assert_eq!(rows[0].status, Status::Ok, "{rows:?}");
    }

    #[test]
    fn a_real_change_is_still_drift() {
        let nodes = vec![node("n-a", "zone-a", "8"), node("n-b", "zone-b", "8"), node("n-c", "zone-c", "8")];
        let pods = vec![pod(0, "n-a"), pod(1, "n-b"), pod(2, "n-c")];
        let svc = service(false);
        let mut rows = verify_after_first_write(svc.clone(), pods.clone(), nodes.clone());
        assert_eq!(rows[0].status, Status::Ok, "{rows:?}");
        // Same state, but one more ready pod than the slice holds.
        let mut more = pods;
        more.push(pod(3, "n-a"));
        let nodes_map: BTreeMap<String, Node> = nodes.into_iter().map(|n| (n.name_any(), n)).collect();
        let ratios = es_core::topology::CpuRatios::from_nodes(nodes_map.values());
        let refs: Vec<&CachedPod> = more.iter().take(3).collect();
        let mut input = es_core::Input::new(&svc, &refs, &nodes_map, &[]);
        input.topology = Some(&ratios);
        let mut slice = es_core::plan(&input, &es_core::Config::default()).create.remove(0);
        slice.metadata.namespace = Some("ns".into());
        let state =
            ClusterState { services: vec![svc], pods: more, nodes: nodes_map, slices: vec![slice], endpoints: vec![] };
        let args = slices_only_args();
        rows = compare(&state, &args);
        assert_eq!(rows[0].status, Status::Drift, "{rows:?}");
    }

    fn selectorless(name: &str, type_: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: type_.map(Into::into),
                external_name: (type_ == Some("ExternalName")).then(|| "example.com".to_string()),
                ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..Default::default() }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn custom_endpoints(name: &str) -> Endpoints {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "http", "port": 8080}]}],
        }))
        .unwrap()
    }

    fn slice(name: &str, service: &str, managed_by: Option<&str>) -> EndpointSlice {
        let mut labels = BTreeMap::from([(es_core::labels::LABEL_SERVICE_NAME.to_string(), service.to_string())]);
        if let Some(m) = managed_by {
            labels.insert(es_core::labels::LABEL_MANAGED_BY.to_string(), m.to_string());
        }
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(labels),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![]),
            ports: None,
        }
    }

    /// Every check on (EndpointSlices, Endpoints, mirrored slices).
    fn all_args() -> VerifyArgs {
        VerifyArgs { endpoints: true, mirroring: true, ..slices_only_args() }
    }

    fn row<'a>(rows: &'a [Row], service: &str, kind: &str) -> &'a Row {
        rows.iter()
            .find(|r| r.service == service && r.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} row for {service}: {rows:#?}"))
    }

    /// Finding 1: objects whose Service is gone were never looked at ("all OK").
    #[test]
    fn objects_of_a_deleted_service_are_extra() {
        let mut leader = custom_endpoints("kube-scheduler");
        leader.metadata.annotations =
            Some([(mirror_core::ANNOTATION_LEADER_ELECTION.to_string(), "{}".to_string())].into());
        let state = ClusterState {
            endpoints: vec![custom_endpoints("gone"), leader],
            slices: vec![
                slice("gone-m", "gone", Some(mirror_core::DEFAULT_MANAGED_BY)),
                slice("old-a", "old", Some(es_core::DEFAULT_MANAGED_BY)),
                slice("old-b", "old", Some(es_core::DEFAULT_MANAGED_BY)),
                slice("custom", "other", Some("someone.example.com")),
            ],
            ..Default::default()
        };
        let rows = compare(&state, &all_args());
        let r = row(&rows, "gone", "Endpoints");
        assert_eq!(r.status, Status::Extra, "{rows:#?}");
        assert!(r.detail.contains("no Service"), "{r:?}");
        let r = row(&rows, "gone", KIND_MIRRORED);
        assert_eq!(r.status, Status::Extra, "{rows:#?}");
        assert!(r.detail.contains("gone-m"), "{r:?}");
        let r = row(&rows, "old", "EndpointSlice");
        assert_eq!(r.status, Status::Extra, "{rows:#?}");
        assert!(r.detail.contains("old-a,old-b"), "{r:?}");
        // A leader-election record is not an orphan; another manager's slice is not ours to judge.
        assert!(rows.iter().all(|r| r.service != "kube-scheduler" && r.service != "other"), "{rows:#?}");
        assert_eq!(rows.len(), 3, "{rows:#?}");

        // Each check stays behind its flag, and a named Service limits the orphans too.
        let rows = compare(&state, &VerifyArgs { endpoints: false, mirroring: false, ..all_args() });
        assert_eq!(rows.iter().map(|r| r.kind).collect::<Vec<_>>(), ["EndpointSlice"], "{rows:#?}");
        let rows = compare(&state, &VerifyArgs { service: Some("gone".into()), ..all_args() });
        assert_eq!(rows.len(), 2, "{rows:#?}");
    }

    /// Finding 2: mirrored slices left over after a selector was added are EXTRA; a slice of
    /// another manager is a warning.
    #[test]
    fn stray_mirrored_slices_are_extra_and_other_managers_are_a_warning() {
        let nodes = vec![node("n-a", "zone-a", "8")];
        let pods = vec![pod(0, "n-a")];
        let nodes_map: BTreeMap<String, Node> = nodes.into_iter().map(|n| (n.name_any(), n)).collect();
        let svc = service(false);
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let mut ours = es_core::plan(&es_core::Input::new(&svc, &refs, &nodes_map, &[]), &es_core::Config::default())
            .create
            .remove(0);
        ours.metadata.namespace = Some("ns".into());
        let mut state = ClusterState {
            services: vec![svc],
            pods,
            nodes: nodes_map,
            slices: vec![ours, slice("svc-mirrored", "svc", Some(mirror_core::DEFAULT_MANAGED_BY))],
            endpoints: vec![],
        };
        let rows = compare(&state, &VerifyArgs { mirroring: true, ..slices_only_args() });
        assert_eq!(row(&rows, "svc", "EndpointSlice").status, Status::Ok, "{rows:#?}");
        let r = row(&rows, "svc", KIND_MIRRORED);
        assert_eq!(r.status, Status::Extra, "{rows:#?}");
        assert!(r.detail.contains("svc-mirrored") && r.detail.contains("selector"), "{r:?}");
        // Not without --mirroring.
        let rows = compare(&state, &slices_only_args());
        assert!(rows.iter().all(|r| r.kind != KIND_MIRRORED), "{rows:#?}");

        state.slices.pop();
        state.slices.push(slice("svc-by-hand", "svc", Some("someone.example.com")));
        state.slices.push(slice("svc-unlabelled", "svc", None));
        let rows = compare(&state, &slices_only_args());
        assert_eq!(row(&rows, "svc", "EndpointSlice").status, Status::Ok, "{rows:#?}");
        let r = row(&rows, "svc", KIND_OTHER_MANAGER);
        assert_eq!(r.status, Status::Warning, "{rows:#?}");
        assert!(r.detail.contains("svc-by-hand") && r.detail.contains("someone.example.com"), "{r:?}");
        assert!(r.detail.contains("svc-unlabelled"), "{r:?}");
        assert!(rows.iter().all(|r| !r.status.is_difference()), "a warning is not a difference: {rows:#?}");
    }

    /// Finding 3: the mirroring controller mirrors the custom Endpoints of a selector-less
    /// ExternalName Service (upstream `syncEndpoints` never looks at the type).
    #[test]
    fn mirrored_slices_of_a_selectorless_external_name_service_are_checked() {
        let state = ClusterState {
            services: vec![selectorless("ext", Some("ExternalName"))],
            endpoints: vec![custom_endpoints("ext")],
            ..Default::default()
        };
        let rows = compare(&state, &all_args());
        let r = row(&rows, "ext", KIND_MIRRORED);
        assert_eq!(r.status, Status::Missing, "{rows:#?}");
    }

    /// Finding 4: an ExternalName Service, or a selector-less one with no Endpoints, has
    /// nothing to check: an OK row that says why, not an empty report.
    #[test]
    fn services_with_nothing_to_check_get_an_ok_row() {
        let state = ClusterState {
            services: vec![selectorless("ext", Some("ExternalName")), selectorless("bare", None)],
            ..Default::default()
        };
        for service in ["ext", "bare"] {
            let rows = compare(&state, &VerifyArgs { service: Some(service.into()), ..all_args() });
            assert_eq!(rows.len(), 1, "{rows:#?}");
            assert_eq!(rows[0].status, Status::Ok, "{rows:#?}");
            assert!(rows[0].detail.contains("nothing to check"), "{rows:#?}");
        }
        let mut external_with_selector = service(false);
        external_with_selector.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let state = ClusterState { services: vec![external_with_selector], ..Default::default() };
        let rows = compare(&state, &all_args());
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!((rows[0].kind, rows[0].status), (KIND_SERVICE, Status::Ok), "{rows:#?}");
        assert!(rows[0].detail.contains("ExternalName"), "{rows:#?}");
        // A Service that does not exist still has no rows (`run` reports it as not found).
        let rows = compare(&state, &VerifyArgs { service: Some("nope".into()), ..all_args() });
        assert!(rows.is_empty(), "{rows:#?}");
    }
}
