//! Tests for the service env core: upstream ports (`golden`), our rules (`rules`, `patching`,
//! `reviewing`) and properties (`props`). Shared fixtures and a small model of the kubelet's
//! env assembly live here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod golden;
mod patching;
mod props;
mod reviewing;
mod rules;

use std::collections::{BTreeMap, HashMap};

use json_patch::Patch;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ServiceEnvVar, from_services, visible_services};

/// A Service; `ports` are (name, port, protocol) with "" meaning unset.
pub(super) fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Service {
        metadata: ObjectMeta { name: Some(name.to_owned()), namespace: Some(ns.to_owned()), ..ObjectMeta::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_owned()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| ServicePort {
                        name: opt(n),
                        port: *p,
                        protocol: opt(proto),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub(super) fn ev(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), value_from: None }
}

pub(super) fn var(name: &str, value: &str) -> ServiceEnvVar {
    ServiceEnvVar { name: name.to_owned(), value: value.to_owned() }
}

pub(super) fn container(name: &str, env: Option<Vec<EnvVar>>) -> Container {
    Container { name: name.to_owned(), env, ..Container::default() }
}

pub(super) fn pod(ns: &str, links: Option<bool>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some("p".to_owned()), namespace: Some(ns.to_owned()), ..ObjectMeta::default() },
        spec: Some(PodSpec { containers, enable_service_links: links, ..PodSpec::default() }),
        status: None,
    }
}

/// A patch as the core writes it (JSON bytes) or parsed.
pub(super) trait PatchLike {
    fn ops(&self) -> Patch;
}

impl PatchLike for Patch {
    fn ops(&self) -> Patch {
        self.clone()
    }
}

impl PatchLike for Vec<u8> {
    fn ops(&self) -> Patch {
        serde_json::from_slice(self).expect("the patch is a valid RFC 6902 document")
    }
}

/// Applies `patch` to the JSON form of `pod`, as the API server would.
pub(super) fn apply(pod: &Pod, patch: &impl PatchLike) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, &patch.ops().0).unwrap();
    serde_json::from_value(doc).unwrap()
}

/// Env of the first regular container.
pub(super) fn env0(pod: &Pod) -> Vec<EnvVar> {
    pod.spec.as_ref().unwrap().containers[0].env.clone().unwrap_or_default()
}

/// Name→value, sorted by name, as upstream's test compares.
pub(super) fn sorted_pairs(env: &[EnvVar]) -> Vec<(String, String)> {
    let mut v: Vec<_> = env.iter().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
    v.sort();
    v
}

pub(super) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    v.sort();
    v
}

/// The kubelet's `$(VAR)` expansion: a reference to a known name is replaced, `$$` is a literal
/// `$`, anything else is kept as written.
pub(super) fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("$(")
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Model of the kubelet's `makeEnvironmentVariables` for a container without `envFrom` or
/// `valueFrom` sources: the service map (`getServiceEnvVarMap`), then the container's `env` in
/// order with `$(VAR)` expansion against earlier entries and the service map, then every service
/// variable not already declared. Returns the final environment as a map.
pub(super) fn kubelet_env(pod_ns: &str, links: bool, services: &[Service], env: &[EnvVar]) -> BTreeMap<String, String> {
    let visible = visible_services(pod_ns, links, services);
    let service_env: HashMap<String, String> =
        from_services(&visible.services).into_iter().map(|v| (v.name, v.value)).collect();
    let mut tmp: HashMap<String, String> = HashMap::new();
    for e in env {
        let raw = e.value.clone().unwrap_or_default();
        let value = if raw.is_empty() {
            raw
        } else {
            let lookup = |n: &str| tmp.get(n).or_else(|| service_env.get(n)).cloned();
            expand(&raw, &lookup)
        };
        tmp.insert(e.name.clone(), value);
    }
    let mut out: BTreeMap<String, String> = tmp.clone().into_iter().collect();
    for (k, v) in service_env {
        out.entry(k).or_insert(v);
    }
    out
}

/// Standard base64 decoding (test side of the encoder), by the `base64` crate.
pub(super) fn unbase64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
