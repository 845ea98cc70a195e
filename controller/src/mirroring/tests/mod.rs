//! Tests of the mirroring core: ports of upstream's unit tests (see docs/upstream-tests.md),
//! slices as kube-controller-manager writes them, bad input and property tests.
//!
//! Upstream tests run the reconciler against a fake clientset and count API actions. Here
//! [`Cluster`] plays the apiserver: it stores slices, applies a [`Plan`] (checking names and
//! resourceVersions like the apiserver would) and stores empty maps and lists as absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod kcm;
mod props;
mod upstream;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Config, Input, Plan, plan};
use crate::endpointslice::labels::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};

pub(super) use super::DEFAULT_MANAGED_BY as CONTROLLER_NAME;

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// An Endpoints `namespace/name` with these subsets.
pub(super) fn endpoints(namespace: &str, name: &str, subsets: Vec<EndpointSubset>) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        subsets: Some(subsets),
    }
}

/// A selector-less Service `namespace/name`.
pub(super) fn service(namespace: &str, name: &str) -> Service {
    Service {
        metadata: ObjectMeta { namespace: Some(namespace.into()), name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec::default()),
        ..Default::default()
    }
}

pub(super) fn addr(ip: &str) -> EndpointAddress {
    EndpointAddress { ip: ip.into(), ..Default::default() }
}

/// An address with hostname and node, as many upstream cases use.
pub(super) fn addr_hn(ip: &str, hostname: &str, node: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        hostname: Some(hostname.into()),
        node_name: Some(node.into()),
        ..Default::default()
    }
}

pub(super) fn port(name: &str, port: i32, protocol: &str) -> EndpointPort {
    EndpointPort { name: Some(name.into()), port, protocol: Some(protocol.into()), app_protocol: None }
}

pub(super) fn subset(
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
    ports: Vec<EndpointPort>,
) -> EndpointSubset {
    EndpointSubset {
        addresses: (!ready.is_empty()).then_some(ready),
        not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// Plans with a Service of the Endpoints' name.
pub(super) fn plan_for(ep: &Endpoints, existing: &[EndpointSlice], config: &Config) -> Plan {
    let svc = service(ep.metadata.namespace.as_deref().unwrap_or(""), ep.metadata.name.as_deref().unwrap_or(""));
    let refs: Vec<&EndpointSlice> = existing.iter().collect();
    plan(&Input { endpoints: ep, service: Some(&svc), existing_slices: &refs }, config)
}

/// Labels this controller puts on slices of the Endpoints `name`.
pub(super) fn our_labels(name: &str) -> BTreeMap<String, String> {
    labels(&[(LABEL_SERVICE_NAME, name), (LABEL_MANAGED_BY, CONTROLLER_NAME)])
}

/// A tiny apiserver for EndpointSlices.
#[derive(Debug, Default, Clone)]
pub(super) struct Cluster {
    pub slices: BTreeMap<String, EndpointSlice>,
    next_rv: u64,
}

/// What the apiserver does to empty maps and lists: it stores them as absent.
pub(super) fn normalize(mut s: EndpointSlice) -> EndpointSlice {
    let m = &mut s.metadata;
    if m.labels.as_ref().is_some_and(BTreeMap::is_empty) {
        m.labels = None;
    }
    if m.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        m.annotations = None;
    }
    if s.endpoints.as_ref().is_some_and(Vec::is_empty) {
        s.endpoints = None;
    }
    if s.ports.as_ref().is_some_and(Vec::is_empty) {
        s.ports = None;
    }
    s
}

impl Cluster {
    pub fn new(existing: Vec<EndpointSlice>) -> Self {
        let mut c = Cluster::default();
        for mut s in existing {
            c.next_rv += 1;
            s.metadata.resource_version = Some(c.next_rv.to_string());
            let name = s.metadata.name.clone().expect("existing slices need names");
            c.slices.insert(name, normalize(s));
        }
        c
    }

    pub fn list(&self) -> Vec<EndpointSlice> {
        self.slices.values().cloned().collect()
    }

    /// Applies a plan the way the apiserver would: creates need a fresh name, updates an
    /// existing name and (when given) the current resourceVersion. Deletes of missing slices
    /// succeed (404 is success).
    pub fn apply(&mut self, plan: &Plan) -> Result<(), String> {
        for s in &plan.create {
            let name = s.metadata.name.clone().ok_or("create without name")?;
            if self.slices.contains_key(&name) {
                return Err(format!("409 AlreadyExists: {name}"));
            }
            if s.metadata.resource_version.is_some() {
                return Err(format!("create of {name} with a resourceVersion"));
            }
            self.next_rv += 1;
            let mut s = s.clone();
            s.metadata.resource_version = Some(self.next_rv.to_string());
            s.metadata.uid = Some(format!("slice-uid-{}", self.next_rv));
            s.metadata.generation = Some(1);
            self.slices.insert(name, normalize(s));
        }
        for s in &plan.update {
            let name = s.metadata.name.clone().ok_or("update without name")?;
            let cur = self.slices.get(&name).ok_or(format!("404 on update of {name}"))?;
            if s.metadata.resource_version.is_some() && s.metadata.resource_version != cur.metadata.resource_version {
                return Err(format!("409 Conflict on {name}"));
            }
            self.next_rv += 1;
            let mut s = s.clone();
            s.metadata.resource_version = Some(self.next_rv.to_string());
            s.metadata.generation = Some(cur.metadata.generation.unwrap_or(1) + 1);
            self.slices.insert(name, normalize(s));
        }
        for s in &plan.delete {
            if let Some(name) = &s.metadata.name {
                self.slices.remove(name);
            }
        }
        Ok(())
    }
}
