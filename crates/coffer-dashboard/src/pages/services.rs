//! The services pages: the account's services (paged); one service's bindings (binding name →
//! store and secret, and the scope they are read with) and its tokens, with rotate (the new
//! token's value shown on the answer page, once) and revoke. Seeing them is
//! `secrets_store:read`; rotating and revoking is `secrets_store:bind`, as on the API.

use askama::Template;
use coffer_core::{Resource, ServiceListQuery};
use coffer_storage::{ServiceRecord, ServiceTokenRecord};
use coffer_types::{ServiceId, TokenId};

use super::*;
use crate::views::page_once;

#[derive(Debug)]
pub(crate) struct ServiceRow {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub bindings: usize,
    pub modified: String,
}

#[derive(Template, Debug)]
#[template(path = "services.html")]
pub(crate) struct ServicesPage {
    pub layout: Layout,
    pub services: Vec<ServiceRow>,
    pub total: u64,
    pub pager: Pager,
}

#[derive(Debug)]
pub(crate) struct BindingRow {
    pub binding: String,
    pub store_id: String,
    /// `None`: the store is gone (the binding stays, and reads answer 404).
    pub store_name: Option<String>,
    /// `None`: a whole store's binding.
    pub secret_name: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ServiceTokenRow {
    pub id: String,
    pub created: String,
    pub revoked: Option<String>,
    pub revoke_error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "service.html")]
pub(crate) struct ServicePage {
    pub layout: Layout,
    pub csrf: String,
    /// The single-use nonce of the form that mints a token.
    pub once: String,
    pub can_bind: bool,
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub created: String,
    pub modified: String,
    pub bindings: Vec<BindingRow>,
    pub tokens: Vec<ServiceTokenRow>,
    pub error: Option<String>,
}

/// The answer to a rotation: the new token, its value shown this once.
#[derive(Template)]
#[template(path = "service_token.html")]
pub(crate) struct ServiceTokenIssued<'a> {
    pub layout: Layout,
    pub service_id: String,
    pub service_name: String,
    pub token_id: String,
    pub revoked: usize,
    pub value: &'a str,
}

/// `GET /services`
pub(crate) async fn services(
    axum::extract::State(d): State,
    s: Signed,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Form::query(q.as_deref());
    let page_no = page_number(&q);
    let query = ServiceListQuery {
        page: page_no,
        per_page: PER_PAGE,
        name: None,
    };
    let list = match d
        .coffer
        .list_services(&s.who, s.who.account_id, query)
        .await
    {
        Ok(list) => list,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let services = list
        .items
        .iter()
        .map(|r| ServiceRow {
            id: r.id.to_string(),
            name: r.name.to_string(),
            kind: r.kind.as_str(),
            bindings: r.secrets.len() + r.stores.len(),
            modified: when(r.modified),
        })
        .collect();
    page(
        StatusCode::OK,
        &ServicesPage {
            layout: layout_at("Services".to_owned(), "services", &s),
            services,
            total: list.total_count,
            pager: pager(&format!("{BASE}/services"), "", page_no, list.total_count),
        },
    )
}

/// The bindings of `service`, each store named (looked up once per store).
async fn bindings(d: &crate::Inner, s: &Signed, service: &ServiceRecord) -> Vec<BindingRow> {
    let mut names: std::collections::HashMap<coffer_types::StoreId, Option<String>> =
        std::collections::HashMap::new();
    let ids = service
        .secrets
        .iter()
        .map(|b| b.store_id)
        .chain(service.stores.iter().map(|b| b.store_id));
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(id) {
            let name = d
                .coffer
                .get_store(&s.who, s.who.account_id, id)
                .await
                .ok()
                .map(|st| st.name.to_string());
            slot.insert(name);
        }
    }
    let name_of = |id: &coffer_types::StoreId| names.get(id).cloned().flatten();
    service
        .secrets
        .iter()
        .map(|b| BindingRow {
            binding: b.binding.to_string(),
            store_id: b.store_id.to_string(),
            store_name: name_of(&b.store_id),
            secret_name: Some(b.secret_name.to_string()),
        })
        .chain(service.stores.iter().map(|b| BindingRow {
            binding: b.binding.to_string(),
            store_id: b.store_id.to_string(),
            store_name: name_of(&b.store_id),
            secret_name: None,
        }))
        .collect()
}

fn token_rows(
    tokens: &[ServiceTokenRecord],
    revoke: Option<&(TokenId, String)>,
) -> Vec<ServiceTokenRow> {
    let mut rows: Vec<&ServiceTokenRecord> = tokens.iter().collect();
    // Active first, then newest first.
    rows.sort_by(|a, b| {
        (a.revoked.is_some(), b.created)
            .cmp(&(b.revoked.is_some(), a.created))
            .then(a.id.cmp(&b.id))
    });
    rows.into_iter()
        .map(|t| ServiceTokenRow {
            id: t.id.to_string(),
            created: when(t.created),
            revoked: t.revoked.map(when),
            revoke_error: revoke.filter(|(id, _)| *id == t.id).map(|(_, e)| e.clone()),
        })
        .collect()
}

async fn render_service(
    d: &crate::Inner,
    s: &Signed,
    id: ServiceId,
    error: Option<String>,
    revoke: Option<(TokenId, String)>,
    status: StatusCode,
) -> Response {
    let account = s.who.account_id;
    let service = match d.coffer.get_service(&s.who, account, id).await {
        Ok(service) => service,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let tokens = match d.coffer.list_service_tokens(&s.who, account, id).await {
        Ok(tokens) => tokens,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let bindings = bindings(d, s, &service).await;
    // A role that may not bind sees no form: a refusal goes in the banner.
    let error = if can_bind(s) {
        error
    } else {
        error.or(revoke.as_ref().map(|(_, e)| e.clone()))
    };
    page(
        status,
        &ServicePage {
            layout: layout_at(service.name.to_string(), "services", s),
            csrf: s.csrf.clone(),
            once: s.once(d),
            can_bind: can_bind(s),
            id: id.to_string(),
            name: service.name.to_string(),
            kind: service.kind.as_str(),
            created: when(service.created),
            modified: when(service.modified),
            bindings,
            tokens: token_rows(&tokens, revoke.as_ref()),
            error,
        },
    )
}

/// `GET /services/{id}`
pub(crate) async fn service(
    axum::extract::State(d): State,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = id_of(&id, ServiceId::parse) else {
        return not_found(&s, "service");
    };
    render_service(&d, &s, id, None, None, StatusCode::OK).await
}

/// `POST /services/{id}/tokens`: a new token (`Coffer::rotate_service_token`, as
/// `POST .../services/{id}/tokens`), the others revoked unless `keep` is ticked; the answer page
/// shows the new value once.
pub(crate) async fn rotate_service_token(
    axum::extract::State(d): State,
    Path(id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    if let Some(r) = s.replayed(&d, &form) {
        return r;
    }
    let Some(id) = id_of(&id, ServiceId::parse) else {
        return not_found(&s, "service");
    };
    let revoke_previous = form.get("keep") != Some("true");
    let account = s.who.account_id;
    match d
        .coffer
        .rotate_service_token(&s.who, account, id, revoke_previous)
        .await
    {
        Ok((record, value, revoked)) => {
            let name = match d.coffer.get_service(&s.who, account, id).await {
                Ok(service) => service.name.to_string(),
                Err(_) => id.to_string(),
            };
            page_once(
                StatusCode::OK,
                &ServiceTokenIssued {
                    layout: layout_at(format!("New token for {name}"), "services", &s),
                    service_id: id.to_string(),
                    service_name: name,
                    token_id: record.id.to_string(),
                    revoked: revoked.len(),
                    value: value.expose_secret(),
                },
            )
        }
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() || matches!(e, CoreError::NotFound(_)) {
                return failure_page(&e, Some(s.who()));
            }
            render_service(&d, &s, id, Some(message), None, status).await
        }
    }
}

/// `POST /services/{id}/tokens/{token}/revoke` (`Coffer::revoke_service_tokens` of one token,
/// as `DELETE .../services/{id}/tokens/{token}`).
pub(crate) async fn revoke_service_token(
    axum::extract::State(d): State,
    Path((id, token)): Path<(String, String)>,
    SignedForm { s, .. }: SignedForm,
) -> Response {
    let (Some(id), Some(token)) = (id_of(&id, ServiceId::parse), id_of(&token, TokenId::parse))
    else {
        return not_found(&s, "token");
    };
    let account = s.who.account_id;
    match d
        .coffer
        .revoke_service_tokens(&s.who, account, id, Some(token))
        .await
    {
        Ok(revoked) if revoked.is_empty() => {
            // Nothing active had that id: already revoked, or not this service's.
            let message = "no active token of this service has that id".to_owned();
            render_service(
                &d,
                &s,
                id,
                None,
                Some((token, message)),
                StatusCode::NOT_FOUND,
            )
            .await
        }
        Ok(_) => Redirect::to(&format!("{BASE}/services/{id}")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() || matches!(e, CoreError::NotFound(Resource::Service)) {
                return failure_page(&e, Some(s.who()));
            }
            if matches!(e, CoreError::NotFound(_)) {
                // Not this service's token: nothing to show it beside.
                return render_service(&d, &s, id, Some(message), None, status).await;
            }
            render_service(&d, &s, id, None, Some((token, message)), status).await
        }
    }
}
