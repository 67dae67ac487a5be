//! Static stability: edges keep serving with the control plane down.

use std::time::Duration;

use crate::harness::*;

/// Reads every probe on `edge`.
fn answers(edge: &Edge, probes: &[(String, String)]) -> Result<Vec<Resp>, String> {
    probes
        .iter()
        .map(|(path, token)| edge.get(path, Some(token)))
        .collect()
}

#[test]
fn edges_keep_serving_with_the_control_plane_down_and_resume_after() {
    let mut cp = ControlPlane::start();
    let n1 = cp.node("static-e1");
    let n2 = cp.node("static-e2");
    let api = cp.create_secret("api-key", "static-api");
    cp.create_secret("db-url", "static-db");
    let gone = cp.create_secret("soon-gone", "static-gone");
    let t1 = cp
        .deploy(
            "app",
            &[
                ("API_KEY", "api-key"),
                ("DB_URL", "db-url"),
                ("GONE", "soon-gone"),
            ],
            &["ALL"],
        )
        .unwrap();
    let t2 = cp.deploy("other", &[("DB", "db-url")], &[]).unwrap();
    let revoked = cp.deploy("revoked", &[("DB", "db-url")], &[]).unwrap();
    cp.conn.run(&["service", "token", "revoke", "revoked"]).ok();
    cp.delete_secret(&gone);

    let url = cp.url();
    let mut e1 = Edge::start(&cp, "e1", &[&url], &n1, &[]);
    let mut e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    let probes: Vec<(String, String)> = [
        (binding_path("API_KEY"), &t1),
        (binding_path("DB_URL"), &t1),
        (binding_path("GONE"), &t1),
        (binding_path("NO_SUCH_BINDING"), &t1),
        ("/runtime/v1/stores/ALL/secrets/db-url".to_owned(), &t1),
        (ALL_BINDINGS.to_owned(), &t1),
        (binding_path("DB"), &t2),
        (ALL_BINDINGS.to_owned(), &t2),
        (binding_path("DB"), &revoked),
    ]
    .into_iter()
    .map(|(p, t)| (p, t.clone()))
    .collect();
    // What the control plane answers, once every edge has all of it.
    let expected: Vec<Resp> = probes.iter().map(|(p, t)| cp.get(p, t)).collect();
    let statuses: Vec<u16> = expected.iter().map(|r| r.status).collect();
    // (All the bindings of a service one of whose secrets is gone: 404.)
    assert_eq!(
        statuses,
        [200, 200, 404, 404, 200, 404, 200, 200, 401],
        "{expected:#?}"
    );
    assert_eq!(expected[7].json(), serde_json::json!({"DB": "static-db"}));
    converge(&cp, &n1, &[&e1, &e2]);
    // (Serving can lag /healthz's "ready" by a moment: see an_edge_that_says_ready_serves_reads.)
    all_read(&[&e1, &e2], "API_KEY", &t1, Want::Value("static-api"));
    // Each edge answers like the control plane (a refused token's message aside: an edge that
    // bootstrapped after a revocation has no record of the token at all, so it says "invalid"
    // where the control plane says "revoked").
    let before: Vec<Vec<Resp>> = [&e1, &e2]
        .iter()
        .map(|edge| {
            let got = answers(edge, &probes).unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            for ((path, _), (g, w)) in probes.iter().zip(got.iter().zip(&expected)) {
                assert_eq!(g.status, w.status, "{path}: {g:?}\n{}", edge.diag());
                if w.status != 401 {
                    assert_eq!(g, w, "{path}\n{}", edge.diag());
                }
            }
            got
        })
        .collect();
    let cluster = e1.health()["cluster_id"].clone();
    let applied = e1.applied_seq();

    // The control plane dies. Once the edges have noticed, they answer exactly as before.
    cp.kill();
    for edge in [&e1, &e2] {
        eventually(
            &format!("edge {} notices the control plane is down", edge.name),
            WAIT,
            || match edge.healthz()? {
                (_, h) if h["last_error"].is_string() => Ok(()),
                (s, h) => Err(format!("{s} {h}")),
            },
            || edge.diag(),
        );
    }
    for round in 0..3 {
        for (edge, expected) in [&e1, &e2].into_iter().zip(&before) {
            let (status, h) = edge.healthz().unwrap();
            assert_eq!(status, 200, "round {round}: {h}\n{}", edge.diag());
            assert_eq!(h["ready"], true, "{h}");
            let got = answers(edge, &probes).unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            assert_eq!(
                &got,
                expected,
                "round {round}, control plane down\n{}",
                edge.diag()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // An edge restarted while the control plane is down serves from its replica.
    e2.kill_9();
    e2.restart();
    let (status, h) = e2
        .healthz()
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(status, 200, "{h}\n{}", e2.diag());
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["cluster_id"], cluster, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    let got = answers(&e2, &probes).unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(
        got,
        before[1],
        "restarted with the control plane down\n{}",
        e2.diag()
    );
    // And one stopped cleanly, likewise.
    assert!(e1.terminate().success());
    e1.restart();
    let got = answers(&e1, &probes).unwrap_or_else(|e| panic!("{e}\n{}", e1.diag()));
    assert_eq!(
        got,
        before[0],
        "restarted with the control plane down\n{}",
        e1.diag()
    );

    // The control plane comes back (same data dir, same address): the edges follow again.
    cp.restart();
    cp.update_secret(&api, "static-api-2");
    all_read(&[&e1, &e2], "API_KEY", &t1, Want::Value("static-api-2"));
    converge(&cp, &n1, &[&e1, &e2]);
}
