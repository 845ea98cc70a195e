//! The `ServiceEnvPolicy` custom resource (`epslice.io/v1alpha1`, namespaced).
// `printcolumn(type_ = "string")` twice is not a duplicate, whatever clippy says.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which Services a policy injects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PolicyMode {
    /// Every Service the kubelet would link (the pod's namespace and `default/kubernetes`), plus
    /// every Service of the exported `namespaces`.
    #[default]
    All,
    /// Only the Services picked by `services` (names and/or a label selector).
    Selected,
    /// No injection (and `enableServiceLinks` is left alone).
    Off,
}

impl PolicyMode {
    /// The core's mode.
    pub fn to_mode(self) -> crate::envvars::Mode {
        match self {
            PolicyMode::All => crate::envvars::Mode::All,
            PolicyMode::Selected => crate::envvars::Mode::Selected,
            PolicyMode::Off => crate::envvars::Mode::Off,
        }
    }
}

/// The Services a `Selected` policy picks: the union of `names` and `selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSelection {
    /// Service names: `name` for the pod's namespace, `namespace/name` for an exported namespace
    /// listed in `namespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 127),
            regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub names: Vec<String>,
    /// Services whose labels match, in the pod's namespace and in every exported namespace. An
    /// empty selector (`{}`) matches every Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Which pods get which Service environment variables.
///
/// A policy applies to the pods of its own namespace that `podSelector` matches. When several
/// policies match one pod, the most specific selector wins (most `matchLabels` entries plus
/// `matchExpressions`), then the policy name in ascending order; only the winner applies.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "epslice.io",
    version = "v1alpha1",
    kind = "ServiceEnvPolicy",
    namespaced,
    status = "ServiceEnvPolicyStatus",
    shortname = "sep",
    derive = "PartialEq",
    derive = "Default",
    doc = "Which pods of a namespace get which Service environment variables, injected at admission by the epslice webhook.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Selected' || (has(self.services) && ((has(self.services.names) && size(self.services.names) > 0) || has(self.services.selector)))").message("mode Selected needs services.names or services.selector"))]
pub struct ServiceEnvPolicySpec {
    /// Pods of this namespace the policy applies to. Absent or empty: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// `All`, `Selected` or `Off`.
    #[serde(default)]
    pub mode: PolicyMode,
    /// For `mode: Selected`: which Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceSelection>,
    /// Other namespaces whose Services are injected too. A namespace is only honoured while it
    /// carries the label `epslice.io/service-env-export: "true"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Vec<String>,
    /// Also set `spec.enableServiceLinks: false` on the pod, so the kubelet adds only the
    /// `KUBERNETES_*` variables itself. If the webhook is unavailable the pod keeps the default
    /// (`true`) and gets the kubelet's full set.
    #[serde(default)]
    pub disable_kubelet_service_links: bool,
}

/// Written by epslice's status controller (field manager `epslice`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEnvPolicyStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` (the spec can be applied) and `NamespacesExported` (every listed namespace
    /// carries the export label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
