//! The stores and secrets pages: what they list and what their forms do.

use axum::http::StatusCode;

use crate::support::Harness;

#[tokio::test]
async fn stores_are_created_listed_and_deleted_with_typed_confirmation() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "payments")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let store = r.location().rsplit('/').next().unwrap().to_owned();
    assert_eq!(store.len(), 32);
    let list = h.get(&b, "/dashboard/stores").await;
    assert!(list.body.contains("payments") && list.body.contains(&store));
    // A duplicate name: the API's message beside the field, the typed name kept.
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "payments")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already exists"), "{}", r.body);
    assert!(r.body.contains("value=\"payments\""));
    // Not empty: refused until `force`; a wrong confirmation is refused first.
    h.post(
        &b,
        &format!("/dashboard/stores/{store}/secrets"),
        &[
            ("csrf", &csrf),
            ("name-0", "K"),
            ("value-0", "v"),
            ("scopes-0", "workers"),
        ],
    )
    .await;
    let delete = format!("/dashboard/stores/{store}/delete");
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "payment")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("to confirm"));
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "payments")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("still holds secrets"), "{}", r.body);
    assert_eq!(h.store_names().await, ["payments"]);
    let r = h
        .post(
            &b,
            &delete,
            &[("csrf", &csrf), ("confirm", "payments"), ("force", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(h.store_names().await.is_empty());
}

#[tokio::test]
async fn several_secrets_at_once_whose_values_never_come_back() {
    let h = Harness::new().await;
    let store = h.create_store("app").await;
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    assert!(page.body.contains(
        "<textarea id=\"value-0\" name=\"value-0\" class=\"secret-value\" rows=\"2\" autocomplete=\"off\" autocapitalize=\"off\" spellcheck=\"false\""
    ));
    assert!(
        !page.body.contains("type=\"password\""),
        "no password field to save or fill"
    );
    assert!(page.body.contains("Add another secret"));
    let csrf = page.csrf();
    let path = format!("/dashboard/stores/{store}/secrets");
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("name-0", "DB_URL"),
                ("value-0", "value-one-9f2c"),
                ("scopes-0", "workers"),
                ("comment-0", "the database"),
                ("name-1", "API_KEY"),
                ("value-1", "value-two-77ab"),
                ("scopes-1", "workers"),
                ("scopes-1", "ai_gateway"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut names = h.secrets(&store).await;
    names.sort();
    assert_eq!(
        names,
        [
            ("API_KEY".to_owned(), String::new()),
            ("DB_URL".to_owned(), "the database".to_owned())
        ]
    );
    let list = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    assert!(list.body.contains("DB_URL") && list.body.contains("workers, ai_gateway"));
    // Errors: each beside its row, what was typed kept except the value.
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("name-0", "bad name"),
                ("value-0", "typed-value-3e1d"),
                ("scopes-0", "workers"),
                ("comment-0", "kept comment"),
                ("name-1", "EMPTY"),
                ("value-1", ""),
                ("scopes-1", "nope"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("value=\"bad name\"") && r.body.contains(">kept comment</textarea>"));
    assert!(r.body.contains("name: name may only contain"));
    assert!(r.body.contains("value: value must not be empty"));
    assert!(r.body.contains("scopes: unknown scope"));
    // A name the store has: beside its row.
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("name-0", "DB_URL"),
                ("value-0", "typed-value-3e1d"),
                ("scopes-0", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already exists"), "{}", r.body);
    for body in [&page.body, &list.body, &r.body] {
        for value in ["value-one-9f2c", "value-two-77ab", "typed-value-3e1d"] {
            assert!(!body.contains(value));
        }
    }
    assert_eq!(h.secrets(&store).await.len(), 2, "nothing half-written");
}

#[tokio::test]
async fn search_paging_and_delete() {
    let h = Harness::new().await;
    let store = h.create_store("many").await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let mut pairs = vec![("csrf".to_owned(), csrf.clone())];
    for i in 0..30 {
        pairs.push((format!("name-{i}"), format!("S{i:02}")));
        pairs.push((format!("value-{i}"), "v".to_owned()));
        pairs.push((format!("scopes-{i}"), "workers".to_owned()));
        pairs.push((
            format!("comment-{i}"),
            if i == 7 {
                "needle".to_owned()
            } else {
                String::new()
            },
        ));
    }
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = h
        .post(&b, &format!("/dashboard/stores/{store}/secrets"), &pairs)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let first = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    assert!(first.body.contains("30 secrets"));
    assert!(first.body.contains("S00") && !first.body.contains("S29"));
    assert!(first.body.contains("Page 1 of 2"));
    let second = h
        .get(&b, &format!("/dashboard/stores/{store}?page=2"))
        .await;
    assert!(second.body.contains("S29") && !second.body.contains(">S00<"));
    let found = h
        .get(&b, &format!("/dashboard/stores/{store}?search=needle"))
        .await;
    assert!(found.body.contains("1 secret matching"), "{}", found.body);
    assert!(found.body.contains("S07") && !found.body.contains("S08"));
    // Delete: the name typed to confirm.
    let id = {
        let at = found.body.find("/secrets/").unwrap() + "/secrets/".len();
        found.body[at..at + 32].to_owned()
    };
    let delete = format!("/dashboard/stores/{store}/secrets/{id}/delete");
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "S7")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.secrets(&store).await.len(), 30);
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "S07")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!h.secrets(&store).await.iter().any(|(n, _)| n == "S07"));
}

#[tokio::test]
async fn the_dashboards_acts_are_audited_as_the_signed_in_token() {
    let h = Harness::new().await;
    let (admin_id, admin) = h.token_with_role("secrets_store_admin").await;
    let (reporter_id, reporter) = h.token_with_role("secrets_store_reporter").await;
    let b = h.sign_in(&admin).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "audited")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let rb = h.sign_in(&reporter).await;
    let rcsrf = h.get(&rb, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &rb,
            "/dashboard/stores",
            &[("csrf", &rcsrf), ("name", "refused")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (_, v) = h
        .api(
            axum::http::Method::GET,
            &format!("/client/v4/accounts/{}/audit_logs?per_page=100", h.account),
            &h.token,
            None,
        )
        .await;
    let entries = v["result"].as_array().expect("audit entries");
    let created = entries
        .iter()
        .find(|e| e["action"] == "create" && e["resource"]["store_name"] == "audited")
        .unwrap_or_else(|| panic!("no store create in {v}"));
    assert_eq!(created["outcome"], "success");
    assert_eq!(created["actor"]["token_id"], admin_id.as_str());
    let denied = entries
        .iter()
        .find(|e| e["actor"]["token_id"] == reporter_id.as_str() && e["action"] == "create")
        .unwrap_or_else(|| panic!("no refused create in {v}"));
    assert_ne!(denied["outcome"], "success", "{denied}");
}

#[tokio::test]
async fn secrets_filter_by_scope_and_sort() {
    let h = Harness::new().await;
    let store = h.create_store("sorted").await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "ALPHA"),
                ("value-0", "v"),
                ("scopes-0", "workers"),
                ("name-1", "OMEGA"),
                ("value-1", "v"),
                ("scopes-1", "ai_gateway"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = |q: &str| format!("/dashboard/stores/{store}?{q}");
    let all = h.get(&b, &page("")).await;
    assert!(all.body.find(">ALPHA<").unwrap() < all.body.find(">OMEGA<").unwrap());
    let desc = h.get(&b, &page("sort=name_desc")).await;
    assert!(desc.body.find(">OMEGA<").unwrap() < desc.body.find(">ALPHA<").unwrap());
    assert!(desc.body.contains("<option value=\"name_desc\" selected>"));
    let filtered = h.get(&b, &page("scope=ai_gateway")).await;
    assert!(filtered.body.contains(">OMEGA<") && !filtered.body.contains(">ALPHA<"));
    assert!(
        filtered
            .body
            .contains("<option value=\"ai_gateway\" selected>")
    );
    // An unknown scope or sort filters nothing out.
    let lenient = h.get(&b, &page("scope=nope&sort=%3Cx")).await;
    assert_eq!(lenient.status, StatusCode::OK);
    assert!(lenient.body.contains(">OMEGA<") && lenient.body.contains(">ALPHA<"));
}

#[tokio::test]
async fn a_secret_is_edited_and_duplicated_without_its_value_coming_back() {
    let h = Harness::new().await;
    let store = h.create_store("one").await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "TOKEN"),
                ("value-0", "first-value-51c0"),
                ("scopes-0", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let list = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    let at = list.body.find("/secrets/").unwrap() + "/secrets/".len();
    let id = list.body[at..at + 32].to_owned();
    let path = format!("/dashboard/stores/{store}/secrets/{id}");
    let page = h.get(&b, &path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Save changes") && page.body.contains("Duplicate"));
    assert!(page.body.contains(
        "<textarea id=\"edit-value\" name=\"value\" class=\"secret-value\" rows=\"2\" autocomplete=\"off\" autocapitalize=\"off\" spellcheck=\"false\""
    ));
    assert!(!page.body.contains("type=\"password\""));

    // A bad scope: the message beside the field, the comment kept, nothing changed.
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("value", "second-value-8d2e"),
                ("scopes", "bogus"),
                ("comment", "typed"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("scopes: unknown scope") && r.body.contains(">typed</textarea>"));
    // A new value, scopes and comment.
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("value", "second-value-8d2e"),
                ("scopes", "workers"),
                ("scopes", "ai_gateway"),
                ("comment", "rotated"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&b, &path).await;
    assert!(page.body.contains("workers, ai_gateway") && page.body.contains("rotated"));
    assert!(
        page.body.contains("<dt>Version</dt><dd>2</dd>"),
        "{}",
        page.body
    );
    // Scopes and comment only: the value is kept (no new version).
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("value", ""),
                ("scopes", "workers"),
                ("comment", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = h.get(&b, &path).await;
    assert!(
        page.body.contains("<dt>Version</dt><dd>2</dd>"),
        "{}",
        page.body
    );

    // Duplicate: a name taken is refused beside the field; a new one makes the copy.
    let dup = format!("{path}/duplicate");
    let r = h
        .post(
            &b,
            &dup,
            &[("csrf", &csrf), ("name", "TOKEN"), ("scopes", "workers")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already exists"));
    let r = h
        .post(
            &b,
            &dup,
            &[
                ("csrf", &csrf),
                ("name", "TOKEN_COPY"),
                ("scopes", "dex"),
                ("comment", "copy"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut names = h.secrets(&store).await;
    names.sort();
    assert_eq!(
        names,
        [
            ("TOKEN".to_owned(), String::new()),
            ("TOKEN_COPY".to_owned(), "copy".to_owned())
        ]
    );
    let copy = h.get(&b, r.location()).await;
    assert!(copy.body.contains("<h1>TOKEN_COPY</h1>") && copy.body.contains("dex"));
    for body in [&page.body, &copy.body] {
        assert!(!body.contains("first-value-51c0") && !body.contains("second-value-8d2e"));
    }

    // A reporter sees the secret but no form, and its forged edit is refused.
    let (_, reporter) = h.token_with_role("secrets_store_reporter").await;
    let rb = h.sign_in(&reporter).await;
    let page = h.get(&rb, &path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Save changes") && !page.body.contains("secret-value"));
    let rcsrf = page.csrf();
    let r = h
        .post(
            &rb,
            &path,
            &[("csrf", &rcsrf), ("value", "x"), ("scopes", "workers")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("secrets_store:edit"));
    let r = h
        .post(
            &rb,
            &dup,
            &[("csrf", &rcsrf), ("name", "MINE"), ("scopes", "workers")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.secrets(&store).await.len(), 2);
}

/// Values typed into the dashboard are stored exactly: a multi-line PEM block (sent as CRLF, as
/// a browser sends a textarea's line breaks) and `+ % & ü` and spaces, read back through a
/// bound service's runtime read; an edit too.
#[tokio::test]
async fn values_round_trip_exactly() {
    let h = Harness::new().await;
    let store = h.create_store("exact").await;
    let b = h.sign_in(&h.token).await;
    let csrf = h
        .get(&b, &format!("/dashboard/stores/{store}"))
        .await
        .csrf();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIB+/Vw==\nAAAA\n-----END PRIVATE KEY-----\n";
    let odd = " a + b %41 & ü  c ";
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "PEM"),
                ("value-0", &pem.replace('\n', "\r\n")),
                ("comment-0", "first line\r\nsecond line"),
                ("scopes-0", "workers"),
                ("name-1", "ODD"),
                ("value-1", odd),
                ("scopes-1", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (status, v) = h
        .api(
            axum::http::Method::POST,
            &format!("/client/v4/accounts/{}/secrets_store/services", h.account),
            &h.token,
            Some(serde_json::json!({
                "name": "reader",
                "secrets_store_secrets": [
                    { "binding": "PEM", "store_id": store, "secret_name": "PEM" },
                    { "binding": "ODD", "store_id": store, "secret_name": "ODD" },
                ],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let service = v["result"]["service_token"].as_str().unwrap().to_owned();
    let read = |binding: &'static str| {
        let service = service.clone();
        let h = &h;
        async move {
            let r = h
                .send(
                    axum::http::Request::get(format!("/runtime/v1/bindings/{binding}"))
                        .header(
                            axum::http::header::AUTHORIZATION,
                            format!("Bearer {service}"),
                        )
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body
        }
    };
    assert_eq!(read("PEM").await, pem);
    assert_eq!(read("ODD").await, odd);
    // A comment (a textarea too) keeps its line break as the field showed it.
    let (_, listed) = h
        .api(
            axum::http::Method::GET,
            &format!(
                "/client/v4/accounts/{}/secrets_store/stores/{store}/secrets?search=PEM",
                h.account
            ),
            &h.token,
            None,
        )
        .await;
    assert_eq!(
        listed["result"][0]["comment"], "first line\nsecond line",
        "{listed}"
    );
    // An edit stores its value exactly too.
    let list = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    let at = list.body.find("/secrets/").unwrap() + "/secrets/".len();
    let id = list.body[at..at + 32].to_owned();
    let path = format!("/dashboard/stores/{store}/secrets/{id}");
    let page = h.get(&b, &path).await;
    let edited = "line one\n  line two & ü %20+\n";
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &page.csrf()),
                ("value", &edited.replace('\n', "\r\n")),
                ("scopes", "workers"),
                ("comment", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let name = if page.body.contains(">PEM<") {
        "PEM"
    } else {
        "ODD"
    };
    assert_eq!(read(name).await, edited);
}
