//! Which change-log entries compaction must pass, so that no retained entry carries a
//! destroyed DEK or a deleted account's replication key: a security rule every backend must
//! apply alike, so it is here, once.

use coffer_types::{AccountId, DekId};

use crate::Change;

/// What one compaction looks for in entries' JSON payloads.
#[derive(Debug, Clone)]
pub struct CompactionMatcher {
    /// `"dek_id":"<hex>"` for each DEK: their `DekPut`s and values sealed under them.
    needles: Vec<String>,
    /// A deleted account: also its account grants (its replication key sealed to nodes).
    account: Option<(AccountId, String)>,
}

impl CompactionMatcher {
    /// Entries that carry one of `deks`.
    pub fn deks(deks: impl IntoIterator<Item = DekId>) -> Self {
        CompactionMatcher {
            needles: deks
                .into_iter()
                .map(|dek| format!("\"dek_id\":\"{dek}\""))
                .collect(),
            account: None,
        }
    }

    /// A deleted account's: entries that carry one of `deks`, or an account grant for it.
    pub fn account(account: AccountId, deks: impl IntoIterator<Item = DekId>) -> Self {
        CompactionMatcher {
            account: Some((account, account.to_string())),
            ..Self::deks(deks)
        }
    }

    /// Nothing to look for: no entry matches.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty() && self.account.is_none()
    }

    /// Texts one of which every matching entry's payload holds: a filter a database can
    /// apply before [`CompactionMatcher::carries`] (which alone decides).
    pub fn prefilter(&self) -> Vec<String> {
        let mut out = self.needles.clone();
        if let Some((_, hex)) = &self.account {
            out.push(hex.clone());
        }
        out
    }

    /// Whether the entry with this JSON payload carries what is looked for. `DekDestroyed`
    /// entries, which carry only an id, never do. Entries are matched by the exact
    /// `"dek_id":"<hex>"` their JSON holds; a grant by parsing the entry, and only entries
    /// that mention the account at all are parsed.
    pub fn carries(&self, payload: &[u8]) -> bool {
        // Payloads are JSON, so UTF-8; one that is not cannot name a DEK.
        let text = std::str::from_utf8(payload).unwrap_or("");
        // JSON escapes the quotes of any such text inside a string, so only an entry's own
        // type matches.
        if text.contains("\"type\":\"dek_destroyed\"") {
            return false;
        }
        if self.needles.iter().any(|n| text.contains(n.as_str())) {
            return true;
        }
        let Some((account, hex)) = &self.account else {
            return false;
        };
        if !text.contains(hex.as_str()) {
            return false;
        }
        // An entry that names the account but does not parse (none should: the log holds what
        // was appended or applied after parsing) is compacted past too: erring that way costs
        // a lagging edge a snapshot, the other way a key left in the log.
        serde_json::from_str::<Change>(text).map_or(true, |change| {
            matches!(change, Change::AccountKeyGrant { account_id, .. } if account_id == *account)
        })
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::TokenId;

    use super::*;

    #[test]
    fn matches_deks_and_grants_but_not_destroyed_entries() {
        let dek = DekId::from_bytes([1; 16]);
        let account = AccountId::from_bytes([2; 16]);
        let other = AccountId::from_bytes([3; 16]);
        let put = format!(r#"{{"type":"dek_put","dek_id":"{dek}"}}"#);
        let destroyed = format!(r#"{{"type":"dek_destroyed","dek_id":"{dek}"}}"#);
        let grant = |a: AccountId| {
            serde_json::to_vec(&Change::AccountKeyGrant {
                account_id: a,
                node_id: TokenId::from_bytes([9; 16]),
                ark_version: 1,
                ephemeral_public_hex: "aa".into(),
                sealed_hex: "bb".into(),
            })
            .unwrap()
        };
        let m = CompactionMatcher::deks([dek]);
        assert!(m.carries(put.as_bytes()));
        assert!(!m.carries(destroyed.as_bytes()));
        assert!(!m.carries(&grant(account)));
        assert!(!m.is_empty());
        assert!(CompactionMatcher::deks([]).is_empty());

        let m = CompactionMatcher::account(account, []);
        assert!(!m.is_empty());
        assert!(m.carries(&grant(account)));
        assert!(!m.carries(&grant(other)));
        assert!(!m.carries(put.as_bytes()));
        let unparsable = format!(r#"{{"type":"mystery","x":"{account}""#);
        assert!(m.carries(unparsable.as_bytes()), "errs towards compacting");
        for needle in m.prefilter() {
            assert!(
                String::from_utf8(grant(account)).unwrap().contains(&needle)
                    || needle.contains("dek_id")
            );
        }
        assert!(CompactionMatcher::account(account, [dek]).carries(put.as_bytes()));
    }
}
