//! Generated variables → JSON Patch for a Pod.
//!
//! Shape of the patch (RFC 6902, paths built from tokens so `/` and `~` are escaped):
//!
//! * For each init container, container and ephemeral container (in that order), the variables
//!   whose names the container does not already declare are inserted *before* its own entries:
//!   one `add` of the whole array when it has no `env` (or an empty one), otherwise one `add` per
//!   variable at indices `0..k`. User entries are never touched: their values win, and `$(VAR)`
//!   references in them resolve because ours come first.
//! * The marker annotation `epslice.io/service-env: <mode>;<count>;<hash>` (hash: FNV-1a 64 of
//!   the desired variable list), added or updated only when its value changes.
//! * Optionally `enableServiceLinks: false`, so the kubelet adds only `KUBERNETES_*` itself.
//!
//! Idempotent by construction: names already present are skipped, so a second pass over the
//! patched pod finds nothing missing and the same marker, and returns no patch. A container
//! added by a later webhook (re-invocation) gets the missing variables; nothing is duplicated.

use std::borrow::Borrow;
use std::collections::HashSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

use super::generate::{Generated, Mode, ServiceEnvVar, generate, shadows_master, visible_services_in};
use super::warning;

/// Annotation recording what was injected.
pub const MARKER_ANNOTATION: &str = "epslice.io/service-env";
/// Default cap on the bytes an injection may add to the pod object.
pub const DEFAULT_MAX_ADDED_BYTES: usize = 256 * 1024;

/// Knobs for [`plan_patch`] and [`mutate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchOptions {
    /// Also set `spec.enableServiceLinks: false` when injecting.
    pub disable_kubelet_service_links: bool,
    /// Inject nothing (and warn) if the added env entries and marker would exceed this many
    /// bytes of JSON.
    pub max_added_bytes: usize,
    /// Namespaces besides the pod's whose Services, among the candidates given to [`mutate`], are
    /// visible (a policy's cross-namespace export; see [`super::visible_services_in`]). Empty: the
    /// kubelet's rule (the pod's namespace and `default/kubernetes` only).
    pub extra_namespaces: Vec<String>,
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self {
            disable_kubelet_service_links: false,
            max_added_bytes: DEFAULT_MAX_ADDED_BYTES,
            extra_namespaces: Vec::new(),
        }
    }
}

/// What to do to one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    /// `None` when nothing changes.
    pub patch: Option<Patch>,
    /// Each at most 120 characters.
    pub warnings: Vec<String>,
    /// Env entries added, summed over containers.
    pub injected: usize,
    /// Bytes of JSON the patch adds to the pod (env entries plus marker), as checked against
    /// the cap.
    pub added_bytes: usize,
}

/// Parsed marker annotation value `<mode>;<count>;<hash>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub mode: String,
    pub count: usize,
    pub hash: String,
}

impl Marker {
    /// The marker for an injection of `vars` under `mode`.
    pub fn new(mode: Mode, vars: &[ServiceEnvVar]) -> Self {
        Self { mode: mode.as_str().to_owned(), count: vars.len(), hash: vars_hash(vars) }
    }

    /// Parses an annotation value; `None` if it is not three `;`-separated fields with a
    /// numeric count.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let mode = parts.next()?;
        let count = parts.next()?.parse().ok()?;
        let hash = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { mode: mode.to_owned(), count, hash: hash.to_owned() })
    }

    /// The annotation value.
    pub fn render(&self) -> String {
        format!("{};{};{}", self.mode, self.count, self.hash)
    }

    /// The marker on `pod`, if present and well formed.
    pub fn of(pod: &Pod) -> Option<Self> {
        pod.metadata.annotations.as_ref().and_then(|a| a.get(MARKER_ANNOTATION)).and_then(|v| Self::parse(v))
    }
}

/// FNV-1a 64-bit over length-prefixed names and values, as 16 hex digits. Stable across builds
/// and platforms (unlike `std`'s hasher), so markers written by one version are read by the next.
pub fn vars_hash(vars: &[ServiceEnvVar]) -> String {
    hash_of(vars)
}

fn hash_of<'a>(vars: impl IntoIterator<Item = &'a ServiceEnvVar>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for v in vars {
        eat(&(v.name.len() as u64).to_le_bytes());
        eat(v.name.as_bytes());
        eat(&(v.value.len() as u64).to_le_bytes());
        eat(v.value.as_bytes());
    }
    format!("{h:016x}")
}

/// One container's view, whatever its kind.
struct Slot<'a> {
    /// `initContainers`, `containers` or `ephemeralContainers`.
    field: &'static str,
    index: usize,
    env: Option<&'a [EnvVar]>,
    env_from: Option<&'a [EnvFromSource]>,
}

fn entry_json(v: &ServiceEnvVar) -> Value {
    let mut m = Map::new();
    m.insert("name".to_owned(), Value::String(v.name.clone()));
    m.insert("value".to_owned(), Value::String(v.value.clone()));
    Value::Object(m)
}

/// Bytes of `s` as a JSON string literal written by serde_json (quotes included): `"` and `\\`
/// and the short control escapes take two bytes, other control characters six (`\\u00XX`),
/// everything else its UTF-8 bytes.
fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Bytes of [`entry_json`]`(v)` serialised (`{"name":…,"value":…}`), computed without building it:
/// the size cap is checked before anything is allocated.
fn entry_len(v: &ServiceEnvVar) -> usize {
    r#"{"name":,"value":}"#.len() + json_str_len(&v.name) + json_str_len(&v.value)
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The patch that injects `vars` (already generated, in order) into `pod` under `mode`.
/// `Mode::Off` and pods without a spec give no patch.
pub fn plan_patch(pod: &Pod, mode: Mode, vars: &[ServiceEnvVar], options: &PatchOptions) -> Mutation {
    if mode == Mode::Off {
        return Mutation::default();
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Mutation {
            warnings: vec![warning("pod has no spec: no service env vars injected")],
            ..Mutation::default()
        };
    };

    // Defensive: keep the first of any repeated name.
    let mut seen = HashSet::new();
    let vars: Vec<&ServiceEnvVar> = vars.iter().filter(|v| seen.insert(v.name.as_str())).collect();
    // Each entry costs its JSON plus a separating comma.
    let sizes: Vec<usize> = vars.iter().map(|v| entry_len(v) + 1).collect();

    let mut slots: Vec<Slot<'_>> = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        slots.push(Slot { field: "initContainers", index: i, env: c.env.as_deref(), env_from: c.env_from.as_deref() });
    }
    for (i, c) in spec.containers.iter().enumerate() {
        slots.push(Slot { field: "containers", index: i, env: c.env.as_deref(), env_from: c.env_from.as_deref() });
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        slots.push(Slot {
            field: "ephemeralContainers",
            index: i,
            env: c.env.as_deref(),
            env_from: c.env_from.as_deref(),
        });
    }

    // First what would be added and its size, so that a pod over the cap costs no JSON at all
    // (at 1,000 Services × 3 ports that is ~18,000 entries per container).
    let mut injected = 0usize;
    let mut added_bytes = 0usize;
    let mut env_from_users = 0usize;
    let mut missing_by_slot: Vec<Vec<usize>> = Vec::with_capacity(slots.len());
    for slot in &slots {
        let present: HashSet<&str> = slot.env.unwrap_or_default().iter().map(|e| e.name.as_str()).collect();
        let missing: Vec<usize> = (0..vars.len()).filter(|&k| !present.contains(vars[k].name.as_str())).collect();
        if !missing.is_empty() {
            if slot.env_from.is_some_and(|f| !f.is_empty()) {
                env_from_users += 1;
            }
            injected += missing.len();
            added_bytes += missing.iter().map(|&k| sizes[k]).sum::<usize>();
        }
        missing_by_slot.push(missing);
    }
    let marker =
        Marker { mode: mode.as_str().to_owned(), count: vars.len(), hash: hash_of(vars.iter().copied()) }.render();
    let annotations = pod.metadata.annotations.as_ref();
    let current = annotations.and_then(|a| a.get(MARKER_ANNOTATION));
    if current != Some(&marker) {
        added_bytes += MARKER_ANNOTATION.len() + marker.len() + 6;
    }
    if added_bytes > options.max_added_bytes {
        return Mutation {
            warnings: vec![warning(format!(
                "service env vars not injected: {added_bytes} bytes exceed the cap of {} bytes",
                options.max_added_bytes
            ))],
            ..Mutation::default()
        };
    }

    let entries: Vec<Value> = vars.iter().map(|v| entry_json(v)).collect();
    let mut ops = Vec::new();
    for (slot, missing) in slots.iter().zip(&missing_by_slot) {
        if missing.is_empty() {
            continue;
        }
        let mut env_path = PointerBuf::from_tokens(["spec", slot.field]);
        env_path.push_back(slot.index);
        env_path.push_back("env");
        if slot.env.is_none_or(<[EnvVar]>::is_empty) {
            let array = missing.iter().map(|&k| entries[k].clone()).collect();
            ops.push(add(env_path, Value::Array(array)));
        } else {
            for (at, &k) in missing.iter().enumerate() {
                let mut p = env_path.clone();
                p.push_back(at);
                ops.push(add(p, entries[k].clone()));
            }
        }
    }

    if current != Some(&marker) {
        let value = Value::String(marker.clone());
        if pod.metadata == ObjectMeta::default() {
            let mut ann = Map::new();
            ann.insert(MARKER_ANNOTATION.to_owned(), value);
            let mut meta = Map::new();
            meta.insert("annotations".to_owned(), Value::Object(ann));
            ops.push(add(PointerBuf::from_tokens(["metadata"]), Value::Object(meta)));
        } else if annotations.is_none_or(|a| a.is_empty()) {
            let mut ann = Map::new();
            ann.insert(MARKER_ANNOTATION.to_owned(), value);
            ops.push(add(PointerBuf::from_tokens(["metadata", "annotations"]), Value::Object(ann)));
        } else {
            ops.push(add(PointerBuf::from_tokens(["metadata", "annotations", MARKER_ANNOTATION]), value));
        }
    }

    if options.disable_kubelet_service_links && spec.enable_service_links != Some(false) {
        ops.push(add(PointerBuf::from_tokens(["spec", "enableServiceLinks"]), Value::Bool(false)));
    }

    let mut warnings = Vec::new();
    if env_from_users > 0 {
        warnings.push(warning(format!(
            "{env_from_users} container(s) use envFrom: injected service env vars override its keys of the same name"
        )));
    }
    Mutation { patch: (!ops.is_empty()).then_some(Patch(ops)), warnings, injected, added_bytes }
}

/// Everything for one pod: the kubelet's visibility rules over `services` (the caller's
/// candidates, e.g. the policy-filtered Services of `namespace` plus `default/kubernetes`),
/// generation, then [`plan_patch`].
///
/// `enableServiceLinks` is read from the pod (unset counts as true, the API default). Because
/// this webhook may itself have set it to false on an earlier pass, a pod that says false but
/// carries a marker matching the links-enabled variable set is treated as links-enabled; that
/// keeps re-invocation from flipping the marker.
///
/// With `disable_kubelet_service_links`, a `kubernetes` Service in the pod's own namespace is not
/// injected (warning): the kubelet would still add the real master Service's variables, and the
/// two sets would mix. The master Service, if among `services`, is used instead.
pub fn mutate<S: Borrow<Service>>(
    pod: &Pod,
    namespace: &str,
    mode: Mode,
    services: &[S],
    options: &PatchOptions,
) -> Mutation {
    if mode == Mode::Off {
        return Mutation::default();
    }
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let drop_shadow = options.disable_kubelet_service_links;
    let extra = options.extra_namespaces.as_slice();
    let run = |links: bool| -> (Generated, Vec<String>) {
        let visible = visible_services_in(namespace, extra, links, services);
        if drop_shadow && visible.services.iter().any(|s| shadows_master(s, namespace)) {
            // With the kubelet's links off it still adds the real master Service's variables;
            // the shadow's would mix with them (different port names). Use the master instead.
            let without = services.iter().filter(|s| !shadows_master((*s).borrow(), namespace));
            let visible = visible_services_in(namespace, extra, links, without);
            let note = warning(format!(
                "service {namespace}/kubernetes not injected: it would mix with the API server's KUBERNETES_* vars"
            ));
            return (generate(&visible.services), vec![note]);
        }
        (generate(&visible.services), visible.warnings)
    };
    let (mut generated, mut warnings) = run(links);
    if !links
        && let Some(marker) = Marker::of(pod)
        && marker.hash != vars_hash(&generated.vars)
    {
        let (alt, alt_warnings) = run(true);
        if vars_hash(&alt.vars) == marker.hash {
            generated = alt;
            warnings = alt_warnings;
        }
    }
    warnings.append(&mut generated.warnings);
    let mut m = plan_patch(pod, mode, &generated.vars, options);
    warnings.append(&mut m.warnings);
    m.warnings = warnings;
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod size_tests {
    use super::*;

    /// The arithmetic size used for the cap is exactly what serde_json writes.
    #[test]
    fn entry_len_matches_serde_json() {
        let texts = [
            "",
            "REDIS_SERVICE_HOST",
            "10.0.0.1",
            "tcp://[fd00::1]:6379",
            "quote\" back\\slash",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 𝄞",
            "</script>/",
        ];
        for name in texts {
            for value in texts {
                let v = ServiceEnvVar { name: name.to_owned(), value: value.to_owned() };
                let written = serde_json::to_vec(&entry_json(&v)).unwrap().len();
                assert_eq!(entry_len(&v), written, "{name:?} = {value:?}");
            }
        }
    }
}
