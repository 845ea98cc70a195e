//! The comparison half of the differential test (`tests/differential.rs`), pure: EndpointSlices
//! of one Service written by two controllers (kube-controller-manager and epslice, each with its
//! own `endpointslice.kubernetes.io/managed-by`) are reduced to, per (address type, port set),
//! the **multiset of endpoints**, and compared; differences are rendered as a reproduction.
//!
//! Every field of an endpoint is compared (addresses, conditions, hostname, nodeName, zone,
//! targetRef, deprecatedTopology, hints). Ports are compared as a set (their order carries no
//! meaning, and upstream orders them by hash). `null` and `[]` lists are the same thing.
//!
//! One normalisation here, for Services with topology-aware hints (`topology-mode: Auto`) only: which
//! endpoint of a zone carries a hint *for another zone* (after upstream's redistribution) depends
//! on the order of endpoints within and across slices, which upstream takes from Go map order
//! and epslice makes deterministic (docs/behaviour.md, EndpointSlice table, rows "Packing" and
//! "Topology hints"). For those Services the endpoints are compared without hints, and the hints
//! are compared per address type as the multiset of (endpoint zone, hint) pairs: how many
//! endpoints of each zone are hinted to each zone, which is the same whatever the order. When
//! upstream's allocation could also have a *tie* between zones (broken by Go map order upstream,
//! alphabetically in epslice: same rows), see [`hint_ties_possible`], only whether each endpoint
//! has a hint is compared. The test's Nodes are chosen so that ties need ≥ 31 ready endpoints.
//! (The test normalises one more documented difference, for mirrored slices: see
//! [`app_protocol_port_in_several_subsets`].)
//!
//! Besides the endpoints, the slices' metadata is compared per (address type, port set)
//! ([`SliceMeta`]): labels without managed-by, annotations (the trigger time's presence, not its
//! value) and owner references.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use epslice::pod::CachedPod;
use epslice::podutil;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

/// `endpointslice.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// `kubernetes.io/service-name`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// `hints` of an endpoint: forZones, forNodes names.
pub type Hints = (Option<Vec<String>>, Option<Vec<String>>);

/// One endpoint with every field, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ep {
    /// `addresses`.
    pub addresses: Vec<String>,
    /// `conditions.ready`, `.serving`, `.terminating`.
    pub conditions: Option<(Option<bool>, Option<bool>, Option<bool>)>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `targetRef`: apiVersion, kind, namespace, name, uid, fieldPath, resourceVersion.
    pub target_ref: Option<[Option<String>; 7]>,
    /// `deprecatedTopology`.
    pub deprecated_topology: Option<Vec<(String, String)>>,
    /// `hints`: forZones, forNodes (each `None` when absent; `[]` counts as absent).
    pub hints: Option<Hints>,
}

impl Ep {
    /// The comparable form of an endpoint.
    pub fn of(e: &Endpoint) -> Self {
        let nonempty = |v: Option<Vec<String>>| v.filter(|v| !v.is_empty());
        Ep {
            addresses: e.addresses.clone(),
            conditions: e.conditions.as_ref().map(|c| (c.ready, c.serving, c.terminating)),
            hostname: e.hostname.clone(),
            node_name: e.node_name.clone(),
            zone: e.zone.clone(),
            target_ref: e.target_ref.as_ref().map(|r| {
                [
                    r.api_version.clone(),
                    r.kind.clone(),
                    r.namespace.clone(),
                    r.name.clone(),
                    r.uid.clone(),
                    r.field_path.clone(),
                    r.resource_version.clone(),
                ]
            }),
            deprecated_topology: e.deprecated_topology.as_ref().map(|m| m.clone().into_iter().collect()),
            hints: e.hints.as_ref().map(|h| {
                (
                    nonempty(h.for_zones.as_ref().map(|z| z.iter().map(|z| z.name.clone()).collect())),
                    nonempty(h.for_nodes.as_ref().map(|n| n.iter().map(|n| n.name.clone()).collect())),
                )
            }),
        }
    }

    /// One line: `addresses cond=RST node=… zone=… host=… ref=… hints=…`.
    pub fn render(&self) -> String {
        let b = |v: Option<bool>| match v {
            Some(true) => "T",
            Some(false) => "F",
            None => "-",
        };
        let mut s = self.addresses.join(",");
        match self.conditions {
            Some((r, sv, t)) => {
                let _ = write!(s, " ready={} serving={} terminating={}", b(r), b(sv), b(t));
            }
            None => s.push_str(" conditions=nil"),
        }
        let opt = |k: &str, v: &Option<String>| v.as_ref().map(|v| format!(" {k}={v}")).unwrap_or_default();
        s += &opt("node", &self.node_name);
        s += &opt("zone", &self.zone);
        s += &opt("hostname", &self.hostname);
        if let Some(r) = &self.target_ref {
            let f = |v: &Option<String>| v.clone().unwrap_or_default();
            let _ = write!(s, " ref={}/{}/{}/{}", f(&r[1]), f(&r[2]), f(&r[3]), f(&r[4]));
            if r[0].is_some() || r[5].is_some() || r[6].is_some() {
                let _ = write!(s, "(apiVersion={:?} fieldPath={:?} rv={:?})", r[0], r[5], r[6]);
            }
        }
        if let Some(t) = &self.deprecated_topology {
            let _ = write!(s, " deprecatedTopology={t:?}");
        }
        match &self.hints {
            None => {}
            Some((z, n)) => {
                s.push_str(" hints=");
                if let Some(z) = z {
                    let _ = write!(s, "zones:{}", z.join("+"));
                }
                if let Some(n) = n {
                    let _ = write!(s, "{}nodes:{}", if z.is_some() { "," } else { "" }, n.join("+"));
                }
                if z.is_none() && n.is_none() {
                    s.push_str("{}");
                }
            }
        }
        s
    }
}

/// (address type, port set) of a slice; ports as sorted `name:port/protocol[(appProtocol)]`.
pub type SliceKey = (String, Vec<String>);

/// A multiset.
pub type Multiset<T> = BTreeMap<T, usize>;

/// The key of a slice.
pub fn slice_key(s: &EndpointSlice) -> SliceKey {
    let mut ports: Vec<String> = s
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let mut t = format!(
                "{}:{}/{}",
                p.name.as_deref().map_or("<nil>", |n| if n.is_empty() { "\"\"" } else { n }),
                p.port.map_or("<nil>".to_string(), |p| p.to_string()),
                p.protocol.as_deref().unwrap_or("<nil>")
            );
            if let Some(a) = &p.app_protocol {
                let _ = write!(t, "({a})");
            }
            t
        })
        .collect();
    ports.sort();
    (s.address_type.clone(), ports)
}

/// Slices of `service` (same namespace, service-name label) managed by `managed_by`, not being
/// deleted.
pub fn slices_of<'a>(slices: &'a [EndpointSlice], service: &Service, managed_by: &str) -> Vec<&'a EndpointSlice> {
    slices_named(
        slices,
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default(),
        managed_by,
    )
}

/// Slices labelled with service name `name` in `namespace` (whether or not such a Service
/// exists), managed by `managed_by`, not being deleted.
pub fn slices_named<'a>(
    slices: &'a [EndpointSlice],
    namespace: &str,
    name: &str,
    managed_by: &str,
) -> Vec<&'a EndpointSlice> {
    slices
        .iter()
        .filter(|s| {
            let l = s.metadata.labels.as_ref();
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.deletion_timestamp.is_none()
                && l.and_then(|l| l.get(LABEL_SERVICE_NAME)).map(String::as_str) == Some(name)
                && l.and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str) == Some(managed_by)
        })
        .collect()
}

/// Endpoints per (address type, port set). A key with no endpoints (a placeholder, or an empty
/// slice) is present with an empty multiset.
pub fn group(slices: &[&EndpointSlice]) -> BTreeMap<SliceKey, Multiset<Ep>> {
    let mut out: BTreeMap<SliceKey, Multiset<Ep>> = BTreeMap::new();
    for s in slices {
        let set = out.entry(slice_key(s)).or_default();
        for e in s.endpoints.iter().flatten() {
            *set.entry(Ep::of(e)).or_default() += 1;
        }
    }
    out
}

/// An owner reference: apiVersion, kind, name, uid, controller, blockOwnerDeletion.
pub type Owner = (String, String, String, String, Option<bool>, Option<bool>);

/// The metadata of a slice that both controllers derive from the same source (the Service, or
/// the mirrored Endpoints), in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SliceMeta {
    /// Labels without managed-by (which differs by construction).
    pub labels: Vec<(String, String)>,
    /// Annotations; the value of the trigger-time annotation is masked (`…`): only its presence
    /// is compared (its value is the time of the change each controller's tracker saw).
    pub annotations: Vec<(String, String)>,
    /// Owner references: apiVersion, kind, name, uid, controller, blockOwnerDeletion (both
    /// controllers own their slices by the same Service or Endpoints, so all of it is equal).
    pub owners: Vec<Owner>,
}

/// `endpoints.kubernetes.io/last-change-trigger-time`.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

impl SliceMeta {
    /// The comparable metadata of a slice.
    pub fn of(s: &EndpointSlice) -> Self {
        let m = &s.metadata;
        let mut owners: Vec<_> = m
            .owner_references
            .iter()
            .flatten()
            .map(|o| {
                (
                    o.api_version.clone(),
                    o.kind.clone(),
                    o.name.clone(),
                    o.uid.clone(),
                    o.controller,
                    o.block_owner_deletion,
                )
            })
            .collect();
        owners.sort();
        SliceMeta {
            labels: m
                .labels
                .iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != LABEL_MANAGED_BY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: m
                .annotations
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), if k == ANNOTATION_TRIGGER_TIME { "…".to_string() } else { v.clone() }))
                .collect(),
            owners,
        }
    }
}

/// The distinct [`SliceMeta`] of the slices per (address type, port set) (a set: how many slices
/// a key is packed into is compared through the endpoints, not here).
pub fn meta_by_key(slices: &[&EndpointSlice]) -> BTreeMap<SliceKey, BTreeSet<SliceMeta>> {
    let mut out: BTreeMap<SliceKey, BTreeSet<SliceMeta>> = BTreeMap::new();
    for s in slices {
        out.entry(slice_key(s)).or_default().insert(SliceMeta::of(s));
    }
    out
}

/// [`meta_by_key`] results without the trigger-time annotation, for a topology-mode Auto Service
/// whose hints could not be allocated: upstream rewrites such a Service's slices on every sync,
/// each rewrite dropping the annotation, and epslice does not (docs/behaviour.md, "Hints that
/// cannot be allocated"), so whether kcm's last write carried it depends on when kcm synced.
pub fn without_trigger_time(metas: BTreeMap<SliceKey, BTreeSet<SliceMeta>>) -> BTreeMap<SliceKey, BTreeSet<SliceMeta>> {
    metas
        .into_iter()
        .map(|(k, set)| {
            let set = set
                .into_iter()
                .map(|mut m| {
                    m.annotations.retain(|(k, _)| k != ANNOTATION_TRIGGER_TIME);
                    m
                })
                .collect();
            (k, set)
        })
        .collect()
}

/// The differences between two [`meta_by_key`] results, one line per differing key.
pub fn diff_meta(
    left: &BTreeMap<SliceKey, BTreeSet<SliceMeta>>,
    right: &BTreeMap<SliceKey, BTreeSet<SliceMeta>>,
    left_name: &str,
    right_name: &str,
) -> Vec<String> {
    let keys: BTreeSet<&SliceKey> = left.keys().chain(right.keys()).collect();
    let w = left_name.len().max(right_name.len());
    keys.into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| {
            format!(
                "  slice metadata (labels without managed-by, annotations, ownerReferences) of {} ports=[{}]:\n    \
                 {left_name:w$}: {:?}\n    {right_name:w$}: {:?}",
                k.0,
                k.1.join(", "),
                left.get(k),
                right.get(k)
            )
        })
        .collect()
}

/// Whether the Service asks for topology-aware hints (upstream `hintsEnabled`).
pub fn topology_auto(service: &Service) -> bool {
    epslice::endpointslice::topology::hints_enabled(service.metadata.annotations.as_ref())
}

/// Whether upstream's hint allocation for `ready` ready endpoints can hit a tie between zones
/// (decided by Go map order upstream). `cpu_by_zone`: allocatable CPU per zone. Two zones tie
/// when their surpluses or deficits are equal, i.e. when `ready × (cpuᵢ − cpuⱼ) / total` is an
/// integer; with more than 3 zones, two giving and two receiving zones can also pair up in
/// map order.
pub fn hint_ties_possible(ready: usize, cpu_by_zone: &BTreeMap<String, u64>) -> bool {
    if cpu_by_zone.len() > 3 {
        return true;
    }
    let total: u64 = cpu_by_zone.values().sum();
    if total == 0 {
        return false;
    }
    let cpus: Vec<u64> = cpu_by_zone.values().copied().collect();
    cpus.iter()
        .enumerate()
        .any(|(i, a)| cpus[i + 1..].iter().any(|b| (ready as u64 * a.abs_diff(*b)).is_multiple_of(total)))
}

/// How hints are compared for a topology-mode Auto Service (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HintSummary {
    /// (endpoint zone, hint) pairs.
    Pairs(Multiset<(Option<String>, String)>),
    /// Ties possible: (endpoint zone, has a hint) pairs.
    Presence(Multiset<(Option<String>, bool)>),
}

fn hint_text(e: &Ep) -> String {
    match &e.hints {
        None => "no hints".to_string(),
        Some((zones, nodes)) => format!("forZones={zones:?} forNodes={nodes:?}"),
    }
}

/// Splits the hints off the endpoints of a topology-mode Auto Service: the endpoints without
/// hints, and per address type the hint summary.
pub fn split_hints(
    groups: BTreeMap<SliceKey, Multiset<Ep>>,
    cpu_by_zone: &BTreeMap<String, u64>,
) -> (BTreeMap<SliceKey, Multiset<Ep>>, BTreeMap<String, HintSummary>) {
    let mut stripped: BTreeMap<SliceKey, Multiset<Ep>> = BTreeMap::new();
    let mut by_type: BTreeMap<String, Vec<(Ep, usize)>> = BTreeMap::new();
    for (key, set) in groups {
        let out = stripped.entry(key.clone()).or_default();
        for (e, n) in set {
            by_type.entry(key.0.clone()).or_default().push((e.clone(), n));
            let mut e = e;
            e.hints = None;
            *out.entry(e).or_default() += n;
        }
    }
    let summaries = by_type
        .into_iter()
        .map(|(t, eps)| {
            let ready: usize =
                eps.iter().filter(|(e, _)| e.conditions.is_some_and(|c| c.0 == Some(true))).map(|x| x.1).sum();
            let summary = if hint_ties_possible(ready, cpu_by_zone) {
                let mut m = Multiset::new();
                for (e, n) in &eps {
                    *m.entry((e.zone.clone(), e.hints.is_some())).or_default() += n;
                }
                HintSummary::Presence(m)
            } else {
                let mut m = Multiset::new();
                for (e, n) in &eps {
                    *m.entry((e.zone.clone(), hint_text(e))).or_default() += n;
                }
                HintSummary::Pairs(m)
            };
            (t, summary)
        })
        .collect();
    (stripped, summaries)
}

/// The differences between two groupings, one block per differing key (only the differing
/// entries): `kcm` on the left, `epslice` on the right.
pub fn diff_groups(
    left: &BTreeMap<SliceKey, Multiset<Ep>>,
    right: &BTreeMap<SliceKey, Multiset<Ep>>,
    left_name: &str,
    right_name: &str,
) -> Vec<String> {
    let keys: BTreeSet<&SliceKey> = left.keys().chain(right.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (l, r) = (left.get(key), right.get(key));
        if l == r {
            continue;
        }
        let mut block = format!("  {} ports=[{}]", key.0, key.1.join(", "));
        match (l, r) {
            (None, _) => {
                let _ = write!(block, ": no {left_name} slice for this address type and port set");
            }
            (_, None) => {
                let _ = write!(block, ": no {right_name} slice for this address type and port set");
            }
            _ => {}
        }
        let empty = Multiset::new();
        let (l, r) = (l.unwrap_or(&empty), r.unwrap_or(&empty));
        let eps: BTreeSet<&Ep> = l.keys().chain(r.keys()).collect();
        let w = eps.iter().map(|e| e.render().len()).max().unwrap_or(0).max(left_name.len() + 4);
        let _ = write!(block, "\n    {:w$} | {right_name}", format!("{left_name}"));
        for e in eps {
            let (nl, nr) = (l.get(e).copied().unwrap_or(0), r.get(e).copied().unwrap_or(0));
            if nl == nr {
                continue;
            }
            let side = |n: usize| match n {
                0 => "-".to_string(),
                1 => e.render(),
                n => format!("{n}× {}", e.render()),
            };
            let _ = write!(block, "\n    {:w$} | {}", side(nl), side(nr));
        }
        out.push(block);
    }
    out
}

/// A one-line summary of a pod: name, labels, node, phase, readiness, IPs, deletion, hostname,
/// the ports of its containers and sidecars.
pub fn pod_summary(p: &CachedPod) -> String {
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into());
    let ips: Vec<&str> = status.pod_ips.iter().flatten().map(|i| &*i.ip).collect();
    let ports: Vec<String> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten().filter(|c| podutil::is_restartable_init_container(c)))
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            format!(
                "{}={}/{}",
                p.name.as_deref().unwrap_or(""),
                p.container_port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    let mut s = format!(
        "{} labels={:?} node={} phase={} ready={ready} ips=[{}]",
        p.metadata.name.as_deref().unwrap_or(""),
        p.labels.to_map(),
        spec.node_name.as_deref().unwrap_or(""),
        status.phase.as_deref().unwrap_or("-"),
        ips.join(",")
    );
    if p.metadata.deletion_timestamp.is_some() {
        s.push_str(" TERMINATING");
    }
    if let Some(h) = &spec.hostname {
        let _ = write!(s, " hostname={h} subdomain={}", spec.subdomain.as_deref().unwrap_or(""));
    }
    let _ = write!(s, " ports=[{}]", ports.join(" "));
    s
}

/// The Service as JSON, without server-set noise (uid, resourceVersion, managedFields,
/// allocated cluster IPs, status).
pub fn service_json(s: &Service) -> String {
    let mut s = s.clone();
    let m = &mut s.metadata;
    m.uid = None;
    m.resource_version = None;
    m.managed_fields = None;
    m.creation_timestamp = None;
    m.generation = None;
    m.namespace = None;
    if let Some(spec) = s.spec.as_mut()
        && spec.cluster_ip.as_deref() != Some("None")
    {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
    }
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ips = spec.cluster_ips.take().filter(|ips| ips.iter().any(|i| i != "None"));
    }
    s.status = None;
    serde_json::to_string(&s).unwrap_or_default()
}

/// An Endpoints' subsets as JSON.
pub fn endpoints_json(e: &Endpoints) -> String {
    serde_json::json!({ "labels": e.metadata.labels, "annotations": e.metadata.annotations, "subsets": e.subsets })
        .to_string()
}

/// What differs between a slice as written and as a plan would write it, apart from the
/// endpoint multiset (labels, annotations, owner references, ports, endpoint order).
pub fn slice_changes(old: &EndpointSlice, new: &EndpointSlice) -> String {
    let mut out = Vec::new();
    let (om, nm) = (&old.metadata, &new.metadata);
    if om.labels != nm.labels {
        out.push(format!("labels {:?} -> {:?}", om.labels, nm.labels));
    }
    if om.annotations != nm.annotations {
        out.push(format!("annotations {:?} -> {:?}", om.annotations, nm.annotations));
    }
    if om.owner_references != nm.owner_references {
        out.push(format!("ownerReferences {:?} -> {:?}", om.owner_references, nm.owner_references));
    }
    if old.ports != new.ports {
        out.push(format!("ports {:?} -> {:?}", old.ports, new.ports));
    }
    let render = |s: &EndpointSlice| s.endpoints.iter().flatten().map(|e| Ep::of(e).render()).collect::<Vec<_>>();
    if render(old) != render(new) {
        out.push(format!("endpoints {:?} -> {:?}", render(old), render(new)));
    }
    if out.is_empty() { "nothing visible".to_string() } else { out.join("; ") }
}

/// One line per slice: name, resourceVersion, generation and its managedFields entries
/// (manager, operation, time): which writes made the slice as it is.
pub fn write_history(slices: &[&EndpointSlice]) -> Vec<String> {
    slices
        .iter()
        .map(|s| {
            let m = &s.metadata;
            let writes: Vec<String> = m
                .managed_fields
                .iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} {} {}",
                        f.manager.as_deref().unwrap_or("?"),
                        f.operation.as_deref().unwrap_or("?"),
                        f.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
                    )
                })
                .collect();
            format!(
                "{} rv={} generation={} writes=[{}]",
                m.name.as_deref().unwrap_or(""),
                m.resource_version.as_deref().unwrap_or(""),
                m.generation.unwrap_or(0),
                writes.join("; ")
            )
        })
        .collect()
}

/// Whether a port with an `appProtocol` appears (by value) in more than one subset of the
/// Endpoints: the case where upstream's repacking (ports keyed by pointer) and epslice's (by
/// value) group the mirrored slices differently (docs/behaviour.md, mirroring table).
pub fn app_protocol_port_in_several_subsets(e: &Endpoints) -> bool {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for subset in e.subsets.iter().flatten() {
        let in_subset: BTreeSet<String> = subset
            .ports
            .iter()
            .flatten()
            .filter(|p| p.app_protocol.is_some())
            .map(|p| format!("{:?}/{}/{:?}/{:?}", p.name, p.port, p.protocol, p.app_protocol))
            .collect();
        for p in in_subset {
            *seen.entry(p).or_default() += 1;
        }
    }
    seen.values().any(|n| *n > 1)
}

/// The (address type, endpoint, port) pairs of slices, whatever their grouping, as a multiset:
/// an endpoint listed twice for a port (in one slice or in two) counts twice.
pub fn address_port_pairs(slices: &[&EndpointSlice]) -> Multiset<(String, Ep, String)> {
    let mut out = Multiset::new();
    for s in slices {
        let (address_type, ports) = slice_key(s);
        for e in s.endpoints.iter().flatten() {
            if ports.is_empty() {
                *out.entry((address_type.clone(), Ep::of(e), "<no ports>".to_string())).or_default() += 1;
            }
            for p in &ports {
                *out.entry((address_type.clone(), Ep::of(e), p.clone())).or_default() += 1;
            }
        }
    }
    out
}

/// The differences between two [`address_port_pairs`] multisets, one line per differing pair.
pub fn diff_pairs(
    left: &Multiset<(String, Ep, String)>,
    right: &Multiset<(String, Ep, String)>,
    left_name: &str,
    right_name: &str,
) -> Vec<String> {
    let keys: BTreeSet<&(String, Ep, String)> = left.keys().chain(right.keys()).collect();
    keys.into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| {
            format!(
                "  {} {} port {}: {left_name} {}×, {right_name} {}×",
                k.0,
                k.1.render(),
                k.2,
                left.get(k).copied().unwrap_or(0),
                right.get(k).copied().unwrap_or(0)
            )
        })
        .collect()
}

/// Whether a planned slice keeps the labels, annotations and owner references of `existing`
/// (a created slice: of any existing one).
pub fn same_metadata(existing: &EndpointSlice, planned: &EndpointSlice) -> bool {
    existing.metadata.labels == planned.metadata.labels
        && existing.metadata.annotations == planned.metadata.annotations
        && existing.metadata.owner_references == planned.metadata.owner_references
}

/// Applies a plan (creates, updates, deletes) to `existing`, by name: what the slices would be
/// after the write.
pub fn apply(
    existing: &[&EndpointSlice],
    create: &[EndpointSlice],
    update: &[EndpointSlice],
    delete: &[EndpointSlice],
) -> Vec<EndpointSlice> {
    let gone: BTreeSet<Option<&String>> = update.iter().chain(delete).map(|s| s.metadata.name.as_ref()).collect();
    existing
        .iter()
        .filter(|s| !gone.contains(&s.metadata.name.as_ref()))
        .map(|s| (*s).clone())
        .chain(create.iter().cloned())
        .chain(update.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointHints, EndpointPort, ForZone};
    use kube::api::ObjectMeta;

    fn ep(ip: &str, zone: &str, ready: bool, hint: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(ready), terminating: Some(false) }),
            zone: Some(zone.into()),
            hints: hint.map(|h| EndpointHints { for_zones: Some(vec![ForZone { name: h.into() }]), for_nodes: None }),
            ..Default::default()
        }
    }

    fn slice(name: &str, ports: &[(&str, i32)], eps: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            address_type: "IPv4".into(),
            endpoints: Some(eps),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn port_order_and_slice_split_do_not_matter_but_conditions_do() {
        let a =
            slice("a", &[("x", 1), ("y", 2)], vec![ep("10.0.0.1", "z1", true, None), ep("10.0.0.2", "z1", true, None)]);
        let b1 = slice("b1", &[("y", 2), ("x", 1)], vec![ep("10.0.0.2", "z1", true, None)]);
        let b2 = slice("b2", &[("x", 1), ("y", 2)], vec![ep("10.0.0.1", "z1", true, None)]);
        assert!(diff_groups(&group(&[&a]), &group(&[&b1, &b2]), "kcm", "epslice").is_empty());

        let c = slice(
            "c",
            &[("x", 1), ("y", 2)],
            vec![ep("10.0.0.1", "z1", true, None), ep("10.0.0.2", "z1", false, None)],
        );
        let d = diff_groups(&group(&[&a]), &group(&[&c]), "kcm", "epslice");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("10.0.0.2 ready=T") && d[0].contains("10.0.0.2 ready=F"), "{}", d[0]);
        assert!(!d[0].contains("10.0.0.1"), "only differing entries: {}", d[0]);
    }

    #[test]
    fn a_duplicate_endpoint_is_a_difference() {
        let a = slice("a", &[("x", 1)], vec![ep("10.0.0.1", "z1", true, None)]);
        let b = slice("b", &[("x", 1)], vec![ep("10.0.0.1", "z1", true, None), ep("10.0.0.1", "z1", true, None)]);
        let d = diff_groups(&group(&[&a]), &group(&[&b]), "kcm", "epslice");
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("2× 10.0.0.1"), "{}", d[0]);
    }

    #[test]
    fn a_missing_port_set_is_a_difference() {
        let a = slice("a", &[("x", 1)], vec![]);
        let d = diff_groups(&group(&[&a]), &BTreeMap::new(), "kcm", "epslice");
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("no epslice slice"), "{}", d[0]);
    }

    #[test]
    fn auto_hints_compare_zone_pairs_not_which_endpoint() {
        let cpu: BTreeMap<String, u64> = [("z1", 7), ("z2", 11), ("z3", 13)].map(|(z, c)| (z.to_string(), c)).into();
        let a = slice(
            "a",
            &[("x", 1)],
            vec![ep("10.0.0.1", "z1", true, Some("z1")), ep("10.0.0.2", "z1", true, Some("z2"))],
        );
        let b = slice(
            "b",
            &[("x", 1)],
            vec![ep("10.0.0.1", "z1", true, Some("z2")), ep("10.0.0.2", "z1", true, Some("z1"))],
        );
        let (ga, ha) = split_hints(group(&[&a]), &cpu);
        let (gb, hb) = split_hints(group(&[&b]), &cpu);
        assert!(diff_groups(&ga, &gb, "kcm", "epslice").is_empty());
        assert_eq!(ha, hb);
        // A different pair multiset is a difference.
        let c = slice(
            "c",
            &[("x", 1)],
            vec![ep("10.0.0.1", "z1", true, Some("z1")), ep("10.0.0.2", "z1", true, Some("z1"))],
        );
        let (_, hc) = split_hints(group(&[&c]), &cpu);
        assert_ne!(ha, hc);
    }

    #[test]
    fn app_protocol_regrouping_keeps_address_port_pairs() {
        use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, EndpointSubset};
        let port = |name: &str, app: Option<&str>| CorePort {
            name: Some(name.into()),
            port: 1,
            protocol: Some("TCP".into()),
            app_protocol: app.map(String::from),
        };
        let subset = |ip: &str, ports: Vec<CorePort>| EndpointSubset {
            addresses: Some(vec![EndpointAddress { ip: ip.into(), ..Default::default() }]),
            not_ready_addresses: None,
            ports: Some(ports),
        };
        let mut e = Endpoints {
            metadata: ObjectMeta::default(),
            subsets: Some(vec![
                subset("10.0.0.1", vec![port("x", Some("http"))]),
                subset("10.0.0.2", vec![port("x", Some("http")), port("y", None)]),
            ]),
        };
        assert!(app_protocol_port_in_several_subsets(&e));
        e.subsets.as_mut().unwrap()[1].ports.as_mut().unwrap()[0].app_protocol = None;
        assert!(!app_protocol_port_in_several_subsets(&e));

        // Upstream's grouping {x}:1 + {x,y}:2 and epslice's {x}:1,2 + {y}:2 have the same pairs;
        // losing an address does not.
        let a1 = slice("a1", &[("x", 1)], vec![ep("10.0.0.1", "z", true, None)]);
        let a2 = slice("a2", &[("x", 1), ("y", 2)], vec![ep("10.0.0.2", "z", true, None)]);
        let b1 = slice("b1", &[("x", 1)], vec![ep("10.0.0.1", "z", true, None), ep("10.0.0.2", "z", true, None)]);
        let b2 = slice("b2", &[("y", 2)], vec![ep("10.0.0.2", "z", true, None)]);
        assert_eq!(address_port_pairs(&[&a1, &a2]), address_port_pairs(&[&b1, &b2]));
        assert_ne!(address_port_pairs(&[&a1, &a2]), address_port_pairs(&[&b1]));
        // A duplicate is a difference (a multiset, not a set).
        let dup = slice("d", &[("x", 1)], vec![ep("10.0.0.1", "z", true, None), ep("10.0.0.2", "z", true, None)]);
        assert_ne!(address_port_pairs(&[&a1, &a2, &dup]), address_port_pairs(&[&b1, &b2]));
        let d = diff_pairs(&address_port_pairs(&[&a1, &a2, &dup]), &address_port_pairs(&[&b1, &b2]), "kcm", "epslice");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|l| l.contains("kcm 2×, epslice 1×")), "{d:?}");
    }

    #[test]
    fn slice_metadata_masks_only_the_trigger_time_value() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut a = slice("a", &[("x", 1)], vec![]);
        a.metadata.labels = Some([(LABEL_MANAGED_BY.to_string(), "kcm".to_string())].into());
        a.metadata.annotations = Some([(ANNOTATION_TRIGGER_TIME.to_string(), "t1".to_string())].into());
        a.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "s".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let mut b = a.clone();
        b.metadata.name = Some("b".into());
        b.metadata.labels = Some([(LABEL_MANAGED_BY.to_string(), "epslice".to_string())].into());
        b.metadata.annotations = Some([(ANNOTATION_TRIGGER_TIME.to_string(), "t2".to_string())].into());
        assert!(diff_meta(&meta_by_key(&[&a]), &meta_by_key(&[&b]), "kcm", "epslice").is_empty());
        b.metadata.annotations = None;
        assert_eq!(diff_meta(&meta_by_key(&[&a]), &meta_by_key(&[&b]), "kcm", "epslice").len(), 1);
        b.metadata.annotations = a.metadata.annotations.clone();
        b.metadata.owner_references.as_mut().unwrap()[0].block_owner_deletion = None;
        assert_eq!(diff_meta(&meta_by_key(&[&a]), &meta_by_key(&[&b]), "kcm", "epslice").len(), 1);
    }

    #[test]
    fn ties_need_a_multiple_of_31_ready_endpoints_with_7_11_13_cpus() {
        let cpu: BTreeMap<String, u64> = [("a", 7), ("b", 11), ("c", 13)].map(|(z, c)| (z.to_string(), c)).into();
        assert!((1..31).all(|n| !hint_ties_possible(n, &cpu)));
        assert!(hint_ties_possible(31, &cpu));
        let equal: BTreeMap<String, u64> = [("a", 16), ("b", 16), ("c", 16)].map(|(z, c)| (z.to_string(), c)).into();
        assert!(hint_ties_possible(5, &equal));
    }
}
