//! A seeded random workload for the differential test (`tests/differential.rs`): Services,
//! Pods in many states and custom Endpoints, as plain API objects. Pure and deterministic: the
//! same seed and [`Config`] give the same objects, so a failing seed is a reproduction.
//!
//! What it covers (every flavour appears once in the first [`FLAVOURS`]`.len()` Services, then
//! flavours are drawn at random; details are random throughout):
//! - Services with selectors over a few label values, int / named / defaulted target ports,
//!   several ports and protocols, `appProtocol`, dual-stack (`RequireDualStack`,
//!   `PreferDualStack`, IPv6 first), single-stack IPv6, headless (with and without ports),
//!   `publishNotReadyAddresses`, `service.kubernetes.io/topology-mode: Auto` (and the deprecated
//!   annotation), `trafficDistribution` (`PreferClose`, `PreferSameZone`, `PreferSameNode`),
//!   ExternalName, and selector-less Services with custom Endpoints (mirroring).
//! - Pods managed by kwok (Ready, IPv4), or with a status the test writes: ready with IPv4,
//!   IPv6 or both (either family first), not ready, without IP, terminal (`Failed`,
//!   `Succeeded`), terminating (finalizer + delete; serving or not), bound to a Node that does
//!   not exist. Named container ports resolve to different numbers on different pods, some with
//!   UDP, some only on a sidecar (restartable init container); hostnames and subdomains.
//! - Custom Endpoints, each edge case at low probability: IPs the apiserver accepts only
//!   without `StrictIPCIDRValidation` (IPv4 with leading zeros, `::ffff:`-mapped IPv4; the test
//!   turns the gate off, as on a cluster holding objects from before it) and non-canonical IPv6
//!   (upper case, zeros written out), a port without protocol (defaulted to TCP by the
//!   apiserver), the same address in two subsets, `skip-mirror`, the leader-election annotation,
//!   a subset of more than 1000 addresses (at most one per workload), Endpoints of a Service
//!   that has a selector (created before the Service: not mirrored, then overwritten by the
//!   Endpoints controller) and Endpoints without a Service.

use std::collections::BTreeMap;

use envtest::kwok::{self, NodeSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod,
    PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

/// SplitMix64: a tiny, well-mixed PRNG; plenty for test data and stable across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Size of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Number of Services (at least [`FLAVOURS`]`.len()` to cover every flavour).
    pub services: usize,
    /// Number of Pods.
    pub pods: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { services: FLAVOURS.len(), pods: 36 }
    }
}

/// The kinds of Service the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// One port, integer target port.
    Plain,
    /// Named target ports.
    NamedPorts,
    /// Two or three ports.
    MultiPort,
    /// `RequireDualStack` (sometimes IPv6 first).
    RequireDualStack,
    /// `PreferDualStack`.
    PreferDualStack,
    /// Single-stack IPv6.
    Ipv6,
    /// `clusterIP: None` with ports.
    Headless,
    /// `clusterIP: None` without ports.
    HeadlessNoPorts,
    /// `publishNotReadyAddresses: true`.
    PublishNotReady,
    /// `service.kubernetes.io/topology-mode: Auto` (or the deprecated annotation).
    TopologyAuto,
    /// `trafficDistribution: PreferClose`.
    PreferClose,
    /// `trafficDistribution: PreferSameZone`.
    PreferSameZone,
    /// `trafficDistribution: PreferSameNode`.
    PreferSameNode,
    /// `type: ExternalName` (with or without selector, sometimes with custom Endpoints).
    ExternalName,
    /// No selector, custom Endpoints (mirrored).
    SelectorLess,
}

/// Every flavour, in the order the first Services take them.
pub const FLAVOURS: [Flavour; 15] = [
    Flavour::Plain,
    Flavour::NamedPorts,
    Flavour::MultiPort,
    Flavour::RequireDualStack,
    Flavour::PreferDualStack,
    Flavour::Ipv6,
    Flavour::Headless,
    Flavour::HeadlessNoPorts,
    Flavour::PublishNotReady,
    Flavour::TopologyAuto,
    Flavour::PreferClose,
    Flavour::PreferSameZone,
    Flavour::PreferSameNode,
    Flavour::ExternalName,
    Flavour::SelectorLess,
];

impl Flavour {
    fn short(self) -> &'static str {
        match self {
            Flavour::Plain => "plain",
            Flavour::NamedPorts => "named",
            Flavour::MultiPort => "multi",
            Flavour::RequireDualStack => "dual",
            Flavour::PreferDualStack => "pdual",
            Flavour::Ipv6 => "v6",
            Flavour::Headless => "hl",
            Flavour::HeadlessNoPorts => "hlnp",
            Flavour::PublishNotReady => "pnra",
            Flavour::TopologyAuto => "topo",
            Flavour::PreferClose => "close",
            Flavour::PreferSameZone => "zone",
            Flavour::PreferSameNode => "node",
            Flavour::ExternalName => "extname",
            Flavour::SelectorLess => "nosel",
        }
    }
}

/// How the test brings a Pod to its state.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// kwok manages it: Running, Ready, an IPv4 from the pod CIDR.
    Kwok,
    /// Annotated `kwok.x-k8s.io/status: custom`; the test writes this status.
    Custom(PodStatus),
    /// Custom status as above, plus the test finalizer; the test then deletes it so it stays
    /// Terminating.
    Terminating(PodStatus),
}

/// A Pod and how to reach its state.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// The object to create (annotation and finalizer already set as the state needs).
    pub pod: Pod,
    /// The state.
    pub state: PodState,
}

/// One generated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The seed it came from.
    pub seed: u64,
    /// Services, in creation order.
    pub services: Vec<Service>,
    /// Pods.
    pub pods: Vec<PodPlan>,
    /// Custom Endpoints, created after the Services: of selector-less Services (mirrored
    /// unless skipped) and of no Service at all.
    pub endpoints: Vec<Endpoints>,
    /// Custom Endpoints of Services that have a selector, created *before* the Services (once a
    /// Service selects pods, the Endpoints controller creates its Endpoints itself). Never
    /// mirrored; the Endpoints controller takes them over.
    pub early_endpoints: Vec<Endpoints>,
}

/// The leader-election record annotation: Endpoints carrying it are never mirrored.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";

/// Addresses in the one big subset a workload may have (more than the 1000 mirrored per subset).
pub const BIG_SUBSET: usize = 1003;

/// Chance (percent) that a workload has a subset of [`BIG_SUBSET`] addresses.
const BIG_SUBSET_CHANCE: usize = 10;

/// A Node name no Node has (pods bound to it hit the "Node not found" path).
pub const MISSING_NODE: &str = "kwok-gone-0";

/// The differential test's fake Nodes: 6 nodes in 3 zones, like [`kwok::default_nodes`], but
/// with allocatable CPU 7, 11 and 13 per zone (31 in all). With these ratios two zones can
/// only tie in upstream's topology-hint allocation when the number of ready endpoints is a
/// multiple of 31, so Go's map order (which decides ties upstream) does not matter for smaller
/// Services. See `differential::hint_ties_possible`.
pub fn nodes() -> Vec<NodeSpec> {
    [("zone-a", 3, 4), ("zone-b", 5, 6), ("zone-c", 6, 7)]
        .iter()
        .flat_map(|(z, c0, c1)| {
            [NodeSpec::new(&format!("kwok-{z}-0"), z, *c0), NodeSpec::new(&format!("kwok-{z}-1"), z, *c1)]
        })
        .collect()
}

const APPS: [&str; 3] = ["a", "b", "c"];
const TIERS: [&str; 2] = ["x", "y"];

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Generates the workload of `seed` for the given Nodes.
pub fn generate(seed: u64, nodes: &[NodeSpec], config: &Config) -> Workload {
    let mut rng = Rng::new(seed);
    let mut services = Vec::with_capacity(config.services);
    let mut endpoints = Vec::new();
    for i in 0..config.services {
        let flavour = FLAVOURS.get(i).copied().unwrap_or_else(|| *rng.pick(&FLAVOURS));
        let name = format!("s{i:02}-{}", flavour.short());
        let (svc, eps) = service(&mut rng, &name, flavour);
        services.push(svc);
        endpoints.extend(eps);
    }
    // Workload-wide Endpoints edge cases, each at low probability.
    let mut early_endpoints = Vec::new();
    if rng.chance(BIG_SUBSET_CHANCE)
        && let Some(e) = endpoints.iter_mut().find(|e| !is_skipped(e))
    {
        big_subset(&mut rng, e);
    }
    if rng.chance(30) {
        let selecting: Vec<&Service> =
            services.iter().filter(|s| s.spec.as_ref().is_some_and(|s| s.selector.is_some())).collect();
        let name = rng.pick(&selecting).metadata.name.clone().unwrap_or_default();
        early_endpoints.push(custom_endpoints(&mut rng, &name));
    }
    if rng.chance(30) {
        endpoints.push(custom_endpoints(&mut rng, "orphan"));
    }
    let service_names: Vec<String> = services.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let pods = (0..config.pods).map(|i| pod(&mut rng, i, nodes, &service_names)).collect();
    Workload { seed, services, pods, endpoints, early_endpoints }
}

/// The Endpoints edge cases present in a workload, for the test's summary line.
pub fn edge_cases(w: &Workload) -> Vec<String> {
    let all: Vec<&Endpoints> = w.endpoints.iter().chain(&w.early_endpoints).collect();
    let addresses = || {
        all.iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()))
    };
    let mut out = Vec::new();
    let mut note = |present: bool, what: &str| {
        if present {
            out.push(what.to_string());
        }
    };
    note(addresses().any(|a| a.ip.split('.').any(|o| o.len() > 1 && o.starts_with('0'))), "leading-zero IPv4");
    note(addresses().any(|a| a.ip.starts_with("::ffff:")), "IPv4-mapped IPv6");
    note(addresses().any(|a| a.ip.contains("DB8") || a.ip.contains("0db8")), "non-canonical IPv6");
    note(
        all.iter().flat_map(|e| e.subsets.iter().flatten()).any(|s| {
            s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len) > 1000
        }),
        "subset over 1000",
    );
    note(
        all.iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.ports.iter().flatten())
            .any(|p| p.protocol.is_none()),
        "port without protocol",
    );
    note(
        all.iter().any(|e| e.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION_LEADER))),
        "leader record",
    );
    note(
        all.iter().any(|e| {
            e.metadata.labels.as_ref().is_some_and(|l| l.contains_key("endpointslice.kubernetes.io/skip-mirror"))
        }),
        "skip-mirror",
    );
    note(!w.early_endpoints.is_empty(), "Endpoints of a selecting Service");
    note(w.endpoints.iter().any(|e| e.metadata.name.as_deref() == Some("orphan")), "Endpoints without Service");
    out
}

/// Whether the Endpoints is marked not to be mirrored (skip-mirror label or leader record).
fn is_skipped(e: &Endpoints) -> bool {
    e.metadata.labels.as_ref().is_some_and(|l| l.contains_key("endpointslice.kubernetes.io/skip-mirror"))
        || e.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION_LEADER))
}

/// Adds a subset of [`BIG_SUBSET`] addresses (about a tenth not ready, in an order that is
/// neither numeric nor textual) to `e`: more than the 1000 per subset the mirroring controllers
/// mirror, so which ones they keep is compared.
fn big_subset(rng: &mut Rng, e: &mut Endpoints) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for k in 0..BIG_SUBSET {
        // A permutation of 0..BIG_SUBSET (7 is coprime with it), in 198.18.0.0/15.
        let i = (k * 7) % BIG_SUBSET;
        let address = EndpointAddress { ip: format!("198.18.{}.{}", i / 200, i % 200 + 1), ..Default::default() };
        if rng.chance(10) { not_ready.push(address) } else { ready.push(address) }
    }
    e.subsets.get_or_insert_with(Vec::new).push(EndpointSubset {
        addresses: Some(ready),
        not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
        ports: Some(vec![EndpointPort {
            name: Some("bulk".into()),
            port: 9000,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    });
}

fn selector(rng: &mut Rng) -> BTreeMap<String, String> {
    match rng.below(100) {
        0..60 => labels(&[("app", *rng.pick(&APPS))]),
        60..85 => labels(&[("app", *rng.pick(&APPS)), ("tier", *rng.pick(&TIERS))]),
        _ => labels(&[("tier", *rng.pick(&TIERS))]),
    }
}

/// Target ports pods may declare: (name, protocol); see [`pod`].
const TARGET_NAMES: [(&str, &str); 5] =
    [("http", "TCP"), ("metrics", "TCP"), ("dns", "UDP"), ("admin", "TCP"), ("missing", "TCP")];

fn service_ports(rng: &mut Rng, count: usize, named_targets: bool) -> Vec<ServicePort> {
    let names = ["web", "mon", "dns", "adm"];
    let mut ports = Vec::new();
    for j in 0..count {
        let (target_name, protocol) = *rng.pick(&TARGET_NAMES);
        // Mostly the protocol the pods use for that name; sometimes the other one, which
        // makes named ports fail to resolve.
        let protocol = if rng.chance(10) { if protocol == "TCP" { "UDP" } else { "TCP" } } else { protocol };
        let target_port = if named_targets || rng.chance(40) {
            Some(IntOrString::String(target_name.to_string()))
        } else if rng.chance(75) {
            Some(IntOrString::Int(*rng.pick(&[8080, 8081, 9090, 5353])))
        } else {
            None // defaults to `port`
        };
        ports.push(ServicePort {
            name: (count > 1 || rng.chance(50)).then(|| names[j % names.len()].to_string()),
            port: 80 + j as i32,
            protocol: Some(protocol.to_string()),
            target_port,
            app_protocol: rng.chance(15).then(|| rng.pick(&["http", "kubernetes.io/h2c"]).to_string()),
            ..Default::default()
        });
    }
    ports
}

fn service(rng: &mut Rng, name: &str, flavour: Flavour) -> (Service, Option<Endpoints>) {
    let mut annotations = BTreeMap::new();
    let mut spec = ServiceSpec { selector: Some(selector(rng)), ..Default::default() };
    let port_count = match flavour {
        Flavour::MultiPort => 2 + rng.below(2),
        Flavour::HeadlessNoPorts => 0,
        _ => 1 + usize::from(rng.chance(30)),
    };
    spec.ports = Some(service_ports(rng, port_count, flavour == Flavour::NamedPorts));
    let mut endpoints = None;
    match flavour {
        Flavour::Plain | Flavour::NamedPorts | Flavour::MultiPort => {}
        Flavour::RequireDualStack => {
            spec.ip_family_policy = Some("RequireDualStack".into());
            if rng.chance(30) {
                spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
            }
        }
        Flavour::PreferDualStack => spec.ip_family_policy = Some("PreferDualStack".into()),
        Flavour::Ipv6 => {
            spec.ip_family_policy = Some("SingleStack".into());
            spec.ip_families = Some(vec!["IPv6".into()]);
        }
        Flavour::Headless | Flavour::HeadlessNoPorts => {
            spec.cluster_ip = Some("None".into());
            if port_count == 0 {
                spec.ports = None;
            }
            if rng.chance(40) {
                spec.ip_family_policy = Some("RequireDualStack".into());
            }
            spec.publish_not_ready_addresses = rng.chance(30).then_some(true);
        }
        Flavour::PublishNotReady => spec.publish_not_ready_addresses = Some(true),
        Flavour::TopologyAuto => {
            if rng.chance(25) {
                annotations.insert("service.kubernetes.io/topology-aware-hints".to_string(), "auto".to_string());
            } else {
                annotations.insert("service.kubernetes.io/topology-mode".to_string(), "Auto".to_string());
            }
        }
        Flavour::PreferClose => spec.traffic_distribution = Some("PreferClose".into()),
        Flavour::PreferSameZone => spec.traffic_distribution = Some("PreferSameZone".into()),
        Flavour::PreferSameNode => spec.traffic_distribution = Some("PreferSameNode".into()),
        Flavour::ExternalName => {
            spec.type_ = Some("ExternalName".into());
            spec.external_name = Some("db.example.com".into());
            if rng.chance(50) {
                spec.selector = None;
                if rng.chance(50) {
                    endpoints = Some(custom_endpoints(rng, name));
                }
            }
        }
        Flavour::SelectorLess => {
            spec.selector = None;
            endpoints = Some(custom_endpoints(rng, name));
        }
    }
    // Cross-cutting extras on ordinary Services.
    let ordinary = !matches!(flavour, Flavour::ExternalName | Flavour::SelectorLess);
    if ordinary {
        if spec.publish_not_ready_addresses.is_none() && rng.chance(15) {
            spec.publish_not_ready_addresses = Some(true);
        }
        if spec.ip_family_policy.is_none() && rng.chance(15) {
            spec.ip_family_policy = Some("PreferDualStack".into());
        }
        if annotations.is_empty() && spec.traffic_distribution.is_none() {
            match rng.below(100) {
                0..8 => {
                    annotations.insert("service.kubernetes.io/topology-mode".to_string(), "Auto".to_string());
                }
                8..16 => spec.traffic_distribution = Some("PreferClose".into()),
                _ => {}
            }
        }
        // Both set: the annotation wins (upstream keeps hints from the topology cache).
        if flavour == Flavour::TopologyAuto && rng.chance(20) {
            spec.traffic_distribution = Some("PreferSameZone".into());
        }
    }
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: rng.chance(30).then(|| labels(&[("team", *rng.pick(&["red", "blue"]))])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    (svc, endpoints)
}

fn custom_endpoints(rng: &mut Rng, name: &str) -> Endpoints {
    let mut next = 1 + rng.below(50) as u32;
    let mut address = |rng: &mut Rng, nodes: bool| {
        next += 1;
        let ip = match rng.below(100) {
            // Accepted by the apiserver only without StrictIPCIDRValidation (the test turns it
            // off); both mirroring controllers parse them leniently and write them canonically.
            0..3 => format!("192.0.2.{next:03}"),
            3..6 => format!("::ffff:192.0.2.{next}"),
            // Non-canonical IPv6 (valid in Endpoints, not in EndpointSlices).
            6..9 => format!("2001:DB8::{next:X}"),
            9..11 => format!("2001:0db8:0:0:0:0:0:{next:04x}"),
            11..75 => format!("192.0.2.{next}"),
            _ => format!("2001:db8::{next:x}"),
        };
        EndpointAddress {
            ip,
            hostname: rng.chance(25).then(|| format!("h{next}")),
            node_name: (nodes && rng.chance(40)).then(|| format!("kwok-zone-{}-0", rng.pick(&["a", "b", "c"]))),
            target_ref: rng.chance(20).then(|| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(format!("external-{next}")),
                ..Default::default()
            }),
        }
    };
    let mut subsets = Vec::new();
    let mut used: Vec<EndpointAddress> = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let mut ready: Vec<EndpointAddress> = (0..1 + rng.below(4)).map(|_| address(rng, true)).collect();
        // The same address in two subsets (upstream repacks them).
        if !used.is_empty() && rng.chance(30) {
            ready.push(rng.pick(&used).clone());
        }
        let not_ready: Vec<EndpointAddress> = (0..rng.below(3)).map(|_| address(rng, true)).collect();
        used.extend(ready.iter().cloned());
        let ports = (0..1 + rng.below(2))
            .map(|j| EndpointPort {
                name: Some(["pg", "admin"][j].to_string()),
                port: *rng.pick(&[5432, 6432, 8080]) + j as i32,
                // No protocol: the apiserver defaults it to TCP.
                protocol: (!rng.chance(8)).then(|| rng.pick(&["TCP", "TCP", "UDP"]).to_string()),
                app_protocol: rng.chance(15).then(|| "postgresql".to_string()),
            })
            .collect();
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(ports),
        });
    }
    let mut meta_labels = BTreeMap::new();
    if rng.chance(15) {
        meta_labels.insert("endpointslice.kubernetes.io/skip-mirror".to_string(), "true".to_string());
    }
    if rng.chance(30) {
        meta_labels.insert("team".to_string(), "green".to_string());
    }
    let mut annotations = BTreeMap::new();
    if rng.chance(20) {
        annotations.insert("example.com/owner".to_string(), "dba".to_string());
    }
    if rng.chance(8) {
        annotations.insert(ANNOTATION_LEADER.to_string(), r#"{"holderIdentity":"elsewhere"}"#.to_string());
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: (!meta_labels.is_empty()).then_some(meta_labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        subsets: Some(subsets),
    }
}

fn v4(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

fn v6(i: usize) -> String {
    format!("fd00:250::{:x}", i + 1)
}

fn status(phase: &str, ips: &[String], ready: bool) -> PodStatus {
    let s = if ready { "True" } else { "False" };
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: (!ips.is_empty()).then(|| "10.240.0.1".to_string()),
        conditions: Some(
            ["Ready", "ContainersReady"]
                .iter()
                .map(|t| PodCondition { type_: t.to_string(), status: s.into(), ..Default::default() })
                .collect(),
        ),
        ..Default::default()
    }
}

fn custom_ips(rng: &mut Rng, i: usize) -> Vec<String> {
    match rng.below(100) {
        0..45 => vec![v4(i)],
        45..75 => vec![v4(i), v6(i)],
        75..85 => vec![v6(i), v4(i)],
        _ => vec![v6(i)],
    }
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: (!name.is_empty()).then(|| name.to_string()),
        container_port: port,
        protocol: Some(protocol.to_string()),
        ..Default::default()
    }
}

fn pod(rng: &mut Rng, i: usize, nodes: &[NodeSpec], services: &[String]) -> PodPlan {
    let name = format!("p{i:02}");
    let mut pod_labels = labels(&[("app", *rng.pick(&APPS))]);
    if rng.chance(70) {
        pod_labels.insert("tier".into(), (*rng.pick(&TIERS)).to_string());
    }
    // Named ports resolve to different numbers on different pods; `dns` is UDP; `admin` lives
    // on a sidecar when there is one; `missing` is never declared.
    let mut ports = Vec::new();
    if rng.chance(80) {
        ports.push(container_port("http", *rng.pick(&[8080, 8081]), "TCP"));
    }
    if rng.chance(50) {
        ports.push(container_port("metrics", *rng.pick(&[9090, 9091]), "TCP"));
    }
    if rng.chance(35) {
        ports.push(container_port("dns", 5353, "UDP"));
    }
    if rng.chance(15) {
        ports.push(container_port("", 7000, "TCP"));
    }
    let sidecar = rng.chance(20).then(|| Container {
        name: "sidecar".into(),
        image: Some("registry.invalid/sidecar:1".into()),
        restart_policy: Some("Always".into()),
        ports: Some(vec![container_port("admin", *rng.pick(&[7070, 7071]), "TCP")]),
        ..Default::default()
    });
    let roll = rng.below(100);
    let node = if roll >= 95 { MISSING_NODE.to_string() } else { rng.pick(nodes).name.clone() };
    let (hostname, subdomain) = if rng.chance(30) {
        let sub = if rng.chance(80) { rng.pick(services).clone() } else { "elsewhere".to_string() };
        (Some(name.clone()), Some(sub))
    } else {
        (None, None)
    };
    let pod = Pod {
        metadata: ObjectMeta { name: Some(name.clone()), labels: Some(pod_labels), ..Default::default() },
        spec: Some(PodSpec {
            node_name: Some(node),
            hostname,
            subdomain,
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/app:1".into()),
                ports: (!ports.is_empty()).then_some(ports),
                ..Default::default()
            }],
            init_containers: sidecar.map(|c| vec![c]),
            ..Default::default()
        }),
        status: None,
    };
    let state = match roll {
        0..35 => PodState::Kwok,
        35..55 => PodState::Custom(status("Running", &custom_ips(rng, i), true)),
        55..67 => PodState::Custom(status("Running", &custom_ips(rng, i), false)),
        67..73 => PodState::Custom(status("Pending", &[], false)),
        73..80 => {
            let phase = *rng.pick(&["Failed", "Succeeded"]);
            PodState::Custom(status(phase, &custom_ips(rng, i), false))
        }
        80..95 => PodState::Terminating(status("Running", &custom_ips(rng, i), rng.chance(50))),
        _ => PodState::Custom(status("Running", &custom_ips(rng, i), true)),
    };
    let pod = match &state {
        PodState::Kwok => pod,
        PodState::Custom(_) => kwok::with_custom_status(pod),
        PodState::Terminating(_) => kwok::with_test_finalizer(kwok::with_custom_status(pod)),
    };
    PodPlan { pod, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_workload_other_seed_other_workload() {
        let n = nodes();
        let a = generate(7, &n, &Config::default());
        assert_eq!(a, generate(7, &n, &Config::default()));
        assert_ne!(a, generate(8, &n, &Config::default()));
    }

    #[test]
    fn every_flavour_and_pod_state_appears() {
        let w = generate(1, &nodes(), &Config { services: FLAVOURS.len(), pods: 200 });
        for f in FLAVOURS {
            assert!(
                w.services.iter().any(|s| s.metadata.name.as_deref().is_some_and(|n| n.ends_with(f.short()))),
                "{f:?}"
            );
        }
        assert!(w.pods.iter().any(|p| p.state == PodState::Kwok));
        assert!(w.pods.iter().any(|p| matches!(p.state, PodState::Terminating(_))));
        let phases: Vec<&str> = w
            .pods
            .iter()
            .filter_map(|p| match &p.state {
                PodState::Custom(s) => s.phase.as_deref(),
                _ => None,
            })
            .collect();
        for phase in ["Running", "Pending", "Failed", "Succeeded"] {
            assert!(phases.contains(&phase), "{phase}");
        }
        assert!(w.pods.iter().any(|p| p.pod.spec.as_ref().unwrap().node_name.as_deref() == Some(MISSING_NODE)));
        // Unique pod IPs (custom ones) within a workload.
        let mut ips: Vec<String> = w
            .pods
            .iter()
            .filter_map(|p| match &p.state {
                PodState::Custom(s) | PodState::Terminating(s) => s.pod_ips.clone(),
                PodState::Kwok => None,
            })
            .flatten()
            .map(|ip| ip.ip)
            .collect();
        let before = ips.len();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), before);
    }

    #[test]
    fn endpoints_edge_cases_are_rare_but_all_appear() {
        let n = nodes();
        let mut seen = BTreeMap::<String, usize>::new();
        for seed in 1..=200 {
            let w = generate(seed, &n, &Config::default());
            let big = w
                .endpoints
                .iter()
                .flat_map(|e| e.subsets.iter().flatten())
                .filter(|s| {
                    s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len) > 1000
                })
                .count();
            assert!(big <= 1, "seed {seed}: at most one big subset");
            for c in edge_cases(&w) {
                *seen.entry(c).or_default() += 1;
            }
        }
        for c in [
            "leading-zero IPv4",
            "IPv4-mapped IPv6",
            "non-canonical IPv6",
            "subset over 1000",
            "port without protocol",
            "leader record",
            "skip-mirror",
            "Endpoints of a selecting Service",
            "Endpoints without Service",
        ] {
            assert!(seen.get(c).is_some_and(|n| *n > 0), "{c} never generated: {seen:?}");
        }
        assert!(seen["subset over 1000"] < 40, "{seen:?}");
    }

    #[test]
    fn node_cpu_totals_per_zone_are_7_11_13() {
        let mut by_zone: BTreeMap<String, u32> = BTreeMap::new();
        for n in nodes() {
            *by_zone.entry(n.zone).or_default() += n.cpu;
        }
        assert_eq!(by_zone.into_values().collect::<Vec<_>>(), vec![7, 11, 13]);
    }
}
