//! Status of `ServiceEnvPolicy` objects: a pure function of the policy and the namespaces' labels,
//! and a small controller that server-side-applies it (field manager `epslice`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};

use super::EXPORT_LABEL;
use super::decide::{is_exported, validate};
use super::types::{ServiceEnvPolicy, ServiceEnvPolicyStatus};
use crate::runtime::cache::Cache;

/// The longest one status write may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Labels = BTreeMap<String, String>;

/// Condition type: the spec can be applied.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: every namespace in `spec.namespaces` carries the export label.
pub const CONDITION_EXPORTED: &str = "NamespacesExported";

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
    old: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = old
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status epslice wants on `policy`. `namespace_labels` looks up a namespace's labels.
pub fn desired_status(
    policy: &ServiceEnvPolicy,
    namespace_labels: impl Fn(&str) -> Option<Labels>,
    now: &Time,
) -> ServiceEnvPolicyStatus {
    let generation = policy.metadata.generation;
    let old = policy.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let problems = validate(policy);
    let valid = if problems.is_empty() {
        condition(
            CONDITION_VALID,
            true,
            "Valid",
            "the policy is applied to matching pods".to_owned(),
            generation,
            now,
            old,
        )
    } else {
        condition(CONDITION_VALID, false, "InvalidSpec", problems.join("; "), generation, now, old)
    };
    let missing: Vec<&str> = policy
        .spec
        .namespaces
        .iter()
        .filter(|ns| !is_exported(namespace_labels(ns).as_ref()))
        .map(String::as_str)
        .collect();
    let exported = if policy.spec.namespaces.is_empty() {
        condition(
            CONDITION_EXPORTED,
            true,
            "NoNamespaces",
            "no other namespaces listed".to_owned(),
            generation,
            now,
            old,
        )
    } else if missing.is_empty() {
        condition(
            CONDITION_EXPORTED,
            true,
            "AllExported",
            "every listed namespace exports its Services".to_owned(),
            generation,
            now,
            old,
        )
    } else {
        let msg = format!("ignored until labelled {EXPORT_LABEL}=true: {}", missing.join(", "));
        condition(CONDITION_EXPORTED, false, "NotExported", msg, generation, now, old)
    };
    ServiceEnvPolicyStatus { observed_generation: generation, conditions: vec![valid, exported] }
}

/// Keeps every cached policy's status current: on `trigger` (cache changes) and every minute,
/// until `stop` turns true. Writes only what differs, with server-side apply.
pub async fn run_status_controller(
    client: kube::Client,
    field_manager: String,
    policies: Cache<ServiceEnvPolicy>,
    namespaces: Cache<Namespace>,
    trigger: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        _ = async { policies.wait_synced().await; namespaces.wait_synced().await } => {}
        _ = crate::webhook::stopped(&mut stop) => return,
    }
    let params = PatchParams::apply(&field_manager).force();
    loop {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for p in policies.store.state() {
            let (Some(ns), Some(name)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) else {
                continue;
            };
            let want = desired_status(&p, |n| namespaces.get(None, n).and_then(|o| o.metadata.labels.clone()), &now);
            if p.status.as_ref() == Some(&want) {
                continue;
            }
            let api: Api<ServiceEnvPolicy> = Api::namespaced(client.clone(), ns);
            let body = serde_json::json!({
                "apiVersion": ServiceEnvPolicy::api_version(&()),
                "kind": ServiceEnvPolicy::kind(&()),
                "status": want,
            });
            // kube's client has no read timeout: bound the call, or one dead connection stops
            // every later status write.
            let patch = Patch::Apply(&body);
            let result = match tokio::time::timeout(CALL_TIMEOUT, api.patch_status(name, &params, &patch)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            };
            match result {
                Ok(_) => tracing::debug!(namespace = ns, name, "policy status written"),
                Err(e) => {
                    tracing::warn!(namespace = ns, name, error = %e, "writing policy status failed; retrying later")
                }
            }
        }
        tokio::select! {
            _ = trigger.notified() => tokio::time::sleep(Duration::from_millis(200)).await,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = crate::webhook::stopped(&mut stop) => return,
        }
    }
}
