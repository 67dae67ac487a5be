//! Convergence: after a burst of writes every edge answers like the control plane.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

#[test]
fn after_a_burst_of_writes_every_edge_answers_like_the_control_plane() {
    let cp = ControlPlane::start();
    let nr = cp.node("conv-relay");
    let nl = cp.node("conv-leaf");
    let nd = cp.node("conv-direct");
    let url = cp.url();
    let relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    let leaf = Edge::start(&cp, "leaf", &[&relay.url], &nl, &[]);
    let direct = Edge::start(&cp, "direct", &[&url], &nd, &[]);
    let edges = [&relay, &leaf, &direct];
    for edge in edges {
        edge.wait_ready();
    }

    // The writes, while the edges follow.
    let names = ["s0", "s1", "s2", "s3", "s4"];
    let mut ids: Vec<String> = names
        .iter()
        .map(|n| cp.create_secret(n, &format!("{n}-v0")))
        .collect();
    let app = cp
        .deploy(
            "app",
            &[("S0", "s0"), ("S1", "s1"), ("S2", "s2"), ("S3", "s3")],
            &["STORE"],
        )
        .unwrap();
    let mut other = cp
        .deploy("other", &[("S4", "s4"), ("S0", "s0")], &[])
        .unwrap();
    for round in 1..=4 {
        for (n, id) in names.iter().zip(&ids) {
            cp.update_secret(id, &format!("{n}-v{round}"));
        }
    }
    // Rebound: S3 goes, S5 comes; then S1's secret goes (a dangling binding) and S2's is
    // replaced by a new secret of the same name.
    cp.create_secret("s5", "s5-v0");
    cp.deploy(
        "app",
        &[("S0", "s0"), ("S1", "s1"), ("S2", "s2"), ("S5", "s5")],
        &["STORE"],
    );
    cp.delete_secret(&ids[1]);
    cp.delete_secret(&ids[2]);
    ids[2] = cp.create_secret("s2", "s2-recreated");
    let rotated = cp
        .conn
        .run(&[
            "service",
            "token",
            "rotate",
            "other",
            "--keep-previous",
            "--json",
        ])
        .ok()
        .json();
    let previous = std::mem::replace(
        &mut other,
        rotated["service_token"].as_str().unwrap().to_owned(),
    );
    cp.update_secret(&ids[0], "s0-last");

    let head = converge(&cp, &nd, &edges);
    all_read(&edges, "S0", &app, Want::Value("s0-last"));
    eprintln!("converged at seq {head}");
    let probes: Vec<(String, &String)> = vec![
        (ALL_BINDINGS.to_owned(), &app),
        (ALL_BINDINGS.to_owned(), &other),
        (ALL_BINDINGS.to_owned(), &previous),
        (binding_path("S0"), &app),
        (binding_path("S1"), &app),
        (binding_path("S2"), &app),
        (binding_path("S3"), &app),
        (binding_path("S5"), &app),
        (binding_path("S4"), &other),
        (binding_path("S0"), &previous),
        ("/runtime/v1/stores/STORE/secrets/s3".to_owned(), &app),
        ("/runtime/v1/stores/STORE/secrets/s1".to_owned(), &app),
        ("/runtime/v1/stores/STORE/secrets/s2".to_owned(), &app),
    ];
    let expected: Vec<Resp> = probes.iter().map(|(p, t)| cp.get(p, t)).collect();
    // The control plane's answers are the ones the writes call for.
    assert_eq!(expected[3].body, "s0-last", "{expected:#?}");
    assert_eq!(expected[4].status, 404, "{expected:#?}");
    assert_eq!(expected[5].body, "s2-recreated", "{expected:#?}");
    assert_eq!(
        expected[6].status, 404,
        "S3 is no longer bound: {expected:#?}"
    );
    assert_eq!(expected[8].body, "s4-v4", "{expected:#?}");
    assert_eq!(expected[9].body, "s0-last", "{expected:#?}");
    assert_eq!(expected[10].body, "s3-v4", "{expected:#?}");
    let all: Value = expected[1].json();
    assert_eq!(all["S4"], "s4-v4", "{all}");
    assert_eq!(all["S0"], "s0-last", "{all}");
    for edge in edges {
        for ((path, token), want) in probes.iter().zip(&expected) {
            let got = edge
                .get(path, Some(token))
                .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            if want.content_type.starts_with("application/json") && want.status == 200 {
                assert_eq!(got.status, 200, "{path}: {got:?}\n{}", edge.diag());
                assert_eq!(got.json(), want.json(), "{path}\n{}", edge.diag());
            } else {
                assert_eq!(
                    (got.status, &got.body),
                    (want.status, &want.body),
                    "{path} on edge {} differs from the control plane",
                    edge.name
                );
            }
        }
        assert_eq!(edge.health()["alarms"], 0, "{}", edge.diag());
    }
}

#[test]
fn an_edge_that_says_ready_serves_reads() {
    // /healthz is what a load balancer routes on: once it says 200, runtime reads must not
    // answer 503. Probed without pause, so a window between the two would be seen.
    let cp = ControlPlane::start();
    cp.create_secret("api-key", "ready-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    for i in 0..3 {
        let node = cp.node(&format!("ready-{i}"));
        let edge = Edge::start(&cp, &format!("edge-{i}"), &[&cp.url()], &node, &[]);
        let start = Instant::now();
        loop {
            let (status, h) = edge
                .healthz()
                .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            if status == 200 {
                assert_eq!(h["ready"], true, "{h}");
                break;
            }
            assert!(start.elapsed() < WAIT, "never ready\n{}", edge.diag());
            std::thread::sleep(Duration::from_millis(5));
        }
        check(&edge.read("API_KEY", &token), Want::Value("ready-value")).unwrap_or_else(|e| {
            panic!(
                "healthz said ready, but a read right after got {e}\n{}",
                edge.diag()
            )
        });
    }
}
