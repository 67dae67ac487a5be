//! Services, their bindings and tokens, and what `coffer deploy` deployed.

use coffer_client::{DeployedService, Page, RotatedServiceToken, Service, ServiceToken};
use zeroize::Zeroizing;

use super::{Format, json_text, page_footer, page_json, time, time_or, with_token};
use crate::table::{Table, one_line};

const SERVICE_COLUMNS: [&str; 6] = ["Name", "ID", "Type", "Bindings", "Created", "Modified"];
const BINDING_COLUMNS: [&str; 3] = ["Binding", "Store", "Secret"];
const SERVICE_TOKEN_COLUMNS: [&str; 4] = ["ID", "Status", "Issued", "Revoked"];

fn services_table(services: &[Service], format: Format) -> String {
    let mut t = Table::new(&SERVICE_COLUMNS)
        .wide_only(&["Created"])
        .flexible(&["Name"]);
    for s in services {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.kind.clone(),
            (s.secrets_store_secrets.len() + s.secrets_store_stores.len()).to_string(),
            time(&s.created),
            time(&s.modified),
        ]);
    }
    t.render(format.wide())
}

/// Each binding and what it reaches: a secret of a store, or every secret of a store that
/// carries the service's type.
fn bindings_table(service: &Service, format: Format) -> String {
    if service.secrets_store_secrets.is_empty() && service.secrets_store_stores.is_empty() {
        return "No bindings.\n".to_owned();
    }
    let mut t = Table::new(&BINDING_COLUMNS).flexible(&["Binding", "Secret"]);
    for b in &service.secrets_store_secrets {
        t.row(vec![
            b.binding.clone(),
            b.store_id.clone(),
            b.secret_name.clone(),
        ]);
    }
    for b in &service.secrets_store_stores {
        t.row(vec![
            b.binding.clone(),
            b.store_id.clone(),
            format!("(every secret with scope {})", service.kind),
        ]);
    }
    t.render(format.wide())
}

pub fn service_list(page: &Page<Service>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() && page.result_info.total_count == 0 {
        return "No services found. Deploy one with `coffer deploy --config wrangler.toml`.\n"
            .to_owned();
    }
    services_table(&page.items, format) + &page_footer(page, "services")
}

/// `service get`: the service, then its bindings.
pub fn service(service: &Service, format: Format) -> String {
    if format.json() {
        return json_text(service);
    }
    services_table(std::slice::from_ref(service), format) + "\n" + &bindings_table(service, format)
}

/// `deploy`: what was deployed and, on the first deploy, the service token with a warning that
/// it is shown once. Under `--json`, the API's result as it came (token included). The text is
/// zeroized on drop.
pub fn service_deployed(deployed: &DeployedService, format: Format) -> Zeroizing<String> {
    if format.json() {
        return with_token(deployed, deployed.service_token.as_ref());
    }
    let service = &deployed.service;
    let count = service.secrets_store_secrets.len() + service.secrets_store_stores.len();
    let mut text = Zeroizing::new(format!(
        "Deployed service {name} ({how}): type {kind}, {count} binding{s}.\n\
         \n\
         \x20 Service ID:  {id}\n\
         \n",
        name = one_line(&service.name),
        how = if deployed.created {
            "created"
        } else {
            "updated"
        },
        kind = one_line(&service.kind),
        s = if count == 1 { "" } else { "s" },
        id = one_line(&service.id),
    ));
    text.push_str(&bindings_table(service, format));
    if let Some(token) = &deployed.service_token {
        text.push_str("\n  Service token:  ");
        text.push_str(&Zeroizing::new(one_line(token.expose_secret())));
        text.push_str(&format!(
            "\n\n\
             The service token is shown only now and cannot be recovered: store it now. The\n\
             service reads its bindings with it: COFFER_SERVICE_TOKEN=... coffer run -- CMD.\n\
             A new one: coffer service token rotate {}\n",
            one_line(&service.name)
        ));
    }
    text
}

fn service_tokens_table(tokens: &[ServiceToken], format: Format) -> String {
    let mut t = Table::new(&SERVICE_TOKEN_COLUMNS);
    for token in tokens {
        t.row(vec![
            token.id.clone(),
            token.status.clone(),
            time(&token.issued_on),
            time_or(token.revoked_on.as_deref(), "-"),
        ]);
    }
    t.render(format.wide())
}

pub fn service_token_list(page: &Page<ServiceToken>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return "No tokens for this service.\n".to_owned();
    }
    service_tokens_table(&page.items, format)
}

/// `service token rotate`: the new token, once, and what was revoked. Zeroized on drop.
pub fn service_token_rotated(
    rotated: &RotatedServiceToken,
    service_name: &str,
    format: Format,
) -> Zeroizing<String> {
    if format.json() {
        return with_token(rotated, Some(&rotated.service_token));
    }
    let previous = match rotated.revoked.len() {
        0 => "no other token was revoked".to_owned(),
        1 => "revoked 1 previous token".to_owned(),
        n => format!("revoked {n} previous tokens"),
    };
    let mut text = Zeroizing::new(format!(
        "Issued a new token for service {name}; {previous}.\n\
         \n\
         \x20 Token ID:       {id}\n\
         \x20 Service token:  ",
        name = one_line(service_name),
        id = one_line(&rotated.token.id),
    ));
    text.push_str(&Zeroizing::new(one_line(
        rotated.service_token.expose_secret(),
    )));
    text.push_str(
        "\n\n\
         The service token is shown only now and cannot be recovered: store it now, and give it\n\
         to the service as COFFER_SERVICE_TOKEN.\n",
    );
    text
}

/// `service token revoke` of every active token: how many, or the tokens under `--json`.
pub fn service_tokens_revoked(
    revoked: &[ServiceToken],
    service_name: &str,
    format: Format,
) -> String {
    if format.json() {
        return json_text(revoked);
    }
    let name = one_line(service_name);
    match revoked.len() {
        0 => format!("Service {name} had no active token; nothing was revoked.\n"),
        1 => format!("Revoked 1 token of service {name}; it no longer works.\n"),
        n => format!("Revoked {n} tokens of service {name}; they no longer work.\n"),
    }
}

/// `service token revoke --token-id`: a confirmation, or the token under `--json`.
pub fn service_token_revoked(token: &ServiceToken, service_name: &str, format: Format) -> String {
    if format.json() {
        return json_text(token);
    }
    format!(
        "Revoked token {} of service {}; it no longer works.\n",
        one_line(&token.id),
        one_line(service_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::page;

    fn sample_service() -> Service {
        Service {
            id: "c".repeat(32),
            name: "ai-gateway".into(),
            kind: "workers".into(),
            secrets_store_secrets: vec![coffer_client::SecretBinding {
                binding: "OPENAI_KEY".into(),
                store_id: "a".repeat(32),
                secret_name: "openai-key".into(),
            }],
            secrets_store_stores: vec![coffer_client::StoreBinding {
                binding: "SHARED".into(),
                store_id: "b".repeat(32),
            }],
            created: "2025-01-01T00:00:00Z".into(),
            modified: "2025-01-02T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_first_deploy_shows_bindings_and_the_token_once() {
        let deployed = DeployedService {
            service: sample_service(),
            created: true,
            service_token: Some(coffer_client::SecretValue::new("coffersvc_x_s3cr3t".into())),
        };
        let text = service_deployed(&deployed, Format::Table);
        assert!(
            text.starts_with(
                "Deployed service ai-gateway (created): type workers, 2 bindings.\n\n  Service ID:  "
            ),
            "{}",
            *text
        );
        let row = |binding: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.starts_with(binding))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            row("OPENAI_KEY"),
            ["OPENAI_KEY", &"a".repeat(32), "openai-key"]
        );
        assert_eq!(
            row("SHARED").join(" "),
            format!(
                "SHARED {} (every secret with scope workers)",
                "b".repeat(32)
            )
        );
        assert_eq!(text.matches("coffersvc_x_s3cr3t").count(), 1, "{}", *text);
        assert!(text.contains("  Service token:  coffersvc_x_s3cr3t\n"));
        assert!(text.contains("shown only now"));
        assert!(text.contains("coffer service token rotate ai-gateway"));

        // A redeploy has no token; --json is the result as the API sent it.
        let redeploy = DeployedService {
            service: sample_service(),
            created: false,
            service_token: None,
        };
        let text = service_deployed(&redeploy, Format::Table);
        assert!(text.starts_with("Deployed service ai-gateway (updated)"));
        assert!(!text.contains("token"), "{}", *text);
        let v: serde_json::Value =
            serde_json::from_str(&service_deployed(&deployed, Format::Json)).unwrap();
        assert_eq!(v["service_token"], "coffersvc_x_s3cr3t");
        assert_eq!(v["name"], "ai-gateway");
        assert_eq!(v["first_deploy"], true);
        assert_eq!(v["created"], "2025-01-01T00:00:00Z");
    }

    #[test]
    fn services_and_their_tokens_in_tables() {
        let out = service_list(&page(vec![sample_service()], 1), Format::Table);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["Name", "ID", "Type", "Bindings", "Modified"]);
        lines.next();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["ai-gateway", &"c".repeat(32), "workers", "2"]);
        let wide = service_list(&page(vec![sample_service()], 1), Format::Wide);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, SERVICE_COLUMNS);
        assert!(out.ends_with("(10 per page, 1 service in all)\n"), "{out}");
        assert!(service_list(&page(vec![], 0), Format::Table).starts_with("No services found."));
        let out = service(&sample_service(), Format::Table);
        assert!(out.contains("\nBinding "), "{out}");
        let mut bare = sample_service();
        bare.secrets_store_secrets.clear();
        bare.secrets_store_stores.clear();
        assert!(service(&bare, Format::Table).ends_with("\nNo bindings.\n"));

        let token = ServiceToken {
            id: "d".repeat(32),
            service_id: "c".repeat(32),
            status: "revoked".into(),
            issued_on: "2025-01-01T00:00:00Z".into(),
            revoked_on: Some("2025-01-02T00:00:00Z".into()),
        };
        let out = service_token_list(&page(vec![token.clone()], 1), Format::Table);
        assert!(
            out.lines()
                .nth(2)
                .unwrap()
                .ends_with("2025-01-02T00:00:00Z")
        );
        assert_eq!(
            service_token_list(&page(vec![], 0), Format::Table),
            "No tokens for this service.\n"
        );
        let rotated = RotatedServiceToken {
            token: ServiceToken {
                status: "active".into(),
                revoked_on: None,
                ..token.clone()
            },
            service_token: coffer_client::SecretValue::new("coffersvc_y_n3w".into()),
            revoked: vec![token.clone(), token.clone()],
        };
        let text = service_token_rotated(&rotated, "ai-gateway", Format::Table);
        assert!(
            text.starts_with(
                "Issued a new token for service ai-gateway; revoked 2 previous tokens."
            )
        );
        assert_eq!(text.matches("coffersvc_y_n3w").count(), 1);
        let v: serde_json::Value =
            serde_json::from_str(&service_token_rotated(&rotated, "x", Format::Json)).unwrap();
        assert_eq!(v["service_token"], "coffersvc_y_n3w");
        assert_eq!(v["revoked"].as_array().unwrap().len(), 2);
        assert_eq!(
            service_tokens_revoked(&[], "app", Format::Table),
            "Service app had no active token; nothing was revoked.\n"
        );
        assert!(
            service_tokens_revoked(std::slice::from_ref(&token), "app", Format::Table)
                .starts_with("Revoked 1 token")
        );
        assert!(
            service_token_revoked(&token, "app", Format::Table)
                .starts_with(&format!("Revoked token {}", token.id))
        );
    }
}
