//! Nothing breaks a deployed service silently: `secret get` names the services that bind a
//! secret, `secret update --scopes` does not take a secret away from them unasked, `coffer
//! deploy` refuses the binding names `coffer run` refuses, and `coffer run` says what it does
//! not export. Against a real `coffer server` (helpers in `common`).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::*;

const KEY_VALUE: &str = "sk-bound-v4lue-7Hq";

/// A store `prod` holding `openai-key` (scopes workers, ai_gateway) and `lonely` (workers,
/// bound by nothing); service `app` (workers) binds `openai-key` as `OPENAI_KEY`, service `gw`
/// (ai_gateway) binds the whole store as `ALL`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Server,
    conn: Conn,
    store: String,
    key_id: String,
    lonely_id: String,
    app_token: String,
    gw_token: String,
}

fn fixture() -> Fixture {
    let (tmp, _data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    let create = |name: &str, scopes: &str| create_secret(&conn, &store, name, scopes, KEY_VALUE);
    let key_id = create("openai-key", "workers,ai_gateway");
    let lonely_id = create("lonely", "workers");
    let dir = tmp.path().to_owned();
    let deploy = |name: &str, text: String| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let v = conn
            .run(&["deploy", "--config", path.to_str().unwrap(), "--json"])
            .ok()
            .json();
        v["service_token"].as_str().unwrap().to_owned()
    };
    let app_token = deploy(
        "app",
        format!(
            "name = \"app\"\n[[secrets_store_secrets]]\nbinding = \"OPENAI_KEY\"\n\
             store_id = \"{store}\"\nsecret_name = \"openai-key\"\n"
        ),
    );
    let gw_token = deploy(
        "gw",
        format!(
            "name = \"gw\"\ntype = \"ai_gateway\"\n[[secrets_store_stores]]\nbinding = \"ALL\"\n\
             store_id = \"{store}\"\n"
        ),
    );
    Fixture {
        _tmp: tmp,
        dir,
        server,
        conn,
        store,
        key_id,
        lonely_id,
        app_token,
        gw_token,
    }
}

impl Fixture {
    fn scopes_of(&self, id: &str) -> Value {
        self.conn
            .run(&["secret", "get", &self.store, "--secret-id", id, "--json"])
            .ok()
            .json()["scopes"]
            .clone()
    }

    fn update_scopes(&self, id: &str, scopes: &str, extra: &[&str]) -> Out {
        let mut args = vec![
            "secret",
            "update",
            &self.store,
            "--secret-id",
            id,
            "--scopes",
            scopes,
        ];
        args.extend(extra);
        self.conn.run(&args)
    }

    fn app_reads(&self) -> u16 {
        runtime_get(
            &self.server.url,
            &self.app_token,
            "/runtime/v1/bindings/OPENAI_KEY",
        )
        .status
    }

    fn gw_reads(&self) -> u16 {
        runtime_get(
            &self.server.url,
            &self.gw_token,
            "/runtime/v1/stores/ALL/secrets/openai-key",
        )
        .status
    }
}

#[test]
fn secret_get_names_the_services_that_bind_the_secret() {
    let f = fixture();
    let v = f
        .conn
        .run(&[
            "secret",
            "get",
            &f.store,
            "--secret-id",
            &f.key_id,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["name"], "openai-key");
    let ids: Vec<String> = ["app", "gw"]
        .iter()
        .map(|name| {
            f.conn.run(&["service", "get", name, "--json"]).ok().json()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        v["bound_by"],
        json!([
            {"service": "app", "service_id": ids[0], "service_type": "workers",
             "binding": "OPENAI_KEY", "kind": "secret", "readable": true},
            {"service": "gw", "service_id": ids[1], "service_type": "ai_gateway",
             "binding": "ALL", "kind": "store", "readable": true},
        ])
    );
    // `lonely` is reached through gw's store binding only, and gw cannot read it (no scope).
    let v = f
        .conn
        .run(&[
            "secret",
            "get",
            &f.store,
            "--secret-id",
            &f.lonely_id,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        v["bound_by"],
        json!([{"service": "gw", "service_id": ids[1], "service_type": "ai_gateway",
                "binding": "ALL", "kind": "store", "readable": false}])
    );

    // The table: the secret, then one row per binding.
    let out = f
        .conn
        .run(&["secret", "get", &f.store, "--secret-id", &f.key_id])
        .ok();
    let rows = &table_rows(&out.stdout, "Service ")[1..];
    assert_eq!(
        rows,
        [
            vec!["app", "workers", "OPENAI_KEY", "yes"],
            vec!["gw", "ai_gateway", "ALL (store)", "yes"],
        ],
        "{out:#?}"
    );

    // A secret in another store that nothing binds.
    let other = create_store(&f.conn, "other");
    let id = create_secret(&f.conn, &other, "openai-key", "workers", "x");
    let out = f
        .conn
        .run(&["secret", "get", &other, "--secret-id", &id])
        .ok();
    assert!(out.stdout.ends_with("\nBound by no service.\n"), "{out:#?}");
    let v = f
        .conn
        .run(&["secret", "get", &other, "--secret-id", &id, "--json"])
        .ok()
        .json();
    assert_eq!(v["bound_by"], json!([]));
}

#[test]
fn removing_a_scope_a_service_needs_is_refused_without_yes() {
    let f = fixture();
    assert_eq!(f.app_reads(), 200);
    assert_eq!(f.gw_reads(), 200);

    // Without a terminal and without --yes: refused, naming the service, nothing changed.
    let out = f.update_scopes(&f.key_id, "ai_gateway", &["--comment", "c"]);
    let line = out.one_error_line(1);
    assert_eq!(
        line,
        "error: removing scope workers from secret \"openai-key\" takes it away from deployed \
         services: app (binding OPENAI_KEY, type workers); pass --yes to update it anyway"
    );
    assert_eq!(f.scopes_of(&f.key_id), json!(["workers", "ai_gateway"]));
    assert_eq!(f.app_reads(), 200);
    // Both services at once, store binding included.
    let out = f.update_scopes(&f.key_id, "dex", &[]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: removing scope workers, ai_gateway from secret \"openai-key\""),
        "{line}"
    );
    assert!(
        line.contains(
            "app (binding OPENAI_KEY, type workers), gw (store binding ALL, type ai_gateway)"
        ),
        "{line}"
    );
    assert_eq!(f.scopes_of(&f.key_id), json!(["workers", "ai_gateway"]));

    // Adding a scope, or keeping every needed one, asks nothing.
    f.update_scopes(&f.key_id, "workers,ai_gateway,dex", &[])
        .ok();
    f.update_scopes(&f.key_id, "ai_gateway,workers", &[]).ok();
    // A secret whose scope no service reads through can lose it: gw cannot read `lonely`.
    f.update_scopes(&f.lonely_id, "dex", &[]).ok();
    // A scope this CLI does not know does not turn the check off: the others are still
    // checked, and the server says what it makes of the unknown one.
    let line = f
        .update_scopes(&f.key_id, "ai_gateway,bogus", &[])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.starts_with(
            "error: removing scope workers from secret \"openai-key\" takes it away from \
             deployed services: app (binding OPENAI_KEY, type workers)"
        ),
        "{line}"
    );
    assert_eq!(f.scopes_of(&f.key_id), json!(["workers", "ai_gateway"]));
    let line = f
        .update_scopes(&f.key_id, "workers,ai_gateway,bogus", &[])
        .one_error_line(1)
        .to_owned();
    assert!(line.contains("bogus") && !line.contains("--yes"), "{line}");
    let line = f
        .update_scopes(&f.key_id, "ai_gateway,bogus", &["--yes"])
        .one_error_line(1)
        .to_owned();
    assert!(line.contains("bogus"), "{line}");
    assert_eq!(f.scopes_of(&f.key_id), json!(["workers", "ai_gateway"]));

    // --yes: done, with a warning naming the service that lost access; it cannot read now.
    let out = f
        .update_scopes(&f.key_id, "workers", &["--yes", "--json"])
        .ok();
    assert_eq!(out.json()["scopes"], json!(["workers"]));
    assert_eq!(
        out.stderr,
        "warning: secret \"openai-key\" no longer carries scope ai_gateway: gw (store binding \
         ALL, type ai_gateway) cannot read it any more\n"
    );
    assert_eq!(f.gw_reads(), 404);
    assert_eq!(f.app_reads(), 200);
    // gw no longer reads it, so removing ai_gateway again (it is gone) asks nothing.
    f.update_scopes(&f.key_id, "workers", &[]).ok();
    assert!(!f.server.log().contains(KEY_VALUE));
}

#[test]
fn deploy_refuses_the_binding_names_run_refuses_naming_them() {
    let f = fixture();
    let config = f.dir.join("reserved.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"reserved\"\n\
             [[secrets_store_secrets]]\nbinding = \"PATH\"\nstore_id = \"{store}\"\n\
             secret_name = \"openai-key\"\n\
             [[secrets_store_secrets]]\nbinding = \"MY_PATH\"\nstore_id = \"{store}\"\n\
             secret_name = \"openai-key\"\n\
             [[secrets_store_secrets]]\nbinding = \"java_tool_options\"\nstore_id = \"{store}\"\n\
             secret_name = \"openai-key\"\n\
             [[secrets_store_stores]]\nbinding = \"LD_PRELOAD\"\nstore_id = \"{store}\"\n",
            store = f.store
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = f.conn.run(&["deploy", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let reserved = "is reserved: an environment variable of that name changes how a program \
                    is found, loaded or run (docs/bindings.md lists the reserved names) (`coffer \
                    run` exports each binding as an environment variable)";
    assert_eq!(
        lines,
        [
            format!("error: {config}: \"secrets_store_secrets[0]\" binding \"PATH\" {reserved}"),
            format!(
                "error: {config}: \"secrets_store_secrets[2]\" binding \"java_tool_options\" {reserved}"
            ),
            format!(
                "error: {config}: \"secrets_store_stores[0]\" binding \"LD_PRELOAD\" {reserved}"
            ),
        ]
    );
    let list = f
        .conn
        .run(&["service", "list", "--name", "reserved", "--json"])
        .ok()
        .json();
    assert_eq!(list["result"], json!([]), "{list}");
}

#[test]
fn run_says_at_start_that_it_does_not_export_store_bindings() {
    let f = fixture();
    // gw has only a store binding: nothing to export, and a note on stderr saying so and why.
    let seen = f.dir.join("seen");
    let script = format!("env > '{}'", seen.display());
    let out = run(
        coffer_run(&f.server.url, &f.gw_token, &["sh", "-c", &script]),
        None,
    )
    .ok();
    assert_eq!(
        out.stderr,
        "note: coffer run does not export the store binding ALL: a store binding gives its \
         store's secrets by name, not a fixed set of variables; read them through the runtime API \
         (GET /runtime/v1/stores/ALL/secrets/NAME, or the SDK's env.store(\"ALL\")), or bind each \
         secret under its own name with [[secrets_store_secrets]]\n"
    );
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !env.contains(KEY_VALUE),
        "a store binding's secret was exported"
    );
    assert!(!env.lines().any(|l| l.starts_with("ALL=")), "{env}");

    // app has only a secret binding: exported, and nothing said.
    let script = format!("printf %s \"$OPENAI_KEY\" > '{}'", seen.display());
    let out = run(
        coffer_run(&f.server.url, &f.app_token, &["sh", "-c", &script]),
        None,
    )
    .ok();
    assert_eq!(out.stderr, "");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), KEY_VALUE);

    // Both kinds: the secret binding is exported, the store binding named.
    let config = f.dir.join("both.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"both\"\n\
             [[secrets_store_secrets]]\nbinding = \"OPENAI_KEY\"\nstore_id = \"{store}\"\n\
             secret_name = \"openai-key\"\n\
             [[secrets_store_stores]]\nbinding = \"SHARED\"\nstore_id = \"{store}\"\n\
             [[secrets_store_stores]]\nbinding = \"MORE\"\nstore_id = \"{store}\"\n",
            store = f.store
        ),
    )
    .unwrap();
    let deployed = f
        .conn
        .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
        .ok()
        .json();
    let token = deployed["service_token"].as_str().unwrap();
    let out = run(
        coffer_run(&f.server.url, token, &["sh", "-c", &script]),
        None,
    )
    .ok();
    assert!(
        out.stderr
            .starts_with("note: coffer run does not export the store bindings SHARED, MORE: "),
        "{out:#?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), KEY_VALUE);
}
