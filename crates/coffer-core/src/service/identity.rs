//! Identity: accounts, API tokens and authentication.
//!
//! Who may do what here: the instance operator (the token `coffer init` prints) creates, lists
//! and deletes accounts and sets their quotas; in any account it lists, reads and revokes tokens,
//! and in another account it creates only the first token, a super_admin
//! ([`crate::operator_reaches`]). An account's `super_admin` manages its own account's tokens. No
//! token made through the API is an operator.

use coffer_crypto::{PresentedToken, Token, random_id};
use coffer_storage::{AccountRecord, StorageError, TokenRecord};
use coffer_types::{AccountId, Timestamp, TokenId};

use super::audit::{Actor, Details, Event, Target};
use super::{Coffer, Quota};
use crate::{AuditAction, AuditOutcome};
use crate::{
    CoreError, InvalidKind, MAX_SECRETS_QUOTA, Permission, Principal, RequestContext, Resource,
    Role,
};

const INVALID_TOKEN: &str = "invalid API token";

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

/// What an API token is issued as ([`Coffer::issue_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IssueAs {
    Ordinary,
    /// The instance operator's token (made at `coffer init`).
    InstanceOperator,
    /// The first token of an account, made by the instance operator: refused if the account
    /// holds one already, checked in the write (see [`Coffer::create_token`]).
    FirstOfAccount,
}

impl Coffer {
    // ---- instance bootstrap and authentication ----

    /// Creates the first account and an operator token with full rights, as `coffer init` does.
    pub async fn bootstrap(&self, account_name: &str) -> Result<(AccountId, Token), CoreError> {
        let account = AccountId::from_bytes(random_id());
        let mut target = Target::account();
        target.account_name = Some(account_name.to_owned());
        let entry = self.audit_entry(
            account,
            Event {
                action: AuditAction::Create,
                outcome: AuditOutcome::Success,
                target,
                details: Details::default(),
                who: Actor::Instance,
            },
        )?;
        self.storage
            .create_account(
                AccountRecord {
                    id: account,
                    name: account_name.to_owned(),
                    created: Timestamp::now(),
                    secrets_quota: None,
                },
                &[entry],
            )
            .await?;
        let (_, token) = self
            .issue_token(
                None,
                account,
                "init",
                Role::SuperAdmin,
                IssueAs::InstanceOperator,
                None,
            )
            .await?;
        Ok((account, token))
    }

    /// Makes a token; `who` is the creator (`None`: the instance itself, at `coffer init`).
    /// An [`IssueAs::FirstOfAccount`] token in an account that holds one already is
    /// `OperatorFirstTokenOnly`, with nothing written.
    pub(crate) async fn issue_token(
        &self,
        who: Option<&Principal>,
        account: AccountId,
        name: &str,
        role: Role,
        kind: IssueAs,
        expires: Option<Timestamp>,
    ) -> Result<(TokenRecord, Token), CoreError> {
        let id = TokenId::from_bytes(random_id());
        let token = Token::generate(id);
        let hash = self.keys.token_mac().hash_token(&token);
        let record = TokenRecord {
            id,
            account_id: account,
            name: name.to_owned(),
            hash: hash.0,
            role: role.as_str().to_owned(),
            operator: kind == IssueAs::InstanceOperator,
            created: Timestamp::now(),
            expires,
            revoked: None,
            last_used: None,
        };
        let target = Target::token(Some(id), Some(name));
        let details = Details {
            role: Some(role.as_str()),
            ..Details::default()
        };
        let entries = match who {
            Some(who) => self.change_entries(who, account, AuditAction::Create, target, details)?,
            None => vec![self.audit_entry(
                account,
                Event {
                    action: AuditAction::Create,
                    outcome: AuditOutcome::Success,
                    target,
                    details,
                    who: Actor::Instance,
                },
            )?],
        };
        match kind {
            IssueAs::FirstOfAccount => self
                .storage
                .create_first_token(record.clone(), &entries)
                .await
                .map_err(|e| match e {
                    StorageError::Conflict => CoreError::OperatorFirstTokenOnly,
                    e => e.into(),
                })?,
            IssueAs::Ordinary | IssueAs::InstanceOperator => {
                self.storage.create_token(record.clone(), &entries).await?
            }
        }
        Ok((record, token))
    }

    /// Authenticates a bearer token. Every failure is the same to the caller apart from its
    /// message, and no message contains the token. A failure with a token id that exists is
    /// counted for its account's audit log (aggregated in memory, see `failures.rs`), whatever
    /// the caller's address has done before: the server's failed-authentication limit is
    /// applied after a failure, never to a token that verifies.
    pub async fn authenticate(
        &self,
        bearer: &str,
        context: RequestContext,
    ) -> Result<Principal, CoreError> {
        let token =
            PresentedToken::parse(bearer).map_err(|_| CoreError::Unauthenticated(INVALID_TOKEN))?;
        // Said only of a token that is valid: a guess learns nothing from the message.
        match token.kind() {
            coffer_crypto::TokenKind::Api => {}
            coffer_crypto::TokenKind::Service => {
                return Err(if self.is_service_token(&token).await? {
                    CoreError::WrongTokenKind(
                        "a service token can only read its service's bound secrets through /runtime/v1; this API needs an API token",
                    )
                } else {
                    CoreError::Unauthenticated(INVALID_TOKEN)
                });
            }
            coffer_crypto::TokenKind::Node => {
                return Err(if self.is_node_token(&token).await? {
                    CoreError::WrongTokenKind(
                        "a node token can only read the replication feed; this API needs an API token",
                    )
                } else {
                    CoreError::Unauthenticated(INVALID_TOKEN)
                });
            }
        }
        let record = match self.token_cache.get(token.id()) {
            Some(record) => record,
            None => {
                let read_at = std::time::Instant::now();
                let Some(record) = self.storage.get_token(token.id()).await? else {
                    return Err(CoreError::Unauthenticated(INVALID_TOKEN));
                };
                self.token_cache.insert(&record, read_at);
                record
            }
        };
        match self.principal_of(&token, &record, context.clone()) {
            Ok(principal) => {
                self.note_token_use(record.id);
                Ok(principal)
            }
            Err(e) => {
                // The token id exists, so the attempt has an account to be recorded in.
                if let CoreError::Unauthenticated(reason) = &e {
                    self.note_failed_login(record.account_id, record.id, &context, reason);
                }
                Err(e)
            }
        }
    }

    fn principal_of(
        &self,
        token: &PresentedToken<'_>,
        record: &TokenRecord,
        context: RequestContext,
    ) -> Result<Principal, CoreError> {
        // The lookup by id is not secret; the comparison of the keyed hash is constant-time.
        if !self
            .keys
            .token_mac()
            .verify_token(*token, &coffer_crypto::TokenHash(record.hash))
        {
            return Err(CoreError::Unauthenticated(INVALID_TOKEN));
        }
        if record.revoked.is_some() {
            return Err(CoreError::Unauthenticated("API token has been revoked"));
        }
        if record.expires.is_some_and(|at| at <= Timestamp::now()) {
            return Err(CoreError::Unauthenticated("API token has expired"));
        }
        let role = Role::parse(&record.role)
            .ok_or_else(|| CoreError::Internal(format!("token {} has unknown role", record.id)))?;
        Ok(Principal {
            token_id: record.id,
            token_name: record.name.clone(),
            account_id: record.account_id,
            role,
            operator: record.operator,
            context,
        })
    }

    /// The account record, its quota override included.
    pub async fn get_account(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<AccountRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::ViewAccount,
            AuditAction::Read,
            Target::account(),
        )
        .await
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
        self.check_operator(who, Some(account), AuditAction::Update, Target::account())
            .await?;
        if quota.is_some_and(|q| q > MAX_SECRETS_QUOTA) {
            return Err(CoreError::invalid(
                InvalidKind::Field,
                "/secrets_quota",
                format!("must be at most {MAX_SECRETS_QUOTA}"),
            ));
        }
        let entries = self.change_entries(
            who,
            account,
            AuditAction::Update,
            Target::account(),
            Details {
                secrets_quota: Some(quota),
                ..Details::default()
            },
        )?;
        self.storage
            .set_account_quota(account, quota, &entries)
            .await?;
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

    /// Applies an account update (instance operator only): `secrets_quota` `Some(None)`
    /// clears the override, `None` leaves it. Returns the account as it is afterwards.
    pub async fn update_account(
        &self,
        who: &Principal,
        account: AccountId,
        secrets_quota: Option<Option<u64>>,
    ) -> Result<AccountRecord, CoreError> {
        self.check_operator(who, Some(account), AuditAction::Update, Target::account())
            .await?;
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
        let mut target = Target::account();
        target.account_name = Some(name.to_owned());
        self.check_operator(who, None, AuditAction::Create, target.clone())
            .await?;
        check_label(name, "/name")?;
        let record = AccountRecord {
            id: AccountId::from_bytes(random_id()),
            name: name.to_owned(),
            created: Timestamp::now(),
            secrets_quota: None,
        };
        // The new account's log starts with its creation; the operator's log says so too.
        let entries = self.change_entries(
            who,
            record.id,
            AuditAction::Create,
            target,
            Details::default(),
        )?;
        self.storage
            .create_account(record.clone(), &entries)
            .await?;
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
        self.check_operator(who, Some(account), AuditAction::Delete, Target::account())
            .await?;
        if account == who.account_id {
            return Err(CoreError::OperatorProtected(
                "the account holding the operator token cannot be deleted",
            ));
        }
        // Barred before the write (see token_cache.rs), if it exists: made-up ids add no bar.
        if self.storage.get_account(account).await?.is_some() {
            self.token_cache.bar_account(account);
        }
        // Recorded in the deleted account's own log, which outlives it, and in the operator's.
        let entries = self.change_entries(
            who,
            account,
            AuditAction::Delete,
            Target::account(),
            Details::default(),
        )?;
        let _changes = self.account_kek_changes.lock().await;
        self.storage.delete_account(account, &entries).await?;
        // Only once the account's rows (its DEKs among them) are gone is its own KEK destroyed.
        self.shred_account_kek(account).await;
        Ok(())
    }

    // ---- tokens ----

    /// Creates an API token in `account`. The value is returned here and never again.
    ///
    /// In another account the instance operator creates only the first token, a super_admin
    /// (how a new account gets its administrator): once an account has a token, its own
    /// super_admins make the others, so the operator cannot give itself a way into an account
    /// that is in use (see [`crate::operator_reaches`]).
    pub async fn create_token(
        &self,
        who: &Principal,
        account: AccountId,
        new: NewToken,
    ) -> Result<(TokenRecord, Token), CoreError> {
        self.require_account(
            who,
            account,
            Permission::ManageAccount,
            AuditAction::Create,
            Target::token(None, Some(&new.name)),
        )
        .await?;
        let first_only = who.operator && account != who.account_id;
        let refuse = || {
            self.deny(
                who,
                account,
                AuditAction::Create,
                Target::token(None, Some(&new.name)),
                CoreError::OperatorFirstTokenOnly,
            )
        };
        if first_only
            && (new.role != Role::SuperAdmin
                || !self.storage.list_tokens(account).await?.is_empty())
        {
            return Err(refuse().await);
        }
        check_label(&new.name, "/name")?;
        if new.expires.is_some_and(|at| at <= Timestamp::now()) {
            return Err(CoreError::invalid(
                InvalidKind::Expiry,
                "/expires_on",
                "must be in the future",
            ));
        }
        let kind = if first_only {
            IssueAs::FirstOfAccount
        } else {
            IssueAs::Ordinary
        };
        // The look above answers the common case; the write checks again in its own
        // transaction, for two of the operator's requests racing on one account.
        match self
            .issue_token(Some(who), account, &new.name, new.role, kind, new.expires)
            .await
        {
            Err(CoreError::OperatorFirstTokenOnly) => Err(refuse().await),
            issued => issued,
        }
    }

    pub async fn list_tokens(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<Vec<TokenRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::ManageAccount,
            AuditAction::List,
            Target::token(None, None),
        )
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
        self.require_account(
            who,
            account,
            Permission::ManageAccount,
            AuditAction::Read,
            Target::token(Some(id), None),
        )
        .await?;
        match self.storage.get_token(id).await? {
            Some(mut t) if t.account_id == account => {
                self.merge_usage(&mut t);
                Ok(t)
            }
            _ => Err(CoreError::NotFound(Resource::Token)),
        }
    }

    /// Revokes a token; it stops working on the very next request (the token is barred from
    /// the token cache before the revocation is written; see token_cache.rs).
    pub async fn revoke_token(
        &self,
        who: &Principal,
        account: AccountId,
        id: TokenId,
    ) -> Result<TokenRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::ManageAccount,
            AuditAction::Revoke,
            Target::token(Some(id), None),
        )
        .await?;
        // The operator token is the only one that can make accounts and operator-level
        // changes; revoking it through the API would lock the instance out.
        let existing = self
            .storage
            .get_token(id)
            .await?
            .filter(|t| t.account_id == account);
        if let Some(target) = &existing
            && target.operator
        {
            self.check_operator(
                who,
                None,
                AuditAction::Revoke,
                Target::token(Some(id), Some(&target.name)),
            )
            .await?;
            return Err(CoreError::OperatorProtected(
                "the operator token cannot be revoked through the API",
            ));
        }
        // Barred before the write (see token_cache.rs): from here on the token is read from
        // storage on every use, so the revocation acts on the very next request even if this
        // request is cancelled after the write commits. Only a token that exists in this
        // account is barred (ids are random, so one that does not exist never will): asking to
        // revoke made-up ids cannot grow the set of bars.
        if existing.is_some() {
            self.token_cache.bar_token(id);
        }
        let name = existing.as_ref().map(|t| t.name.as_str());
        let entries = self.change_entries(
            who,
            account,
            AuditAction::Revoke,
            Target::token(Some(id), name),
            Details::default(),
        )?;
        let mut t = self
            .storage
            .revoke_token(account, id, Timestamp::now(), &entries)
            .await?;
        self.merge_usage(&mut t);
        Ok(t)
    }

    /// The caller's own token and the account it belongs to (`/user/tokens/verify` and
    /// `/memberships`). Any valid API token may read these, whatever its role: they describe
    /// the token itself, and are not audited (like every successful read). The operator's
    /// account is its own, first one, although it acts on every account.
    pub async fn whoami(&self, who: &Principal) -> Result<(TokenRecord, AccountRecord), CoreError> {
        let mut token = self
            .storage
            .get_token(who.token_id)
            .await?
            .ok_or(CoreError::Unauthenticated(INVALID_TOKEN))?;
        self.merge_usage(&mut token);
        let account = self
            .storage
            .get_account(who.account_id)
            .await?
            .ok_or(CoreError::NotFound(Resource::Account))?;
        Ok((token, account))
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
