//! Services → variables: the kubelet's format and selection rules, plus our ordering and
//! collision handling.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;

use super::warning;

/// The namespace of the master Service.
const MASTER_NAMESPACE: &str = "default";
/// The master Service's name (the kubelet's `masterServices` set has only this one).
const MASTER_NAME: &str = "kubernetes";

/// One variable, as a name/value pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceEnvVar {
    pub name: String,
    pub value: String,
}

impl ServiceEnvVar {
    fn new(name: String, value: String) -> Self {
        Self { name, value }
    }
}

/// Injection policy mode, as a policy object would carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every Service the kubelet would link.
    All,
    /// Only Services the policy picked (see [`select_services`]).
    Selected,
    /// No injection.
    Off,
}

impl Mode {
    /// Lower-case token used in the marker annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Selected => "selected",
            Mode::Off => "off",
        }
    }
}

/// Services picked for a pod, in name order, with warnings about the pick.
#[derive(Clone, Debug, Default)]
pub struct Selection<'a> {
    pub services: Vec<&'a Service>,
    pub warnings: Vec<String>,
}

/// Result of [`generate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    /// Variables in injection order, names unique.
    pub vars: Vec<ServiceEnvVar>,
    /// Variables dropped because an earlier Service already produced the name.
    pub collisions: Vec<Collision>,
    /// Variables dropped because their name is one of the API server's (see [`is_master_var`])
    /// and the Service producing them is not the `kubernetes` one.
    pub reserved: Vec<Reserved>,
    /// One per collision, per reserved name dropped and per skipped Service, each at most 120
    /// characters.
    pub warnings: Vec<String>,
}

/// A variable dropped because only the `kubernetes` Service may set its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub name: String,
    /// `namespace/name` of the Service whose variable is dropped.
    pub dropped: String,
}

/// A variable name produced by two Services; the first (in name order) keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collision {
    pub name: String,
    /// `namespace/name` of the Service whose value is kept.
    pub kept: String,
    /// `namespace/name` of the Service whose value is dropped.
    pub dropped: String,
}

fn svc_name(s: &Service) -> &str {
    s.metadata.name.as_deref().unwrap_or("")
}

fn svc_namespace(s: &Service) -> &str {
    s.metadata.namespace.as_deref().unwrap_or("")
}

fn cluster_ip(s: &Service) -> &str {
    s.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref()).unwrap_or("")
}

/// The kubelet's `IsServiceIPSet`: `spec.clusterIP` is neither empty nor `None`. Headless and
/// ExternalName Services fail it and get no variables.
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = cluster_ip(service);
    !ip.is_empty() && ip != "None"
}

/// The kubelet's `makeEnvVariableName`: `-` → `_`, then upper case.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// Whether `name` is one the master Service (a Service named `kubernetes`) can produce:
/// `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, `KUBERNETES_SERVICE_PORT_<port name>`,
/// `KUBERNETES_PORT` and `KUBERNETES_PORT_<number>_<PROTOCOL>[_PROTO|_PORT|_ADDR]`.
///
/// Other Services can produce such names too (`kubernetes-service` gives
/// `KUBERNETES_SERVICE_PORT=tcp://…` as its link variable, `kubernetes-port-443-tcp` gives
/// `KUBERNETES_PORT_443_TCP_PORT`). Programs read these names to find the API server, and an
/// injected `env` entry beats the kubelet's own value, so [`generate`] keeps them for the
/// `kubernetes` Service alone.
pub fn is_master_var(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("KUBERNETES_") else { return false };
    if matches!(rest, "SERVICE_HOST" | "SERVICE_PORT" | "PORT") || rest.starts_with("SERVICE_PORT_") {
        return true;
    }
    // `PORT_<number>_<PROTOCOL>` and its `_PROTO`, `_PORT`, `_ADDR` companions.
    let Some(rest) = rest.strip_prefix("PORT_") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = rest[digits..].strip_prefix('_').filter(|_| digits > 0) else { return false };
    let letters = rest.bytes().take_while(u8::is_ascii_uppercase).count();
    letters > 0 && matches!(&rest[letters..], "" | "_PROTO" | "_PORT" | "_ADDR")
}

/// Go's `net.JoinHostPort`: brackets when the host contains a colon (IPv6).
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Variables for one Service, in the kubelet's order. `None` if the ClusterIP is unset or the
/// Service has no ports.
fn service_vars(service: &Service) -> Option<Vec<ServiceEnvVar>> {
    if !is_service_ip_set(service) {
        return None;
    }
    let ip = cluster_ip(service);
    let ports = service.spec.as_ref()?.ports.as_deref()?;
    let first = ports.first()?;
    let prefix = env_name(svc_name(service));

    let mut out = Vec::with_capacity(3 + 5 * ports.len());
    out.push(ServiceEnvVar::new(format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push(ServiceEnvVar::new(port_var.clone(), first.port.to_string()));
    for p in ports {
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push(ServiceEnvVar::new(format!("{port_var}_{}", env_name(name)), p.port.to_string()));
        }
    }
    // Docker-link style variables.
    for (i, p) in ports.iter().enumerate() {
        let protocol = p.protocol.as_deref().filter(|proto| !proto.is_empty()).unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{}", join_host_port(ip, p.port));
        if i == 0 {
            out.push(ServiceEnvVar::new(format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
        out.push(ServiceEnvVar::new(pp.clone(), url));
        out.push(ServiceEnvVar::new(format!("{pp}_PROTO"), lower));
        out.push(ServiceEnvVar::new(format!("{pp}_PORT"), p.port.to_string()));
        out.push(ServiceEnvVar::new(format!("{pp}_ADDR"), ip.to_owned()));
    }
    Some(out)
}

/// The kubelet's `FromServices`: variables for each Service in the given order, skipping
/// Services whose ClusterIP is unset. No sorting, no de-duplication (see [`generate`]). A Service
/// with no ports is skipped (the kubelet would panic).
pub fn from_services<S: Borrow<Service>>(services: &[S]) -> Vec<ServiceEnvVar> {
    services.iter().filter_map(|s| service_vars(s.borrow())).flatten().collect()
}

/// The kubelet's `getServiceEnvVarMap` selection, applied to whatever list the caller passes
/// (typically: the policy-filtered Services of the pod's namespace plus `default/kubernetes`).
///
/// * Services whose ClusterIP is unset are ignored.
/// * `default/kubernetes` is kept always, even when `enable_service_links` is false.
/// * Services in `pod_namespace` are kept only when `enable_service_links` is true, and win over
///   the master Service on a name clash (so a namespace's own `kubernetes` Service shadows the API
///   server's variables, as with the kubelet; a warning says so). Among duplicates of one name
///   in the pod's namespace the last one wins, as in the kubelet's map.
/// * Nothing else (no other namespaces; see [`visible_services_in`] for policy exports).
///
/// The result is sorted by name.
pub fn visible_services<'a, S, I>(pod_namespace: &str, enable_service_links: bool, services: I) -> Selection<'a>
where
    S: Borrow<Service> + 'a,
    I: IntoIterator<Item = &'a S>,
{
    visible_services_in(pod_namespace, &[], enable_service_links, services)
}

/// [`visible_services`] plus Services of `extra_namespaces` (a policy's cross-namespace export;
/// not a kubelet feature). Extra-namespace Services follow the same `enable_service_links` rule as
/// the pod's own, but rank below both the pod's namespace and the master Service on a name clash
/// (so they can never shadow a same-named local Service); between two extra namespaces the one
/// named first in `extra_namespaces` wins. Each hidden Service gives a warning.
///
/// An extra namespace's `kubernetes` Service is never visible (warning), master Service among the
/// candidates or not: as with the kubelet, `KUBERNETES_*` come only from `default/kubernetes` or
/// the pod namespace's own `kubernetes`.
pub fn visible_services_in<'a, S, I>(
    pod_namespace: &str,
    extra_namespaces: &[String],
    enable_service_links: bool,
    services: I,
) -> Selection<'a>
where
    S: Borrow<Service> + 'a,
    I: IntoIterator<Item = &'a S>,
{
    // Rank: pod namespace 3, master 2, extra namespaces 1 (minus their position, as a tiebreak).
    let rank = |s: &Service| -> Option<(u8, usize)> {
        let ns = svc_namespace(s);
        if ns == MASTER_NAMESPACE && svc_name(s) == MASTER_NAME {
            // The master Service also counts as a local Service for pods in `default`.
            return Some(if ns == pod_namespace && enable_service_links { (3, 0) } else { (2, 0) });
        }
        if !enable_service_links {
            return None;
        }
        if ns == pod_namespace {
            return Some((3, 0));
        }
        let pos = extra_namespaces.iter().position(|e| e == ns)?;
        Some((1, usize::MAX - pos))
    };
    let mut by_name: BTreeMap<&'a str, ((u8, usize), &'a Service)> = BTreeMap::new();
    let mut hidden: Vec<(&'a Service, &'a Service)> = Vec::new();
    let mut foreign_masters: Vec<&'a Service> = Vec::new();
    for s in services {
        let s: &'a Service = s.borrow();
        if !is_service_ip_set(s) {
            continue;
        }
        let Some(r) = rank(s) else { continue };
        let name = svc_name(s);
        if r.0 == 1 && name == MASTER_NAME {
            foreign_masters.push(s);
            continue;
        }
        match by_name.get(name) {
            // Same rank: the last one wins (the kubelet's map), except between extra namespaces,
            // whose position is part of the rank.
            Some((have, kept)) if *have > r => {
                if r.0 == 1 {
                    hidden.push((s, kept));
                }
            }
            Some((have, kept)) => {
                if have.0 == 1 && !std::ptr::eq(*kept, s) {
                    hidden.push((kept, s));
                }
                by_name.insert(name, (r, s));
            }
            None => {
                by_name.insert(name, (r, s));
            }
        }
    }
    let mut warnings = Vec::new();
    for s in foreign_masters {
        warnings.push(warning(format!(
            "service {} not injected: only {MASTER_NAMESPACE}/{MASTER_NAME} or the pod's own sets KUBERNETES_*",
            display(s)
        )));
    }
    for (gone, kept) in hidden {
        warnings.push(warning(format!("service {} hidden by {} of the same name", display(gone), display(kept))));
    }
    if let Some((_, k)) = by_name.get(MASTER_NAME)
        && svc_namespace(k) != MASTER_NAMESPACE
    {
        warnings.push(warning(format!(
            "service {}/{MASTER_NAME} shadows the API server's KUBERNETES_* variables (as the kubelet does)",
            svc_namespace(k)
        )));
    }
    Selection { services: by_name.into_values().map(|(_, s)| s).collect(), warnings }
}

/// Whether `service`, a candidate for a pod of `pod_namespace`, is visible ([`visible_services_in`])
/// only with `enableServiceLinks`: a Service of the pod's namespace or of an extra namespace,
/// other than the master Service.
pub(crate) fn needs_links(service: &Service, pod_namespace: &str, extra_namespaces: &[String]) -> bool {
    let (ns, name) = (svc_namespace(service), svc_name(service));
    is_service_ip_set(service)
        && !(ns == MASTER_NAMESPACE && name == MASTER_NAME)
        && (ns == pod_namespace || (name != MASTER_NAME && extra_namespaces.iter().any(|e| e == ns)))
}

/// Whether `service` is a namespace's own `kubernetes` Service that would shadow the master
/// Service for pods in `pod_namespace`.
pub(crate) fn shadows_master(service: &Service, pod_namespace: &str) -> bool {
    pod_namespace != MASTER_NAMESPACE
        && svc_namespace(service) == pod_namespace
        && svc_name(service) == MASTER_NAME
        && is_service_ip_set(service)
}

/// Policy helper for `mode: Selected`: the Services of one namespace that are named in `names`
/// or accepted by `label_selector_match`, sorted by name. Warns about listed names that do not
/// exist or have no ClusterIP (headless, ExternalName), since those produce no variables.
pub fn select_services<'a, S: Borrow<Service>>(
    all_in_ns: &'a [S],
    names: &[String],
    label_selector_match: impl Fn(&Service) -> bool,
) -> Selection<'a> {
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let mut services: Vec<&'a Service> = Vec::new();
    let mut warnings = Vec::new();
    for s in all_in_ns {
        let s: &'a Service = s.borrow();
        let name = svc_name(s);
        let listed = wanted.contains(name);
        if listed {
            found.insert(name);
            if !is_service_ip_set(s) {
                warnings.push(warning(format!("service {name} is headless or ExternalName: it has no env vars")));
            }
        }
        if listed || label_selector_match(s) {
            services.push(s);
        }
    }
    for missing in wanted.difference(&found) {
        warnings.push(warning(format!("service {missing} not found: no env vars for it")));
    }
    services.sort_by(|a, b| (svc_name(a), svc_namespace(a)).cmp(&(svc_name(b), svc_namespace(b))));
    Selection { services, warnings }
}

/// [`select_services`] for a pick by names only, through `lookup` (name → Service) instead of a
/// scan of the namespace: the same Services, sorted by name, and the same warnings in the same
/// order (headless or ExternalName ones first, then missing ones, each in name order).
pub fn select_named<S: Borrow<Service>>(names: &[String], lookup: impl Fn(&str) -> Option<S>) -> (Vec<S>, Vec<String>) {
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let mut missing = Vec::new();
    for name in wanted {
        match lookup(name) {
            Some(s) => {
                if !is_service_ip_set(s.borrow()) {
                    warnings.push(warning(format!("service {name} is headless or ExternalName: it has no env vars")));
                }
                found.push(s);
            }
            None => missing.push(name),
        }
    }
    for name in missing {
        warnings.push(warning(format!("service {name} not found: no env vars for it")));
    }
    found.sort_by(|a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        (svc_name(a), svc_namespace(a)).cmp(&(svc_name(b), svc_namespace(b)))
    });
    (found, warnings)
}

/// `[A-Z_][A-Z0-9_]*`: every name the kubelet format yields for valid Services.
fn is_plain_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn display(s: &Service) -> String {
    format!("{}/{}", svc_namespace(s), svc_name(s))
}

/// Variables for the given (already visible) Services, in our deterministic order, with name
/// collisions resolved: Services are sorted by (name, namespace), and the first Service to
/// produce a name keeps it. Every dropped variable gives a [`Collision`] and a warning. Services
/// without a ClusterIP are ignored silently (as in the kubelet); Services without ports or with
/// names that cannot form plain variable names are skipped with a warning.
///
/// Names of the API server's variables ([`is_master_var`]) are kept only from a Service named
/// `kubernetes`; from any other Service they are dropped, each with a [`Reserved`] and a warning,
/// whether or not the `kubernetes` Service is among `services` (a `Selected` pick does not include
/// it: the kubelet adds it, and an injected `env` entry of the same name would beat it). Which
/// `kubernetes` Service may be among `services` is [`visible_services_in`]'s business: only
/// `default/kubernetes` or the pod namespace's own.
pub fn generate<S: Borrow<Service>>(services: &[S]) -> Generated {
    let mut sorted: Vec<&Service> = services.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| (svc_name(a), svc_namespace(a)).cmp(&(svc_name(b), svc_namespace(b))));

    let mut out = Generated::default();
    let mut owner: HashMap<String, &Service, foldhash::fast::RandomState> = HashMap::default();
    for s in sorted {
        if !is_service_ip_set(s) {
            continue;
        }
        let Some(vars) = service_vars(s) else {
            out.warnings.push(warning(format!("service {} has no ports: no env vars for it", display(s))));
            continue;
        };
        if let Some(bad) = vars.iter().find(|v| !is_plain_env_name(&v.name)) {
            out.warnings.push(warning(format!("service {} skipped: invalid env var name {}", display(s), bad.name)));
            continue;
        }
        let is_master = svc_name(s) == MASTER_NAME;
        for v in vars {
            match owner.get(&v.name) {
                Some(first) => {
                    let collision = Collision { name: v.name, kept: display(first), dropped: display(s) };
                    out.warnings.push(warning(format!(
                        "env {} of service {} dropped: service {} already sets it",
                        collision.name, collision.dropped, collision.kept
                    )));
                    out.collisions.push(collision);
                }
                None if !is_master && is_master_var(&v.name) => {
                    let reserved = Reserved { name: v.name, dropped: display(s) };
                    out.warnings.push(warning(format!(
                        "env {} of service {} dropped: reserved for the API server",
                        reserved.name, reserved.dropped
                    )));
                    out.reserved.push(reserved);
                }
                None => {
                    owner.insert(v.name.clone(), s);
                    out.vars.push(v);
                }
            }
        }
    }
    out
}
