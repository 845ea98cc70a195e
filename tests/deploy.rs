//! The manifests in deploy/ and the operator's RBAC against a real API server:
//!
//! * `kubectl apply -k deploy/ --dry-run=server` is accepted (and the cert-manager overlay too,
//!   apart from cert-manager's own kinds, which this API server does not serve);
//! * the ServiceAccount's permissions (`kubectl auth can-i --list`) are exactly the list in
//!   docs/operations.md, with no wildcard;
//! * `epslice run` impersonating that ServiceAccount runs all three controllers and leader election
//!   without a single Forbidden, and so does `epslice webhook --self-signed` (certificate Secret,
//!   caBundle, admissions through the API server, ServiceEnvPolicy status);
//! * without the permissions it stops at start-up with one line per missing permission;
//! * every flag of `epslice run` and `epslice webhook` is in docs/operations.md with its default.
//!
//! The RBAC objects are cluster-scoped and use their real names, applied with `kubectl apply`
//! (idempotent: a second run, or a cluster that already has them, is fine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use envtest::kwok;
use epslice_integration_tests::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};

const SA: &str = "system:serviceaccount:epslice-system:epslice";

/// The checkout the test runs in. `cargo test` sets `CARGO_MANIFEST_DIR` when it runs a test;
/// the compile-time value is only a fallback, since cargo reuses a test binary built in another
/// checkout of the same workspace when the sources are older than that build.
fn repo_root() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.join("..")
}

/// Runs the pinned kubectl (admin kubeconfig) in the repository root: (success, stdout, stderr).
fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = envtest::shared().kubectl().current_dir(repo_root()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(args: &[&str]) -> String {
    let (ok, out, err) = kubectl(args);
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
    out
}

/// The Namespace, the RBAC and the CRD of deploy/base, applied for real once per test binary,
/// before any test dry-runs the kustomization (a real apply between a dry run's GET and its
/// create would make the dry run fail with AlreadyExists). Returns once the API server's
/// authorizer, which reads RBAC from its own cache, answers with the new grants.
fn install_rbac() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        kubectl_ok(&[
            "apply",
            "-f",
            "deploy/base/namespace.yaml",
            "-f",
            "deploy/base/rbac.yaml",
            "-f",
            "crds/serviceenvpolicy.yaml",
        ]);
        kubectl_ok(&["wait", "--for=condition=Established", "crd/serviceenvpolicies.epslice.io", "--timeout=30s"]);
        // One grant of every role and binding (the authorizer caches each kind on its own).
        wait_can_i(SA, &["list", "nodes"]);
        wait_can_i(SA, &["patch", "serviceenvpolicies.epslice.io", "--subresource=status", "-n", "default"]);
        wait_can_i(SA, &["update", "mutatingwebhookconfigurations/epslice-service-env"]);
        wait_can_i(SA, &["patch", "leases/epslice", "-n", "epslice-system"]);
        wait_can_i(SA, &["create", "secrets", "-n", "epslice-system"]);
    });
}

/// Waits until `kubectl auth can-i VERB… --as USER` says yes.
fn wait_can_i(user: &str, check: &[&str]) {
    let t0 = Instant::now();
    loop {
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(check);
        let as_user = format!("--as={user}");
        args.push(&as_user);
        if kubectl(&args).1.trim() == "yes" {
            return;
        }
        assert!(t0.elapsed() < CONVERGE, "{user} never got {check:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kubeconfig like the admin one that impersonates `user` (kubeconfig `as:`, which kube-rs and
/// kubectl both honour). Written as JSON, which is YAML.
fn kubeconfig_as(user: &str) -> PathBuf {
    let cp = envtest::shared();
    let mut kc = kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap();
    for a in &mut kc.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            info.impersonate = Some(user.to_owned());
        }
    }
    let dir = std::env::temp_dir().join(format!("epslice-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.kubeconfig", user.replace(':', "_")));
    // Written aside and renamed: another test may be starting a process on the same file.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tmp = dir.join(format!(".kubeconfig-{}", SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&kc).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The MutatingWebhookConfiguration `epslice-service-env` is cluster-scoped and shared by the
/// tests of this binary. The webhook test registers it for real with a loopback `url`; a dry-run
/// `kubectl apply` of deploy/ while it exists merges deploy's `service` into that `url`, and the
/// API server refuses a client config with both. Tests that register it or dry-run it hold this.
static WEBHOOK_CONFIGURATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deletes the MutatingWebhookConfiguration `epslice-service-env` when dropped, so that a failed
/// webhook test does not leave its loopback registration to the tests after it.
struct DeleteWebhookConfiguration;

impl Drop for DeleteWebhookConfiguration {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "mutatingwebhookconfiguration", "epslice-service-env", "--ignore-not-found"]);
    }
}

fn epslice_run(name: &str, kubeconfig: &Path, args: &[&str]) -> envtest::Component {
    epslice("run", name, kubeconfig, args)
}

/// `epslice SUBCOMMAND --kubeconfig KUBECONFIG ARGS…` as a process of the shared control plane's group.
fn epslice(subcommand: &str, name: &str, kubeconfig: &Path, args: &[&str]) -> envtest::Component {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_epslice-cli"));
    cmd.arg(subcommand)
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAMESPACE")
        .env_remove("RUST_LOG")
        .env("POD_NAME", name)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    envtest::shared().spawn_in_group(name, cmd).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Manifests

#[test]
fn deploy_kustomization_is_accepted_by_the_api_server() {
    // The priority class the Deployment uses is one the API server creates itself.
    kubectl_ok(&["get", "priorityclass", "system-cluster-critical"]);

    // A server-side dry run of a namespaced object fails with NotFound when its namespace does not
    // exist: the dry-run Namespace of the same apply is never stored. So the Namespace is applied
    // for real first (idempotent), then the whole kustomization as a dry run.
    install_rbac();
    let held = WEBHOOK_CONFIGURATION.blocking_lock();
    let (ok, out, err) = kubectl(&["apply", "-k", "deploy/", "--dry-run=server"]);
    drop(held);
    assert!(ok, "kubectl apply -k deploy/ --dry-run=server:\n{out}\n{err}");
    for object in [
        "namespace/epslice-system",
        "customresourcedefinition.apiextensions.k8s.io/serviceenvpolicies.epslice.io",
        "serviceaccount/epslice",
        "clusterrole.rbac.authorization.k8s.io/epslice-controllers",
        "clusterrole.rbac.authorization.k8s.io/epslice-webhook",
        "clusterrole.rbac.authorization.k8s.io/epslice-webhook-cabundle",
        "role.rbac.authorization.k8s.io/epslice-leader-election",
        "role.rbac.authorization.k8s.io/epslice-webhook-certs",
        "service/epslice-webhook",
        "service/epslice-metrics",
        "deployment.apps/epslice",
        "poddisruptionbudget.policy/epslice",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/epslice-service-env",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{object} ")) && l.ends_with("(server dry run)")),
            "{object} missing from the dry run:\n{out}"
        );
    }
    // The namespace enforces Pod Security "restricted"; a pod template that broke it would get a
    // "would violate PodSecurity" warning on the Deployment.
    assert!(!err.contains("Warning") && !err.contains("PodSecurity"), "warnings:\n{err}");

    // The image is set through kustomize `images:` (name `epslice`).
    let rendered = kubectl_ok(&["kustomize", "deploy/"]);
    let images: Vec<&str> = rendered.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    assert_eq!(images, ["ghcr.io/epslice/epslice:0.1.0"; 2], "both containers use the kustomize image");
    for want in ["--leader-elect=true", "name: POD_NAME", "priorityClassName: system-cluster-critical"] {
        assert!(rendered.contains(want), "{want} missing from the rendered Deployment");
    }
}

/// The controller's readiness must never take the webhook out of its Service (one Pod, one
/// readiness): the controller container has a startupProbe on /readyz and a livenessProbe on
/// /healthz but no readinessProbe; the webhook container keeps its readinessProbe.
#[test]
fn only_the_webhook_container_decides_the_pods_readiness() {
    let out = kubectl_ok(&["create", "-f", "deploy/base/deployment.yaml", "--dry-run=client", "-o", "json"]);
    // One JSON object per manifest document, one after the other.
    let objects: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&out).into_iter().collect::<Result<_, _>>().unwrap();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let container = |name: &str| containers.iter().find(|c| c["name"] == name).unwrap().clone();
    let path = |c: &serde_json::Value, probe: &str| c[probe]["httpGet"]["path"].as_str().map(str::to_owned);

    let controller = container("controller");
    assert!(controller.get("readinessProbe").is_none(), "controller readinessProbe: {controller}");
    assert_eq!(path(&controller, "startupProbe").as_deref(), Some("/readyz"));
    assert_eq!(path(&controller, "livenessProbe").as_deref(), Some("/healthz"));
    // Generous for the first cache sync of a large cluster: at least 5 minutes.
    let startup = &controller["startupProbe"];
    let budget = startup["periodSeconds"].as_u64().unwrap_or(10) * startup["failureThreshold"].as_u64().unwrap_or(3);
    assert!(budget >= 300, "startupProbe allows only {budget}s");

    let webhook = container("webhook");
    assert_eq!(path(&webhook, "readinessProbe").as_deref(), Some("/readyz"));
    assert_eq!(path(&webhook, "livenessProbe").as_deref(), Some("/healthz"));
}

#[test]
fn cert_manager_overlay_builds_on_the_base() {
    install_rbac();
    let rendered = kubectl_ok(&["kustomize", "deploy/overlays/cert-manager"]);
    // A CA chain: self-signed Issuer → CA Certificate → CA Issuer → serving Certificate, and
    // caBundle from the CA, so that a renewal of the serving certificate leaves caBundle alone.
    let docs: Vec<&str> = rendered.split("\n---\n").collect();
    let doc = |kind: &str, name: &str| -> &str {
        let found = docs.iter().find(|d| {
            d.lines().any(|l| l == format!("kind: {kind}")) && d.lines().any(|l| l == format!("  name: {name}"))
        });
        found.unwrap_or_else(|| panic!("no {kind} {name} in the overlay:\n{rendered}"))
    };
    assert!(doc("Issuer", "epslice-selfsigned").contains("selfSigned: {}"));
    let ca = doc("Certificate", "epslice-webhook-ca");
    assert!(ca.contains("isCA: true") && ca.contains("name: epslice-selfsigned"), "{ca}");
    assert!(doc("Issuer", "epslice-ca").contains("secretName: epslice-webhook-ca"));
    let serving = doc("Certificate", "epslice-webhook");
    assert!(!serving.contains("isCA: true") && serving.contains("name: epslice-ca"), "{serving}");
    assert!(serving.contains("secretName: epslice-webhook-cert"), "{serving}");
    let inject: Vec<&str> = rendered.lines().filter(|l| l.contains("cert-manager.io/inject-ca-from:")).collect();
    assert_eq!(inject, ["    cert-manager.io/inject-ca-from: epslice-system/epslice-webhook-ca"]);
    assert!(rendered.contains("--tls-cert=/etc/epslice/tls/tls.crt"));
    for gone in ["--self-signed", "epslice-webhook-certs", "epslice-webhook-cabundle", "secrets"] {
        assert!(!rendered.contains(gone), "{gone} should be gone in the cert-manager overlay");
    }
    // This API server has no cert-manager: its two kinds are refused, everything else is accepted.
    let held = WEBHOOK_CONFIGURATION.blocking_lock();
    let (_, out, err) = kubectl(&["apply", "-k", "deploy/overlays/cert-manager", "--dry-run=server"]);
    drop(held);
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("no matches for kind \"Certificate\" in version \"cert-manager.io/v1\"")
                || line.contains("no matches for kind \"Issuer\" in version \"cert-manager.io/v1\"")
                || line.contains("ensure CRDs are installed first"),
            "unexpected error: {line}\n{err}"
        );
    }
    assert!(out.contains("deployment.apps/epslice "), "{out}");
    assert!(out.contains("mutatingwebhookconfiguration.admissionregistration.k8s.io/epslice-service-env "), "{out}");
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// One allowed (resource, resource names, verb), resources spelled as kubectl prints them
/// (`pods`, `leases.coordination.k8s.io`, `serviceenvpolicies.epslice.io/status`).
type Grant = (String, String, String);

/// The text between each `[` and `]` of a line, split on whitespace.
fn brackets(s: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else { break };
        out.push(rest[open + 1..open + close].split_whitespace().map(str::to_owned).collect());
        rest = &rest[open + close + 1..];
    }
    out
}

/// The resource rules of `kubectl auth can-i --list` for `user` in namespace `ns`.
fn can_i_list(user: &str, ns: &str) -> BTreeSet<Grant> {
    let out = kubectl_ok(&["auth", "can-i", "--list", "--no-headers", &format!("--as={user}"), "-n", ns]);
    let mut grants = BTreeSet::new();
    for line in out.lines() {
        // Non-resource URL lines start with blanks (no resource).
        if line.starts_with(char::is_whitespace) || line.trim().is_empty() {
            continue;
        }
        let resource = line.split_whitespace().next().unwrap().to_owned();
        let groups = brackets(line);
        assert_eq!(groups.len(), 3, "unexpected can-i line: {line:?}");
        let names = groups[1].join(",");
        for verb in &groups[2] {
            grants.insert((resource.clone(), names.clone(), verb.clone()));
        }
    }
    grants
}

/// The RBAC table of docs/operations.md: (grant, cluster-wide?).
fn documented_rbac() -> Vec<(Grant, bool)> {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let table = doc
        .split("<!-- rbac:begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- rbac:end -->").next())
        .expect("docs/operations.md has an <!-- rbac:begin --> … <!-- rbac:end --> table");
    let clean = |c: &str| c.trim().trim_matches('`').to_owned();
    let mut out = Vec::new();
    for row in table.lines().filter(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
        assert!(cells.len() >= 5, "bad RBAC row: {row}");
        let group = clean(cells[0]);
        let group = if group == "core" { String::new() } else { group };
        let resource = clean(cells[1]);
        let (base, sub) = match resource.split_once('/') {
            Some((b, s)) => (b.to_owned(), format!("/{s}")),
            None => (resource.clone(), String::new()),
        };
        let key = if group.is_empty() { format!("{base}{sub}") } else { format!("{base}.{group}{sub}") };
        let names = clean(cells[3]);
        let names = if names == "—" || names.is_empty() { String::new() } else { names };
        let cluster = match clean(cells[4]).as_str() {
            "cluster" => true,
            "epslice-system" => false,
            other => panic!("scope must be `cluster` or `epslice-system`, not {other:?}: {row}"),
        };
        for verb in cells[2].split(',') {
            out.push(((key.clone(), names.clone(), clean(verb)), cluster));
        }
    }
    assert!(out.len() > 10, "RBAC table too short: {out:?}");
    out
}

#[tokio::test]
async fn the_service_account_has_exactly_the_documented_permissions() {
    install_rbac();
    let client = envtest::shared().client().await.unwrap();
    let other = envtest::create_namespace(&client, "rbac").await.unwrap();
    let documented = documented_rbac();
    // What every authenticated user has (discovery, self reviews), from an unbound account.
    let baseline = can_i_list("system:serviceaccount:epslice-system:nobody", "epslice-system");
    let ours = |ns: &str| -> BTreeSet<Grant> { can_i_list(SA, ns).difference(&baseline).cloned().collect() };

    let in_home: BTreeSet<Grant> = documented.iter().map(|(g, _)| g.clone()).collect();
    let elsewhere: BTreeSet<Grant> = documented.iter().filter(|(_, c)| *c).map(|(g, _)| g.clone()).collect();
    let same = |got: &BTreeSet<Grant>, want: &BTreeSet<Grant>, where_: &str| {
        let extra: Vec<&Grant> = got.difference(want).collect();
        let missing: Vec<&Grant> = want.difference(got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{where_}: granted but not in docs/operations.md: {extra:?}; documented but not granted: {missing:?}"
        );
    };
    let got_home = ours("epslice-system");
    same(&got_home, &in_home, "in epslice-system");
    let got_elsewhere = ours(&other);
    same(&got_elsewhere, &elsewhere, "in another namespace (cluster-wide rows only)");
    for (resource, names, verb) in &got_home {
        assert!(!resource.contains('*') && !verb.contains('*') && !names.contains('*'), "wildcard: {resource} {verb}");
    }
    assert!(!got_elsewhere.iter().any(|(r, _, _)| r == "secrets"), "no Secrets outside epslice-system");
    // Secrets in epslice-system: create, and only the certificate Secret by name.
    let secrets: Vec<&Grant> = got_home.iter().filter(|(r, _, _)| r == "secrets").collect();
    assert!(secrets.iter().all(|(_, n, v)| v == "create" || n == "epslice-webhook-tls"), "{secrets:?}");
}

/// deploy/base/rbac.yaml grants every permission the start-up check asks for with the
/// Deployment's flags (`controllers::preflight::required`): the two lists cannot drift apart.
#[test]
fn rbac_yaml_grants_everything_the_start_up_check_requires() {
    use clap::Parser;
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        run: epslice::cli::RunArgs,
    }
    install_rbac();
    // deploy/base/deployment.yaml's `controller` container ($(POD_NAMESPACE) = epslice-system).
    let args = Run::try_parse_from([
        "run",
        "--controllers=*",
        "--leader-elect=true",
        "--leader-elect-resource-namespace=epslice-system",
        "--leader-elect-resource-name=epslice",
    ])
    .unwrap();
    let options = args.run.options().unwrap();
    let required = epslice::controllers::preflight::required(&options);
    assert!(required.iter().any(|p| p.verb == "get" && p.resource == "endpointslices"), "{required:?}");
    let mut refused = Vec::new();
    for p in &required {
        let resource = match &p.name {
            Some(name) => format!("{}/{name}", p.qualified_resource()),
            None => p.qualified_resource(),
        };
        let scope = match &p.namespace {
            Some(ns) => vec!["-n".to_owned(), ns.clone()],
            None => vec!["--all-namespaces".to_owned()],
        };
        let mut cmd = vec!["auth".to_owned(), "can-i".into(), p.verb.into(), resource, format!("--as={SA}")];
        cmd.extend(scope);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let (_, out, _) = kubectl(&cmd);
        if out.trim() != "yes" {
            refused.push(p.to_string());
        }
    }
    assert!(refused.is_empty(), "required by preflight but not granted by deploy/base/rbac.yaml: {refused:?}");
}

async fn wait_exit(c: &mut envtest::Component, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = c.exited() {
            return status;
        }
        assert!(t0.elapsed() < within, "{} still running after {within:?}; log:\n{}", c.name(), c.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `missing permission: …` lines of a log.
fn missing_lines(log: &str) -> Vec<String> {
    log.lines().filter_map(|l| l.split_once("missing permission: ").map(|(_, p)| p.trim().to_owned())).collect()
}

#[tokio::test]
async fn missing_rbac_stops_epslice_run_with_one_line_per_permission() {
    install_rbac();
    let client = envtest::shared().client().await.unwrap();
    let ns = envtest::create_namespace(&client, "norbac").await.unwrap();

    // Bound to nothing: every permission is reported, and the process exits 1 at once.
    let user = format!("system:serviceaccount:{ns}:nobody");
    let kc = kubeconfig_as(&user);
    let args = ["--namespace", &ns, "--leader-elect-resource-namespace", &ns, "--admin-bind-address", "0"];
    let mut p = epslice_run("epslice-norbac", &kc, &args);
    let status = wait_exit(&mut p, CONVERGE).await;
    let log = p.log_tail(20_000);
    assert_eq!(status.code(), Some(1), "exit code; log:\n{log}");
    let missing = missing_lines(&log);
    assert_eq!(missing.len(), 22, "one line per permission:\n{log}");
    for want in [
        format!("list pods in namespace {ns}"),
        "watch nodes (cluster-wide)".to_owned(),
        format!("create endpointslices.discovery.k8s.io in namespace {ns}"),
        format!("get endpointslices.discovery.k8s.io in namespace {ns}"),
        format!("delete endpoints in namespace {ns}"),
        format!("create events.events.k8s.io in namespace {ns}"),
        format!("patch leases.coordination.k8s.io \"epslice\" in namespace {ns}"),
    ] {
        assert!(missing.contains(&want), "{want:?} not reported:\n{log}");
    }
    assert!(log.contains(&format!("22 permission(s) missing for {user}")), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // The controllers' ClusterRole bound in this namespace only: what is left is exactly the
    // cluster-scoped Nodes and the Lease (not in that role).
    let partial = format!("system:serviceaccount:{ns}:partial");
    kubectl_ok(&[
        "create",
        "rolebinding",
        "epslice-partial",
        "-n",
        &ns,
        "--clusterrole=epslice-controllers",
        &format!("--serviceaccount={ns}:partial"),
    ]);
    wait_can_i(&partial, &["list", "pods", "-n", &ns]);
    let kc = kubeconfig_as(&partial);
    let mut p = epslice_run("epslice-partial", &kc, &args);
    let status = wait_exit(&mut p, CONVERGE).await;
    let log = p.log_tail(20_000);
    assert_eq!(status.code(), Some(1), "exit code; log:\n{log}");
    let want = [
        "list nodes (cluster-wide)".to_owned(),
        "watch nodes (cluster-wide)".to_owned(),
        format!("get leases.coordination.k8s.io \"epslice\" in namespace {ns}"),
        format!("patch leases.coordination.k8s.io \"epslice\" in namespace {ns}"),
        format!("create leases.coordination.k8s.io in namespace {ns}"),
    ];
    assert_eq!(missing_lines(&log), want, "log:\n{log}");
}

/// GET on the admin port: (status, body).
async fn admin_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some((text.split_whitespace().nth(1)?.parse().ok()?, text))
}

#[tokio::test]
async fn epslice_run_as_the_service_account_works_without_a_forbidden() {
    install_rbac();
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "asrbac").await.unwrap();
    let kc = kubeconfig_as(SA);
    let admin = envtest::free_port().unwrap();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut p = epslice_run(
        "epslice-as-sa",
        &kc,
        &[
            "--namespace",
            &ns,
            "--controllers=*",
            "--leader-elect=true",
            "--leader-elect-resource-namespace=epslice-system",
            "--leader-elect-resource-name=epslice",
            "--leader-elect-lease-duration=15s",
            "--leader-elect-renew-grace=5s",
            "--admin-bind-address",
            &admin_addr,
        ],
    );

    // Leader election in epslice-system with the Role's named Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "epslice-system");
    let t0 = Instant::now();
    loop {
        let holder = leases.get_opt("epslice").await.unwrap().and_then(|l| l.spec).and_then(|s| s.holder_identity);
        if holder.is_some_and(|h| h.starts_with("epslice-as-sa_")) {
            break;
        }
        assert!(p.exited().is_none(), "epslice run exited; log:\n{}", p.log_tail(4000));
        assert!(t0.elapsed() < CONVERGE, "no leadership; log:\n{}", p.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // EndpointSlice and Endpoints controllers.
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &service("web", "web", &[("http", 80, IntOrString::Int(8080))])).await.unwrap();
    for i in 0..3 {
        let node = &kwok::default_nodes()[i % 6].name;
        pods.create(
            &PostParams::default(),
            &kwok::pod(&format!("web-{i}"), node, &[("app", "web")], &[("http", 8080)]),
        )
        .await
        .unwrap();
    }
    let s = wait_slices(&client, &ns, "web", "3 endpoints", |s| endpoint_count(s) == 3).await;
    wait_endpoints(&client, &ns, "web", "3 ready addresses", |e| endpoints_counts(e) == (3, 0)).await;

    // Mirroring controller: a selector-less Service with custom Endpoints.
    svcs.create(
        &PostParams::default(),
        &Service {
            metadata: kube::api::ObjectMeta { name: Some("ext".into()), ..Default::default() },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                ports: Some(vec![k8s_openapi::api::core::v1::ServicePort { port: 80, ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let eps: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(client.clone(), &ns).create(&PostParams::default(), &eps).await.unwrap();
    wait_slices(&client, &ns, "ext", "a mirrored slice", |s| {
        s.iter().any(|x| {
            x.metadata.labels.as_ref().and_then(|l| l.get("endpointslice.kubernetes.io/managed-by")).map(String::as_str)
                == Some("endpointslicemirroring-controller.k8s.io")
                && endpoint_count(std::slice::from_ref(x)) == 1
        })
    })
    .await;

    // Events: a competing writer of our slice is reported with an Event (events.k8s.io create).
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams { field_manager: Some("kube-controller-manager".into()), ..Default::default() };
    let name = s[0].metadata.name.clone().unwrap();
    slices_api.patch(&name, &pp, &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "1"}}}))).await.unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    while !events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("CompetingEndpointSliceWriter"))
    {
        assert!(t0.elapsed() < CONVERGE, "no CompetingEndpointSliceWriter event; log:\n{}", p.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, metrics) = admin_get(admin, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("leader_election_master_status{name=\"epslice\"} 1"), "{metrics}");
    assert!(metrics.contains("endpoint_slice_controller_foreign_writes_total{manager=\"kube-controller-manager\"} 1"));
    // client-go's workqueue latency metrics, for every queue (the mirroring one may be idle).
    for name in ["endpoint_slice", "endpoint"] {
        for family in ["queue_duration_seconds", "work_duration_seconds"] {
            let count = format!("workqueue_{family}_count{{name=\"{name}\"}} ");
            let n: u64 = metrics.lines().find_map(|l| l.strip_prefix(&count)).map_or(0, |v| v.parse().unwrap());
            assert!(n > 0, "no {count} in\n{metrics}");
        }
    }
    for name in ["endpoint_slice", "endpoint", "endpoint_slice_mirroring"] {
        for gauge in ["unfinished_work_seconds", "longest_running_processor_seconds"] {
            let series = format!("workqueue_{gauge}{{name=\"{name}\"}} ");
            assert!(metrics.lines().any(|l| l.starts_with(&series)), "no {series} in\n{metrics}");
        }
    }

    // Graceful stop releases the Lease (patch): still no Forbidden anywhere.
    p.stop_with(Duration::from_secs(20));
    let log = p.log_tail(200_000);
    assert!(!log.to_ascii_lowercase().contains("forbidden"), "a Forbidden as {SA}:\n{log}");
    assert!(log.contains("Lease released"), "the Lease was released on shutdown:\n{log}");
}

#[tokio::test]
async fn epslice_webhook_as_the_service_account_serves_admissions_without_a_forbidden() {
    install_rbac();
    let cp = envtest::shared();
    let client = cp.client().await.unwrap();
    let ns = envtest::create_namespace(&client, "whsa").await.unwrap();
    let port = envtest::free_port().unwrap();
    let admin = envtest::free_port().unwrap();
    // deploy/base's registration, except that the API server calls the process on loopback and
    // only for this namespace. Registered without a caBundle: the webhook publishes it.
    let _held = WEBHOOK_CONFIGURATION.lock().await;
    let _delete = DeleteWebhookConfiguration;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc = epslice_integration_tests::webhookcfg::configuration("epslice-service-env", &ns, port, None, "Ignore");
    mwcs.create(&PostParams::default(), &mwc).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    svcs.create(&PostParams::default(), &service("db", "db", &[("pg", 5432, IntOrString::Int(5432))])).await.unwrap();
    let policy = serde_json::json!({
        "apiVersion": "epslice.io/v1alpha1", "kind": "ServiceEnvPolicy",
        "metadata": {"name": "all", "namespace": ns},
        "spec": {"podSelector": {}, "mode": "Selected", "services": {"names": ["db"]}},
    });
    let policy_file = std::env::temp_dir().join(format!("epslice-deploy-{}-policy.json", std::process::id()));
    std::fs::write(&policy_file, policy.to_string()).unwrap();
    kubectl_ok(&["apply", "-f", policy_file.to_str().unwrap()]);

    let kc = kubeconfig_as(SA);
    let (bind, admin_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
    let mut p = epslice(
        "webhook",
        "epslice-webhook-as-sa",
        &kc,
        &[
            "--self-signed",
            "--namespace=epslice-system",
            "--cert-secret=epslice-webhook-tls",
            "--webhook-config-name=epslice-service-env",
            "--extra-san=127.0.0.1",
            "--bind-address",
            &bind,
            "--admin-bind-address",
            &admin_addr,
        ],
    );

    // Ready: certificate Secret written in epslice-system, caBundle published, caches synced.
    let t0 = Instant::now();
    while admin_get(admin, "/readyz").await.map(|(code, _)| code) != Some(200) {
        assert!(p.exited().is_none(), "epslice webhook exited; log:\n{}", p.log_tail(4000));
        assert!(t0.elapsed() < CONVERGE, "never ready; log:\n{}", p.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret = Api::<Secret>::namespaced(client.clone(), "epslice-system").get("epslice-webhook-tls").await.unwrap();
    let bundle = secret.data.as_ref().and_then(|d| d.get("ca-bundle.crt")).map(|b| b.0.clone());
    let published = mwcs.get("epslice-service-env").await.unwrap().webhooks.unwrap()[0].client_config.ca_bundle.clone();
    assert!(bundle.is_some());
    assert_eq!(published.map(|b| b.0), bundle, "caBundle published into the MutatingWebhookConfiguration");

    // Admissions through the API server: the policy's pick lands in the stored pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let node = &kwok::default_nodes()[0].name;
    let t0 = Instant::now();
    loop {
        let probe = kwok::pod("probe", node, &[("app", "x")], &[]);
        let created = pods.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await.unwrap();
        let env: Vec<String> =
            created.spec.unwrap().containers[0].env.iter().flatten().map(|e| e.name.clone()).collect();
        if env.iter().any(|n| n == "DB_SERVICE_HOST") {
            break;
        }
        assert!(t0.elapsed() < CONVERGE, "no injection (env {env:?}); log:\n{}", p.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ServiceEnvPolicy status controller (server-side apply of status).
    let policies: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("epslice.io", "v1alpha1", "ServiceEnvPolicy"),
            "serviceenvpolicies",
        ),
    );
    let t0 = Instant::now();
    loop {
        let got = policies.get("all").await.unwrap();
        let conditions = got.data.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        if conditions.iter().any(|c| c["type"] == "Valid" && c["status"] == "True") {
            break;
        }
        assert!(t0.elapsed() < CONVERGE, "no Valid status; log:\n{}", p.log_tail(4000));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    p.stop_with(Duration::from_secs(10));
    let log = p.log_tail(200_000);
    assert!(!log.to_ascii_lowercase().contains("forbidden"), "a Forbidden as {SA}:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Flags documented

/// The markdown rows `| --flag | default | env | help |` of a clap command's long flags.
fn flag_rows(cmd: clap::Command) -> Vec<String> {
    let mut rows = Vec::new();
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let defaults: Vec<String> = a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let default = if defaults.is_empty() { "—".to_owned() } else { format!("`{}`", defaults.join(",")) };
        let env = a.get_env().map_or("—".to_owned(), |e| format!("`{}`", e.to_string_lossy()));
        let mut help = a.get_help().map(|h| h.to_string()).unwrap_or_default().replace('|', "\\|");
        let values: Vec<String> = a.get_possible_values().iter().map(|v| format!("`{}`", v.get_name())).collect();
        if !values.is_empty() && values != ["`true`", "`false`"] {
            help = format!("{help}: {}", values.join(", "));
        }
        rows.push(format!("| `--{long}` | {default} | {env} | {help} |"));
    }
    rows
}

fn documented_rows(doc: &str, marker: &str) -> Vec<String> {
    let begin = format!("<!-- flags:{marker}:begin -->");
    let end = format!("<!-- flags:{marker}:end -->");
    let section = doc
        .split(begin.as_str())
        .nth(1)
        .and_then(|t| t.split(end.as_str()).next())
        .unwrap_or_else(|| panic!("docs/operations.md lacks {begin} … {end}"));
    section.lines().filter(|l| l.starts_with("| `--")).map(str::to_owned).collect()
}

#[test]
fn every_flag_is_documented_in_operations_md() {
    use clap::Args;
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let mut stale = String::new();
    for (marker, cmd) in [
        ("run", epslice::cli::RunArgs::augment_args(clap::Command::new("run"))),
        ("webhook", epslice::webhook::WebhookArgs::augment_args(clap::Command::new("webhook"))),
    ] {
        let want = flag_rows(cmd);
        let got = documented_rows(&doc, marker);
        if want != got {
            stale += &format!(
                "\nthe `epslice {marker}` flag table of docs/operations.md is out of date; replace it with:\n\n\
                 | Flag | Default | Env | Description |\n| --- | --- | --- | --- |\n{}\n",
                want.join("\n")
            );
        }
    }
    assert!(stale.is_empty(), "{stale}");
}
