//! A store's secrets page: the list (searched, filtered, sorted, paged), create (several at
//! once) and delete.

use super::*;

/// The secrets list's orders: the `sort` parameter, its label, and the API's order.
const SORTS: [(&str, &str, SecretOrder, Direction); 4] = [
    ("name", "name, A to Z", SecretOrder::Name, Direction::Asc),
    (
        "name_desc",
        "name, Z to A",
        SecretOrder::Name,
        Direction::Desc,
    ),
    (
        "modified",
        "recently modified",
        SecretOrder::Modified,
        Direction::Desc,
    ),
    (
        "created",
        "recently created",
        SecretOrder::Created,
        Direction::Desc,
    ),
];

/// What the secrets page shows besides the list: the create form as typed, and errors.
struct SecretsForm {
    rows: Vec<FormRow>,
    error: Option<String>,
    delete: Option<(SecretId, String)>,
}

pub(crate) fn blank_row(index: usize) -> FormRow {
    FormRow {
        index,
        number: index + 1,
        name: String::new(),
        comment: String::new(),
        scopes: Scope::ALL
            .iter()
            .map(|scope| ScopeBox {
                name: scope.as_str(),
                checked: *scope == Scope::Workers,
            })
            .collect(),
        name_error: None,
        value_error: None,
        scopes_error: None,
        comment_error: None,
    }
}

impl SecretsForm {
    fn blank(rows: usize) -> SecretsForm {
        SecretsForm {
            rows: (0..rows.clamp(1, MAX_FORM_ROWS)).map(blank_row).collect(),
            error: None,
            delete: None,
        }
    }
}

async fn render_secrets(
    d: &crate::Inner,
    s: &Signed,
    store_id: StoreId,
    q: &Form,
    form: SecretsForm,
    status: StatusCode,
) -> Response {
    let account = s.who.account_id;
    let store = match d.coffer.get_store(&s.who, account, store_id).await {
        Ok(store) => store,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let search = search_text(q);
    let page_no = page_number(q);
    let scope = q
        .get("scope")
        .filter(|s| !s.is_empty())
        .and_then(|s| Scope::parse(s).ok());
    let sort = SORTS
        .iter()
        .find(|(key, ..)| Some(*key) == q.get("sort"))
        .unwrap_or(&SORTS[0]);
    let query = SecretListQuery {
        page: page_no,
        per_page: PER_PAGE,
        order: sort.2,
        direction: sort.3,
        search: (!search.is_empty()).then(|| search.clone()),
        scopes: Scopes::new(scope),
    };
    let list = match d
        .coffer
        .list_secrets(&s.who, account, store_id, query)
        .await
    {
        Ok(list) => list,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let mut form = form;
    if !can_edit(s) {
        // No form to show it beside (a forged request of a role that may not edit).
        let row_error = form.rows.iter_mut().find_map(|r| {
            r.name_error
                .take()
                .or(r.value_error.take())
                .or(r.scopes_error.take())
                .or(r.comment_error.take())
        });
        form.error = form
            .error
            .or(row_error)
            .or(form.delete.take().map(|(_, e)| e));
    }
    let secrets = list
        .items
        .iter()
        .map(|r| SecretRow {
            id: r.id.to_string(),
            name: r.name.to_string(),
            comment: r.comment.clone(),
            scopes: r.scopes.to_strings().join(", "),
            modified: r.modified.to_rfc3339(),
            delete_error: form
                .delete
                .as_ref()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, e)| e.clone()),
        })
        .collect();
    let base = format!("{BASE}/stores/{store_id}");
    // What the pager's links keep of the query.
    let mut kept = form_urlencoded::Serializer::new(String::new());
    if !search.is_empty() {
        kept.append_pair("search", &search);
    }
    if let Some(scope) = scope {
        kept.append_pair("scope", scope.as_str());
    }
    if sort.0 != SORTS[0].0 {
        kept.append_pair("sort", sort.0);
    }
    let kept = kept.finish();
    let extra = if kept.is_empty() {
        kept
    } else {
        format!("&{kept}")
    };
    let scopes = std::iter::once(("", "any scope", scope.is_none()))
        .chain(
            Scope::ALL
                .iter()
                .map(|s| (s.as_str(), s.as_str(), Some(*s) == scope)),
        )
        .map(|(value, label, selected)| Choice {
            value,
            label,
            selected,
        })
        .collect();
    let sorts = SORTS
        .iter()
        .map(|(value, label, ..)| Choice {
            value,
            label,
            selected: *value == sort.0,
        })
        .collect();
    let more_rows = (form.rows.len() + 1).min(MAX_FORM_ROWS);
    page(
        status,
        &Secrets {
            layout: layout(format!("Secrets of {}", store.name), s),
            csrf: s.csrf.clone(),
            can_edit: can_edit(s),
            store_id: store_id.to_string(),
            store_name: store.name.to_string(),
            search,
            scopes,
            sorts,
            filtered: scope.is_some(),
            secrets,
            total: list.total_count,
            pager: pager(&base, &extra, page_no, list.total_count),
            rows: form.rows,
            more_rows,
            error: form.error,
        },
    )
}

/// `GET /stores/{id}`: the store's secrets, searched and paged, and the create form.
pub(crate) async fn secrets(
    axum::extract::State(d): State,
    s: Signed,
    Path(store_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(store_id) = id_of(&store_id, StoreId::parse) else {
        return not_found(&s, "store");
    };
    let q = Form::query(q.as_deref());
    let rows = q.get("rows").and_then(|r| r.parse().ok()).unwrap_or(1);
    render_secrets(
        &d,
        &s,
        store_id,
        &q,
        SecretsForm::blank(rows),
        StatusCode::OK,
    )
    .await
}

/// Parses the create form's rows as the API parses its items: every row's errors are found
/// (not only the first), and what was typed is kept, except the values.
fn parse_rows(form: &mut Form) -> (Vec<FormRow>, Option<Vec<CreateSecretItem>>) {
    let indices = form.rows("name");
    let mut rows = Vec::with_capacity(indices.len());
    let mut items = Vec::with_capacity(indices.len());
    let mut seen = std::collections::HashSet::new();
    for (position, index) in indices.into_iter().enumerate() {
        let typed_name = form.get(&format!("name-{index}")).unwrap_or_default();
        let typed_comment = form
            .get_text(&format!("comment-{index}"))
            .unwrap_or_default();
        let typed_scopes: Vec<String> = form
            .all(&format!("scopes-{index}"))
            .map(str::to_owned)
            .collect();
        let mut row = blank_row(position);
        row.name = typed_name.to_owned();
        row.comment = typed_comment.to_owned();
        for b in &mut row.scopes {
            b.checked = typed_scopes.iter().any(|t| t == b.name);
        }
        let name = match SecretName::parse(typed_name.trim()) {
            Ok(n) if !seen.insert(n.clone()) => {
                row.name_error = Some(format!(
                    "name: the name {:?} appears more than once in this form",
                    n.as_str()
                ));
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                row.name_error = Some(format!("name: name {e}"));
                None
            }
        };
        let scopes = if typed_scopes.is_empty() {
            row.scopes_error = Some("scopes: at least one scope is required".to_owned());
            None
        } else {
            match Scopes::parse(&typed_scopes) {
                Ok(s) => Some(s),
                Err(e) => {
                    row.scopes_error = Some(format!("scopes: {e}"));
                    None
                }
            }
        };
        let comment = match Comment::parse(typed_comment.to_owned(), "comment") {
            Ok(c) => Some(c),
            Err(e) => {
                row.comment_error = Some(describe(&e).1);
                None
            }
        };
        let value = form
            .take_text(&format!("value-{index}"))
            .map(|v| Plaintext::new(v.as_bytes().to_vec()))
            .unwrap_or_else(|| Plaintext::new(Vec::new()));
        let value = match check_value(&value, "value") {
            Ok(()) => Some(value),
            Err(e) => {
                row.value_error = Some(describe(&e).1);
                None
            }
        };
        if let (Some(name), Some(scopes), Some(comment), Some(value)) =
            (name, scopes, comment, value)
        {
            items.push(CreateSecretItem {
                name,
                value,
                scopes,
                comment,
            });
        }
        rows.push(row);
    }
    let complete = !rows.is_empty() && items.len() == rows.len();
    (rows, complete.then_some(items))
}

/// `POST /stores/{id}/secrets`: one or several secrets at once (`Coffer::create_secrets`, as
/// `POST .../stores/{id}/secrets` with an array).
pub(crate) async fn create_secrets(
    axum::extract::State(d): State,
    Path(store_id): Path<String>,
    SignedForm { s, mut form }: SignedForm,
) -> Response {
    let Some(store_id) = id_of(&store_id, StoreId::parse) else {
        return not_found(&s, "store");
    };
    let none = Form::query(None);
    if form.rows("name").len() > MAX_FORM_ROWS {
        let f = SecretsForm {
            error: Some(format!("at most {MAX_FORM_ROWS} secrets per form")),
            ..SecretsForm::blank(1)
        };
        return render_secrets(&d, &s, store_id, &none, f, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let (mut rows, items) = parse_rows(&mut form);
    drop(form);
    let Some(items) = items else {
        let error = rows
            .is_empty()
            .then(|| "add at least one secret".to_owned());
        if rows.is_empty() {
            rows.push(blank_row(0));
        }
        let f = SecretsForm {
            rows,
            error,
            delete: None,
        };
        return render_secrets(&d, &s, store_id, &none, f, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let account = s.who.account_id;
    match d
        .coffer
        .create_secrets(&s.who, account, store_id, items)
        .await
    {
        Ok(_) => Redirect::to(&format!("{BASE}/stores/{store_id}")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() || matches!(e, CoreError::NotFound(_)) {
                return failure_page(&e, Some(s.who()));
            }
            // A name the store already has is shown beside that row.
            let mut error = Some(message.clone());
            if let CoreError::NameTaken { name, .. } = &e
                && let Some(row) = rows.iter_mut().find(|r| r.name.trim() == name.as_str())
            {
                row.name_error = Some(message);
                error = None;
            }
            let f = SecretsForm {
                rows,
                error,
                delete: None,
            };
            render_secrets(&d, &s, store_id, &none, f, status).await
        }
    }
}

/// `POST /stores/{id}/secrets/{secret}/delete`: the secret's name typed to confirm
/// (`Coffer::delete_secrets`, as `DELETE .../secrets/{id}`).
pub(crate) async fn delete_secret(
    axum::extract::State(d): State,
    Path((store_id, secret_id)): Path<(String, String)>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let (Some(store_id), Some(secret_id)) = (
        id_of(&store_id, StoreId::parse),
        id_of(&secret_id, SecretId::parse),
    ) else {
        return not_found(&s, "secret");
    };
    let account = s.who.account_id;
    let secret = match d
        .coffer
        .get_secret(&s.who, account, store_id, secret_id)
        .await
    {
        Ok(secret) => secret,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let none = Form::query(None);
    let refuse = |message: String| SecretsForm {
        delete: Some((secret_id, message)),
        ..SecretsForm::blank(1)
    };
    if form.get("confirm").map(str::trim) != Some(secret.name.as_str()) {
        let f = refuse(format!(
            "type the secret's name, {}, to confirm",
            secret.name
        ));
        return render_secrets(&d, &s, store_id, &none, f, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match d
        .coffer
        .delete_secrets(&s.who, account, store_id, &[secret_id])
        .await
    {
        Ok(()) => Redirect::to(&format!("{BASE}/stores/{store_id}")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            render_secrets(&d, &s, store_id, &none, refuse(message), status).await
        }
    }
}
