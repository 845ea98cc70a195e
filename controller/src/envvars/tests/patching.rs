//! Patch shape, placement, idempotency, re-invocation, links, cap, marker.

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, EnvFromSource, EphemeralContainer, Pod, SecretEnvSource, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::{MARKER_ANNOTATION, Marker, Mode, PatchOptions, generate, mutate, plan_patch, vars_hash};
use super::{PatchLike, apply, container, env0, ev, pod, svc, var};

fn services() -> Vec<Service> {
    vec![
        svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        svc("ns", "db", "10.0.0.2", &[("", 5432, "TCP")]),
        svc("ns", "web", "10.0.0.1", &[("http", 80, "TCP")]),
    ]
}

fn paths(p: &impl PatchLike) -> Vec<String> {
    p.ops().0.iter().map(|op| op.path().to_string()).collect()
}

fn names(env: &[k8s_openapi::api::core::v1::EnvVar]) -> Vec<String> {
    env.iter().map(|e| e.name.clone()).collect()
}

fn marker_of(p: &Pod) -> Option<String> {
    p.metadata.annotations.as_ref().and_then(|a| a.get(MARKER_ANNOTATION).cloned())
}

fn links_off() -> PatchOptions {
    PatchOptions { disable_kubelet_service_links: true, ..PatchOptions::default() }
}

#[test]
fn container_without_env_gets_one_array_add_and_marker() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let patch = m.patch.as_ref().unwrap();
    assert_eq!(paths(patch), vec!["/spec/containers/0/env", "/metadata/annotations"]);
    let out = apply(&p, patch);
    let env = env0(&out);
    assert_eq!(env.len(), 7 + 8 + 8); // db, kubernetes, web (named ports add one each)
    assert_eq!(env[0].name, "DB_SERVICE_HOST");
    assert_eq!(env[7].name, "KUBERNETES_SERVICE_HOST");
    assert_eq!(env[15].name, "WEB_SERVICE_HOST");
    assert_eq!(m.injected, env.len());
    let g = generate(&services());
    let marker = marker_of(&out).unwrap();
    assert_eq!(marker, format!("all;23;{}", vars_hash(&g.vars)));
    assert_eq!(Marker::parse(&marker).unwrap().count, 23);
    assert!(m.added_bytes > 23 * 20);
}

#[test]
fn existing_env_gets_one_array_add_with_ours_before_user_entries_and_user_wins() {
    let user = vec![ev("APP", "$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)"), ev("DB_SERVICE_PORT", "6543")];
    let p = pod("ns", Some(true), vec![container("c", Some(user.clone()))]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let patch = m.patch.as_ref().unwrap();
    assert!(patch.ops().0.iter().all(|op| matches!(op, PatchOperation::Add(_))));
    assert_eq!(paths(patch), vec!["/spec/containers/0/env", "/metadata/annotations"]);
    let out = apply(&p, patch);
    let env = env0(&out);
    assert_eq!(env.len(), 23 - 1 + 2);
    assert_eq!(env[env.len() - 2..], user[..]);
    assert_eq!(env.iter().filter(|e| e.name == "DB_SERVICE_PORT").count(), 1, "user's name is not injected again");
    assert_eq!(env[0], ev("DB_SERVICE_HOST", "10.0.0.2"));
    assert_eq!(env[1].name, "DB_PORT", "DB_SERVICE_PORT skipped, order kept");
    assert_eq!(m.injected, 22);
}

#[test]
fn all_container_kinds_are_patched() {
    let mut p = pod("ns", Some(true), vec![container("main", None)]);
    let spec = p.spec.as_mut().unwrap();
    let mut sidecar = container("sidecar", Some(vec![ev("X", "1")]));
    sidecar.restart_policy = Some("Always".to_owned());
    spec.init_containers = Some(vec![container("init", None), sidecar]);
    spec.ephemeral_containers =
        Some(vec![EphemeralContainer { name: "debug".to_owned(), ..EphemeralContainer::default() }]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let out = apply(&p, m.patch.as_ref().unwrap());
    let spec = out.spec.as_ref().unwrap();
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(inits[0].env.as_ref().unwrap().len(), 23);
    let side = inits[1].env.as_ref().unwrap();
    assert_eq!(side.len(), 24);
    assert_eq!(side[23], ev("X", "1"));
    assert_eq!(spec.containers[0].env.as_ref().unwrap().len(), 23);
    assert_eq!(spec.ephemeral_containers.as_ref().unwrap()[0].env.as_ref().unwrap().len(), 23);
    assert_eq!(m.injected, 23 * 4);
}

#[test]
fn second_pass_yields_no_patch() {
    for opts in [PatchOptions::default(), links_off()] {
        for links in [None, Some(true), Some(false)] {
            let p = pod("ns", links, vec![container("c", Some(vec![ev("A", "b")]))]);
            let m = mutate(&p, "ns", Mode::All, &services(), &opts);
            let out = apply(&p, m.patch.as_ref().unwrap());
            let again = mutate(&out, "ns", Mode::All, &services(), &opts);
            assert_eq!(again.patch, None, "links {links:?} opts {opts:?}");
            assert_eq!(again.injected, 0);
        }
    }
}

#[test]
fn reinvocation_after_another_webhook_added_a_container() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &services(), &links_off());
    let mut out = apply(&p, m.patch.as_ref().unwrap());
    let marker = marker_of(&out);
    // Another webhook appends a sidecar with some env of its own.
    out.spec.as_mut().unwrap().containers.push(container("proxy", Some(vec![ev("WEB_SERVICE_HOST", "mine")])));
    let m2 = mutate(&out, "ns", Mode::All, &services(), &links_off());
    let patch = m2.patch.as_ref().unwrap();
    assert_eq!(paths(patch), vec!["/spec/containers/1/env"], "only the new container");
    assert_eq!(m2.injected, 22);
    let out2 = apply(&out, patch);
    assert_eq!(marker_of(&out2), marker, "marker unchanged");
    let proxy = out2.spec.as_ref().unwrap().containers[1].env.clone().unwrap();
    assert_eq!(proxy.len(), 23);
    assert_eq!(proxy[22], ev("WEB_SERVICE_HOST", "mine"));
    assert_eq!(env0(&out2), env0(&out), "first container untouched");
    assert_eq!(mutate(&out2, "ns", Mode::All, &services(), &links_off()).patch, None);
}

#[test]
fn disable_links_patch_and_user_opt_out() {
    // Links on: we turn them off.
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &services(), &links_off());
    assert!(paths(m.patch.as_ref().unwrap()).contains(&"/spec/enableServiceLinks".to_owned()));
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert_eq!(out.spec.as_ref().unwrap().enable_service_links, Some(false));
    assert_eq!(env0(&out).len(), 23);

    // User opted out: only the master Service, and no links op (already false).
    let p = pod("ns", Some(false), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &services(), &links_off());
    let patch = m.patch.as_ref().unwrap();
    assert!(!paths(patch).contains(&"/spec/enableServiceLinks".to_owned()));
    let out = apply(&p, patch);
    assert!(names(&env0(&out)).iter().all(|n| n.starts_with("KUBERNETES_")));
    assert_eq!(env0(&out).len(), 8);

    // Not asked to: no links op.
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    assert!(!paths(m.patch.as_ref().unwrap()).contains(&"/spec/enableServiceLinks".to_owned()));
}

#[test]
fn cap_exceeded_means_no_injection_and_a_warning() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let opts = PatchOptions { disable_kubelet_service_links: true, max_added_bytes: 200, ..PatchOptions::default() };
    let m = mutate(&p, "ns", Mode::All, &services(), &opts);
    assert_eq!(m.patch, None, "not even enableServiceLinks");
    assert_eq!(m.injected, 0);
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].contains("exceed the cap of 200 bytes"), "{:?}", m.warnings);
    // Measured size is exact: the cap at exactly the size passes.
    let fits = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let exact = PatchOptions { max_added_bytes: fits.added_bytes, ..PatchOptions::default() };
    assert!(mutate(&p, "ns", Mode::All, &services(), &exact).patch.is_some());
    let under = PatchOptions { max_added_bytes: fits.added_bytes - 1, ..PatchOptions::default() };
    assert!(mutate(&p, "ns", Mode::All, &services(), &under).patch.is_none());
}

#[test]
fn added_bytes_matches_the_real_growth_of_the_env_arrays() {
    let p = pod("ns", Some(true), vec![container("c", Some(vec![ev("A", "b")]))]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let out = apply(&p, m.patch.as_ref().unwrap());
    let before = serde_json::to_vec(&env0(&p)).unwrap().len();
    let after = serde_json::to_vec(&env0(&out)).unwrap().len();
    let marker = MARKER_ANNOTATION.len() + marker_of(&out).unwrap().len() + 6;
    assert_eq!(m.added_bytes, after - before + marker);
}

#[test]
fn marker_key_is_pointer_escaped_and_existing_annotations_kept() {
    let mut p = pod("ns", Some(true), vec![container("c", None)]);
    p.metadata.annotations = Some([("a/b~c".to_owned(), "keep".to_owned())].into());
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let patch = m.patch.as_ref().unwrap();
    assert!(paths(patch).contains(&"/metadata/annotations/epslice.io~1service-env".to_owned()));
    let out = apply(&p, patch);
    let ann = out.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["a/b~c"], "keep");
    assert!(ann[MARKER_ANNOTATION].starts_with("all;23;"));
}

#[test]
fn empty_metadata_gets_a_metadata_object() {
    let mut p = pod("ns", Some(true), vec![container("c", None)]);
    p.metadata = ObjectMeta::default();
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let patch = m.patch.as_ref().unwrap();
    assert!(paths(patch).contains(&"/metadata".to_owned()));
    let out = apply(&p, patch);
    assert!(marker_of(&out).is_some());
}

#[test]
fn stale_marker_is_replaced_and_missing_vars_added() {
    let mut p = pod("ns", Some(true), vec![container("c", Some(vec![ev("OLD", "x")]))]);
    p.metadata.annotations = Some([(MARKER_ANNOTATION.to_owned(), "all;3;0000000000000000".to_owned())].into());
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert!(marker_of(&out).unwrap().starts_with("all;23;"));
    assert_eq!(env0(&out).len(), 24);
    // Garbage markers are treated as absent.
    for junk in ["", "all", "all;x;y", "a;1;b;c"] {
        assert_eq!(Marker::parse(junk), None, "{junk:?}");
    }
}

#[test]
fn same_marker_but_missing_vars_still_patches_env_only() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let out = apply(&p, mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default()).patch.as_ref().unwrap());
    // Someone removed one variable: it comes back, the marker op is not repeated.
    let mut edited = out.clone();
    edited.spec.as_mut().unwrap().containers[0].env.as_mut().unwrap().remove(3);
    let m = mutate(&edited, "ns", Mode::All, &services(), &PatchOptions::default());
    let patch = m.patch.as_ref().unwrap();
    assert_eq!(paths(patch), vec!["/spec/containers/0/env"]);
    assert_eq!(m.injected, 1);
    let again = env0(&apply(&edited, patch));
    assert_eq!(again.len(), 23);
    assert_eq!(again[0], env0(&out)[3], "the missing one first");
    assert_eq!(again[1..], env0(&edited)[..], "then the entries it had, unchanged");
}

#[test]
fn links_set_false_by_another_party_after_injection_does_not_flip_marker() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let out = apply(&p, mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default()).patch.as_ref().unwrap());
    let mut later = out.clone();
    later.spec.as_mut().unwrap().enable_service_links = Some(false);
    assert_eq!(mutate(&later, "ns", Mode::All, &services(), &PatchOptions::default()).patch, None);
}

#[test]
fn mode_off_and_missing_spec() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    assert_eq!(mutate(&p, "ns", Mode::Off, &services(), &links_off()), Default::default());
    let mut nospec = p.clone();
    nospec.spec = None;
    let m = mutate(&nospec, "ns", Mode::All, &services(), &links_off());
    assert_eq!(m.patch, None);
    assert_eq!(m.warnings.len(), 1);
}

#[test]
fn selected_mode_marker_and_no_services() {
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let none: Vec<Service> = Vec::new();
    let m = mutate(&p, "ns", Mode::Selected, &none, &PatchOptions::default());
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert_eq!(marker_of(&out).unwrap(), format!("selected;0;{}", vars_hash(&[])));
    assert!(env0(&out).is_empty());
    assert_eq!(m.injected, 0);
}

#[test]
fn plan_patch_dedupes_input_and_warns_about_envfrom() {
    let mut c: Container = container("c", None);
    c.env_from = Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource { name: "s".to_owned(), optional: None }),
        ..EnvFromSource::default()
    }]);
    let p = pod("ns", Some(true), vec![c, container("d", None)]);
    let vars = vec![var("A", "1"), var("A", "2"), var("B", "3")];
    let m = plan_patch(&p, Mode::All, &vars, &PatchOptions::default());
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert_eq!(env0(&out), vec![ev("A", "1"), ev("B", "3")]);
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].starts_with("1 container(s) use envFrom"));
}

#[test]
fn hash_is_stable_and_order_sensitive() {
    // Pinned: markers written by this version must be recognised by later ones.
    assert_eq!(vars_hash(&[]), "cbf29ce484222325");
    let a = vars_hash(&[var("A", "1"), var("B", "2")]);
    let b = vars_hash(&[var("B", "2"), var("A", "1")]);
    assert_ne!(a, b);
    assert_ne!(vars_hash(&[var("AB", "")]), vars_hash(&[var("A", "B")]));
    assert_eq!(a.len(), 16);
}

#[test]
fn large_namespace_hits_the_default_cap_smaller_one_fits() {
    // About 360 bytes of env JSON per single-port Service: 2,000 of them exceed 256 KiB.
    let many: Vec<Service> =
        (0..2000).map(|i| svc("ns", &format!("svc-{i}"), "10.0.0.1", &[("", 80, "TCP")])).collect();
    let p = pod("ns", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "ns", Mode::All, &many, &links_off());
    assert_eq!(m.patch, None);
    assert_eq!(m.injected, 0);
    assert!(m.warnings.iter().any(|w| w.contains("exceed the cap of 262144 bytes")));

    let m = mutate(&p, "ns", Mode::All, &many[..200], &links_off());
    assert_eq!(m.injected, 1400);
    assert!(m.added_bytes < 256 * 1024);
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert_eq!(env0(&out).len(), 1400);
    // Name order, not input order: svc-0, svc-1, svc-10, svc-100, ...
    assert_eq!(env0(&out)[7].name, "SVC_1_SERVICE_HOST");
    assert_eq!(env0(&out)[14].name, "SVC_10_SERVICE_HOST");
}

/// The user's env entries are copied from the request as sent: fields this build's types do not
/// know (a newer API's) survive the array being rewritten.
#[test]
fn user_entries_are_copied_verbatim_unknown_fields_included() {
    use super::super::{PodObject, mutate_object};
    let object = serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "env": [
            {"name": "FUTURE", "valueFrom": {"fileKeyRef": {"path": "/x", "key": "k", "volumeName": "v"}}},
            {"name": "PLAIN", "value": "1", "someNewField": {"nested": [1, 2, 3]}}
        ]}]}
    });
    let view = PodObject::read(&object).unwrap();
    let m = mutate_object(&view, "ns", Mode::All, &services(), &PatchOptions::default());
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &m.operations().unwrap().0).unwrap();
    let env = doc["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env.len(), 23 + 2);
    assert_eq!(env[0], serde_json::json!({"name": "DB_SERVICE_HOST", "value": "10.0.0.2"}));
    assert_eq!(env[23], object["spec"]["containers"][0]["env"][0]);
    assert_eq!(env[24], object["spec"]["containers"][0]["env"][1]);
    assert_eq!(doc["metadata"]["annotations"]["a"], "b", "other annotations kept");
    assert!(doc["metadata"]["annotations"][MARKER_ANNOTATION].as_str().unwrap().starts_with("all;23;"));
}

/// A pod object whose fields have the wrong JSON types is refused with a reason, never a panic.
#[test]
fn malformed_pod_objects_are_named_not_patched() {
    use super::super::PodObject;
    for (object, reason) in [
        (serde_json::json!([]), "pod is not an object"),
        (serde_json::json!({"metadata": 1}), "metadata"),
        (serde_json::json!({"metadata": {"annotations": {"a": 1}}}), "annotation a"),
        (serde_json::json!({"spec": {"containers": {}}}), "containers"),
        (serde_json::json!({"spec": {"containers": [{"env": {}}]}}), "env"),
        (serde_json::json!({"spec": {"containers": [{"env": [1]}]}}), "containers[0].env"),
        (serde_json::json!({"spec": {"initContainers": [{"env": [{"name": 5}]}]}}), "initContainers[0].env"),
        (serde_json::json!({"spec": {"enableServiceLinks": "yes"}}), "enableServiceLinks"),
        (serde_json::json!({"spec": {"containers": [{"envFrom": {"configMapRef": {"name": "x"}}}]}}), "envFrom"),
    ] {
        match PodObject::read(&object) {
            Ok(_) => panic!("{object} accepted"),
            Err(e) => assert!(e.contains(reason), "{object}: {e}"),
        }
    }
    // Nulls count as absent, as in the API's decoding.
    let ok =
        serde_json::json!({"metadata": null, "spec": {"containers": [{"name": "c", "env": null, "envFrom": null}]}});
    assert!(PodObject::read(&ok).is_ok());
}

/// Through the memo: the same answer as without; a hit for the same cached objects; a changed
/// Service (a new object) is never answered from a stale entry; the bounds hold.
#[test]
fn generation_memo_is_transparent_and_bounded() {
    use std::sync::Arc;

    use super::super::{GenerationMemo, PodObject, mutate_object, mutate_object_memo};
    let object = serde_json::to_value(pod("ns", Some(true), vec![container("c", Some(vec![ev("A", "b")]))])).unwrap();
    let view = PodObject::read(&object).unwrap();
    let memo = GenerationMemo::new(2, 1_000);
    let mut cached: Vec<Arc<Service>> = services().into_iter().map(Arc::new).collect();
    for opts in [PatchOptions::default(), links_off()] {
        let plain = mutate_object(&view, "ns", Mode::All, &cached, &opts);
        assert_eq!(mutate_object_memo(&view, "ns", Mode::All, &cached, &opts, &memo), plain, "miss");
        assert_eq!(mutate_object_memo(&view, "ns", Mode::All, &cached, &opts, &memo), plain, "hit");
    }
    assert_eq!(memo.len(), 2);

    // The watch replaces `web`: a new object with a new ClusterIP.
    let web = cached.iter().position(|s| s.metadata.name.as_deref() == Some("web")).unwrap();
    let mut changed = (*cached[web]).clone();
    changed.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.99".to_owned());
    cached[web] = Arc::new(changed);
    let m = mutate_object_memo(&view, "ns", Mode::All, &cached, &PatchOptions::default(), &memo);
    assert_eq!(m, mutate_object(&view, "ns", Mode::All, &cached, &PatchOptions::default()));
    let out = apply(&pod("ns", Some(true), vec![container("c", Some(vec![ev("A", "b")]))]), m.patch.as_ref().unwrap());
    assert!(env0(&out).contains(&ev("WEB_SERVICE_HOST", "10.0.0.99")), "not the stale value");
    assert_eq!(memo.len(), 2, "at most two entries");

    // An entry over the variable budget is still used once, then not kept beside others.
    let tiny = GenerationMemo::new(8, 10);
    let _ = mutate_object_memo(&view, "ns", Mode::All, &cached, &PatchOptions::default(), &tiny);
    let _ = mutate_object_memo(&view, "ns", Mode::All, &cached, &links_off(), &tiny);
    assert_eq!(tiny.len(), 1, "23 variables each: only the newest is kept");
}

/// An `env` entry whose `valueFrom` is an optional ConfigMap or Secret key counts as declared: the
/// Service variable of that name is not injected, even though the kubelet would fall back to the
/// Service's value when the source is missing (documented difference: at admission the source's
/// existence at container start is unknown, and the pod's author declared the name).
#[test]
fn optional_value_from_entry_named_like_a_service_variable_is_declared() {
    use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector};
    let from_config_map = EnvVar {
        name: "DB_SERVICE_HOST".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "cm".to_owned(),
                key: "host".to_owned(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    };
    let from_secret = EnvVar {
        name: "WEB_SERVICE_PORT".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "s".to_owned(),
                key: "port".to_owned(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    };
    let own = vec![from_config_map, from_secret];
    let p = pod("ns", Some(true), vec![container("c", Some(own.clone()))]);
    let m = mutate(&p, "ns", Mode::All, &services(), &PatchOptions::default());
    let env = env0(&apply(&p, m.patch.as_ref().unwrap()));
    for e in &own {
        assert_eq!(
            env.iter().filter(|x| x.name == e.name).collect::<Vec<_>>(),
            [e],
            "{}: only the pod's entry",
            e.name
        );
    }
    // The Services' other variables are injected.
    assert!(env.iter().any(|e| e.name == "DB_SERVICE_PORT") && env.iter().any(|e| e.name == "WEB_SERVICE_HOST"));
}
