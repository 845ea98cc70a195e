//! [`CachedPod`]: what the controllers keep of a Pod, deserialized straight from the API's JSON.
//!
//! The endpoint controllers read a handful of a Pod's fields (identity, labels, deletion, node,
//! hostname/subdomain, container ports and sidecar restart policy, phase, IPs, the `Ready`
//! condition). A k8s-openapi `Pod` is several KB even when pruned to those fields, mostly the
//! inline size of `PodSpec`, `Container` and `PodStatus` (dozens of `Option` fields each), and
//! decoding a full Pod allocates every managed field, env var and volume of every watch event
//! only to throw them away. A `CachedPod` has only the fields read, with k8s-openapi's field names
//! and paths (`spec.containers[].ports`, `status.podIPs`, …) so the core reads it the same way:
//!
//! - the fields nobody reads are skipped while decoding (never allocated): `managedFields`,
//!   annotations, owner references, env, volumes, probes, resources, the other conditions, …;
//! - strings are `Box<str>` and lists `Box<[T]>` (no spare capacity); the enum-like values
//!   (`phase`, `protocol`, `restartPolicy`, the condition's type and status) are
//!   `Cow<'static, str>` that borrow a static string for the known values, so the usual
//!   `Running` / `TCP` / `Always` / `Ready` / `True` cost no allocation;
//! - `metadata` is a [`PodMeta`] of the four fields read (name, namespace, uid, deletion time)
//!   rather than an `ObjectMeta` (≈350 bytes inline); the name is an `Arc<str>` that the
//!   membership index and the trigger-time trackers share, and the cache hands every pod of a
//!   namespace the same namespace string ([`Interner`]);
//! - the labels move out of `metadata` into [`PodLabels`] (sorted key/value pairs in one boxed
//!   slice; a `BTreeMap` allocates a ≈550-byte node even for one label): read them through
//!   [`CachedPod::labels`], never `metadata.labels`, which is always `None`.
//!
//! The watch needs a `kube::Resource` with an `ObjectMeta` (it reads each event's
//! resourceVersion): that is [`WatchedPod`], a `CachedPod` plus the name, namespace and
//! resourceVersion, which the cache projects to its `CachedPod`. It is read-only on purpose: no
//! `Serialize`, so an `Api<WatchedPod>` can list and watch but never write a projection back over
//! a Pod.
//!
//! [`CachedPod::from`] a k8s-openapi `Pod` applies the same projection (tests build `Pod`s; the
//! deserialization test pins that both agree).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodCondition, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::podutil::POD_READY;

/// A string that is usually one of a few API enum values ([`KNOWN_VALUES`]): those borrow a
/// static string, anything else is owned.
pub type EnumText = Cow<'static, str>;

/// The enum values of the fields typed [`EnumText`]: pod phases, protocols, the sidecar restart
/// policy, the `Ready` condition type and condition statuses.
pub const KNOWN_VALUES: &[&str] =
    &["Running", "Pending", "Succeeded", "Failed", "Unknown", "TCP", "UDP", "SCTP", "Always", "Ready", "True", "False"];

fn known(s: &str) -> Option<&'static str> {
    KNOWN_VALUES.iter().copied().find(|k| *k == s)
}

/// `s` as an [`EnumText`], borrowing the static string when it is a [`KNOWN_VALUES`] entry.
pub fn enum_text(s: String) -> EnumText {
    known(&s).map_or(Cow::Owned(s), Cow::Borrowed)
}

/// The Pod as the controllers cache it: [`PodMeta`] (name, namespace, uid, deletionTimestamp),
/// [`PodLabels`], [`CachedPodSpec`] and [`CachedPodStatus`]. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "RawPod")]
pub struct CachedPod {
    /// `metadata`: the kept fields, *without labels* (see [`CachedPod::labels`]).
    pub metadata: PodMeta,
    /// `metadata.labels`, kept out of `metadata` in a compact form.
    pub labels: PodLabels,
    /// `spec`.
    pub spec: Option<CachedPodSpec>,
    /// `status`.
    pub status: Option<CachedPodStatus>,
}

/// `metadata` of a [`CachedPod`]: the fields the controllers read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.name`.
    pub name: Option<Arc<str>>,
    /// `metadata.namespace` (one shared string per namespace in the cache).
    pub namespace: Option<Arc<str>>,
    /// `metadata.uid`.
    pub uid: Option<Box<str>>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<Time>,
}

impl crate::runtime::cache::Cached for CachedPod {
    fn cache_key(&self) -> (&str, &str) {
        (self.metadata.namespace.as_deref().unwrap_or(""), self.metadata.name.as_deref().unwrap_or(""))
    }
}

/// Hands out one shared copy of each string: the cache gives the pods of a namespace one
/// namespace string, the pods of a node one node name, and pods with the same label keys and
/// values (the replicas of a workload) the same label strings.
///
/// Strings no cached pod uses any more are dropped when the set has doubled since the last
/// sweep, so a stream of unique values (a StatefulSet's pod-name labels, say) does not pile up.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    sweep_at: usize,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: Arc<str>) -> Arc<str> {
        if let Some(shared) = self.strings.get(&*s) {
            return shared.clone();
        }
        if self.strings.len() >= self.sweep_at {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.sweep_at = (self.strings.len() * 2).max(1024);
        }
        self.strings.insert(s.clone());
        s
    }

    /// How many strings it holds.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// A Pod as the watch decodes it: the [`CachedPod`] and the metadata the watch itself reads
/// (name, namespace, resourceVersion). The cache keeps only [`WatchedPod::into_cached`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "RawPod")]
pub struct WatchedPod {
    metadata: ObjectMeta,
    pod: CachedPod,
}

impl WatchedPod {
    /// The cached projection, its namespace, node name and labels shared through `strings`.
    pub fn into_cached(self, strings: &mut Interner) -> CachedPod {
        let mut pod = self.pod;
        pod.metadata.namespace = pod.metadata.namespace.map(|ns| strings.intern(ns));
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = spec.node_name.take().map(|n| strings.intern(n));
        }
        pod.labels = PodLabels(
            pod.labels.0.iter().map(|(k, v)| (strings.intern(k.clone()), strings.intern(v.clone()))).collect(),
        );
        pod
    }
}

/// A pod's labels, sorted by key, as a boxed slice of pairs: a `BTreeMap` allocates a ≈550-byte
/// node however few labels a pod has, and there is one per cached pod. The strings are `Arc`s so
/// that the cache can share them between pods ([`Interner`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLabels(Box<[(Arc<str>, Arc<str>)]>);

impl PodLabels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// The labels, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every `key=value` of `selector` is among the labels (an empty selector matches).
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }

    /// As a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

impl From<BTreeMap<String, String>> for PodLabels {
    fn from(m: BTreeMap<String, String>) -> Self {
        PodLabels(m.into_iter().map(|(k, v)| (Arc::from(k), Arc::from(v))).collect())
    }
}

impl From<Option<BTreeMap<String, String>>> for PodLabels {
    fn from(m: Option<BTreeMap<String, String>>) -> Self {
        m.map(PodLabels::from).unwrap_or_default()
    }
}

/// `spec`: node, hostname/subdomain, containers and init containers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    /// `spec.nodeName`.
    #[serde(default, deserialize_with = "de_shared_str_opt")]
    pub node_name: Option<Arc<str>>,
    /// `spec.hostname`.
    pub hostname: Option<Box<str>>,
    /// `spec.subdomain`.
    pub subdomain: Option<Box<str>>,
    /// `spec.containers`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Box<[CachedContainer]>,
    /// `spec.initContainers` (the restartable ones, sidecars, declare ports that count).
    pub init_containers: Option<Box<[CachedContainer]>>,
}

/// A container: its ports and restart policy. Its name is not kept (nothing reads it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainer {
    /// `ports`.
    pub ports: Option<Box<[CachedContainerPort]>>,
    /// `restartPolicy` (`Always` marks a sidecar among the init containers).
    #[serde(default, deserialize_with = "de_enum_text_opt")]
    pub restart_policy: Option<EnumText>,
}

/// A container port: name, number, protocol (host port and IP are not kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerPort {
    /// `name`.
    pub name: Option<Box<str>>,
    /// `containerPort`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub container_port: i32,
    /// `protocol` (unset means `TCP`, the apiserver default).
    #[serde(default, deserialize_with = "de_enum_text_opt")]
    pub protocol: Option<EnumText>,
}

/// `status`: phase, IPs and the `Ready` condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// `status.phase`.
    #[serde(default, deserialize_with = "de_enum_text_opt")]
    pub phase: Option<EnumText>,
    /// `status.podIP`.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<Box<str>>,
    /// `status.podIPs`.
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Box<[CachedPodIP]>>,
    /// `status.conditions`, only those of type `Ready` (in their order).
    #[serde(default, deserialize_with = "de_ready_conditions")]
    pub conditions: Option<Box<[CachedPodCondition]>>,
}

/// An entry of `status.podIPs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CachedPodIP {
    /// `ip`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ip: Box<str>,
}

/// A pod condition (only `Ready` ones are kept): type, status, last transition time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodCondition {
    /// `type`.
    #[serde(rename = "type", default, deserialize_with = "de_enum_text")]
    pub type_: EnumText,
    /// `status`.
    #[serde(default, deserialize_with = "de_enum_text")]
    pub status: EnumText,
    /// `lastTransitionTime` (the trigger-time annotation uses the `Ready` one's).
    pub last_transition_time: Option<Time>,
}

// ---------------------------------------------------------------------------------------------
// kube::Resource
// ---------------------------------------------------------------------------------------------

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

// ---------------------------------------------------------------------------------------------
// Deserialization helpers
// ---------------------------------------------------------------------------------------------

/// The kept fields of `metadata`; the others (`managedFields`, annotations, owner references,
/// …) are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<Time>,
}

impl KeptMeta {
    /// What the watch reads (name, namespace, resourceVersion), the cached metadata and the
    /// labels.
    fn split(self) -> (ObjectMeta, PodMeta, PodLabels) {
        let name: Option<Arc<str>> = self.name.map(Arc::from);
        let namespace: Option<Arc<str>> = self.namespace.map(Arc::from);
        let watched = ObjectMeta {
            name: name.as_deref().map(str::to_owned),
            namespace: namespace.as_deref().map(str::to_owned),
            resource_version: self.resource_version,
            ..Default::default()
        };
        let meta =
            PodMeta { name, namespace, uid: self.uid.map(Box::from), deletion_timestamp: self.deletion_timestamp };
        (watched, meta, PodLabels::from(self.labels))
    }
}

/// The Pod as decoded, before the labels move out of `metadata`.
#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: Option<KeptMeta>,
    #[serde(default)]
    spec: Option<CachedPodSpec>,
    #[serde(default)]
    status: Option<CachedPodStatus>,
}

impl From<RawPod> for WatchedPod {
    fn from(p: RawPod) -> Self {
        let (watched, metadata, labels) = p.metadata.map(KeptMeta::split).unwrap_or_default();
        WatchedPod { metadata: watched, pod: CachedPod { metadata, labels, spec: p.spec, status: p.status } }
    }
}

impl From<RawPod> for CachedPod {
    fn from(p: RawPod) -> Self {
        WatchedPod::from(p).pod
    }
}

/// A required field: `null` reads as the default, as k8s-openapi does.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string read without allocating when the JSON text has no escapes (serde_json lends it).
struct LentStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for LentStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LentStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LentStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LentStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(LentStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl LentStr<'_> {
    fn into_enum_text(self) -> EnumText {
        match known(&self.0) {
            Some(k) => Cow::Borrowed(k),
            None => Cow::Owned(self.0.into_owned()),
        }
    }
}

fn de_shared_str_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<LentStr<'de>>::deserialize(d)?.map(|s| Arc::from(&*s.0)))
}

fn de_enum_text<'de, D: Deserializer<'de>>(d: D) -> Result<EnumText, D::Error> {
    Ok(Option::<LentStr<'de>>::deserialize(d)?.map(LentStr::into_enum_text).unwrap_or_default())
}

fn de_enum_text_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EnumText>, D::Error> {
    Ok(Option::<LentStr<'de>>::deserialize(d)?.map(LentStr::into_enum_text))
}

/// A condition as decoded, before the non-`Ready` ones are dropped: its strings are lent by
/// the input where possible, so dropping one allocates nothing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyCondition<'a> {
    #[serde(rename = "type", borrow)]
    type_: Option<LentStr<'a>>,
    #[serde(borrow)]
    status: Option<LentStr<'a>>,
    last_transition_time: Option<Time>,
}

fn de_ready_conditions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<[CachedPodCondition]>>, D::Error> {
    struct Ready;
    impl<'de> Visitor<'de> for Ready {
        type Value = Box<[CachedPodCondition]>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of pod conditions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::new();
            while let Some(c) = seq.next_element::<AnyCondition<'de>>()? {
                if c.type_.as_ref().map_or("", |t| &*t.0) == POD_READY {
                    kept.push(CachedPodCondition {
                        type_: Cow::Borrowed(POD_READY),
                        status: c.status.map(LentStr::into_enum_text).unwrap_or_default(),
                        last_transition_time: c.last_transition_time,
                    });
                }
            }
            Ok(kept.into_boxed_slice())
        }
    }
    struct OptReady;
    impl<'de> Visitor<'de> for OptReady {
        type Value = Option<Box<[CachedPodCondition]>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of pod conditions or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(Ready).map(Some)
        }
    }
    d.deserialize_option(OptReady)
}

// ---------------------------------------------------------------------------------------------
// From k8s-openapi's Pod
// ---------------------------------------------------------------------------------------------

/// The kept fields of a Pod's metadata, and its labels.
fn project_meta(m: ObjectMeta) -> (ObjectMeta, PodMeta, PodLabels) {
    KeptMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        deletion_timestamp: m.deletion_timestamp,
    }
    .split()
}

fn boxed<T, U: From<T>>(v: Vec<T>) -> Box<[U]> {
    v.into_iter().map(U::from).collect()
}

impl From<ContainerPort> for CachedContainerPort {
    fn from(p: ContainerPort) -> Self {
        CachedContainerPort {
            name: p.name.map(Box::from),
            container_port: p.container_port,
            protocol: p.protocol.map(enum_text),
        }
    }
}

impl From<Container> for CachedContainer {
    fn from(c: Container) -> Self {
        CachedContainer { ports: c.ports.map(boxed), restart_policy: c.restart_policy.map(enum_text) }
    }
}

impl From<PodSpec> for CachedPodSpec {
    fn from(s: PodSpec) -> Self {
        CachedPodSpec {
            node_name: s.node_name.map(Arc::from),
            hostname: s.hostname.map(Box::from),
            subdomain: s.subdomain.map(Box::from),
            containers: boxed(s.containers),
            init_containers: s.init_containers.map(boxed),
        }
    }
}

impl From<PodIP> for CachedPodIP {
    fn from(ip: PodIP) -> Self {
        CachedPodIP { ip: ip.ip.into() }
    }
}

impl From<PodCondition> for CachedPodCondition {
    fn from(c: PodCondition) -> Self {
        CachedPodCondition {
            type_: enum_text(c.type_),
            status: enum_text(c.status),
            last_transition_time: c.last_transition_time,
        }
    }
}

impl From<PodStatus> for CachedPodStatus {
    fn from(s: PodStatus) -> Self {
        CachedPodStatus {
            phase: s.phase.map(enum_text),
            pod_ip: s.pod_ip.map(Box::from),
            pod_ips: s.pod_ips.map(boxed),
            conditions: s
                .conditions
                .map(|cs| cs.into_iter().filter(|c| c.type_ == POD_READY).map(CachedPodCondition::from).collect()),
        }
    }
}

impl From<Pod> for CachedPod {
    fn from(p: Pod) -> Self {
        let (_, metadata, labels) = project_meta(p.metadata);
        CachedPod {
            metadata,
            labels,
            spec: p.spec.map(CachedPodSpec::from),
            status: p.status.map(CachedPodStatus::from),
        }
    }
}

impl From<&Pod> for CachedPod {
    fn from(p: &Pod) -> Self {
        CachedPod::from(p.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;
    use kube::Resource;
    use proptest::prelude::*;

    /// A Pod as kube-apiserver returns it for a kwok pod with a sidecar: defaulted spec,
    /// managed fields, env, volumes, five conditions, dual-stack IPs, a plain init container and
    /// a restartable one (sidecar) with a named port, terminating.
    const FULL_POD: &str = r#"{
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {
        "name": "web-7d4b9c8f6-x2x9q",
        "generateName": "web-7d4b9c8f6-",
        "namespace": "shop",
        "uid": "0b4c3f1e-2a7d-4e8b-9c61-5f0e2d3a4b5c",
        "resourceVersion": "48213",
        "generation": 1,
        "creationTimestamp": "2026-11-25T10:00:00Z",
        "deletionTimestamp": "2026-11-25T10:05:00Z",
        "deletionGracePeriodSeconds": 30,
        "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6", "tier": "front"},
        "annotations": {"kwok.x-k8s.io/status": "custom", "note": "a \"quoted\" value"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6",
          "uid": "11111111-2222-3333-4444-555555555555", "controller": true, "blockOwnerDeletion": true}],
        "finalizers": ["epslice.test/hold"],
        "managedFields": [
          {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
           "time": "2026-11-25T10:00:00Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}},
          {"manager": "kwok", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T10:00:02Z",
           "fieldsType": "FieldsV1", "subresource": "status",
           "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:podIPs": {}}}}
        ]
      },
      "spec": {
        "volumes": [{"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
          {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
          {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
        "initContainers": [
          {"name": "migrate", "image": "registry.invalid/migrate:1", "command": ["/migrate", "--all"],
           "resources": {}, "terminationMessagePath": "/dev/termination-log",
           "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"},
          {"name": "proxy", "image": "registry.invalid/proxy:1", "restartPolicy": "Always",
           "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "TCP"},
                     {"name": "dns", "containerPort": 5353, "protocol": "UDP", "hostPort": 5353, "hostIP": "0.0.0.0"}],
           "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
           "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
           "imagePullPolicy": "IfNotPresent"}
        ],
        "containers": [
          {"name": "app", "image": "registry.invalid/app:1",
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                     {"containerPort": 9090, "protocol": "TCP"},
                     {"name": "metrics", "containerPort": 9100, "protocol": "SCTP"}],
           "env": [{"name": "MODE", "value": "prod"},
                   {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
           "resources": {"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
           "volumeMounts": [{"name": "kube-api-access-abcde", "readOnly": true,
                             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
           "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
           "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
           "imagePullPolicy": "IfNotPresent"},
          {"name": "logger", "image": "registry.invalid/logger:1", "resources": {},
           "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
           "imagePullPolicy": "IfNotPresent"}
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": "kwok-node-3",
        "hostNetwork": false,
        "hostname": "web-0",
        "subdomain": "web-headless",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
          {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
          {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
      },
      "status": {
        "phase": "Running",
        "conditions": [
          {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null,
           "lastTransitionTime": "2026-11-25T10:00:01Z"},
          {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-25T10:00:01Z"},
          {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-25T10:00:02Z",
           "reason": "", "message": ""},
          {"type": "ContainersReady", "status": "True", "lastProbeTime": null,
           "lastTransitionTime": "2026-11-25T10:00:02Z"},
          {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-25T10:00:00Z"}
        ],
        "hostIP": "10.240.0.3",
        "hostIPs": [{"ip": "10.240.0.3"}],
        "podIP": "10.244.3.17",
        "podIPs": [{"ip": "10.244.3.17"}, {"ip": "fd00:10:244:3::11"}],
        "startTime": "2026-11-25T10:00:00Z",
        "initContainerStatuses": [
          {"name": "migrate", "state": {"terminated": {"exitCode": 0, "reason": "Completed",
           "startedAt": "2026-11-25T10:00:00Z", "finishedAt": "2026-11-25T10:00:01Z"}},
           "lastState": {}, "ready": true, "restartCount": 0, "image": "registry.invalid/migrate:1", "imageID": ""},
          {"name": "proxy", "state": {"running": {"startedAt": "2026-11-25T10:00:01Z"}}, "lastState": {},
           "ready": true, "restartCount": 0, "image": "registry.invalid/proxy:1", "imageID": "", "started": true}
        ],
        "containerStatuses": [
          {"name": "app", "state": {"running": {"startedAt": "2026-11-25T10:00:01Z"}}, "lastState": {},
           "ready": true, "restartCount": 0, "image": "registry.invalid/app:1", "imageID": "", "started": true},
          {"name": "logger", "state": {"running": {"startedAt": "2026-11-25T10:00:01Z"}}, "lastState": {},
           "ready": true, "restartCount": 0, "image": "registry.invalid/logger:1", "imageID": "", "started": true}
        ],
        "qosClass": "Burstable"
      }
    }"#;

    /// One of the side-by-side benchmark's pods (`tests/support/bench`) as kube-apiserver
    /// returns it: two labels, one container with a named port, kwok's Running status.
    const BENCH_POD: &str = r#"{
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {
        "name": "s1-svc-0042-pod-007",
        "namespace": "bench-3",
        "uid": "6f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8",
        "resourceVersion": "210734",
        "creationTimestamp": "2026-11-25T10:00:00Z",
        "labels": {"app": "s1-svc-0042", "epslice-bench": "1"},
        "annotations": {"kwok.x-k8s.io/status": "custom"},
        "managedFields": [
          {"manager": "epslice-bench", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T10:00:00Z",
           "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kwok.x-k8s.io/status": {}},
                                       "f:labels": {".": {}, "f:app": {}, "f:epslice-bench": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {},
                          "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {".": {},
                          "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {},
                          "f:name": {}, "f:protocol": {}}}, "f:resources": {}, "f:terminationMessagePath": {},
                          "f:terminationMessagePolicy": {}}}, "f:dnsPolicy": {}, "f:enableServiceLinks": {},
                          "f:nodeName": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                          "f:terminationGracePeriodSeconds": {}}}},
          {"manager": "epslice-bench", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T10:00:01Z",
           "fieldsType": "FieldsV1", "subresource": "status",
           "fieldsV1": {"f:status": {"f:conditions": {".": {}, "k:{\"type\":\"ContainersReady\"}": {".": {},
             "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}, "k:{\"type\":\"Ready\"}": {".": {},
             "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}}, "f:hostIP": {}, "f:phase": {},
             "f:podIP": {}, "f:podIPs": {".": {}, "k:{\"ip\":\"10.0.42.7\"}": {".": {}, "f:ip": {}}}}}}
        ]
      },
      "spec": {
        "containers": [
          {"name": "app", "image": "registry.invalid/app:1",
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
           "resources": {}, "terminationMessagePath": "/dev/termination-log",
           "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "nodeName": "kwok-node-7",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
          {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
          {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
      },
      "status": {
        "phase": "Running",
        "conditions": [
          {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-25T10:00:01Z"},
          {"type": "ContainersReady", "status": "True", "lastProbeTime": null,
           "lastTransitionTime": "2026-11-25T10:00:01Z"}
        ],
        "hostIP": "10.240.0.1",
        "podIP": "10.0.42.7",
        "podIPs": [{"ip": "10.0.42.7"}],
        "qosClass": "BestEffort"
      }
    }"#;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn a_full_pod_decodes_to_its_projection() {
        let full: Pod = serde_json::from_str(FULL_POD).unwrap();
        // The fixture really is a full Pod.
        assert!(full.metadata.managed_fields.as_ref().is_some_and(|m| m.len() == 2));
        assert!(full.spec.as_ref().unwrap().containers[0].env.is_some());
        assert_eq!(full.status.as_ref().unwrap().conditions.as_ref().unwrap().len(), 5);

        let cached: CachedPod = serde_json::from_str(FULL_POD).unwrap();
        assert_eq!(cached, CachedPod::from(full.clone()));
        assert_eq!(cached, CachedPod::from(&full));

        let want = CachedPod {
            metadata: PodMeta {
                name: Some("web-7d4b9c8f6-x2x9q".into()),
                namespace: Some("shop".into()),
                uid: Some("0b4c3f1e-2a7d-4e8b-9c61-5f0e2d3a4b5c".into()),
                deletion_timestamp: Some(time("2026-11-25T10:05:00Z")),
            },
            labels: PodLabels::from(
                [("app", "web"), ("pod-template-hash", "7d4b9c8f6"), ("tier", "front")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            spec: Some(CachedPodSpec {
                node_name: Some("kwok-node-3".into()),
                hostname: Some("web-0".into()),
                subdomain: Some("web-headless".into()),
                containers: Box::new([
                    CachedContainer {
                        ports: Some(Box::new([
                            CachedContainerPort {
                                name: Some("http".into()),
                                container_port: 8080,
                                protocol: Some("TCP".into()),
                            },
                            CachedContainerPort { name: None, container_port: 9090, protocol: Some("TCP".into()) },
                            CachedContainerPort {
                                name: Some("metrics".into()),
                                container_port: 9100,
                                protocol: Some("SCTP".into()),
                            },
                        ])),
                        restart_policy: None,
                    },
                    CachedContainer { ports: None, restart_policy: None },
                ]),
                init_containers: Some(Box::new([
                    CachedContainer { ports: None, restart_policy: None },
                    CachedContainer {
                        ports: Some(Box::new([
                            CachedContainerPort {
                                name: Some("proxy".into()),
                                container_port: 15001,
                                protocol: Some("TCP".into()),
                            },
                            CachedContainerPort {
                                name: Some("dns".into()),
                                container_port: 5353,
                                protocol: Some("UDP".into()),
                            },
                        ])),
                        restart_policy: Some("Always".into()),
                    },
                ])),
            }),
            status: Some(CachedPodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.244.3.17".into()),
                pod_ips: Some(Box::new([
                    CachedPodIP { ip: "10.244.3.17".into() },
                    CachedPodIP { ip: "fd00:10:244:3::11".into() },
                ])),
                conditions: Some(Box::new([CachedPodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(time("2026-11-25T10:00:02Z")),
                }])),
            }),
        };
        assert_eq!(cached, want);

        // What the core reads of it.
        use crate::podutil;
        assert!(podutil::is_pod_ready(&cached) && podutil::is_pod_terminating(&cached));
        assert!(!podutil::is_pod_terminal(&cached) && podutil::should_pod_be_in_endpoints(&cached, true));
        let named = |name: &str, protocol: &str| k8s_openapi::api::core::v1::ServicePort {
            protocol: Some(protocol.into()),
            target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name.into())),
            ..Default::default()
        };
        assert_eq!(podutil::find_port(&cached, &named("http", "TCP")), Ok(8080));
        assert_eq!(podutil::find_port(&cached, &named("dns", "UDP")), Ok(5353), "a sidecar's port");
        assert!(podutil::find_port(&cached, &named("dns", "TCP")).is_err());
        let (ips, invalid) = podutil::pod_ips(&cached);
        assert_eq!(ips.len(), 2, "dual-stack");
        assert!(invalid.is_empty());

        // The enum-like values borrow static strings, decoded or converted.
        for pod in [&cached, &CachedPod::from(full)] {
            let status = pod.status.as_ref().unwrap();
            let spec = pod.spec.as_ref().unwrap();
            let ready = &status.conditions.as_ref().unwrap()[0];
            let port = &spec.containers[0].ports.as_ref().unwrap()[0];
            let sidecar = &spec.init_containers.as_ref().unwrap()[1];
            for text in [
                status.phase.as_ref().unwrap(),
                &ready.type_,
                &ready.status,
                port.protocol.as_ref().unwrap(),
                sidecar.restart_policy.as_ref().unwrap(),
            ] {
                assert!(matches!(text, Cow::Borrowed(_)), "{text} is allocated");
            }
        }
    }

    /// Fields this type does not know, at every level, are skipped; so is a kind or apiVersion.
    #[test]
    fn unknown_fields_are_ignored() {
        let plain = r#"{"metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"phase": "Pending", "podIPs": [{"ip": "10.0.0.1"}],
                       "conditions": [{"type": "Ready", "status": "False"}]}}"#;
        let extra = r#"{"apiVersion": "v1", "kind": "Pod", "future": {"x": [1, 2, {"y": null}]},
            "metadata": {"name": "p", "labels": {"a": "b"}, "newMetaField": "v", "annotations": {"k": "v"}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 80, "newPortField": true}],
                                     "newContainerField": {"nested": ["deep"]}}],
                     "newSpecField": 7, "hostUsers": false},
            "status": {"phase": "Pending", "podIPs": [{"ip": "10.0.0.1", "newIPField": "x"}],
                       "conditions": [{"type": "Ready", "status": "False", "newConditionField": 1,
                                       "observedGeneration": 3}],
                       "resize": "Proposed", "newStatusField": []},
            "trailer": "ignored"}"#;
        let a: CachedPod = serde_json::from_str(plain).unwrap();
        let b: CachedPod = serde_json::from_str(extra).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.metadata.name.as_deref(), Some("p"));
        assert_eq!(a.spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap()[0].container_port, 80);
    }

    /// `null` and missing fields read as k8s-openapi reads them.
    #[test]
    fn nulls_and_missing_fields_read_as_k8s_openapi_reads_them() {
        for json in [
            r#"{}"#,
            r#"{"metadata": null, "spec": null, "status": null}"#,
            r#"{"metadata": {"name": null, "labels": null}, "spec": {"containers": null, "initContainers": null},
                "status": {"phase": null, "podIPs": null, "conditions": null}}"#,
            r#"{"spec": {"containers": [{"ports": [{"containerPort": null, "name": null, "protocol": null}],
                                         "restartPolicy": null}]},
                "status": {"podIPs": [{"ip": null}, {}],
                           "conditions": [{"type": "Ready", "status": null, "lastTransitionTime": null},
                                          {"type": null, "status": "True"}, {}]}}"#,
            r#"{"spec": {"containers": []}, "status": {"podIPs": [], "conditions": []}}"#,
        ] {
            let full: Pod = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let cached: CachedPod = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(cached, CachedPod::from(full), "{json}");
        }
    }

    /// `Api<WatchedPod>` and the watcher address the same resource as `Api<Pod>`, and the watch
    /// sees the name, namespace and resourceVersion.
    #[test]
    fn it_is_the_pod_resource() {
        assert_eq!(WatchedPod::kind(&()), Pod::kind(&()));
        assert_eq!(WatchedPod::group(&()), Pod::group(&()));
        assert_eq!(WatchedPod::version(&()), Pod::version(&()));
        assert_eq!(WatchedPod::api_version(&()), Pod::api_version(&()));
        assert_eq!(WatchedPod::plural(&()), Pod::plural(&()));
        assert_eq!(WatchedPod::url_path(&(), Some("ns")), Pod::url_path(&(), Some("ns")));
        assert_eq!(WatchedPod::url_path(&(), None), "/api/v1/pods");
        let pod: WatchedPod = serde_json::from_str(FULL_POD).unwrap();
        assert_eq!(pod.meta().name.as_deref(), Some("web-7d4b9c8f6-x2x9q"));
        assert_eq!(pod.meta().resource_version.as_deref(), Some("48213"));
        let r = kube::runtime::reflector::ObjectRef::from_obj(&pod);
        assert_eq!((r.name.as_str(), r.namespace.as_deref()), ("web-7d4b9c8f6-x2x9q", Some("shop")));
        let cached: CachedPod = serde_json::from_str(FULL_POD).unwrap();
        assert_eq!(pod.into_cached(&mut Interner::default()), cached);
    }

    /// Strings no pod holds any more leave the interner at its next sweep.
    #[test]
    fn the_interner_forgets_strings_nobody_holds() {
        let mut strings = Interner::default();
        let kept: Vec<Arc<str>> = (0..100).map(|i| strings.intern(Arc::from(format!("kept-{i}")))).collect();
        for i in 0..5000 {
            drop(strings.intern(Arc::from(format!("gone-{i}"))));
        }
        assert!(strings.len() < 2 * 1024 + 100, "{} strings held", strings.len());
        for (i, k) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(k, &strings.intern(Arc::from(format!("kept-{i}")))), "kept-{i} is still shared");
        }
    }

    /// The cache hands pods one copy of a namespace, a node name and each label key and value.
    #[test]
    fn pods_share_namespace_node_and_label_strings() {
        let mut strings = Interner::default();
        let a = serde_json::from_str::<WatchedPod>(FULL_POD).unwrap().into_cached(&mut strings);
        let b = serde_json::from_str::<WatchedPod>(BENCH_POD).unwrap().into_cached(&mut strings);
        let c = serde_json::from_str::<WatchedPod>(FULL_POD).unwrap().into_cached(&mut strings);
        assert_eq!(a, serde_json::from_str::<CachedPod>(FULL_POD).unwrap(), "sharing changes no value");
        let (na, nc) = (a.metadata.namespace.clone().unwrap(), c.metadata.namespace.clone().unwrap());
        assert!(Arc::ptr_eq(&na, &nc));
        assert_ne!(b.metadata.namespace.as_deref(), Some(&*na), "the fixtures are in two namespaces");
        let node = |p: &CachedPod| p.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(Arc::ptr_eq(&node(&a), &node(&c)));
        assert_eq!(a.labels.len(), 3);
        for ((ka, va), (kc, vc)) in a.labels.0.iter().zip(c.labels.0.iter()) {
            assert!(Arc::ptr_eq(ka, kc) && Arc::ptr_eq(va, vc), "{ka}={va}");
        }
        assert!(
            !Arc::ptr_eq(&a.metadata.name.clone().unwrap(), &c.metadata.name.clone().unwrap()),
            "names are the pods' own"
        );
    }

    /// What a cached pod costs inline, before (a pruned k8s-openapi `Pod`) and after.
    #[test]
    fn a_cached_pod_is_several_times_smaller_inline() {
        use std::mem::size_of;
        let before = [
            ("Pod", size_of::<Pod>()),
            ("ObjectMeta", size_of::<ObjectMeta>()),
            ("PodSpec", size_of::<PodSpec>()),
            ("PodStatus", size_of::<PodStatus>()),
            ("Container", size_of::<Container>()),
            ("ContainerPort", size_of::<ContainerPort>()),
            ("PodCondition", size_of::<PodCondition>()),
            ("PodIP", size_of::<PodIP>()),
        ];
        let after = [
            ("CachedPod", size_of::<CachedPod>()),
            ("PodMeta", size_of::<PodMeta>()),
            ("CachedPodSpec", size_of::<CachedPodSpec>()),
            ("CachedPodStatus", size_of::<CachedPodStatus>()),
            ("CachedContainer", size_of::<CachedContainer>()),
            ("CachedContainerPort", size_of::<CachedContainerPort>()),
            ("CachedPodCondition", size_of::<CachedPodCondition>()),
            ("CachedPodIP", size_of::<CachedPodIP>()),
        ];
        eprintln!("size_of before: {before:?}\nsize_of after: {after:?}");
        // A pod with one container (spec and status are inline): the fixed part of what the
        // cache holds per pod, before and after.
        let pruned_pod = size_of::<Pod>() + size_of::<Container>();
        let cached_pod = size_of::<CachedPod>() + size_of::<CachedContainer>();
        eprintln!("a pod with one container, inline: {pruned_pod} B before, {cached_pod} B after");
        assert!(cached_pod * 5 < pruned_pod, "{cached_pod} vs {pruned_pod}");
    }

    /// The benchmark's pods decode to their projection too.
    #[test]
    fn a_benchmark_pod_decodes_to_its_projection() {
        let full: Pod = serde_json::from_str(BENCH_POD).unwrap();
        let cached: CachedPod = serde_json::from_str(BENCH_POD).unwrap();
        assert_eq!(cached, CachedPod::from(full));
        assert_eq!(cached.spec.as_ref().unwrap().containers.len(), 1);
        assert_eq!(cached.status.as_ref().unwrap().conditions.as_ref().unwrap().len(), 1);
    }

    /// `EPSLICE_PODS` (default 15,000) pods like [`BENCH_POD`] (`EPSLICE_POD_FIXTURE=full`:
    /// like [`FULL_POD`]), one name and IP each.
    fn many_pods_json() -> impl Iterator<Item = String> {
        let n: usize = std::env::var("EPSLICE_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(15_000);
        let full = std::env::var("EPSLICE_POD_FIXTURE").is_ok_and(|f| f == "full");
        let (fixture, name, ip) = if full {
            (FULL_POD, "web-7d4b9c8f6-x2x9q", "10.244.3.17")
        } else {
            (BENCH_POD, "s1-svc-0042-pod-007", "10.0.42.7")
        };
        (0..n).map(move |i| {
            fixture.replace(name, &format!("{name}-{i:05}")).replace(ip, &format!("10.244.{}.{}", i / 250, i % 250))
        })
    }

    /// Decodes [`many_pods_json`] and keeps them as the pod cache does (an `Arc` each, strings
    /// shared), for a heap profiler:
    /// `heaptrack <test binary> --ignored --exact pod::tests::heap_of_many_cached_pods`.
    #[test]
    #[ignore = "a workload for heaptrack, not a check"]
    fn heap_of_many_cached_pods() {
        let mut strings = Interner::default();
        let pods: Vec<Arc<CachedPod>> = many_pods_json()
            .map(|json| Arc::new(serde_json::from_str::<WatchedPod>(&json).unwrap().into_cached(&mut strings)))
            .collect();
        assert!(!pods.is_empty());
    }

    // -----------------------------------------------------------------------------------------
    // Decoding agrees with the projection for arbitrary pods.
    // -----------------------------------------------------------------------------------------

    fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        proptest::option::of(s)
    }

    fn text() -> impl Strategy<Value = String> {
        // Escapes too: those strings cannot be lent by the input.
        prop_oneof![Just(String::new()), "[a-z0-9.:-]{1,12}", "[a-z\"\\\\é/]{1,6}"]
    }

    fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(values).prop_map(str::to_owned)
    }

    fn time_strategy() -> impl Strategy<Value = Time> {
        (1_600_000_000i64..1_900_000_000).prop_map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()))
    }

    fn container() -> impl Strategy<Value = Container> {
        let port = (
            opt(text()),
            any::<i32>(),
            opt(one_of(&["TCP", "UDP", "SCTP", "snmp", ""])),
            opt(any::<i32>()),
            opt(text()),
        )
            .prop_map(|(name, container_port, protocol, host_port, host_ip)| ContainerPort {
                name,
                container_port,
                protocol,
                host_port,
                host_ip,
            });
        (
            text(),
            opt(text()),
            opt(proptest::collection::vec(port, 0..3)),
            opt(one_of(&["Always", "OnFailure", "Never", "always"])),
            opt(proptest::collection::vec(text(), 0..2)),
        )
            .prop_map(|(name, image, ports, restart_policy, env)| Container {
                name,
                image,
                ports,
                restart_policy,
                env: env.map(|e| e.into_iter().map(|name| EnvVar { name, ..Default::default() }).collect()),
                ..Default::default()
            })
    }

    fn pod() -> impl Strategy<Value = Pod> {
        let labels = || proptest::collection::btree_map(text(), text(), 0..3);
        let meta = (
            opt(text()),
            opt(text()),
            opt(text()),
            opt(labels()),
            opt(labels()),
            opt(time_strategy()),
            opt(time_strategy()),
        )
            .prop_map(|(name, namespace, uid, labels, annotations, deletion_timestamp, creation_timestamp)| {
                ObjectMeta {
                    name,
                    namespace,
                    uid,
                    resource_version: Some("1".into()),
                    labels,
                    annotations,
                    deletion_timestamp,
                    creation_timestamp,
                    ..Default::default()
                }
            });
        let spec = (
            opt(text()),
            opt(text()),
            opt(text()),
            opt(any::<bool>()),
            proptest::collection::vec(container(), 0..3),
            opt(proptest::collection::vec(container(), 0..3)),
        )
            .prop_map(|(node_name, hostname, subdomain, host_network, containers, init_containers)| PodSpec {
                node_name,
                hostname,
                subdomain,
                host_network,
                containers,
                init_containers,
                ..Default::default()
            });
        let condition = (
            one_of(&["Ready", "Initialized", "ContainersReady", "PodScheduled", "ready", ""]),
            one_of(&["True", "False", "Unknown", "", "true"]),
            opt(time_strategy()),
            opt(text()),
        )
            .prop_map(|(type_, status, last_transition_time, message)| PodCondition {
                type_,
                status,
                last_transition_time,
                message,
                ..Default::default()
            });
        let ip = || text().prop_map(|ip| PodIP { ip });
        let status = (
            opt(one_of(&["Running", "Pending", "Succeeded", "Failed", "Unknown", "Weird\"Phase"])),
            opt(text()),
            opt(proptest::collection::vec(ip(), 0..3)),
            opt(proptest::collection::vec(condition, 0..5)),
            opt(text()),
        )
            .prop_map(|(phase, pod_ip, pod_ips, conditions, host_ip)| PodStatus {
                phase,
                pod_ip,
                pod_ips,
                conditions,
                host_ip,
                ..Default::default()
            });
        (meta, opt(spec), opt(status)).prop_map(|(metadata, spec, status)| Pod { metadata, spec, status })
    }

    proptest! {
        #[test]
        fn decoding_agrees_with_the_projection(pod in pod()) {
            let json = serde_json::to_string(&pod).unwrap();
            // Through the JSON again: k8s-openapi writes times to the second.
            let full: Pod = serde_json::from_str(&json).unwrap();
            let cached: CachedPod = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(cached, CachedPod::from(full));
        }
    }
}
