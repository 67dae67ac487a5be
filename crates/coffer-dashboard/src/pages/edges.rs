//! The instance operator's edges page: every node with where it stands (its last feed request
//! to this instance: when, the position it had applied, how far behind the head it was) and
//! an alarm for one gone silent; register a node (its token shown once, with the feed key its
//! edge pins); revoke one (type its name).

use coffer_core::NodeContact;
use coffer_types::{NodeName, Timestamp, TokenId};

use super::*;
use crate::views::page_once;

/// An edge long-polls the feed for at most a minute, so one that follows asks at least that
/// often; silent for twice as long, it is flagged.
const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug)]
pub(crate) struct NodeRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub revoked: Option<String>,
    /// Where it stands, in words: "following", "N entries behind", "not seen by this instance".
    pub state: String,
    /// Gone silent: it asked before, and not for [`SILENT_AFTER`].
    pub alarm: bool,
    pub last_seen: String,
    pub applied: String,
    pub delete_error: Option<String>,
}

#[derive(askama::Template, Debug)]
#[template(path = "edges.html")]
pub(crate) struct Edges {
    pub layout: crate::views::Layout,
    pub csrf: String,
    pub once: String,
    pub nodes: Vec<NodeRow>,
    pub name: String,
    pub name_error: Option<String>,
    pub token_error: Option<String>,
}

/// A new node's token, shown this once, with the feed key (no `Debug`: it holds the value).
#[derive(askama::Template)]
#[template(path = "node_created.html")]
pub(crate) struct NodeCreated<'a> {
    pub layout: crate::views::Layout,
    pub name: String,
    pub id: String,
    pub feed_key: Option<String>,
    pub value: &'a str,
}

fn row(n: &coffer_storage::NodeRecord, contact: Option<NodeContact>, now: Timestamp) -> NodeRow {
    let silent = contact.is_some_and(|c| {
        now.unix_micros().saturating_sub(c.last_seen.unix_micros())
            > SILENT_AFTER.as_micros() as i64
    });
    let state = match (n.revoked, contact) {
        (Some(_), _) => "revoked".to_owned(),
        (None, None) => "not seen by this instance".to_owned(),
        (None, Some(_)) if silent => "silent".to_owned(),
        (None, Some(c)) if c.lag() == 0 => "following".to_owned(),
        (None, Some(c)) => format!("{} entries behind", c.lag()),
    };
    NodeRow {
        id: n.id.to_string(),
        name: n.name.clone(),
        created: when(n.created),
        revoked: n.revoked.map(when),
        alarm: n.revoked.is_none() && silent,
        state,
        last_seen: contact.map_or_else(|| "-".to_owned(), |c| when(c.last_seen)),
        applied: contact.map_or_else(
            || "-".to_owned(),
            |c| format!("{} of {}", c.applied_seq, c.head_seq),
        ),
        delete_error: None,
    }
}

/// What the page shows besides the list: the register form's input and error, and which
/// node's revoke failed and why.
#[derive(Default)]
struct EdgesForm {
    name: String,
    name_error: Option<String>,
    token_error: Option<String>,
    revoke: Option<(TokenId, String)>,
}

async fn render_edges(
    d: &crate::Inner,
    s: &Signed,
    form: EdgesForm,
    status: StatusCode,
) -> Response {
    let fleet = match d.coffer.fleet(&s.who).await {
        Ok(f) => f,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let now = Timestamp::now();
    let nodes = fleet
        .iter()
        .map(|(n, c)| {
            let mut r = row(n, *c, now);
            r.delete_error = form
                .revoke
                .as_ref()
                .filter(|(id, _)| *id == n.id)
                .map(|(_, e)| e.clone());
            r
        })
        .collect();
    page(
        status,
        &Edges {
            layout: layout_at("Edges".to_owned(), "edges", s),
            csrf: s.csrf.clone(),
            once: s.once(d),
            nodes,
            name: form.name,
            name_error: form.name_error,
            token_error: form.token_error,
        },
    )
}

/// `GET /edges` (`Coffer::fleet`, as `GET /client/v4/nodes`).
pub(crate) async fn edges(axum::extract::State(d): State, s: Signed) -> Response {
    render_edges(&d, &s, EdgesForm::default(), StatusCode::OK).await
}

/// `POST /edges`: register a node (`Coffer::create_node`, as `POST /client/v4/nodes`); the
/// answer shows its token once.
pub(crate) async fn create_node(
    axum::extract::State(d): State,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let typed = form.get("name").unwrap_or_default().to_owned();
    // A node's token, once its edge registers a key, is granted the replication key, which
    // opens every value: the session's own API token is asked for again, so that a stolen
    // cookie alone cannot register one.
    if !d
        .sessions
        .token_is(&s.session, form.get("token").unwrap_or_default())
    {
        let f = EdgesForm {
            name: typed,
            token_error: Some(
                "token: type this session's API token again to register a node".to_owned(),
            ),
            ..EdgesForm::default()
        };
        return render_edges(&d, &s, f, StatusCode::FORBIDDEN).await;
    }
    // The token asked again first: a mistyped one leaves the form's nonce unused.
    if let Some(r) = s.replayed(&d, &form) {
        return r;
    }
    let refused = |message: String, status| {
        let f = EdgesForm {
            name: typed.clone(),
            name_error: Some(message),
            ..EdgesForm::default()
        };
        render_edges(&d, &s, f, status)
    };
    let name = match NodeName::parse(typed.trim()) {
        Ok(n) => n,
        Err(e) => {
            return refused(
                format!("name: node name {e}"),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    match d.coffer.create_node(&s.who, name).await {
        Ok((record, token)) => page_once(
            StatusCode::OK,
            &NodeCreated {
                layout: layout_at("Edge registered".to_owned(), "edges", &s),
                name: record.name,
                id: record.id.to_string(),
                feed_key: d.coffer.feed_public_key().map(hex::encode),
                value: token.expose_secret(),
            },
        ),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            refused(message, status).await
        }
    }
}

/// `POST /edges/{id}/revoke`: the node's name typed to confirm (`Coffer::revoke_node`, as
/// `DELETE /client/v4/nodes/{id}`).
pub(crate) async fn revoke_node(
    axum::extract::State(d): State,
    Path(id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let Some(id) = id_of(&id, TokenId::parse) else {
        return not_found(&s, "node");
    };
    let node = match d.coffer.get_node(&s.who, id).await {
        Ok(n) => n,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let refused = |message: String, status| {
        let f = EdgesForm {
            revoke: Some((id, message)),
            ..EdgesForm::default()
        };
        render_edges(&d, &s, f, status)
    };
    if form.get("confirm").map(str::trim) != Some(node.name.as_str()) {
        let message = format!("type the node's name, {}, to confirm", node.name);
        return refused(message, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match d.coffer.revoke_node(&s.who, id).await {
        Ok(_) => Redirect::to(&format!("{BASE}/edges")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            refused(message, status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(revoked: bool) -> coffer_storage::NodeRecord {
        coffer_storage::NodeRecord {
            id: TokenId::from_bytes([7; 16]),
            name: "edge-1".into(),
            hash: [0; 32],
            created: Timestamp::from_unix_micros(0),
            revoked: revoked.then(|| Timestamp::from_unix_micros(1)),
        }
    }

    #[test]
    fn a_nodes_state_says_where_it_stands() {
        let now = Timestamp::from_unix_micros(1_000_000_000);
        let seen = |ago_ms: i64, applied: u64, head: u64| {
            Some(NodeContact {
                last_seen: Timestamp::from_unix_micros(1_000_000_000 - ago_ms * 1_000),
                applied_seq: applied,
                head_seq: head,
            })
        };
        let r = row(&node(false), None, now);
        assert_eq!(
            (r.state.as_str(), r.alarm, r.last_seen.as_str()),
            ("not seen by this instance", false, "-")
        );
        let r = row(&node(false), seen(5_000, 9, 9), now);
        assert_eq!(
            (r.state.as_str(), r.alarm, r.applied.as_str()),
            ("following", false, "9 of 9")
        );
        let r = row(&node(false), seen(5_000, 4, 9), now);
        assert_eq!((r.state.as_str(), r.alarm), ("5 entries behind", false));
        let r = row(&node(false), seen(121_000, 9, 9), now);
        assert_eq!((r.state.as_str(), r.alarm), ("silent", true));
        let r = row(&node(true), seen(121_000, 9, 9), now);
        assert_eq!(
            (r.state.as_str(), r.alarm),
            ("revoked", false),
            "a revoked node raises no alarm"
        );
    }
}
