//! Reads at an edge reach the audit log once, naming the edge.

use std::time::Duration;

use coffer_client::{AuditFilter, Direction};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_an_edge_reach_the_audit_log_once_naming_the_edge() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("audited-value", "edge-audit").await;
    let edge_dir = tmp.path().join("edge");
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;

    let cpr = &cp;
    let access = move || async move {
        let page = cpr
            .client
            .list_audit(&AuditFilter {
                action: Some("access".into()),
                direction: Some(Direction::Asc),
                per_page: Some(100),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        page.items
    };
    let baseline = access().await.len();
    assert_eq!(baseline, 0, "no reads yet");

    for _ in 0..3 {
        assert_eq!(edge.value(&b.token, "K").await, "audited-value");
    }
    assert_eq!(edge.read(&b.token, "NOPE").await.0, 404);
    wait_until(
        "the edge's access events",
        Duration::from_secs(30),
        move || async move { access().await.len() >= baseline + 2 },
    )
    .await;
    let entries = access().await;
    let new = &entries[baseline..];
    assert_eq!(new.len(), 2, "{new:#?}");
    for e in new {
        assert_eq!(e.event["edge_node"], "edge-audit", "{e:?}");
        assert!(e.event["edge_node_id"].is_string(), "{e:?}");
    }
    let served = new
        .iter()
        .find(|e| e.event["outcome"] == "success")
        .expect("the served reads");
    assert_eq!(served.event["reads"], 3, "{served:?}");
    assert_eq!(served.event["resource"]["binding"], "K", "{served:?}");
    assert_eq!(served.event["resource"]["secret_id"], b.secret.as_str());
    let denied = new
        .iter()
        .find(|e| e.event["outcome"] == "denied")
        .expect("the denied read");
    assert_eq!(denied.event["reads"], 1, "{denied:?}");
    assert_eq!(denied.event["reason"], "no such binding", "{denied:?}");

    // Reads just before a shutdown are kept in the outbox and delivered after the restart,
    // once.
    for _ in 0..2 {
        assert_eq!(edge.value(&b.token, "K").await, "audited-value");
    }
    edge.stop().await;
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    wait_until(
        "the outbox's delivery",
        Duration::from_secs(30),
        move || async move { access().await.len() > baseline + 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = access().await;
    let later = &entries[baseline + 2..];
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].event["reads"], 2, "{later:?}");
    assert_eq!(later[0].event["edge_node"], "edge-audit");
    assert_eq!(&entries[..baseline + 2], &access().await[..baseline + 2]);
    assert!(cp.client.verify_audit().await.unwrap().ok);
    edge.stop().await;
    cp.stop().await;
}
