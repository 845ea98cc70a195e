//! Our rules on top of the kubelet format: selection, ordering, collisions, skips, warnings.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Service;

use super::super::{
    MAX_WARNING_CHARS, from_services, generate, is_master_var, is_service_ip_set, select_services, visible_services,
    visible_services_in, warning,
};
use super::{svc, var};

fn names(s: &[&Service]) -> Vec<String> {
    s.iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn ip_set_rule() {
    assert!(is_service_ip_set(&svc("a", "x", "10.0.0.1", &[("", 80, "")])));
    assert!(!is_service_ip_set(&svc("a", "x", "None", &[("", 80, "")])));
    assert!(!is_service_ip_set(&svc("a", "x", "", &[("", 80, "")])));
    // Case-sensitive, like upstream.
    assert!(is_service_ip_set(&svc("a", "x", "none", &[("", 80, "")])));
    let mut external = svc("a", "x", "", &[]);
    external.spec.as_mut().unwrap().cluster_ip = None;
    assert!(!is_service_ip_set(&external));
}

#[test]
fn empty_protocol_is_tcp_and_case_is_normalised() {
    let got = from_services(&[svc("a", "web", "10.0.0.1", &[("", 80, ""), ("dns", 53, "udp")])]);
    let want = vec![
        var("WEB_SERVICE_HOST", "10.0.0.1"),
        var("WEB_SERVICE_PORT", "80"),
        var("WEB_SERVICE_PORT_DNS", "53"),
        var("WEB_PORT", "tcp://10.0.0.1:80"),
        var("WEB_PORT_80_TCP", "tcp://10.0.0.1:80"),
        var("WEB_PORT_80_TCP_PROTO", "tcp"),
        var("WEB_PORT_80_TCP_PORT", "80"),
        var("WEB_PORT_80_TCP_ADDR", "10.0.0.1"),
        var("WEB_PORT_53_UDP", "udp://10.0.0.1:53"),
        var("WEB_PORT_53_UDP_PROTO", "udp"),
        var("WEB_PORT_53_UDP_PORT", "53"),
        var("WEB_PORT_53_UDP_ADDR", "10.0.0.1"),
    ];
    assert_eq!(got, want);
}

#[test]
fn first_port_named_gets_both_names_and_count_matches_formula() {
    // Two named ports: 2 + 2 + 1 + 4*2 = 13.
    let got = from_services(&[svc("a", "db", "fd00::10", &[("pg", 5432, "TCP"), ("metrics", 9187, "TCP")])]);
    assert_eq!(got.len(), 13);
    assert_eq!(got[1], var("DB_SERVICE_PORT", "5432"));
    assert_eq!(got[2], var("DB_SERVICE_PORT_PG", "5432"));
    assert_eq!(got[4], var("DB_PORT", "tcp://[fd00::10]:5432"));
    assert_eq!(got[0], var("DB_SERVICE_HOST", "fd00::10"));
}

#[test]
fn service_without_ports_is_skipped_with_warning() {
    let g = generate(&[svc("a", "empty", "10.0.0.1", &[]), svc("a", "ok", "10.0.0.2", &[("", 1, "")])]);
    assert_eq!(g.vars.len(), 7);
    assert!(g.vars.iter().all(|v| v.name.starts_with("OK_")));
    assert_eq!(g.warnings.len(), 1);
    assert!(g.warnings[0].contains("a/empty has no ports"), "{:?}", g.warnings);
    // Headless is silent, as in the kubelet.
    assert!(generate(&[svc("a", "h", "None", &[("", 1, "")])]).warnings.is_empty());
}

#[test]
fn unusable_names_are_skipped_with_warning() {
    let g = generate(&[
        svc("a", "bad.name", "10.0.0.1", &[("", 80, "")]),
        svc("a", "9lives", "10.0.0.1", &[("", 80, "")]),
        svc("a", "ok", "10.0.0.1", &[("we=ird", 81, "")]),
        svc("a", "neg", "10.0.0.1", &[("", -1, "")]),
        svc("a", "fine", "10.0.0.1", &[("", 80, "")]),
    ]);
    assert!(g.vars.iter().all(|v| v.name.starts_with("FINE_")));
    assert_eq!(g.vars.len(), 7);
    assert_eq!(g.warnings.len(), 4, "{:?}", g.warnings);
}

#[test]
fn collision_redis_vs_redis_service_first_by_name_wins() {
    let redis = svc("ns", "redis", "10.0.0.1", &[("", 6379, "TCP")]);
    let redis_service = svc("ns", "redis-service", "10.0.0.2", &[("", 80, "TCP")]);
    for input in [vec![redis.clone(), redis_service.clone()], vec![redis_service.clone(), redis.clone()]] {
        let g = generate(&input);
        let port: Vec<_> = g.vars.iter().filter(|v| v.name == "REDIS_SERVICE_PORT").collect();
        assert_eq!(port, vec![&var("REDIS_SERVICE_PORT", "6379")]);
        assert_eq!(g.collisions.len(), 1);
        assert_eq!(g.collisions[0].name, "REDIS_SERVICE_PORT");
        assert_eq!(g.collisions[0].kept, "ns/redis");
        assert_eq!(g.collisions[0].dropped, "ns/redis-service");
        assert_eq!(g.warnings.len(), 1);
        assert!(g.warnings[0].contains("REDIS_SERVICE_PORT"));
        assert!(g.warnings[0].contains("redis-service"));
        // Everything else of redis-service survives.
        assert!(g.vars.contains(&var("REDIS_SERVICE_SERVICE_HOST", "10.0.0.2")));
        assert!(g.vars.contains(&var("REDIS_SERVICE_PORT_80_TCP", "tcp://10.0.0.2:80")));
        assert_eq!(g.vars.len(), 7 + 6);
        let unique: HashSet<_> = g.vars.iter().map(|v| &v.name).collect();
        assert_eq!(unique.len(), g.vars.len());
    }
}

#[test]
fn collision_foo_vs_foo_port_80_tcp() {
    let g = generate(&[
        svc("ns", "foo-port-80-tcp", "10.0.0.2", &[("", 9, "")]),
        svc("ns", "foo", "10.0.0.1", &[("", 80, "")]),
    ]);
    assert!(g.vars.contains(&var("FOO_PORT_80_TCP_PORT", "80")));
    assert_eq!(g.collisions.len(), 1);
    assert_eq!(g.collisions[0].name, "FOO_PORT_80_TCP_PORT");
    assert_eq!(g.collisions[0].dropped, "ns/foo-port-80-tcp");
}

#[test]
fn collision_named_port_vs_other_service() {
    // redis's port named "80-tcp" gives REDIS_SERVICE_PORT_80_TCP, which redis-service's
    // docker-link variable for port 80/TCP also produces.
    let g = generate(&[
        svc("ns", "redis", "10.0.0.1", &[("", 6379, ""), ("80-tcp", 80, "")]),
        svc("ns", "redis-service", "10.0.0.2", &[("", 80, "")]),
    ]);
    let names: Vec<_> = g.collisions.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["REDIS_SERVICE_PORT", "REDIS_SERVICE_PORT_80_TCP"]);
    assert!(g.vars.contains(&var("REDIS_SERVICE_PORT_80_TCP", "80")));
}

#[test]
fn duplicate_service_entries_collide_entirely() {
    let a = svc("ns", "a", "10.0.0.1", &[("", 1, "")]);
    let g = generate(&[a.clone(), a]);
    assert_eq!(g.vars.len(), 7);
    assert_eq!(g.collisions.len(), 7);
}

#[test]
fn visible_master_always_namespace_only_with_links() {
    let all = vec![
        svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        svc("default", "other", "10.96.0.2", &[("", 1, "")]),
        svc("ns", "b", "10.0.0.2", &[("", 1, "")]),
        svc("ns", "a", "10.0.0.1", &[("", 1, "")]),
        svc("ns", "headless", "None", &[("", 1, "")]),
        svc("elsewhere", "c", "10.0.0.3", &[("", 1, "")]),
    ];
    let on = visible_services("ns", true, &all);
    assert_eq!(names(&on.services), vec!["ns/a", "ns/b", "default/kubernetes"]);
    assert!(on.warnings.is_empty());
    let off = visible_services("ns", false, &all);
    assert_eq!(names(&off.services), vec!["default/kubernetes"]);
    let in_default = visible_services("default", true, &all);
    assert_eq!(names(&in_default.services), vec!["default/kubernetes", "default/other"]);
}

#[test]
fn visible_namespace_kubernetes_shadows_master_in_any_order() {
    let master = svc("default", "kubernetes", "10.96.0.1", &[("", 443, "")]);
    let own = svc("ns", "kubernetes", "10.0.0.9", &[("", 443, "")]);
    for list in [vec![master.clone(), own.clone()], vec![own.clone(), master.clone()]] {
        let v = visible_services("ns", true, &list);
        assert_eq!(names(&v.services), vec!["ns/kubernetes"]);
        assert_eq!(v.warnings.len(), 1);
        let v = visible_services("ns", false, &list);
        assert_eq!(names(&v.services), vec!["default/kubernetes"]);
        assert!(v.warnings.is_empty());
    }
}

#[test]
fn visible_last_duplicate_wins_like_the_kubelet_map() {
    let first = svc("ns", "x", "10.0.0.1", &[("", 1, "")]);
    let second = svc("ns", "x", "10.0.0.2", &[("", 1, "")]);
    let list = [first, second];
    let v = visible_services("ns", true, &list);
    assert_eq!(v.services.len(), 1);
    assert_eq!(v.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.0.0.2"));
}

#[test]
fn select_by_names_and_labels() {
    let mut labelled = svc("ns", "cache", "10.0.0.3", &[("", 1, "")]);
    labelled.metadata.labels = Some([("tier".to_owned(), "data".to_owned())].into());
    let all = vec![
        svc("ns", "web", "10.0.0.1", &[("", 1, "")]),
        svc("ns", "db", "10.0.0.2", &[("", 1, "")]),
        labelled,
        svc("ns", "headless", "None", &[("", 1, "")]),
    ];
    let wanted = vec!["web".to_owned(), "missing".to_owned(), "headless".to_owned(), "web".to_owned()];
    let sel = select_services(&all, &wanted, |s| {
        s.metadata.labels.as_ref().is_some_and(|l| l.get("tier").map(String::as_str) == Some("data"))
    });
    assert_eq!(names(&sel.services), vec!["ns/cache", "ns/headless", "ns/web"]);
    assert_eq!(sel.warnings.len(), 2, "{:?}", sel.warnings);
    assert!(sel.warnings.iter().any(|w| w.contains("missing not found")));
    assert!(sel.warnings.iter().any(|w| w.contains("headless is headless")));
    // Nothing listed, matcher rejects all: empty.
    assert!(select_services(&all, &[], |_| false).services.is_empty());
}

#[test]
fn warnings_are_cut_to_120_chars() {
    let long = "x".repeat(300);
    let w = warning(long);
    assert_eq!(w.chars().count(), MAX_WARNING_CHARS);
    assert!(w.ends_with("..."));
    assert_eq!(warning("short"), "short");
    let multi = "é".repeat(200);
    assert_eq!(warning(multi).chars().count(), MAX_WARNING_CHARS);
    // Long Service names still give short collision warnings.
    let n1 = "a".repeat(60);
    let n2 = format!("{n1}-service");
    let g = generate(&[
        svc(&"n".repeat(63), &n1, "10.0.0.1", &[("", 1, "")]),
        svc(&"n".repeat(63), &n2, "10.0.0.2", &[("", 1, "")]),
    ]);
    assert!(!g.warnings.is_empty());
    assert!(g.warnings.iter().all(|w| w.chars().count() <= MAX_WARNING_CHARS));
}

#[test]
fn extra_namespaces_rank_below_local_and_master() {
    let all = vec![
        svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "")]),
        svc("app", "db", "10.0.0.1", &[("", 5432, "")]),
        svc("shared", "db", "10.0.0.2", &[("", 5432, "")]),
        svc("shared", "cache", "10.0.0.3", &[("", 6379, "")]),
        svc("other", "cache", "10.0.0.4", &[("", 6379, "")]),
        svc("shared", "kubernetes", "10.0.0.5", &[("", 443, "")]),
        svc("hidden", "queue", "10.0.0.6", &[("", 5672, "")]),
    ];
    let extra = vec!["shared".to_owned(), "other".to_owned()];
    let sel = visible_services_in("app", &extra, true, &all);
    assert_eq!(names(&sel.services), ["shared/cache", "app/db", "default/kubernetes"]);
    // Three hidden: shared/db by app/db, other/cache by shared/cache, shared/kubernetes by the master.
    assert_eq!(sel.warnings.len(), 3, "{:?}", sel.warnings);
    assert!(sel.warnings.iter().any(|w| w.contains("shared/db hidden by app/db")), "{:?}", sel.warnings);
    // Order of extra namespaces decides between them, whatever the input order.
    let mut rev = all.clone();
    rev.reverse();
    let sel = visible_services_in("app", &["other".to_owned(), "shared".to_owned()], true, &rev);
    assert_eq!(names(&sel.services), ["other/cache", "app/db", "default/kubernetes"]);
    // Links off: only the master, as for the pod's own namespace.
    let sel = visible_services_in("app", &extra, false, &all);
    assert_eq!(names(&sel.services), ["default/kubernetes"]);
    // No extra namespaces: exactly the kubelet rule.
    assert_eq!(
        names(&visible_services_in("app", &[], true, &all).services),
        names(&visible_services("app", true, &all).services)
    );
}

/// Only the `kubernetes` Service sets the API server's variables: another Service's variables of
/// the same names (`kubernetes-service`'s `_PORT` link variable is `KUBERNETES_SERVICE_PORT`) are
/// dropped with a warning naming the Service and the variable, the master among the input or not
/// (a `Selected` pick leaves it to the kubelet). Their other variables stay.
#[test]
fn api_server_names_come_only_from_the_kubernetes_service() {
    let master = svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "")]);
    let master_vars: std::collections::HashMap<String, String> =
        from_services(&[&master]).into_iter().map(|v| (v.name, v.value)).collect();
    let others = [
        svc("app", "kubernetes-service", "10.0.0.9", &[("", 443, "")]),
        svc("app", "kubernetes-port-443-tcp", "10.0.0.8", &[("", 80, "")]),
        // `KUBERNETES_PORT_SERVICE_HOST` and the like: no `kubernetes` Service can produce them.
        svc("app", "kubernetes-port", "10.0.0.7", &[("", 80, "")]),
    ];
    for with_master in [false, true] {
        let mut input: Vec<&Service> = others.iter().collect();
        if with_master {
            input.push(&master);
        }
        let g = generate(&input);
        for v in &g.vars {
            match master_vars.get(&v.name) {
                Some(want) => assert!(with_master && v.value == *want, "{} = {} ({with_master})", v.name, v.value),
                None => assert!(!v.value.contains("10.96.0.1"), "{v:?}"),
            }
        }
        for other in &others {
            let who = format!("app/{}", other.metadata.name.as_deref().unwrap());
            let ip = other.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
            for v in from_services(&[other]) {
                if master_vars.contains_key(&v.name) {
                    assert!(
                        g.warnings.iter().any(|w| w.contains(&v.name) && w.contains(&who)),
                        "{}: {:?}",
                        v.name,
                        g.warnings
                    );
                }
            }
            assert!(g.vars.iter().any(|v| v.value.contains(&ip)), "{who}'s other variables stay: {:?}", g.vars);
        }
        assert!(g.vars.iter().any(|v| v.name == "KUBERNETES_PORT_SERVICE_HOST"), "{:?}", g.vars);
    }
    assert!(!is_master_var("KUBERNETES_PORT_SERVICE_HOST") && !is_master_var("KUBERNETES_SERVICE_SERVICE_HOST"));
}

/// An exported namespace's `kubernetes` Service is never visible, whether the master is among the
/// candidates or not (a `Selected` pick has no master): the kubelet never shows it.
#[test]
fn an_exported_kubernetes_service_is_never_visible() {
    let master = svc("default", "kubernetes", "10.96.0.1", &[("https", 443, "")]);
    let foreign = svc("shared", "kubernetes", "10.0.0.5", &[("https", 443, "")]);
    let db = svc("shared", "db", "10.0.0.6", &[("", 5432, "")]);
    let extra = vec!["shared".to_owned()];
    for with_master in [false, true] {
        let mut all = vec![foreign.clone(), db.clone()];
        if with_master {
            all.push(master.clone());
        }
        let sel = visible_services_in("app", &extra, true, &all);
        let want: &[&str] = if with_master { &["shared/db", "default/kubernetes"] } else { &["shared/db"] };
        assert_eq!(names(&sel.services), want);
        assert!(sel.warnings.iter().any(|w| w.contains("shared/kubernetes not injected")), "{:?}", sel.warnings);
    }
}
