//! Access events: reads at an edge reach the audit log once, as its own.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The `access` entries of reads of `binding` served by edge node `node`.
fn access_entries(cp: &ControlPlane, node: &str, binding: &str) -> Vec<Value> {
    let out = cp
        .conn
        .run(&[
            "audit",
            "list",
            "--action",
            "access",
            "--per-page",
            "100",
            "--json",
        ])
        .ok();
    let v = out.json();
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter(|e| {
            e["action"] == "access"
                && e["outcome"] == "success"
                && e["edge_node"] == node
                && e["resource"]["binding"] == binding
        })
        .cloned()
        .collect()
}

fn reads_of(entries: &[Value]) -> u64 {
    entries
        .iter()
        .map(|e| e["reads"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn reads_at_an_edge_reach_the_audit_log_once() {
    let cp = ControlPlane::start();
    let node = cp.node("audit-edge");
    cp.create_secret("api-key", "audited-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&cp, "edge", &[&cp.url()], &node, &[]);
    edge.wait_ready();
    // Only reads that were served count (a 503 before the replica serves is no read).
    let mut done = 0u64;
    eventually(
        "a first read at the edge",
        WAIT,
        || check(&edge.read("API_KEY", &token), Want::Value("audited-value")),
        || edge.diag(),
    );
    done += 1;
    for _ in 0..4 {
        check(&edge.read("API_KEY", &token), Want::Value("audited-value")).unwrap();
        done += 1;
    }
    // Reads at the control plane itself are not the edge's.
    for _ in 0..2 {
        assert_eq!(cp.get(&binding_path("API_KEY"), &token).status, 200);
    }

    let deadline = Duration::from_secs(40);
    let entries = eventually(
        "the edge's reads in the control plane's audit log",
        deadline,
        || {
            let entries = access_entries(&cp, &node.name, "API_KEY");
            if reads_of(&entries) == done {
                Ok(entries)
            } else {
                Err(format!(
                    "{} reads recorded of {done}: {entries:#?}",
                    reads_of(&entries)
                ))
            }
        },
        || edge.diag(),
    );
    for e in &entries {
        assert_eq!(e["edge_node_id"], node.id.as_str(), "{e}");
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["resource"]["secret_name"], "api-key", "{e}");
        assert_eq!(e["resource"]["service_name"], "app", "{e}");
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.to_string().contains("audited-value"))
    );

    // Reads just before a clean stop reach the log too, once: they wait in the edge's outbox.
    for _ in 0..3 {
        check(&edge.read("API_KEY", &token), Want::Value("audited-value")).unwrap();
        done += 1;
    }
    assert!(edge.terminate().success(), "{}", edge.diag());
    edge.restart();
    edge.wait_ready();
    eventually(
        "the reads before the stop in the audit log",
        deadline,
        || {
            let entries = access_entries(&cp, &node.name, "API_KEY");
            if reads_of(&entries) == done {
                Ok(())
            } else {
                Err(format!(
                    "{} reads recorded of {done}: {entries:#?}",
                    reads_of(&entries)
                ))
            }
        },
        || edge.diag(),
    );

    // A restart (even a SIGKILL) sends nothing twice: across another delivery round, the
    // entries stay as they are.
    let before = access_entries(&cp, &node.name, "API_KEY");
    edge.kill_9();
    edge.restart();
    edge.wait_ready();
    std::thread::sleep(Duration::from_secs(12));
    let after = access_entries(&cp, &node.name, "API_KEY");
    assert_eq!(reads_of(&after), done, "{after:#?}\n{}", edge.diag());
    assert_eq!(after, before, "{}", edge.diag());
    // No batch recorded twice: every entry stands for its own reads.
    let mut spans: Vec<(String, String, u64)> = after
        .iter()
        .map(|e| {
            (
                e["first_read"].as_str().unwrap_or("").to_owned(),
                e["last_read"].as_str().unwrap_or("").to_owned(),
                e["reads"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let n = spans.len();
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), n, "the same reads recorded twice: {after:#?}");
    cp.conn.run(&["audit", "verify"]).ok();
}

#[test]
fn reads_at_an_edge_behind_a_relay_are_recorded_as_its_own() {
    let cp = ControlPlane::start();
    let nr = cp.node("audit-relay");
    let nl = cp.node("audit-leaf");
    cp.create_secret("api-key", "relayed-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let relay = Edge::start(&cp, "relay", &[&cp.url()], &nr, &["--serve-feed"]);
    // Reads at the relay itself, recorded as the relay's: this one and one more below.
    relay.wait_read("API_KEY", &token, Want::Value("relayed-value"));
    let leaf = Edge::start(&cp, "leaf", &[&relay.url], &nl, &[]);
    let mut done = 0u64;
    eventually(
        "a first read at the leaf",
        WAIT,
        || check(&leaf.read("API_KEY", &token), Want::Value("relayed-value")),
        || leaf.diag(),
    );
    done += 1;
    for _ in 0..3 {
        check(&leaf.read("API_KEY", &token), Want::Value("relayed-value")).unwrap();
        done += 1;
    }
    check(&relay.read("API_KEY", &token), Want::Value("relayed-value")).unwrap();

    // Two delivery rounds: the leaf's to the relay, the relay's to the control plane.
    let entries = eventually(
        "the leaf's reads in the control plane's audit log, as the leaf's",
        Duration::from_secs(45),
        || {
            let leaf_entries = access_entries(&cp, &nl.name, "API_KEY");
            let relay_entries = access_entries(&cp, &nr.name, "API_KEY");
            if reads_of(&leaf_entries) == done && reads_of(&relay_entries) == 2 {
                Ok(leaf_entries)
            } else {
                Err(format!(
                    "leaf: {} reads recorded of {done}, relay: {} of 2\nleaf's: {leaf_entries:#?}\nrelay's: {relay_entries:#?}",
                    reads_of(&leaf_entries),
                    reads_of(&relay_entries)
                ))
            }
        },
        || diag_all(&[&relay, &leaf]),
    );
    for e in &entries {
        assert_eq!(e["edge_node_id"], nl.id.as_str(), "{e}");
    }
}
