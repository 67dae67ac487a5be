//! Which deployed services bind a secret: shown by `secret get`, and checked by `secret update
//! --scopes` so that a scope a service relies on is not removed silently.
//!
//! A service binds a secret through a secret binding (store id + secret name) or through a store
//! binding (the whole store). Either way it reads the secret only while the secret carries the
//! service's type among its scopes: that is core's runtime check, and the deploy's.

use std::io::{BufRead, IsTerminal, Write};

use coffer_client::{Client, ListServices, Secret, Service};
use serde::Serialize;

use crate::resolve::all_pages;
use crate::table::one_line;

/// Services listed per request (the API's largest page).
const PAGE: u32 = 100;

/// One binding of a deployed service through which it reaches the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binder {
    pub service: String,
    pub service_id: String,
    /// The service's type: the scope the secret must carry for the service to read it.
    pub service_type: String,
    pub binding: String,
    pub kind: BindingKind,
    /// Whether the service can read the secret now (it carries the service's type).
    pub readable: bool,
}

/// How a binding reaches the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    /// A secret binding: the secret, by name.
    Secret,
    /// A store binding: every secret of its store that carries the service's type.
    Store,
}

impl BindingKind {
    /// As in `--json`: `secret` or `store`.
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            BindingKind::Secret => "secret",
            BindingKind::Store => "store",
        }
    }
}

/// Every service of the account, all pages.
async fn all_services(client: &Client) -> anyhow::Result<Vec<Service>> {
    all_pages(|page| {
        let params = ListServices {
            page: Some(page),
            per_page: Some(PAGE),
            name: None,
        };
        async move { client.list_services(&params).await }
    })
    .await
}

/// The bindings of `services` that reach `secret`, service by service in list order.
pub fn binders(services: &[Service], secret: &Secret) -> Vec<Binder> {
    let mut out = Vec::new();
    for service in services {
        let readable = secret.scopes.contains(&service.kind);
        let binder = |binding: &str, kind| Binder {
            service: service.name.clone(),
            service_id: service.id.clone(),
            service_type: service.kind.clone(),
            binding: binding.to_owned(),
            kind,
            readable,
        };
        for b in &service.secrets_store_secrets {
            if b.store_id == secret.store_id && b.secret_name == secret.name {
                out.push(binder(&b.binding, BindingKind::Secret));
            }
        }
        for b in &service.secrets_store_stores {
            if b.store_id == secret.store_id {
                out.push(binder(&b.binding, BindingKind::Store));
            }
        }
    }
    out
}

/// Every binding of a deployed service that reaches `secret`, readable or not.
pub async fn find(client: &Client, secret: &Secret) -> anyhow::Result<Vec<Binder>> {
    Ok(binders(&all_services(client).await?, secret))
}

/// Of `binders`, those that read the secret now and would not with `new_scopes`.
pub fn losing_access<'a>(binders: &'a [Binder], new_scopes: &[String]) -> Vec<&'a Binder> {
    binders
        .iter()
        .filter(|b| b.readable && !new_scopes.contains(&b.service_type))
        .collect()
}

/// `name (binding B)` or `name (store binding B)`, for a message.
fn describe(b: &Binder) -> String {
    format!(
        "{} ({}binding {}, type {})",
        one_line(&b.service),
        if b.kind == BindingKind::Store {
            "store "
        } else {
            ""
        },
        one_line(&b.binding),
        one_line(&b.service_type)
    )
}

/// The scopes the losing services need, in order and without repeats.
fn needed(losing: &[&Binder]) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for b in losing {
        if !scopes.contains(&b.service_type) {
            scopes.push(b.service_type.clone());
        }
    }
    scopes
}

/// Before `secret update --scopes NEW`: when NEW drops a scope that a deployed service needs to
/// read the secret, the services are named and, without `yes`, the question is asked on a
/// terminal; without a terminal the update is refused. `Ok` means go ahead, with, under `yes`,
/// the warning to give once the update is done.
pub async fn check_scope_change(
    client: &Client,
    store_id: &str,
    secret_id: &str,
    new_scopes: &[String],
    yes: bool,
) -> anyhow::Result<Option<String>> {
    // Every scope is compared as given, one this CLI does not know too (the server refuses it
    // if it does not know it either): an unknown scope does not turn the check off.
    let secret = client.get_secret(store_id, secret_id).await?;
    if secret.scopes.iter().all(|s| new_scopes.contains(s)) {
        return Ok(None);
    }
    let binders = find(client, &secret).await?;
    let losing = losing_access(&binders, new_scopes);
    if losing.is_empty() {
        return Ok(None);
    }
    let services: Vec<String> = losing.iter().map(|b| describe(b)).collect();
    let scopes = needed(&losing).join(", ");
    let name = one_line(&secret.name);
    if yes {
        return Ok(Some(format!(
            "secret {name:?} no longer carries scope {scopes}: {} cannot read it any more",
            services.join(", ")
        )));
    }
    let stdin = std::io::stdin();
    if !(stdin.is_terminal() && std::io::stderr().is_terminal()) {
        anyhow::bail!(
            "removing scope {scopes} from secret {name:?} takes it away from deployed services: \
             {}; pass --yes to update it anyway",
            services.join(", ")
        );
    }
    let question = format!(
        "Removing scope {scopes} from secret {name:?} takes it away from {} deployed \
         service{}:\n  {}\nTheir reads of it will fail. Update it anyway? [y/N] ",
        losing.len(),
        if losing.len() == 1 { "" } else { "s" },
        services.join("\n  ")
    );
    if confirm(&question, &mut stdin.lock(), &mut std::io::stderr())? {
        Ok(None)
    } else {
        anyhow::bail!("not confirmed: secret {name:?} left unchanged")
    }
}

/// Asks `question` on `out` and reads one line from `input`: `y` or `yes` (any case) confirms;
/// anything else, end of input included, does not.
fn confirm(question: &str, input: &mut impl BufRead, out: &mut impl Write) -> anyhow::Result<bool> {
    out.write_all(question.as_bytes())?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    let answer = answer.trim();
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

#[cfg(test)]
mod tests {
    use coffer_client::{SecretBinding, StoreBinding};

    use super::*;
    use crate::output::{Format, secret_with_binders};

    const STORE: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn secret(scopes: &[&str]) -> Secret {
        Secret {
            id: "1".repeat(32),
            store_id: STORE.to_owned(),
            name: "openai-key".to_owned(),
            comment: String::new(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            status: "active".to_owned(),
            created: String::new(),
            modified: String::new(),
        }
    }

    fn service(
        name: &str,
        kind: &str,
        secrets: &[(&str, &str, &str)],
        stores: &[(&str, &str)],
    ) -> Service {
        Service {
            id: format!("{name}-id"),
            name: name.to_owned(),
            kind: kind.to_owned(),
            secrets_store_secrets: secrets
                .iter()
                .map(|(binding, store_id, secret_name)| SecretBinding {
                    binding: (*binding).to_owned(),
                    store_id: (*store_id).to_owned(),
                    secret_name: (*secret_name).to_owned(),
                })
                .collect(),
            secrets_store_stores: stores
                .iter()
                .map(|(binding, store_id)| StoreBinding {
                    binding: (*binding).to_owned(),
                    store_id: (*store_id).to_owned(),
                })
                .collect(),
            created: String::new(),
            modified: String::new(),
        }
    }

    fn services() -> Vec<Service> {
        vec![
            service(
                "app",
                "workers",
                &[("OPENAI_KEY", STORE, "openai-key"), ("DB", STORE, "db-url")],
                &[],
            ),
            // The same name in another store is another secret.
            service(
                "elsewhere",
                "workers",
                &[("OPENAI_KEY", OTHER, "openai-key")],
                &[("ALL", OTHER)],
            ),
            service("gw", "ai_gateway", &[], &[("ALL", STORE)]),
            service("dex", "dex", &[("K", STORE, "openai-key")], &[]),
        ]
    }

    fn summary(binders: &[Binder]) -> Vec<(String, String, &'static str, bool)> {
        binders
            .iter()
            .map(|b| {
                (
                    b.service.clone(),
                    b.binding.clone(),
                    b.kind.as_str(),
                    b.readable,
                )
            })
            .collect()
    }

    #[test]
    fn secret_and_store_bindings_of_the_secret_are_found_with_their_access() {
        let s = secret(&["workers", "ai_gateway"]);
        let found = binders(&services(), &s);
        assert_eq!(
            summary(&found),
            [
                ("app".to_owned(), "OPENAI_KEY".to_owned(), "secret", true),
                ("gw".to_owned(), "ALL".to_owned(), "store", true),
                ("dex".to_owned(), "K".to_owned(), "secret", false),
            ]
        );
        assert_eq!(found[1].service_type, "ai_gateway");
        assert_eq!(found[1].service_id, "gw-id");
    }

    #[test]
    fn only_readers_whose_type_is_removed_lose_access() {
        let s = secret(&["workers", "ai_gateway"]);
        let found = binders(&services(), &s);
        let names = |new: &[&str]| {
            let new: Vec<String> = new.iter().map(|s| (*s).to_owned()).collect();
            losing_access(&found, &new)
                .iter()
                .map(|b| b.service.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&["workers", "ai_gateway"]), Vec::<&str>::new());
        assert_eq!(names(&["workers", "ai_gateway", "dex"]), Vec::<&str>::new());
        assert_eq!(names(&["ai_gateway"]), ["app"]);
        assert_eq!(names(&["workers"]), ["gw"]);
        // dex never read it: it loses nothing.
        assert_eq!(names(&["dex"]), ["app", "gw"]);
        let losing = losing_access(&found, &["dex".to_owned()]);
        assert_eq!(needed(&losing), ["workers", "ai_gateway"]);
        assert_eq!(
            describe(losing[1]),
            "gw (store binding ALL, type ai_gateway)"
        );
        assert_eq!(
            describe(losing[0]),
            "app (binding OPENAI_KEY, type workers)"
        );
    }

    #[test]
    fn secret_get_shows_the_binders_in_the_table_and_the_json() {
        let s = secret(&["workers"]);
        let found = binders(&services(), &s);
        let json: serde_json::Value =
            serde_json::from_str(&secret_with_binders(&s, &found, Format::Json)).unwrap();
        assert_eq!(json["name"], "openai-key");
        assert_eq!(json["scopes"], serde_json::json!(["workers"]));
        assert_eq!(
            json["bound_by"],
            serde_json::json!([
                {"service": "app", "service_id": "app-id", "service_type": "workers",
                 "binding": "OPENAI_KEY", "kind": "secret", "readable": true},
                {"service": "gw", "service_id": "gw-id", "service_type": "ai_gateway",
                 "binding": "ALL", "kind": "store", "readable": false},
                {"service": "dex", "service_id": "dex-id", "service_type": "dex",
                 "binding": "K", "kind": "secret", "readable": false},
            ])
        );
        let text = secret_with_binders(&s, &found, Format::Table);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("Service"))
            .skip(2)
            .map(|l| {
                l.split("  ")
                    .filter(|c| !c.is_empty())
                    .map(str::trim)
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                vec!["app", "workers", "OPENAI_KEY", "yes"],
                vec![
                    "gw",
                    "ai_gateway",
                    "ALL (store)",
                    "no: the secret lacks scope ai_gateway"
                ],
                vec!["dex", "dex", "K", "no: the secret lacks scope dex"],
            ]
        );
        let none = secret_with_binders(&s, &[], Format::Table);
        assert!(none.ends_with("\nBound by no service.\n"), "{none}");
        let json: serde_json::Value =
            serde_json::from_str(&secret_with_binders(&s, &[], Format::Json)).unwrap();
        assert_eq!(json["bound_by"], serde_json::json!([]));
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for (answer, yes) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \r\n", true),
            ("n\n", false),
            ("\n", false),
            ("", false),
            ("yep\n", false),
        ] {
            let mut out = Vec::new();
            let got = confirm("Go? [y/N] ", &mut answer.as_bytes(), &mut out).unwrap();
            assert_eq!(got, yes, "{answer:?}");
            assert_eq!(out, b"Go? [y/N] ");
        }
    }
}
