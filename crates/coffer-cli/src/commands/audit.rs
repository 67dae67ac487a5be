//! `coffer audit ...`: the account's audit log, and the check that it was not tampered with.

use coffer_client::{AuditFilter, AuditVerification};

use super::{UsageError, connect, store::direction};
use crate::args::{AuditCommand, ConnArgs};
use crate::output::{self, Format};
use crate::resolve;

pub async fn run(conn: &ConnArgs, command: AuditCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    match command {
        AuditCommand::List(args) => {
            // The dates are checked before the connection settings, and before any request.
            let (from, to) = args.time_range().map_err(UsageError)?;
            if let Some(secret) = &args.secret_id
                && args.store_id.is_none()
                && !resolve::is_id(secret)
            {
                return Err(UsageError(format!(
                    "--secret-id {secret:?} is not an id: give the secret's id, or its store with \
                     --store-id"
                ))
                .into());
            }
            let client = connect(conn).await?;
            // Names are resolved to the ids the log records; an actor's name, among every
            // token of the account, revoked ones included.
            let actor = match &args.actor {
                Some(a) => Some(resolve::any_token(&client, a).await?.id),
                None => None,
            };
            let store = match &args.store_id {
                Some(s) => Some(resolve::store(&client, s).await?),
                None => None,
            };
            let secret_id = match (&args.secret_id, &store) {
                (Some(x), Some(store)) => Some(resolve::secret(&client, store, x).await?.id),
                (x, _) => x.clone(),
            };
            let store_id = store.map(|s| s.id);
            let filter = AuditFilter {
                from,
                to,
                actor,
                action: args.action.map(|a| a.as_str().to_owned()),
                outcome: args.outcome.map(|o| o.as_str().to_owned()),
                store_id,
                secret_id,
                page: args.page.page,
                per_page: args.page.per_page,
                direction: args.direction.map(direction),
            };
            let page = client.list_audit(&filter).await?;
            output::print(&output::audit_list(&page, format))?;
        }
        AuditCommand::Verify => {
            let verification = connect(conn).await?.verify_audit().await?;
            // Under --json the result is printed whatever it says; a tampered log then still
            // fails the command, so that scripts can gate on the exit status alone.
            if format.json() || verification.ok {
                output::print(&output::audit_verification(&verification, format))?;
            }
            if let Some(line) = tampered(&verification) {
                anyhow::bail!(line);
            }
        }
    }
    Ok(())
}

/// The one-line report of a log that failed verification, or `None` when it checks out.
fn tampered(v: &AuditVerification) -> Option<String> {
    if v.ok && v.first_bad.is_none() {
        return None;
    }
    Some(match &v.first_bad {
        Some(bad) => format!("audit log TAMPERED at entry #{}: {}", bad.seq, bad.problem),
        None => "audit log TAMPERED: the server reports a failed verification without \
                 naming an entry"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use coffer_client::AuditProblem;

    use super::*;

    fn verification(first_bad: Option<AuditProblem>) -> AuditVerification {
        AuditVerification {
            ok: first_bad.is_none(),
            entries_checked: 5,
            checkpoints_checked: 1,
            head_seq: Some(5),
            head_hash: Some("ab".repeat(32)),
            first_bad,
        }
    }

    #[test]
    fn only_a_failed_verification_is_reported() {
        assert_eq!(tampered(&verification(None)), None);
        let bad = verification(Some(AuditProblem {
            seq: 3,
            problem: "hash mismatch".into(),
        }));
        assert_eq!(
            tampered(&bad).unwrap(),
            "audit log TAMPERED at entry #3: hash mismatch"
        );
        // A contradictory answer fails closed.
        let odd = AuditVerification {
            ok: false,
            ..verification(None)
        };
        assert!(tampered(&odd).unwrap().starts_with("audit log TAMPERED"));
        let odd = AuditVerification { ok: true, ..bad };
        assert!(tampered(&odd).is_some());
    }
}
