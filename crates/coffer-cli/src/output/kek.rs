//! The KEK: its versions' table and a rotation's progress.

use coffer_client::{KekRotationStarted, KekStatus};

use super::{Format, json_text, time};
use crate::table::{Table, one_line};

const VERSION_COLUMNS: [&str; 7] = [
    "Version",
    "KEK ID",
    "Provider",
    "State",
    "DEKs",
    "Instance keys",
    "Created",
];

/// `kek status`: the versions in use, then the rotation, if one is under way.
pub fn kek_status(status: &KekStatus, format: Format) -> String {
    if format.json() {
        return json_text(status);
    }
    let mut out = format!("Active KEK version: {}\n\n", status.active_version);
    let mut t = Table::new(&VERSION_COLUMNS);
    for v in &status.versions {
        t.row(vec![
            v.version.to_string(),
            one_line(&v.kek_id),
            one_line(&v.provider),
            one_line(&v.state),
            v.deks.to_string(),
            v.instance_keys.to_string(),
            time(&v.created),
        ]);
    }
    out.push_str(&t.render(format == Format::Wide));
    match &status.rotation {
        None => out.push_str("\nNo rotation under way.\n"),
        Some(r) => {
            out.push_str(&format!(
                "\nRotation from version {} to {} ({}, started {}): {} keys rewrapped, {} remaining.\n",
                r.from_version,
                r.to_version,
                one_line(&r.state),
                time(&r.started),
                r.rewrapped,
                r.remaining
            ));
            if let Some(e) = &r.error {
                out.push_str(&format!("Stopped: {}\n", one_line(e)));
            }
        }
    }
    if let Some(r) = &status.reseal {
        out.push_str(&format!(
            "Re-seal ({}): {} values re-sealed, {} remaining; {} DEKs destroyed, {} superseded versions deleted.\n",
            if r.running { "running" } else { "idle" },
            r.resealed,
            r.remaining,
            r.destroyed_deks,
            r.pruned_versions
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!("Last pass stopped: {}\n", one_line(e)));
        }
    }
    out
}

/// `kek rotate`: the new version, and whether the rewrap is done (`--wait`) or under way.
pub fn kek_rotated(started: &KekRotationStarted, waited: bool, format: Format) -> String {
    if format.json() {
        return json_text(started);
    }
    let head = format!(
        "KEK version {} ({}) is active.\n",
        started.active_version,
        one_line(&started.kek_id)
    );
    if waited {
        format!(
            "{head}Every key is rewrapped; version {} is retired.\n",
            started.from_version
        )
    } else {
        format!(
            "{head}The keys of version {} are being rewrapped in the background; \
             `coffer kek status` shows the progress.\n",
            started.from_version
        )
    }
}

/// `account kek` / `account set-kek`: which KEK wraps an account's DEKs. Ids and locations only.
pub fn account_kek(kek: &coffer_client::AccountKek, format: Format) -> String {
    if format.json() {
        return json_text(kek);
    }
    let mut out = match (&kek.provider, &kek.location) {
        (Some(provider), Some(location)) => format!(
            "Account {} has its own KEK {} ({}, {}), {}.\n",
            kek.account_id,
            one_line(&kek.kek_id),
            one_line(provider),
            one_line(location),
            one_line(&kek.state)
        ),
        _ => format!(
            "Account {} is wrapped by the instance KEK {}.\n",
            kek.account_id,
            one_line(&kek.kek_id)
        ),
    };
    for u in &kek.deks {
        out.push_str(&format!(
            "  {} DEKs wrapped by {}\n",
            u.deks,
            one_line(&u.kek_id)
        ));
    }
    out.push_str(&format!(
        "Rewrap onto the account KEK: {}\n",
        one_line(&kek.rewrap)
    ));
    if let Some(e) = &kek.error {
        out.push_str(&format!("Error: {}\n", one_line(e)));
    }
    out
}

#[cfg(test)]
mod tests {
    use coffer_client::{KekReseal, KekRotation, KekVersion};

    use super::*;

    fn status(rotation: Option<KekRotation>) -> KekStatus {
        KekStatus {
            active_version: 2,
            versions: vec![
                KekVersion {
                    version: 1,
                    kek_id: "file:0011223344556677".into(),
                    provider: "file".into(),
                    state: "retiring".into(),
                    deks: 40,
                    instance_keys: 4,
                    created: "2026-12-01T10:00:00.123456Z".into(),
                },
                KekVersion {
                    version: 2,
                    kek_id: "file:8899aabbccddeeff".into(),
                    provider: "file".into(),
                    state: "active".into(),
                    deks: 2,
                    instance_keys: 0,
                    created: "2026-12-06T10:00:00Z".into(),
                },
            ],
            rotation,
            reseal: None,
        }
    }

    #[test]
    fn status_shows_versions_and_progress() {
        let text = kek_status(
            &status(Some(KekRotation {
                state: "running".into(),
                from_version: 1,
                to_version: 2,
                rewrapped: 7,
                remaining: 44,
                started: "2026-12-06T10:00:00Z".into(),
                error: None,
            })),
            Format::Table,
        );
        assert!(text.starts_with("Active KEK version: 2\n"), "{text}");
        assert!(text.contains("file:0011223344556677"), "{text}");
        assert!(text.contains("retiring"), "{text}");
        assert!(text.contains("2026-12-01T10:00:00Z"), "{text}");
        assert!(
            text.contains("Rotation from version 1 to 2 (running, started 2026-12-06T10:00:00Z): 7 keys rewrapped, 44 remaining."),
            "{text}"
        );
        let idle = kek_status(&status(None), Format::Table);
        assert!(idle.contains("No rotation under way."), "{idle}");
        let json: serde_json::Value =
            serde_json::from_str(&kek_status(&status(None), Format::Json)).unwrap();
        assert_eq!(json["active_version"], 2);
        assert_eq!(json["versions"][0]["deks"], 40);
        assert!(json["rotation"].is_null());
        assert!(json.get("reseal").is_none());
    }

    #[test]
    fn status_shows_the_reseal_progress() {
        let mut s = status(None);
        s.reseal = Some(KekReseal {
            running: true,
            resealed: 120,
            remaining: 30,
            destroyed_deks: 2,
            pruned_versions: 5,
            error: None,
        });
        let text = kek_status(&s, Format::Table);
        assert!(
            text.contains("Re-seal (running): 120 values re-sealed, 30 remaining; 2 DEKs destroyed, 5 superseded versions deleted."),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&kek_status(&s, Format::Json)).unwrap();
        assert_eq!(json["reseal"]["running"], true);
        assert_eq!(json["reseal"]["resealed"], 120);
        assert_eq!(json["reseal"]["remaining"], 30);
    }

    #[test]
    fn rotated_says_whether_the_rewrap_is_done() {
        let started = KekRotationStarted {
            active_version: 3,
            kek_id: "file:aa".into(),
            from_version: 2,
        };
        assert!(kek_rotated(&started, false, Format::Table).contains("in the background"));
        assert!(kek_rotated(&started, true, Format::Table).contains("version 2 is retired"));
        let json: serde_json::Value =
            serde_json::from_str(&kek_rotated(&started, true, Format::Json)).unwrap();
        assert_eq!(json["active_version"], 3);
    }
}
