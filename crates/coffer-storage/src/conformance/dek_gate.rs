//! The DEK gate in storage (`Storage::close_dek_gate`, `wait_dek_gate`): what keeps a node's
//! revocation on one instance from being starved by new DEKs that other instances' writes
//! insert.

use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{Tenant, secret, store, tenant, wrapped_key};
use crate::{DekRecord, NewSecret, Storage, StorageError};

/// Longer than any backend's wait: a call that takes this long hangs.
const HANG: Duration = Duration::from_secs(30);

fn new_dek(t: Tenant, tag: u8) -> DekRecord {
    DekRecord {
        account_id: t.account,
        key: wrapped_key(tag),
        rk: None,
    }
}

fn carrying(t: Tenant, store: crate::StoreId, name: &str, dek: &DekRecord) -> NewSecret {
    let mut new = secret(t, store, name);
    new.value.dek_id = dek.key.id;
    new.dek = Some(dek.clone());
    new
}

/// The contract on one handle, which every backend meets: a hold never makes a write carrying
/// a stored DEK fail, a write carrying a new DEK either commits or is refused with `Conflict`
/// at once (never waits for the hold, never fails otherwise), and once the hold is dropped
/// `wait_dek_gate` returns and new DEKs are stored again. (Refusal itself is what a backend
/// shared by several processes does; SQLite's one process has its gate in memory, and
/// PostgreSQL's refusal across instances is tested there.)
pub(super) async fn a_dek_gate_hold_never_refuses_stored_deks_and_never_makes_a_write_wait(
    s: Arc<dyn Storage>,
) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let stored = new_dek(t, 3);
    s.put_dek(stored.clone()).await.unwrap();

    let hold = tokio::time::timeout(HANG, s.close_dek_gate())
        .await
        .expect("closing the gate with no write under way does not wait")
        .unwrap();
    // A stored DEK carried: never refused because of the hold.
    tokio::time::timeout(
        HANG,
        s.create_secrets(
            t.account,
            st,
            vec![carrying(t, st, "OLD", &stored)],
            10,
            &[],
        ),
    )
    .await
    .expect("a write carrying a stored DEK does not wait for the gate")
    .expect("a write carrying a stored DEK is not refused by the gate");
    // A new DEK: committed or refused at once with `Conflict`.
    let fresh = new_dek(t, 4);
    let during = tokio::time::timeout(
        HANG,
        s.create_secrets(t.account, st, vec![carrying(t, st, "NEW", &fresh)], 10, &[]),
    )
    .await
    .expect("a write carrying a new DEK does not wait for the gate inside storage");
    match &during {
        Ok(()) => assert!(s.get_dek(fresh.key.id).await.unwrap().is_some()),
        Err(StorageError::Conflict) => {
            assert_eq!(
                s.get_dek(fresh.key.id).await.unwrap(),
                None,
                "a refused write stores nothing"
            );
        }
        Err(e) => panic!("a write carrying a new DEK under the gate: {e:?}"),
    }
    drop(hold);

    tokio::time::timeout(HANG, s.wait_dek_gate())
        .await
        .expect("a dropped hold releases the gate")
        .expect("no revocation holds the gate");
    let later = new_dek(t, 5);
    s.create_secrets(
        t.account,
        st,
        vec![carrying(t, st, "LATER", &later)],
        10,
        &[],
    )
    .await
    .expect("a new DEK is stored once the hold is dropped");
    if during.is_err() {
        s.create_secrets(t.account, st, vec![carrying(t, st, "NEW", &fresh)], 10, &[])
            .await
            .expect("the refused write succeeds once the hold is dropped");
    }
    // A second revocation closes the gate again, as often as it likes.
    let again = tokio::time::timeout(HANG, s.close_dek_gate())
        .await
        .expect("the gate closes again")
        .unwrap();
    drop(again);
    tokio::time::timeout(HANG, s.wait_dek_gate())
        .await
        .expect("and opens again")
        .unwrap();
}
