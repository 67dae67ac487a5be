//! Operator-token recovery: a new instance-operator token replaces every operator token still
//! in force, in one transaction.
//!
//! Two ways in: offline (`coffer operator rotate --data-dir`, the server stopped, who = the
//! instance) and online (`POST /client/v4/operator/token/rotate`, who = the operator token
//! itself). The new token is stored as a keyed hash like every token; its value is returned
//! once. The old tokens are barred from the token cache before the write, so they stop working
//! on the very next request even if this one is cancelled after the write commits.

use coffer_crypto::{Token, random_id};
use coffer_storage::TokenRecord;
use coffer_types::{Timestamp, TokenId};

use super::Coffer;
use super::audit::{Actor, Details, Event, Target};
use crate::{AuditAction, AuditOutcome};
use crate::{CoreError, Principal, Role};

/// The name every rotated operator token gets.
pub const OPERATOR_TOKEN_NAME: &str = "operator";

/// How the offline rotation is named as the actor of its audit entry.
const OFFLINE_ACTOR: &str = "coffer operator rotate";

impl Coffer {
    /// Issues a new operator token (a super_admin of the operator's account) and revokes every
    /// operator token not yet revoked, with one `rotate` entry in the operator account's audit
    /// log naming the new token's id and the revoked ones' (never a value).
    ///
    /// `who`: `Some` for the online form, which only the instance operator may use (anyone else
    /// gets `Forbidden`, recorded as a denial); `None` for the offline form, where holding the
    /// data dir is the authority.
    pub async fn rotate_operator_token(
        &self,
        who: Option<&Principal>,
    ) -> Result<(TokenRecord, Token), CoreError> {
        if let Some(who) = who {
            self.check_operator(
                who,
                None,
                AuditAction::Rotate,
                Target::token(Some(who.token_id), Some(&who.token_name)),
            )
            .await?;
        }
        let account = self.operator_account().await?.ok_or_else(|| {
            CoreError::Internal(
                "the instance has no operator account (no operator token was ever made)".into(),
            )
        })?;
        let revoke: Vec<TokenId> = self
            .storage
            .list_tokens(account)
            .await?
            .into_iter()
            .filter(|t| t.operator && t.revoked.is_none())
            .map(|t| t.id)
            .collect();
        let id = TokenId::from_bytes(random_id());
        let token = Token::generate(id);
        let record = TokenRecord {
            id,
            account_id: account,
            name: OPERATOR_TOKEN_NAME.to_owned(),
            hash: self.keys.token_mac().hash_token(&token).0,
            role: Role::SuperAdmin.as_str().to_owned(),
            operator: true,
            created: Timestamp::now(),
            expires: None,
            revoked: None,
            last_used: None,
        };
        let entry = self.audit_entry(
            account,
            Event {
                action: AuditAction::Rotate,
                outcome: AuditOutcome::Success,
                target: Target::token(Some(id), Some(OPERATOR_TOKEN_NAME)),
                details: Details {
                    role: Some(Role::SuperAdmin.as_str()),
                    revoked_token_ids: Some(revoke.clone()),
                    ..Details::default()
                },
                who: match who {
                    Some(p) => Actor::Principal(p),
                    None => Actor::Job(OFFLINE_ACTOR),
                },
            },
        )?;
        // Barred before the write (see token_cache.rs); only ids that exist are barred.
        for old in &revoke {
            self.token_cache.bar_token(*old);
        }
        self.storage
            .replace_tokens(record.clone(), revoke, record.created, &[entry])
            .await?;
        Ok((record, token))
    }
}
