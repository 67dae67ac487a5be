//! One test per class of bad input, checking the message text, and the good cases in both
//! formats.

use super::*;

const STORE: &str = "0123456789abcdef0123456789abcdef";

fn problems(text: &str, format: Format) -> Vec<String> {
    match parse(text, format) {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(p) => p.problems,
    }
}

fn toml_problems(text: &str) -> Vec<String> {
    problems(text, Format::Toml)
}

fn json_problems(text: &str) -> Vec<String> {
    problems(text, Format::Jsonc)
}

#[test]
fn a_full_wrangler_toml_deploys_only_the_keys_coffer_uses() {
    let text = format!(
        r#"
name = "ai-gateway"
main = "src/index.js"
compatibility_date = 2025-04-01
type = "ai_gateway"
workers_dev = true

[vars]
GREETING = "hello"

[[kv_namespaces]]
binding = "KV"
id = "abc"

[[secrets_store_secrets]]
binding = "OPENAI_KEY"
store_id = "{STORE}"
secret_name = "openai-key"

[[secrets_store_secrets]]
binding = "_second_1"
store_id = "{STORE}"
secret_name = "other_key-2"

[[secrets_store_stores]]
binding = "SHARED"
store_id = "{STORE}"

[env.staging]
name = "ai-gateway-staging"
"#
    );
    let config = parse(&text, Format::Toml).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let d = config.deploy;
    assert_eq!(d.name, "ai-gateway");
    assert_eq!(d.kind.as_deref(), Some("ai_gateway"));
    assert_eq!(
        d.secrets_store_secrets,
        [
            SecretBinding {
                binding: "OPENAI_KEY".into(),
                store_id: STORE.into(),
                secret_name: "openai-key".into()
            },
            SecretBinding {
                binding: "_second_1".into(),
                store_id: STORE.into(),
                secret_name: "other_key-2".into()
            }
        ]
    );
    assert_eq!(
        d.secrets_store_stores,
        [StoreBinding {
            binding: "SHARED".into(),
            store_id: STORE.into()
        }]
    );
}

#[test]
fn jsonc_with_comments_and_trailing_commas_is_accepted() {
    let text = format!(
        r#"// wrangler.jsonc
{{
  /* the Worker */
  "name": "my-worker",
  "main": "src/index.ts",
  "compatibility_flags": ["nodejs_compat",],
  "secrets_store_secrets": [
    {{ "binding": "OPENAI_KEY", "store_id": "{STORE}", "secret_name": "openai-key", }}, // one
  ],
  "observability": {{ "enabled": true }},
}}
"#
    );
    let config = parse(&text, Format::Jsonc).unwrap();
    let d = config.deploy;
    assert_eq!(d.name, "my-worker");
    assert_eq!(d.kind, None);
    assert_eq!(d.secrets_store_secrets.len(), 1);
    assert!(d.secrets_store_stores.is_empty());
    // A plain JSON file with no bindings at all is fine too.
    let d = parse(r#"{"name": "bare"}"#, Format::Jsonc).unwrap().deploy;
    assert!(d.secrets_store_secrets.is_empty() && d.secrets_store_stores.is_empty());
}

#[test]
fn formats_are_chosen_by_extension() {
    assert_eq!(Format::of(Path::new("wrangler.toml")), Some(Format::Toml));
    assert_eq!(
        Format::of(Path::new("a/wrangler.jsonc")),
        Some(Format::Jsonc)
    );
    assert_eq!(Format::of(Path::new("wrangler.json")), Some(Format::Jsonc));
    assert_eq!(Format::of(Path::new("wrangler.yaml")), None);
    assert_eq!(Format::of(Path::new("wrangler")), None);
    let err = load(Path::new("/nonexistent/wrangler.yaml")).unwrap_err();
    assert!(
        err.problems[0].starts_with("unknown configuration format"),
        "{err:?}"
    );
    let err = load(Path::new("/nonexistent/wrangler.toml")).unwrap_err();
    assert!(err.problems[0].starts_with("cannot read it: "), "{err:?}");
}

#[test]
fn only_a_regular_file_of_at_most_1_mib_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let problem = |path: &Path| {
        let err = load(path).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err:?}");
        err.problems[0].clone()
    };
    let not_regular =
        "is not a regular file (a device, FIFO or socket): give the configuration file itself";
    // A link to a device: /dev/null reads as empty, /dev/zero never ends.
    for device in ["/dev/null", "/dev/zero"] {
        let link = tmp.path().join(format!("{}.toml", &device[5..]));
        std::os::unix::fs::symlink(device, &link).unwrap();
        assert_eq!(problem(&link), not_regular);
    }
    // A FIFO: opening it would wait for a writer.
    let fifo = tmp.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    assert_eq!(problem(&fifo), not_regular);
    let dir = tmp.path().join("dir.toml");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(problem(&dir), "is a directory, not a configuration file");

    let too_large = format!(
        "is larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), the most a configuration file may hold"
    );
    // A comment just past the limit, and one that is exactly at it.
    let path = tmp.path().join("big.toml");
    let mut text = "name = \"big\"\n#".to_owned();
    text.push_str(&"x".repeat(MAX_CONFIG_BYTES as usize + 1 - text.len()));
    std::fs::write(&path, &text).unwrap();
    assert_eq!(problem(&path), too_large);
    text.pop();
    std::fs::write(&path, &text).unwrap();
    assert_eq!(load(&path).unwrap().deploy.name, "big");
}

#[test]
fn syntax_errors_name_the_line_and_column() {
    let p = toml_problems("name = \"x\"\n\n[[secrets_store_secrets]]\nbinding = OPENAI_KEY\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("invalid TOML at line 4, column 11: "),
        "{p:?}"
    );
    assert!(!p[0].contains('\n'));

    let p = json_problems("{\n  \"name\": \"x\"\n  \"type\": \"workers\"\n}");
    // Where the comma should have been: right after the value before it.
    assert_eq!(p, ["invalid JSON at line 2, column 14: Expected comma"]);
    // JSONC is not JSON5: no single quotes, no unquoted keys.
    let p = json_problems("{\n 'name': 'x'\n}");
    assert!(
        p[0].starts_with("invalid JSON at line 2, column 2: "),
        "{p:?}"
    );
    let p = json_problems("{name: \"x\"}");
    assert!(
        p[0].starts_with("invalid JSON at line 1, column 2: "),
        "{p:?}"
    );
    let p = json_problems("{\"name\": \"x\"} {}");
    assert!(
        p[0].starts_with("invalid JSON at line 1, column 15: "),
        "{p:?}"
    );
    let p = json_problems("");
    assert_eq!(p, ["the configuration should be an object, but got null"]);
    let p = json_problems("[1, 2]");
    assert_eq!(p, ["the configuration should be an object, but got [1,2]"]);
}

#[test]
fn the_name_is_required_and_must_be_a_service_name() {
    assert_eq!(
        toml_problems("type = \"workers\""),
        [
            "the configuration has no \"name\": give the service's name (letters, digits, '-' and \
          '_', at most 63 characters)"
        ]
    );
    assert_eq!(
        toml_problems("name = 5"),
        ["Expected \"name\" to be of type string but got 5."]
    );
    assert_eq!(
        json_problems(r#"{"name": null}"#),
        ["Expected \"name\" to be of type string but got null."]
    );
    assert_eq!(
        toml_problems("name = \"my.worker\""),
        [
            "\"name\" \"my.worker\" is not a valid service name: it may only contain letters, \
          digits, underscores and dashes"
        ]
    );
    assert_eq!(
        toml_problems(&format!("name = \"{}\"", "w".repeat(64))),
        [format!(
            "\"name\" \"{}\" is not a valid service name: it must be at most 63 characters (got \
             64)",
            "w".repeat(64)
        )]
    );
    assert_eq!(
        toml_problems("name = \"\""),
        ["\"name\" \"\" is not a valid service name: it must not be empty"]
    );
}

#[test]
fn the_type_must_be_a_scope() {
    assert_eq!(
        toml_problems("name = \"w\"\ntype = \"worker\""),
        [
            "\"type\" should be one of workers, ai_gateway, dex, access, containers, websearch but \
          got \"worker\"."
        ]
    );
    assert_eq!(
        toml_problems("name = \"w\"\ntype = [\"workers\"]"),
        ["Expected \"type\" to be of type string but got [\"workers\"]."]
    );
    for scope in Scope::ALL {
        let d = parse(&format!("name = \"w\"\ntype = \"{scope}\""), Format::Toml)
            .unwrap()
            .deploy;
        assert_eq!(d.kind.as_deref(), Some(scope.as_str()));
    }
}

#[test]
fn binding_arrays_must_be_arrays_of_objects() {
    assert_eq!(
        toml_problems("name = \"w\"\nsecrets_store_secrets = 5"),
        ["The field \"secrets_store_secrets\" should be an array but got 5."]
    );
    // A single table instead of an array of tables: a common slip.
    assert_eq!(
        toml_problems(&format!(
            "name = \"w\"\n[secrets_store_stores]\nbinding = \"S\"\nstore_id = \"{STORE}\""
        )),
        [format!(
            "The field \"secrets_store_stores\" should be an array but got \
             {{\"binding\":\"S\",\"store_id\":\"{STORE}\"}}."
        )]
    );
    assert_eq!(
        json_problems(r#"{"name": "w", "secrets_store_secrets": [5, "x", null, true, 1.5]}"#),
        [
            "\"secrets_store_secrets\" bindings should be objects, but got 5",
            "\"secrets_store_secrets\" bindings should be objects, but got \"x\"",
            "\"secrets_store_secrets\" bindings should be objects, but got null",
            "\"secrets_store_secrets\" bindings should be objects, but got true",
            "\"secrets_store_secrets\" bindings should be objects, but got 1.5",
        ]
    );
    assert_eq!(
        json_problems(r#"{"name": "w", "secrets_store_stores": [7]}"#),
        ["\"secrets_store_stores\" bindings should be objects, but got 7"]
    );
}

#[test]
fn missing_and_mistyped_fields_are_each_reported_with_the_binding() {
    let p = json_problems(
        r#"{"name": "w", "secrets_store_secrets": [{"binding": "A", "store_id": 5}]}"#,
    );
    assert_eq!(
        p,
        [
            "\"secrets_store_secrets[0]\" bindings must have a string \"store_id\" field but got \
             {\"binding\":\"A\",\"store_id\":5}.",
            "\"secrets_store_secrets[0]\" bindings must have a string \"secret_name\" field but \
             got {\"binding\":\"A\",\"store_id\":5}.",
        ]
    );
    let p = toml_problems(&format!(
        "name = \"w\"\n[[secrets_store_secrets]]\nstore_id = \"{STORE}\"\nsecret_name = \"s\"\n\
         [[secrets_store_stores]]\nbinding = \"S\""
    ));
    assert_eq!(
        p,
        [
            format!(
                "\"secrets_store_secrets[0]\" bindings must have a string \"binding\" field but \
                 got {{\"store_id\":\"{STORE}\",\"secret_name\":\"s\"}}."
            ),
            "\"secrets_store_stores[0]\" bindings must have a string \"store_id\" field but got \
             {\"binding\":\"S\"}."
                .to_owned(),
        ]
    );
    // An array passes JavaScript's `typeof` test and fails on its fields, as in wrangler.
    let p = json_problems(r#"{"name": "w", "secrets_store_stores": [[]]}"#);
    assert_eq!(
        p,
        [
            "\"secrets_store_stores[0]\" bindings must have a string \"binding\" field but got [].",
            "\"secrets_store_stores[0]\" bindings must have a string \"store_id\" field but got [].",
        ]
    );
}

#[test]
fn unexpected_fields_are_warnings_as_in_wrangler() {
    let text = format!(
        r#"{{"name": "w",
            "secrets_store_secrets": [{{"binding": "A", "store_id": "{STORE}",
                "secret_name": "s", "remote": true, "value": 1}}],
            "secrets_store_stores": [{{"binding": "B", "store_id": "{STORE}",
                "secret_name": "s"}}]}}"#
    );
    let config = parse(&text, Format::Jsonc).unwrap();
    assert_eq!(
        config.warnings,
        [
            "Unexpected fields found in secrets_store_secrets[0] field: \"remote\",\"value\"",
            "Unexpected fields found in secrets_store_stores[0] field: \"secret_name\"",
        ]
    );
    assert_eq!(config.deploy.secrets_store_secrets.len(), 1);
    assert_eq!(config.deploy.secrets_store_stores.len(), 1);
    // Warnings come along with problems too.
    let err = parse(
        r#"{"name": "w", "secrets_store_stores": [{"binding": "B", "x": 1}]}"#,
        Format::Jsonc,
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(
        err.warnings,
        ["Unexpected fields found in secrets_store_stores[0] field: \"x\""]
    );
}

#[test]
fn binding_names_must_be_environment_variable_names() {
    let binding = |name: &str| {
        toml_problems(&format!(
            "name = \"w\"\n[[secrets_store_secrets]]\nbinding = {}\nstore_id = \"{STORE}\"\n\
             secret_name = \"s\"",
            json_string(name)
        ))
    };
    for bad in ["MY-KEY", "1KEY", "a b", "é", "A.B"] {
        assert_eq!(
            binding(bad),
            [format!(
                "\"secrets_store_secrets[0]\" binding {} must be a valid environment variable \
                 name: letters, digits and underscores, not starting with a digit (`coffer run` \
                 exports each binding as an environment variable)",
                json_string(bad)
            )],
            "{bad:?}"
        );
    }
    assert!(binding("")[0].contains("binding \"\" must not be empty"));
    assert!(binding(&"K".repeat(256))[0].contains("must be at most 255 characters (got 256)"));
    // Store bindings too.
    let p = toml_problems(&format!(
        "name = \"w\"\n[[secrets_store_stores]]\nbinding = \"my-store\"\nstore_id = \"{STORE}\""
    ));
    assert!(
        p[0].starts_with(
            "\"secrets_store_stores[0]\" binding \"my-store\" must be a valid environment variable"
        ),
        "{p:?}"
    );
}

#[test]
fn store_ids_and_secret_names_are_checked() {
    let p = toml_problems(
        "name = \"w\"\n[[secrets_store_secrets]]\nbinding = \"A\"\nstore_id = \"0123ABCD\"\n\
         secret_name = \"a b\"\n[[secrets_store_stores]]\nbinding = \"B\"\n\
         store_id = \"0123456789ABCDEF0123456789ABCDEF\"",
    );
    assert_eq!(
        p,
        [
            "\"secrets_store_secrets[0]\" store_id \"0123ABCD\" must be 32 lowercase hexadecimal \
             characters",
            "\"secrets_store_secrets[0]\" secret_name \"a b\" may only contain letters, digits, \
             underscores and dashes",
            "\"secrets_store_stores[0]\" store_id \"0123456789ABCDEF0123456789ABCDEF\" must be 32 \
             lowercase hexadecimal characters",
        ]
    );
}

#[test]
fn binding_names_are_unique_across_both_arrays() {
    let text = format!(
        r#"{{"name": "w",
            "secrets_store_secrets": [
                {{"binding": "A", "store_id": "{STORE}", "secret_name": "s1"}},
                {{"binding": "A", "store_id": "{STORE}", "secret_name": "s2"}},
                {{"binding": "B", "store_id": "{STORE}", "secret_name": "s3"}},
                {{"binding": "C", "store_id": 1}}
            ],
            "secrets_store_stores": [
                {{"binding": "B", "store_id": "{STORE}"}},
                {{"binding": "C", "store_id": "{STORE}"}},
                {{"binding": "D", "store_id": "{STORE}"}}
            ]}}"#
    );
    let p = json_problems(&text);
    assert_eq!(
        p,
        [
            "\"secrets_store_secrets[3]\" bindings must have a string \"store_id\" field but got \
             {\"binding\":\"C\",\"store_id\":1}.",
            "\"secrets_store_secrets[3]\" bindings must have a string \"secret_name\" field but \
             got {\"binding\":\"C\",\"store_id\":1}.",
            "A assigned to multiple Secrets Store Secret bindings.",
            "B assigned to Secrets Store Secret and Secrets Store bindings.",
            "C assigned to Secrets Store Secret and Secrets Store bindings.",
            "Bindings must have unique names, so that they can all be referenced in the service. \
             Please change your bindings to have unique names.",
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let p =
        toml_problems("type = \"nope\"\nsecrets_store_secrets = [5]\nsecrets_store_stores = \"x\"");
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].starts_with("the configuration has no \"name\""));
    assert!(p[1].starts_with("\"type\" should be one of"));
    assert!(p[2].starts_with("\"secrets_store_secrets\" bindings should be objects"));
    assert!(p[3].starts_with("The field \"secrets_store_stores\" should be an array"));
}

#[test]
fn echoed_values_are_short_and_on_one_line() {
    let long = "x".repeat(1000);
    let p = json_problems(&format!(
        r#"{{"name": "w", "secrets_store_secrets": [{{"binding": "{long}\n"}}]}}"#
    ));
    for problem in &p {
        assert!(problem.chars().count() < 400, "{problem}");
        assert!(!problem.contains('\n'), "{problem}");
        assert!(problem.contains('…'), "{problem}");
    }
    assert_eq!(Value::Float(5.0).echo(), "5");
    assert_eq!(Value::Float(-0.25).echo(), "-0.25");
    assert_eq!(Value::String("a\"b\n".into()).echo(), "\"a\\\"b\\n\"");
    assert_eq!(english_list(&["A", "B", "C"]), "A, B, and C");
}

#[test]
fn toml_dates_and_repeated_json_keys_behave_as_in_wrangler() {
    // A date where a string is expected is echoed as its text.
    assert_eq!(
        toml_problems("name = \"w\"\ntype = 2025-01-01T00:00:00Z"),
        [
            "\"type\" should be one of workers, ai_gateway, dex, access, containers, websearch but \
          got \"2025-01-01T00:00:00Z\"."
        ]
    );
    // JSON.parse keeps the last of repeated keys.
    let d = parse(r#"{"name": "first", "name": "second"}"#, Format::Jsonc)
        .unwrap()
        .deploy;
    assert_eq!(d.name, "second");
}

#[test]
fn bindings_under_env_sections_are_refused_rather_than_left_out() {
    // Only an env section: without the check, this would deploy no binding at all.
    let text = format!(
        r#"
name = "app"

[env.staging]
name = "app-staging"

[[env.production.secrets_store_secrets]]
binding = "OPENAI_KEY"
store_id = "{STORE}"
secret_name = "openai-key"
"#
    );
    assert_eq!(
        toml_problems(&text),
        [
            "env.production defines secrets_store_secrets; coffer deploy reads only the top-level \
          bindings (--env is not supported)"
        ]
    );
    let text = format!(
        r#"{{
  "name": "app",
  "secrets_store_secrets": [
    {{"binding": "A", "store_id": "{STORE}", "secret_name": "a"}}
  ],
  "env": {{
    "dev": {{"secrets_store_stores": [{{"binding": "S", "store_id": "{STORE}"}}]}}
  }}
}}"#
    );
    assert_eq!(
        json_problems(&text),
        [
            "env.dev defines secrets_store_stores; coffer deploy reads only the top-level bindings \
          (--env is not supported)"
        ]
    );
    // Other keys in env sections are still ignored.
    assert!(
        parse(
            "name = \"app\"\n[env.x]\nvars = { A = \"1\" }\n",
            Format::Toml
        )
        .is_ok()
    );
}
