//! Names wherever ids are taken: the one place that turns what the user typed into an id.
//!
//! One rule for every kind of object. An argument of 32 lowercase hex characters is an id; since
//! a name may look like one too, the objects are looked up both ways, and an id-shaped argument
//! that is also the exact name of another object (or the name of one while nothing has that id)
//! is refused as ambiguous, naming both, rather than acting on either: an object named after
//! another's id cannot stand in for it. Any other argument is a name, looked up by exact match
//! through the list APIs, every page of them. Where revoked items keep their names (tokens,
//! nodes), the active items are matched first, so `token revoke ci` means the `ci` token that
//! still works. No match is an error `no store named "x"`; several are an error listing their
//! ids. An id that matches nothing is passed on as it is, for the server to answer.

use coffer_client::{Client, ListSecrets, ListServices, Page, Service};

use crate::table::one_line;

/// Items asked for per page while looking a name up (the server's maximum).
const PER_PAGE: u32 = 100;

/// Longest `search` the server takes; a longer name is looked up without it.
const MAX_SEARCH_BYTES: usize = 256;

/// An id, as the API writes them: 32 lowercase hexadecimal characters (every kind of id parses
/// alike).
pub fn is_id(given: &str) -> bool {
    coffer_types::StoreId::parse(given).is_ok()
}

/// What an argument names: the object's id and, when it is known, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: String,
    /// `None` only for an id that matched nothing this side (the server answers for it).
    pub name: Option<String>,
}

impl Resolved {
    /// How to name the object in a message: `prod (0123...)`, or the id alone when its name is
    /// not known.
    pub fn shown(&self) -> String {
        match &self.name {
            Some(name) => format!("{} ({})", one_line(name), one_line(&self.id)),
            None => one_line(&self.id),
        }
    }
}

/// Something that has a name and an id.
struct Candidate {
    id: String,
    name: String,
    /// Not revoked or expired.
    active: bool,
}

/// The one candidate `given` names (by id, or by name with the active ones first), by the
/// rule above. `kind` names what is looked for (`store`), `place` where (`" in store prod"`,
/// or `""`).
fn pick(
    kind: &str,
    given: &str,
    place: &str,
    candidates: impl IntoIterator<Item = Candidate>,
) -> anyhow::Result<Resolved> {
    let candidates: Vec<Candidate> = candidates.into_iter().collect();
    // Debug quoting escapes control characters: the line stays one inert line.
    let shown = format!("{given:?}");
    if is_id(given) {
        return by_id(kind, given, &shown, place, &candidates);
    }
    let named: Vec<&Candidate> = candidates.iter().filter(|c| c.name == given).collect();
    let active = named.iter().filter(|c| c.active).count();
    let chosen: Vec<&Candidate> = named
        .into_iter()
        .filter(|c| c.active || active == 0)
        .collect();
    match chosen.as_slice() {
        [] => anyhow::bail!("no {kind} named {shown}{place}"),
        [one] => Ok(Resolved {
            id: one.id.clone(),
            name: Some(one.name.clone()),
        }),
        several => anyhow::bail!(
            "{} {kind}s are named {shown}{place}: {}; give the id instead",
            several.len(),
            ids(several)
        ),
    }
}

/// An id-shaped `given`: the candidate with that id, unless another candidate has it as its
/// name (revoked or not: either way, one could be taken for the other).
fn by_id(
    kind: &str,
    given: &str,
    shown: &str,
    place: &str,
    candidates: &[Candidate],
) -> anyhow::Result<Resolved> {
    let with_id = candidates.iter().find(|c| c.id == given);
    let named: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.name == given && c.id != given)
        .collect();
    if named.is_empty() {
        return Ok(Resolved {
            id: given.to_owned(),
            name: with_id.map(|c| c.name.clone()),
        });
    }
    let of_name = match named.as_slice() {
        [_] => format!("{kind} {}", ids(&named)),
        several => format!("{} {kind}s ({})", several.len(), ids(several)),
    };
    match with_id {
        Some(c) => anyhow::bail!(
            "{shown} is ambiguous{place}: it is the id of {kind} {:?} and the name of {of_name}; \
             give {:?} to mean the first, or the id of the {kind} named {shown}",
            one_line(&c.name),
            one_line(&c.name)
        ),
        None => anyhow::bail!(
            "{shown} is ambiguous{place}: no {kind} has that id, but it is the name of \
             {of_name}; give the id of the {kind} named {shown} to mean it"
        ),
    }
}

fn ids(candidates: &[&Candidate]) -> String {
    let ids: Vec<String> = candidates.iter().map(|c| one_line(&c.id)).collect();
    ids.join(", ")
}

/// `Some` of what a lookup by id found, `None` for a 404 (nothing has that id).
fn found<T>(looked_up: Result<T, coffer_client::Error>) -> anyhow::Result<Option<T>> {
    match looked_up {
        Ok(item) => Ok(Some(item)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every item of a paged list: pages are asked for from 1 until one is empty or the total is
/// reached.
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
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

/// The store `given` (a name or an id).
pub async fn store(client: &Client, given: &str) -> anyhow::Result<Resolved> {
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

/// The secret `given` (a name or an id) in `store`.
pub async fn secret(client: &Client, store: &Resolved, given: &str) -> anyhow::Result<Resolved> {
    // An id is looked up as one too: the search below finds names (and comments) only.
    let with_id = if is_id(given) {
        found(client.get_secret(&store.id, given).await)?
    } else {
        None
    };
    // The server narrows by substring (name or comment); the match is exact here.
    let search = (!given.is_empty() && given.len() <= MAX_SEARCH_BYTES).then(|| given.to_owned());
    let secrets = all_pages(|page| {
        let params = ListSecrets {
            page: Some(page),
            per_page: Some(PER_PAGE),
            search: search.clone(),
            ..ListSecrets::default()
        };
        async move { client.list_secrets(&store.id, &params).await }
    })
    .await?;
    let place = format!(" in store {:?}", store.name.as_deref().unwrap_or(&store.id));
    pick(
        "secret",
        given,
        &place,
        with_id
            .into_iter()
            .chain(secrets.into_iter().filter(|s| s.id != given))
            .map(|s| Candidate {
                id: s.id,
                name: s.name,
                active: true,
            }),
    )
}

/// The secrets `given` in the store, in order, each resolved as by [`secret`].
pub async fn secrets(
    client: &Client,
    store: &Resolved,
    given: &[String],
) -> anyhow::Result<Vec<Resolved>> {
    let mut found = Vec::with_capacity(given.len());
    for g in given {
        found.push(secret(client, store, g).await?);
    }
    Ok(found)
}

/// The API token `given` (a name or an id) in the client's account; tokens that still work
/// are matched first.
pub async fn token(client: &Client, given: &str) -> anyhow::Result<Resolved> {
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

/// The API token `given` (a name or an id) in the client's account, revoked or not: for the
/// audit log, which records every token's actions. Several of that name is an error listing
/// them.
pub async fn any_token(client: &Client, given: &str) -> anyhow::Result<Resolved> {
    let tokens = client.list_tokens().await?;
    pick(
        "token",
        given,
        "",
        tokens.items.into_iter().map(|t| Candidate {
            active: true,
            id: t.id,
            name: t.name,
        }),
    )
}

/// The edge node `given` (a name or an id); nodes not revoked are matched first.
pub async fn node(client: &Client, given: &str) -> anyhow::Result<Resolved> {
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

/// The account `given` (a name or an id), among the accounts the token sees.
pub async fn account(client: &Client, given: &str) -> anyhow::Result<Resolved> {
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
    let with_id = if is_id(given) {
        found(client.get_service(given).await)?
    } else {
        None
    };
    // The server filters by exact name; names are unique in an account.
    let named = all_pages(|page| {
        let params = ListServices {
            page: Some(page),
            per_page: Some(PER_PAGE),
            name: Some(given.to_owned()),
        };
        async move { client.list_services(&params).await }
    })
    .await?;
    let services: Vec<Service> = with_id
        .into_iter()
        .chain(named.into_iter().filter(|s| s.id != given))
        .collect();
    let resolved = pick(
        "service",
        given,
        "",
        services.iter().map(|s| Candidate {
            id: s.id.clone(),
            name: s.name.clone(),
            active: true,
        }),
    )?;
    match services.into_iter().find(|s| s.id == resolved.id) {
        Some(service) => Ok(service),
        // An id nothing has: the server says so.
        None => Ok(client.get_service(&resolved.id).await?),
    }
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

    fn id(digit: char) -> String {
        digit.to_string().repeat(32)
    }

    #[test]
    fn objects_are_shown_with_their_name_and_id() {
        let shown = |name: Option<&str>| {
            Resolved {
                id: id('a'),
                name: name.map(str::to_owned),
            }
            .shown()
        };
        assert_eq!(shown(None), id('a'));
        assert_eq!(shown(Some("prod")), format!("prod ({})", id('a')));
        assert_eq!(shown(Some("p\u{1b}")), format!("p\\u{{1b}} ({})", id('a')));
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
        let id_of = |given: &str| pick("token", given, "", all()).unwrap().id;
        assert_eq!(id_of("ci"), "2");
        // Only revoked ones: the revoked one (the server then says it is revoked).
        assert_eq!(id_of("deploy"), "4");
        assert_eq!(id_of("CI"), "3");
        assert_eq!(
            pick("token", "CI", "", all()).unwrap().name.as_deref(),
            Some("CI")
        );
        let err = pick("token", "c", "", all()).unwrap_err().to_string();
        assert_eq!(err, "no token named \"c\"");
        let err = pick("token", "x", "", all()).unwrap_err().to_string();
        assert_eq!(err, "2 tokens are named \"x\": 5, 6; give the id instead");
        let err = pick("secret", "a\nb", " in store \"prod\"", all())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no secret named \"a\\nb\" in store \"prod\"");
    }

    #[test]
    fn an_id_is_refused_when_it_is_also_the_name_of_another_object() {
        let (a, b, c2) = (id('a'), id('b'), id('c'));
        // The id of one, and nobody's name: that one, with its real name.
        let found = pick("store", &a, "", vec![c(&a, "prod", true), c(&b, "x", true)]).unwrap();
        assert_eq!(found.id, a);
        assert_eq!(found.shown(), format!("prod ({a})"));
        // An object named after its own id is not ambiguous.
        let found = pick("store", &a, "", vec![c(&a, &a, true)]).unwrap();
        assert_eq!(found.name.as_deref(), Some(a.as_str()));
        // Nothing has it: passed on as it is, for the server to answer.
        let found = pick("store", &a, "", vec![c(&b, "x", true)]).unwrap();
        assert_eq!((found.id.as_str(), found.name), (a.as_str(), None));

        // Another object is named after the id: refused, naming both.
        let err = pick("store", &a, "", vec![c(&a, "prod", true), c(&b, &a, true)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "\"{a}\" is ambiguous: it is the id of store \"prod\" and the name of store {b}; \
                 give \"prod\" to mean the first, or the id of the store named \"{a}\""
            )
        );
        // ... revoked or not, one or several.
        let err = pick(
            "token",
            &a,
            "",
            vec![c(&a, "ci", true), c(&b, &a, false), c(&c2, &a, true)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("the name of 2 tokens ({b}, {c2})")),
            "{err}"
        );
        // Nothing has the id, but something has it as its name: refused too.
        let err = pick(
            "secret",
            &a,
            " in store \"prod\"",
            vec![c(&b, &a, true), c(&c2, "y", true)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "\"{a}\" is ambiguous in store \"prod\": no secret has that id, but it is the \
                 name of secret {b}; give the id of the secret named \"{a}\" to mean it"
            )
        );
    }
}
