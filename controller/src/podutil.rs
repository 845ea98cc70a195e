//! Pod helpers shared by the endpoint controllers (EndpointSlice and the legacy Endpoints
//! controller): readiness, eligibility, terminal phases, target-port resolution, the
//! hostname/subdomain rule, lenient IP parsing with canonical text, and the "did this pod
//! change in a way that matters to endpoints" test used when queueing Services.
//!
//! Everything here is a pure function of API objects. The behaviour follows upstream
//! Kubernetes v1.37 (`k8s.io/endpointslice/util/controller_utils.go`,
//! `k8s.io/endpointslice/utils.go` `FindPort`, `k8s.io/kubernetes/pkg/api/v1/pod/util.go` and
//! `k8s.io/utils/net` `ParseIPSloppy`). Where an object has not been through apiserver
//! defaulting (a missing `protocol` or `targetPort`), the apiserver's default is assumed; each
//! such place says so.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pod::{CachedContainer, CachedPod, CachedPodCondition, CachedPodIP};

/// `PodReady` condition type.
pub const POD_READY: &str = "Ready";
/// Condition status `True`.
pub const CONDITION_TRUE: &str = "True";
/// Terminal pod phase `Failed`.
pub const POD_FAILED: &str = "Failed";
/// Terminal pod phase `Succeeded`.
pub const POD_SUCCEEDED: &str = "Succeeded";
/// Container restart policy that marks an init container as a sidecar (restartable init
/// container).
pub const CONTAINER_RESTART_POLICY_ALWAYS: &str = "Always";
/// Default protocol of Service ports and container ports (apiserver defaulting).
pub const PROTOCOL_TCP: &str = "TCP";
/// `spec.clusterIP` value of a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";

// ---------------------------------------------------------------------------------------------
// Readiness, phase, eligibility
// ---------------------------------------------------------------------------------------------

/// The pod's `Ready` condition, if it has one (upstream `GetPodReadyCondition`).
pub fn pod_ready_condition(pod: &CachedPod) -> Option<&CachedPodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == POD_READY)
}

/// True if the pod's `Ready` condition is `True` (upstream `IsPodReady`).
pub fn is_pod_ready(pod: &CachedPod) -> bool {
    pod_ready_condition(pod).is_some_and(|c| c.status == CONDITION_TRUE)
}

/// True if the phase is `Failed` or `Succeeded` (upstream `IsPodPhaseTerminal`).
pub fn is_pod_phase_terminal(phase: &str) -> bool {
    phase == POD_FAILED || phase == POD_SUCCEEDED
}

/// True if the pod is terminal: all its containers stopped for good (upstream `IsPodTerminal`).
/// Distinct from *terminating*, see [`is_pod_terminating`].
pub fn is_pod_terminal(pod: &CachedPod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(is_pod_phase_terminal)
}

/// True if the pod is being deleted (`metadata.deletionTimestamp` is set).
pub fn is_pod_terminating(pod: &CachedPod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// True if the pod has an IP: `status.podIP` or `status.podIPs` is non-empty.
pub fn pod_has_ip(pod: &CachedPod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()) || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    })
}

/// Whether a pod belongs in an Endpoints or EndpointSlice object (upstream
/// `ShouldPodBeInEndpoints`).
///
/// - Terminal pods (phase `Failed` / `Succeeded`) are excluded.
/// - Pods without any IP are excluded.
/// - Terminating pods are included only when `include_terminating` is true. The EndpointSlice
///   controller passes `true` (their state shows in the endpoint conditions); the legacy
///   Endpoints controller passes the Service's `publishNotReadyAddresses`.
///
/// Readiness is not considered here. `hostNetwork` pods get no special treatment.
pub fn should_pod_be_in_endpoints(pod: &CachedPod, include_terminating: bool) -> bool {
    if is_pod_terminal(pod) {
        return false;
    }
    if !pod_has_ip(pod) {
        return false;
    }
    if !include_terminating && is_pod_terminating(pod) {
        return false;
    }
    true
}

/// Whether an endpoint for `pod` gets the pod's hostname for `service` (upstream
/// `ShouldSetHostname`): the pod sets `spec.hostname`, its `spec.subdomain` equals the Service
/// name, and both live in the same namespace.
pub fn should_set_hostname(pod: &CachedPod, service: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("");
    !hostname.is_empty()
        && subdomain == service.metadata.name.as_deref().unwrap_or("")
        && service.metadata.namespace.as_deref().unwrap_or("") == pod.metadata.namespace.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// True if `container` is a restartable init container (a sidecar): its `restartPolicy` is
/// `Always` (upstream `IsRestartableInitContainer`). Whether it really is an init container is
/// up to the caller.
pub fn is_restartable_init_container(container: &CachedContainer) -> bool {
    container.restart_policy.as_deref() == Some(CONTAINER_RESTART_POLICY_ALWAYS)
}

/// The protocol of a Service port, with the apiserver default (`TCP`) when unset.
pub fn service_port_protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or(PROTOCOL_TCP)
}

/// The target port of a Service port, with the apiserver default (`targetPort = port`) when
/// unset.
pub fn service_port_target(port: &ServicePort) -> IntOrString {
    port.target_port.clone().unwrap_or(IntOrString::Int(port.port))
}

/// A named target port that no container of the pod declares for the Service port's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNotFound {
    /// The pod's name.
    pub pod: String,
    /// The named target port looked for.
    pub port_name: String,
    /// The protocol looked for.
    pub protocol: String,
}

impl std::fmt::Display for PortNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no suitable port {:?}/{} on pod {:?}", self.port_name, self.protocol, self.pod)
    }
}

impl std::error::Error for PortNotFound {}

/// Resolves a Service port's target port against a pod (upstream `FindPort`).
///
/// - An integer target port is returned as is; the pod's ports are not checked.
/// - A named target port is looked up in `spec.containers[*].ports` by name **and** protocol
///   (first match wins), then in the restartable init containers (sidecars) the same way.
/// - Otherwise [`PortNotFound`]; callers omit that Service port for this pod.
///
/// A missing protocol on either side counts as `TCP` (apiserver default); a missing target
/// port counts as the Service port number (apiserver default).
pub fn find_port(pod: &CachedPod, service_port: &ServicePort) -> Result<i32, PortNotFound> {
    find_port_number(pod, service_port).ok_or_else(|| PortNotFound {
        pod: pod.metadata.name.as_deref().unwrap_or_default().to_owned(),
        port_name: match service_port_target(service_port) {
            IntOrString::String(name) => name,
            IntOrString::Int(n) => n.to_string(),
        },
        protocol: service_port_protocol(service_port).to_owned(),
    })
}

/// [`find_port`] without the error details: the resolved port number, if any. Allocates
/// nothing, for the planner, which resolves every Service port of every pod on every sync.
pub fn find_port_number(pod: &CachedPod, service_port: &ServicePort) -> Option<i32> {
    let protocol = service_port_protocol(service_port);
    let name = match &service_port.target_port {
        None => return Some(service_port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name.as_str(),
    };
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| &*s.containers).unwrap_or_default();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| is_restartable_init_container(c));
    for container in containers.iter().chain(sidecars) {
        for port in container.ports.as_deref().unwrap_or_default() {
            if port.name.as_deref() == Some(name) && port.protocol.as_deref().unwrap_or(PROTOCOL_TCP) == protocol {
                return Some(port.container_port);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// IP addresses
// ---------------------------------------------------------------------------------------------

/// An IP family, as in `Service.spec.ipFamilies` and EndpointSlice address types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// `IPv4`
    IPv4,
    /// `IPv6`
    IPv6,
}

impl IpFamily {
    /// The API spelling: `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    /// Parses the API spelling (`IPv4` / `IPv6`); anything else is `None`.
    pub fn from_api(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }

    /// The family of a parsed address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses an IP address the way Kubernetes does for stored data (`k8s.io/utils/net`
/// `ParseIPSloppy`, Go 1.16 `net.ParseIP` semantics):
///
/// - IPv4 octets may carry leading zeros, read as **decimal** (`010.001.002.003` is `10.1.2.3`);
/// - IPv6 groups may carry more than four hex digits as long as the value fits (`00001::1`);
/// - an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is an **IPv4** address, as Go's `To4`
///   treats it;
/// - zones (`fe80::1%eth0`), CIDRs and surrounding spaces are rejected.
///
/// Returns `None` for anything unparseable. Never panics.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    for b in s.bytes() {
        match b {
            b'.' => return parse_ipv4_sloppy(s).map(IpAddr::V4),
            b':' => {
                let v6 = parse_ipv6_sloppy(s)?;
                return Some(match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                });
            }
            _ => {}
        }
    }
    None
}

/// The canonical text of an address, as Go's `net.IP.String()` prints it: dotted decimal for
/// IPv4 (including IPv4-mapped IPv6) and RFC 5952 for IPv6 (lowercase, longest run of two or
/// more zero groups compressed, first run on ties).
pub fn canonical_ip_text(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
    }
}

/// Parses `s` leniently ([`parse_ip_sloppy`]) and returns its family and canonical text.
pub fn canonical_ip(s: &str) -> Option<(IpFamily, String)> {
    let ip = parse_ip_sloppy(s)?;
    Some((IpFamily::of(&ip), canonical_ip_text(&ip)))
}

/// [`canonical_ip`] that borrows `s` when it already is the canonical text, which it almost
/// always is (kubelets report canonical addresses): the planner reads every pod IP on every
/// sync and should not allocate a copy of each.
pub fn canonical_ip_cow(s: &str) -> Option<(IpFamily, Cow<'_, str>)> {
    let ip = parse_ip_sloppy(s)?;
    let already_canonical = match ip {
        IpAddr::V4(v4) => is_dotted_decimal_of(s, v4),
        IpAddr::V6(v6) => {
            // An IPv4-mapped address parses as IPv4 above, so this is RFC 5952 text.
            let mut text = StackText::default();
            write!(text, "{v6}").is_ok() && text.as_bytes() == s.as_bytes()
        }
    };
    let text = if already_canonical { Cow::Borrowed(s) } else { Cow::Owned(canonical_ip_text(&ip)) };
    Some((IpFamily::of(&ip), text))
}

/// True if `s` is exactly `ip` in dotted decimal without leading zeros (what
/// `Ipv4Addr::to_string` prints), checked without formatting through `fmt`.
fn is_dotted_decimal_of(s: &str, ip: Ipv4Addr) -> bool {
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + (octet / 10) % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    &buf[..len] == s.as_bytes()
}

/// A fixed-size text buffer for `write!`, long enough for any IPv6 address (45 bytes).
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText { buf: [0; 48], len: 0 }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// True if `s` parses ([`parse_ip_sloppy`]) as an IPv6 address (upstream `IsIPv6String`).
pub fn is_ipv6_string(s: &str) -> bool {
    matches!(parse_ip_sloppy(s), Some(IpAddr::V6(_)))
}

/// The pod's IPs from `status.podIPs`, in order, split into parsed ones (family and canonical
/// text) and unparseable ones (returned verbatim so callers can report them).
///
/// Like upstream, only `status.podIPs` is read; `status.podIP` is its first element by API
/// contract.
pub fn pod_ips(pod: &CachedPod) -> (Vec<(IpFamily, String)>, Vec<String>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for pod_ip in pod.status.as_ref().and_then(|s| s.pod_ips.as_deref()).unwrap_or_default() {
        match canonical_ip(&pod_ip.ip) {
            Some(parsed) => valid.push(parsed),
            None => invalid.push(pod_ip.ip.to_string()),
        }
    }
    (valid, invalid)
}

/// Decimal to integer, Go `dtoi`: (value, characters consumed) or `None`.
fn dtoi(s: &[u8]) -> Option<(u32, usize)> {
    const BIG: u32 = 0xFF_FFFF;
    let mut n: u32 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        n = n * 10 + u32::from(s[i] - b'0');
        if n >= BIG {
            return None;
        }
        i += 1;
    }
    if i == 0 { None } else { Some((n, i)) }
}

/// Hexadecimal to integer, Go `xtoi`: (value, characters consumed) or `None`.
fn xtoi(s: &[u8]) -> Option<(u32, usize)> {
    const BIG: u32 = 0xFF_FFFF;
    let mut n: u32 = 0;
    let mut i = 0;
    while i < s.len() {
        let d = match s[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        n = n * 16 + u32::from(d);
        if n >= BIG {
            return None;
        }
        i += 1;
    }
    if i == 0 { None } else { Some((n, i)) }
}

fn parse_ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut s = s.as_bytes();
    let mut p = [0u8; 4];
    for (i, octet) in p.iter_mut().enumerate() {
        if s.is_empty() {
            return None;
        }
        if i > 0 {
            if s[0] != b'.' {
                return None;
            }
            s = &s[1..];
        }
        let (n, c) = dtoi(s)?;
        *octet = u8::try_from(n).ok()?;
        s = &s[c..];
    }
    if !s.is_empty() {
        return None;
    }
    Some(Ipv4Addr::from(p))
}

fn parse_ipv6_sloppy(s: &str) -> Option<Ipv6Addr> {
    let mut s = s.as_bytes();
    let mut ip = [0u8; 16];
    let mut ellipsis: Option<usize> = None;

    if s.len() >= 2 && s[0] == b':' && s[1] == b':' {
        ellipsis = Some(0);
        s = &s[2..];
        if s.is_empty() {
            return Some(Ipv6Addr::from(ip));
        }
    }

    let mut i = 0usize;
    while i < 16 {
        let (n, c) = xtoi(s)?;
        if n > 0xFFFF {
            return None;
        }
        // Trailing embedded IPv4?
        if c < s.len() && s[c] == b'.' {
            if ellipsis.is_none() && i != 12 {
                return None;
            }
            if i + 4 > 16 {
                return None;
            }
            let v4 = parse_ipv4_sloppy(std::str::from_utf8(s).ok()?)?;
            ip[i..i + 4].copy_from_slice(&v4.octets());
            s = &[];
            i += 4;
            break;
        }
        ip[i] = (n >> 8) as u8;
        ip[i + 1] = (n & 0xFF) as u8;
        i += 2;

        s = &s[c..];
        if s.is_empty() {
            break;
        }
        if s[0] != b':' || s.len() == 1 {
            return None;
        }
        s = &s[1..];
        if s[0] == b':' {
            if ellipsis.is_some() {
                return None;
            }
            ellipsis = Some(i);
            s = &s[1..];
            if s.is_empty() {
                break;
            }
        }
    }

    if !s.is_empty() {
        return None;
    }

    if i < 16 {
        let e = ellipsis?;
        let n = 16 - i;
        // Move the groups after the ellipsis to the end, zero the gap.
        for j in (e..i).rev() {
            ip[j + n] = ip[j];
        }
        for b in ip.iter_mut().skip(e).take(n) {
            *b = 0;
        }
    } else if ellipsis.is_some() {
        // The ellipsis must stand for at least one zero group.
        return None;
    }
    Some(Ipv6Addr::from(ip))
}

// ---------------------------------------------------------------------------------------------
// Selectors and pod-event queueing
// ---------------------------------------------------------------------------------------------

/// True if every `key=value` of an equality-based selector is among `labels`. An empty selector
/// matches everything (`labels.SelectorFromSet` semantics).
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// True if `service` selects `pod`: same namespace, a non-nil `spec.selector`, and the selector
/// matches the pod's labels. A Service without a selector selects nothing (its endpoints are
/// managed out of band).
pub fn service_selects_pod(service: &Service, pod: &CachedPod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    service.metadata.namespace.as_deref().unwrap_or("") == pod.metadata.namespace.as_deref().unwrap_or("")
        && pod.labels.matches(selector)
}

/// Keys (`namespace/name`) of the Services in `namespace` whose selector matches `labels`
/// (upstream `getServicesForPod`). Services without a selector are skipped.
pub fn services_for_pod<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<String> {
    services
        .into_iter()
        .filter(|svc| svc.metadata.namespace.as_deref().unwrap_or("") == namespace)
        .filter(|svc| {
            svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|sel| selector_matches(sel, labels))
        })
        .map(|svc| format!("{namespace}/{}", svc.metadata.name.as_deref().unwrap_or("")))
        .collect()
}

/// How a pod update can affect endpoints (upstream `podEndpointsChanged`): returns
/// `(pod_changed, labels_changed)`.
///
/// `pod_changed` is true when the deletion timestamp is involved, the `Ready` condition flipped,
/// or `status.podIPs` changed (length or any IP). Phase and nodeName changes alone do not
/// count: nodeName is set before the pod gets an IP.
///
/// Upstream compares deletion timestamps by *pointer*, so any update of a terminating pod
/// counts as a change; that is reproduced here (true whenever either side has one).
///
/// `labels_changed` is true when the labels differ (a missing map equals an empty one) or when
/// `spec.hostname` or `spec.subdomain` differ.
pub fn pod_endpoints_changed(old: &CachedPod, new: &CachedPod) -> (bool, bool) {
    fn host(p: &CachedPod) -> (&str, &str) {
        let spec = p.spec.as_ref();
        (
            spec.and_then(|s| s.hostname.as_deref()).unwrap_or(""),
            spec.and_then(|s| s.subdomain.as_deref()).unwrap_or(""),
        )
    }
    let labels_changed = old.labels != new.labels || host(old) != host(new);

    if old.metadata.deletion_timestamp.is_some() || new.metadata.deletion_timestamp.is_some() {
        return (true, labels_changed);
    }
    if is_pod_ready(old) != is_pod_ready(new) {
        return (true, labels_changed);
    }
    fn ips(p: &CachedPod) -> &[CachedPodIP] {
        p.status.as_ref().and_then(|s| s.pod_ips.as_deref()).unwrap_or_default()
    }
    if ips(old) != ips(new) {
        return (true, labels_changed);
    }
    (false, labels_changed)
}

/// Which Services to queue after a pod's labels changed (upstream
/// `determineNeededServiceUpdates`): the union of the old and new sets when the pod itself also
/// changed, otherwise their symmetric difference.
pub fn determine_needed_service_updates(
    old_services: &BTreeSet<String>,
    new_services: &BTreeSet<String>,
    pod_changed: bool,
) -> BTreeSet<String> {
    if pod_changed {
        old_services.union(new_services).cloned().collect()
    } else {
        old_services.symmetric_difference(new_services).cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, Pod, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    /// The tables build k8s-openapi Pods; the helpers read the cached projection of them.
    fn c(pod: &Pod) -> CachedPod {
        CachedPod::from(pod)
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn pod_with(phase: Option<&str>, pod_ip: &str, pod_ips: &[&str], terminating: bool) -> Pod {
        Pod {
            metadata: ObjectMeta { deletion_timestamp: terminating.then(now), ..Default::default() },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                pod_ip: Some(pod_ip.to_owned()),
                pod_ips: Some(pod_ips.iter().map(|ip| PodIP { ip: (*ip).to_owned() }).collect()),
                ..Default::default()
            }),
        }
    }

    // Port of TestShouldPodBeInEndpoints (k8s.io/endpointslice/util/controller_utils_test.go).
    #[test]
    fn test_should_pod_be_in_endpoints() {
        let cases: Vec<(&str, Pod, bool, bool)> = vec![
            ("Failed pod with Never RestartPolicy", pod_with(Some("Failed"), "1.2.3.4", &[], false), false, false),
            (
                "Succeeded pod with Never RestartPolicy",
                pod_with(Some("Succeeded"), "1.2.3.4", &[], false),
                false,
                false,
            ),
            (
                "Succeeded pod with OnFailure RestartPolicy",
                pod_with(Some("Succeeded"), "1.2.3.4", &[], false),
                false,
                false,
            ),
            ("Empty Pod IPs, Running pod", pod_with(Some("Running"), "", &[], false), false, false),
            (
                "Terminating Pod with includeTerminating=false",
                pod_with(Some("Running"), "1.2.3.4", &[], true),
                false,
                false,
            ),
            ("Failed pod with Always RestartPolicy", pod_with(Some("Failed"), "1.2.3.4", &[], false), false, false),
            ("Pending pod with Never RestartPolicy", pod_with(Some("Pending"), "1.2.3.4", &[], false), false, true),
            ("Unknown pod with OnFailure RestartPolicy", pod_with(Some("Unknown"), "1.2.3.4", &[], false), false, true),
            ("Running pod with Never RestartPolicy", pod_with(Some("Running"), "1.2.3.4", &[], false), false, true),
            (
                "Multiple Pod IPs, Running pod",
                pod_with(Some("Running"), "", &["1.2.3.4", "1234::5678:0000:0000:9abc:def0"], false),
                false,
                true,
            ),
            (
                "Terminating Pod with includeTerminating=true",
                pod_with(Some("Running"), "1.2.3.4", &[], true),
                true,
                true,
            ),
        ];
        for (name, pod, include_terminating, expected) in cases {
            assert_eq!(should_pod_be_in_endpoints(&c(&pod), include_terminating), expected, "{name}");
        }
        // A pod without any status at all has no IP.
        assert!(!should_pod_be_in_endpoints(&CachedPod::default(), true));
    }

    fn simple_pod(namespace: &str, hostname: &str, subdomain: &str) -> Pod {
        Pod {
            metadata: ObjectMeta { namespace: Some(namespace.to_owned()), ..Default::default() },
            spec: Some(PodSpec {
                hostname: Some(hostname.to_owned()),
                subdomain: Some(subdomain.to_owned()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn simple_svc(namespace: &str, name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    // Port of TestShouldSetHostname.
    #[test]
    fn test_should_set_hostname() {
        let cases = [
            ("all matching", simple_pod("ns", "foo", "svc-name"), simple_svc("ns", "svc-name"), true),
            ("all matching, hostname not set", simple_pod("ns", "", "svc-name"), simple_svc("ns", "svc-name"), false),
            (
                "all set, different name/subdomain",
                simple_pod("ns", "hostname", "subdomain"),
                simple_svc("ns", "name"),
                false,
            ),
            (
                "all set, different namespace",
                simple_pod("ns1", "hostname", "svc-name"),
                simple_svc("ns2", "svc-name"),
                false,
            ),
        ];
        for (name, pod, svc, expected) in cases {
            assert_eq!(should_set_hostname(&c(&pod), &svc), expected, "{name}");
        }
    }

    fn cport(name: &str, port: i32, protocol: &str) -> ContainerPort {
        ContainerPort {
            name: Some(name.to_owned()),
            container_port: port,
            protocol: Some(protocol.to_owned()),
            ..Default::default()
        }
    }

    fn ctr(ports: Vec<ContainerPort>) -> Container {
        Container { ports: Some(ports), ..Default::default() }
    }

    fn sidecar(ports: Vec<ContainerPort>, always: bool) -> Container {
        Container {
            ports: Some(ports),
            restart_policy: always.then(|| CONTAINER_RESTART_POLICY_ALWAYS.to_owned()),
            ..Default::default()
        }
    }

    // Port of TestFindPort (k8s.io/endpointslice/utils_test.go).
    #[test]
    fn test_find_port() {
        let int = IntOrString::Int;
        let s = |x: &str| IntOrString::String(x.to_owned());
        let with_host = |mut p: ContainerPort, host_port: Option<i32>, host_ip: Option<&str>| {
            p.host_port = host_port;
            p.host_ip = host_ip.map(str::to_owned);
            p
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Container>, Vec<Container>, IntOrString, Result<i32, ()>)> = vec![
            ("valid int, no ports", vec![Container::default()], vec![], int(93), Ok(93)),
            (
                "valid int, with ports",
                vec![ctr(vec![cport("", 11, "TCP"), cport("p", 22, "TCP")])],
                vec![],
                int(93),
                Ok(93),
            ),
            ("valid str, no ports", vec![Container::default()], vec![], s("p"), Err(())),
            (
                "valid str, one ctr with ports",
                vec![ctr(vec![cport("", 11, "UDP"), cport("p", 22, "TCP"), cport("q", 33, "TCP")])],
                vec![],
                s("q"),
                Ok(33),
            ),
            (
                "valid str, two ctr with ports",
                vec![
                    Container::default(),
                    ctr(vec![cport("", 11, "UDP"), cport("p", 22, "TCP"), cport("q", 33, "TCP")]),
                ],
                vec![],
                s("q"),
                Ok(33),
            ),
            (
                "valid str, two ctr with same port",
                vec![
                    Container::default(),
                    ctr(vec![cport("", 11, "UDP"), cport("p", 22, "TCP"), cport("q", 22, "TCP")]),
                ],
                vec![],
                s("q"),
                Ok(22),
            ),
            (
                "valid str, invalid protocol",
                vec![Container::default(), ctr(vec![cport("a", 11, "snmp")])],
                vec![],
                s("a"),
                Err(()),
            ),
            (
                "valid hostPort",
                vec![Container::default(), ctr(vec![with_host(cport("a", 11, "TCP"), Some(81), None)])],
                vec![],
                s("a"),
                Ok(11),
            ),
            (
                "invalid hostPort",
                vec![Container::default(), ctr(vec![with_host(cport("a", 11, "TCP"), Some(-1), None)])],
                vec![],
                s("a"),
                Ok(11),
            ),
            (
                "invalid ContainerPort",
                vec![Container::default(), ctr(vec![cport("a", -1, "TCP")])],
                vec![],
                s("a"),
                Ok(-1),
            ),
            (
                "HostIP Address",
                vec![Container::default(), ctr(vec![with_host(cport("a", 11, "TCP"), None, Some("192.168.1.1"))])],
                vec![],
                s("a"),
                Ok(11),
            ),
            (
                "Sidecar initContainer named port",
                vec![],
                vec![sidecar(vec![with_host(cport("a", 80, "TCP"), Some(-1), None)], true)],
                s("a"),
                Ok(80),
            ),
            (
                "Invalid(restartPolicy != Always) initContainer named port",
                vec![],
                vec![sidecar(vec![with_host(cport("a", 80, "TCP"), Some(-1), None)], false)],
                s("a"),
                Err(()),
            ),
            (
                "App and sidecar containers have the same named port, first app container port will be used",
                vec![ctr(vec![cport("a", 81, "TCP")]), ctr(vec![cport("a", 82, "TCP")])],
                vec![sidecar(vec![cport("a", 80, "TCP")], true)],
                s("a"),
                Ok(81),
            ),
        ];
        for (name, containers, init_containers, target, expected) in cases {
            let pod = Pod {
                spec: Some(PodSpec { containers, init_containers: Some(init_containers), ..Default::default() }),
                ..Default::default()
            };
            let sp = ServicePort { protocol: Some("TCP".into()), target_port: Some(target), ..Default::default() };
            assert_eq!(find_port(&c(&pod), &sp).map_err(|_| ()), expected, "{name}");
        }
    }

    #[test]
    fn find_port_defaults_protocol_and_target_port() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![ctr(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }])],
                ..Default::default()
            }),
            ..Default::default()
        };
        // No protocol on either side: both default to TCP.
        let named = ServicePort { target_port: Some(IntOrString::String("http".into())), ..Default::default() };
        assert_eq!(find_port(&c(&pod), &named), Ok(8080));
        // UDP does not match a TCP-defaulted container port.
        let udp = ServicePort { protocol: Some("UDP".into()), ..named.clone() };
        assert!(find_port(&c(&pod), &udp).is_err());
        // No target port: the Service port.
        let unset = ServicePort { port: 443, ..Default::default() };
        assert_eq!(find_port(&c(&pod), &unset), Ok(443));
        // No spec at all: named ports cannot resolve.
        assert!(find_port(&CachedPod::default(), &named).is_err());
    }

    #[test]
    fn sloppy_ip_parsing_and_canonical_text() {
        let cases: &[(&str, Option<(IpFamily, &str)>)] = &[
            ("1.2.3.4", Some((IpFamily::IPv4, "1.2.3.4"))),
            ("010.001.002.003", Some((IpFamily::IPv4, "10.1.2.3"))),
            ("0000001.2.3.4", Some((IpFamily::IPv4, "1.2.3.4"))),
            ("256.1.1.1", None),
            ("1.2.3", None),
            ("1.2.3.4.", None),
            ("1.2.3.4.5", None),
            (" 1.2.3.4", None),
            ("1234::5678:0000:0000:9abc:def0", Some((IpFamily::IPv6, "1234::5678:0:0:9abc:def0"))),
            ("fd08::5678:0000:0000:9abc:def0", Some((IpFamily::IPv6, "fd08::5678:0:0:9abc:def0"))),
            ("2001:DB8::1", Some((IpFamily::IPv6, "2001:db8::1"))),
            ("2001:0db8:0000:0000:0001:0000:0000:0001", Some((IpFamily::IPv6, "2001:db8::1:0:0:1"))),
            ("00001::1", Some((IpFamily::IPv6, "1::1"))),
            ("::", Some((IpFamily::IPv6, "::"))),
            ("::1", Some((IpFamily::IPv6, "::1"))),
            ("1::", Some((IpFamily::IPv6, "1::"))),
            ("::ffff:1.2.3.4", Some((IpFamily::IPv4, "1.2.3.4"))),
            ("::ffff:010.2.3.4", Some((IpFamily::IPv4, "10.2.3.4"))),
            ("::1.2.3.4", Some((IpFamily::IPv6, "::102:304"))),
            ("1:2:3:4:5:6:1.2.3.4", Some((IpFamily::IPv6, "1:2:3:4:5:6:102:304"))),
            ("1:2:3:4:5:6:7:8", Some((IpFamily::IPv6, "1:2:3:4:5:6:7:8"))),
            // Go accepts this: the trailing ellipsis stands for one zero group.
            ("1:2:3:4:5:6:7::", Some((IpFamily::IPv6, "1:2:3:4:5:6:7:0"))),
            ("1:2:3:4::5:6:7:8", None),
            ("1:2:3:4:5:6:7:8:9", None),
            ("1::2::3", None),
            ("1:2:3:4:5:1.2.3.4", None),
            ("fe80::1%eth0", None),
            ("10.0.0.0/8", None),
            ("12345::", None),
            ("", None),
            ("abc", None),
            (":", None),
            (":::", None),
            ("1:", None),
        ];
        for (input, expected) in cases {
            let got = canonical_ip(input);
            let want = expected.map(|(f, t)| (f, t.to_owned()));
            assert_eq!(got, want, "{input}");
            // The borrowing variant gives the same text, and borrows exactly when unchanged.
            let cow = canonical_ip_cow(input);
            assert_eq!(cow.as_ref().map(|(f, t)| (*f, t.to_string())), want, "{input} (cow)");
            if let Some((_, text)) = cow {
                assert_eq!(matches!(text, Cow::Borrowed(_)), text == *input, "{input} (borrowed?)");
            }
        }
        assert!(is_ipv6_string("2000::1"));
        assert!(!is_ipv6_string("10.0.0.10"));
        assert!(!is_ipv6_string("None"));
    }

    proptest::proptest! {
        // Never panics; whenever the (stricter) standard parser accepts a string, the sloppy
        // parser yields the same address (IPv4-mapped IPv6 folded to IPv4, as Go does).
        #[test]
        fn sloppy_parser_agrees_with_std(s in "[0-9a-fA-F:.]{0,45}") {
            let ours = parse_ip_sloppy(&s);
            proptest::prop_assert_eq!(
                canonical_ip_cow(&s).map(|(f, t)| (f, t.into_owned())),
                canonical_ip(&s)
            );
            if let Ok(std) = s.parse::<IpAddr>() {
                let folded = match std {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                proptest::prop_assert_eq!(ours, Some(folded));
            }
        }

        #[test]
        fn canonical_text_round_trips(v6 in proptest::prelude::any::<u128>(), v4 in proptest::prelude::any::<u32>()) {
            for ip in [IpAddr::V6(Ipv6Addr::from(v6)), IpAddr::V4(Ipv4Addr::from(v4))] {
                let text = canonical_ip_text(&ip);
                let (family, again) = canonical_ip(&text).unwrap();
                proptest::prop_assert_eq!(&again, &text);
                let (_, borrowed) = canonical_ip_cow(&text).unwrap();
                proptest::prop_assert!(matches!(borrowed, Cow::Borrowed(_)), "{} not borrowed", text);
                proptest::prop_assert_eq!(family, IpFamily::of(&parse_ip_sloppy(&text).unwrap()));
            }
        }
    }

    #[test]
    fn pod_ips_reports_invalid_entries() {
        let pod = pod_with(Some("Running"), "1.2.3.4", &["1.2.3.4", "not-an-ip", "fd00::01"], false);
        let (valid, invalid) = pod_ips(&c(&pod));
        assert_eq!(valid, vec![(IpFamily::IPv4, "1.2.3.4".to_owned()), (IpFamily::IPv6, "fd00::1".to_owned())]);
        assert_eq!(invalid, vec!["not-an-ip".to_owned()]);
    }

    fn labelled_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("test".into()),
                name: Some("pod".into()),
                labels: Some(BTreeMap::from([("foo".to_owned(), "bar".to_owned())])),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: POD_READY.into(),
                    status: "False".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    // Port of Test_podChanged.
    #[test]
    fn test_pod_changed() {
        fn set_ips(p: &mut Pod, ips: &[&str]) {
            let status = p.status.get_or_insert_with(Default::default);
            status.pod_ip = ips.first().map(|s| (*s).to_owned());
            status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: (*ip).to_owned() }).collect());
        }
        fn set_label(p: &mut Pod, v: &str) {
            p.metadata.labels.get_or_insert_with(Default::default).insert("label".into(), v.into());
        }
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Box<dyn Fn(&mut Pod, &mut Pod)>, bool, bool)> = vec![
            ("no changes", Box::new(|_, _| {}), false, false),
            (
                "change NodeName",
                Box::new(|_, n| n.spec.as_mut().unwrap().node_name = Some("changed".into())),
                false,
                false,
            ),
            (
                "change ResourceVersion",
                Box::new(|_, n| n.metadata.resource_version = Some("changed".into())),
                false,
                false,
            ),
            ("add primary IPv4", Box::new(|_, n| set_ips(n, &["1.2.3.4"])), true, false),
            (
                "modify primary IPv4",
                Box::new(|o, n| {
                    set_ips(o, &["1.2.3.4"]);
                    set_ips(n, &["2.3.4.5"]);
                }),
                true,
                false,
            ),
            ("add primary IPv6", Box::new(|_, n| set_ips(n, &["fd00:10:96::1"])), true, false),
            (
                "modify primary IPv6",
                Box::new(|o, n| {
                    set_ips(o, &["fd00:10:96::1"]);
                    set_ips(n, &["fd00:10:96::2"]);
                }),
                true,
                false,
            ),
            (
                "add secondary IP",
                Box::new(|o, n| {
                    set_ips(o, &["1.2.3.4"]);
                    set_ips(n, &["1.2.3.4", "fd00:10:96::1"]);
                }),
                true,
                false,
            ),
            (
                "modify secondary IP",
                Box::new(|o, n| {
                    set_ips(o, &["1.2.3.4", "fd00:10:96::1"]);
                    set_ips(n, &["1.2.3.4", "fd00:10:96::2"]);
                }),
                true,
                false,
            ),
            (
                "remove secondary IP",
                Box::new(|o, n| {
                    set_ips(o, &["1.2.3.4", "fd00:10:96::1"]);
                    set_ips(n, &["1.2.3.4"]);
                }),
                true,
                false,
            ),
            (
                "change readiness",
                Box::new(|_, n| n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into()),
                true,
                false,
            ),
            ("mark for deletion", Box::new(|_, n| n.metadata.deletion_timestamp = Some(now())), true, false),
            ("add label", Box::new(|_, n| set_label(n, "new")), false, true),
            (
                "modify label",
                Box::new(|o, n| {
                    set_label(o, "old");
                    set_label(n, "new");
                }),
                false,
                true,
            ),
            ("remove label", Box::new(|o, _| set_label(o, "old")), false, true),
            // Not upstream table rows, but the same rule: hostname/subdomain count as labels.
            ("change hostname", Box::new(|_, n| n.spec.as_mut().unwrap().hostname = Some("h".into())), false, true),
            ("change subdomain", Box::new(|_, n| n.spec.as_mut().unwrap().subdomain = Some("s".into())), false, true),
        ];
        for (name, modify, pod_changed, labels_changed) in cases {
            let mut old = labelled_pod();
            let mut new = old.clone();
            modify(&mut old, &mut new);
            assert_eq!(pod_endpoints_changed(&c(&old), &c(&new)), (pod_changed, labels_changed), "{name}");
        }
    }

    // Port of TestDetermineNeededServiceUpdates.
    #[test]
    fn test_determine_needed_service_updates() {
        let set = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let cases = [
            ("no services changed", set(&["a", "b", "c"]), set(&["a", "b", "c"]), set(&[]), set(&["a", "b", "c"])),
            (
                "all old services removed, new services added",
                set(&["a", "b", "c"]),
                set(&["d", "e", "f"]),
                set(&["a", "b", "c", "d", "e", "f"]),
                set(&["a", "b", "c", "d", "e", "f"]),
            ),
            (
                "all old services removed, no new services added",
                set(&["a", "b", "c"]),
                set(&[]),
                set(&["a", "b", "c"]),
                set(&["a", "b", "c"]),
            ),
            (
                "no old services, but new services added",
                set(&[]),
                set(&["a", "b", "c"]),
                set(&["a", "b", "c"]),
                set(&["a", "b", "c"]),
            ),
            (
                "one service removed, one service added, two unchanged",
                set(&["a", "b", "c"]),
                set(&["b", "c", "d"]),
                set(&["a", "d"]),
                set(&["a", "b", "c", "d"]),
            ),
            ("no services", set(&[]), set(&[]), set(&[]), set(&[])),
        ];
        for (name, a, b, xor, union) in cases {
            assert_eq!(determine_needed_service_updates(&a, &b, false), xor, "{name} (podChanged=false)");
            assert_eq!(determine_needed_service_updates(&a, &b, true), union, "{name} (podChanged=true)");
        }
    }

    // Port of TestGetPodServicesToUpdate (a lister-free version).
    #[test]
    fn test_get_pod_services_to_update() {
        let services: Vec<Service> = (0..3)
            .map(|i| Service {
                metadata: ObjectMeta {
                    name: Some(format!("service-{i}")),
                    namespace: Some("test".into()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    selector: Some(BTreeMap::from([("app".to_owned(), format!("test-{i}"))])),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .chain(std::iter::once(Service {
                // nil selector selects nothing
                metadata: ObjectMeta {
                    name: Some("no-selector".into()),
                    namespace: Some("test".into()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec::default()),
                ..Default::default()
            }))
            .collect();
        for i in 0..5 {
            let labels =
                BTreeMap::from([("app".to_owned(), format!("test-{i}")), ("label".to_owned(), format!("label-{i}"))]);
            let got = services_for_pod(&services, "test", Some(&labels));
            let want: BTreeSet<String> =
                if i < 3 { BTreeSet::from([format!("test/service-{i}")]) } else { BTreeSet::new() };
            assert_eq!(got, want, "pod-{i}");
        }
        // Other namespaces never match; an empty selector matches everything.
        let labels = BTreeMap::from([("app".to_owned(), "test-0".to_owned())]);
        assert!(services_for_pod(&services, "other", Some(&labels)).is_empty());
        assert!(selector_matches(&BTreeMap::new(), None));
    }

    #[test]
    fn service_selects_pod_rules() {
        let pod = labelled_pod();
        let mut svc = simple_svc("test", "svc");
        assert!(!service_selects_pod(&svc, &c(&pod)), "no spec");
        svc.spec = Some(ServiceSpec { selector: Some(BTreeMap::new()), ..Default::default() });
        assert!(service_selects_pod(&svc, &c(&pod)), "empty selector selects all");
        svc.spec = Some(ServiceSpec {
            selector: Some(BTreeMap::from([("foo".to_owned(), "baz".to_owned())])),
            ..Default::default()
        });
        assert!(!service_selects_pod(&svc, &c(&pod)));
        let other_ns = simple_svc("other", "svc");
        assert!(!service_selects_pod(&other_ns, &c(&pod)));
    }

    #[test]
    fn readiness_and_terminal() {
        let mut pod = labelled_pod();
        assert!(!is_pod_ready(&c(&pod)));
        pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = CONDITION_TRUE.into();
        assert!(is_pod_ready(&c(&pod)));
        assert!(!is_pod_terminal(&c(&pod)));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(is_pod_terminal(&c(&pod)));
        assert!(!is_pod_ready(&CachedPod::default()));
    }
}
