//! Edge nodes: their table, and the one output that shows a new node's token.

use coffer_client::{CreatedNode, Node, Page};
use zeroize::Zeroizing;

use super::{Format, json_text, page_json, time, time_or, with_token};
use crate::table::{Table, one_line};

const NODE_COLUMNS: [&str; 6] = [
    "Name",
    "ID",
    "Created",
    "Revoked",
    "Last seen",
    "Applied (lag)",
];

fn nodes_table(nodes: &[Node], format: Format) -> String {
    // Where each node stands comes first; its creation only with --wide.
    let mut t = Table::new(&NODE_COLUMNS)
        .flexible(&["Name"])
        .wide_only(&["Created"]);
    for node in nodes {
        // Its last feed request to the instance asked; "-" if none since it started.
        let (seen, applied) = match &node.contact {
            Some(c) => (time(&c.last_seen), format!("{} ({})", c.applied_seq, c.lag)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        t.row(vec![
            node.name.clone(),
            node.id.clone(),
            time(&node.created),
            time_or(node.revoked.as_deref(), "-"),
            seen,
            applied,
        ]);
    }
    t.render(format.wide())
}

pub fn node_list(page: &Page<Node>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return "No edge nodes registered.\n".to_owned();
    }
    nodes_table(&page.items, format)
}

/// `node create`: the only output that ever holds a node's token. Under `--json`, the node's
/// fields and `node_token`; otherwise the node, the token, and a warning that it is shown once.
/// The text is zeroized on drop.
pub fn node_created(created: &CreatedNode, format: Format) -> Zeroizing<String> {
    if format.json() {
        return with_token(created, Some(&created.node_token));
    }
    let mut text = Zeroizing::new(format!(
        "Registered edge node {name}.\n\
         \n\
         \x20 Node ID:     {id}\n\
         \x20 Node token:  ",
        name = one_line(&created.node.name),
        id = one_line(&created.node.id),
    ));
    // Escaped like everything else from the server, in case it is not a plain token.
    text.push_str(&Zeroizing::new(one_line(
        created.node_token.expose_secret(),
    )));
    text.push('\n');
    if let Some(key) = &created.feed_public_key {
        text.push_str(&format!("  Feed key:    {}\n", one_line(key)));
    }
    text.push_str(
        "\n\
         The node token is shown only now and cannot be recovered: store it now, in the edge\n\
         node's configuration. It can read the replication feed and nothing else.\n",
    );
    if created.feed_public_key.is_some() {
        text.push_str(
            "Give the edge the feed key too (coffer edge --feed-key KEY): it then applies only\n\
             what this control plane signed, from its first connection on.\n",
        );
    }
    text
}

/// `node revoke`: a confirmation, or the node (now with its `revoked` time) under `--json`.
pub fn node_revoked(node: &Node, format: Format) -> String {
    if format.json() {
        return json_text(node);
    }
    format!(
        "Revoked edge node {} ({}); its token no longer works.\n",
        one_line(&node.name),
        one_line(&node.id)
    )
}

#[cfg(test)]
mod tests {
    use coffer_client::ResultInfo;

    use super::*;

    fn sample_node(revoked: Option<&str>) -> Node {
        Node {
            id: "e".repeat(32),
            name: "edge-1".into(),
            created: "2025-01-01T00:00:00Z".into(),
            revoked: revoked.map(str::to_owned),
            contact: None,
        }
    }

    #[test]
    fn nodes_show_their_token_once_and_list_with_their_revocation() {
        let created = CreatedNode {
            node: sample_node(None),
            node_token: coffer_client::SecretValue::new("coffernode_x_s3cr3t".into()),
            feed_public_key: Some("f".repeat(64)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&node_created(&created, Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "e".repeat(32),
                "name": "edge-1",
                "created": "2025-01-01T00:00:00Z",
                "revoked": null,
                "node_token": "coffernode_x_s3cr3t",
                "feed_public_key": "f".repeat(64),
                "token": "coffernode_x_s3cr3t",
            })
        );
        let text = node_created(&created, Format::Table);
        assert_eq!(text.matches("coffernode_x_s3cr3t").count(), 1, "{}", *text);
        assert!(
            text.contains("  Node token:  coffernode_x_s3cr3t\n"),
            "{}",
            *text
        );
        assert!(text.contains(&format!("  Node ID:     {}\n", "e".repeat(32))));
        assert!(text.contains("store it now"), "{}", *text);
        assert!(
            text.contains(&format!("  Feed key:    {}\n", "f".repeat(64))),
            "{}",
            *text
        );
        assert!(text.contains("--feed-key KEY"), "{}", *text);
        assert!(text.lines().all(|l| l.len() <= 100), "{}", *text);

        let nodes = Page {
            items: vec![
                sample_node(Some("2025-01-02T00:00:00Z")),
                Node {
                    name: "edge-\u{1b}[31m2".into(),
                    contact: Some(coffer_client::NodeContact {
                        last_seen: "2025-01-03T00:00:00Z".into(),
                        applied_seq: 40,
                        head_seq: 42,
                        lag: 2,
                    }),
                    ..sample_node(None)
                },
            ],
            result_info: ResultInfo {
                page: 1,
                per_page: 2,
                count: 2,
                total_count: 2,
            },
        };
        let wide = node_list(&nodes, Format::Wide);
        for column in NODE_COLUMNS {
            assert!(wide.lines().next().unwrap().contains(column), "{wide}");
        }
        let table = node_list(&nodes, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "header, rule, two rows: {table}");
        assert!(!lines[0].contains("Created"), "only with --wide: {table}");
        assert!(lines[2].contains("2025-01-02T00:00:00Z"), "{table}");
        let cells = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            cells(lines[2])[2..],
            ["2025-01-02T00:00:00Z", "-", "-"],
            "never seen: {table}"
        );
        assert_eq!(
            cells(lines[3])[2..],
            ["-", "2025-01-03T00:00:00Z", "40 (2)"],
            "not revoked, seen at 40 with 2 to go: {table}"
        );
        assert!(!table.contains('\u{1b}'), "control characters are escaped");
        let v: serde_json::Value = serde_json::from_str(&node_list(&nodes, Format::Json)).unwrap();
        assert_eq!(v["result"][0]["revoked"], "2025-01-02T00:00:00Z");
        assert_eq!(v["result_info"]["total_count"], 2);
        let empty = Page {
            items: vec![],
            result_info: ResultInfo {
                count: 0,
                total_count: 0,
                ..nodes.result_info
            },
        };
        assert_eq!(
            node_list(&empty, Format::Table),
            "No edge nodes registered.\n"
        );

        let revoked = node_revoked(&sample_node(Some("2025-01-02T00:00:00Z")), Format::Table);
        assert_eq!(
            revoked,
            format!(
                "Revoked edge node edge-1 ({}); its token no longer works.\n",
                "e".repeat(32)
            )
        );
        let v: serde_json::Value =
            serde_json::from_str(&node_revoked(&sample_node(Some("t")), Format::Json)).unwrap();
        assert_eq!(v["revoked"], "t");
    }
}
