//! The stores page: the list, create and delete.

use super::*;

/// What the stores page shows besides the list: the create form's input and errors, and
/// which store's delete failed and why.
#[derive(Default)]
struct StoresForm {
    name: String,
    name_error: Option<String>,
    error: Option<String>,
    delete: Option<(StoreId, String)>,
}

async fn render_stores(
    d: &crate::Inner,
    s: &Signed,
    page_no: u32,
    form: StoresForm,
    status: StatusCode,
) -> Response {
    let account = s.who.account_id;
    let query = StoreListQuery {
        page: page_no,
        per_page: PER_PAGE,
        order: StoreOrder::Name,
        direction: Direction::Asc,
    };
    let list = match d.coffer.list_stores(&s.who, account, query).await {
        Ok(list) => list,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let mut form = form;
    if !can_edit(s) {
        // No form to show it beside (a forged request of a role that may not edit).
        form.error = form
            .error
            .or(form.name_error.take())
            .or(form.delete.take().map(|(_, e)| e));
    }
    let stores = list
        .items
        .iter()
        .map(|r| StoreRow {
            id: r.id.to_string(),
            name: r.name.to_string(),
            created: r.created.to_rfc3339(),
            delete_error: form
                .delete
                .as_ref()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, e)| e.clone()),
        })
        .collect();
    page(
        status,
        &Stores {
            layout: layout("Stores".to_owned(), s),
            csrf: s.csrf.clone(),
            can_edit: can_edit(s),
            stores,
            total: list.total_count,
            pager: pager(&format!("{BASE}/stores"), "", page_no, list.total_count),
            name: form.name,
            name_error: form.name_error,
            error: form.error,
        },
    )
}

/// `GET /stores`
pub(crate) async fn stores(
    axum::extract::State(d): State,
    s: Signed,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Form::query(q.as_deref());
    render_stores(
        &d,
        &s,
        page_number(&q),
        StoresForm::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /stores`: create (`Coffer::create_store`, as `POST .../secrets_store/stores`).
pub(crate) async fn create_store(
    axum::extract::State(d): State,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let typed = form.get("name").unwrap_or_default().to_owned();
    let name = match StoreName::parse(typed.trim()) {
        Ok(n) => n,
        Err(e) => {
            let f = StoresForm {
                name: typed,
                name_error: Some(format!("name: {e}")),
                ..StoresForm::default()
            };
            return render_stores(&d, &s, 1, f, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    match d.coffer.create_store(&s.who, s.who.account_id, name).await {
        Ok(store) => Redirect::to(&format!("{BASE}/stores/{}", store.id)).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            let f = StoresForm {
                name: typed,
                name_error: Some(message),
                ..StoresForm::default()
            };
            render_stores(&d, &s, 1, f, status).await
        }
    }
}

/// `POST /stores/{id}/delete`: the store's name typed to confirm; `force` deletes its
/// secrets with it (`Coffer::delete_store`, as `DELETE .../stores/{id}?force=`).
pub(crate) async fn delete_store(
    axum::extract::State(d): State,
    Path(store_id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let Some(store_id) = id_of(&store_id, StoreId::parse) else {
        return not_found(&s, "store");
    };
    let account = s.who.account_id;
    let store = match d.coffer.get_store(&s.who, account, store_id).await {
        Ok(store) => store,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let refuse = |message: String| StoresForm {
        delete: Some((store_id, message)),
        ..StoresForm::default()
    };
    if form.get("confirm").map(str::trim) != Some(store.name.as_str()) {
        let f = refuse(format!("type the store's name, {}, to confirm", store.name));
        return render_stores(&d, &s, 1, f, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let force = form.get("force") == Some("true");
    match d
        .coffer
        .delete_store(&s.who, account, store_id, force)
        .await
    {
        Ok(()) => Redirect::to(&format!("{BASE}/stores")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            render_stores(&d, &s, 1, refuse(message), status).await
        }
    }
}
