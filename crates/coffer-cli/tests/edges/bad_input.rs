//! Bad input: credentials, positions, settings and foreign clusters refused.

use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

#[test]
fn the_feed_refuses_bad_credentials_and_positions() {
    let cp = ControlPlane::start();
    let node = cp.node("feed-client");
    cp.create_secret("api-key", "feed-value");
    let svc = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let feed = |query: &str, token: Option<&str>| {
        get(&format!("{}/replication/v1/feed?{query}", cp.url()), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&cp.log())))
    };
    let snapshot = |token: Option<&str>| {
        get(&format!("{}/replication/v1/snapshot", cp.url()), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&cp.log())))
    };

    // Who may read the feed and the snapshot: node tokens only.
    for (who, token, status) in [
        ("no token", None, 401),
        ("garbage", Some("garbage"), 401),
        (
            "a made-up node token",
            Some("coffernode_0123456789abcdef"),
            401,
        ),
        ("an API token", Some(cp.conn.token.as_str()), 403),
        ("a service token", Some(svc.as_str()), 403),
    ] {
        let r = feed("after=0", token);
        assert_eq!(r.status, status, "feed, {who}: {r:?}");
        assert_eq!(r.json()["success"], false, "feed, {who}: {r:?}");
        let r = snapshot(token);
        assert_eq!(r.status, status, "snapshot, {who}: {r:?}");
    }
    let r = feed("after=0", Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");
    let r = snapshot(Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");
    // A node token is good for nothing else.
    let r = get(
        &format!(
            "{}/client/v4/accounts/{}/secrets_store/stores",
            cp.url(),
            cp.conn.account
        ),
        Some(&node.token),
    )
    .unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    let r = get(
        &format!("{}{}", cp.url(), binding_path("API_KEY")),
        Some(&node.token),
    )
    .unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");

    // Positions.
    let head = cp.head(&node.token).unwrap();
    let r = feed(&format!("after={}", head + 1_000), Some(&node.token));
    assert_eq!(r.status, 400, "{r:?}");
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("after"), "{message}");
    for bad in [
        "",
        "after=-1",
        "after=x",
        "after=0&wait=z",
        "after=0&bogus=1",
    ] {
        let r = feed(bad, Some(&node.token));
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    let r = feed(&format!("after={head}&wait=0"), Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");

    // The node in the list; revoked, its token no longer reads the feed.
    let list = cp.conn.run(&["node", "list", "--json"]).ok();
    assert!(list.stdout.contains(&node.id), "{list:#?}");
    assert!(list.stdout.contains(&node.name), "{list:#?}");
    assert!(
        !list.stdout.contains(&node.token),
        "a node token in the list: {list:#?}"
    );
    let human = cp.conn.run(&["node", "list"]).ok();
    assert!(human.stdout.contains(&node.name), "{human:#?}");
    cp.conn.run(&["node", "revoke", &node.id]).ok();
    let r = feed("after=0", Some(&node.token));
    assert_eq!(r.status, 401, "a revoked node token: {r:?}");
    let r = snapshot(Some(&node.token));
    assert_eq!(r.status, 401, "a revoked node token: {r:?}");

    // An edge with that token never gets a replica: it is told it is revoked, and answers 503
    // everywhere but /healthz, which says why.
    let edge = Edge::start(&cp, "revoked-edge", &[&cp.url()], &node, &[]);
    let h = eventually(
        "the edge with a revoked token reports the refusal",
        WAIT,
        || match edge.healthz()? {
            (503, h) if h["revoked"].as_str().is_some_and(|e| e.contains("401")) => Ok(h),
            (s, h) => Err(format!("{s} {h}")),
        },
        || edge.diag(),
    );
    assert_eq!(h["ready"], false, "{h}");
    assert_eq!(h["status"], "revoked", "{h}");
    assert_eq!(h["role"], "edge", "{h}");
    assert_eq!(h["cluster_id"], Value::Null, "{h}");
    for path in [
        binding_path("API_KEY"),
        ALL_BINDINGS.to_owned(),
        "/replication/v1/feed?after=0".to_owned(),
        "/no/such/route".to_owned(),
    ] {
        let r = edge.get(&path, Some(&svc)).unwrap();
        assert_eq!(r.status, 503, "{path}: {r:?}");
    }
}

#[test]
fn a_relay_refuses_what_the_control_plane_refuses() {
    let cp = ControlPlane::start();
    let nr = cp.node("guard-relay");
    let leaf = cp.node("guard-leaf");
    let plain = cp.node("guard-plain");
    cp.create_secret("api-key", "guard-value");
    let svc = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let relay = Edge::start(&cp, "relay", &[&cp.url()], &nr, &["--serve-feed"]);
    let edge = Edge::start(&cp, "plain", &[&cp.url()], &plain, &[]);
    relay.wait_read("API_KEY", &svc, Want::Value("guard-value"));
    edge.wait_read("API_KEY", &svc, Want::Value("guard-value"));
    let feed = |at: &Edge, query: &str, token: Option<&str>| {
        at.get(&format!("/replication/v1/feed?{query}"), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", at.diag()))
    };

    // The leaf's node token reads the relay's feed and snapshot; nothing else does.
    assert_eq!(
        feed(&relay, "after=0", Some(&leaf.token)).status,
        200,
        "{}",
        relay.diag()
    );
    let r = relay
        .get("/replication/v1/snapshot", Some(&leaf.token))
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // (A relay has no API tokens: to it, one is just not a valid token.)
    for (who, token, statuses) in [
        ("no token", None, &[401][..]),
        ("garbage", Some("garbage"), &[401]),
        ("an API token", Some(cp.conn.token.as_str()), &[401, 403]),
        ("a service token", Some(svc.as_str()), &[403]),
    ] {
        let r = feed(&relay, "after=0", token);
        assert!(statuses.contains(&r.status), "relay feed, {who}: {r:?}");
        assert_eq!(r.json()["success"], false, "relay feed, {who}: {r:?}");
        let r = relay.get("/replication/v1/snapshot", token).unwrap();
        assert!(statuses.contains(&r.status), "relay snapshot, {who}: {r:?}");
    }
    let r = feed(&relay, "after=1000000", Some(&leaf.token));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("after")),
        "{r:?}"
    );
    // A node token is no service token, at an edge either.
    let r = relay.read("API_KEY", &leaf.token).unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    // An edge that is not a relay serves no feed.
    let r = feed(&edge, "after=0", Some(&leaf.token));
    assert_eq!(r.status, 404, "{r:?}");

    // Revoked on the control plane, the leaf's token is refused by the relay too, once the
    // revocation has reached it.
    cp.conn.run(&["node", "revoke", &leaf.id]).ok();
    eventually(
        "the relay refuses a revoked node token",
        WAIT,
        || {
            let r = feed(&relay, "after=0", Some(&leaf.token));
            if r.status == 401 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        || relay.diag(),
    );
    let r = relay
        .get("/replication/v1/snapshot", Some(&leaf.token))
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn edge_settings_that_cannot_work_are_refused_at_start() {
    let cp = ControlPlane::start();
    let node = cp.node("settings");
    let edge_cmd = |token: &str, dir: &Path, upstream: &str| {
        let mut cmd = coffer_cmd();
        cmd.env_remove("COFFER_NODE_TOKEN")
            .arg("edge")
            .args(["--upstream", upstream])
            .env("COFFER_NODE_TOKEN", token)
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"]);
        cmd
    };
    // An API token is not a node token.
    let out = run_briefly(edge_cmd(&cp.conn.token, &cp.path("e"), &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("node token"), "{line}");
    // The control plane's own data dir is not an edge's.
    let out = run_briefly(edge_cmd(&node.token, &cp.data, &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("control plane"), "{line}");
    // An upstream that is not a URL.
    let out = run_briefly(edge_cmd(&node.token, &cp.path("e"), "127.0.0.1:1"));
    let line = out.one_error_line(1);
    assert!(line.contains("upstream"), "{line}");
    // Plain HTTP to an upstream off loopback, without --insecure-http-upstream.
    let out = run_briefly(edge_cmd(
        &node.token,
        &cp.path("e"),
        "http://192.0.2.1:8080",
    ));
    let line = out.one_error_line(1);
    assert!(
        line.contains("plain HTTP") && line.contains("--insecure-http-upstream"),
        "{line}"
    );
    // Two edges on one data dir.
    let first = Edge::start(&cp, "e", &[&cp.url()], &node, &[]);
    first.wait_ready();
    let out = run_briefly(edge_cmd(&node.token, &first.dir, &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("in use"), "{line}");
    // Edges take no KEK any more: the flag (or its variable) is refused, saying what to do,
    // before anything is made in the data dir.
    let mut cmd = edge_cmd(&node.token, &cp.path("with-kek"), &cp.url());
    cmd.arg("--kek-file").arg(cp.data.join("kek.key"));
    let out = run_briefly(cmd);
    let line = out.one_error_line(2);
    assert!(
        line.contains("edges no longer take a KEK file") && line.contains("docs/edges.md"),
        "{line}"
    );
    let mut cmd = edge_cmd(&node.token, &cp.path("with-kek"), &cp.url());
    cmd.env("COFFER_KEK_FILE", cp.data.join("kek.key"));
    let line = run_briefly(cmd).one_error_line(2).to_owned();
    assert!(line.contains("edges no longer take a KEK file"), "{line}");
    assert!(!cp.path("with-kek").join("node.key").exists());
}

#[test]
fn an_edge_never_applies_another_clusters_data() {
    // Cluster A, and an edge that holds a replica of it.
    let a = ControlPlane::start();
    let na = a.node("edge-of-a");
    a.create_secret("api-key", "value-of-a");
    let ta = a.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&a, "edge", &[&a.url()], &na, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &ta, Want::Value("value-of-a"));
    let applied = converge(&a, &na, &[&edge]);
    let cluster_a = edge.health()["cluster_id"].clone();
    assert!(cluster_a.is_string(), "{cluster_a}");
    assert!(edge.terminate().success(), "{}", edge.diag());

    // Cluster B: another `coffer init`, with a longer log than A's, so that its feed answers
    // the edge's position with entries of its own rather than a 400.
    let b = ControlPlane::start();
    let nb = b.node("edge-of-b");
    for i in 0..(applied + 3) {
        b.create_secret(&format!("b-{i}"), "value-of-b");
    }
    b.create_secret("api-key", "value-of-b");
    let tb = b.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let head_b = b.head(&nb.token).unwrap();
    assert!(
        head_b > applied,
        "B's head {head_b} is not past A's {applied}"
    );

    // The edge restarted against B (with B's node token): it refuses B and keeps A.
    edge.upstreams = vec![b.url()];
    edge.token = nb.token.clone();
    edge.restart();
    let (status, h) = edge.healthz().unwrap();
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    eventually(
        "the edge logs that it refuses the other cluster",
        WAIT,
        || {
            if edge.log().contains("refusing it") {
                Ok(())
            } else {
                Err("no \"refusing it\" in the log".into())
            }
        },
        || edge.diag(),
    );
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing it")),
        "{h}"
    );
    let line = edge
        .log()
        .lines()
        .find(|l| l.contains("refusing it"))
        .unwrap()
        .to_owned();
    assert!(line.contains("ERROR"), "{line}");
    // Still A's data, none of B's.
    check(&edge.read("API_KEY", &ta), Want::Value("value-of-a"))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    check(&edge.read("API_KEY", &tb), Want::Status(401))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    // An empty data dir on B is fine: the same settings work there.
    let nb2 = b.node("fresh-edge-of-b");
    let fresh = Edge::start(&b, "fresh", &[&b.url()], &nb2, &[]);
    fresh.wait_ready();
    fresh.wait_read("API_KEY", &tb, Want::Value("value-of-b"));
    assert_ne!(fresh.health()["cluster_id"], cluster_a);
    // And after all that, the first edge still has not moved.
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
}

#[test]
fn an_edge_never_applies_a_foreign_cluster_with_a_shorter_log() {
    // As an_edge_never_applies_another_clusters_data, but B's log is shorter than the edge's
    // replica of A: its feed answers the edge's position with a 400 rather than entries.
    let a = ControlPlane::start();
    let na = a.node("long-a");
    for i in 0..8 {
        a.create_secret(&format!("a-{i}"), "filler-of-a");
    }
    a.create_secret("api-key", "value-of-a");
    let ta = a.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&a, "edge", &[&a.url()], &na, &[]);
    edge.wait_read("API_KEY", &ta, Want::Value("value-of-a"));
    let applied = converge(&a, &na, &[&edge]);
    let cluster_a = edge.health()["cluster_id"].clone();
    assert!(edge.terminate().success(), "{}", edge.diag());

    let b = ControlPlane::start();
    let nb = b.node("short-b");
    b.create_secret("api-key", "value-of-b");
    let tb = b.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let head_b = b.head(&nb.token).unwrap();
    assert!(
        head_b < applied,
        "B's head {head_b} is not short of A's {applied}"
    );

    edge.upstreams = vec![b.url()];
    edge.token = nb.token.clone();
    edge.restart();
    eventually(
        "the edge logs that it refuses the other cluster",
        WAIT,
        || {
            if edge.log().contains("refusing it") {
                Ok(())
            } else {
                Err("no \"refusing it\" in the log".into())
            }
        },
        || edge.diag(),
    );
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    check(&edge.read("API_KEY", &ta), Want::Value("value-of-a"))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    check(&edge.read("API_KEY", &tb), Want::Status(401))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
}
