//! Names wherever ids are taken: the one place that turns what the user typed into an id.
//!
//! An argument of 32 lowercase hex characters is an id and is used as it is (no request). Any
//! other argument is a name, looked up by exact match through the list APIs, every page of
//! them. Where revoked items keep their names (tokens, nodes), the active items are matched
//! first, so `token revoke ci` means the `ci` token that still works. No match is an error
//! `no store named "x"`; several are an error listing their ids.

use coffer_client::{Client, ListSecrets, ListServices, Page, Service};

use crate::table::one_line;

/// Items asked for per page while looking a name up (the server's maximum).
const PER_PAGE: u32 = 100;

/// Longest `search` the server takes; a longer name is looked up without it.
const MAX_SEARCH_BYTES: usize = 256;

/// An id, as the API writes them: 32 lowercase hexadecimal characters.
pub fn is_id(given: &str) -> bool {
    given.len() == 32
        && given
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How to name in a message what the user called `given` and resolved to `id`: `prod (0123...)`
/// for a name, the id alone for an id.
pub fn shown(given: &str, id: &str) -> String {
    if given == id {
        one_line(id)
    } else {
        format!("{} ({})", one_line(given), one_line(id))
    }
}

/// Something that has a name and an id.
struct Candidate {
    id: String,
    name: String,
    /// Not revoked or expired.
    active: bool,
}

/// The id of the one candidate named `given` (the active ones first). `kind` names what is
/// looked for (`store`), `place` where (`" in store prod"`, or `""`).
fn pick(
    kind: &str,
    given: &str,
    place: &str,
    candidates: impl IntoIterator<Item = Candidate>,
) -> anyhow::Result<String> {
    let named: Vec<Candidate> = candidates.into_iter().filter(|c| c.name == given).collect();
    let active = named.iter().filter(|c| c.active).count();
    let chosen: Vec<&Candidate> = named.iter().filter(|c| c.active || active == 0).collect();
    // Debug quoting escapes control characters: the line stays one inert line.
    let shown = format!("{given:?}");
    match chosen.as_slice() {
        [] => anyhow::bail!("no {kind} named {shown}{place}"),
        [one] => Ok(one.id.clone()),
        several => {
            let ids: Vec<String> = several.iter().map(|c| one_line(&c.id)).collect();
            anyhow::bail!(
                "{} {kind}s are named {shown}{place}: {}; give the id instead",
                several.len(),
                ids.join(", ")
            )
        }
    }
}

/// Every item of a paged list: pages are asked for from 1 until one is empty or the total is
/// reached.
async fn all_pages<T, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, coffer_client::Error>>,
{
    let mut items = Vec::new();
    for page in 1.. {
        let got = fetch(page).await?;
        let total = got.result_info.total_count;
        let empty = got.items.is_empty();
        items.extend(got.items);
        if empty || items.len() as u64 >= total {
            break;
        }
    }
    Ok(items)
}

/// The id of the store `given` (a name or an id).
pub async fn store(client: &Client, given: &str) -> anyhow::Result<String> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let stores =
        all_pages(|page| client.list_stores(Some(page), Some(PER_PAGE), None, None)).await?;
    pick(
        "store",
        given,
        "",
        stores.into_iter().map(|s| Candidate {
            id: s.id,
            name: s.name,
            active: true,
        }),
    )
}

/// The id of the secret `given` (a name or an id) in the store `store_id`; `store` is what the
/// user called the store, for messages.
pub async fn secret(
    client: &Client,
    store_id: &str,
    store: &str,
    given: &str,
) -> anyhow::Result<String> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    // The server narrows by substring (name or comment); the match is exact here.
    let search = (!given.is_empty() && given.len() <= MAX_SEARCH_BYTES).then(|| given.to_owned());
    let secrets = all_pages(|page| {
        let params = ListSecrets {
            page: Some(page),
            per_page: Some(PER_PAGE),
            search: search.clone(),
            ..ListSecrets::default()
        };
        async move { client.list_secrets(store_id, &params).await }
    })
    .await?;
    pick(
        "secret",
        given,
        &format!(" in store {store:?}"),
        secrets.into_iter().map(|s| Candidate {
            id: s.id,
            name: s.name,
            active: true,
        }),
    )
}

/// The ids of the secrets `given` in the store, in order, each resolved as by [`secret`].
pub async fn secrets(
    client: &Client,
    store_id: &str,
    store: &str,
    given: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(given.len());
    for g in given {
        ids.push(secret(client, store_id, store, g).await?);
    }
    Ok(ids)
}

/// The id of the API token `given` (a name or an id) in the client's account; tokens that
/// still work are matched first.
pub async fn token(client: &Client, given: &str) -> anyhow::Result<String> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let tokens = client.list_tokens().await?;
    pick(
        "token",
        given,
        "",
        tokens.items.into_iter().map(|t| Candidate {
            active: t.status == "active",
            id: t.id,
            name: t.name,
        }),
    )
}

/// The id of the edge node `given` (a name or an id); nodes not revoked are matched first.
pub async fn node(client: &Client, given: &str) -> anyhow::Result<String> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let nodes = client.list_nodes().await?;
    pick(
        "node",
        given,
        "",
        nodes.items.into_iter().map(|n| Candidate {
            active: n.revoked.is_none(),
            id: n.id,
            name: n.name,
        }),
    )
}

/// The id of the account `given` (a name or an id), among the accounts the token sees.
pub async fn account(client: &Client, given: &str) -> anyhow::Result<String> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let accounts = client.list_accounts().await?;
    pick(
        "account",
        given,
        "",
        accounts.items.into_iter().map(|a| Candidate {
            id: a.id,
            name: a.name,
            active: true,
        }),
    )
}

/// The service `given` (a name or an id) of the client's account.
pub async fn service(client: &Client, given: &str) -> anyhow::Result<Service> {
    if is_id(given) {
        return Ok(client.get_service(given).await?);
    }
    // The server filters by exact name; names are unique in an account.
    let services = all_pages(|page| {
        let params = ListServices {
            page: Some(page),
            per_page: Some(PER_PAGE),
            name: Some(given.to_owned()),
        };
        async move { client.list_services(&params).await }
    })
    .await?;
    let id = pick(
        "service",
        given,
        "",
        services.iter().map(|s| Candidate {
            id: s.id.clone(),
            name: s.name.clone(),
            active: true,
        }),
    )?;
    services
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| anyhow::anyhow!("service {id} vanished from its own list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str, active: bool) -> Candidate {
        Candidate {
            id: id.into(),
            name: name.into(),
            active,
        }
    }

    #[test]
    fn names_are_shown_with_their_id() {
        let id = "a".repeat(32);
        assert_eq!(shown(&id, &id), id);
        assert_eq!(shown("prod", &id), format!("prod ({id})"));
    }

    #[test]
    fn ids_are_32_lowercase_hex() {
        assert!(is_id(&"0a".repeat(16)));
        for not in [
            "",
            "prod",
            &"0A".repeat(16),
            &"a".repeat(31),
            &"a".repeat(33),
        ] {
            assert!(!is_id(not), "{not}");
        }
        assert!(!is_id(&format!("{}g", "a".repeat(31))));
    }

    #[test]
    fn names_match_exactly_and_active_ones_first() {
        let all = || {
            vec![
                c("1", "ci", false),
                c("2", "ci", true),
                c("3", "CI", true),
                c("4", "deploy", false),
                c("5", "x", true),
                c("6", "x", true),
            ]
        };
        assert_eq!(pick("token", "ci", "", all()).unwrap(), "2");
        // Only revoked ones: the revoked one (the server then says it is revoked).
        assert_eq!(pick("token", "deploy", "", all()).unwrap(), "4");
        assert_eq!(pick("token", "CI", "", all()).unwrap(), "3");
        let err = pick("token", "c", "", all()).unwrap_err().to_string();
        assert_eq!(err, "no token named \"c\"");
        let err = pick("token", "x", "", all()).unwrap_err().to_string();
        assert_eq!(err, "2 tokens are named \"x\": 5, 6; give the id instead");
        let err = pick("secret", "a\nb", " in store \"prod\"", all())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no secret named \"a\\nb\" in store \"prod\"");
    }
}
