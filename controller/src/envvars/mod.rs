//! Service-discovery environment variables, in the kubelet's format.
//!
//! This is the pure core of the service-env webhook: plain functions of snapshots, no client,
//! no I/O, no clock. The shell hands in the Services it has cached and the raw request body, and
//! gets back bytes to send.
//!
//! Layers, bottom up:
//!
//! * [`from_services`]: the kubelet's `envvars.FromServices`, variable for variable.
//! * [`visible_services`]: the kubelet's `getServiceEnvVarMap` selection (pod namespace, the
//!   `default/kubernetes` master Service, `enableServiceLinks`).
//! * [`select_services`]: policy helper for `mode: Selected` (names and/or a label matcher).
//! * [`generate`]: deterministic order plus collision resolution, with warnings.
//! * [`plan_patch`] / [`mutate`]: the JSON Patch for a Pod, idempotent, marker annotation, size cap.
//! * [`review`]: `admission.k8s.io/v1` AdmissionReview bytes in, HTTP status and bytes out.
//!
//! # Ordering
//!
//! The kubelet has no defined order: it collects the visible Services in a Go map, folds their
//! variables into another map, and appends that map (iteration order random) after the user's
//! variables; its own tests compare sorted-by-name sets. We fix an order: Services sorted by
//! name (then namespace), and inside one Service the `FromServices` emission order
//! (`_SERVICE_HOST`, `_SERVICE_PORT`, `_SERVICE_PORT_<NAME>`…, `_PORT`, then per port
//! `_PORT_<n>_<P>`, `_PROTO`, `_PORT`, `_ADDR`, ports in spec order).
//!
//! # Collisions
//!
//! Two Services can produce the same variable name (`redis` and `redis-service` both produce
//! `REDIS_SERVICE_PORT`). The kubelet keeps a random one. We keep the value of the Service that
//! comes first in the order above and drop the others, with one warning per dropped variable. For
//! valid (DNS-1035) Service names, colliding prefixes are always a prefix of one another, so the
//! winner is the Service with the shorter name: `redis` keeps `REDIS_SERVICE_PORT=6379`, the
//! number, which is what programs reading that name expect.
//!
//! # Deliberate differences from the kubelet
//!
//! * Deterministic order and collision winner (above).
//! * A Service with a set ClusterIP but no ports is skipped with a warning (the kubelet would
//!   index out of range; validation prevents it).
//! * A Service whose name or port names would not give `[A-Z_][A-Z0-9_]*` variable names is
//!   skipped with a warning (validation prevents it too; an invalid name would make the API
//!   server reject the mutated pod).
//! * A namespace's own `kubernetes` Service shadows the API server's variables, as in the
//!   kubelet, except when we also switch the kubelet's links off: then it is not injected
//!   (warning), because the kubelet would still add the real master's variables and the two
//!   sets would mix (`KUBERNETES_PORT_443_TCP` next to `KUBERNETES_PORT_8443_TCP`).
//! * Values are frozen at admission; the variables go *before* the user's `env` entries, so they
//!   beat `envFrom` keys of the same name (the kubelet lets `envFrom` win). A warning says so.
//! * An `env` entry counts as declared whatever its source: an optional `configMapKeyRef` or
//!   `secretKeyRef` of a Service variable's name keeps that variable out, where the kubelet would
//!   use the Service's value if the ConfigMap, Secret or key is missing at container start
//!   (unknowable at admission; the pod's author declared the name).
//! * The API server's names (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT[_<name>]`,
//!   `KUBERNETES_PORT[_<n>_<P>…]`: [`is_master_var`]) come only from a `kubernetes` Service, and
//!   only `default/kubernetes` or the pod namespace's own is ever visible. Another Service's
//!   variable of such a name (`kubernetes-service` makes `KUBERNETES_SERVICE_PORT=tcp://…`) is
//!   dropped with a warning, even when the master is not among the candidates (`Selected`): an
//!   injected `env` entry beats the kubelet's own value, so it would redirect the pod's API
//!   client. The kubelet has the same collision and picks a random winner.

mod generate;
mod patch;
mod review;

#[cfg(test)]
mod tests;

pub use generate::{
    Collision, Generated, Mode, Reserved, Selection, ServiceEnvVar, from_services, generate, is_master_var,
    is_service_ip_set, select_named, select_services, visible_services, visible_services_in,
};
pub use patch::{
    DEFAULT_MAX_ADDED_BYTES, GenerationMemo, MARKER_ANNOTATION, Marker, Mutation, PatchOptions, PodObject, Prepared,
    mutate, mutate_object, mutate_object_memo, plan_patch, plan_patch_object, plan_prepared, vars_hash,
};
pub(crate) use review::base64 as base64_encode;
pub use review::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WARNINGS, Decision, Outcome, PodRequest, ReviewConfig, Reviewed, review,
    review_memo,
};

/// Kubernetes guidance: keep each admission warning to 120 characters or fewer.
pub const MAX_WARNING_CHARS: usize = 120;

/// Builds a warning, cut to [`MAX_WARNING_CHARS`] characters (with a trailing `...` when cut).
pub(crate) fn warning(text: impl Into<String>) -> String {
    let text: String = text.into();
    if text.chars().count() <= MAX_WARNING_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_WARNING_CHARS - 3).collect();
    cut.push_str("...");
    cut
}
