//! The audit log page: entries newest first with their actor, filters, paging, details, the
//! verification of the chain (intact, and broken behind the server's back), and who may read it.

use axum::http::StatusCode;

use crate::support::{Browser, Harness};

/// Signs in as a super_admin named `name` (markup in it), and through the dashboard creates a
/// store, creates a secret, edits it and deletes it: (browser, token id, store id).
async fn acts(h: &Harness, name: &str) -> (Browser, String, String) {
    let (id, token) = h.named_token(name, "super_admin").await;
    let b = h.sign_in(&token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "audited")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let store = r.location().rsplit('/').next().unwrap().to_owned();
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "KEY"),
                ("value-0", "audit-value-7e1f"),
                ("scopes-0", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let list = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    let at = list.body.find("/secrets/").unwrap() + "/secrets/".len();
    let secret = list.body[at..at + 32].to_owned();
    let path = format!("/dashboard/stores/{store}/secrets/{secret}");
    let r = h
        .post(
            &b,
            &path,
            &[
                ("csrf", &csrf),
                ("value", "audit-value-2"),
                ("scopes", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = h
        .post(
            &b,
            &format!("{path}/delete"),
            &[("csrf", &csrf), ("confirm", "KEY")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    (b, id, store)
}

/// The rows of the page's table: (seq, actor, action, outcome), in page order.
fn rows(body: &str) -> Vec<(u64, String, String, String)> {
    let Some(start) = body.find("<tbody>") else {
        return Vec::new();
    };
    let tbody = &body[start..body.find("</tbody>").unwrap()];
    tbody
        .split("<tr>")
        .skip(1)
        .map(|row| {
            let cell = |class: &str| {
                let at = row.find(&format!("<td class=\"{class}")).unwrap();
                let rest = &row[at..];
                let open = rest.find('>').unwrap() + 1;
                let text = &rest[open..rest.find("</td>").unwrap()];
                // The actor is a link: its text.
                let text = match (text.find('>'), text.starts_with("<a")) {
                    (Some(i), true) => &text[i + 1..text.find("</a>").unwrap()],
                    _ => text,
                };
                text.trim().to_owned()
            };
            let seq = row["\n      <td>".len()..].split("</td>").next().unwrap();
            (
                seq.trim().parse().unwrap_or_else(|_| panic!("{row}")),
                cell("actor"),
                cell("action"),
                cell("outcome outcome-"),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_log_shows_the_dashboards_acts_newest_first_with_their_actor() {
    let h = Harness::new().await;
    let name = "<b>ops</b> & <img src=x onerror=alert(1)>";
    let (b, id, store) = acts(&h, name).await;
    let page = h.get(&b, "/dashboard/audit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("/dashboard/audit\" aria-current=\"page\"")
    );
    let shown = rows(&page.body);
    assert!(shown.len() >= 4, "{shown:?}");
    assert!(
        shown.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {shown:?}"
    );
    let escaped = "&#60;b&#62;ops&#60;/b&#62; &#38; &#60;img src=x onerror=alert(1)&#62;";
    let mine: Vec<_> = shown.iter().filter(|r| r.1 == escaped).collect();
    let actions: Vec<&str> = mine.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        actions,
        ["delete", "update", "create", "create"],
        "{shown:?}"
    );
    assert!(mine.iter().all(|r| r.3 == "success"));
    assert!(!page.body.contains("<b>ops") && !page.body.contains("<img src=x"));
    assert!(!page.body.contains("audit-value"), "no value in the log");
    // Each entry's details: its payload, escaped, and its hash.
    assert!(page.body.contains("<summary>Details</summary>"));
    assert!(
        page.body
            .contains("&#34;store_name&#34;: &#34;audited&#34;"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("/dashboard/audit?actor={id}")));

    // Filters: action, actor, store; each kept in the form and in the pager's links.
    let deletes = h.get(&b, "/dashboard/audit?action=delete").await;
    let got = rows(&deletes.body);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].2, "delete");
    assert!(deletes.body.contains("<option value=\"delete\" selected>"));
    let by_actor = h.get(&b, &format!("/dashboard/audit?actor={id}")).await;
    assert!(rows(&by_actor.body).iter().all(|r| r.1 == escaped));
    assert!(by_actor.body.contains(&format!("value=\"{id}\"")));
    let by_store = h
        .get(
            &b,
            &format!("/dashboard/audit?store_id={store}&action=create"),
        )
        .await;
    let got = rows(&by_store.body);
    assert_eq!(
        got.len(),
        2,
        "the store's and its secret's creation: {got:?}"
    );
    let in_future = h.get(&b, "/dashboard/audit?from=2099-01-01T00:00").await;
    assert!(rows(&in_future.body).is_empty());
    assert!(in_future.body.contains("No entries match"));
    let until_future = h
        .get(&b, "/dashboard/audit?to=2099-01-01T00%3A00%3A00Z")
        .await;
    assert_eq!(rows(&until_future.body).len(), shown.len());
}

#[tokio::test]
async fn bad_filters_show_the_apis_message_beside_the_field() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let r = h
        .get(
            &b,
            "/dashboard/audit?from=yesterday&actor=%3Cscript%3E&action=DROP&store_id=12",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for message in [
        "id=\"audit-from-error\" class=\"error\">from: must be an RFC 3339 date-time",
        "id=\"audit-actor-error\" class=\"error\">actor: ",
        "id=\"audit-action-error\" class=\"error\">action: must be a lowercase word",
        "id=\"audit-store-error\" class=\"error\">store_id: ",
    ] {
        assert!(r.body.contains(message), "{message}: {}", r.body);
    }
    assert!(
        r.body.contains("value=\"yesterday\""),
        "what was typed is kept"
    );
    assert!(r.body.contains("value=\"&#60;script&#62;\""));
    assert!(!r.body.contains("<script>"));
}

#[tokio::test]
async fn the_log_is_paged() {
    let h = Harness::new().await;
    let (_, token) = h.named_token("pager", "super_admin").await;
    let b = h.sign_in(&token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    for i in 0..30 {
        let r = h
            .post(
                &b,
                "/dashboard/stores",
                &[("csrf", &csrf), ("name", &format!("s{i:02}"))],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
    }
    let first = h
        .get(&b, "/dashboard/audit?action=create&outcome=success")
        .await;
    assert!(first.body.contains("Page 1 of 2"), "{}", first.body);
    assert_eq!(rows(&first.body).len(), 25);
    assert!(
        first
            .body
            .contains("href=\"/dashboard/audit?page=2&#38;action=create&#38;outcome=success\""),
        "the filters carry over: {}",
        first.body
    );
    let second = h
        .get(&b, "/dashboard/audit?page=2&action=create&outcome=success")
        .await;
    let got = rows(&second.body);
    assert!(!got.is_empty() && got.iter().all(|r| r.2 == "create"));
}

#[tokio::test]
async fn verifying_the_chain_says_ok_with_the_head_or_names_the_first_broken_entry() {
    let h = Harness::new().await;
    let (b, _, _) = acts(&h, "verifier").await;
    let r = h.get(&b, "/dashboard/audit/verify").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("The chain is intact."), "{}", r.body);
    let (_, v) = h
        .api(
            axum::http::Method::GET,
            &format!("/client/v4/accounts/{}/audit_logs/verify", h.account),
            &h.token,
            None,
        )
        .await;
    let head = v["result"]["head_seq"].as_u64().unwrap();
    let hash = v["result"]["head_hash"].as_str().unwrap();
    assert!(
        r.body.contains(&format!("Head: entry {head}")),
        "{}",
        r.body
    );
    assert!(r.body.contains(hash));

    // An entry edited in the file behind the server's back.
    let c = rusqlite::Connection::open(h.data_dir.join("coffer.db")).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let triggers: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for name in triggers {
        c.execute_batch(&format!("DROP TRIGGER \"{name}\";"))
            .unwrap();
    }
    let account = coffer_types::AccountId::parse(&h.account).unwrap();
    let edited = c
        .execute(
            "UPDATE audit SET action = 'read' WHERE account_id = ?1 AND seq = 3",
            rusqlite::params![account.as_bytes().to_vec()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(c);
    let r = h.get(&b, "/dashboard/audit/verify").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("The chain is broken."), "{}", r.body);
    assert!(r.body.contains("First broken entry: 3: "), "{}", r.body);
    assert!(!r.body.contains("The chain is intact."));
}

#[tokio::test]
async fn only_a_role_that_manages_the_account_reads_the_log() {
    let h = Harness::new().await;
    for role in [
        "secrets_store_reporter",
        "secrets_store_admin",
        "secrets_store_deployer",
    ] {
        let (_, token) = h.token_with_role(role).await;
        let b = h.sign_in(&token).await;
        for path in [
            "/dashboard/audit",
            "/dashboard/audit/verify",
            "/dashboard/audit?from=x",
        ] {
            let r = h.get(&b, path).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{role} {path}");
            assert!(r.body.contains("account:manage"), "{}", r.body);
            assert!(!r.body.contains("Verify the chain"));
        }
    }
}
