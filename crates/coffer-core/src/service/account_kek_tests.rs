//! `set_account_kek` puts the new KEK in use only together with the account's replication key.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coffer_crypto::{FileKek, KekProvider};
use coffer_storage::{SqliteStorage, Storage};
use coffer_types::AccountId;

use crate::test_keks::FlakyKek;
use crate::{
    AccountKekInfo, AccountKekSpec, AccountKekStore, Coffer, CoreError, DekPolicy, Limits,
    LoadedAccountKek, RequestContext, RewrapSettings,
};

/// Makes one key per call (failing ones while `failing` is set), counts destructions.
#[derive(Debug)]
struct Store {
    dir: std::path::PathBuf,
    failing: AtomicBool,
    made: Mutex<Vec<Arc<FlakyKek>>>,
    destroyed: AtomicUsize,
}

impl AccountKekStore for Store {
    fn load(&self) -> Vec<LoadedAccountKek> {
        Vec::new()
    }

    fn create(
        &self,
        _account: AccountId,
        _spec: &AccountKekSpec,
    ) -> Result<(AccountKekInfo, Arc<dyn KekProvider>), CoreError> {
        let mut made = self.made.lock().unwrap();
        let path = self.dir.join(format!("account-{}.key", made.len()));
        let kek = Arc::new(FlakyKek {
            inner: FileKek::create(&path).unwrap(),
            failing: AtomicBool::new(self.failing.load(Ordering::SeqCst)),
            unwraps_while_failing: true,
        });
        made.push(kek.clone());
        let info = AccountKekInfo {
            kek_id: kek.current_kek_id(),
            provider: "file".into(),
            location: path.display().to_string(),
        };
        Ok((info, kek))
    }

    fn destroy(&self, _account: AccountId) -> Result<(), CoreError> {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_account_kek_is_used_only_with_its_replication_key() {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(
        storage.clone(),
        kek,
        Limits::default(),
        DekPolicy::default(),
    )
    .await
    .unwrap();
    let (_, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), RequestContext::default())
        .await
        .unwrap();
    let account = coffer.create_account(&op, "tenant").await.unwrap().id;
    let store = Arc::new(Store {
        dir: dir.path().to_owned(),
        failing: AtomicBool::new(true),
        made: Mutex::new(Vec::new()),
        destroyed: AtomicUsize::new(0),
    });
    coffer
        .install_account_keks(store.clone(), RewrapSettings::default())
        .await
        .unwrap();

    // The replication key cannot be made (the new KEK refuses to wrap it): the KEK is never
    // put in use, and it is destroyed.
    assert!(
        coffer
            .set_account_kek(&op, account, AccountKekSpec::NewFile)
            .await
            .is_err()
    );
    let status = coffer.account_kek_status(&op, account).await.unwrap();
    assert_eq!(status.own, None, "the account keeps the instance KEK");
    assert_eq!(store.destroyed.load(Ordering::SeqCst), 1);
    assert!(
        storage
            .account_replication_key_versions(account)
            .await
            .unwrap()
            .is_empty()
    );

    // With a KEK that works, both are in place when the call returns.
    store.failing.store(false, Ordering::SeqCst);
    let report = coffer
        .set_account_kek(&op, account, AccountKekSpec::NewFile)
        .await
        .unwrap();
    assert!(report.own.is_some());
    assert_eq!(
        storage
            .account_replication_key_versions(account)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.destroyed.load(Ordering::SeqCst), 1);
}
