//! AdmissionReview bytes in, HTTP status and bytes out. Pure: the caller supplies the Services
//! through a closure and does the I/O.
//!
//! * Body over the limit → 413; not JSON, not an `admission.k8s.io/v1` (or `v1beta1`)
//!   AdmissionReview, no `request` or no `request.uid` → 400. Error bodies are `meta/v1 Status`.
//! * Everything else → 200 with an AdmissionReview echoing `apiVersion`, `kind` and `uid`,
//!   `allowed: true` always (an injector fails open), and a base64 `patch` with
//!   `patchType: JSONPatch` only when something changes.
//! * Only `CREATE` of core `pods` (no subresource) is acted on, matched on `request.resource`,
//!   not on the object's kind. Others are allowed untouched.
//! * A pod object that cannot be read, or a request without a namespace, is allowed untouched
//!   with a warning.
//! * `dryRun` gives the same answer (we have no side effects); it is passed to the closure and
//!   reported back so the shell can skip metrics or events.
//!
//! The response is written by hand rather than through `kube::core::admission`, whose
//! `AdmissionResponse` serializes `patch` as an array of numbers (kube-rs#1781) instead of the
//! documented base64 string, and whose request type rejects reviews lacking fields we do not
//! need (`userInfo`, `kind`).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Map, Value, json};

use super::generate::Mode;
use super::patch::{GenerationMemo, PatchOptions, PodObject, mutate_object, mutate_object_memo};
use super::warning;

/// Default request-body limit: room for a misrouted UPDATE (object and oldObject, each up to
/// the API server's 3 MiB request cap) plus the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default number of warnings returned; the rest are summarised in one line.
pub const DEFAULT_MAX_WARNINGS: usize = 16;

const API_VERSION_V1: &str = "admission.k8s.io/v1";
const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
const KIND: &str = "AdmissionReview";

/// Limits and patch knobs for [`review`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewConfig {
    pub max_body_bytes: usize,
    pub max_warnings: usize,
    pub patch: PatchOptions,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_warnings: DEFAULT_MAX_WARNINGS,
            patch: PatchOptions::default(),
        }
    }
}

/// What the caller's policy closure sees.
#[derive(Clone, Copy, Debug)]
pub struct PodRequest<'a> {
    pub uid: &'a str,
    /// `request.namespace`, or the object's namespace when that is empty.
    pub namespace: &'a str,
    /// `request.name`; empty on CREATE with `generateName`.
    pub name: &'a str,
    /// The pod's labels (what policies select on).
    pub labels: &'a BTreeMap<String, String>,
    pub dry_run: bool,
}

/// The caller's answer: mode and candidate Services (see [`super::visible_services`] for how
/// they are filtered: pass the namespace's Services, policy-filtered, plus `default/kubernetes`).
#[derive(Clone, Debug)]
pub struct Decision<S> {
    pub mode: Mode,
    pub services: Vec<S>,
    /// Passed through to the response (each cut to 120 characters).
    pub warnings: Vec<String>,
    /// Per-pod override of [`ReviewConfig::patch`]'s `disable_kubelet_service_links` (a policy's
    /// `disableKubeletServiceLinks`); `None` keeps the configured value.
    pub disable_kubelet_service_links: Option<bool>,
    /// Namespaces besides the pod's whose Services (among `services`) are visible: a policy's
    /// cross-namespace export. Replaces [`PatchOptions::extra_namespaces`] when non-empty.
    pub extra_namespaces: Vec<String>,
}

impl<S> Decision<S> {
    /// No injection.
    pub fn off() -> Self {
        Self {
            mode: Mode::Off,
            services: Vec::new(),
            warnings: Vec::new(),
            disable_kubelet_service_links: None,
            extra_namespaces: Vec::new(),
        }
    }
}

/// How a review ended, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 413.
    TooLarge,
    /// 400.
    BadRequest,
    /// Not a pod CREATE: allowed, untouched.
    Ignored,
    /// Pod CREATE we could not read: allowed, untouched, with a warning.
    Unreadable,
    /// Pod CREATE needing no change.
    Unchanged,
    /// Pod CREATE answered with a patch.
    Patched,
}

/// HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub status: u16,
    /// JSON: an AdmissionReview for 200, a `Status` otherwise.
    pub body: Vec<u8>,
    pub outcome: Outcome,
    pub dry_run: bool,
    /// Env entries added by the patch, summed over containers.
    pub injected: usize,
}

fn status_error(code: u16, reason: &str, message: String, outcome: Outcome) -> Reviewed {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    Reviewed { status: code, body: serde_json::to_vec(&body).unwrap_or_default(), outcome, dry_run: false, injected: 0 }
}

fn bad_request(message: impl Into<String>) -> Reviewed {
    status_error(400, "BadRequest", message.into(), Outcome::BadRequest)
}

/// Standard base64 (RFC 4648, with padding), as Go's `[]byte` JSON encoding expects.
pub(crate) fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

fn cap_warnings(mut warnings: Vec<String>, max: usize) -> Vec<String> {
    if warnings.len() > max {
        let keep = max.saturating_sub(1);
        let omitted = warnings.len() - keep;
        warnings.truncate(keep);
        if max > 0 {
            warnings.push(warning(format!("{omitted} more service env warnings omitted")));
        }
    }
    warnings
}

struct Echo {
    api_version: String,
    kind: String,
    uid: String,
}

impl Echo {
    fn respond(
        &self,
        patch: Option<Vec<u8>>,
        warnings: Vec<String>,
        max_warnings: usize,
        outcome: Outcome,
        dry_run: bool,
        injected: usize,
    ) -> Reviewed {
        // Written by hand: the patch goes straight from bytes to base64 into the body, with no
        // JSON tree and no second escaping pass over it.
        let warnings = cap_warnings(warnings, max_warnings);
        let b64_len = patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
        let mut body = Vec::with_capacity(160 + b64_len + warnings.iter().map(|w| w.len() + 8).sum::<usize>());
        let str = |out: &mut Vec<u8>, s: &str| {
            // Writing a `str` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(out, s);
        };
        body.extend_from_slice(br#"{"apiVersion":"#);
        str(&mut body, &self.api_version);
        body.extend_from_slice(br#","kind":"#);
        str(&mut body, &self.kind);
        body.extend_from_slice(br#","response":{"uid":"#);
        str(&mut body, &self.uid);
        body.extend_from_slice(br#","allowed":true"#);
        if let Some(p) = patch {
            use base64::Engine as _;
            body.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = body.len();
            body.resize(start + b64_len, 0);
            match base64::engine::general_purpose::STANDARD.encode_slice(&p, &mut body[start..]) {
                Ok(n) => body.truncate(start + n),
                Err(e) => {
                    // Cannot happen (the buffer is sized exactly); fail open all the same.
                    let mut warnings = warnings;
                    warnings.push(warning(format!("patch could not be encoded ({e}): no service env vars injected")));
                    return self.respond(None, warnings, max_warnings, Outcome::Unchanged, dry_run, 0);
                }
            }
            body.push(b'"');
        }
        if !warnings.is_empty() {
            body.extend_from_slice(br#","warnings":["#);
            for (i, w) in warnings.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                str(&mut body, w);
            }
            body.push(b']');
        }
        body.extend_from_slice(b"}}");
        Reviewed { status: 200, body, outcome, dry_run, injected }
    }
}

fn str_field<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    obj.get(key).and_then(Value::as_str)
}

/// Handles one AdmissionReview. `decide` is called once, only for a readable pod CREATE, and
/// supplies the policy mode and candidate Services. Never panics.
pub fn review<S, F>(body: &[u8], config: &ReviewConfig, decide: F) -> Reviewed
where
    S: Borrow<Service>,
    F: FnOnce(&PodRequest<'_>) -> Decision<S>,
{
    review_with(body, config, decide, |pod, ns, mode, services, options| {
        mutate_object(pod, ns, mode, services, options)
    })
}

/// [`review`] with the Services' variables generated through `memo` (what the webhook does): a
/// namespace's variables are generated once per set of cached Service objects, not per review.
pub fn review_memo<F>(body: &[u8], config: &ReviewConfig, memo: &GenerationMemo, decide: F) -> Reviewed
where
    F: FnOnce(&PodRequest<'_>) -> Decision<Arc<Service>>,
{
    review_with(body, config, decide, |pod, ns, mode, services, options| {
        mutate_object_memo(pod, ns, mode, services, options, memo)
    })
}

fn review_with<S, F, M>(body: &[u8], config: &ReviewConfig, decide: F, mutate: M) -> Reviewed
where
    F: FnOnce(&PodRequest<'_>) -> Decision<S>,
    M: FnOnce(&PodObject<'_>, &str, Mode, &[S], &PatchOptions) -> super::Mutation,
{
    if body.len() > config.max_body_bytes {
        return status_error(
            413,
            "RequestEntityTooLarge",
            format!("request body of {} bytes exceeds the limit of {} bytes", body.len(), config.max_body_bytes),
            Outcome::TooLarge,
        );
    }
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    let Some(top) = doc.as_object() else {
        return bad_request("body is not a JSON object");
    };
    let api_version = match str_field(top, "apiVersion") {
        Some(v @ (API_VERSION_V1 | API_VERSION_V1BETA1)) => v.to_owned(),
        _ => return bad_request(format!("apiVersion must be {API_VERSION_V1}")),
    };
    let kind = match str_field(top, "kind") {
        Some(KIND) => KIND.to_owned(),
        _ => return bad_request(format!("kind must be {KIND}")),
    };
    let Some(request) = top.get("request").and_then(Value::as_object) else {
        return bad_request("missing request");
    };
    let Some(uid) = str_field(request, "uid").filter(|u| !u.is_empty()) else {
        return bad_request("missing request.uid");
    };
    let echo = Echo { api_version, kind, uid: uid.to_owned() };
    let dry_run = request.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
    let max_warnings = config.max_warnings;
    let allow =
        |outcome: Outcome, warnings: Vec<String>| echo.respond(None, warnings, max_warnings, outcome, dry_run, 0);

    let is_create = str_field(request, "operation") == Some("CREATE");
    let resource = request.get("resource").and_then(Value::as_object);
    let group = resource.and_then(|r| r.get("group")).map_or(Some(""), Value::as_str);
    let res = resource.and_then(|r| str_field(r, "resource"));
    let sub = request.get("subResource").map_or(Some(""), |v| match v {
        Value::Null => Some(""),
        other => other.as_str(),
    });
    if !is_create || group != Some("") || res != Some("pods") || sub != Some("") {
        return allow(Outcome::Ignored, Vec::new());
    }

    let request_ns = str_field(request, "namespace").unwrap_or("").to_owned();
    let name = str_field(request, "name").unwrap_or("").to_owned();
    let object = request.get("object").unwrap_or(&Value::Null);
    let pod = match PodObject::read(object) {
        Ok(p) => p,
        Err(e) => {
            return allow(
                Outcome::Unreadable,
                vec![warning(format!("pod object unreadable ({e}): no service env vars injected"))],
            );
        }
    };
    let meta = object.get("metadata").and_then(Value::as_object);
    let mut labels = BTreeMap::new();
    if let Some(l) = meta.and_then(|m| m.get("labels")).filter(|l| !l.is_null()) {
        let Some(l) = l.as_object() else {
            return allow(
                Outcome::Unreadable,
                vec![warning("pod object unreadable (labels): no service env vars injected")],
            );
        };
        for (k, v) in l {
            let Some(v) = v.as_str() else {
                return allow(
                    Outcome::Unreadable,
                    vec![warning(format!("pod object unreadable (label {k}): no service env vars injected"))],
                );
            };
            labels.insert(k.clone(), v.to_owned());
        }
    }
    let namespace = if request_ns.is_empty() {
        meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("").to_owned()
    } else {
        request_ns
    };
    if namespace.is_empty() {
        return allow(Outcome::Unreadable, vec![warning("request has no namespace: no service env vars injected")]);
    }

    let decision = decide(&PodRequest { uid: &echo.uid, namespace: &namespace, name: &name, labels: &labels, dry_run });
    let options = if decision.disable_kubelet_service_links.is_some() || !decision.extra_namespaces.is_empty() {
        let mut o = config.patch.clone();
        if let Some(d) = decision.disable_kubelet_service_links {
            o.disable_kubelet_service_links = d;
        }
        if !decision.extra_namespaces.is_empty() {
            o.extra_namespaces = decision.extra_namespaces;
        }
        std::borrow::Cow::Owned(o)
    } else {
        std::borrow::Cow::Borrowed(&config.patch)
    };
    let mutation = mutate(&pod, &namespace, decision.mode, &decision.services, &options);
    let mut warnings: Vec<String> = decision.warnings.into_iter().map(warning).collect();
    warnings.extend(mutation.warnings);
    let Some(patch) = mutation.patch else {
        return allow(Outcome::Unchanged, warnings);
    };
    echo.respond(Some(patch), warnings, max_warnings, Outcome::Patched, dry_run, mutation.injected)
}
