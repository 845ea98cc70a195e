//! Unit tests of policy selection, decisions, validation, status and the committed CRD.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, Time};

use super::*;
use crate::envvars::{Mode, ReviewConfig, from_services, review};

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[derive(Default)]
struct View {
    namespaces: BTreeMap<String, Labels>,
    policies: Vec<Arc<ServiceEnvPolicy>>,
    services: Vec<Arc<Service>>,
}

impl ClusterView for View {
    fn namespace_labels(&self, namespace: &str) -> Option<Labels> {
        self.namespaces.get(namespace).cloned()
    }
    fn policies(&self, namespace: &str) -> Vec<Arc<ServiceEnvPolicy>> {
        self.policies.iter().filter(|p| p.metadata.namespace.as_deref() == Some(namespace)).cloned().collect()
    }
    fn services(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.services.iter().filter(|s| s.metadata.namespace.as_deref() == Some(namespace)).cloned().collect()
    }
}

fn svc(ns: &str, name: &str, ip: &str, port: i32, lbls: &[(&str, &str)]) -> Arc<Service> {
    Arc::new(Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(labels(lbls)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort { port, ..Default::default() }]),
            ..Default::default()
        }),
        status: None,
    })
}

fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: Some(labels(pairs)), match_expressions: None }
}

fn policy(ns: &str, name: &str, spec: ServiceEnvPolicySpec) -> Arc<ServiceEnvPolicy> {
    let mut p = ServiceEnvPolicy::new(name, spec);
    p.metadata.namespace = Some(ns.into());
    p.metadata.generation = Some(3);
    Arc::new(p)
}

fn pod(lbls: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta { labels: Some(labels(lbls)), ..Default::default() },
        spec: Some(PodSpec {
            containers: vec![Container { name: "c".into(), ..Default::default() }],
            ..Default::default()
        }),
        status: None,
    }
}

fn names(services: &[Arc<Service>]) -> Vec<String> {
    let mut v: Vec<String> = services
        .iter()
        .map(|s| {
            format!("{}/{}", s.metadata.namespace.as_deref().unwrap_or(""), s.metadata.name.as_deref().unwrap_or(""))
        })
        .collect();
    v.sort();
    v
}

fn cluster() -> View {
    View {
        namespaces: [
            ("app".to_owned(), labels(&[])),
            ("shared".to_owned(), labels(&[(EXPORT_LABEL, "true")])),
            ("private".to_owned(), labels(&[])),
            ("labelled".to_owned(), labels(&[(NAMESPACE_MODE_LABEL, "all")])),
            ("weird".to_owned(), labels(&[(NAMESPACE_MODE_LABEL, "sometimes")])),
        ]
        .into(),
        policies: Vec::new(),
        services: vec![
            svc("default", "kubernetes", "10.96.0.1", 443, &[]),
            svc("app", "db", "10.0.0.1", 5432, &[("tier", "data")]),
            svc("app", "cache", "10.0.0.2", 6379, &[("tier", "data")]),
            svc("app", "web", "10.0.0.3", 80, &[]),
            svc("shared", "auth", "10.0.1.1", 443, &[("tier", "data")]),
            svc("shared", "mail", "10.0.1.2", 25, &[]),
            svc("private", "vault", "10.0.2.1", 8200, &[]),
            svc("labelled", "api", "10.0.3.1", 80, &[]),
        ],
    }
}

fn selected(names: &[&str], sel: Option<LabelSelector>) -> Option<ServiceSelection> {
    Some(ServiceSelection { names: names.iter().map(|s| (*s).to_owned()).collect(), selector: sel })
}

#[test]
fn most_specific_selector_wins_then_name() {
    let mut v = cluster();
    let all = ServiceEnvPolicySpec { mode: PolicyMode::All, ..Default::default() };
    let off = ServiceEnvPolicySpec {
        mode: PolicyMode::Off,
        pod_selector: Some(selector(&[("app", "x")])),
        ..Default::default()
    };
    let off_b = ServiceEnvPolicySpec { pod_selector: Some(selector(&[("app", "x")])), ..off.clone() };
    v.policies = vec![policy("app", "z-everyone", all), policy("app", "b-x", off_b), policy("app", "a-x", off)];
    let (d, src) = decide("app", &labels(&[("app", "x")]), &v, DefaultMode::Off);
    assert_eq!(src, Source::Policy("a-x".into()));
    assert_eq!(d.mode, Mode::Off);
    assert!(d.warnings.iter().any(|w| w.contains("a-x applies; also matching: b-x, z-everyone")), "{:?}", d.warnings);
    // A pod the specific policies do not match falls to the catch-all.
    let (d, src) = decide("app", &labels(&[("app", "y")]), &v, DefaultMode::Off);
    assert_eq!(src, Source::Policy("z-everyone".into()));
    assert_eq!(d.mode, Mode::All);
    assert_eq!(names(&d.services), ["app/cache", "app/db", "app/web", "default/kubernetes"]);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // Policies of other namespaces never apply.
    let (_, src) = decide("shared", &labels(&[("app", "x")]), &v, DefaultMode::Off);
    assert_eq!(src, Source::Default);
}

#[test]
fn match_expressions_count_and_invalid_policies_are_skipped() {
    let mut v = cluster();
    let expr = |op: &str, values: Option<Vec<&str>>| LabelSelectorRequirement {
        key: "app".into(),
        operator: op.into(),
        values: values.map(|v| v.into_iter().map(String::from).collect()),
    };
    let two = LabelSelector {
        match_labels: Some(labels(&[("tier", "web")])),
        match_expressions: Some(vec![expr("In", Some(vec!["x", "y"]))]),
    };
    let broken = LabelSelector { match_labels: None, match_expressions: Some(vec![expr("In", None)]) };
    let broken2 = LabelSelector {
        match_labels: Some(labels(&[("tier", "web")])),
        match_expressions: Some(vec![expr("Exists", None), expr("Near", None)]),
    };
    v.policies = vec![
        policy(
            "app",
            "one",
            ServiceEnvPolicySpec { pod_selector: Some(selector(&[("tier", "web")])), ..Default::default() },
        ),
        policy(
            "app",
            "two",
            ServiceEnvPolicySpec { pod_selector: Some(two), mode: PolicyMode::Off, ..Default::default() },
        ),
        policy("app", "broken", ServiceEnvPolicySpec { pod_selector: Some(broken), ..Default::default() }),
        policy("app", "broken2", ServiceEnvPolicySpec { pod_selector: Some(broken2), ..Default::default() }),
        // Valid selector, invalid spec (Selected without services).
        policy("app", "empty-selected", ServiceEnvPolicySpec { mode: PolicyMode::Selected, ..Default::default() }),
    ];
    let (d, src) = decide("app", &labels(&[("tier", "web"), ("app", "y")]), &v, DefaultMode::Off);
    assert_eq!(src, Source::Policy("two".into()));
    assert!(d.warnings.iter().any(|w| w.contains("policy broken ignored")), "{:?}", d.warnings);
    assert!(d.warnings.iter().any(|w| w.contains("policy broken2 ignored")), "{:?}", d.warnings);
    assert!(d.warnings.iter().any(|w| w.contains("empty-selected matches but is invalid")), "{:?}", d.warnings);
    let (_, src) = decide("app", &labels(&[("tier", "web"), ("app", "z")]), &v, DefaultMode::Off);
    assert_eq!(src, Source::Policy("one".into()));
}

#[test]
fn without_policy_the_namespace_label_then_the_default_decide() {
    let v = cluster();
    let (d, src) = decide("labelled", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!((d.mode, src), (Mode::All, Source::NamespaceLabel));
    assert_eq!(names(&d.services), ["default/kubernetes", "labelled/api"]);
    assert_eq!(d.disable_kubelet_service_links, None);
    let (d, src) = decide("app", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!((d.mode, src), (Mode::Off, Source::Default));
    let (d, _) = decide("app", &labels(&[]), &v, DefaultMode::All);
    assert_eq!(names(&d.services), ["app/cache", "app/db", "app/web", "default/kubernetes"]);
    let (d, src) = decide("weird", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!((d.mode, src), (Mode::Off, Source::Default));
    assert!(d.warnings[0].contains("sometimes"), "{:?}", d.warnings);
    // Unknown namespace (cache lag): the default.
    assert_eq!(decide("new", &labels(&[]), &v, DefaultMode::Off).1, Source::Default);
}

#[test]
fn selected_picks_names_and_selector_only() {
    let mut v = cluster();
    let spec = ServiceEnvPolicySpec {
        mode: PolicyMode::Selected,
        services: selected(&["web", "ghost"], Some(selector(&[("tier", "data")]))),
        disable_kubelet_service_links: true,
        ..Default::default()
    };
    v.policies = vec![policy("app", "p", spec)];
    let (d, _) = decide("app", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!(d.mode, Mode::Selected);
    assert_eq!(names(&d.services), ["app/cache", "app/db", "app/web"]);
    assert_eq!(d.disable_kubelet_service_links, Some(true));
    assert!(d.warnings.iter().any(|w| w.contains("ghost not found")), "{:?}", d.warnings);
}

#[test]
fn other_namespaces_need_the_export_label() {
    let mut v = cluster();
    let spec = ServiceEnvPolicySpec {
        mode: PolicyMode::Selected,
        namespaces: vec!["shared".into(), "private".into()],
        services: selected(&["db", "shared/mail", "private/vault"], Some(selector(&[("tier", "data")]))),
        ..Default::default()
    };
    v.policies = vec![policy("app", "p", spec.clone())];
    let (d, _) = decide("app", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!(names(&d.services), ["app/cache", "app/db", "shared/auth", "shared/mail"]);
    assert_eq!(d.extra_namespaces, ["shared"]);
    assert!(d.warnings.iter().any(|w| w.contains("namespace private not used")), "{:?}", d.warnings);
    // Mode All: everything of the exported namespace.
    v.policies = vec![policy("app", "p", ServiceEnvPolicySpec { mode: PolicyMode::All, services: None, ..spec })];
    let (d, _) = decide("app", &labels(&[]), &v, DefaultMode::Off);
    assert_eq!(
        names(&d.services),
        ["app/cache", "app/db", "app/web", "default/kubernetes", "shared/auth", "shared/mail"]
    );
}

#[test]
fn off_with_disabled_links_switches_links_off_and_injects_nothing() {
    let mut v = cluster();
    v.policies = vec![policy(
        "app",
        "p",
        ServiceEnvPolicySpec { mode: PolicyMode::Off, disable_kubelet_service_links: true, ..Default::default() },
    )];
    let (d, _) = decide("app", &labels(&[]), &v, DefaultMode::All);
    assert_eq!(d.mode, Mode::Selected);
    assert!(d.services.is_empty());
    // Through the core: only enableServiceLinks and the marker.
    let body = admission_body(&pod(&[]), "app");
    let r = review(&body, &ReviewConfig::default(), |req| decide(req.namespace, req.labels, &v, DefaultMode::All).0);
    let ops = patch_ops(&r.body);
    let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/metadata/annotations", "/spec/enableServiceLinks"], "{ops:?}");
}

fn admission_body(pod: &Pod, ns: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "object": pod,
        }
    }))
    .unwrap()
}

fn patch_ops(body: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let Some(p) = v["response"]["patch"].as_str() else { return Vec::new() };
    serde_json::from_slice(&decode_b64(p)).unwrap()
}

fn decode_b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | (u32::from(val(c)) << (18 - 6 * i)));
        let k = chunk.len() - 1;
        for i in 0..k {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The env entries a review adds to the first container (name, value), and its warnings.
fn injected(v: &View, pod: &Pod, ns: &str) -> (Vec<(String, String)>, Vec<String>) {
    let body = admission_body(pod, ns);
    let r = review(&body, &ReviewConfig::default(), |req| decide(req.namespace, req.labels, v, DefaultMode::Off).0);
    let response: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let warnings = response["response"]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    let own: Vec<&str> =
        pod.spec.as_ref().unwrap().containers[0].env.iter().flatten().map(|e| e.name.as_str()).collect();
    let ops = patch_ops(&r.body);
    let vars = ops
        .iter()
        .filter(|o| o["path"] == "/spec/containers/0/env")
        .flat_map(|o| o["value"].as_array().unwrap().iter())
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or("").to_owned()))
        .filter(|(n, _)| !own.contains(&n.as_str()))
        .collect();
    (vars, warnings)
}

/// A pick can never set the API server's variables for the pod (an injected `env` entry beats
/// the kubelet's own): neither another namespace's `kubernetes` Service nor a Service of the
/// pod's namespace whose variables collide with `default/kubernetes`'s (`kubernetes-service`
/// gives `KUBERNETES_SERVICE_PORT=tcp://…` as its link variable). Whatever `KUBERNETES_*` the pod
/// gets come from `default/kubernetes`.
#[test]
fn picked_services_never_set_the_api_servers_variables() {
    let master = svc("default", "kubernetes", "10.96.0.1", 443, &[]);
    let master_vars: BTreeMap<String, String> =
        from_services(&[master]).into_iter().map(|v| (v.name, v.value)).collect();
    let impostors =
        [svc("shared", "kubernetes", "10.0.1.9", 443, &[]), svc("app", "kubernetes-service", "10.0.0.9", 443, &[])];
    for impostor in &impostors {
        let (ns, name) = (impostor.metadata.namespace.as_deref().unwrap(), impostor.metadata.name.as_deref().unwrap());
        let ip = impostor.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
        let pick = if ns == "app" { name.to_owned() } else { format!("{ns}/{name}") };
        // The names this Service would take from the master.
        let colliding: Vec<String> = from_services(std::slice::from_ref(impostor))
            .into_iter()
            .map(|v| v.name)
            .filter(|n| master_vars.contains_key(n))
            .collect();
        assert!(!colliding.is_empty(), "{pick}: the fixture must collide");
        for (mode, disable) in [
            (PolicyMode::Selected, true),
            (PolicyMode::Selected, false),
            (PolicyMode::All, true),
            (PolicyMode::All, false),
        ] {
            let mut v = cluster();
            v.services.push(impostor.clone());
            let services = (mode == PolicyMode::Selected).then(|| selected(&[pick.as_str(), "db"], None)).flatten();
            v.policies = vec![policy(
                "app",
                "p",
                ServiceEnvPolicySpec {
                    mode,
                    namespaces: vec!["shared".into()],
                    services,
                    disable_kubelet_service_links: disable,
                    ..Default::default()
                },
            )];
            let (vars, warnings) = injected(&v, &pod(&[]), "app");
            let case = format!("{pick} {mode:?} disable={disable}");
            assert!(vars.iter().any(|(n, _)| n == "DB_SERVICE_HOST"), "{case}: {vars:?}");
            for (n, value) in &vars {
                if let Some(want) = master_vars.get(n) {
                    assert_eq!(value, want, "{case}: {n} must be the API server's");
                }
            }
            if ns == "shared" {
                assert!(!vars.iter().any(|(_, value)| value.contains(&ip)), "{case}: {vars:?}");
                assert!(
                    warnings.iter().any(|w| w.contains("shared/kubernetes") && w.contains("not injected")),
                    "{case}: {warnings:?}"
                );
            } else {
                // The Service's other variables are still injected.
                assert!(vars.iter().any(|(_, value)| value.contains(&ip)), "{case}: {vars:?}");
                for n in &colliding {
                    assert!(
                        warnings.iter().any(|w| w.contains(n.as_str()) && w.contains("app/kubernetes-service")),
                        "{case}: {n}: {warnings:?}"
                    );
                }
            }
        }
    }
}

/// Policy `app/p`: Selected, `db` of its own namespace and `mail` of the exported `shared`.
fn pick_db_and_shared_mail(disable_kubelet_service_links: bool) -> Arc<ServiceEnvPolicy> {
    policy(
        "app",
        "p",
        ServiceEnvPolicySpec {
            mode: PolicyMode::Selected,
            namespaces: vec!["shared".into()],
            services: selected(&["db", "shared/mail"], None),
            disable_kubelet_service_links,
            ..Default::default()
        },
    )
}

/// A pod that sets `enableServiceLinks: false` itself keeps its opt-out under a `Selected` policy
/// (nothing of the pick is injected, as the kubelet would show it nothing), and the response says
/// so instead of injecting nothing silently.
#[test]
fn selected_pick_into_a_pod_that_opts_out_of_links_warns() {
    let mut opted_out = pod(&[]);
    opted_out.spec.as_mut().unwrap().enable_service_links = Some(false);
    let says_so = |warnings: &[String]| {
        warnings.iter().any(|w| w.contains("not injected") && w.contains("enableServiceLinks: false"))
    };
    for disable in [false, true] {
        let mut v = cluster();
        v.policies = vec![pick_db_and_shared_mail(disable)];
        let (vars, warnings) = injected(&v, &opted_out, "app");
        assert!(vars.is_empty(), "disable={disable}: {vars:?}");
        assert!(says_so(&warnings), "disable={disable}: {warnings:?}");
        // The same pod with links on gets the pick, and no such warning.
        let (vars, warnings) = injected(&v, &pod(&[]), "app");
        assert!(vars.iter().any(|(n, _)| n == "DB_SERVICE_HOST"), "{vars:?}");
        assert!(!says_so(&warnings), "{warnings:?}");
        // Re-invoked on what we patched (links switched off by us, not by the pod): no warning.
        let body = admission_body(&pod(&[]), "app");
        let r =
            review(&body, &ReviewConfig::default(), |req| decide(req.namespace, req.labels, &v, DefaultMode::Off).0);
        let mut patched = serde_json::to_value(pod(&[])).unwrap();
        json_patch::patch(
            &mut patched,
            &serde_json::from_value::<json_patch::Patch>(patch_ops(&r.body).into()).unwrap(),
        )
        .unwrap();
        let patched: Pod = serde_json::from_value(patched).unwrap();
        let (vars, warnings) = injected(&v, &patched, "app");
        assert!(vars.is_empty() && !says_so(&warnings), "disable={disable}: {vars:?} {warnings:?}");
        // Nothing picked (mode Off switching links off): nothing to warn about.
        v.policies = vec![policy(
            "app",
            "p",
            ServiceEnvPolicySpec { mode: PolicyMode::Off, disable_kubelet_service_links: true, ..Default::default() },
        )];
        assert!(!says_so(&injected(&v, &opted_out, "app").1));
    }
}

#[test]
fn selected_policy_through_review_injects_only_the_pick_and_cross_namespace_vars() {
    let mut v = cluster();
    v.policies = vec![pick_db_and_shared_mail(true)];
    let body = admission_body(&pod(&[]), "app");
    let r = review(&body, &ReviewConfig::default(), |req| decide(req.namespace, req.labels, &v, DefaultMode::Off).0);
    let ops = patch_ops(&r.body);
    let env = ops.iter().find(|o| o["path"] == "/spec/containers/0/env").expect("env op");
    let vars: Vec<&str> = env["value"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(vars.contains(&"DB_SERVICE_HOST") && vars.contains(&"MAIL_SERVICE_HOST"), "{vars:?}");
    assert!(
        !vars.iter().any(|n| n.starts_with("CACHE_") || n.starts_with("WEB_") || n.starts_with("KUBERNETES_")),
        "{vars:?}"
    );
    assert!(ops.iter().any(|o| o["path"] == "/spec/enableServiceLinks" && o["value"] == false), "{ops:?}");
}

#[test]
fn validation_reports_each_problem() {
    let bad = ServiceEnvPolicy::new(
        "bad",
        ServiceEnvPolicySpec {
            mode: PolicyMode::Selected,
            namespaces: vec!["Not_A_Namespace".into()],
            services: selected(&["ok", "other/x", "UPPER"], None),
            ..Default::default()
        },
    );
    let problems = validate(&bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("namespace other is not listed")));
    let ok = ServiceEnvPolicy::new("ok", ServiceEnvPolicySpec::default());
    assert!(validate(&ok).is_empty());
    let selected_empty =
        ServiceEnvPolicy::new("s", ServiceEnvPolicySpec { mode: PolicyMode::Selected, ..Default::default() });
    assert_eq!(validate(&selected_empty), ["mode Selected needs services.names or services.selector"]);
}

#[test]
fn status_conditions_track_validity_export_and_keep_transition_times() {
    let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
    let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
    let v = cluster();
    let lookup = |n: &str| v.namespace_labels(n);
    let mut p = (*policy(
        "app",
        "p",
        ServiceEnvPolicySpec { namespaces: vec!["shared".into(), "private".into()], ..Default::default() },
    ))
    .clone();
    let s = desired_status(&p, lookup, &t0);
    assert_eq!(s.observed_generation, Some(3));
    let valid = s.conditions.iter().find(|c| c.type_ == CONDITION_VALID).unwrap();
    assert_eq!((valid.status.as_str(), valid.reason.as_str(), valid.observed_generation), ("True", "Valid", Some(3)));
    let exp = s.conditions.iter().find(|c| c.type_ == CONDITION_EXPORTED).unwrap();
    assert_eq!((exp.status.as_str(), exp.reason.as_str()), ("False", "NotExported"));
    assert!(exp.message.ends_with(": private"), "{}", exp.message);
    // Recomputed later with no change: identical (no write), transition time kept.
    p.status = Some(s.clone());
    assert_eq!(desired_status(&p, lookup, &t1), s);
    // The spec turns invalid: Valid flips, with the new time.
    p.spec.mode = PolicyMode::Selected;
    let s2 = desired_status(&p, lookup, &t1);
    let valid = s2.conditions.iter().find(|c| c.type_ == CONDITION_VALID).unwrap();
    assert_eq!((valid.status.as_str(), valid.reason.as_str()), ("False", "InvalidSpec"));
    assert_eq!(valid.last_transition_time, t1);
    let exp2 = s2.conditions.iter().find(|c| c.type_ == CONDITION_EXPORTED).unwrap();
    assert_eq!(exp2.last_transition_time, t0);
}

#[test]
fn committed_crd_is_current() {
    let generated = crd_yaml().unwrap();
    // The checkout the test runs in (set by `cargo test`); the compile-time value may name another
    // checkout whose build cargo reused.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = format!("{dir}/../crds/serviceenvpolicy.yaml");
    let path = path.as_str();
    if std::env::var("EPSLICE_UPDATE_CRDS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `cargo run -p epslice -- crds > {}` (or EPSLICE_UPDATE_CRDS=1 cargo test -p epslice committed_crd)",
        super::CRD_PATH,
        super::CRD_PATH
    );
    for want in
        ["x-kubernetes-validations", "mode Selected needs", "x-kubernetes-list-type: map", "maxItems: 32", "shortNames"]
    {
        assert!(generated.contains(want), "missing {want}");
    }
}
