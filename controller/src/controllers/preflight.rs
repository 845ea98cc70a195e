//! Start-up permission check of `epslice run`: every API permission the enabled controllers need
//! is asked of the API server with a `SelfSubjectAccessReview` (authorization.k8s.io/v1) before
//! anything starts, and a missing one stops the process with one line per permission
//! (`missing permission: list pods (cluster-wide)`) instead of watches that retry forever and
//! writes that fail with 403 one Service at a time.
//!
//! [`required`] is the pure part (options → permissions) and the list documented in
//! docs/operations.md#rbac; [`check`] asks the API server.

use std::fmt;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use super::{ControllerName, Options};

/// One permission: `verb` on `resource` of API group `group`, in `namespace` (`None`: in every
/// namespace, or a cluster-scoped resource), on the object `name` only (`None`: any object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// The API verb (`list`, `watch`, `create`, `update`, `patch`, `delete`, `get`).
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource (plural).
    pub resource: &'static str,
    /// The namespace; `None` for all namespaces or a cluster-scoped resource.
    pub namespace: Option<String>,
    /// A single object's name.
    pub name: Option<String>,
}

impl Permission {
    fn new(verb: &'static str, group: &'static str, resource: &'static str, namespace: Option<&str>) -> Self {
        Permission { verb, group, resource, namespace: namespace.map(str::to_owned), name: None }
    }

    /// The resource as kubectl spells it: `pods`, `endpointslices.discovery.k8s.io`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() { self.resource.to_owned() } else { format!("{}.{}", self.resource, self.group) }
    }
}

impl fmt::Display for Permission {
    /// `list pods (cluster-wide)`, `patch leases.coordination.k8s.io "epslice" in namespace kube-system`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.qualified_resource())?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

/// The permissions `epslice run` needs with these options.
///
/// * The shared watches (pods, Services, Endpoints, EndpointSlices in `--namespace` or all
///   namespaces; Nodes cluster-wide) run whatever controllers are enabled: `list` and `watch`.
/// * EndpointSlice and mirroring controllers write slices: `create`, `get` (the slice holding a
///   name after a create answered 409), `update` (PUT with the resourceVersion read), `delete`.
/// * The Endpoints controller writes Endpoints: `create`, `update`, `delete`.
/// * Every controller records Events (kube-runtime's recorder: events.k8s.io, `create` and
///   `patch`).
/// * Leader election: `get` and `patch` on the Lease by name, `create` in its namespace
///   (kube-lease-manager creates it when missing).
///
/// Not checked: `update services/finalizers`, which only clusters with the
/// OwnerReferencesPermissionEnforcement admission plugin require, and `create endpoints/restricted`,
/// which only OpenShift's restricted-endpoints admission requires (deploy/base/rbac.yaml grants
/// both, as kube-controller-manager's roles do).
pub fn required(options: &Options) -> Vec<Permission> {
    let ns = options.namespace.as_deref();
    let mut out = Vec::new();
    for (group, resource) in [("", "pods"), ("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices")]
    {
        for verb in ["list", "watch"] {
            out.push(Permission::new(verb, group, resource, ns));
        }
    }
    for verb in ["list", "watch"] {
        out.push(Permission::new(verb, "", "nodes", None));
    }
    let enabled = |c: ControllerName| options.controllers.contains(&c);
    if enabled(ControllerName::EndpointSlice) || enabled(ControllerName::EndpointSliceMirroring) {
        for verb in ["create", "get", "update", "delete"] {
            out.push(Permission::new(verb, "discovery.k8s.io", "endpointslices", ns));
        }
    }
    if enabled(ControllerName::Endpoints) {
        for verb in ["create", "update", "delete"] {
            out.push(Permission::new(verb, "", "endpoints", ns));
        }
    }
    if !options.controllers.is_empty() {
        for verb in ["create", "patch"] {
            out.push(Permission::new(verb, "events.k8s.io", "events", ns));
        }
    }
    if let Some(le) = &options.leader_election {
        for verb in ["get", "patch"] {
            let mut p = Permission::new(verb, "coordination.k8s.io", "leases", Some(&le.namespace));
            p.name = Some(le.name.clone());
            out.push(p);
        }
        out.push(Permission::new("create", "coordination.k8s.io", "leases", Some(&le.namespace)));
    }
    out
}

/// The one-line-per-permission message for `missing` (empty input: `None`).
pub fn report(user: Option<&str>, missing: &[Permission]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut lines: Vec<String> = missing.iter().map(|p| format!("missing permission: {p}")).collect();
    lines.push(format!(
        "{} permission(s) missing{}: grant them (deploy/base/rbac.yaml; docs/operations.md#rbac) and restart",
        missing.len(),
        user.map(|u| format!(" for {u}")).unwrap_or_default()
    ));
    Some(lines.join("\n"))
}

fn review(p: &Permission) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(p.verb.to_owned()),
                group: Some(p.group.to_owned()),
                resource: Some(p.resource.to_owned()),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Asks the API server about every permission [`required`] lists. Returns an error naming each
/// missing one. When the check itself cannot run (the review API refused or unreachable), it
/// logs a warning and returns `Ok`: the controllers then start and report errors as they meet them.
pub async fn check(client: &kube::Client, options: &Options) -> anyhow::Result<()> {
    let wanted = required(options);
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answers = futures::future::join_all(wanted.iter().map(|p| {
        let api = api.clone();
        let r = review(p);
        async move { api.create(&PostParams::default(), &r).await }
    }))
    .await;
    let mut missing = Vec::new();
    for (p, answer) in wanted.iter().zip(answers) {
        match answer {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => missing.push(p.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check permissions with SelfSubjectAccessReview; starting anyway");
                return Ok(());
            }
        }
    }
    if missing.is_empty() {
        tracing::debug!(checked = wanted.len(), "all required permissions granted");
        return Ok(());
    }
    let user = whoami(client).await;
    match report(user.as_deref(), &missing) {
        Some(message) => Err(anyhow::Error::msg(message)),
        None => Ok(()),
    }
}

/// The authenticated user name (SelfSubjectReview), if the API server says.
async fn whoami(client: &kube::Client) -> Option<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let r = api.create(&PostParams::default(), &SelfSubjectReview::default()).await.ok()?;
    r.status?.user_info?.username
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::leader::LeaderElection;

    fn strings(v: &[Permission]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn all_controllers_cluster_wide_with_leader_election() {
        let options = Options {
            controllers: ControllerName::ALL.to_vec(),
            leader_election: Some(LeaderElection {
                namespace: "epslice-system".into(),
                name: "epslice".into(),
                identity: "a".into(),
                lease_duration: std::time::Duration::from_secs(15),
                grace: std::time::Duration::from_secs(5),
                renew_deadline: std::time::Duration::from_millis(12_500),
            }),
            ..Options::default()
        };
        assert_eq!(
            strings(&required(&options)),
            [
                "list pods (cluster-wide)",
                "watch pods (cluster-wide)",
                "list services (cluster-wide)",
                "watch services (cluster-wide)",
                "list endpoints (cluster-wide)",
                "watch endpoints (cluster-wide)",
                "list endpointslices.discovery.k8s.io (cluster-wide)",
                "watch endpointslices.discovery.k8s.io (cluster-wide)",
                "list nodes (cluster-wide)",
                "watch nodes (cluster-wide)",
                "create endpointslices.discovery.k8s.io (cluster-wide)",
                "get endpointslices.discovery.k8s.io (cluster-wide)",
                "update endpointslices.discovery.k8s.io (cluster-wide)",
                "delete endpointslices.discovery.k8s.io (cluster-wide)",
                "create endpoints (cluster-wide)",
                "update endpoints (cluster-wide)",
                "delete endpoints (cluster-wide)",
                "create events.events.k8s.io (cluster-wide)",
                "patch events.events.k8s.io (cluster-wide)",
                "get leases.coordination.k8s.io \"epslice\" in namespace epslice-system",
                "patch leases.coordination.k8s.io \"epslice\" in namespace epslice-system",
                "create leases.coordination.k8s.io in namespace epslice-system",
            ]
        );
    }

    #[test]
    fn one_namespace_and_only_the_endpoints_controller() {
        let options = Options {
            controllers: vec![ControllerName::Endpoints],
            namespace: Some("team-a".into()),
            leader_election: None,
            ..Options::default()
        };
        let got = strings(&required(&options));
        assert!(got.contains(&"list pods in namespace team-a".to_owned()), "{got:?}");
        // Nodes are cluster-scoped: needed cluster-wide even for one namespace.
        assert!(got.contains(&"watch nodes (cluster-wide)".to_owned()), "{got:?}");
        assert!(got.contains(&"create endpoints in namespace team-a".to_owned()), "{got:?}");
        // No slice writes without the EndpointSlice or mirroring controller, no Lease without election.
        assert!(!got.iter().any(|p| p.starts_with("create endpointslices")), "{got:?}");
        assert!(!got.iter().any(|p| p.starts_with("get endpointslices")), "{got:?}");
        // `get` only where the code reads one object: not on Endpoints, Pods, Services, Nodes.
        assert!(!got.iter().any(|p| p.starts_with("get ") && !p.contains("leases")), "{got:?}");
        assert!(!got.iter().any(|p| p.contains("leases")), "{got:?}");
        assert!(got.contains(&"create events.events.k8s.io in namespace team-a".to_owned()), "{got:?}");
    }

    #[test]
    fn mirroring_alone_writes_slices_and_no_controller_writes_nothing() {
        let mirroring = Options { controllers: vec![ControllerName::EndpointSliceMirroring], ..Options::default() };
        let got = strings(&required(&mirroring));
        assert!(got.contains(&"update endpointslices.discovery.k8s.io (cluster-wide)".to_owned()), "{got:?}");
        // After a create answered 409 the slice holding the name is read.
        assert!(got.contains(&"get endpointslices.discovery.k8s.io (cluster-wide)".to_owned()), "{got:?}");
        assert!(!got.iter().any(|p| p.starts_with("create endpoints ")), "{got:?}");
        let none = Options { controllers: vec![], ..Options::default() };
        let got = required(&none);
        assert!(got.iter().all(|p| p.verb == "list" || p.verb == "watch"), "{:?}", strings(&got));
    }

    #[test]
    fn report_has_one_line_per_missing_permission() {
        assert_eq!(report(None, &[]), None);
        let missing = [Permission::new("list", "", "pods", None), Permission::new("watch", "", "nodes", None)];
        let text = report(Some("system:serviceaccount:x:y"), &missing).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "missing permission: list pods (cluster-wide)");
        assert_eq!(lines[1], "missing permission: watch nodes (cluster-wide)");
        assert!(lines[2].starts_with("2 permission(s) missing for system:serviceaccount:x:y"), "{text}");
    }
}
