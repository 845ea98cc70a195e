//! Generated variables → JSON Patch for a Pod.
//!
//! Shape of the patch (RFC 6902, paths built from tokens so `/` and `~` are escaped):
//!
//! * For each init container, container and ephemeral container (in that order) that lacks some
//!   of the variables: one `add` of its whole `env` array (replacing the array it has, if any):
//!   the missing variables first, then the container's own entries copied verbatim from the
//!   request, fields this build does not know included. The patch applies to exactly the object
//!   the API server sent, so nothing can be lost in between. User entries keep their values
//!   (names the user declares are not injected), and `$(VAR)` references in them resolve because
//!   ours come first. One operation per container, not one per variable: the API server applies
//!   a JSON patch operation by operation, so 540 small `add`s (10 Services × 3 ports × 3
//!   containers) cost it far more than 3 large ones.
//! * The marker annotation `epslice.io/service-env: <mode>;<count>;<hash>` (hash: FNV-1a 64 of
//!   the desired variable list), added or updated only when its value changes.
//! * Optionally `enableServiceLinks: false`, so the kubelet adds only `KUBERNETES_*` itself.
//!
//! Idempotent by construction: names already present are skipped, so a second pass over the
//! patched pod finds nothing missing and the same marker, and returns no patch. A container
//! added by a later webhook (re-invocation) gets the missing variables; nothing is duplicated.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::sync::Arc;

use foldhash::fast::RandomState as FastHash;
use json_patch::Patch;
use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Map, Value};

use super::generate::{Mode, ServiceEnvVar, generate, needs_links, shadows_master, visible_services_in};
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
    /// The JSON Patch (RFC 6902) as JSON bytes; `None` when nothing changes.
    pub patch: Option<Vec<u8>>,
    /// Each at most 120 characters.
    pub warnings: Vec<String>,
    /// Env entries added, summed over containers.
    pub injected: usize,
    /// Bytes of JSON the patch adds to the pod (env entries plus marker), as checked against
    /// the cap.
    pub added_bytes: usize,
}

impl Mutation {
    /// The patch's operations, parsed back (for tests and tools; the webhook sends the bytes).
    pub fn operations(&self) -> Option<Patch> {
        self.patch.as_deref().and_then(|b| serde_json::from_slice(b).ok())
    }
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
    /// The container's own `env` entries, as sent (unknown fields included).
    env: &'a [Value],
    has_env_from: bool,
}

/// What the patch needs of a pod, read straight from its JSON (the AdmissionReview's `object`),
/// so that the user's env entries are copied verbatim, fields unknown to this build included.
pub struct PodObject<'a> {
    /// `metadata` is absent, null or `{}`.
    metadata_empty: bool,
    annotations: Option<&'a Map<String, Value>>,
    /// `None`: the pod has no spec.
    spec: Option<SpecView<'a>>,
}

struct SpecView<'a> {
    enable_service_links: Option<bool>,
    slots: Vec<Slot<'a>>,
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what} is not an object"))
}

fn as_array<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], String> {
    v.as_array().map(Vec::as_slice).ok_or_else(|| format!("{what} is not an array"))
}

impl<'a> PodObject<'a> {
    /// Reads a pod object. Errors name the first field of the wrong JSON type.
    pub fn read(object: &'a Value) -> Result<Self, String> {
        let pod = as_object(object, "pod")?;
        let api_version = field(pod, "apiVersion").map(|v| v.as_str().unwrap_or("?"));
        let kind = field(pod, "kind").map(|v| v.as_str().unwrap_or("?"));
        if api_version.is_some_and(|v| v != "v1") || kind.is_some_and(|k| k != "Pod") {
            return Err(format!("object is {} {}, not a v1 Pod", api_version.unwrap_or("-"), kind.unwrap_or("-")));
        }
        let meta = field(pod, "metadata").map(|m| as_object(m, "metadata")).transpose()?;
        let annotations = match meta.and_then(|m| field(m, "annotations")) {
            Some(a) => {
                let a = as_object(a, "metadata.annotations")?;
                if let Some((k, _)) = a.iter().find(|(_, v)| !v.is_string()) {
                    return Err(format!("annotation {k} is not a string"));
                }
                Some(a)
            }
            None => None,
        };
        let Some(spec) = field(pod, "spec") else {
            return Ok(Self { metadata_empty: meta.is_none_or(Map::is_empty), annotations, spec: None });
        };
        let spec = as_object(spec, "spec")?;
        let enable_service_links = match field(spec, "enableServiceLinks") {
            Some(v) => Some(v.as_bool().ok_or("spec.enableServiceLinks is not a boolean")?),
            None => None,
        };
        let mut slots = Vec::new();
        for kind in ["initContainers", "containers", "ephemeralContainers"] {
            let Some(list) = field(spec, kind) else { continue };
            for (index, c) in as_array(list, kind)?.iter().enumerate() {
                let c = as_object(c, kind)?;
                let env = match field(c, "env") {
                    Some(e) => as_array(e, "env")?,
                    None => &[],
                };
                if let Some(e) = env.iter().find(|e| !e.is_object() || e.get("name").is_some_and(|n| !n.is_string())) {
                    return Err(format!("{kind}[{index}].env entry {e} is not a named variable"));
                }
                let has_env_from = match field(c, "envFrom") {
                    Some(f) => !as_array(f, "envFrom")?.is_empty(),
                    None => false,
                };
                slots.push(Slot { field: kind, index, env, has_env_from });
            }
        }
        Ok(Self {
            metadata_empty: meta.is_none_or(Map::is_empty),
            annotations,
            spec: Some(SpecView { enable_service_links, slots }),
        })
    }

    /// `spec.enableServiceLinks`, unset counting as true (the API default).
    pub fn enable_service_links(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true)
    }

    /// The marker annotation, if present and well formed.
    pub fn marker(&self) -> Option<Marker> {
        self.annotations.and_then(|a| a.get(MARKER_ANNOTATION)).and_then(Value::as_str).and_then(Marker::parse)
    }
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

/// Bytes of one env entry as written into the patch (`{"name":…,"value":…}`), computed without
/// writing it: the size cap is checked before anything is allocated.
fn entry_len(v: &ServiceEnvVar) -> usize {
    r#"{"name":,"value":}"#.len() + json_str_len(&v.name) + json_str_len(&v.value)
}

/// Appends `s` as a JSON string literal.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_entry(out: &mut Vec<u8>, v: &ServiceEnvVar) {
    out.extend_from_slice(br#"{"name":"#);
    write_str(out, &v.name);
    out.extend_from_slice(br#","value":"#);
    write_str(out, &v.value);
    out.push(b'}');
}

/// The JSON Patch, written straight to bytes (no intermediate JSON tree: at 10 Services × 3 ports
/// and 3 containers that is 540 entries per review).
struct PatchWriter {
    out: Vec<u8>,
    ops: usize,
}

impl PatchWriter {
    fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'[');
        Self { out, ops: 0 }
    }

    /// Starts `{"op":"add","path":"<tokens>","value":`; the caller writes the value and `}`.
    fn add(&mut self, tokens: &[&str]) -> &mut Vec<u8> {
        if self.ops > 0 {
            self.out.push(b',');
        }
        self.ops += 1;
        let mut path = PointerBuf::new();
        for t in tokens {
            path.push_back(*t);
        }
        self.out.extend_from_slice(br#"{"op":"add","path":"#);
        write_str(&mut self.out, path.as_str());
        self.out.extend_from_slice(br#","value":"#);
        &mut self.out
    }

    fn finish(mut self) -> Option<Vec<u8>> {
        self.out.push(b']');
        (self.ops > 0).then_some(self.out)
    }
}

/// The patch that injects `vars` (already generated, in order) into `pod` under `mode`.
/// `Mode::Off` and pods without a spec give no patch. See [`plan_patch_object`].
pub fn plan_patch(pod: &Pod, mode: Mode, vars: &[ServiceEnvVar], options: &PatchOptions) -> Mutation {
    match serde_json::to_value(pod) {
        Ok(object) => match PodObject::read(&object) {
            Ok(view) => plan_patch_object(&view, mode, vars, options),
            Err(e) => Mutation { warnings: vec![warning(format!("pod unreadable: {e}"))], ..Mutation::default() },
        },
        Err(e) => Mutation { warnings: vec![warning(format!("pod unreadable: {e}"))], ..Mutation::default() },
    }
}

/// The patch that injects `vars` (already generated, in order) into the pod read as `pod`.
///
/// Each container missing some of the variables gets one `add` of its whole `env` array (which
/// replaces an existing one): the missing variables first, then the container's own entries
/// copied verbatim from the request. The patch applies to exactly the object the API server sent,
/// so nothing written in between can be lost.
pub fn plan_patch_object(pod: &PodObject<'_>, mode: Mode, vars: &[ServiceEnvVar], options: &PatchOptions) -> Mutation {
    if mode == Mode::Off {
        return Mutation::default();
    }
    plan_prepared(pod, mode, &Prepared::new(vars.to_vec()), options)
}

/// Variables ready to be patched in: names unique (the first of a repeated name kept), each
/// entry's JSON size, their total, the marker hash and a name index. Depends only on the
/// variables, so the webhook keeps it across reviews ([`GenerationMemo`]).
#[derive(Debug)]
pub struct Prepared {
    vars: Vec<ServiceEnvVar>,
    /// Each entry's JSON plus a separating comma.
    sizes: Vec<usize>,
    all_bytes: usize,
    hash: String,
    /// Indices of `vars` sorted by name (4 bytes a variable; the names are not copied).
    by_name: Box<[u32]>,
}

impl Prepared {
    /// Prepares `vars` (in injection order).
    pub fn new(vars: Vec<ServiceEnvVar>) -> Self {
        let mut seen: HashSet<&str, FastHash> = HashSet::with_capacity_and_hasher(vars.len(), FastHash::default());
        let keep: Vec<bool> = vars.iter().map(|v| seen.insert(v.name.as_str())).collect();
        drop(seen);
        let unique: Vec<ServiceEnvVar> = vars.into_iter().zip(keep).filter_map(|(v, k)| k.then_some(v)).collect();
        let sizes: Vec<usize> = unique.iter().map(|v| entry_len(v) + 1).collect();
        let all_bytes = sizes.iter().sum();
        let hash = hash_of(&unique);
        let mut by_name: Vec<u32> = (0..u32::try_from(unique.len()).unwrap_or(u32::MAX)).collect();
        by_name.sort_unstable_by(|&a, &b| unique[a as usize].name.cmp(&unique[b as usize].name));
        Self { vars: unique, sizes, all_bytes, hash, by_name: by_name.into_boxed_slice() }
    }

    /// The index of the variable named `name`.
    fn position(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.vars[i as usize].name.as_str().cmp(name))
            .ok()
            .map(|k| self.by_name[k] as usize)
    }

    /// The variables, names unique.
    pub fn vars(&self) -> &[ServiceEnvVar] {
        &self.vars
    }

    /// [`vars_hash`] of [`Self::vars`].
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// [`plan_patch_object`] for prepared variables.
pub fn plan_prepared(pod: &PodObject<'_>, mode: Mode, prepared: &Prepared, options: &PatchOptions) -> Mutation {
    if mode == Mode::Off {
        return Mutation::default();
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Mutation {
            warnings: vec![warning("pod has no spec: no service env vars injected")],
            ..Mutation::default()
        };
    };
    let vars = &prepared.vars;
    let sizes = &prepared.sizes;

    // First what would be added and its size, so that a pod over the cap costs no JSON at all
    // (at 1,000 Services × 3 ports that is ~18,000 entries per container).
    let mut injected = 0usize;
    let mut added_bytes = 0usize;
    let mut env_from_users = 0usize;
    // Per container: `None` when every variable is missing (the common case), else the indices.
    let mut missing_by_slot: Vec<Option<Vec<usize>>> = Vec::with_capacity(spec.slots.len());
    let all_bytes = prepared.all_bytes;
    for slot in &spec.slots {
        // Which of ours the container declares itself: a lookup per user entry, not per variable.
        let mut present: Vec<usize> = slot
            .env
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .filter_map(|n| prepared.position(n))
            .collect();
        let (count, bytes, missing) = if present.is_empty() {
            (vars.len(), all_bytes, None)
        } else {
            present.sort_unstable();
            present.dedup();
            let missing: Vec<usize> = (0..vars.len()).filter(|k| present.binary_search(k).is_err()).collect();
            (missing.len(), missing.iter().map(|&k| sizes[k]).sum(), Some(missing))
        };
        if count > 0 {
            if slot.has_env_from {
                env_from_users += 1;
            }
            injected += count;
            added_bytes += bytes;
        }
        missing_by_slot.push(missing);
    }
    let marker = Marker { mode: mode.as_str().to_owned(), count: vars.len(), hash: prepared.hash.clone() }.render();
    let current = pod.annotations.and_then(|a| a.get(MARKER_ANNOTATION)).and_then(Value::as_str);
    let marker_changes = current != Some(marker.as_str());
    if marker_changes {
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

    // Every entry rendered once; containers lacking all of them (the common case) share the block.
    let mut block = Vec::with_capacity(all_bytes);
    let mut ends = Vec::with_capacity(vars.len());
    for (k, v) in vars.iter().enumerate() {
        if k > 0 {
            block.push(b',');
        }
        write_entry(&mut block, v);
        ends.push(block.len());
    }
    let entry = |k: usize| -> &[u8] {
        let start = if k == 0 { 0 } else { ends[k - 1] + 1 };
        &block[start..ends[k]]
    };

    let mut patch = PatchWriter::new(added_bytes + 256 * (spec.slots.len() + 2));
    for (slot, missing) in spec.slots.iter().zip(&missing_by_slot) {
        if missing.as_ref().is_some_and(Vec::is_empty) || vars.is_empty() {
            continue;
        }
        let index = slot.index.to_string();
        let out = patch.add(&["spec", slot.field, &index, "env"]);
        out.push(b'[');
        match missing {
            None => out.extend_from_slice(&block),
            Some(ks) => {
                for (i, &k) in ks.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(entry(k));
                }
            }
        }
        for user in slot.env {
            out.push(b',');
            // Serialising a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, user);
        }
        out.extend_from_slice(b"]}");
    }

    if marker_changes {
        let pair = |out: &mut Vec<u8>| {
            out.push(b'{');
            write_str(out, MARKER_ANNOTATION);
            out.push(b':');
            write_str(out, &marker);
            out.push(b'}');
        };
        if pod.metadata_empty {
            let out = patch.add(&["metadata"]);
            out.extend_from_slice(br#"{"annotations":"#);
            pair(out);
            out.extend_from_slice(b"}}");
        } else if pod.annotations.is_none_or(Map::is_empty) {
            let out = patch.add(&["metadata", "annotations"]);
            pair(out);
            out.push(b'}');
        } else {
            let out = patch.add(&["metadata", "annotations", MARKER_ANNOTATION]);
            write_str(out, &marker);
            out.push(b'}');
        }
    }

    if options.disable_kubelet_service_links && spec.enable_service_links != Some(false) {
        patch.add(&["spec", "enableServiceLinks"]).extend_from_slice(b"false}");
    }

    let mut warnings = Vec::new();
    if env_from_users > 0 {
        warnings.push(warning(format!(
            "{env_from_users} container(s) use envFrom: injected service env vars override its keys of the same name"
        )));
    }
    Mutation { patch: patch.finish(), warnings, injected, added_bytes }
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
///
/// A pod that sets `enableServiceLinks: false` itself gets only what the kubelet would show it
/// (the master Service); under `Mode::Selected` a warning says the pick was not injected.
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
    let unreadable =
        |e: String| Mutation { warnings: vec![warning(format!("pod unreadable: {e}"))], ..Mutation::default() };
    let object = match serde_json::to_value(pod) {
        Ok(o) => o,
        Err(e) => return unreadable(e.to_string()),
    };
    match PodObject::read(&object) {
        Ok(view) => mutate_object(&view, namespace, mode, services, options),
        Err(e) => unreadable(e),
    }
}

/// [`mutate`] for a pod read from its JSON (what the webhook does).
pub fn mutate_object<S: Borrow<Service>>(
    pod: &PodObject<'_>,
    namespace: &str,
    mode: Mode,
    services: &[S],
    options: &PatchOptions,
) -> Mutation {
    mutate_with(pod, mode, options, |links, _| Arc::new(Generation::new(namespace, services, links, options)))
}

/// [`mutate_object`] through a [`GenerationMemo`]: the variables for a given set of Services
/// (the same `Arc`s, so the same cached objects) are generated and prepared once, then reused.
pub fn mutate_object_memo(
    pod: &PodObject<'_>,
    namespace: &str,
    mode: Mode,
    services: &[Arc<Service>],
    options: &PatchOptions,
    memo: &GenerationMemo,
) -> Mutation {
    mutate_with(pod, mode, options, |links, keep| memo.get(namespace, services, links, options, keep))
}

/// The kubelet's visibility rules, generation and preparation for one set of candidates.
#[derive(Debug)]
pub struct Generation {
    prepared: Prepared,
    /// Visibility and generation warnings.
    warnings: Vec<String>,
    /// Links are off and some candidates are not visible because of it.
    unlinked: bool,
}

impl Generation {
    fn new<S: Borrow<Service>>(namespace: &str, services: &[S], links: bool, options: &PatchOptions) -> Self {
        let extra = options.extra_namespaces.as_slice();
        let visible = visible_services_in(namespace, extra, links, services);
        let (mut generated, mut warnings) =
            if options.disable_kubelet_service_links && visible.services.iter().any(|s| shadows_master(s, namespace)) {
                // With the kubelet's links off it still adds the real master Service's variables;
                // the shadow's would mix with them (different port names). Use the master instead.
                let without = services.iter().filter(|s| !shadows_master((*s).borrow(), namespace));
                let visible = visible_services_in(namespace, extra, links, without);
                let note = warning(format!(
                    "service {namespace}/kubernetes not injected: it would mix with the API server's KUBERNETES_* vars"
                ));
                (generate(&visible.services), vec![note])
            } else {
                (generate(&visible.services), visible.warnings)
            };
        warnings.append(&mut generated.warnings);
        let unlinked = !links && services.iter().any(|s| needs_links(s.borrow(), namespace, extra));
        Self { prepared: Prepared::new(generated.vars), warnings, unlinked }
    }
}

fn mutate_with(
    pod: &PodObject<'_>,
    mode: Mode,
    options: &PatchOptions,
    run: impl Fn(bool, bool) -> Arc<Generation>,
) -> Mutation {
    if mode == Mode::Off {
        return Mutation::default();
    }
    let links = pod.enable_service_links();
    let mut generation = run(links, true);
    if !links
        && let Some(marker) = pod.marker()
        && marker.hash != generation.prepared.hash
    {
        // Speculative: not kept in a memo unless it is the one used (looked up again below).
        let alt = run(true, false);
        if alt.prepared.hash == marker.hash {
            generation = run(true, true);
        }
    }
    let mut m = plan_prepared(pod, mode, &generation.prepared, options);
    let mut warnings = generation.warnings.clone();
    if mode == Mode::Selected && generation.unlinked {
        // The pod's own opt-out is kept, as the kubelet would keep it; a policy's explicit pick
        // vanishing without a word would look like a webhook bug.
        warnings.push(warning("services picked by the policy not injected: the pod sets enableServiceLinks: false"));
    }
    warnings.append(&mut m.warnings);
    m.warnings = warnings;
    m
}

/// A small LRU of generations keyed by what they depend on: the pod's namespace, the
/// cross-namespace exports, the links flag, `disableKubeletServiceLinks`, and the candidate
/// Services *by identity* (`Arc` pointers of the cached objects, held by the entry so they cannot
/// be reused). A changed Service is a new `Arc`, so a stale entry can never match; it just ages
/// out. Bounded by entries and by the variables held.
#[derive(Debug)]
pub struct GenerationMemo {
    entries: std::sync::Mutex<std::collections::VecDeque<(MemoKey, Arc<Generation>)>>,
    max_entries: usize,
    max_vars: usize,
}

#[derive(Debug)]
struct MemoKey {
    /// Hash of the Services' addresses, compared first.
    fingerprint: u64,
    namespace: String,
    extra: Vec<String>,
    links: bool,
    drop_shadow: bool,
    services: Vec<Arc<Service>>,
}

/// Hash of the Services' identities (their addresses), with a fixed seed.
fn fingerprint(services: &[Arc<Service>]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
    for s in services {
        h.write_usize(Arc::as_ptr(s) as usize);
    }
    h.finish()
}

impl MemoKey {
    fn matches(
        &self,
        fingerprint: u64,
        namespace: &str,
        services: &[Arc<Service>],
        links: bool,
        options: &PatchOptions,
    ) -> bool {
        self.fingerprint == fingerprint
            && self.links == links
            && self.drop_shadow == options.disable_kubelet_service_links
            && self.namespace == namespace
            && self.extra == options.extra_namespaces
            && self.services.len() == services.len()
            && self.services.iter().zip(services).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Default for GenerationMemo {
    fn default() -> Self {
        Self::new(64, 200_000)
    }
}

impl GenerationMemo {
    /// At most `max_entries` generations, and at most `max_vars` variables held plus Services kept
    /// alive by the keys, in all.
    pub fn new(max_entries: usize, max_vars: usize) -> Self {
        Self { entries: std::sync::Mutex::default(), max_entries: max_entries.max(1), max_vars }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The generation for these inputs, from the memo or computed; a computed one is kept only
    /// when `keep` (a speculative lookup should not push out entries in use).
    fn get(
        &self,
        namespace: &str,
        services: &[Arc<Service>],
        links: bool,
        options: &PatchOptions,
        keep: bool,
    ) -> Arc<Generation> {
        let fp = fingerprint(services);
        {
            let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = entries.iter().position(|(k, _)| k.matches(fp, namespace, services, links, options))
                && let Some(hit) = entries.remove(i)
            {
                let generation = hit.1.clone();
                entries.push_front(hit);
                return generation;
            }
        }
        // Computed outside the lock; two concurrent misses both compute, the later insert wins.
        let generation = Arc::new(Generation::new(namespace, services, links, options));
        if !keep {
            return generation;
        }
        let key = MemoKey {
            fingerprint: fp,
            namespace: namespace.to_owned(),
            extra: options.extra_namespaces.clone(),
            links,
            drop_shadow: options.disable_kubelet_service_links,
            services: services.to_vec(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(k, _)| !k.matches(fp, namespace, services, links, options));
        entries.push_front((key, generation.clone()));
        // The budget counts the variables held and the Services kept alive by the keys.
        let mut held = 0usize;
        let mut kept = 0usize;
        for (k, g) in entries.iter() {
            held += g.prepared.vars.len() + k.services.len();
            if kept > 0 && (kept >= self.max_entries || held > self.max_vars) {
                break;
            }
            kept += 1;
        }
        entries.truncate(kept);
        generation
    }
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
                let written = serde_json::to_vec(&serde_json::json!({"name": name, "value": value})).unwrap().len();
                let mut mine = Vec::new();
                write_entry(&mut mine, &v);
                assert_eq!(mine.len(), written, "{name:?} = {value:?}");
                assert_eq!(entry_len(&v), written, "{name:?} = {value:?}");
            }
        }
    }
}
