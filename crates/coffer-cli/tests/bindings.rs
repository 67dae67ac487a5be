//! End-to-end tests of services and bindings: `coffer deploy`, `coffer service ...` and
//! `coffer run`, against a real `coffer server` (helpers in `common`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const OPENAI_VALUE: &str = "sk-openai-v4lue-Hn28sQ";
const DB_VALUE: &str = "postgres://u:p4ss-v4lue@db/x";

/// A store holding `openai-key` (scope workers) and `db-url` (scopes workers and ai_gateway),
/// and `gateway-only` (scope ai_gateway).
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Server,
    conn: Conn,
    store: String,
}

fn fixture() -> Fixture {
    let (tmp, _data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    for (name, scopes, value) in [
        ("openai-key", "workers", OPENAI_VALUE),
        ("db-url", "workers,ai_gateway", DB_VALUE),
        ("gateway-only", "ai_gateway", "gateway-v4lue"),
    ] {
        create_secret(&conn, &store, name, scopes, value);
    }
    let dir = tmp.path().to_owned();
    Fixture {
        _tmp: tmp,
        dir,
        server,
        conn,
        store,
    }
}

impl Fixture {
    fn write(&self, file: &str, text: &str) -> String {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// A wrangler.toml for service `name` binding `OPENAI_KEY` to `secret`.
    fn toml(&self, name: &str, secret: &str) -> String {
        self.write(
            &format!("{name}.toml"),
            &format!(
                r#"name = "{name}"
main = "src/index.js"
compatibility_date = "2025-04-01"

[[kv_namespaces]]
binding = "CACHE"
id = "0f2ac74b498b48028cb68387c421e279"

[[secrets_store_secrets]]
binding = "OPENAI_KEY"
store_id = "{store}"
secret_name = "{secret}"
"#,
                store = self.store
            ),
        )
    }

    /// Deploys `config` with `--json`; the service's JSON.
    fn deploy(&self, config: &str) -> serde_json::Value {
        self.conn
            .run(&["deploy", "--config", config, "--json"])
            .ok()
            .json()
    }

    /// `coffer run` with the service token in the environment.
    fn run_cmd(&self, token: &str, cmd: &[&str]) -> Command {
        let mut c = coffer_cmd();
        c.env_remove("COFFER_SERVICE_TOKEN")
            .env("COFFER_SERVICE_TOKEN", token)
            .env("COFFER_API_URL", &self.server.url)
            .arg("run")
            .arg("--")
            .args(cmd);
        c
    }

    fn run_with(&self, token: &str, cmd: &[&str]) -> Out {
        run(self.run_cmd(token, cmd), None)
    }
}

/// `sh -c SCRIPT` run by `coffer run`, writing what it saw to files in the fixture's dir.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_no_value(out: &Out) {
    for value in [OPENAI_VALUE, DB_VALUE, "gateway-v4lue"] {
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "a value was printed: {out:#?}"
        );
    }
}

fn token_of(deployed: &serde_json::Value) -> String {
    deployed["service_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no service_token in {deployed}"))
        .to_owned()
}

#[test]
fn deploy_from_toml_and_jsonc_and_redeploy_updates() {
    let f = fixture();
    let config = f.toml("ai-gateway", "openai-key");

    // First deploy, human output: the service, its binding, and the token once.
    let out = f.conn.run(&["deploy", "--config", &config]).ok();
    assert_no_value(&out);
    assert!(
        out.stdout
            .starts_with("Deployed service ai-gateway (created): type workers, 1 binding.\n"),
        "{out:#?}"
    );
    let binding_row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("OPENAI_KEY"))
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert_eq!(
        cells(binding_row),
        ["OPENAI_KEY", f.store.as_str(), "openai-key"]
    );
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Service token:"))
        .unwrap_or_else(|| panic!("{out:#?}"))
        .trim()
        .to_owned();
    assert!(token.starts_with("coffersvc_"), "{token}");
    assert!(out.stdout.contains("shown only now"), "{out:#?}");
    assert_eq!(out.stdout.matches(&token).count(), 1);

    // Redeploy: same service, no token.
    let v = f.deploy(&config);
    assert_eq!(v["first_deploy"], false, "{v}");
    assert!(v.get("service_token").is_none(), "{v}");
    assert_eq!(v["name"], "ai-gateway");
    let id = v["id"].as_str().unwrap().to_owned();
    let out = f.conn.run(&["deploy", "--config", &config]).ok();
    assert!(out.stdout.contains("(updated)"), "{out:#?}");
    assert!(!out.stdout.contains("coffersvc_"), "{out:#?}");

    // Redeploy with other bindings and another type: replaced.
    let jsonc = f.write(
        "ai-gateway.jsonc",
        &format!(
            r#"// the same service, now as JSONC
{{
  "name": "ai-gateway",
  "type": "ai_gateway", /* a gateway now */
  "secrets_store_secrets": [
    {{ "binding": "DB_URL", "store_id": "{store}", "secret_name": "db-url", }},
  ],
  "secrets_store_stores": [
    {{ "binding": "SHARED", "store_id": "{store}" }},
  ],
}}
"#,
            store = f.store
        ),
    );
    let v = f.deploy(&jsonc);
    assert_eq!(v["first_deploy"], false, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["type"], "ai_gateway");
    assert_eq!(
        v["secrets_store_secrets"],
        serde_json::json!([{"binding": "DB_URL", "store_id": f.store, "secret_name": "db-url"}])
    );
    assert_eq!(
        v["secrets_store_stores"],
        serde_json::json!([{"binding": "SHARED", "store_id": f.store}])
    );

    // A second service from a .json file.
    let json = f.write(
        "wrangler.json",
        &format!(
            r#"{{"name": "worker-2", "secrets_store_secrets": [
                {{"binding": "OPENAI_KEY", "store_id": "{}", "secret_name": "openai-key"}}]}}"#,
            f.store
        ),
    );
    let v = f.deploy(&json);
    assert_eq!(v["first_deploy"], true, "{v}");
    assert!(token_of(&v).starts_with("coffersvc_"));

    // service list / get, by name and by id.
    let out = f.conn.run(&["service", "list", "--json"]).ok();
    let list = out.json();
    assert_eq!(list["result_info"]["total_count"], 2, "{list}");
    let names: Vec<&str> = list["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ai-gateway", "worker-2"]);
    let list = f
        .conn
        .run(&["service", "list", "--name", "worker-2", "--json"])
        .ok()
        .json();
    assert_eq!(list["result"].as_array().unwrap().len(), 1, "{list}");
    let out = f.conn.run(&["service", "list"]).ok();
    assert!(out.stdout.starts_with("Name"), "{out:#?}");
    assert!(out.stdout.contains("2 services in all"), "{out:#?}");

    let by_name = f
        .conn
        .run(&["service", "get", "ai-gateway", "--json"])
        .ok()
        .json();
    let by_id = f.conn.run(&["service", "get", &id, "--json"]).ok().json();
    assert_eq!(by_name, by_id);
    assert_eq!(by_name["type"], "ai_gateway");
    let out = f.conn.run(&["service", "get", "ai-gateway"]).ok();
    assert!(out.stdout.contains("DB_URL"), "{out:#?}");
    assert!(
        out.stdout.contains("(every secret with scope ai_gateway)"),
        "{out:#?}"
    );
    let out = f.conn.run(&["service", "get", "no-such-service"]);
    let line = out.one_error_line(1);
    assert!(
        line.contains("no service named \"no-such-service\""),
        "{line}"
    );

    // Delete, by name.
    let out = f.conn.run(&["service", "delete", "worker-2"]).ok();
    assert!(
        out.stdout.starts_with("Deleted service worker-2"),
        "{out:#?}"
    );
    let list = f.conn.run(&["service", "list", "--json"]).ok().json();
    assert_eq!(list["result_info"]["total_count"], 1, "{list}");
    assert!(!f.server.log().contains(OPENAI_VALUE));
}

#[test]
fn config_problems_are_all_reported_before_any_request() {
    let f = fixture();
    let config = f.write(
        "wrangler.toml",
        r#"type = "worker"

[[secrets_store_secrets]]
binding = "MY-KEY"
store_id = "ABC"
secret_name = "openai-key"
extra = 1

[[secrets_store_secrets]]
store_id = "0123456789abcdef0123456789abcdef"
"#,
    );
    // An unreachable server: if any request were made, the error would say so.
    let dead = f.conn.as_(&f.conn.token, &f.conn.account);
    let mut cmd = coffer_cmd();
    cmd.args(["deploy", "--config", &config])
        .env("COFFER_API_URL", "http://127.0.0.1:1")
        .env("COFFER_API_TOKEN", &dead.token)
        .env("COFFER_ACCOUNT_ID", &dead.account);
    let out = run(cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let p = |s: &str| format!("error: {config}: {s}");
    assert_eq!(
        lines,
        [
            format!(
                "warning: {config}: Unexpected fields found in secrets_store_secrets[0] field: \"extra\""
            ),
            p(
                "the configuration has no \"name\": give the service's name (letters, digits, '-' \
               and '_', at most 63 characters)"
            ),
            p(
                "\"type\" should be one of workers, ai_gateway, dex, access, containers, websearch \
               but got \"worker\"."
            ),
            p(
                "\"secrets_store_secrets[0]\" binding \"MY-KEY\" must be a valid environment \
               variable name: letters, digits and underscores, not starting with a digit \
               (`coffer run` exports each binding as an environment variable)"
            ),
            p(
                "\"secrets_store_secrets[0]\" store_id \"ABC\" must be 32 lowercase hexadecimal \
               characters"
            ),
            p(
                "\"secrets_store_secrets[1]\" bindings must have a string \"binding\" field but got \
               {\"store_id\":\"0123456789abcdef0123456789abcdef\"}."
            ),
            p(
                "\"secrets_store_secrets[1]\" bindings must have a string \"secret_name\" field but \
               got {\"store_id\":\"0123456789abcdef0123456789abcdef\"}."
            ),
        ]
    );
    assert!(!out.stderr.contains("cannot reach"), "{out:#?}");

    // Syntax errors name the file and the line.
    let bad = f.write("bad.toml", "name = \"x\"\nsecrets_store_secrets = [\n");
    let out = f.conn.run(&["deploy", "--config", &bad]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with(&format!(
            "error: {bad}: invalid TOML at line 2, column 26: "
        )),
        "{line}"
    );
    let bad = f.write("bad.jsonc", "{\n  \"name\": \"x\",\n  oops\n}");
    let out = f.conn.run(&["deploy", "--config", &bad]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with(&format!("error: {bad}: invalid JSON at line 3, column 3")),
        "{line}"
    );
    let out = f
        .conn
        .run(&["deploy", "--config", "/nonexistent/wrangler.toml"]);
    assert!(out.one_error_line(1).contains("cannot read it"), "{out:#?}");
    let out = f.conn.run(&["deploy"]);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
}

#[test]
fn deploy_is_refused_without_the_role_the_secret_or_the_scope() {
    let f = fixture();
    let config = f.toml("ai-gateway", "openai-key");
    // Roles that may not bind.
    for role in ["secrets_store_admin", "secrets_store_reporter"] {
        let created = f
            .conn
            .run(&["token", "create", "--name", role, "--role", role, "--json"])
            .ok()
            .json();
        let token = created["value"].as_str().unwrap();
        let out = f
            .conn
            .as_(token, &f.conn.account)
            .run(&["deploy", "--config", &config]);
        let line = out.one_error_line(1);
        assert!(
            line.starts_with("error: [10021 binding_authorization_failed] "),
            "{line}"
        );
        assert!(
            line.contains(role) || line.contains("permission") || line.contains("role"),
            "{line}"
        );
    }
    // A deployer may.
    let created = f
        .conn
        .run(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "secrets_store_deployer",
            "--json",
        ])
        .ok()
        .json();
    let deployer = f
        .conn
        .as_(created["value"].as_str().unwrap(), &f.conn.account);
    let out = deployer
        .run(&["deploy", "--config", &config, "--json"])
        .ok();
    assert_eq!(out.json()["first_deploy"], true);

    // A secret that does not exist.
    let missing = f.toml("missing-secret", "no-such-secret");
    let out = f.conn.run(&["deploy", "--config", &missing]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: [10021 binding_authorization_failed] "),
        "{line}"
    );
    assert!(
        line.contains("OPENAI_KEY") && line.contains("no-such-secret"),
        "{line}"
    );
    // A secret without the service's type among its scopes.
    let unscoped = f.toml("unscoped", "gateway-only");
    let out = f.conn.run(&["deploy", "--config", &unscoped]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: [10021 binding_authorization_failed] "),
        "{line}"
    );
    assert!(
        line.contains("gateway-only") && line.contains("workers"),
        "{line}"
    );
    // Nothing was deployed by the refusals.
    let list = f.conn.run(&["service", "list", "--json"]).ok().json();
    assert_eq!(list["result_info"]["total_count"], 1, "{list}");
}

#[test]
fn run_puts_the_bindings_in_the_environment_and_exits_with_the_command_status() {
    let f = fixture();
    let config = f.write(
        "wrangler.toml",
        &format!(
            r#"name = "app"
[[secrets_store_secrets]]
binding = "OPENAI_KEY"
store_id = "{store}"
secret_name = "openai-key"

[[secrets_store_secrets]]
binding = "DATABASE_URL"
store_id = "{store}"
secret_name = "db-url"
"#,
            store = f.store
        ),
    );
    let token = token_of(&f.deploy(&config));
    let key_file = f.dir.join("key");
    let env_file = f.dir.join("env");
    let script = format!(
        "printf %s \"$OPENAI_KEY\" > '{}'; env > '{}'; exit 7",
        key_file.display(),
        env_file.display()
    );
    let out = f.run_with(&token, &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(7), "{out:#?}");
    assert_no_value(&out);
    assert_eq!(out.stderr, "", "{out:#?}");
    assert_eq!(read(&key_file), OPENAI_VALUE);
    let env = read(&env_file);
    assert!(
        env.lines().any(|l| l == format!("DATABASE_URL={DB_VALUE}")),
        "{env}"
    );
    assert!(!env.contains("COFFER_SERVICE_TOKEN"), "{env}");
    assert!(!env.contains(&token), "the token reached the child");

    // The flags win over the environment.
    let mut cmd = coffer_cmd();
    cmd.env("COFFER_SERVICE_TOKEN", "coffersvc_not_this_one")
        .env("COFFER_API_URL", "http://127.0.0.1:1")
        .args(["run", "--service-token", &token, "--api-url", &f.server.url])
        .args(["--", "sh", "-c", "test -n \"$OPENAI_KEY\" && exit 3"]);
    let out = run(cmd, None);
    assert_eq!(out.status.code(), Some(3), "{out:#?}");

    // A command that does not exist: 127, like a shell, naming it.
    let out = f.run_with(&token, &["no-such-command-xyz", "arg"]);
    let line = out.one_error_line(127);
    assert!(
        line.starts_with("error: cannot run \"no-such-command-xyz\": "),
        "{line}"
    );
    // One that cannot be run: 126.
    let not_exec = f.write("not-executable.sh", "#!/bin/sh\nexit 0\n");
    let out = f.run_with(&token, &[&not_exec]);
    out.one_error_line(126);

    // No command is a usage error; no token a clear one.
    let out = run(
        {
            let mut c = coffer_cmd();
            c.env("COFFER_SERVICE_TOKEN", &token).args(["run", "--"]);
            c
        },
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    let out = run(
        {
            let mut c = coffer_cmd();
            c.env_remove("COFFER_SERVICE_TOKEN")
                .env("COFFER_API_URL", &f.server.url)
                .args(["run", "--", "true"]);
            c
        },
        None,
    );
    assert!(
        out.one_error_line(1).contains("COFFER_SERVICE_TOKEN"),
        "{out:#?}"
    );

    // An API token is the wrong kind of token.
    let out = f.run_with(&f.conn.token, &["true"]);
    let line = out.one_error_line(1);
    assert!(line.contains("wrong kind of token"), "{line}");
    assert!(!f.server.log().contains(OPENAI_VALUE));
}

#[test]
fn run_becomes_the_command_so_signals_reach_it() {
    let f = fixture();
    let token = token_of(&f.deploy(&f.toml("app", "openai-key")));
    let marker = f.dir.join("started");
    let script = format!(
        "trap 'exit 42' TERM; echo $$ > '{}.tmp'; mv '{0}.tmp' '{0}'; \
         while :; do sleep 0.1; done",
        marker.display()
    );
    let mut child = f
        .run_cmd(&token, &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("coffer run ended early: {status:?}");
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shell has coffer's process id: coffer became it.
    assert_eq!(read(&marker).trim(), child.id().to_string());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "{status:?}");
}

#[test]
fn revoked_rotated_and_deleted_tokens_stop_working() {
    let f = fixture();
    let token = token_of(&f.deploy(&f.toml("app", "openai-key")));
    let ok = |token: &str| f.run_with(token, &["sh", "-c", "test -n \"$OPENAI_KEY\""]);
    ok(&token).ok();

    // Rotate: the new token works, the old one does not.
    let rotated = f
        .conn
        .run(&["service", "token", "rotate", "app", "--json"])
        .ok()
        .json();
    let new = rotated["service_token"].as_str().unwrap().to_owned();
    assert_ne!(new, token);
    assert_eq!(rotated["revoked"].as_array().unwrap().len(), 1, "{rotated}");
    let out = ok(&token);
    let line = out.one_error_line(1);
    assert!(line.contains("the service token was refused"), "{line}");
    ok(&new).ok();

    // --keep-previous: both work; human output shows the token once.
    let out = f
        .conn
        .run(&["service", "token", "rotate", "app", "--keep-previous"])
        .ok();
    let third = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Service token:"))
        .unwrap_or_else(|| panic!("{out:#?}"))
        .trim()
        .to_owned();
    assert!(
        out.stdout.contains("no other token was revoked"),
        "{out:#?}"
    );
    ok(&new).ok();
    ok(&third).ok();
    let tokens = f
        .conn
        .run(&["service", "token", "list", "app", "--json"])
        .ok()
        .json();
    let statuses: Vec<&str> = tokens["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "active").count(),
        2,
        "{tokens}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "revoked").count(),
        1,
        "{tokens}"
    );

    // Revoke one, then all.
    let third_id = tokens["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "active")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .find(|id| third.contains(id.as_str()))
        .unwrap_or_else(|| panic!("no active token id in {third:?}: {tokens}"));
    let out = f
        .conn
        .run(&["service", "token", "revoke", "app", "--token-id", &third_id])
        .ok();
    assert!(
        out.stdout.starts_with(&format!("Revoked token {third_id}")),
        "{out:#?}"
    );
    ok(&third).one_error_line(1);
    ok(&new).ok();
    let out = f
        .conn
        .run(&["service", "token", "revoke", "app", "--token-id", &third_id]);
    assert!(
        out.one_error_line(1)
            .starts_with("error: [1304 token_already_revoked] "),
        "{out:#?}"
    );
    let out = f.conn.run(&["service", "token", "revoke", "app"]).ok();
    assert!(
        out.stdout.starts_with("Revoked 1 token of service app"),
        "{out:#?}"
    );
    let out = ok(&new);
    assert!(out.one_error_line(1).contains("refused"), "{out:#?}");

    // A deleted service's tokens stop working too.
    let token = token_of(&f.deploy(&f.toml("gone", "openai-key")));
    ok(&token).ok();
    f.conn.run(&["service", "delete", "gone"]).ok();
    ok(&token).one_error_line(1);
}

/// Waits until `server`'s log has a line for which `found` holds; the log is written by a
/// thread of its own, so a line may arrive shortly after its response.
fn wait_for_line(server: &Server, found: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        if log.lines().any(&found) {
            return log;
        }
        assert!(Instant::now() < deadline, "no such line in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Successful runtime reads write no request line unless the server runs with `--access-log`;
/// refused ones are logged either way (a bad token, a binding the service lacks).
#[test]
fn successful_runtime_reads_are_logged_only_with_access_log_and_refusals_always() {
    let f = fixture();
    let token = token_of(&f.deploy(&f.toml("logged", "openai-key")));
    let ok_line =
        |l: &str| l.contains("path=/runtime/v1/bindings/OPENAI_KEY") && l.contains("status=200");
    let refused_line =
        |l: &str| l.contains("path=/runtime/v1/bindings/NOT_BOUND") && l.contains("status=404");
    let bad_token_line =
        |l: &str| l.contains("path=/runtime/v1/bindings/OPENAI_KEY") && l.contains("status=401");
    let read_all = |url: &str| {
        let ok = runtime_get(url, &token, "/runtime/v1/bindings/OPENAI_KEY");
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, OPENAI_VALUE.as_bytes())
        );
        let refused = runtime_get(url, &token, "/runtime/v1/bindings/NOT_BOUND");
        assert_eq!(refused.status, 404, "{refused:?}");
        let bad = runtime_get(
            url,
            "coffersvc_00000000000000000000000000000000_x",
            "/runtime/v1/bindings/OPENAI_KEY",
        );
        assert_eq!(bad.status, 401, "{bad:?}");
    };

    // Default: the refusals are logged, the successful read is not. The lines are written in
    // order, so once the last refusal's line is there, the read's would be too.
    read_all(&f.server.url);
    let log = wait_for_line(&f.server, bad_token_line);
    assert!(log.lines().any(refused_line), "{log}");
    assert!(
        !log.lines().any(ok_line),
        "a successful read was logged:\n{log}"
    );
    // Other requests keep their lines (here the deploy's).
    assert!(
        log.lines()
            .any(|l| l.contains("method=POST") && l.contains("status=")),
        "{log}"
    );

    // With --access-log (same data dir, so the old server must go first): every read is logged.
    let data = f.dir.join("data");
    drop(f.server);
    let server = Server::start_with(&data, &["--access-log"]);
    read_all(&server.url);
    let log = wait_for_line(&server, bad_token_line);
    assert!(log.lines().any(refused_line), "{log}");
    assert!(
        log.lines().any(ok_line),
        "the successful read was not logged:\n{log}"
    );
    assert!(
        !log.contains(OPENAI_VALUE) && !log.contains(&token),
        "{log}"
    );
}
