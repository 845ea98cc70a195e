//! Ports of upstream kubelet tests (Kubernetes v1.37.1):
//! `pkg/kubelet/envvars/envvars_test.go` (TestFromServices) and the service-related cases of
//! `pkg/kubelet/kubelet_pods_test.go` (TestMakeEnvironmentVariables). See
//! `docs/upstream-tests.md` for the mapping.

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, Service,
};

use super::super::{Mode, PatchOptions, ServiceEnvVar, from_services, generate, mutate};
use super::{apply, container, env0, ev, kubelet_env, pairs, pod, sorted_pairs, svc, var};

/// The Services of upstream `TestFromServices`, in its order.
fn from_services_fixture() -> Vec<Service> {
    vec![
        svc("", "foo-bar", "1.2.3.4", &[("", 8080, "TCP")]),
        svc("", "abc-123", "5.6.7.8", &[("u-d-p", 8081, "UDP"), ("t-c-p", 8081, "TCP")]),
        svc("", "q-u-u-x", "9.8.7.6", &[("", 8082, "TCP"), ("8083", 8083, "TCP")]),
        svc("", "svrc-clusterip-none", "None", &[("", 8082, "TCP")]),
        svc("", "svrc-clusterip-empty", "", &[("", 8082, "TCP")]),
        svc("", "super-ipv6", "2001:DB8::", &[("u-d-p", 8084, "UDP"), ("t-c-p", 8084, "TCP")]),
        svc("", "sctp-1", "1.2.3.4", &[("", 777, "SCTP")]),
    ]
}

fn block(list: &[(&str, &str)]) -> Vec<ServiceEnvVar> {
    list.iter().map(|(n, v)| var(n, v)).collect()
}

fn foo_bar() -> Vec<ServiceEnvVar> {
    block(&[
        ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
        ("FOO_BAR_SERVICE_PORT", "8080"),
        ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
        ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
        ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
        ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
        ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
    ])
}

fn abc_123() -> Vec<ServiceEnvVar> {
    block(&[
        ("ABC_123_SERVICE_HOST", "5.6.7.8"),
        ("ABC_123_SERVICE_PORT", "8081"),
        ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
        ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
        ("ABC_123_PORT", "udp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
        ("ABC_123_PORT_8081_UDP_PORT", "8081"),
        ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
        ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
        ("ABC_123_PORT_8081_TCP_PORT", "8081"),
        ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
    ])
}

fn q_u_u_x() -> Vec<ServiceEnvVar> {
    block(&[
        ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
        ("Q_U_U_X_SERVICE_PORT", "8082"),
        ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
        ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
        ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
        ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
        ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
        ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
        ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
        ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
        ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
        ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
    ])
}

fn super_ipv6() -> Vec<ServiceEnvVar> {
    block(&[
        ("SUPER_IPV6_SERVICE_HOST", "2001:DB8::"),
        ("SUPER_IPV6_SERVICE_PORT", "8084"),
        ("SUPER_IPV6_SERVICE_PORT_U_D_P", "8084"),
        ("SUPER_IPV6_SERVICE_PORT_T_C_P", "8084"),
        ("SUPER_IPV6_PORT", "udp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_UDP", "udp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_UDP_PROTO", "udp"),
        ("SUPER_IPV6_PORT_8084_UDP_PORT", "8084"),
        ("SUPER_IPV6_PORT_8084_UDP_ADDR", "2001:DB8::"),
        ("SUPER_IPV6_PORT_8084_TCP", "tcp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_TCP_PROTO", "tcp"),
        ("SUPER_IPV6_PORT_8084_TCP_PORT", "8084"),
        ("SUPER_IPV6_PORT_8084_TCP_ADDR", "2001:DB8::"),
    ])
}

fn sctp_1() -> Vec<ServiceEnvVar> {
    block(&[
        ("SCTP_1_SERVICE_HOST", "1.2.3.4"),
        ("SCTP_1_SERVICE_PORT", "777"),
        ("SCTP_1_PORT", "sctp://1.2.3.4:777"),
        ("SCTP_1_PORT_777_SCTP", "sctp://1.2.3.4:777"),
        ("SCTP_1_PORT_777_SCTP_PROTO", "sctp"),
        ("SCTP_1_PORT_777_SCTP_PORT", "777"),
        ("SCTP_1_PORT_777_SCTP_ADDR", "1.2.3.4"),
    ])
}

/// Upstream TestFromServices: exact names, values and order (input order).
#[test]
fn upstream_from_services() {
    let got = from_services(&from_services_fixture());
    let want: Vec<ServiceEnvVar> = [foo_bar(), abc_123(), q_u_u_x(), super_ipv6(), sctp_1()].concat();
    assert_eq!(got.len(), 52);
    assert_eq!(got, want);
}

/// Same vector through `generate`: identical blocks, Services in name order, no collisions.
#[test]
fn upstream_from_services_in_generate_order() {
    let g = generate(&from_services_fixture());
    let want: Vec<ServiceEnvVar> = [abc_123(), foo_bar(), q_u_u_x(), sctp_1(), super_ipv6()].concat();
    assert_eq!(g.vars, want);
    assert!(g.collisions.is_empty());
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
}

/// Services of upstream TestMakeEnvironmentVariables (`buildService` calls, same order).
fn make_env_fixture() -> Vec<Service> {
    vec![
        svc("default", "kubernetes", "1.2.3.1", &[("", 8081, "TCP")]),
        svc("test1", "test", "1.2.3.3", &[("", 8083, "TCP")]),
        svc("test2", "kubernetes", "1.2.3.4", &[("", 8084, "TCP")]),
        svc("test2", "test", "1.2.3.5", &[("", 8085, "TCP")]),
        svc("test2", "test", "None", &[("", 8085, "TCP")]),
        svc("test2", "test", "", &[("", 8085, "TCP")]),
        svc("default", "not-special", "1.2.3.8", &[("", 8088, "TCP")]),
        svc("default", "not-special", "None", &[("", 8088, "TCP")]),
        svc("default", "not-special", "", &[("", 8088, "TCP")]),
    ]
}

fn seven(prefix: &str, ip: &str, port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{ip}:{port}");
    vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_owned()),
        (format!("{prefix}_SERVICE_PORT"), port.to_string()),
        (format!("{prefix}_PORT"), url.clone()),
        (format!("{prefix}_PORT_{port}_TCP"), url),
        (format!("{prefix}_PORT_{port}_TCP_PROTO"), "tcp".to_owned()),
        (format!("{prefix}_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("{prefix}_PORT_{port}_TCP_ADDR"), ip.to_owned()),
    ]
}

fn with(mut base: Vec<(String, String)>, more: &[Vec<(String, String)>]) -> Vec<(String, String)> {
    for m in more {
        base.extend(m.iter().cloned());
    }
    base.sort();
    base
}

/// One upstream case, checked two ways:
/// 1. the webhook's patch leaves the container's declared env equal (as a sorted set, which is
///    how upstream compares) to what the kubelet computes;
/// 2. with `disable_kubelet_service_links`, our modelled kubelet run over the patched pod
///    (`enableServiceLinks: false`) gives the same final environment as over the original pod.
fn check_make_env(ns: &str, links: bool, user_env: Vec<EnvVar>, services: &[Service], expected: Vec<(String, String)>) {
    let p = pod(ns, Some(links), vec![container("c", Some(user_env.clone()))]);
    let m = mutate(&p, ns, Mode::All, services, &PatchOptions::default());
    let patched = match &m.patch {
        Some(patch) => apply(&p, patch),
        None => p.clone(),
    };
    assert_eq!(sorted_pairs(&env0(&patched)), expected, "declared env");
    // User entries are untouched and come last.
    let env = env0(&patched);
    assert_eq!(env[env.len() - user_env.len()..], user_env[..]);

    let opts = PatchOptions { disable_kubelet_service_links: true, ..PatchOptions::default() };
    let m2 = mutate(&p, ns, Mode::All, services, &opts);
    let patched2 = apply(&p, m2.patch.as_ref().unwrap());
    assert_eq!(patched2.spec.as_ref().unwrap().enable_service_links, Some(false));
    let after = kubelet_env(ns, false, services, &env0(&patched2));
    // Deliberate difference: with links off, a namespace's own `kubernetes` Service is not
    // injected, so the runtime gets the real API server's variables, never a mix.
    let no_shadow: Vec<Service> = services
        .iter()
        .filter(|s| {
            !(s.metadata.name.as_deref() == Some("kubernetes")
                && s.metadata.namespace.as_deref() == Some(ns)
                && ns != "default")
        })
        .cloned()
        .collect();
    let before = kubelet_env(ns, links, &no_shadow, &user_env);
    assert_eq!(before, after, "runtime env with links disabled by us");
}

fn test_block_8083() -> Vec<EnvVar> {
    seven("TEST", "1.2.3.3", 8083).into_iter().map(|(n, v)| ev(&n, &v)).collect()
}

/// "api server = Y, kubelet = Y": the user already declares TEST_*; only KUBERNETES_* is added.
#[test]
fn upstream_make_env_api_server_y_kubelet_y() {
    let mut user = vec![ev("FOO", "BAR")];
    user.extend(test_block_8083());
    let expected = with(sorted_pairs(&user), &[seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test1", false, user, &make_env_fixture(), expected);
}

/// "api server = Y, kubelet = N": no Service lister (for us: no Services cached): env unchanged.
#[test]
fn upstream_make_env_api_server_y_kubelet_n() {
    let mut user = vec![ev("FOO", "BAR")];
    user.extend(test_block_8083());
    let expected = sorted_pairs(&user);
    check_make_env("test1", false, user, &[], expected);
}

/// "api server = N; kubelet = Y": links disabled, the master Service is still linked.
#[test]
fn upstream_make_env_api_server_n_kubelet_y() {
    let expected = with(pairs(&[("FOO", "BAZ")]), &[seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test1", false, vec![ev("FOO", "BAZ")], &make_env_fixture(), expected);
}

/// "api server = N; kubelet = Y; service env vars": links enabled, namespace Service added.
#[test]
fn upstream_make_env_api_server_n_kubelet_y_service_env_vars() {
    let expected =
        with(pairs(&[("FOO", "BAZ")]), &[seven("TEST", "1.2.3.3", 8083), seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test1", true, vec![ev("FOO", "BAZ")], &make_env_fixture(), expected);
}

/// "master service in pod ns": links disabled, the namespace's own `kubernetes` is ignored.
#[test]
fn upstream_make_env_master_service_in_pod_ns() {
    let expected = with(pairs(&[("FOO", "ZAP")]), &[seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test2", false, vec![ev("FOO", "ZAP")], &make_env_fixture(), expected);
}

/// "master service in pod ns, service env vars": links enabled, `test2/kubernetes` shadows the
/// master Service, and of the three `test2/test` entries only the one with a ClusterIP counts.
#[test]
fn upstream_make_env_master_service_in_pod_ns_service_env_vars() {
    let expected =
        with(pairs(&[("FOO", "ZAP")]), &[seven("TEST", "1.2.3.5", 8085), seven("KUBERNETES", "1.2.3.4", 8084)]);
    check_make_env("test2", true, vec![ev("FOO", "ZAP")], &make_env_fixture(), expected);
    let p = pod("test2", Some(true), vec![container("c", None)]);
    let m = mutate(&p, "test2", Mode::All, &make_env_fixture(), &PatchOptions::default());
    assert!(m.warnings.iter().any(|w| w.contains("test2/kubernetes shadows")), "{:?}", m.warnings);
    let opts = PatchOptions { disable_kubelet_service_links: true, ..PatchOptions::default() };
    let m = mutate(&p, "test2", Mode::All, &make_env_fixture(), &opts);
    assert!(m.warnings.iter().any(|w| w.contains("test2/kubernetes not injected")), "{:?}", m.warnings);
    let out = apply(&p, m.patch.as_ref().unwrap());
    assert!(env0(&out).contains(&ev("KUBERNETES_SERVICE_HOST", "1.2.3.1")));
}

/// "pod in master service ns": links disabled, only KUBERNETES_*.
#[test]
fn upstream_make_env_pod_in_master_service_ns() {
    let expected = with(Vec::new(), &[seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("default", false, Vec::new(), &make_env_fixture(), expected);
}

/// "pod in master service ns, service env vars": links enabled, `not-special` added.
#[test]
fn upstream_make_env_pod_in_master_service_ns_service_env_vars() {
    let expected = with(Vec::new(), &[seven("NOT_SPECIAL", "1.2.3.8", 8088), seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("default", true, Vec::new(), &make_env_fixture(), expected);
}

/// The user env of upstream's "env expansion" cases (the `POD_NAME` fieldRef resolves to the
/// empty string in our model; the service part is what we check).
fn expansion_env(with_service_ref: bool) -> Vec<EnvVar> {
    let mut env = vec![
        ev("TEST_LITERAL", "test-test-test"),
        EnvVar {
            name: "POD_NAME".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.name".to_owned(),
                }),
                ..EnvVarSource::default()
            }),
        },
        ev("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
        ev("OUT_OF_ORDER_TARGET", "FOO"),
        EnvVar { name: "EMPTY_VAR".to_owned(), value: None, value_from: None },
        ev("EMPTY_TEST", "foo-$(EMPTY_VAR)"),
        ev("LITERAL_TEST", "literal-$(TEST_LITERAL)"),
    ];
    if with_service_ref {
        env.push(ev("SERVICE_VAR_TEST", "$(TEST_SERVICE_HOST):$(TEST_SERVICE_PORT)"));
    }
    env.push(ev("TEST_UNDEFINED", "$(UNDEFINED_VAR)"));
    env
}

/// "env expansion": links disabled; user entries untouched, KUBERNETES_* added.
#[test]
fn upstream_make_env_env_expansion() {
    let user = expansion_env(false);
    let expected = with(sorted_pairs(&user), &[seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test1", false, user, &make_env_fixture(), expected);
}

/// "env expansion, service env vars": `$(TEST_SERVICE_HOST):$(TEST_SERVICE_PORT)` in a user
/// value still resolves to `1.2.3.3:8083` after injection, including when the kubelet's own
/// links are switched off (our entries come first).
#[test]
fn upstream_make_env_env_expansion_service_env_vars() {
    let user = expansion_env(true);
    let expected = with(sorted_pairs(&user), &[seven("TEST", "1.2.3.3", 8083), seven("KUBERNETES", "1.2.3.1", 8081)]);
    check_make_env("test1", true, user.clone(), &make_env_fixture(), expected);

    let p = pod("test1", Some(true), vec![container("c", Some(user))]);
    let opts = PatchOptions { disable_kubelet_service_links: true, ..PatchOptions::default() };
    let m = mutate(&p, "test1", Mode::All, &make_env_fixture(), &opts);
    let patched = apply(&p, m.patch.as_ref().unwrap());
    let runtime = kubelet_env("test1", false, &make_env_fixture(), &env0(&patched));
    assert_eq!(runtime["SERVICE_VAR_TEST"], "1.2.3.3:8083");
    assert_eq!(runtime["LITERAL_TEST"], "literal-test-test-test");
    assert_eq!(runtime["OUT_OF_ORDER_TEST"], "$(OUT_OF_ORDER_TARGET)");
    assert_eq!(runtime["TEST_UNDEFINED"], "$(UNDEFINED_VAR)");
}

/// "configmap, service env vars" / "secret, service env vars": the variables are injected as
/// upstream expects, but since ours are `env` entries they beat `envFrom` keys (the kubelet lets
/// envFrom win over its service map). Deliberate difference; we warn.
#[test]
fn upstream_make_env_envfrom_service_env_vars_adapted() {
    let mut c = container(
        "c",
        Some(vec![
            ev("TEST_LITERAL", "test-test-test"),
            ev("EXPANSION_TEST", "$(REPLACE_ME)"),
            ev("DUPE_TEST", "ENV_VAR"),
        ]),
    );
    c.env_from = Some(vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource { name: "test-config-map".to_owned(), optional: None }),
        ..EnvFromSource::default()
    }]);
    let p = pod("test1", Some(true), vec![c]);
    let m = mutate(&p, "test1", Mode::All, &make_env_fixture(), &PatchOptions::default());
    let patched = apply(&p, m.patch.as_ref().unwrap());
    let names: Vec<String> = env0(&patched).into_iter().map(|e| e.name).collect();
    for (n, _) in seven("TEST", "1.2.3.3", 8083).into_iter().chain(seven("KUBERNETES", "1.2.3.1", 8081)) {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(m.warnings.iter().any(|w| w.contains("envFrom")), "{:?}", m.warnings);
}

/// "nil_enableServiceLinks": the kubelet refuses a nil field; the API server always defaults it
/// to true before admission, so we treat unset as true.
#[test]
fn upstream_make_env_nil_enable_service_links_adapted() {
    let services = make_env_fixture();
    let unset = pod("test1", None, vec![container("c", None)]);
    let on = pod("test1", Some(true), vec![container("c", None)]);
    let a =
        apply(&unset, mutate(&unset, "test1", Mode::All, &services, &PatchOptions::default()).patch.as_ref().unwrap());
    let b = apply(&on, mutate(&on, "test1", Mode::All, &services, &PatchOptions::default()).patch.as_ref().unwrap());
    assert_eq!(env0(&a), env0(&b));
    assert!(env0(&a).iter().any(|e| e.name == "TEST_SERVICE_HOST"));
}
