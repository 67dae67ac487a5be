//! list_audit: filters ANDed, `from` inclusive and `to` exclusive, order by seq either way,
//! pages that never overlap, and a total across pages.

use std::sync::Arc;

use coffer_types::{AccountId, SecretId, StoreId, TokenId};

use super::audit::{assert_audit_chain, entry};
use super::fixtures::{id_bytes, ts};
use crate::{AuditEntry, AuditQuery, AuditRecord, Direction, Storage};

fn query() -> AuditQuery {
    AuditQuery {
        page: 1,
        per_page: 100,
        ..AuditQuery::default()
    }
}

fn seqs(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

pub(super) async fn list_audit_filters_pages_and_orders(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = AccountId::from_bytes(id_bytes());
    let other = AccountId::from_bytes(id_bytes());
    let (alice, bob) = (
        TokenId::from_bytes(id_bytes()),
        TokenId::from_bytes(id_bytes()),
    );
    let (st1, st2) = (
        StoreId::from_bytes(id_bytes()),
        StoreId::from_bytes(id_bytes()),
    );
    let (x, y) = (
        SecretId::from_bytes(id_bytes()),
        SecretId::from_bytes(id_bytes()),
    );

    // Twelve entries, seq i + 1 at time 10 * i: actions cycle create/update/delete, actors
    // alternate, every fourth is denied, stores and secrets vary.
    let mut entries: Vec<AuditEntry> = Vec::new();
    for i in 0..12i64 {
        let action = ["create", "update", "delete"][(i % 3) as usize];
        entries.push(AuditEntry {
            at: ts(10 * i),
            outcome: if i % 4 == 0 { "denied" } else { "success" }.into(),
            actor_token: match i % 3 {
                0 => Some(alice),
                1 => Some(bob),
                _ => None,
            },
            store_id: Some(if i < 6 { st1 } else { st2 }),
            secret_id: match i % 4 {
                0 => Some(x),
                1 => Some(y),
                _ => None,
            },
            ..entry(a, action, &format!("e{i}"))
        });
    }
    s.append_audit(&entries).await.unwrap();
    // Noise in another account, matching every filter below: never returned.
    let noise: Vec<AuditEntry> = entries
        .iter()
        .map(|e| AuditEntry {
            account_id: other,
            ..e.clone()
        })
        .collect();
    s.append_audit(&noise).await.unwrap();
    let all = assert_audit_chain(s, a).await;
    assert_eq!(all.len(), 12);

    // Which seqs a predicate over the entries selects, ascending.
    let matching = |pred: &dyn Fn(usize, &AuditEntry) -> bool| -> Vec<u64> {
        entries
            .iter()
            .enumerate()
            .filter(|(i, e)| pred(*i, e))
            .map(|(i, _)| i as u64 + 1)
            .collect()
    };

    let cases: Vec<(&str, AuditQuery, Vec<u64>)> = vec![
        ("no filter", query(), (1..=12).collect()),
        (
            "from inclusive",
            AuditQuery {
                from: Some(ts(30)),
                ..query()
            },
            (4..=12).collect(),
        ),
        (
            "to exclusive",
            AuditQuery {
                to: Some(ts(30)),
                ..query()
            },
            vec![1, 2, 3],
        ),
        (
            "time range",
            AuditQuery {
                from: Some(ts(25)),
                to: Some(ts(61)),
                ..query()
            },
            vec![4, 5, 6, 7],
        ),
        (
            "empty range",
            AuditQuery {
                from: Some(ts(30)),
                to: Some(ts(30)),
                ..query()
            },
            vec![],
        ),
        (
            "actor",
            AuditQuery {
                actor_token: Some(bob),
                ..query()
            },
            matching(&|_, e| e.actor_token == Some(bob)),
        ),
        (
            "action",
            AuditQuery {
                action: Some("update".into()),
                ..query()
            },
            matching(&|_, e| e.action == "update"),
        ),
        (
            "outcome",
            AuditQuery {
                outcome: Some("denied".into()),
                ..query()
            },
            vec![1, 5, 9],
        ),
        (
            "store",
            AuditQuery {
                store_id: Some(st2),
                ..query()
            },
            (7..=12).collect(),
        ),
        (
            "secret",
            AuditQuery {
                secret_id: Some(y),
                ..query()
            },
            vec![2, 6, 10],
        ),
        (
            "unknown action",
            AuditQuery {
                action: Some("bind".into()),
                ..query()
            },
            vec![],
        ),
        (
            "all filters ANDed",
            AuditQuery {
                from: Some(ts(10)),
                to: Some(ts(110)),
                actor_token: Some(bob),
                action: Some("update".into()),
                outcome: Some("success".into()),
                store_id: Some(st1),
                secret_id: Some(y),
                ..query()
            },
            matching(&|i, e| {
                (1..11).contains(&i)
                    && e.actor_token == Some(bob)
                    && e.action == "update"
                    && e.outcome == "success"
                    && e.store_id == Some(st1)
                    && e.secret_id == Some(y)
            }),
        ),
        (
            "action and store",
            AuditQuery {
                action: Some("create".into()),
                store_id: Some(st2),
                ..query()
            },
            vec![7, 10],
        ),
    ];
    for (what, q, want) in cases {
        let page = s.list_audit(a, &q).await.unwrap();
        assert_eq!(seqs(&page.items), want, "{what}");
        assert_eq!(page.total_count, want.len() as u64, "{what}: total_count");
        for r in &page.items {
            assert_eq!(r, &all[r.seq as usize - 1], "{what}: records as stored");
        }
        let desc = s
            .list_audit(
                a,
                &AuditQuery {
                    direction: Direction::Desc,
                    ..q
                },
            )
            .await
            .unwrap();
        let mut reversed = want.clone();
        reversed.reverse();
        assert_eq!(seqs(&desc.items), reversed, "{what}, descending");
        assert_eq!(desc.total_count, want.len() as u64);
    }

    // Paging: 5 per page, both directions; total across pages; past the end is empty.
    for direction in [Direction::Asc, Direction::Desc] {
        let mut seen = Vec::new();
        for page in 1..=4 {
            let got = s
                .list_audit(
                    a,
                    &AuditQuery {
                        page,
                        per_page: 5,
                        direction,
                        ..AuditQuery::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(got.total_count, 12);
            assert_eq!(
                got.items.len(),
                [5, 5, 2, 0][page as usize - 1],
                "page {page}"
            );
            seen.extend(seqs(&got.items));
        }
        let mut want: Vec<u64> = (1..=12).collect();
        if direction == Direction::Desc {
            want.reverse();
        }
        assert_eq!(seen, want, "{direction:?}: pages never overlap or skip");
    }
    // A filtered listing pages over the matches only.
    let got = s
        .list_audit(
            a,
            &AuditQuery {
                store_id: Some(st1),
                page: 2,
                per_page: 4,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&got.items), vec![5, 6]);
    assert_eq!(got.total_count, 6);

    let none = s
        .list_audit(AccountId::from_bytes(id_bytes()), &query())
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.total_count, 0);
}
