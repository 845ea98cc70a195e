//! Which policy applies to a pod, and what it yields: a pure function of cached snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::types::{PolicyMode, ServiceEnvPolicy};
use super::{EXPORT_LABEL, NAMESPACE_MODE_LABEL};
use crate::envvars::{Decision, Mode, select_named, select_services};

type Labels = BTreeMap<String, String>;

/// Read access to the cached cluster state `decide` needs. Implemented by the webhook's
/// reflector-backed caches and by test fixtures.
pub trait ClusterView {
    /// Labels of a namespace; `None` if it is not (yet) known.
    fn namespace_labels(&self, namespace: &str) -> Option<Labels>;
    /// The policies of a namespace (any order).
    fn policies(&self, namespace: &str) -> Vec<Arc<ServiceEnvPolicy>>;
    /// The Services of a namespace (any order).
    fn services(&self, namespace: &str) -> Vec<Arc<Service>>;
    /// One Service by name. The default scans [`Self::services`]; an indexed view overrides it
    /// (a `Selected` policy naming a few Services then costs a few lookups, not a namespace scan).
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services(namespace).into_iter().find(|s| s.metadata.name.as_deref() == Some(name))
    }
}

/// What applies to pods that no policy matches, in namespaces without the
/// `epslice.io/service-env` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultMode {
    /// Inject nothing (the webhook is opt-in).
    Off,
    /// Inject the kubelet's set, frozen at admission.
    All,
}

/// Where a decision came from (a metrics label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The named policy of the pod's namespace.
    Policy(String),
    /// The namespace's `epslice.io/service-env` label.
    NamespaceLabel,
    /// The webhook's `--default-mode`.
    Default,
}

impl Source {
    /// `policy`, `namespace-label` or `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Policy(_) => "policy",
            Source::NamespaceLabel => "namespace-label",
            Source::Default => "default",
        }
    }
}

/// A matcher parsed from a `LabelSelector`, with its specificity.
#[derive(Clone, Debug)]
pub struct Matcher {
    selector: kube::core::Selector,
    /// `matchLabels` entries plus `matchExpressions`.
    pub specificity: usize,
}

impl Matcher {
    /// Parses a selector; `None` (absent) matches everything. Refuses what the API server would
    /// refuse in a built-in selector: unknown operators, `In`/`NotIn` without values,
    /// `Exists`/`DoesNotExist` with values.
    pub fn parse(selector: Option<&LabelSelector>) -> Result<Self, String> {
        let Some(sel) = selector else {
            return Ok(Self { selector: kube::core::Selector::default(), specificity: 0 });
        };
        for e in sel.match_expressions.iter().flatten() {
            let n = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if n == 0 => return Err(format!("{} {} needs values", e.key, e.operator)),
                "Exists" | "DoesNotExist" if n > 0 => {
                    return Err(format!("{} {} takes no values", e.key, e.operator));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                op => return Err(format!("{}: unknown operator {op:?}", e.key)),
            }
        }
        let specificity =
            sel.match_labels.as_ref().map_or(0, BTreeMap::len) + sel.match_expressions.as_ref().map_or(0, Vec::len);
        let selector = kube::core::Selector::try_from(sel.clone()).map_err(|e| e.to_string())?;
        Ok(Self { selector, specificity })
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &Labels) -> bool {
        use kube::core::SelectorExt;
        self.selector.matches(labels)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Problems that make a policy unusable (empty: valid). The schema and CEL rules refuse most of
/// these at write time; this also covers objects written before a schema change.
pub fn validate(policy: &ServiceEnvPolicy) -> Vec<String> {
    let spec = &policy.spec;
    let mut problems = Vec::new();
    if let Err(e) = Matcher::parse(spec.pod_selector.as_ref()) {
        problems.push(format!("podSelector: {e}"));
    }
    let services = spec.services.as_ref();
    if let Some(Err(e)) = services.and_then(|s| s.selector.as_ref()).map(|s| Matcher::parse(Some(s))) {
        problems.push(format!("services.selector: {e}"));
    }
    for ns in &spec.namespaces {
        if !is_dns_label(ns) {
            problems.push(format!("namespaces: {ns:?} is not a namespace name"));
        }
    }
    for name in services.map(|s| s.names.as_slice()).unwrap_or_default() {
        match name.split_once('/') {
            Some((ns, svc)) => {
                if !is_dns_label(ns) || !is_dns_label(svc) {
                    problems.push(format!("services.names: {name:?} is not namespace/name"));
                } else if !spec.namespaces.iter().any(|n| n == ns) {
                    problems.push(format!("services.names: {name:?}: namespace {ns} is not listed in namespaces"));
                }
            }
            None if !is_dns_label(name) => problems.push(format!("services.names: {name:?} is not a Service name")),
            None => {}
        }
    }
    if spec.mode == PolicyMode::Selected && services.is_none_or(|s| s.names.is_empty() && s.selector.is_none()) {
        problems.push("mode Selected needs services.names or services.selector".to_owned());
    }
    problems
}

fn name_of(p: &ServiceEnvPolicy) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// The policy that applies to a pod with `labels` among `policies` (of the pod's namespace), and
/// warnings about invalid or losing candidates. Precedence: valid policies whose `podSelector`
/// matches; most specific selector first; then name, ascending.
pub fn select_policy<'p>(
    policies: &'p [Arc<ServiceEnvPolicy>],
    labels: &Labels,
) -> (Option<&'p ServiceEnvPolicy>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut matching: Vec<(usize, &'p ServiceEnvPolicy)> = Vec::new();
    for p in policies {
        let Ok(m) = Matcher::parse(p.spec.pod_selector.as_ref()) else {
            warnings.push(format!("policy {} ignored: invalid podSelector", name_of(p)));
            continue;
        };
        if !m.matches(labels) {
            continue;
        }
        if !validate(p).is_empty() {
            warnings.push(format!("policy {} matches but is invalid: ignored (see its status)", name_of(p)));
            continue;
        }
        matching.push((m.specificity, p));
    }
    matching.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| name_of(a.1).cmp(name_of(b.1))));
    if matching.len() > 1 {
        let others: Vec<&str> = matching[1..].iter().map(|(_, p)| name_of(p)).collect();
        warnings.push(format!("policy {} applies; also matching: {}", name_of(matching[0].1), others.join(", ")));
    }
    (matching.first().map(|(_, p)| *p), warnings)
}

/// Whether `namespace` carries the export opt-in label.
pub fn is_exported(labels: Option<&Labels>) -> bool {
    labels.and_then(|l| l.get(EXPORT_LABEL)).is_some_and(|v| v == "true")
}

/// The decision for one pod of `namespace`: the policy (or namespace label, or default) that
/// applies, the candidate Services to hand to [`crate::envvars::review`], and warnings.
///
/// * `All`: every Service of the pod's namespace, `default/kubernetes`, and every Service of each
///   exported namespace.
/// * `Selected`: the Services named in `services.names` or matched by `services.selector` (in the
///   pod's namespace and each exported namespace); nothing else, not even `default/kubernetes`
///   (the kubelet adds `KUBERNETES_*` itself, links or not).
/// * `Off`: nothing; with `disableKubeletServiceLinks` it still switches the kubelet's links off
///   (an empty `Selected` injection, so the pod gets only `KUBERNETES_*`).
///
/// A namespace listed in `namespaces` is honoured only while it carries
/// `epslice.io/service-env-export: "true"`; otherwise it is skipped with a warning.
pub fn decide(
    namespace: &str,
    labels: &Labels,
    view: &(impl ClusterView + ?Sized),
    default: DefaultMode,
) -> (Decision<Arc<Service>>, Source) {
    let policies = view.policies(namespace);
    let (policy, mut warnings) = select_policy(&policies, labels);

    let Some(policy) = policy else {
        let ns_labels = view.namespace_labels(namespace);
        let (mode, source) = match ns_labels.as_ref().and_then(|l| l.get(NAMESPACE_MODE_LABEL)).map(String::as_str) {
            Some("all") => (DefaultMode::All, Source::NamespaceLabel),
            Some("off") => (DefaultMode::Off, Source::NamespaceLabel),
            Some(other) => {
                warnings.push(format!(
                    "namespace label {NAMESPACE_MODE_LABEL}={other} unknown (all, off): using the default"
                ));
                (default, Source::Default)
            }
            None => (default, Source::Default),
        };
        let mut decision = match mode {
            DefaultMode::Off => Decision::off(),
            DefaultMode::All => {
                let mut services = view.services(namespace);
                if namespace != "default" {
                    services.extend(
                        view.services("default")
                            .into_iter()
                            .filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
                    );
                }
                Decision { mode: Mode::All, services, ..Decision::off() }
            }
        };
        decision.warnings = warnings;
        return (decision, source);
    };

    let spec = &policy.spec;
    let source = Source::Policy(name_of(policy).to_owned());
    let mut exported: Vec<String> = Vec::new();
    for ns in &spec.namespaces {
        if ns == namespace || exported.contains(ns) {
            continue;
        }
        if is_exported(view.namespace_labels(ns).as_ref()) {
            exported.push(ns.clone());
        } else {
            warnings.push(format!("namespace {ns} not used: it lacks the label {EXPORT_LABEL}=true"));
        }
    }

    let mut decision = Decision::off();
    decision.disable_kubelet_service_links = Some(spec.disable_kubelet_service_links);
    decision.extra_namespaces = exported.clone();
    match spec.mode {
        PolicyMode::Off => {
            if spec.disable_kubelet_service_links {
                decision.mode = Mode::Selected;
            }
        }
        PolicyMode::All => {
            decision.mode = Mode::All;
            decision.services = view.services(namespace);
            if namespace != "default" {
                decision.services.extend(
                    view.services("default").into_iter().filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
                );
            }
            for ns in &exported {
                decision.services.extend(view.services(ns));
            }
        }
        PolicyMode::Selected => {
            decision.mode = Mode::Selected;
            let sel = spec.services.clone().unwrap_or_default();
            let matcher = match sel.selector.as_ref().map(|s| Matcher::parse(Some(s))) {
                Some(Ok(m)) => Some(m),
                _ => None,
            };
            let label_match = |s: &Service| {
                matcher.as_ref().is_some_and(|m| m.matches(s.metadata.labels.as_ref().unwrap_or(&Labels::new())))
            };
            let mut by_ns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            by_ns.entry(namespace).or_default();
            for ns in &exported {
                by_ns.entry(ns.as_str()).or_default();
            }
            for n in &sel.names {
                let (ns, name) = n.split_once('/').unwrap_or((namespace, n.as_str()));
                // A namespace not exported was warned about above.
                if let Some(v) = by_ns.get_mut(ns) {
                    v.push(name.to_owned());
                }
            }
            for (ns, names) in &by_ns {
                let prefix = if *ns == namespace { String::new() } else { format!("{ns}/") };
                let (chosen, picked_warnings) = if matcher.is_none() {
                    // Names only: look each up instead of scanning the namespace.
                    select_named(names, |n| view.service(ns, n))
                } else {
                    let in_ns = view.services(ns);
                    let picked = select_services(&in_ns, names, label_match);
                    let keep: std::collections::HashSet<*const Service> =
                        picked.services.iter().map(|s| std::ptr::from_ref(*s)).collect();
                    let chosen: Vec<Arc<Service>> =
                        in_ns.iter().filter(|a| keep.contains(&Arc::as_ptr(a))).cloned().collect();
                    (chosen, picked.warnings)
                };
                warnings.extend(
                    picked_warnings.into_iter().map(|w| w.replacen("service ", &format!("service {prefix}"), 1)),
                );
                decision.services.extend(chosen);
            }
        }
    }
    decision.warnings = warnings;
    (decision, source)
}
