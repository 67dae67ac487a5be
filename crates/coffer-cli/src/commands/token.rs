//! `coffer token ...`: the API tokens of the account in the connection settings.
//!
//! A new token's value is printed once, on standard output, by `token create`, and nowhere else.

use coffer_types::Timestamp;

use super::{UsageError, connect};
use crate::args::{ConnArgs, TokenCommand};
use crate::output::{self, Format};
use crate::resolve;

pub async fn run(conn: &ConnArgs, command: TokenCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    match command {
        TokenCommand::Create(args) => {
            // The expiry is checked before the connection settings, and before any request.
            let expires_on = args
                .expires_in()
                .map_err(UsageError)?
                .map(|secs| expiry(Timestamp::now(), secs));
            let client = connect(conn).await?;
            let created = client
                .create_token(args.name(), &args.role, expires_on)
                .await?;
            // Zeroized on drop, like `created` itself.
            let text = output::token_created(&created, client.account_id(), format);
            output::print(&text)?;
        }
        TokenCommand::List => {
            let page = connect(conn).await?.list_tokens().await?;
            output::print(&output::token_list(&page, format))?;
        }
        TokenCommand::Get(token) => {
            let client = connect(conn).await?;
            let token = resolve::token(&client, &token.id).await?;
            let token = client.get_token(&token.id).await?;
            output::print(&output::token(&token, format))?;
        }
        TokenCommand::Revoke(token) => {
            let client = connect(conn).await?;
            let token = resolve::token(&client, &token.id).await?;
            output::print(&output::token_revoked(
                &client.revoke_token(&token.id).await?,
                format,
            ))?;
        }
    }
    Ok(())
}

/// `now + secs` as RFC 3339 in UTC. `secs` is at most
/// [`crate::args::token::MAX_EXPIRES_IN_SECS`], so the sum stays far inside what RFC 3339 can
/// write.
fn expiry(now: Timestamp, secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    now.plus_seconds(secs).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::token::MAX_EXPIRES_IN_SECS;

    #[test]
    fn expiry_is_now_plus_the_duration_in_utc() {
        let now = Timestamp::parse_rfc3339("2025-01-31T23:30:00Z").unwrap();
        assert_eq!(expiry(now, 90 * 60), "2025-02-01T01:00:00Z");
        assert_eq!(expiry(now, 30 * 86_400), "2025-03-02T23:30:00Z");
        // 36500 days, leap days included.
        let later = expiry(now, MAX_EXPIRES_IN_SECS);
        assert_eq!(later, "2125-01-07T23:30:00Z");
        let parsed = Timestamp::parse_rfc3339(&later).unwrap();
        assert_eq!(
            parsed.unix_micros() - now.unix_micros(),
            i64::try_from(MAX_EXPIRES_IN_SECS).unwrap() * 1_000_000
        );
        // Sub-second precision is kept and still valid RFC 3339.
        let now = Timestamp::from_unix_micros(1_735_689_600_123_456);
        let at = expiry(now, 1);
        assert_eq!(
            Timestamp::parse_rfc3339(&at).unwrap().unix_micros(),
            1_735_689_601_123_456
        );
    }
}
