//! Port of `pkg/api/v1/endpoints/util_test.go` `TestPackSubsets`, plus order and
//! normalisation checks of [`repack_subsets`].

use k8s_openapi::api::core::v1::ObjectReference;

use super::*;
use crate::endpoints::repack::address_order;
use crate::endpoints::{repack_subsets, subsets_equal_ignore_resource_version};

fn a(ip: &str) -> EndpointAddress {
    EndpointAddress { ip: ip.into(), ..Default::default() }
}

fn a_ref(ip: &str, r: ObjectReference) -> EndpointAddress {
    EndpointAddress { ip: ip.into(), target_ref: Some(r), ..Default::default() }
}

/// Upstream `podRef(uid)`: a reference with only a UID (an empty UID is absent).
fn pod_ref(uid: &str) -> ObjectReference {
    ObjectReference { uid: (!uid.is_empty()).then(|| uid.to_owned()), ..Default::default() }
}

fn named_ref(name: &str) -> ObjectReference {
    ObjectReference { name: Some(name.into()), ..Default::default() }
}

fn p(port: i32) -> EndpointPort {
    EndpointPort { port, ..Default::default() }
}

/// A subset exactly as given (empty lists kept as `Some(vec![])`, like Go's `[]T{}`).
fn given(ready: Vec<EndpointAddress>, not_ready: Vec<EndpointAddress>, ports: Vec<EndpointPort>) -> EndpointSubset {
    EndpointSubset { addresses: Some(ready), not_ready_addresses: Some(not_ready), ports: Some(ports) }
}

#[test]
fn pack_subsets() {
    let cases: Vec<(&str, Vec<EndpointSubset>, Vec<EndpointSubset>)> = vec![
        ("empty everything", vec![given(vec![], vec![], vec![])], vec![]),
        ("empty addresses", vec![given(vec![], vec![], vec![p(111)])], vec![]),
        (
            "empty ports",
            vec![given(vec![a("1.2.3.4")], vec![], vec![])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![])],
        ),
        (
            "empty ports (not ready)",
            vec![given(vec![], vec![a("1.2.3.4")], vec![])],
            vec![subset(vec![], vec![a("1.2.3.4")], vec![])],
        ),
        (
            "one set, one ip, one port",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
        ),
        (
            "one set, one ip, one port (IPv6)",
            vec![subset(vec![a("beef::1:2:3:4")], vec![], vec![p(111)])],
            vec![subset(vec![a("beef::1:2:3:4")], vec![], vec![p(111)])],
        ),
        (
            "one set, one notReady ip, one port",
            vec![subset(vec![], vec![a("1.2.3.4")], vec![p(111)])],
            vec![subset(vec![], vec![a("1.2.3.4")], vec![p(111)])],
        ),
        (
            "one set, one ip, one UID, one port",
            vec![subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)])],
            vec![subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)])],
        ),
        (
            "one set, one notReady ip, one UID, one port",
            vec![subset(vec![], vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![p(111)])],
            vec![subset(vec![], vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![p(111)])],
        ),
        (
            "one set, one ip, empty UID, one port",
            vec![subset(vec![a_ref("1.2.3.4", pod_ref(""))], vec![], vec![p(111)])],
            vec![subset(vec![a_ref("1.2.3.4", pod_ref(""))], vec![], vec![p(111)])],
        ),
        (
            "one set, one notReady ip, empty UID, one port",
            vec![subset(vec![], vec![a_ref("1.2.3.4", pod_ref(""))], vec![p(111)])],
            vec![subset(vec![], vec![a_ref("1.2.3.4", pod_ref(""))], vec![p(111)])],
        ),
        (
            "one set, two ips, one port",
            vec![subset(vec![a("1.2.3.4"), a("5.6.7.8")], vec![], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4"), a("5.6.7.8")], vec![], vec![p(111)])],
        ),
        (
            "one set, two mixed ips, one port",
            vec![subset(vec![a("1.2.3.4")], vec![a("5.6.7.8")], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4")], vec![a("5.6.7.8")], vec![p(111)])],
        ),
        (
            "one set, two duplicate ips, one port, notReady is covered by ready",
            vec![subset(vec![a("1.2.3.4")], vec![a("1.2.3.4")], vec![p(111)])],
            vec![subset(vec![], vec![a("1.2.3.4")], vec![p(111)])],
        ),
        (
            "one set, one ip, two ports",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111), p(222)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111), p(222)])],
        ),
        (
            "one set, dup ips, one port",
            vec![subset(vec![a("1.2.3.4"), a("1.2.3.4")], vec![], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
        ),
        (
            "one set, dup ips, one port (IPv6)",
            vec![subset(vec![a("beef::1"), a("beef::1")], vec![], vec![p(111)])],
            vec![subset(vec![a("beef::1")], vec![], vec![p(111)])],
        ),
        (
            "one set, dup ips with target-refs, one port",
            vec![subset(
                vec![a_ref("1.2.3.4", named_ref("foo")), a_ref("1.2.3.4", named_ref("bar"))],
                vec![],
                vec![p(111)],
            )],
            vec![subset(vec![a_ref("1.2.3.4", named_ref("foo"))], vec![], vec![p(111)])],
        ),
        (
            "one set, dup mixed ips with target-refs, one port",
            vec![subset(
                vec![a_ref("1.2.3.4", named_ref("foo"))],
                vec![a_ref("1.2.3.4", named_ref("bar"))],
                vec![p(111)],
            )],
            // The same address twice is an input error: only the first one is kept.
            vec![subset(vec![], vec![a_ref("1.2.3.4", named_ref("foo"))], vec![p(111)])],
        ),
        (
            "one set, one ip, dup ports",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111), p(111)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
        ),
        (
            "two sets, dup ip, dup port",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])],
        ),
        (
            "two sets, dup mixed ip, dup port",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![], vec![a("1.2.3.4")], vec![p(111)])],
            vec![subset(vec![], vec![a("1.2.3.4")], vec![p(111)])],
        ),
        (
            "two sets, dup ip, two ports",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![a("1.2.3.4")], vec![], vec![p(222)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111), p(222)])],
        ),
        (
            "two sets, dup ip, dup uids, two ports",
            vec![
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(222)]),
            ],
            vec![subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111), p(222)])],
        ),
        (
            "two sets, dup mixed ip, dup uids, two ports",
            vec![
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![], vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![p(222)]),
            ],
            vec![
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![], vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![p(222)]),
            ],
        ),
        (
            "two sets, two ips, dup port",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![a("5.6.7.8")], vec![], vec![p(111)])],
            vec![subset(vec![a("1.2.3.4"), a("5.6.7.8")], vec![], vec![p(111)])],
        ),
        (
            "two set, dup ip, two uids, dup ports",
            vec![
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-2"))], vec![], vec![p(111)]),
            ],
            vec![subset(
                vec![a_ref("1.2.3.4", pod_ref("uid-1")), a_ref("1.2.3.4", pod_ref("uid-2"))],
                vec![],
                vec![p(111)],
            )],
        ),
        (
            "two set, dup ip, with and without uid, dup ports",
            vec![
                subset(vec![a("1.2.3.4")], vec![], vec![p(111)]),
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-2"))], vec![], vec![p(111)]),
            ],
            vec![subset(vec![a("1.2.3.4"), a_ref("1.2.3.4", pod_ref("uid-2"))], vec![], vec![p(111)])],
        ),
        (
            "two sets, two ips, two dup ip with uid, dup port, wrong order",
            vec![
                subset(vec![a("5.6.7.8")], vec![], vec![p(111)]),
                subset(vec![a_ref("5.6.7.8", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![], vec![p(111)]),
                subset(vec![a("1.2.3.4")], vec![], vec![p(111)]),
            ],
            vec![subset(
                vec![
                    a("1.2.3.4"),
                    a_ref("1.2.3.4", pod_ref("uid-1")),
                    a("5.6.7.8"),
                    a_ref("5.6.7.8", pod_ref("uid-1")),
                ],
                vec![],
                vec![p(111)],
            )],
        ),
        (
            "two sets, two mixed ips, two dup ip with uid, dup port, wrong order, ends up with split addresses",
            vec![
                subset(vec![a("5.6.7.8")], vec![], vec![p(111)]),
                subset(vec![], vec![a_ref("5.6.7.8", pod_ref("uid-1"))], vec![p(111)]),
                subset(vec![], vec![a_ref("1.2.3.4", pod_ref("uid-1"))], vec![p(111)]),
                subset(vec![], vec![a("1.2.3.4")], vec![p(111)]),
            ],
            vec![subset(
                vec![a("5.6.7.8")],
                vec![a("1.2.3.4"), a_ref("1.2.3.4", pod_ref("uid-1")), a_ref("5.6.7.8", pod_ref("uid-1"))],
                vec![p(111)],
            )],
        ),
        (
            "two sets, two ips, two ports",
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![a("5.6.7.8")], vec![], vec![p(222)])],
            vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)]), subset(vec![a("5.6.7.8")], vec![], vec![p(222)])],
        ),
        (
            "four sets, three ips, three ports, jumbled",
            vec![
                subset(vec![a("1.2.3.4")], vec![], vec![p(111)]),
                subset(vec![a("1.2.3.5")], vec![], vec![p(222)]),
                subset(vec![a("1.2.3.6")], vec![], vec![p(111)]),
                subset(vec![a("1.2.3.5")], vec![], vec![p(333)]),
            ],
            vec![
                subset(vec![a("1.2.3.4"), a("1.2.3.6")], vec![], vec![p(111)]),
                subset(vec![a("1.2.3.5")], vec![], vec![p(222), p(333)]),
            ],
        ),
        (
            "four sets, three mixed ips, three ports, jumbled",
            vec![
                subset(vec![a("1.2.3.4")], vec![], vec![p(111)]),
                subset(vec![], vec![a("1.2.3.5")], vec![p(222)]),
                subset(vec![a("1.2.3.6")], vec![], vec![p(111)]),
                subset(vec![], vec![a("1.2.3.5")], vec![p(333)]),
            ],
            vec![
                subset(vec![a("1.2.3.4"), a("1.2.3.6")], vec![], vec![p(111)]),
                subset(vec![], vec![a("1.2.3.5")], vec![p(222), p(333)]),
            ],
        ),
    ];
    for (name, input, want) in cases {
        let got = repack_subsets(&input);
        // Exact, in this crate's canonical order.
        assert_eq!(got, want, "{name}");
        // Idempotent, and any input order gives the same result.
        assert_eq!(repack_subsets(&got), got, "{name}: not idempotent");
        let mut reversed = input.clone();
        reversed.reverse();
        assert!(subsets_equal_ignore_resource_version(&repack_subsets(&reversed), &want), "{name}: order-dependent");
    }
}

#[test]
fn repack_normalises_empty_strings_like_go() {
    // Go strings have no "absent": a targetRef UID of "" and a hostname of "" are omitted.
    let input = vec![subset(
        vec![EndpointAddress {
            ip: "1.2.3.4".into(),
            hostname: Some(String::new()),
            target_ref: Some(ObjectReference {
                uid: Some(String::new()),
                name: Some("p".into()),
                ..Default::default()
            }),
            node_name: Some(String::new()),
        }],
        vec![],
        vec![EndpointPort { name: Some(String::new()), port: 80, protocol: Some("TCP".into()), app_protocol: None }],
    )];
    let want = vec![subset(
        vec![EndpointAddress {
            ip: "1.2.3.4".into(),
            hostname: None,
            target_ref: Some(named_ref("p")),
            node_name: Some(String::new()),
        }],
        vec![],
        vec![eport("", 80, "TCP")],
    )];
    assert_eq!(repack_subsets(&input), want);
    assert!(subsets_equal_ignore_resource_version(&input, &want));
}

#[test]
fn repack_port_only_sentinel_merges_with_a_real_port_of_the_same_addresses() {
    // A port-less subset and a subset with port 111 over the same address: one subset with 111
    // (the sentinel never appears as a port).
    let input = vec![subset(vec![a("1.2.3.4")], vec![], vec![]), subset(vec![a("1.2.3.4")], vec![], vec![p(111)])];
    assert_eq!(repack_subsets(&input), vec![subset(vec![a("1.2.3.4")], vec![], vec![p(111)])]);
    // Ports <= 0 are treated like the sentinel.
    let input = vec![subset(vec![a("1.2.3.4")], vec![], vec![p(0)])];
    assert_eq!(repack_subsets(&input), vec![subset(vec![a("1.2.3.4")], vec![], vec![])]);
}

#[test]
fn address_order_is_ip_bytes_then_uid() {
    let mut v = [
        a_ref("10.0.0.2", pod_ref("b")),
        a("10.0.0.10"),
        a_ref("10.0.0.2", pod_ref("a")),
        a("10.0.0.2"),
        a("fd00::1"),
        a("1.0.0.1"),
    ];
    v.sort_by(address_order);
    let ips: Vec<(&str, Option<&str>)> =
        v.iter().map(|x| (x.ip.as_str(), x.target_ref.as_ref().and_then(|r| r.uid.as_deref()))).collect();
    // Byte order: "10.0.0.10" < "10.0.0.2".
    assert_eq!(
        ips,
        vec![
            ("1.0.0.1", None),
            ("10.0.0.10", None),
            ("10.0.0.2", None),
            ("10.0.0.2", Some("a")),
            ("10.0.0.2", Some("b")),
            ("fd00::1", None)
        ]
    );
}

#[test]
fn equality_is_go_semantic() {
    let base = vec![subset(vec![addr("1.2.3.4", "ns", "p")], vec![], vec![eport("http", 80, "TCP")])];
    // nodeName is a pointer: absent differs from "".
    let mut no_node = base.clone();
    no_node[0].addresses.as_mut().unwrap()[0].node_name = None;
    assert!(!subsets_equal_ignore_resource_version(&base, &no_node));
    // appProtocol is a pointer: absent differs from "".
    let mut app = base.clone();
    app[0].ports.as_mut().unwrap()[0].app_protocol = Some(String::new());
    assert!(!subsets_equal_ignore_resource_version(&base, &app));
    // hostname is a string: absent equals "".
    let mut host = base.clone();
    host[0].addresses.as_mut().unwrap()[0].hostname = Some(String::new());
    assert!(subsets_equal_ignore_resource_version(&base, &host));
    // A hostname is a change.
    host[0].addresses.as_mut().unwrap()[0].hostname = Some("h".into());
    assert!(!subsets_equal_ignore_resource_version(&base, &host));
    // Moving an address from ready to not ready is a change.
    let moved = vec![subset(vec![], vec![addr("1.2.3.4", "ns", "p")], vec![eport("http", 80, "TCP")])];
    assert!(!subsets_equal_ignore_resource_version(&base, &moved));
    // Order of subsets, addresses and ports does not matter; multiplicity does.
    let two = vec![
        subset(
            vec![addr("1.2.3.4", "ns", "p"), addr("1.2.3.5", "ns", "q")],
            vec![],
            vec![eport("a", 80, "TCP"), eport("b", 81, "TCP")],
        ),
        subset(vec![], vec![addr("1.2.3.6", "ns", "r")], vec![eport("c", 82, "TCP")]),
    ];
    let mut shuffled = two.clone();
    shuffled.reverse();
    shuffled[1].addresses.as_mut().unwrap().reverse();
    shuffled[1].ports.as_mut().unwrap().reverse();
    assert!(subsets_equal_ignore_resource_version(&two, &shuffled));
    let mut doubled = two.clone();
    doubled[0].addresses.as_mut().unwrap().push(addr("1.2.3.4", "ns", "p"));
    assert!(!subsets_equal_ignore_resource_version(&two, &doubled));
    // Missing lists equal empty ones.
    assert!(subsets_equal_ignore_resource_version(&[], &[]));
    let empty_lists = EndpointSubset { addresses: Some(vec![]), not_ready_addresses: None, ports: Some(vec![]) };
    assert!(subsets_equal_ignore_resource_version(&[empty_lists], &[EndpointSubset::default()]));
}
