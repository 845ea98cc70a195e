//! Differential test: kube-controller-manager and epslice on the same random workload.
//!
//! For each seed, a workload from `workload::generate` (Services of every flavour, Pods in
//! every state, custom Endpoints with their edge cases) is created in a fresh namespace while
//! kube-controller-manager runs
//! `endpointslice-controller,endpoints-controller,endpointslice-mirroring-controller` and
//! epslice's EndpointSlice and mirroring controllers run in-process, each with its own
//! managed-by value, so both write EndpointSlices and mirrored slices side by side. (epslice's
//! Endpoints controller cannot run alongside kcm's: both would write the very same Endpoints
//! objects, so it is checked by its core's desired state against kcm's Endpoints, step 2.)
//! Once nothing changes for 3 s:
//!
//! 1. per Service, address type and port set, the multisets of endpoints of kcm's slices and
//!    epslice's slices must be equal (see `differential` for what is compared and the one
//!    normalisation, for topology-mode Auto hints), and so must the slices' metadata: labels
//!    apart from managed-by, annotations (the trigger time's presence), owner references;
//! 2. `epslice::verify::compare` must be OK for every row: epslice's Endpoints core agrees with
//!    the Endpoints kcm wrote, and its EndpointSlice core would write nothing to kcm's slices
//!    nor to its own;
//! 3. per Endpoints, address type and port set, kcm's mirrored slices and epslice's live
//!    mirrored slices must have the same multisets of endpoints and the same metadata (for the
//!    documented `appProtocol` regrouping: the same multiset of (address type, endpoint, port)
//!    pairs); nobody mirrors an Endpoints without a selector-less Service;
//! 4. epslice's mirroring core would write nothing to the slices kcm mirrored, nor to its own;
//! 5. every slice of the namespace is managed by one of the four controllers.
//!
//! Any difference fails with a reproduction: seed, Service, the pods it selects and the
//! differing entries side by side.
//!
//! `EPSLICE_DIFF_SEED` (first seed) and `EPSLICE_DIFF_COUNT` (number of seeds, default 1) choose
//! the workloads, `EPSLICE_DIFF_PODS` their number of pods (default 36); `just diff-test SEED COUNT`. Own test binary: kube-controller-manager acts on
//! every namespace, so it must not share a control plane with other tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use envtest::kwok;
use epslice::controllers::ControllerName;
use epslice::endpoints as ep_core;
use epslice::endpointslice as es_core;
use epslice::mirroring as mirror_core;
use epslice::pod::CachedPod;
use epslice::verify::{self, ClusterState, Output, Status, VerifyArgs};
use epslice_integration_tests::differential as d;
use epslice_integration_tests::start;
use epslice_integration_tests::workload::{self, PodState, Workload};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

/// kube-controller-manager's managed-by value.
const KCM: &str = "endpointslice-controller.k8s.io";
/// epslice's, for this test.
const OURS: &str = "epslice-diff.example.com";
/// kube-controller-manager's mirroring managed-by value.
const KCM_MIRROR: &str = mirror_core::DEFAULT_MANAGED_BY;
/// epslice's mirroring managed-by value, for this test.
const OURS_MIRROR: &str = "epslice-mirroring-diff.example.com";
/// The seed of the default run (part of the normal suite).
const DEFAULT_SEED: u64 = 1;
/// How long convergence may take before the comparison runs anyway.
const CONVERGE: Duration = Duration::from_secs(60);
/// Quiescence: no resourceVersion changes for this long.
const QUIET: Duration = Duration::from_secs(3);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a non-negative integer: {e}"))
        }
        _ => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_controller_manager_and_epslice_agree_on_random_workloads() {
    let first = env_u64("EPSLICE_DIFF_SEED", DEFAULT_SEED);
    let count = env_u64("EPSLICE_DIFF_COUNT", 1).max(1);
    let nodes = workload::nodes();
    // Without StrictIPCIDRValidation (beta, on by default since 1.36) the apiserver accepts
    // Endpoints addresses with leading zeros and IPv4-mapped IPv6, as a cluster does that still
    // holds objects stored before the gate: the mirroring controllers must parse them leniently
    // (see `workload::custom_endpoints`). A truly unparseable IP cannot be stored at all.
    let cp = envtest::ControlPlane::start(envtest::Options {
        nodes: nodes.clone(),
        apiserver_args: vec!["--feature-gates=StrictIPCIDRValidation=false".into()],
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client().await.unwrap();
    let controllers =
        ["endpointslice-controller", "endpoints-controller", "endpointslice-mirroring-controller"].map(String::from);
    let kcm = cp.start_kube_controller_manager(&controllers, &[]).await.expect("kube-controller-manager");
    cp.adopt(kcm);

    let mut failures = Vec::new();
    let t0 = Instant::now();
    for seed in first..first.saturating_add(count) {
        let t = Instant::now();
        match run_seed(&client, seed, &nodes).await {
            Ok(summary) => eprintln!("seed {seed}: OK in {:.1?}: {summary}", t.elapsed()),
            Err(report) => {
                eprintln!("{report}");
                failures.push(seed);
            }
        }
    }
    eprintln!("{count} seed(s) from {first} in {:.1?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "kube-controller-manager and epslice differ for seed(s) {failures:?} (reproductions above; rerun one \
         with `just diff-test SEED 1`)"
    );
}

/// Creates, converges and compares one workload; `Err` is the printed reproduction.
async fn run_seed(client: &kube::Client, seed: u64, nodes: &[kwok::NodeSpec]) -> Result<String, String> {
    let pods = env_u64("EPSLICE_DIFF_PODS", workload::Config::default().pods as u64);
    let config = workload::Config { pods: usize::try_from(pods).unwrap_or(usize::MAX), ..Default::default() };
    let w = workload::generate(seed, nodes, &config);
    let ns = envtest::create_namespace(client, &format!("diff-{seed}")).await.unwrap();
    let ctl = start(client, &ns, |o| {
        o.controllers = vec![ControllerName::EndpointSlice, ControllerName::EndpointSliceMirroring];
        o.endpointslice.core.managed_by = OURS.into();
        o.mirroring.core.managed_by = OURS_MIRROR.into();
        o.field_manager = "epslice-diff".into();
    })
    .await;

    // Pods first, in their final states, then the Services: each controller's first sync of a
    // Service sees every pod, so both start from the same snapshot (topology hints of slices
    // that stay unchanged depend on the sync history).
    create_pods(client, &ns, &w).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    // Custom Endpoints of Services with a selector exist before their Service (afterwards the
    // Endpoints controller creates them itself).
    for e in &w.early_endpoints {
        eps.create(&PostParams::default(), e).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let mut selecting = Vec::new();
    let mut created_services = Vec::new();
    for s in &w.services {
        let created = svcs.create(&PostParams::default(), s).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let spec = created.spec.clone().unwrap_or_default();
        if spec.selector.is_some() && spec.type_.as_deref() != Some("ExternalName") {
            selecting.push(created.name_any());
        }
        created_services.push(created);
    }
    // Endpoints both mirroring controllers must write slices for (wait for them below).
    let mut mirrored = Vec::new();
    for e in &w.endpoints {
        let created = eps.create(&PostParams::default(), e).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let service = created_services.iter().find(|s| s.metadata.name == created.metadata.name);
        let input = mirror_core::Input { endpoints: &created, service, existing_slices: &[] };
        if !mirror_core::plan(&input, &mirror_core::Config::default()).create.is_empty() {
            mirrored.push(created.name_any());
        }
    }

    let converged = wait_converged(client, &ns, &selecting, &mirrored).await;
    let quiet = wait_quiet(client, &ns).await;
    let args = |managed_by: &str, endpoints: bool| VerifyArgs {
        kubeconfig: None,
        namespace: Some(ns.clone()),
        service: None,
        managed_by: managed_by.to_string(),
        max_endpoints_per_slice: 100,
        endpoints,
        // Mirrored slices are checked below with the one documented normalisation.
        mirroring: false,
        mirroring_managed_by: mirror_core::DEFAULT_MANAGED_BY.to_string(),
        mirroring_max_endpoints_per_subset: 1000,
        output: Output::Table,
    };
    let state = verify::read(client, &args(KCM, true)).await.unwrap();
    ctl.stop().await;

    let mut problems = Vec::new();
    if let Err(e) = converged {
        problems.push(format!("=== seed {seed} (namespace {ns}): not converged after {CONVERGE:?}: {e}"));
    }
    if let Err(e) = quiet {
        problems.push(format!("=== seed {seed} (namespace {ns}): still changing after {CONVERGE:?}: {e}"));
    }
    let ctx = Ctx { seed, ns: &ns, state: &state, cpu_by_zone: cpu_by_zone(nodes) };
    check_managers(&ctx, &mut problems);
    let compared = compare_slices(&ctx, &mut problems);
    check_verify(&ctx, &w, &verify::compare(&state, &args(KCM, true)), KCM, &mut problems);
    check_verify(&ctx, &w, &verify::compare(&state, &args(OURS, false)), OURS, &mut problems);
    let mirrored = compare_mirrored(&ctx, &mut problems);
    check_mirroring(&ctx, KCM_MIRROR, &mut problems);
    check_mirroring(&ctx, OURS_MIRROR, &mut problems);
    if problems.is_empty() {
        Ok(format!(
            "{} Services, {} pods; {compared}; {} Endpoints ({} custom: {}); {mirrored}",
            w.services.len(),
            w.pods.len(),
            state.endpoints.len(),
            w.endpoints.len() + w.early_endpoints.len(),
            Some(workload::edge_cases(&w).join(", "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no edge case".into()),
        ))
    } else {
        Err(problems.join("\n\n"))
    }
}

fn cpu_by_zone(nodes: &[kwok::NodeSpec]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for n in nodes {
        *m.entry(n.zone.clone()).or_default() += u64::from(n.cpu);
    }
    m
}

async fn create_pods(client: &kube::Client, ns: &str, w: &Workload) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in &w.pods {
        api.create(&PostParams::default(), &p.pod).await.unwrap_or_else(|e| panic!("seed {}: {e}", w.seed));
    }
    for p in &w.pods {
        let name = p.pod.name_any();
        match &p.state {
            PodState::Kwok => {}
            PodState::Custom(s) | PodState::Terminating(s) => {
                kwok::set_pod_status(&api, &name, s.clone()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        if matches!(p.state, PodState::Terminating(_)) {
            kwok::hold_terminating(&api, &name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    for p in w.pods.iter().filter(|p| p.state == PodState::Kwok) {
        kwok::wait_pod(&api, &p.pod.name_any(), CONVERGE, kwok::is_ready).await.unwrap();
    }
}

async fn list_slices(client: &kube::Client, ns: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

/// Every selecting Service has a slice from each controller and an Endpoints object; every
/// Endpoints in `mirrored` a slice from each mirroring controller.
async fn wait_converged(
    client: &kube::Client,
    ns: &str,
    selecting: &[String],
    mirrored: &[String],
) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let slices = list_slices(client, ns).await;
        let endpoints: Vec<String> = Api::<Endpoints>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let has = |svc: &str, by: &str| {
            slices.iter().any(|s| {
                let l = s.labels();
                l.get(d::LABEL_SERVICE_NAME).map(String::as_str) == Some(svc)
                    && l.get(d::LABEL_MANAGED_BY).map(String::as_str) == Some(by)
            })
        };
        let mut missing: Vec<String> = selecting
            .iter()
            .flat_map(|s| {
                let mut m = Vec::new();
                if !has(s, KCM) {
                    m.push(format!("{s}: no kcm slice"));
                }
                if !has(s, OURS) {
                    m.push(format!("{s}: no epslice slice"));
                }
                if !endpoints.contains(s) {
                    m.push(format!("{s}: no Endpoints"));
                }
                m
            })
            .collect();
        for e in mirrored {
            for (by, who) in [(KCM_MIRROR, "kcm"), (OURS_MIRROR, "epslice")] {
                if !has(e, by) {
                    missing.push(format!("{e}: no slice mirrored by {who}"));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if t0.elapsed() > CONVERGE {
            return Err(missing.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// No EndpointSlice or Endpoints of the namespace changes for [`QUIET`].
async fn wait_quiet(client: &kube::Client, ns: &str) -> Result<(), String> {
    let snapshot = || async {
        let mut m: BTreeMap<String, String> = list_slices(client, ns)
            .await
            .into_iter()
            .map(|s| (format!("EndpointSlice/{}", s.name_any()), s.resource_version().unwrap_or_default()))
            .collect();
        for e in Api::<Endpoints>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items {
            m.insert(format!("Endpoints/{}", e.name_any()), e.resource_version().unwrap_or_default());
        }
        m
    };
    let t0 = Instant::now();
    let mut last = snapshot().await;
    let mut since = Instant::now();
    let mut changed: Vec<String> = Vec::new();
    while since.elapsed() < QUIET {
        if t0.elapsed() > CONVERGE {
            return Err(format!("last changes: {changed:?}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = snapshot().await;
        if now != last {
            changed = now.iter().filter(|(k, v)| last.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
            changed.extend(last.keys().filter(|k| !now.contains_key(*k)).cloned());
            last = now;
            since = Instant::now();
        }
    }
    Ok(())
}

struct Ctx<'a> {
    seed: u64,
    ns: &'a str,
    state: &'a ClusterState,
    cpu_by_zone: BTreeMap<String, u64>,
}

impl Ctx<'_> {
    fn pods(&self) -> Vec<&CachedPod> {
        self.state.pods.iter().collect()
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.state.services.iter().find(|s| s.name_any() == name)
    }

    /// The reproduction block of an object without Service: seed, what, the differences.
    fn reproduction_without_service(&self, what: &str, name: &str, diff: &str) -> String {
        format!(
            "=== seed {} (namespace {}): {what} for {name} (no Service)\nreproduce: just diff-test {} 1\n{diff}",
            self.seed, self.ns, self.seed
        )
    }

    /// The reproduction block: seed, Service, the pods it selects (`*`: named in `diff`), and
    /// the differences.
    fn reproduction(&self, what: &str, svc: &Service, diff: &str) -> String {
        let mut s = format!(
            "=== seed {} (namespace {}): {what} for Service {}\nreproduce: just diff-test {} 1\nService: {}\n",
            self.seed,
            self.ns,
            svc.name_any(),
            self.seed,
            d::service_json(svc)
        );
        if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some() {
            let selected: Vec<&CachedPod> =
                self.state.pods.iter().filter(|p| epslice::podutil::service_selects_pod(svc, p)).collect();
            let _ = writeln!(s, "Pods selected ({}; * = named in a differing entry):", selected.len());
            for p in selected {
                let mark =
                    if diff.contains(&format!("/{}/{}/", self.ns, p.metadata.name.as_deref().unwrap_or_default())) {
                        "*"
                    } else {
                        " "
                    };
                let _ = writeln!(s, "  {mark} {}", d::pod_summary(p));
            }
        }
        s + diff
    }
}

/// kcm's slices vs epslice's, per Service: returns a summary of what was compared.
fn compare_slices(ctx: &Ctx<'_>, problems: &mut Vec<String>) -> String {
    let (mut endpoints, mut hinted, mut services) = (0usize, 0usize, 0usize);
    let mut services_list: Vec<&Service> = ctx.state.services.iter().collect();
    services_list.sort_by_key(|s| s.name_any());
    for svc in services_list {
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.selector.is_none() || spec.type_.as_deref() == Some("ExternalName") {
            // Neither controller may write slices for it.
            let stray: Vec<String> = [KCM, OURS]
                .iter()
                .flat_map(|by| d::slices_of(&ctx.state.slices, svc, by))
                .map(|s| s.name_any())
                .collect();
            if !stray.is_empty() {
                problems.push(ctx.reproduction(
                    "slices written for a Service without selector or ExternalName",
                    svc,
                    &format!("  {stray:?}"),
                ));
            }
            continue;
        }
        services += 1;
        let kcm = d::slices_of(&ctx.state.slices, svc, KCM);
        let ours = d::slices_of(&ctx.state.slices, svc, OURS);
        let (gk, go) = (d::group(&kcm), d::group(&ours));
        endpoints += gk.values().flat_map(|m| m.values()).sum::<usize>();
        hinted += gk.values().flat_map(|m| m.iter()).filter(|(e, _)| e.hints.is_some()).map(|(_, n)| n).sum::<usize>();
        let mut blocks = Vec::new();
        if kcm.is_empty() || ours.is_empty() {
            blocks.push(format!(
                "  slices: kcm {}, epslice {} (every selecting Service has at least a placeholder)",
                kcm.len(),
                ours.len()
            ));
        }
        if d::topology_auto(svc) {
            // See `differential`: for topology-mode Auto, which endpoint of a zone is re-hinted
            // to another zone follows endpoint order (Go map order upstream, deterministic in
            // epslice: docs/behaviour.md, "Packing" and "Topology hints"), so hints are
            // compared as (zone, hint) pairs per address type.
            let (sk, hk) = d::split_hints(gk, &ctx.cpu_by_zone);
            let (so, ho) = d::split_hints(go, &ctx.cpu_by_zone);
            blocks.extend(d::diff_groups(&sk, &so, "kcm", "epslice"));
            if hk != ho {
                blocks.push(format!(
                    "  topology hints per address type (zone, hint) → count:\n    kcm:     {hk:?}\n    epslice: {ho:?}"
                ));
            }
        } else {
            blocks.extend(d::diff_groups(&gk, &go, "kcm", "epslice"));
        }
        let (mut mk, mut mo) = (d::meta_by_key(&kcm), d::meta_by_key(&ours));
        // Only where epslice's planner differs on purpose: hints given up for a ready endpoint
        // without zone (docs/behaviour.md, "Hints that cannot be allocated").
        let zoneless_ready = |slices: &[&EndpointSlice]| {
            slices.iter().flat_map(|s| s.endpoints.iter().flatten()).any(|e| {
                e.conditions.as_ref().and_then(|c| c.ready) == Some(true) && e.zone.as_deref().is_none_or(str::is_empty)
            })
        };
        if d::topology_auto(svc) && (zoneless_ready(&kcm) || zoneless_ready(&ours)) {
            (mk, mo) = (d::without_trigger_time(mk), d::without_trigger_time(mo));
        }
        let meta = d::diff_meta(&mk, &mo, "kcm", "epslice");
        if !meta.is_empty() {
            blocks.extend(meta);
            blocks.push(history(&kcm, &ours));
        }
        if !blocks.is_empty() {
            let diff = format!("Endpoints that differ (kcm | epslice):\n{}", blocks.join("\n"));
            problems.push(ctx.reproduction("EndpointSlices differ", svc, &diff));
        }
    }
    format!("{services} selecting Services, {endpoints} endpoints ({hinted} with hints) compared")
}

/// What the slices of `managed_by` would be after epslice's core plan, vs what they are.
fn slice_plan_diff(ctx: &Ctx<'_>, svc: &Service, managed_by: &str) -> String {
    let pods = ctx.pods();
    let all: Vec<&EndpointSlice> = ctx
        .state
        .slices
        .iter()
        .filter(|s| s.labels().get(d::LABEL_SERVICE_NAME) == svc.metadata.name.as_ref())
        .collect();
    let ratios = es_core::topology::CpuRatios::from_nodes(ctx.state.nodes.values());
    let mut input = es_core::Input::new(svc, &pods, &ctx.state.nodes, &all);
    input.topology = Some(&ratios);
    let cfg = es_core::Config { managed_by: managed_by.to_string(), ..Default::default() };
    let plan = es_core::plan(&input, &cfg);
    let mine = d::slices_of(&ctx.state.slices, svc, managed_by);
    let after = d::apply(&mine, &plan.create, &plan.update, &plan.delete);
    let after: Vec<&EndpointSlice> = after.iter().collect();
    let blocks = d::diff_groups(&d::group(&mine), &d::group(&after), "as written", "epslice core wants");
    let mut out = format!(
        "plan: {} create, {} update, {} delete; warnings {:?}\n{}",
        plan.create.len(),
        plan.update.len(),
        plan.delete.len(),
        plan.warnings,
        blocks.join("\n")
    );
    for u in &plan.update {
        if let Some(old) = mine.iter().find(|s| s.metadata.name == u.metadata.name) {
            let _ = write!(out, "\n  update of {}: {}", u.name_any(), d::slice_changes(old, u));
        }
    }
    out
}

/// Every slice of the namespace is managed by one of the four controllers of the test.
fn check_managers(ctx: &Ctx<'_>, problems: &mut Vec<String>) {
    for s in &ctx.state.slices {
        let by = s.labels().get(d::LABEL_MANAGED_BY).map(String::as_str);
        if !by.is_some_and(|b| [KCM, OURS, KCM_MIRROR, OURS_MIRROR].contains(&b)) {
            problems.push(format!(
                "=== seed {} (namespace {}): slice {} managed by {by:?}, none of the test's controllers",
                ctx.seed,
                ctx.ns,
                s.name_any()
            ));
        }
    }
}

/// Every `verify` row must be OK, but for two kinds of row that are no difference between kcm
/// and epslice (anything else is a problem, a row of an object without Service included).
fn check_verify(ctx: &Ctx<'_>, w: &Workload, rows: &[verify::Row], managed_by: &str, problems: &mut Vec<String>) {
    for row in rows.iter().filter(|r| r.status != Status::Ok) {
        // Both controllers write slices for every selecting Service by construction: the other
        // one's are a WARNING row. That no slice has another manager is `check_managers`.
        if row.kind == verify::KIND_OTHER_MANAGER && row.status == Status::Warning {
            continue;
        }
        let what = format!("verify {} {:?} ({}; slices managed by {managed_by})", row.kind, row.status, row.detail);
        let Some(svc) = ctx.service(&row.service) else {
            // The workload's custom Endpoints without a Service: `verify` reports it EXTRA because
            // the Endpoints controller deletes such objects when it starts (upstream
            // `checkLeftoverEndpoints`; epslice the same, docs/behaviour.md "Start-up cleanup").
            // While running, neither deletes it (both react to Service events and Endpoints
            // deletions only), so kcm leaving it is upstream's behaviour, not a difference.
            let generated = w.endpoints.iter().any(|e| e.metadata.name.as_deref() == Some(row.service.as_str()));
            if !(row.kind == "Endpoints" && row.status == Status::Extra && generated) {
                problems.push(ctx.reproduction_without_service(&what, &row.service, ""));
            }
            continue;
        };
        let diff = if row.kind == "Endpoints" {
            let pods = ctx.pods();
            let existing = ctx.state.endpoints.iter().find(|e| e.name_any() == row.service);
            let plan = ep_core::plan(&ep_core::Input::new(svc, &pods, existing), &ep_core::Config::default());
            let wanted = match &plan.action {
                ep_core::Action::Create(e) | ep_core::Action::Update(e) => d::endpoints_json(e),
                other => format!("{other:?}"),
            };
            format!(
                "Endpoints written by kcm: {}\nepslice core wants:        {wanted}",
                existing.map(d::endpoints_json).unwrap_or_else(|| "none".into())
            )
        } else {
            slice_plan_diff(ctx, svc, managed_by)
        };
        problems.push(ctx.reproduction(&what, svc, &diff));
    }
}

/// The write history of both controllers' slices (see `differential::write_history`).
fn history(kcm: &[&EndpointSlice], ours: &[&EndpointSlice]) -> String {
    let lines = |v: &[&EndpointSlice]| d::write_history(v).join("\n      ");
    format!("  slices as written:\n    kcm:\n      {}\n    epslice:\n      {}", lines(kcm), lines(ours))
}

/// An Endpoints as JSON, cut for the reproduction when it is huge (the big subset).
fn endpoints_text(e: Option<&Endpoints>) -> String {
    let Some(e) = e else { return "none".into() };
    let json = d::endpoints_json(e);
    if json.len() <= 4000 {
        return json;
    }
    let subsets: Vec<String> = e
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            format!(
                "{{{} addresses, {} not ready, ports {}}}",
                s.addresses.as_ref().map_or(0, Vec::len),
                s.not_ready_addresses.as_ref().map_or(0, Vec::len),
                serde_json::to_string(&s.ports).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{}… ({} characters; subsets: {})",
        json.chars().take(4000).collect::<String>(),
        json.len(),
        subsets.join(", ")
    )
}

/// kcm's mirrored slices vs epslice's live ones, per Endpoints: returns a summary.
///
/// For an Endpoints that lists one port with an `appProtocol` in several subsets the two
/// controllers group addresses into different port sets (docs/behaviour.md, mirroring table,
/// "Repacking ports with an appProtocol"; mirroring core DIFFERENCES 7): there the slices are
/// compared as the multiset of (address type, endpoint, port) pairs, which regrouping keeps,
/// and their metadata regardless of port set.
fn compare_mirrored(ctx: &Ctx<'_>, problems: &mut Vec<String>) -> String {
    let mut names: BTreeSet<String> = ctx.state.endpoints.iter().map(ResourceExt::name_any).collect();
    names.extend(
        ctx.state
            .services
            .iter()
            .filter(|s| s.spec.as_ref().is_some_and(|s| s.selector.is_none()))
            .map(ResourceExt::name_any),
    );
    names.extend(
        ctx.state
            .slices
            .iter()
            .filter(|s| {
                [KCM_MIRROR, OURS_MIRROR].map(Some).contains(&s.labels().get(d::LABEL_MANAGED_BY).map(String::as_str))
            })
            .filter_map(|s| s.labels().get(d::LABEL_SERVICE_NAME).cloned()),
    );
    let (mut compared, mut slices_kcm, mut slices_ours, mut endpoints, mut normalised) = (0, 0, 0, 0, 0);
    for name in &names {
        let svc = ctx.service(name);
        let kcm = d::slices_named(&ctx.state.slices, ctx.ns, name, KCM_MIRROR);
        let ours = d::slices_named(&ctx.state.slices, ctx.ns, name, OURS_MIRROR);
        let e = ctx.state.endpoints.iter().find(|e| e.name_any() == *name);
        let Some(svc) = svc.filter(|s| s.spec.as_ref().is_some_and(|s| s.selector.is_none())) else {
            // No Service, or one with a selector: neither mirroring controller may write slices.
            let stray: Vec<String> = kcm.iter().chain(&ours).map(|s| s.name_any()).collect();
            if !stray.is_empty() {
                let diff = format!("  mirrored slices: {stray:?}\nEndpoints: {}", endpoints_text(e));
                problems.push(match svc {
                    Some(svc) => ctx.reproduction("mirrored slices for a Service with a selector", svc, &diff),
                    None => ctx.reproduction_without_service("mirrored slices", name, &diff),
                });
            }
            continue;
        };
        compared += 1;
        slices_kcm += kcm.len();
        slices_ours += ours.len();
        endpoints += kcm.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum::<usize>();
        let blocks = if e.is_some_and(d::app_protocol_port_in_several_subsets) {
            let meta = |v: &[&EndpointSlice]| v.iter().map(|s| d::SliceMeta::of(s)).collect::<BTreeSet<_>>();
            let mut blocks =
                d::diff_pairs(&d::address_port_pairs(&kcm), &d::address_port_pairs(&ours), "kcm", "epslice");
            if meta(&kcm) != meta(&ours) {
                blocks.push(format!(
                    "  slice metadata (labels without managed-by, annotations, ownerReferences):\n    kcm:     {:?}\n    \
                     epslice: {:?}",
                    meta(&kcm),
                    meta(&ours)
                ));
            }
            if blocks.is_empty() && d::group(&kcm) != d::group(&ours) {
                normalised += 1;
            }
            blocks
        } else {
            let mut blocks = d::diff_groups(&d::group(&kcm), &d::group(&ours), "kcm mirrored", "epslice mirrored");
            let meta = d::diff_meta(&d::meta_by_key(&kcm), &d::meta_by_key(&ours), "kcm", "epslice");
            if !meta.is_empty() {
                blocks.extend(meta);
                blocks.push(history(&kcm, &ours));
            }
            blocks
        };
        if !blocks.is_empty() {
            let diff = format!(
                "Endpoints: {}\nMirrored slices that differ (kcm | epslice):\n{}",
                endpoints_text(e),
                blocks.join("\n")
            );
            problems.push(ctx.reproduction("mirrored slices differ", svc, &diff));
        }
    }
    format!(
        "{compared} mirrorable Endpoints: {slices_kcm} kcm / {slices_ours} epslice mirrored slices, {endpoints} \
         endpoints compared ({normalised} regrouped by appProtocol)"
    )
}

/// epslice's mirroring core, configured as the controller managing `managed_by`, must want no
/// write on that controller's mirrored slices.
fn check_mirroring(ctx: &Ctx<'_>, managed_by: &str, problems: &mut Vec<String>) {
    let cfg = mirror_core::Config { managed_by: managed_by.to_string(), ..Default::default() };
    for svc in &ctx.state.services {
        if svc.spec.as_ref().is_some_and(|s| s.selector.is_some()) {
            continue;
        }
        let name = svc.name_any();
        let labelled: Vec<&EndpointSlice> =
            ctx.state.slices.iter().filter(|s| s.labels().get(d::LABEL_SERVICE_NAME) == Some(&name)).collect();
        let mirrored = d::slices_of(&ctx.state.slices, svc, managed_by);
        let plan = match ctx.state.endpoints.iter().find(|e| e.name_any() == name) {
            Some(e) => mirror_core::plan(
                &mirror_core::Input { endpoints: e, service: Some(svc), existing_slices: &labelled },
                &cfg,
            ),
            None => mirror_core::plan_delete_all(ctx.ns, &name, &labelled, &cfg),
        };
        if plan.is_noop() {
            continue;
        }
        let after = d::apply(&mirrored, &plan.create, &plan.update, &plan.delete);
        let after: Vec<&EndpointSlice> = after.iter().collect();
        let endpoints = ctx.state.endpoints.iter().find(|e| e.name_any() == name);
        // Deliberate difference (docs/behaviour.md, mirroring table, "Repacking ports with an
        // appProtocol"; mirroring core DIFFERENCES 7): upstream never merges a port with an
        // appProtocol across subsets, epslice merges ports by value. Only for such Endpoints,
        // and only if the plan touches nothing but endpoints and ports, the slices are compared
        // as the multiset of (address type, endpoint, port) pairs, which regrouping preserves.
        if endpoints.is_some_and(d::app_protocol_port_in_several_subsets)
            && plan.update.iter().all(|u| mirrored.iter().any(|m| d::same_metadata(m, u)))
            && plan.create.iter().all(|c| mirrored.iter().any(|m| d::same_metadata(m, c)))
            && d::address_port_pairs(&mirrored) == d::address_port_pairs(&after)
        {
            continue;
        }
        let blocks = d::diff_groups(&d::group(&mirrored), &d::group(&after), "as mirrored", "epslice core wants");
        let mut diff = format!(
            "Endpoints: {}\nplan: {} create, {} update, {} delete (slices mirrored by {managed_by})\n{}",
            endpoints_text(endpoints),
            plan.create.len(),
            plan.update.len(),
            plan.delete.len(),
            if blocks.is_empty() {
                "  (same endpoints; labels, annotations or packing differ)".to_string()
            } else {
                blocks.join("\n")
            }
        );
        for u in &plan.update {
            if let Some(old) = mirrored.iter().find(|s| s.metadata.name == u.metadata.name) {
                let _ = write!(diff, "\n  update of {}: {}", u.name_any(), d::slice_changes(old, u));
            }
        }
        problems.push(ctx.reproduction(
            &format!("mirrored slices ({managed_by}) are not what the core wants"),
            svc,
            &diff,
        ));
    }
}
