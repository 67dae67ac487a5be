//! `audit list`: who did what, to what, with what outcome, and why a denial was one.
//!
//! Entries are read from the event as the server recorded it, by field name, so that a field
//! this CLI does not know is skipped rather than an error. To fit 100 columns, the default table
//! shows an outcome other than `success` after the action (`create denied`), a runtime read's
//! service as its actor, and ids cut to their first 8 characters; `--wide` shows every field
//! whole, the outcome in a column of its own.

use coffer_client::{AuditLogEntry, AuditVerification, Page};

use super::{Format, json_text, page_footer, page_json, time};
use crate::table::{Table, one_line};

/// Every column (`--wide`); the default leaves out `Seq`, `Outcome` (shown with the action),
/// `Request` and `Client`.
pub(super) const AUDIT_COLUMNS: [&str; 9] = [
    "Seq", "Time", "Actor", "Action", "Outcome", "Resource", "Detail", "Request", "Client",
];

/// A string at `path` in an audit event (`None` if absent, null, empty or not a string).
fn event_str<'a>(entry: &'a AuditLogEntry, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    let mut value = entry.event.get(*first)?;
    for key in rest {
        value = value.get(key)?;
    }
    value.as_str().filter(|s| !s.is_empty())
}

fn resource_str<'a>(entry: &'a AuditLogEntry, field: &str) -> Option<&'a str> {
    event_str(entry, &["resource", field])
}

/// An id as shown: whole with `--wide`, else its first 8 characters and an ellipsis.
fn short_id(id: &str, wide: bool) -> String {
    if wide || !crate::resolve::is_id(id) {
        id.to_owned()
    } else {
        format!("{}…", &id[..8])
    }
}

/// A runtime read: the actor is the service (through one of its tokens).
fn is_service_read(entry: &AuditLogEntry) -> bool {
    event_str(entry, &["action"]) == Some("access")
}

/// Who acted: the token's name and id, `ci (0123abcd…)` (names are not unique; `--actor` takes
/// the id), marked `operator` for the instance operator's token; for runtime reads, the service
/// and the id of the token it read with. A token's id alone when it has no name, unless it is
/// the resource itself (a failed login names the token it tried in the resource); else `-`.
fn audit_actor(entry: &AuditLogEntry, wide: bool) -> String {
    let id = event_str(entry, &["actor", "token_id"]);
    let name = event_str(entry, &["actor", "token_name"]).or_else(|| {
        is_service_read(entry)
            .then(|| resource_str(entry, "service_name"))
            .flatten()
    });
    let operator = entry
        .event
        .get("actor")
        .and_then(|a| a.get("operator"))
        .and_then(|o| o.as_bool())
        == Some(true);
    let marks: Vec<String> = [
        name.and(id).map(|id| short_id(id, wide)),
        operator.then(|| "operator".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let marks = if marks.is_empty() {
        String::new()
    } else {
        format!(" ({})", marks.join(", "))
    };
    match (name, id) {
        (Some(name), _) => format!("{name}{marks}"),
        (None, Some(id)) if resource_str(entry, "token_id") != Some(id) => {
            format!("{}{marks}", short_id(id, wide))
        }
        _ => "-".to_owned(),
    }
}

/// What was acted on: the resource's type and its name, else its id (`secret openai-key`,
/// `node edge-1.fra`, `account`).
fn audit_resource(entry: &AuditLogEntry, wide: bool) -> String {
    let field = |name: &str| resource_str(entry, name);
    let kind = field("type").unwrap_or("-");
    let what = match kind {
        "store" => field("store_name").or_else(|| field("store_id")),
        "secret" => field("secret_name").or_else(|| field("secret_id")),
        "token" => field("token_name").or_else(|| field("token_id")),
        "account" => field("account_name"),
        "service" => field("service_name").or_else(|| field("service_id")),
        "node" => field("node_name").or_else(|| field("node_id")),
        "service_token" => {
            let of = field("service_name").or_else(|| field("service_id"));
            return match of {
                Some(service) => format!("service token of {}", short_id(service, wide)),
                None => "service token".to_owned(),
            };
        }
        // A type this CLI does not know yet: the first name or id it carries.
        _ => [
            "secret_name",
            "store_name",
            "service_name",
            "node_name",
            "token_name",
            "account_name",
            "secret_id",
            "store_id",
            "service_id",
            "node_id",
            "token_id",
        ]
        .into_iter()
        .find_map(field),
    };
    match what {
        Some(w) => format!("{kind} {}", short_id(w, wide)),
        None => kind.to_owned(),
    }
}

/// Why, through what, how many, where: a denial's reason, the binding (`binding
/// ai-gateway.OPENAI_KEY`; `via OPENAI_KEY` for a runtime read, whose actor is the service),
/// then the facts particular to the action.
fn audit_detail(entry: &AuditLogEntry, wide: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let top = |key: &str| entry.event.get(key);
    if let Some(reason) = event_str(entry, &["reason"]) {
        parts.push(reason.to_owned());
    }
    match (
        resource_str(entry, "binding"),
        resource_str(entry, "service_name"),
    ) {
        (Some(binding), _) if is_service_read(entry) => parts.push(format!("via {binding}")),
        (Some(binding), Some(service)) => parts.push(format!("binding {service}.{binding}")),
        (Some(binding), None) => parts.push(format!("binding {binding}")),
        (None, _) => {}
    }
    if let Some(n) = top("reads").and_then(|v| v.as_u64()) {
        let mut reads = format!("{n} read{}", if n == 1 { "" } else { "s" });
        if let Some(edge) = event_str(entry, &["edge_node"]) {
            reads.push_str(&format!(" at {edge}"));
            if let Some(relay) = event_str(entry, &["edge_relay"]) {
                reads.push_str(&format!(" via {relay}"));
            }
        }
        parts.push(reads);
    }
    if top("value_modified").and_then(|v| v.as_bool()) == Some(true) {
        parts.push("value changed".to_owned());
    }
    if let Some(from) = event_str(entry, &["duplicated_from_id"]) {
        parts.push(format!("copy of {}", short_id(from, wide)));
    }
    if let Some(role) = event_str(entry, &["role"]) {
        parts.push(format!("role {role}"));
    }
    // An operator-token rotation: the tokens it retired.
    if let Some(ids) = top("revoked_token_ids").and_then(|v| v.as_array()) {
        let ids: Vec<String> = ids
            .iter()
            .filter_map(|id| id.as_str())
            .map(|id| short_id(id, wide))
            .collect();
        if !ids.is_empty() {
            parts.push(format!("revoked {}", ids.join(" ")));
        }
    }
    if top("force").and_then(|v| v.as_bool()) == Some(true) {
        parts.push("forced".to_owned());
    }
    match top("secrets_quota") {
        Some(serde_json::Value::Null) => parts.push("quota default".to_owned()),
        Some(q) if q.is_u64() => parts.push(format!("quota {q}")),
        _ => {}
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn audit_table(entries: &[AuditLogEntry], format: Format) -> String {
    let wide = format.wide();
    let mut t = Table::new(&AUDIT_COLUMNS)
        .wide_only(&["Seq", "Outcome", "Request", "Client"])
        .flexible(&["Actor", "Resource", "Detail"]);
    for e in entries {
        let text = |key: &str| event_str(e, &[key]).unwrap_or("-").to_owned();
        let action = match (wide, event_str(e, &["outcome"])) {
            (false, Some(outcome)) if outcome != "success" => {
                format!("{} {outcome}", text("action"))
            }
            _ => text("action"),
        };
        t.row(vec![
            e.seq.to_string(),
            event_str(e, &["time"]).map_or_else(|| "-".to_owned(), time),
            audit_actor(e, wide),
            action,
            text("outcome"),
            audit_resource(e, wide),
            audit_detail(e, wide),
            text("request_id"),
            text("client"),
        ]);
    }
    t.render(wide)
}

/// `audit list`: a table of entries and a page footer, or `{result, result_info}` under `--json`
/// (each entry exactly as the server sent it).
pub fn audit_list(page: &Page<AuditLogEntry>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() && page.result_info.total_count == 0 {
        return "No audit entries found.\n".to_owned();
    }
    audit_table(&page.items, format) + &page_footer(page, "entries")
}

/// `audit verify` of a log that checks out: counts and the head to record elsewhere. Under
/// `--json`, the verification result whatever it says.
pub fn audit_verification(v: &AuditVerification, format: Format) -> String {
    if format.json() {
        return json_text(v);
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let head = match (v.head_seq, &v.head_hash) {
        (Some(seq), Some(hash)) => format!("head #{seq} {}", one_line(hash)),
        (Some(seq), None) => format!("head #{seq}"),
        _ => "no head (the log is empty)".to_owned(),
    };
    format!(
        "audit log OK: {}, {}; {head}\n",
        plural(v.entries_checked, "entry", "entries"),
        plural(v.checkpoints_checked, "checkpoint", "checkpoints"),
    )
}

#[cfg(test)]
mod tests {
    use coffer_client::ResultInfo;
    use serde_json::json;

    use super::*;
    use crate::table::WIDTH;

    fn page<T>(items: Vec<T>, total: u64) -> Page<T> {
        Page {
            result_info: ResultInfo {
                page: 1,
                per_page: 10,
                count: items.len() as u64,
                total_count: total,
            },
            items,
        }
    }

    fn audit_entry(seq: u64, event: serde_json::Value) -> AuditLogEntry {
        AuditLogEntry {
            seq,
            hash: "ab".repeat(32),
            event: event.as_object().unwrap().clone(),
        }
    }

    /// What real entries look like: a change, a denial, a failed login, a runtime read at an
    /// edge, a bind and a node registration.
    fn audit_sample() -> Vec<AuditLogEntry> {
        let id = |c: &str| c.repeat(32);
        vec![
            audit_entry(
                6,
                json!({"time": "2025-01-01T00:00:05.123456Z", "action": "access",
                    "outcome": "success", "request_id": "",
                    "actor": {"token_id": id("f"), "operator": false},
                    "resource": {"type": "secret", "store_id": id("a"), "secret_id": id("b"),
                        "secret_name": "openai-key", "service_id": id("c"),
                        "service_name": "ai-gateway", "binding": "OPENAI_KEY"},
                    "reads": 3, "first_read": "2025-01-01T00:00:01Z",
                    "last_read": "2025-01-01T00:00:04Z", "edge_node_id": id("9"),
                    "edge_node": "edge-1.fra"}),
            ),
            audit_entry(
                5,
                json!({"time": "2025-01-01T00:00:04Z", "action": "bind", "outcome": "success",
                    "request_id": "4f1c2a9e0b7d3c51a2e6f809", "client": "127.0.0.1",
                    "actor": {"token_id": id("d"), "token_name": "deployer", "operator": false},
                    "resource": {"type": "secret", "store_id": id("a"),
                        "secret_name": "openai-key", "service_id": id("c"),
                        "service_name": "ai-gateway", "binding": "OPENAI_KEY"},
                    "service_type": "workers"}),
            ),
            audit_entry(
                4,
                json!({"time": "2025-01-01T00:00:03Z", "action": "create", "outcome": "denied",
                    "request_id": "4f1c2a9e0b7d3c51a2e6f80a", "client": "127.0.0.1",
                    "actor": {"token_id": id("e"), "token_name": "ci", "operator": false},
                    "resource": {"type": "secret", "store_id": id("a"),
                        "secret_name": "stripe-key"},
                    "reason": "missing permission secrets_store:edit"}),
            ),
            audit_entry(
                3,
                json!({"time": "2025-01-01T00:00:02Z", "action": "create", "outcome": "success",
                    "request_id": "4f1c2a9e0b7d3c51a2e6f80b", "client": "127.0.0.1",
                    "actor": {"token_id": id("1"), "token_name": "init", "operator": true},
                    "resource": {"type": "node", "node_id": id("9"), "node_name": "edge-1.fra"}}),
            ),
            audit_entry(
                2,
                json!({"time": "2025-01-01T00:00:01Z", "action": "create", "outcome": "success",
                    "request_id": "req-2",
                    "actor": {"token_id": id("1"), "token_name": "init", "operator": true},
                    "resource": {"type": "secret", "store_id": id("a"),
                        "secret_id": id("b"), "secret_name": "openai\u{1b}[2J"}}),
            ),
            audit_entry(
                1,
                json!({"time": "2025-01-01T00:00:00Z", "action": "login",
                    "outcome": "denied", "request_id": "",
                    "actor": {"token_id": id("e"), "operator": false},
                    "resource": {"type": "token", "token_id": id("e")},
                    "reason": "API token has been revoked"}),
            ),
        ]
    }

    /// The cells of a rendered row (columns are two or more spaces apart).
    fn cells(line: &str) -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Each sample entry as its own one-row table within 100 columns: every cell whole but the
    /// longest details (whole with `--wide`).
    #[test]
    fn each_row_names_actor_resource_binding_and_reason_in_100_columns() {
        let expected: [&[&str]; 6] = [
            // A runtime read at an edge: the service reads through its binding, with a token.
            &[
                "2025-01-01T00:00:05Z",
                "ai-gateway (ffffffff…)",
                "access",
                "secret openai-key",
                "via OPENAI_KEY, 3 reads at…",
            ],
            &[
                "2025-01-01T00:00:04Z",
                "deployer (dddddddd…)",
                "bind",
                "secret openai-key",
                "binding ai-gateway.OPENAI_KEY",
            ],
            &[
                "2025-01-01T00:00:03Z",
                "ci (eeeeeeee…)",
                "create denied",
                "secret stripe-key",
                "missing permission secrets_…",
            ],
            &[
                "2025-01-01T00:00:02Z",
                "init (11111111…, operator)",
                "create",
                "node edge-1.fra",
                "-",
            ],
            &[
                "2025-01-01T00:00:01Z",
                "init (11111111…, operator)",
                "create",
                "secret openai\\u{1b}[2J",
                "-",
            ],
            // A failed login: the token tried is the resource.
            &[
                "2025-01-01T00:00:00Z",
                "-",
                "login denied",
                "token eeeeeeee…",
                "API token has been revoked",
            ],
        ];
        for (entry, want) in audit_sample().into_iter().zip(expected) {
            let out = audit_list(&page(vec![entry], 1), Format::Table);
            let mut lines = out.lines();
            assert_eq!(
                cells(lines.next().unwrap()),
                ["Time", "Actor", "Action", "Resource", "Detail"]
            );
            lines.next();
            let line = lines.next().unwrap();
            assert!(line.chars().count() <= WIDTH, "{line}");
            assert_eq!(cells(line), want);
            assert_eq!(
                lines.next(),
                Some("page 1 of 1 (10 per page, 1 entry in all)")
            );
            assert!(!out.contains('\u{1b}'));
        }
        assert_eq!(
            audit_list(&page(vec![], 0), Format::Table),
            "No audit entries found.\n"
        );
    }

    /// Together, long cells are cut to fit; `--wide` shows them whole.
    #[test]
    fn a_page_of_entries_fits_100_columns() {
        let out = audit_list(&page(audit_sample(), 6), Format::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2 + 6 + 1, "{out}");
        for line in &lines {
            assert!(line.chars().count() <= WIDTH, "{} wide: {line}", line.len());
        }
        for (line, action) in lines[2..8].iter().zip([
            "access",
            "bind",
            "create denied",
            "create",
            "create",
            "login denied",
        ]) {
            let row = cells(line);
            assert!(row[0].starts_with("2025-01-01T00:00:0"), "{line}");
            assert_eq!(row[2], action, "{line}");
        }
        assert!(out.contains('…'), "{out}");
        let wide = audit_list(&page(audit_sample(), 6), Format::Wide);
        for whole in [
            "binding ai-gateway.OPENAI_KEY",
            "missing permission secrets_store:edit",
            "via OPENAI_KEY, 3 reads at edge-1.fra",
            &format!("token {}", "e".repeat(32)),
        ] {
            assert!(wide.contains(whole), "{wide}");
        }
        assert!(!wide.contains('…'), "{wide}");
    }

    #[test]
    fn wide_adds_the_sequence_number_request_and_client() {
        let out = audit_list(&page(audit_sample(), 6), Format::Wide);
        let mut lines = out.lines();
        assert_eq!(cells(lines.next().unwrap()), AUDIT_COLUMNS);
        lines.next();
        let row = cells(lines.nth(1).unwrap());
        assert_eq!(row[0], "5");
        assert_eq!(row[7..], ["4f1c2a9e0b7d3c51a2e6f809", "127.0.0.1"]);
    }

    #[test]
    fn resources_fall_back_from_names_to_ids() {
        let resource =
            |r: serde_json::Value| audit_resource(&audit_entry(1, json!({"resource": r})), true);
        let s = "a".repeat(32);
        assert_eq!(
            resource(json!({"type": "store", "store_id": s, "store_name": "prod"})),
            "store prod"
        );
        assert_eq!(
            resource(json!({"type": "store", "store_id": s})),
            format!("store {s}")
        );
        assert_eq!(
            resource(json!({"type": "account", "account_name": "team-b"})),
            "account team-b"
        );
        assert_eq!(resource(json!({"type": "account"})), "account");
        assert_eq!(
            resource(json!({"type": "service", "service_id": s, "service_name": "api"})),
            "service api"
        );
        assert_eq!(
            resource(json!({"type": "service_token", "service_id": s, "service_name": "api"})),
            "service token of api"
        );
        assert_eq!(
            resource(
                json!({"type": "store", "store_id": s, "service_name": "api",
                "binding": "ALL"})
            ),
            format!("store {s}")
        );
        assert_eq!(
            resource(json!({"type": "binding", "store_id": s})),
            format!("binding {s}")
        );
        assert_eq!(resource(json!(null)), "-");
        assert_eq!(
            audit_resource(
                &audit_entry(1, json!({"resource": {"type": "store", "store_id": s}})),
                false
            ),
            "store aaaaaaaa…"
        );
        assert_eq!(audit_actor(&audit_entry(1, json!({})), false), "-");
        let other = json!({"actor": {"token_id": "f".repeat(32)}});
        assert_eq!(
            audit_actor(&audit_entry(1, other.clone()), false),
            "ffffffff…"
        );
        assert_eq!(audit_actor(&audit_entry(1, other), true), "f".repeat(32));
    }

    #[test]
    fn actors_are_named_with_their_id_and_the_operator_marked() {
        let actor = |a: serde_json::Value, wide: bool| {
            audit_actor(&audit_entry(1, json!({"actor": a})), wide)
        };
        let (d, f) = ("d".repeat(32), "f".repeat(32));
        // Two tokens of one name are told apart by their ids.
        let ci = json!({"token_id": d, "token_name": "ci", "operator": false});
        assert_eq!(actor(ci.clone(), false), "ci (dddddddd…)");
        assert_eq!(actor(ci, true), format!("ci ({d})"));
        let other = json!({"token_id": f, "token_name": "ci", "operator": false});
        assert_eq!(actor(other, false), "ci (ffffffff…)");
        let op = json!({"token_id": d, "token_name": "init", "operator": true});
        assert_eq!(actor(op.clone(), false), "init (dddddddd…, operator)");
        assert_eq!(actor(op, true), format!("init ({d}, operator)"));
        let nameless = json!({"token_id": d, "operator": true});
        assert_eq!(actor(nameless, false), "dddddddd… (operator)");
        assert_eq!(actor(json!({"operator": true}), false), "-");
    }

    #[test]
    fn details_say_what_changed() {
        let detail = |e: serde_json::Value| audit_detail(&audit_entry(1, e), true);
        assert_eq!(detail(json!({"value_modified": true})), "value changed");
        assert_eq!(detail(json!({"value_modified": false})), "-");
        assert_eq!(
            detail(json!({"duplicated_from_id": "b".repeat(32)})),
            format!("copy of {}", "b".repeat(32))
        );
        assert_eq!(detail(json!({"role": "super_admin"})), "role super_admin");
        assert_eq!(
            detail(json!({"role": "super_admin", "revoked_token_ids": ["c".repeat(32)]})),
            format!("role super_admin, revoked {}", "c".repeat(32))
        );
        assert_eq!(
            audit_detail(
                &audit_entry(
                    1,
                    json!({"revoked_token_ids": ["c".repeat(32), "d".repeat(32)]})
                ),
                false
            ),
            "revoked cccccccc… dddddddd…"
        );
        assert_eq!(detail(json!({"force": true})), "forced");
        assert_eq!(detail(json!({"secrets_quota": 5})), "quota 5");
        assert_eq!(detail(json!({"secrets_quota": null})), "quota default");
        assert_eq!(
            detail(
                json!({"action": "access", "reason": "scope_denied", "reads": 1,
                "edge_node": "e1", "edge_relay": "r1",
                "resource": {"type": "secret", "service_name": "api", "binding": "K"}})
            ),
            "scope_denied, via K, 1 read at e1 via r1"
        );
        assert_eq!(
            detail(json!({"action": "unbind",
                "resource": {"type": "store", "service_name": "api", "binding": "ALL"}})),
            "binding api.ALL"
        );
    }

    #[test]
    fn json_keeps_entries_as_sent() {
        let out = audit_list(&page(audit_sample(), 7), Format::Json);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"][0]["seq"], 6);
        assert_eq!(v["result"][0]["hash"], "ab".repeat(32));
        assert_eq!(v["result"][1]["actor"]["token_name"], "deployer");
        assert_eq!(v["result"][5]["reason"], "API token has been revoked");
        assert_eq!(v["result_info"]["total_count"], 7);
    }

    #[test]
    fn audit_verification_states_counts_and_head() {
        let mut v = AuditVerification {
            ok: true,
            entries_checked: 12,
            checkpoints_checked: 1,
            head_seq: Some(12),
            head_hash: Some("cd".repeat(32)),
            first_bad: None,
        };
        assert_eq!(
            audit_verification(&v, Format::Table),
            format!(
                "audit log OK: 12 entries, 1 checkpoint; head #12 {}\n",
                "cd".repeat(32)
            )
        );
        let j: serde_json::Value =
            serde_json::from_str(&audit_verification(&v, Format::Json)).unwrap();
        assert_eq!(j["ok"], true);
        assert_eq!(j["entries_checked"], 12);
        assert_eq!(j["head_hash"], "cd".repeat(32));
        assert_eq!(j["first_bad"], serde_json::Value::Null);

        v.entries_checked = 0;
        v.checkpoints_checked = 0;
        v.head_seq = None;
        v.head_hash = None;
        assert_eq!(
            audit_verification(&v, Format::Table),
            "audit log OK: 0 entries, 0 checkpoints; no head (the log is empty)\n"
        );
    }
}
