//! Identity: accounts, API tokens and authentication.
//!
//! Who may do what here: the instance operator (the token `coffer init` prints) creates, lists
//! and deletes accounts, sets their quotas, and manages tokens in any account; an account's
//! `super_admin` manages its own account's tokens. No token made through the API is an operator.

use coffer_crypto::{ApiToken, random_id};
use coffer_storage::{AccountRecord, TokenRecord};
use coffer_types::{AccountId, Timestamp, TokenId};

use super::{Coffer, Quota};
use crate::{CoreError, InvalidKind, MAX_SECRETS_QUOTA, Permission, Principal, Resource, Role};

/// Token rows kept in memory at most (see `cached_token`).
const TOKEN_CACHE_CAPACITY: usize = 100_000;

/// The longest account or token name, in bytes.
pub const MAX_LABEL_BYTES: usize = 255;

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub expires: Option<Timestamp>,
}

/// Checks an account or token name: 1 to 255 bytes, no control characters.
pub fn check_label(s: &str, field: &str) -> Result<(), CoreError> {
    if s.trim().is_empty() {
        return Err(CoreError::invalid(
            InvalidKind::Name,
            field,
            "must not be empty",
        ));
    }
    if s.len() > MAX_LABEL_BYTES {
        return Err(CoreError::invalid(
            InvalidKind::Name,
            field,
            format!("must be at most {MAX_LABEL_BYTES} bytes (got {})", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            InvalidKind::Name,
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl Coffer {
    // ---- instance bootstrap and authentication ----

    /// Creates the first account and an operator token with full rights, as `coffer init` does.
    pub async fn bootstrap(&self, account_name: &str) -> Result<(AccountId, ApiToken), CoreError> {
        let account = AccountId::from_bytes(random_id());
        self.storage
            .create_account(AccountRecord {
                id: account,
                name: account_name.to_owned(),
                created: Timestamp::now(),
                secrets_quota: None,
            })
            .await?;
        let (_, token) = self
            .issue_token(account, "init", Role::SuperAdmin, true, None)
            .await?;
        Ok((account, token))
    }

    pub(crate) async fn issue_token(
        &self,
        account: AccountId,
        name: &str,
        role: Role,
        operator: bool,
        expires: Option<Timestamp>,
    ) -> Result<(TokenRecord, ApiToken), CoreError> {
        let id = TokenId::from_bytes(random_id());
        let token = ApiToken::generate(id);
        let hash = self.keys.mac().hash_token(&token);
        let record = TokenRecord {
            id,
            account_id: account,
            name: name.to_owned(),
            hash: hash.0,
            role: role.as_str().to_owned(),
            operator,
            created: Timestamp::now(),
            expires,
            revoked: None,
            last_used: None,
        };
        self.storage.create_token(record.clone()).await?;
        Ok((record, token))
    }

    /// Authenticates a bearer token. Every failure is the same to the caller apart from its
    /// message, and no message contains the token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, CoreError> {
        const INVALID: &str = "invalid API token";
        let token = ApiToken::parse(bearer).map_err(|_| CoreError::Unauthenticated(INVALID))?;
        let record = match self.cached_token(token.id()) {
            Some(record) => record,
            None => {
                // Taken before the read: an entry read before a revocation must not be
                // cached after the revocation dropped it.
                let epoch = self.token_epoch.load(std::sync::atomic::Ordering::Acquire);
                let Some(record) = self.storage.get_token(token.id()).await? else {
                    return Err(CoreError::Unauthenticated(INVALID));
                };
                self.cache_token(&record, epoch);
                record
            }
        };
        // The lookup by id is not secret; the comparison of the keyed hash is constant-time.
        if !self
            .keys
            .mac()
            .verify_token(&token, &coffer_crypto::TokenHash(record.hash))
        {
            return Err(CoreError::Unauthenticated(INVALID));
        }
        if record.revoked.is_some() {
            return Err(CoreError::Unauthenticated("API token has been revoked"));
        }
        if record.expires.is_some_and(|at| at <= Timestamp::now()) {
            return Err(CoreError::Unauthenticated("API token has expired"));
        }
        let role = Role::parse(&record.role)
            .ok_or_else(|| CoreError::Internal(format!("token {} has unknown role", record.id)))?;
        self.note_token_use(record.id);
        Ok(Principal {
            token_id: record.id,
            token_name: record.name,
            account_id: record.account_id,
            role,
            operator: record.operator,
        })
    }

    /// The account record, its quota override included.
    pub async fn get_account(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<AccountRecord, CoreError> {
        self.require_account(who, account, Permission::Read).await
    }

    /// Sets the account's own secrets quota, or with `None` returns it to the server default;
    /// returns the quota now in force. Only an operator token with the `ManageAccount`
    /// permission may: a quota is the instance's limit on the account, not the account's own
    /// setting. Other tokens of the account get `Forbidden`, tokens of other accounts
    /// `NotFound(Account)` as everywhere.
    pub async fn set_account_quota(
        &self,
        who: &Principal,
        account: AccountId,
        quota: Option<u64>,
    ) -> Result<Quota, CoreError> {
        Self::require_operator_on(who, account)?;
        if quota.is_some_and(|q| q > MAX_SECRETS_QUOTA) {
            return Err(CoreError::invalid(
                InvalidKind::Field,
                "/secrets_quota",
                format!("must be at most {MAX_SECRETS_QUOTA}"),
            ));
        }
        self.storage.set_account_quota(account, quota).await?;
        let account_rec = self
            .storage
            .get_account(account)
            .await?
            .ok_or(CoreError::NotFound(Resource::Account))?;
        let usage = self.storage.secret_count(account).await?;
        Ok(Quota {
            quota: self.quota_of(&account_rec),
            usage,
        })
    }

    // ---- accounts ----

    fn require_operator(who: &Principal) -> Result<(), CoreError> {
        // The flag makes the operator; the role check keeps a (hypothetical) operator token
        // with a lesser role from doing more than its role allows.
        if who.operator && who.role.allows(Permission::ManageAccount) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(Permission::Operator))
        }
    }

    /// An operator-only action on `account`: another account stays invisible (404, as
    /// everywhere), the caller's own account answers 403 naming the operator permission.
    fn require_operator_on(who: &Principal, account: AccountId) -> Result<(), CoreError> {
        if !who.operator && who.account_id != account {
            return Err(CoreError::NotFound(Resource::Account));
        }
        Self::require_operator(who)
    }

    /// Applies an account update (instance operator only): `secrets_quota` `Some(None)`
    /// clears the override, `None` leaves it. Returns the account as it is afterwards.
    pub async fn update_account(
        &self,
        who: &Principal,
        account: AccountId,
        secrets_quota: Option<Option<u64>>,
    ) -> Result<AccountRecord, CoreError> {
        Self::require_operator_on(who, account)?;
        if let Some(quota) = secrets_quota {
            self.set_account_quota(who, account, quota).await?;
        }
        self.get_account(who, account).await
    }

    /// Creates an account (instance operator only). Give it a first `super_admin` with
    /// [`Coffer::create_token`].
    pub async fn create_account(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<AccountRecord, CoreError> {
        Self::require_operator(who)?;
        check_label(name, "/name")?;
        let record = AccountRecord {
            id: AccountId::from_bytes(random_id()),
            name: name.to_owned(),
            created: Timestamp::now(),
            secrets_quota: None,
        };
        self.storage.create_account(record.clone()).await?;
        Ok(record)
    }

    /// Every account for the operator; a member's own account for anyone else.
    pub async fn list_accounts(&self, who: &Principal) -> Result<Vec<AccountRecord>, CoreError> {
        if who.operator {
            return Ok(self.storage.list_accounts().await?);
        }
        Ok(self
            .storage
            .get_account(who.account_id)
            .await?
            .into_iter()
            .collect())
    }

    /// Deletes an account with its stores, secrets, keys and tokens (instance operator only).
    /// The operator's own account cannot be deleted: that would lock the instance out.
    pub async fn delete_account(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<(), CoreError> {
        Self::require_operator_on(who, account)?;
        if account == who.account_id {
            return Err(CoreError::invalid(
                InvalidKind::Id,
                "account_id",
                "the account holding the operator token cannot be deleted",
            ));
        }
        self.storage.delete_account(account).await?;
        self.forget_tokens(|t| t.account_id != account);
        Ok(())
    }

    // ---- tokens ----

    /// Creates an API token in `account`. The value is returned here and never again.
    pub async fn create_token(
        &self,
        who: &Principal,
        account: AccountId,
        new: NewToken,
    ) -> Result<(TokenRecord, ApiToken), CoreError> {
        self.require_account(who, account, Permission::ManageAccount)
            .await?;
        check_label(&new.name, "/name")?;
        if new.expires.is_some_and(|at| at <= Timestamp::now()) {
            return Err(CoreError::invalid(
                InvalidKind::Expiry,
                "/expires_on",
                "must be in the future",
            ));
        }
        self.issue_token(account, &new.name, new.role, false, new.expires)
            .await
    }

    pub async fn list_tokens(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<Vec<TokenRecord>, CoreError> {
        self.require_account(who, account, Permission::ManageAccount)
            .await?;
        let mut tokens = self.storage.list_tokens(account).await?;
        for t in &mut tokens {
            self.merge_usage(t);
        }
        Ok(tokens)
    }

    pub async fn get_token(
        &self,
        who: &Principal,
        account: AccountId,
        id: TokenId,
    ) -> Result<TokenRecord, CoreError> {
        self.require_account(who, account, Permission::ManageAccount)
            .await?;
        match self.storage.get_token(id).await? {
            Some(mut t) if t.account_id == account => {
                self.merge_usage(&mut t);
                Ok(t)
            }
            _ => Err(CoreError::NotFound(Resource::Token)),
        }
    }

    /// Revokes a token; it stops working on the very next request (authentication reads the
    /// token's row every time).
    pub async fn revoke_token(
        &self,
        who: &Principal,
        account: AccountId,
        id: TokenId,
    ) -> Result<TokenRecord, CoreError> {
        self.require_account(who, account, Permission::ManageAccount)
            .await?;
        // The operator token is the only one that can make accounts and operator-level
        // changes; revoking it through the API would lock the instance out.
        if let Some(target) = self.storage.get_token(id).await?
            && target.account_id == account
            && target.operator
        {
            Self::require_operator(who)?;
            return Err(CoreError::invalid(
                InvalidKind::Id,
                "token_id",
                "the operator token cannot be revoked through the API",
            ));
        }
        let mut t = self
            .storage
            .revoke_token(account, id, Timestamp::now())
            .await?;
        self.forget_tokens(|t| t.id != id);
        self.merge_usage(&mut t);
        Ok(t)
    }

    // ---- the token cache ----
    //
    // Reading the token's row costs a storage round trip (tens of µs) on every request; the
    // cache keeps verified-or-not token rows by id so authentication is one HMAC. Rows change
    // only through this process (one process per data dir): `revoke_token` and
    // `delete_account` drop the affected entries before they return, so revocation still takes
    // effect on the very next request. Expiry is checked on every request against the clock.
    // A shared database with several instances (PostgreSQL) will need invalidation from the
    // change feed before it may use this cache.

    pub(super) fn cached_token(&self, id: TokenId) -> Option<TokenRecord> {
        let cache = self.token_cache.read().unwrap_or_else(|p| p.into_inner());
        cache.get(&id).cloned()
    }

    pub(super) fn cache_token(&self, record: &TokenRecord, epoch: u64) {
        let mut cache = self.token_cache.write().unwrap_or_else(|p| p.into_inner());
        // Under the write lock, so no `forget_tokens` can run between this check and the insert.
        if self.token_epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
            return;
        }
        if cache.len() >= TOKEN_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(record.id, record.clone());
    }

    pub(super) fn forget_tokens(&self, keep: impl Fn(&TokenRecord) -> bool) {
        let mut cache = self.token_cache.write().unwrap_or_else(|p| p.into_inner());
        self.token_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.retain(|_, t| keep(t));
    }

    // ---- last-used times ----

    /// Remembers that a token was used now. Writing on every request would put an fsync on
    /// every read, so uses are kept in memory and written by [`Coffer::flush_token_usage`].
    fn note_token_use(&self, id: TokenId) {
        let mut usage = self.token_usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.insert(id, Timestamp::now());
    }

    fn merge_usage(&self, t: &mut TokenRecord) {
        let usage = self.token_usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = usage.get(&t.id) {
            t.last_used = t.last_used.max(Some(*at));
        }
    }

    /// Writes the last-used times noted since the last flush. The server calls this every few
    /// seconds and at shutdown; a crash loses at most that interval of last-used updates.
    pub async fn flush_token_usage(&self) -> Result<(), CoreError> {
        let batch: Vec<(TokenId, Timestamp)> = {
            let usage = self.token_usage.lock().unwrap_or_else(|p| p.into_inner());
            usage.iter().map(|(k, v)| (*k, *v)).collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.storage.touch_tokens(batch.clone()).await?;
        // Forget only what was written and not used again meanwhile.
        let mut usage = self.token_usage.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in batch {
            if usage.get(&id) == Some(&at) {
                usage.remove(&id);
            }
        }
        Ok(())
    }
}
