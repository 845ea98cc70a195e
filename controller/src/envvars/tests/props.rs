//! Properties over arbitrary bodies, pods and Services.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, EnvFromSource, EnvVar, EphemeralContainer, Pod, PodSpec, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::{
    Decision, MARKER_ANNOTATION, MAX_WARNING_CHARS, Mode, Outcome, PatchOptions, ReviewConfig, from_services, generate,
    is_master_var, mutate, review, visible_services,
};
use super::{apply, container, env0, kubelet_env, svc, unbase64};

// ---------- strategies ----------

fn arb_service() -> impl Strategy<Value = Service> {
    let name = prop::sample::select(vec![
        "foo",
        "foo-port-80-tcp",
        "redis",
        "redis-service",
        "kubernetes",
        "kubernetes-service",
        "a",
        "a-b",
        "web",
    ]);
    let ns = prop::sample::select(vec!["default", "ns1", "ns1", "ns2"]);
    let ip = prop::sample::select(vec!["10.0.0.1", "10.0.0.2", "fd00::1", "None", ""]);
    let port = (
        prop::sample::select(vec!["", "http", "u-d-p", "80-tcp", "metrics"]),
        prop::sample::select(vec![80, 443, 8080, 6379]),
        prop::sample::select(vec!["", "TCP", "UDP", "SCTP"]),
    );
    (ns, name, ip, prop::collection::vec(port, 0..3)).prop_map(|(ns, name, ip, ports)| {
        let ports: Vec<(&str, i32, &str)> = ports.into_iter().collect();
        svc(ns, name, ip, &ports)
    })
}

fn arb_env_var() -> impl Strategy<Value = EnvVar> {
    let name = prop::sample::select(vec![
        "APP",
        "FOO_SERVICE_HOST",
        "REDIS_PORT",
        "KUBERNETES_SERVICE_HOST",
        "WEB_PORT_80_TCP",
        "X",
        "A_SERVICE_PORT",
    ]);
    let value = prop::option::of("[a-z$()_]{0,8}");
    (name, value).prop_map(|(n, v)| EnvVar { name: n.to_owned(), value: v, value_from: None })
}

fn arb_env() -> impl Strategy<Value = Option<Vec<EnvVar>>> {
    prop::option::of(prop::collection::vec(arb_env_var(), 0..4))
}

fn arb_container(i: usize) -> impl Strategy<Value = Container> {
    (arb_env(), any::<bool>()).prop_map(move |(env, env_from)| Container {
        name: format!("c{i}"),
        env,
        env_from: env_from.then(|| {
            vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource { name: "cm".to_owned(), optional: None }),
                ..EnvFromSource::default()
            }]
        }),
        ..Container::default()
    })
}

fn arb_containers(max: usize) -> impl Strategy<Value = Vec<Container>> {
    prop::collection::vec(arb_container(0), 0..max).prop_map(|mut v| {
        for (i, c) in v.iter_mut().enumerate() {
            c.name = format!("c{i}");
        }
        v
    })
}

fn arb_annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    prop_oneof![
        Just(None),
        Just(Some(BTreeMap::new())),
        Just(Some([("a/b~c".to_owned(), "x".to_owned())].into())),
        "[a-z0-9;]{0,20}".prop_map(|m| Some([(MARKER_ANNOTATION.to_owned(), m)].into())),
    ]
}

fn arb_pod() -> impl Strategy<Value = Pod> {
    (
        prop::sample::select(vec!["default", "ns1", "ns1"]),
        arb_annotations(),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        arb_containers(4),
        prop::option::of(arb_containers(2)),
        prop::option::of(prop::collection::vec(arb_env(), 0..2)),
    )
        .prop_map(|(ns, annotations, empty_meta, links, containers, inits, ephemeral)| {
            let metadata = if empty_meta && annotations.is_none() {
                ObjectMeta::default()
            } else {
                ObjectMeta {
                    name: Some("p".to_owned()),
                    namespace: Some(ns.to_owned()),
                    annotations,
                    ..ObjectMeta::default()
                }
            };
            Pod {
                metadata,
                spec: Some(PodSpec {
                    containers,
                    init_containers: inits,
                    ephemeral_containers: ephemeral.map(|envs| {
                        envs.into_iter()
                            .enumerate()
                            .map(|(i, env)| EphemeralContainer {
                                name: format!("e{i}"),
                                env,
                                ..EphemeralContainer::default()
                            })
                            .collect()
                    }),
                    enable_service_links: links,
                    ..PodSpec::default()
                }),
                status: None,
            }
        })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9/._-]{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["CREATE", "UPDATE", "pods", "", "v1", "Pod", "admission.k8s.io/v1",])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "spec",
                    "containers",
                    "env",
                    "name",
                    "value",
                    "metadata",
                    "annotations",
                    "enableServiceLinks",
                    "x",
                ]),
                inner,
                0..4,
            )
            .prop_map(|m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }),
        ]
    })
}

/// AdmissionReview-shaped documents where every field may be missing, mistyped or valid.
fn arb_review() -> impl Strategy<Value = Value> {
    let maybe = |s: BoxedStrategy<Value>| prop::option::weighted(0.9, s);
    let api_version = prop_oneof![
        6 => Just(json!("admission.k8s.io/v1")),
        2 => Just(json!("admission.k8s.io/v1beta1")),
        1 => arb_json(),
    ]
    .boxed();
    let kind = prop_oneof![8 => Just(json!("AdmissionReview")), 1 => arb_json()].boxed();
    let uid = prop_oneof![8 => Just(json!("u-1")), 1 => Just(json!("")), 1 => arb_json()].boxed();
    let operation = prop_oneof![
        6 => Just(json!("CREATE")),
        1 => Just(json!("UPDATE")),
        1 => arb_json()
    ]
    .boxed();
    let resource = prop_oneof![
        6 => Just(json!({"group": "", "version": "v1", "resource": "pods"})),
        1 => Just(json!({"resource": "pods"})),
        1 => arb_json(),
    ]
    .boxed();
    let object = prop_oneof![
        6 => arb_pod().prop_map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
        1 => arb_json(),
        1 => arb_json().prop_map(|spec| json!({"metadata": {"namespace": "ns1"}, "spec": spec})),
    ]
    .boxed();
    (
        maybe(api_version),
        maybe(kind),
        maybe(uid),
        maybe(operation),
        maybe(resource),
        maybe(object),
        maybe(prop_oneof![6 => Just(json!("ns1")), 1 => arb_json()].boxed()),
        maybe(prop_oneof![3 => any::<bool>().prop_map(Value::Bool), 1 => arb_json()].boxed()),
        prop::option::weighted(0.2, prop_oneof![Just(json!("")), arb_json()].boxed()),
    )
        .prop_map(|(av, k, uid, op, res, obj, ns, dry, sub)| {
            let mut req = serde_json::Map::new();
            for (key, v) in [
                ("uid", uid),
                ("operation", op),
                ("resource", res),
                ("object", obj),
                ("namespace", ns),
                ("dryRun", dry),
                ("subResource", sub),
            ] {
                if let Some(v) = v {
                    req.insert(key.to_owned(), v);
                }
            }
            let mut top = serde_json::Map::new();
            if let Some(v) = av {
                top.insert("apiVersion".to_owned(), v);
            }
            if let Some(v) = k {
                top.insert("kind".to_owned(), v);
            }
            top.insert("request".to_owned(), Value::Object(req));
            Value::Object(top)
        })
}

// ---------- helpers ----------

fn all_envs(p: &Pod) -> Vec<Vec<EnvVar>> {
    let Some(spec) = p.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<Vec<EnvVar>> = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        out.push(c.env.clone().unwrap_or_default());
    }
    for c in &spec.containers {
        out.push(c.env.clone().unwrap_or_default());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.push(c.env.clone().unwrap_or_default());
    }
    out
}

fn apply_json(doc: &Value, patch: &json_patch::Patch) -> Result<Value, String> {
    let mut d = doc.clone();
    json_patch::patch(&mut d, &patch.0).map_err(|e| e.to_string())?;
    Ok(d)
}

fn check_response_shape(body: &[u8]) -> Result<(), TestCaseError> {
    let r = review(body, &ReviewConfig::default(), |_| Decision::<Service>::off());
    prop_assert!(matches!(r.status, 200 | 400 | 413));
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if r.status == 200 {
        prop_assert_eq!(&v["kind"], "AdmissionReview");
        prop_assert!(v["response"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
        prop_assert_eq!(&v["response"]["allowed"], true);
    } else {
        prop_assert_eq!(&v["kind"], "Status");
    }
    Ok(())
}

fn links_config(disable_links: bool) -> ReviewConfig {
    ReviewConfig {
        patch: PatchOptions { disable_kubelet_service_links: disable_links, ..PatchOptions::default() },
        ..ReviewConfig::default()
    }
}

/// A pod CREATE review in namespace `ns1` carrying `object`.
fn pod_review(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "namespace": "ns1", "object": object}
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic and always get a well-formed answer.
    #[test]
    fn review_survives_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_response_shape(&body)?;
    }

    /// Arbitrary AdmissionReview-ish JSON never panics; 200s echo a non-empty uid and
    /// apiVersion; every warning is at most 120 characters.
    #[test]
    fn review_survives_arbitrary_reviews(doc in arb_review(), services in prop::collection::vec(arb_service(), 0..8)) {
        let body = serde_json::to_vec(&doc).unwrap();
        check_response_shape(&body)?;
        let r = review(&body, &ReviewConfig::default(), |_| Decision {
            mode: Mode::All,
            services: services.iter().collect(),
            warnings: Vec::new(),
            ..Decision::off()
        });
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if r.status == 200 {
            prop_assert_eq!(&v["apiVersion"], &doc["apiVersion"]);
            prop_assert_eq!(&v["response"]["uid"], &doc["request"]["uid"]);
            for w in v["response"]["warnings"].as_array().into_iter().flatten() {
                prop_assert!(w.as_str().is_some_and(|w| w.chars().count() <= MAX_WARNING_CHARS));
            }
            if let Some(p) = v["response"]["patch"].as_str() {
                prop_assert_eq!(&v["response"]["patchType"], "JSONPatch");
                let bytes = unbase64(p).unwrap();
                let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                // The patch applies to the object as sent.
                prop_assert!(apply_json(&doc["request"]["object"], &ops).is_ok());
            }
        }
    }

    /// Core invariants of `mutate` on arbitrary pods and Services.
    #[test]
    fn mutate_invariants(
        pod in arb_pod(),
        services in prop::collection::vec(arb_service(), 0..8),
        disable_links in any::<bool>(),
        selected in any::<bool>(),
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "ns1".to_owned());
        let mode = if selected { Mode::Selected } else { Mode::All };
        let opts = PatchOptions { disable_kubelet_service_links: disable_links, ..PatchOptions::default() };
        let m = mutate(&pod, &ns, mode, &services, &opts);
        for w in &m.warnings {
            prop_assert!(w.chars().count() <= MAX_WARNING_CHARS, "{}", w);
        }
        let doc = serde_json::to_value(&pod).unwrap();
        let Some(ops) = m.operations() else {
            prop_assert_eq!(m.injected, 0);
            return Ok(());
        };
        let patched_doc = apply_json(&doc, &ops).map_err(TestCaseError::fail)?;
        let patched: Pod = serde_json::from_value(patched_doc).unwrap();

        // What should have been injected (links as the pod says; random markers never match).
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let is_shadow = |s: &Service| {
            s.metadata.name.as_deref() == Some("kubernetes")
                && s.metadata.namespace.as_deref() == Some(ns.as_str())
                && ns != "default"
                && super::super::is_service_ip_set(s)
        };
        // With our links switch, a namespace's own `kubernetes` is left out (documented).
        let candidates: Vec<&Service> =
            services.iter().filter(|s| !(disable_links && is_shadow(s))).collect();
        let visible = visible_services(&ns, links, &candidates);
        let desired = generate(&visible.services).vars;
        let desired_names: Vec<&str> = desired.iter().map(|v| v.name.as_str()).collect();

        let mut injected = 0;
        for (old, new) in all_envs(&pod).iter().zip(all_envs(&patched).iter()) {
            prop_assert!(new.len() >= old.len());
            let added = new.len() - old.len();
            injected += added;
            // User entries untouched, after ours.
            prop_assert_eq!(&new[added..], &old[..]);
            let old_names: HashSet<&str> = old.iter().map(|e| e.name.as_str()).collect();
            // Ours: exactly the desired names the user did not declare, in desired order.
            let expect: Vec<&str> = desired_names.iter().copied().filter(|n| !old_names.contains(n)).collect();
            let got: Vec<&str> = new[..added].iter().map(|e| e.name.as_str()).collect();
            prop_assert_eq!(&got, &expect);
            // Every desired name present exactly once unless the user repeated it.
            for n in &desired_names {
                let before = old.iter().filter(|e| e.name == *n).count();
                let after = new.iter().filter(|e| e.name == *n).count();
                prop_assert_eq!(after, before.max(1), "{}", n);
            }
        }
        prop_assert_eq!(injected, m.injected);
        if disable_links {
            prop_assert_eq!(patched.spec.as_ref().unwrap().enable_service_links, Some(false));
        }

        // Idempotent.
        let again = mutate(&patched, &ns, mode, &services, &opts);
        prop_assert!(again.patch.is_none(), "second pass: {:?}", again.patch);

        // With the kubelet's links disabled by us and no collisions, the final runtime env of
        // every regular container is what the kubelet alone would have produced.
        let linked = generate(&visible_services(&ns, true, &services).services);
        let collisions = [linked.collisions.len(), linked.reserved.len()];
        let plain_values = pod.spec.as_ref().unwrap().containers.iter()
            .flat_map(|c| c.env.iter().flatten())
            .all(|e| !e.value.as_deref().unwrap_or("").contains('$'));
        // (A namespace's own `kubernetes` Service is the documented exception.)
        let shadow = links && services.iter().any(is_shadow);
        if disable_links && collisions == [0, 0] && plain_values && !shadow {
            let before_spec = pod.spec.as_ref().unwrap();
            let after_spec = patched.spec.as_ref().unwrap();
            for (b, a) in before_spec.containers.iter().zip(after_spec.containers.iter()) {
                let original = kubelet_env(&ns, links, &services, b.env.as_deref().unwrap_or_default());
                let now = kubelet_env(&ns, false, &services, a.env.as_deref().unwrap_or_default());
                prop_assert_eq!(original, now);
            }
        }
    }

    /// Through the wire: the patch from `review` applies to the object it came with, and a
    /// second review of the result has no patch.
    #[test]
    fn review_round_trip_is_idempotent(
        pod in arb_pod(),
        services in prop::collection::vec(arb_service(), 0..8),
        disable_links in any::<bool>(),
    ) {
        let object = serde_json::to_value(&pod).unwrap();
        let cfg = links_config(disable_links);
        let wrap = pod_review;
        let decide = |_: &super::super::PodRequest<'_>| Decision {
            mode: Mode::All,
            services: services.iter().collect(),
            warnings: Vec::new(),
            ..Decision::off()
        };
        let r = review(&wrap(&object), &cfg, decide);
        prop_assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let Some(p) = v["response"]["patch"].as_str() else {
            prop_assert_ne!(r.outcome, Outcome::Patched);
            return Ok(());
        };
        let ops: json_patch::Patch = serde_json::from_slice(&unbase64(p).unwrap()).unwrap();
        let patched = apply_json(&object, &ops).map_err(TestCaseError::fail)?;
        let r2 = review(&wrap(&patched), &cfg, decide);
        let v2: Value = serde_json::from_slice(&r2.body).unwrap();
        prop_assert_eq!(r2.outcome, Outcome::Unchanged);
        prop_assert!(v2["response"].get("patch").is_none());
    }

    /// Through a generation memo (shared by every case, so stale entries abound) the answer is
    /// byte for byte the answer without it, on a miss, on a hit, and for the patched pod.
    #[test]
    fn review_memo_answers_as_review(
        pod in arb_pod(),
        services in prop::collection::vec(arb_service(), 0..8),
        disable_links in any::<bool>(),
    ) {
        static MEMO: std::sync::LazyLock<super::super::GenerationMemo> =
            std::sync::LazyLock::new(|| super::super::GenerationMemo::new(4, 10_000));
        let cached: Vec<std::sync::Arc<Service>> = services.into_iter().map(std::sync::Arc::new).collect();
        let cfg = links_config(disable_links);
        let wrap = pod_review;
        let decide = |_: &super::super::PodRequest<'_>| Decision {
            mode: Mode::All,
            services: cached.clone(),
            warnings: Vec::new(),
            ..Decision::off()
        };
        let object = serde_json::to_value(&pod).unwrap();
        let plain = review(&wrap(&object), &cfg, decide);
        for _ in 0..2 {
            let memo = super::super::review_memo(&wrap(&object), &cfg, &MEMO, decide);
            prop_assert_eq!(&memo, &plain);
        }
        let v: Value = serde_json::from_slice(&plain.body).unwrap();
        if let Some(p) = v["response"]["patch"].as_str() {
            let ops: json_patch::Patch = serde_json::from_slice(&unbase64(p).unwrap()).unwrap();
            let patched = apply_json(&object, &ops).map_err(TestCaseError::fail)?;
            let again = super::super::review_memo(&wrap(&patched), &cfg, &MEMO, decide);
            prop_assert_eq!(again, review(&wrap(&patched), &cfg, decide));
        }
    }

    /// Every name a `kubernetes` Service can produce is one of the API server's, and whatever
    /// such name a pod gets injected comes from `default/kubernetes` or the pod namespace's own
    /// `kubernetes`: in either mode, links on or off, with exports (`default` among them).
    #[test]
    fn api_server_names_come_only_from_a_kubernetes_service_the_kubelet_shows(
        services in prop::collection::vec(arb_service(), 0..8),
        master in arb_service(),
        links in any::<bool>(),
        disable_links in any::<bool>(),
        selected in any::<bool>(),
    ) {
        let mut master = master;
        master.metadata.name = Some("kubernetes".to_owned());
        for v in from_services(&[master]) {
            prop_assert!(is_master_var(&v.name), "{}", v.name);
        }
        let ns = "ns1";
        let mode = if selected { Mode::Selected } else { Mode::All };
        let opts = PatchOptions {
            disable_kubelet_service_links: disable_links,
            extra_namespaces: vec!["ns2".to_owned(), "default".to_owned()],
            ..PatchOptions::default()
        };
        let allowed: HashSet<(String, String)> = from_services(
            &services
                .iter()
                .filter(|s| {
                    s.metadata.name.as_deref() == Some("kubernetes")
                        && matches!(s.metadata.namespace.as_deref(), Some("default" | "ns1"))
                })
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect();
        let pod = super::pod(ns, Some(links), vec![container("c", None)]);
        let m = mutate(&pod, ns, mode, &services, &opts);
        if let Some(ops) = m.operations() {
            for e in env0(&apply(&pod, &ops)) {
                let pair = (e.name.clone(), e.value.clone().unwrap_or_default());
                prop_assert!(!is_master_var(&e.name) || allowed.contains(&pair), "{:?} from {:?}", pair, m.warnings);
            }
        }
    }

    /// A pick by names through lookups is the pick by a scan: same Services, same warnings.
    #[test]
    fn select_named_is_select_services_without_a_selector(
        services in prop::collection::vec(arb_service(), 0..10),
        names in prop::collection::vec(
            prop::sample::select(vec!["foo", "redis", "redis-service", "kubernetes", "web", "missing", "a"]), 0..5),
    ) {
        // One namespace, unique names (what a namespace's index holds), in name order.
        let mut in_ns: BTreeMap<String, Service> = BTreeMap::new();
        for mut s in services {
            s.metadata.namespace = Some("ns1".to_owned());
            in_ns.insert(s.metadata.name.clone().unwrap_or_default(), s);
        }
        let in_ns: Vec<Service> = in_ns.into_values().collect();
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let scanned = super::super::select_services(&in_ns, &names, |_| false);
        let (looked_up, warnings) = super::super::select_named(&names, |n| {
            in_ns.iter().find(|s| s.metadata.name.as_deref() == Some(n))
        });
        let looked_up: Vec<&Service> = looked_up.into_iter().collect();
        prop_assert_eq!(looked_up, scanned.services);
        prop_assert_eq!(warnings, scanned.warnings);
    }
}
