//! The audit log: what core records for every change and every denied attempt, and the
//! verification of the per-account hash chains and their signed checkpoints.
//!
//! Entries of a change are handed to storage with the change itself and written in the same
//! transaction: if the entry cannot be written, the change is refused (fail closed). Denials are
//! written on their own before the error is returned. No entry ever holds a secret value or a
//! token: the payload is built here from ids, names and flags only.
//!
//! Tamper evidence: storage chains each account's entries by SHA-256; core periodically signs the
//! head of each chain with the audit MAC key (wrapped by the KEK, never in the database in clear).
//! Editing, deleting or reordering rows breaks the chain; rewriting the whole chain consistently
//! breaks the signed checkpoints. Deleting the newest entries after the last checkpoint is only
//! visible against a head recorded elsewhere: `verify` reports the head so operators can.

use coffer_storage::{AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord, Page, ServiceRecord};
use coffer_types::{AccountId, SecretId, ServiceId, StoreId, Timestamp, TokenId};
use serde::Serialize;

use super::Coffer;
use crate::{
    AuditAction, AuditOutcome, CoreError, Permission, Principal, RequestContext, Resource,
    TargetKind,
};

/// What an entry is about: the ids and names core knows at the time.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: TargetKind,
    /// The account acted on, in the entry the instance operator's own log keeps of an act on
    /// another account (the acted-on account's log has its own entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<SecretId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<ServiceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The binding name, for `bind`, `unbind` and `access` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

impl Target {
    /// A target of `kind` naming nothing yet.
    pub fn of(kind: TargetKind) -> Target {
        Target {
            kind,
            account_id: None,
            account_name: None,
            store_id: None,
            store_name: None,
            secret_id: None,
            secret_name: None,
            token_id: None,
            token_name: None,
            service_id: None,
            service_name: None,
            binding: None,
            node_id: None,
            node_name: None,
        }
    }

    pub fn account() -> Target {
        Target::of(TargetKind::Account)
    }

    pub fn store(id: Option<StoreId>, name: Option<&str>) -> Target {
        Target {
            store_id: id,
            store_name: name.map(str::to_owned),
            ..Target::of(TargetKind::Store)
        }
    }

    pub fn secret(store: StoreId, id: Option<SecretId>, name: Option<&str>) -> Target {
        Target {
            store_id: Some(store),
            secret_id: id,
            secret_name: name.map(str::to_owned),
            ..Target::of(TargetKind::Secret)
        }
    }

    pub fn service(id: Option<ServiceId>, name: Option<&str>) -> Target {
        Target {
            service_id: id,
            service_name: name.map(str::to_owned),
            ..Target::of(TargetKind::Service)
        }
    }

    pub fn service_token(
        service: ServiceId,
        service_name: Option<&str>,
        id: Option<TokenId>,
    ) -> Target {
        Target {
            token_id: id,
            service_id: Some(service),
            service_name: service_name.map(str::to_owned),
            ..Target::of(TargetKind::ServiceToken)
        }
    }

    /// A secret as seen through a service's binding.
    pub fn bound_secret(
        service: &ServiceRecord,
        binding: &str,
        store: StoreId,
        secret: Option<SecretId>,
        secret_name: &str,
    ) -> Target {
        Target {
            store_id: Some(store),
            secret_id: secret,
            secret_name: Some(secret_name.to_owned()),
            service_id: Some(service.id),
            service_name: Some(service.name.as_str().to_owned()),
            binding: Some(binding.to_owned()),
            ..Target::of(TargetKind::Secret)
        }
    }

    /// A whole store as bound to a service under `binding`.
    pub fn bound_store(service: &ServiceRecord, binding: &str, store: StoreId) -> Target {
        Target {
            store_id: Some(store),
            service_id: Some(service.id),
            service_name: Some(service.name.as_str().to_owned()),
            binding: Some(binding.to_owned()),
            ..Target::of(TargetKind::Store)
        }
    }

    /// An edge node (instance-level: recorded in the operator's account).
    pub fn node(id: Option<TokenId>, name: Option<&str>) -> Target {
        Target {
            node_id: id,
            node_name: name.map(str::to_owned),
            ..Target::of(TargetKind::Node)
        }
    }

    /// The instance's key-encryption key (recorded in the operator's account).
    pub fn kek() -> Target {
        Target::of(TargetKind::Kek)
    }

    pub fn token(id: Option<TokenId>, name: Option<&str>) -> Target {
        Target {
            token_id: id,
            token_name: name.map(str::to_owned),
            ..Target::of(TargetKind::Token)
        }
    }
}

/// Facts particular to some actions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_modified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicated_from_id: Option<SecretId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_quota: Option<Option<u64>>,
    /// Why a denial or failed login happened (a permission name or a fixed phrase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service's type, on `bind` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<&'static str>,
    /// How many runtime reads an `access` entry stands for, and when the first and last were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_read: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_read: Option<String>,
    /// The edge node that served the reads of an `access` entry (absent: the control plane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_node_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_node: Option<String>,
    /// The relay that forwarded an edge's `access` entry, when it did not deliver it itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_relay_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_relay: Option<String>,
    /// How many failed authentications a `login` entry stands for, and when the first and last
    /// were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    /// The KEK version a `kek_rotate` entry made active, or a `kek_retire` entry retired, and
    /// its public id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kek_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kek_id: Option<String>,
    /// The replication-key version a `rotate_replication_key` entry is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_key_version: Option<u32>,
    /// The fingerprint of a public key a `register_key` entry recorded
    /// (`NodePublicKey::fingerprint`), never the key itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The operator tokens a `rotate` of the operator token revoked (ids only, never values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_token_ids: Option<Vec<TokenId>>,
}

/// Who acted, as an entry's payload records it (ids and names only).
#[derive(Serialize)]
struct ActorRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_name: Option<&'a str>,
    operator: bool,
}

#[derive(Serialize)]
struct Payload<'a> {
    time: String,
    account_id: AccountId,
    actor: ActorRecord<'a>,
    action: &'a str,
    outcome: &'a str,
    resource: &'a Target,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(flatten)]
    details: &'a Details,
}

/// The result of verifying one account's audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The last entry's sequence number and hash, for recording outside the instance.
    pub head: Option<(u64, [u8; 32])>,
    /// The first problem found, if any: the entry's sequence number and what is wrong.
    pub first_bad: Option<(u64, String)>,
}

/// What an actor did, when, with what outcome.
pub(crate) struct Event<'a> {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub target: Target,
    pub details: Details,
    pub who: Actor<'a>,
}

/// The actor of an event: an authenticated principal, or (for failed logins) a token id that
/// may not be genuine.
pub(crate) enum Actor<'a> {
    Principal(&'a Principal),
    Token {
        id: TokenId,
        context: &'a RequestContext,
    },
    /// The instance itself (`coffer init` creating the first account and operator token).
    Instance,
    /// A background job of the instance (named), e.g. the KEK rotation retiring a version.
    Job(&'static str),
    /// A bound service reading at runtime, through one of its tokens. Its reads are
    /// aggregated, so no single request id or address is recorded.
    Service {
        token_id: TokenId,
    },
    /// An edge node, through its node token.
    Node {
        id: TokenId,
        name: &'a str,
    },
    /// Someone unidentified (guessing tokens).
    Anonymous {
        context: &'a RequestContext,
    },
}

static NO_CONTEXT: RequestContext = RequestContext {
    request_id: String::new(),
    client: None,
};

/// Entries read from storage per round trip when verifying.
const VERIFY_BATCH: usize = 1000;

/// The message a checkpoint's MAC covers.
pub(crate) fn checkpoint_message(account: AccountId, seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(19 + 16 + 8 + 32);
    m.extend_from_slice(b"coffer/audit-cp/v1");
    m.push(0);
    m.extend_from_slice(account.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Builds the entry for `event` in `account`'s chain.
pub(crate) fn build_entry(account: AccountId, event: Event<'_>) -> Result<AuditEntry, CoreError> {
    let at = Timestamp::now();
    let (actor, context) = match event.who {
        Actor::Principal(p) => (
            ActorRecord {
                token_id: Some(p.token_id),
                token_name: Some(&p.token_name),
                operator: p.operator,
            },
            &p.context,
        ),
        Actor::Token { id, context } => (
            ActorRecord {
                token_id: Some(id),
                token_name: None,
                operator: false,
            },
            context,
        ),
        Actor::Anonymous { context } => (
            ActorRecord {
                token_id: None,
                token_name: None,
                operator: false,
            },
            context,
        ),
        Actor::Service { token_id } => (
            ActorRecord {
                token_id: Some(token_id),
                token_name: None,
                operator: false,
            },
            &NO_CONTEXT,
        ),
        Actor::Node { id, name } => (
            ActorRecord {
                token_id: Some(id),
                token_name: Some(name),
                operator: false,
            },
            &NO_CONTEXT,
        ),
        Actor::Instance => (
            ActorRecord {
                token_id: None,
                token_name: Some("coffer init"),
                operator: true,
            },
            &NO_CONTEXT,
        ),
        Actor::Job(name) => (
            ActorRecord {
                token_id: None,
                token_name: Some(name),
                operator: true,
            },
            &NO_CONTEXT,
        ),
    };
    let actor_token = actor.token_id;
    let payload = Payload {
        time: at.to_rfc3339(),
        account_id: account,
        actor,
        action: event.action.as_str(),
        outcome: event.outcome.as_str(),
        resource: &event.target,
        request_id: &context.request_id,
        client: context.client.as_deref(),
        details: &event.details,
    };
    let payload = serde_json::to_vec(&payload)
        .map_err(|e| CoreError::Internal(format!("audit payload: {e}")))?;
    Ok(AuditEntry {
        account_id: account,
        at,
        action: event.action.as_str().to_owned(),
        outcome: event.outcome.as_str().to_owned(),
        actor_token,
        store_id: event.target.store_id,
        secret_id: event.target.secret_id,
        payload,
    })
}

impl Coffer {
    /// Builds the entry for `event` in `account`'s chain.
    pub(crate) fn audit_entry(
        &self,
        account: AccountId,
        event: Event<'_>,
    ) -> Result<AuditEntry, CoreError> {
        build_entry(account, event)
    }

    /// A change's entry, attributed to `who`.
    pub(crate) fn change_entry(
        &self,
        who: &Principal,
        account: AccountId,
        action: AuditAction,
        target: Target,
        details: Details,
    ) -> Result<AuditEntry, CoreError> {
        self.audit_entry(
            account,
            Event {
                action,
                outcome: AuditOutcome::Success,
                target,
                details,
                who: Actor::Principal(who),
            },
        )
    }

    /// The entries of a change made by `who` in `account`: one in `account`'s log and, when the
    /// instance operator acts on another account, one in the operator's own log naming the
    /// account acted on. So an account's log shows everything done to it, and the operator's
    /// log everything the operator did elsewhere.
    pub(crate) fn change_entries(
        &self,
        who: &Principal,
        account: AccountId,
        action: AuditAction,
        target: Target,
        details: Details,
    ) -> Result<Vec<AuditEntry>, CoreError> {
        let mut entries =
            vec![self.change_entry(who, account, action, target.clone(), details.clone())?];
        if who.operator && who.account_id != account {
            let target = Target {
                account_id: Some(account),
                ..target
            };
            entries.push(self.change_entry(who, who.account_id, action, target, details)?);
        }
        Ok(entries)
    }

    /// Records a denied attempt and returns the denial. A caller probing another account is
    /// recorded in its own account's log, so the target account learns nothing and the probe
    /// is still visible to the prober's administrators.
    pub(crate) async fn deny(
        &self,
        who: &Principal,
        account: AccountId,
        action: AuditAction,
        target: Target,
        error: CoreError,
    ) -> CoreError {
        let reason = match &error {
            CoreError::Forbidden(p) => format!("missing permission {p}"),
            CoreError::OutsideOperatorReach(p) => {
                format!("{p} in another account is outside the operator's reach")
            }
            CoreError::OperatorFirstTokenOnly => {
                "the operator creates only an account's first token, a super_admin".to_owned()
            }
            CoreError::NotFound(Resource::Account) => {
                "account not visible to this token".to_owned()
            }
            other => other.to_string(),
        };
        let chain = if who.operator || who.account_id == account {
            account
        } else {
            who.account_id
        };
        let details = Details {
            reason: Some(reason),
            ..Details::default()
        };
        let event = Event {
            action,
            outcome: AuditOutcome::Denied,
            target,
            details,
            who: Actor::Principal(who),
        };
        match self.audit_entry(chain, event) {
            Ok(entry) => {
                if let Err(e) = self.storage.append_audit(&[entry]).await {
                    // The request is refused either way; say loudly that its record is missing.
                    tracing::error!(error = %e, "could not record a denied attempt in the audit log");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not build an audit entry"),
        }
        error
    }

    /// Checks `need` on `account` for `who`, recording a denial under `action` if refused.
    pub(crate) async fn check(
        &self,
        who: &Principal,
        account: AccountId,
        need: Permission,
        action: AuditAction,
        target: impl FnOnce() -> Target,
    ) -> Result<(), CoreError> {
        match who.require(account, need) {
            Ok(()) => Ok(()),
            // Out of the operator's reach in another account, but an account that does not
            // exist is still a plain 404 for it, as for everything else it does.
            Err(CoreError::OutsideOperatorReach(_))
                if self.storage.get_account(account).await?.is_none() =>
            {
                Err(CoreError::NotFound(Resource::Account))
            }
            Err(e) => Err(self.deny(who, account, action, target(), e).await),
        }
    }

    /// Checks an operator-only action, recording a denial if refused. `account` is the account
    /// acted on, if any (another account's stays invisible to non-operators: 404).
    pub(crate) async fn check_operator(
        &self,
        who: &Principal,
        account: Option<AccountId>,
        action: AuditAction,
        target: Target,
    ) -> Result<(), CoreError> {
        let result = match account {
            Some(a) => who.require_operator_on(a),
            None => who.require_operator(),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .deny(who, account.unwrap_or(who.account_id), action, target, e)
                .await),
        }
    }

    /// The account holding the operator token (found once, then remembered).
    pub(crate) async fn operator_account(&self) -> Result<Option<AccountId>, CoreError> {
        if let Some(account) = self.operator_account.get() {
            return Ok(Some(*account));
        }
        let found = crate::rotation::find_operator_account(&*self.storage).await?;
        if let Some(account) = found {
            let _ = self.operator_account.set(account);
        }
        Ok(found)
    }

    /// The account's audit log (super_admin of the account, or the operator). Reading it is not
    /// itself audited.
    pub async fn list_audit(
        &self,
        who: &Principal,
        account: AccountId,
        query: &AuditQuery,
    ) -> Result<Page<AuditRecord>, CoreError> {
        self.check(
            who,
            account,
            Permission::ManageAccount,
            AuditAction::ReadAudit,
            Target::account,
        )
        .await?;
        self.require_audited_account(account).await?;
        Ok(self.storage.list_audit(account, query).await?)
    }

    /// Signs the head of every audit chain that moved since its last checkpoint. The server
    /// calls this periodically and at shutdown.
    pub async fn checkpoint_audit(&self) -> Result<u64, CoreError> {
        let mut written = 0;
        for account in self.storage.audit_accounts().await? {
            let Some((seq, hash)) = self.storage.audit_head(account).await? else {
                continue;
            };
            let last = self
                .storage
                .last_audit_checkpoint(account)
                .await?
                .map(|c| c.seq);
            if last == Some(seq) {
                continue;
            }
            let mac = self
                .keys
                .audit_mac()
                .sign(&checkpoint_message(account, seq, &hash))
                .to_vec();
            self.storage
                .put_audit_checkpoint(AuditCheckpoint {
                    account_id: account,
                    seq,
                    hash,
                    mac,
                    at: Timestamp::now(),
                })
                .await?;
            written += 1;
        }
        Ok(written)
    }

    /// Verifies an account's whole audit chain and its checkpoints (super_admin of the account,
    /// or the operator; the operator may also verify deleted accounts' logs).
    pub async fn verify_audit(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<AuditVerification, CoreError> {
        if !who.operator {
            self.check(
                who,
                account,
                Permission::ManageAccount,
                AuditAction::VerifyAudit,
                Target::account,
            )
            .await?;
        } else if !who.role.allows(Permission::ManageAccount) {
            return Err(self
                .deny(
                    who,
                    account,
                    AuditAction::VerifyAudit,
                    Target::account(),
                    CoreError::Forbidden(Permission::ManageAccount),
                )
                .await);
        }
        self.require_audited_account(account).await?;
        self.verify_chain(account).await
    }

    /// An account whose log may be read: one that exists, or a deleted one whose log remains
    /// (the operator reads those). Anything else is 404, as for every other operation.
    async fn require_audited_account(&self, account: AccountId) -> Result<(), CoreError> {
        if self.storage.get_account(account).await?.is_some()
            || self.storage.audit_head(account).await?.is_some()
        {
            Ok(())
        } else {
            Err(CoreError::NotFound(Resource::Account))
        }
    }

    /// The verification itself, without a permission check (for `coffer audit verify` run by
    /// the operator and for tests).
    pub async fn verify_chain(&self, account: AccountId) -> Result<AuditVerification, CoreError> {
        self.verify_chain_paged(account, VERIFY_BATCH).await
    }

    /// [`Coffer::verify_chain`], reading entries and checkpoints `page` at a time: one pass over
    /// both, in seq order, holding one page of each, so its memory does not grow with the log.
    /// A broken chain is reported before any checkpoint problem (a checkpoint is only as good as
    /// the chain it signs); otherwise the first checkpoint problem in seq order.
    pub(crate) async fn verify_chain_paged(
        &self,
        account: AccountId,
        page: usize,
    ) -> Result<AuditVerification, CoreError> {
        let page = page.max(1);
        let mut checkpoints = Checkpoints::new(account, page);
        let mut expected_seq = 1u64;
        let mut prev = [0u8; 32];
        let mut chain_bad: Option<(u64, String)> = None;
        let mut checkpoint_bad: Option<(u64, String)> = None;
        let mut checkpoints_checked = 0u64;
        let mut checked = 0u64;
        let mut after = 0u64;
        'outer: loop {
            let batch = self.storage.audit_entries(account, after, page).await?;
            if batch.is_empty() {
                break;
            }
            for record in &batch {
                after = record.seq;
                checked += 1;
                let problem = if record.seq != expected_seq {
                    Some(format!(
                        "expected entry {expected_seq} here, found entry {} (deleted or reordered entries)",
                        record.seq
                    ))
                } else if record.entry.account_id != account {
                    Some("entry belongs to another account".to_owned())
                } else if record.prev_hash != prev {
                    Some("does not link to the previous entry (deleted, inserted or reordered entries)".to_owned())
                } else if AuditRecord::compute_hash(&record.prev_hash, record.seq, &record.entry)
                    != record.hash
                {
                    Some("content does not match its hash (edited entry)".to_owned())
                } else {
                    None
                };
                if let Some(p) = problem {
                    chain_bad = Some((record.seq.min(expected_seq), p));
                    break 'outer;
                }
                // The checkpoints that sign this entry (seqs are unique, so at most one).
                while checkpoint_bad.is_none()
                    && let Some(cp) = checkpoints.next_at_most(self, record.seq).await?
                {
                    checkpoints_checked += 1;
                    checkpoint_bad = self.checkpoint_problem(account, &cp, Some(&record.hash));
                }
                prev = record.hash;
                expected_seq += 1;
            }
        }
        let head = (expected_seq > 1).then(|| (expected_seq - 1, prev));
        if chain_bad.is_some() {
            return Ok(AuditVerification {
                entries_checked: checked,
                checkpoints_checked: 0,
                head,
                first_bad: chain_bad,
            });
        }
        // Checkpoints past the end of the log sign entries that are gone.
        while checkpoint_bad.is_none()
            && let Some(cp) = checkpoints.next_at_most(self, u64::MAX).await?
        {
            checkpoints_checked += 1;
            checkpoint_bad = self.checkpoint_problem(account, &cp, None);
        }
        Ok(AuditVerification {
            entries_checked: checked,
            checkpoints_checked,
            head,
            first_bad: checkpoint_bad,
        })
    }

    /// What is wrong with `cp`, given the hash of the entry at its seq (`None`: the log ends
    /// before it).
    fn checkpoint_problem(
        &self,
        account: AccountId,
        cp: &AuditCheckpoint,
        entry_hash: Option<&[u8; 32]>,
    ) -> Option<(u64, String)> {
        let signed = self
            .keys
            .audit_mac()
            .verify(&checkpoint_message(account, cp.seq, &cp.hash), &cp.mac);
        let problem = if !signed {
            "checkpoint signature is invalid (forged or altered checkpoint)".to_owned()
        } else {
            match entry_hash {
                None => format!(
                    "a signed checkpoint covers entry {} but the log ends before it (entries removed)",
                    cp.seq
                ),
                Some(h) if h != &cp.hash => {
                    "entry differs from the signed checkpoint (log rewritten)".to_owned()
                }
                Some(_) => return None,
            }
        };
        Some((cp.seq, problem))
    }
}

/// An account's checkpoints, read a page at a time in seq order.
struct Checkpoints {
    account: AccountId,
    page: usize,
    buffer: std::collections::VecDeque<AuditCheckpoint>,
    after: u64,
    done: bool,
}

impl Checkpoints {
    fn new(account: AccountId, page: usize) -> Checkpoints {
        Checkpoints {
            account,
            page,
            buffer: std::collections::VecDeque::new(),
            after: 0,
            done: false,
        }
    }

    /// The next checkpoint if its seq is at most `seq` (taken), else `None` (left for later).
    async fn next_at_most(
        &mut self,
        coffer: &Coffer,
        seq: u64,
    ) -> Result<Option<AuditCheckpoint>, CoreError> {
        if self.buffer.is_empty() && !self.done {
            let page = coffer
                .storage
                .audit_checkpoints(self.account, self.after, self.page)
                .await?;
            self.done = page.len() < self.page;
            if let Some(last) = page.last() {
                self.after = last.seq;
            }
            self.buffer.extend(page);
        }
        match self.buffer.front() {
            Some(cp) if cp.seq <= seq => Ok(self.buffer.pop_front()),
            _ => Ok(None),
        }
    }
}
