//! Revocation, and failures that must not lock out anyone else; healthz while cut off.

use crate::common::*;
use crate::harness::*;

/// A revoked edge stops: after `coffer node revoke`, its upstream tells it (or the feed does),
/// and it answers every read 503 `edge_revoked`, says `revoked` on `/healthz`, deletes its
/// replica, asks upstream nothing more, and refuses to start again from that data dir. Then a
/// burst of failed authentications from this test's address (the same 127.0.0.1 as the edge)
/// is refused once over the limit, while valid service and API tokens from that address are
/// served during and after it, a never-used one included.
#[test]
fn a_revoked_edge_stops_and_a_burst_of_failures_locks_out_no_valid_token() {
    let cp = ControlPlane::start();
    let node = cp.node("rev-e1");
    cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&cp, "rev-e1", &[&cp.url()], &node, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));

    cp.conn.run(&["node", "revoke", &node.id]).ok();
    let health = eventually(
        "the edge to count itself revoked",
        WAIT,
        || match edge.healthz()? {
            (503, h) if h["status"] == "revoked" => Ok(h),
            (s, h) => Err(format!("{s} {h}")),
        },
        || edge.diag(),
    );
    assert!(health["revoked"].is_string(), "{health}");
    let r = edge.read("API_KEY", &token).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["errors"][0]["code"], 1502, "{r:?}");
    eventually(
        "the replica to be deleted",
        WAIT,
        || match edge.dir.join("replica.db").exists() {
            false => Ok(()),
            true => Err("replica.db is still there".to_owned()),
        },
        || edge.diag(),
    );
    // The control plane still serves the value to the service, and the service token's
    // revocation acts there as always.
    assert_eq!(cp.get(&binding_path("API_KEY"), &token).status, 200);

    // A burst of failures from this address (malformed tokens, unknown ids, forged secrets
    // of real ids) on both APIs; a valid token is served throughout.
    let forged = format!("{}{}", &token[..token.len() - 43], "A".repeat(43));
    let quota = format!(
        "/client/v4/accounts/{}/secrets_store/quota",
        cp.conn.account
    );
    let mut refused = 0;
    for i in 0..300 {
        let bad = match i % 3 {
            0 => "garbage".to_owned(),
            1 => format!("coffersvc_{}_{}", "ab".repeat(16), "Q".repeat(43)),
            _ => forged.clone(),
        };
        let path = if i % 2 == 0 {
            binding_path("API_KEY")
        } else {
            quota.clone()
        };
        let status = cp.get(&path, &bad).status;
        assert!(status == 401 || status == 429, "failure {i}: {status}");
        refused += usize::from(status == 429);
        if i % 25 == 0 {
            let r = cp.get(&binding_path("API_KEY"), &token);
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "value-1"),
                "during the burst ({i})"
            );
        }
    }
    assert!(
        refused > 200,
        "the limit engaged: {refused} of 300 refused with 429"
    );
    // After it: the same service token, the operator's API token, and a service deployed now
    // (its token never seen before) are all served from this address.
    assert_eq!(cp.get(&binding_path("API_KEY"), &forged).status, 429);
    let r = cp.get(&binding_path("API_KEY"), &token);
    assert_eq!((r.status, r.body.as_str()), (200, "value-1"));
    assert_eq!(cp.get(&quota, &cp.conn.token).status, 200);
    let fresh = cp.deploy("app-2", &[("API_KEY", "api-key")], &[]).unwrap();
    let r = cp.get(&binding_path("API_KEY"), &fresh);
    assert_eq!((r.status, r.body.as_str()), (200, "value-1"));

    // The revoked edge's data dir is refused at start, saying what to do.
    let status = edge.terminate();
    assert!(status.success(), "{status}");
    let mut cmd = coffer_cmd();
    cmd.env_remove("COFFER_NODE_TOKEN")
        .arg("edge")
        .args(["--upstream", &cp.url()])
        .env("COFFER_NODE_TOKEN", &node.token)
        .arg("--data-dir")
        .arg(&edge.dir)
        .args(["--listen", "127.0.0.1:0"]);
    let out = run_briefly(cmd);
    let line = out.one_error_line(1);
    assert!(
        line.contains("revoked") && line.contains("empty data dir"),
        "{line}"
    );
}

/// `/healthz` tells the truth while the control plane is down, and the log says so once: an
/// edge reports `degraded` once its requests fail, `stale` (still serving) past `--staleness`,
/// and stops serving past `--max-staleness`; it logs one line naming the cause when it loses its
/// upstream and one when it is back (not one per retry), and is `ok` and serving again after.
#[test]
fn an_edge_cut_off_says_degraded_then_stale_and_logs_the_loss_once() {
    let mut cp = ControlPlane::start();
    let node = cp.node("health-e1");
    cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let edge = Edge::start(
        &cp,
        "health-e1",
        &[&cp.url()],
        &node,
        &["--staleness", "2", "--max-staleness", "5"],
    );
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    let status_is = |want: &'static str, code: u16| {
        eventually(
            &format!("edge says {want} ({code})"),
            WAIT,
            || match edge.healthz()? {
                (s, h) if s == code && h["status"] == want => Ok(h),
                (s, h) => Err(format!("{s} {h}")),
            },
            || edge.diag(),
        )
    };
    status_is("ok", 200);

    cp.kill();
    status_is("degraded", 200);
    let h = status_is("stale", 200);
    assert!(h["lag_seconds"].as_f64().unwrap() > 2.0, "{h}");
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    status_is("stale", 503);
    edge.wait_read("API_KEY", &token, Want::Status(503));

    cp.restart();
    status_is("ok", 200);
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    let log = edge.log();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lost the upstream"))
        .collect();
    assert_eq!(lost.len(), 1, "one line for the loss:\n{}", tail(&log));
    assert!(
        lost[0].contains("error="),
        "the cause is named: {}",
        lost[0]
    );
    let back = log
        .lines()
        .filter(|l| l.contains("upstream is back"))
        .count();
    assert_eq!(back, 1, "one line for the return:\n{}", tail(&log));
}
