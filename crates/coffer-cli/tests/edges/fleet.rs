//! A fleet of edges and a relay following every write; an edge killed with SIGKILL.

use crate::harness::*;

#[test]
fn a_fleet_of_edges_and_a_relay_follows_every_write() {
    let cp = ControlPlane::start();
    let n1 = cp.node("fleet-e1");
    let n2 = cp.node("fleet-e2");
    let n3 = cp.node("fleet-e3");
    let secret = cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();

    let url = cp.url();
    let e1 = Edge::start(&cp, "e1-relay", &[&url], &n1, &["--serve-feed"]);
    let e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    let e3 = Edge::start(&cp, "e3-via-relay", &[&e1.url], &n3, &[]);
    let edges = [&e1, &e2, &e3];
    for edge in edges {
        let h = edge.wait_ready();
        assert_eq!(h["role"], "edge", "{h}");
        assert_eq!(h["status"], "ok", "{h}");
        assert!(h["cluster_id"].is_string(), "{h}");
    }
    let cluster = e1.health()["cluster_id"].clone();
    for edge in edges {
        assert_eq!(edge.health()["cluster_id"], cluster, "{}", edge.name);
    }
    assert_eq!(e3.health()["upstream"], e1.url.as_str());
    all_read(&edges, "API_KEY", &token, Want::Value("value-1"));

    // Update: the new value everywhere.
    cp.update_secret(&secret, "value-2");
    let took = all_read(&edges, "API_KEY", &token, Want::Value("value-2"));
    eprintln!("update reached every edge in {took:?}");

    // Delete: gone everywhere.
    cp.delete_secret(&secret);
    let took = all_read(&edges, "API_KEY", &token, Want::Status(404));
    eprintln!("delete reached every edge in {took:?}");

    // Re-create under the same name: the binding resolves again.
    cp.create_secret("api-key", "value-3");
    let took = all_read(&edges, "API_KEY", &token, Want::Value("value-3"));
    eprintln!("re-create reached every edge in {took:?}");
    // Nothing went back to an older state on the way.
    for edge in edges {
        check(&edge.read("API_KEY", &token), Want::Value("value-3"))
            .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    }

    // Rotate the service token: the old one is refused everywhere, the new one works.
    let rotated = cp
        .conn
        .run(&["service", "token", "rotate", "app", "--json"])
        .ok()
        .json();
    let new = rotated["service_token"].as_str().unwrap().to_owned();
    let took = all_read(&edges, "API_KEY", &token, Want::Status(401));
    eprintln!("token rotation reached every edge in {took:?}");
    all_read(&edges, "API_KEY", &new, Want::Value("value-3"));

    // Revoke every token of the service: refused everywhere.
    cp.conn.run(&["service", "token", "revoke", "app"]).ok();
    all_read(&edges, "API_KEY", &new, Want::Status(401));

    // A deleted service: its (new) token is refused everywhere.
    let token = cp.deploy("gone", &[("API_KEY", "api-key")], &[]).unwrap();
    all_read(&edges, "API_KEY", &token, Want::Value("value-3"));
    cp.conn.run(&["service", "delete", "gone"]).ok();
    all_read(&edges, "API_KEY", &token, Want::Status(401));

    // The relay's follower is where the relay is, which is where the control plane is.
    converge(&cp, &n1, &edges);
    for edge in edges {
        let h = edge.health();
        assert_eq!(h["alarms"], 0, "{}: {h}", edge.name);
        for value in ["value-1", "value-2", "value-3"] {
            assert!(
                !edge.log().contains(value),
                "a value in {}'s log",
                edge.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 and restart

#[test]
fn an_edge_killed_with_sigkill_serves_at_once_after_restart_and_catches_up() {
    let cp = ControlPlane::start();
    let n1 = cp.node("kill-e1");
    let n2 = cp.node("kill-e2");
    let api = cp.create_secret("api-key", "before-1");
    cp.create_secret("db-url", "db-before");
    let token = cp
        .deploy("app", &[("API_KEY", "api-key"), ("DB_URL", "db-url")], &[])
        .unwrap();
    let url = cp.url();
    let e1 = Edge::start(&cp, "e1", &[&url], &n1, &[]);
    let mut e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    for edge in [&e1, &e2] {
        edge.wait_ready();
    }
    all_read(&[&e1, &e2], "API_KEY", &token, Want::Value("before-1"));
    let cluster = e2.health()["cluster_id"].clone();

    e2.kill_9();
    // Writes while it is down: an update, a new secret and a new binding, a deleted one.
    cp.update_secret(&api, "after-2");
    cp.create_secret("new-secret", "new-value");
    cp.deploy(
        "app",
        &[("API_KEY", "api-key"), ("NEW_KEY", "new-secret")],
        &[],
    );
    e1.wait_read("API_KEY", &token, Want::Value("after-2"));
    e1.wait_read("NEW_KEY", &token, Want::Value("new-value"));
    e1.wait_read("DB_URL", &token, Want::Status(404));

    e2.restart();
    // It answers from its replica at once: no 503 while it catches up.
    let (status, h) = e2
        .healthz()
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(
        status,
        200,
        "not ready at once after a restart: {h}\n{}",
        e2.diag()
    );
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["cluster_id"], cluster, "{h}");
    let first = e2
        .read("API_KEY", &token)
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(first.status, 200, "{first:?}\n{}", e2.diag());
    assert!(
        first.body == "before-1" || first.body == "after-2",
        "neither the old nor the new value: {first:?}"
    );
    // And it catches up with what it missed.
    e2.wait_read("API_KEY", &token, Want::Value("after-2"));
    e2.wait_read("NEW_KEY", &token, Want::Value("new-value"));
    e2.wait_read("DB_URL", &token, Want::Status(404));
    let head = converge(&cp, &n1, &[&e1, &e2]);
    assert_eq!(e2.applied_seq(), e1.applied_seq());
    assert_eq!(e2.applied_seq(), head);
    assert_eq!(e2.health()["alarms"], 0, "{}", e2.diag());

    // Killed again right after a write, it still ends up with it.
    cp.update_secret(&api, "after-3");
    e2.kill_9();
    e2.restart();
    e2.wait_read("API_KEY", &token, Want::Value("after-3"));
    converge(&cp, &n1, &[&e1, &e2]);
}
