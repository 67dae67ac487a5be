//! Failover between upstreams and away from a cut-off relay.

use std::time::{Duration, Instant};

use crate::harness::*;

/// A URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn an_edge_whose_first_upstream_is_dead_syncs_from_the_next() {
    let cp = ControlPlane::start();
    let node = cp.node("failover-dead-first");
    let secret = cp.create_secret("api-key", "fo-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let dead = dead_url();
    let url = cp.url();
    let edge = Edge::start(&cp, "edge", &[&dead, &url], &node, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("fo-1"));
    cp.update_secret(&secret, "fo-2");
    edge.wait_read("API_KEY", &token, Want::Value("fo-2"));
    assert_eq!(edge.health()["upstream"], url.as_str(), "{}", edge.diag());
    converge(&cp, &node, &[&edge]);
}

#[test]
fn an_edge_keeps_following_when_its_relay_dies() {
    let cp = ControlPlane::start();
    let nr = cp.node("failover-relay");
    let nf = cp.node("failover-follower");
    let secret = cp.create_secret("api-key", "rel-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let mut relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    relay.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&relay.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("rel-1"));
    cp.update_secret(&secret, "rel-2");
    follower.wait_read("API_KEY", &token, Want::Value("rel-2"));

    relay.kill_9();
    cp.update_secret(&secret, "rel-3");
    follower.wait_read("API_KEY", &token, Want::Value("rel-3"));
    cp.update_secret(&secret, "rel-4");
    follower.wait_read("API_KEY", &token, Want::Value("rel-4"));
    follower.wait_upstream(&url);
    converge(&cp, &nf, &[&follower]);
}

#[test]
fn an_edge_leaves_a_relay_cut_off_from_the_control_plane() {
    // control plane <- r0 (relay) <- r1 (relay) <- follower (r1 first, then the control plane)
    let cp = ControlPlane::start();
    let n0 = cp.node("stale-r0");
    let n1 = cp.node("stale-r1");
    let nf = cp.node("stale-follower");
    let secret = cp.create_secret("api-key", "stale-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let mut r0 = Edge::start(&cp, "r0", &[&url], &n0, &["--serve-feed"]);
    r0.wait_ready();
    let r1 = Edge::start(&cp, "r1", &[&r0.url], &n1, &["--serve-feed"]);
    r1.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&r1.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("stale-1"));

    // r1 stays up but hears nothing new: its heartbeats grow old.
    r0.kill_9();
    let r1_seq = r1.applied_seq();
    cp.update_secret(&secret, "stale-2");
    follower.wait_read("API_KEY", &token, Want::Value("stale-2"));
    follower.wait_upstream(&url);
    // r1 itself still serves what it has.
    r1.wait_read("API_KEY", &token, Want::Value("stale-1"));
    assert_eq!(r1.applied_seq(), r1_seq);
    assert!(follower.applied_seq() > r1_seq);
}

#[test]
fn a_healthy_relay_is_not_left_when_nothing_is_written() {
    // The relay and the control plane are both fine: with nothing written, the follower has
    // no reason to leave the relay, whatever --staleness it has.
    let cp = ControlPlane::start();
    let nr = cp.node("quiet-relay");
    let nf = cp.node("quiet-follower");
    cp.create_secret("api-key", "quiet-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    relay.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&relay.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("quiet-1"));
    // (It may have started on the control plane if the relay was not serving yet.)
    follower.wait_upstream(&relay.url);
    let switches = |edge: &Edge| edge.log().matches("switched upstream").count();
    let before = switches(&follower);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let h = follower.health();
        assert_eq!(
            h["upstream"],
            relay.url.as_str(),
            "left a healthy relay after {:?}\n{}",
            start.elapsed(),
            follower.diag()
        );
        std::thread::sleep(POLL);
    }
    assert_eq!(switches(&follower), before, "{}", follower.diag());
}
