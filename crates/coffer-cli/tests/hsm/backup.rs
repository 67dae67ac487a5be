//! Backup and restore of a data dir whose KEK is in the token: `--kek-from` copies `kek.toml`
//! (the key stays in the HSM), and the restored dir serves through the same token.

use super::*;

#[test]
fn a_restored_dir_with_kek_toml_copied_serves_through_the_same_token() {
    let Some(hsm) =
        SoftHsm::new("a_restored_dir_with_kek_toml_copied_serves_through_the_same_token")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    let server = start_server(&hsm, &data);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let service_token = bound_secret(&conn, tmp.path(), "app", VALUE_A);
    assert_eq!(
        read_binding(&server, &service_token),
        (200, VALUE_A.to_owned())
    );

    let file = tmp.path().join("hsm.backup");
    let mut backup = hsm_cmd(
        &hsm,
        None,
        &["backup", "--data-dir", data.to_str().unwrap()],
    );
    backup.arg("--out").arg(&file);
    run(backup, None).ok();
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes
            .windows(USER_PIN.len())
            .any(|w| w == USER_PIN.as_bytes()),
        "the PIN is in the backup"
    );
    let kek_toml = std::fs::read(data.join("kek.toml")).unwrap();
    assert!(
        !bytes
            .windows(kek_toml.len())
            .any(|w| w == kek_toml.as_slice())
    );
    drop(server);

    let new = tmp.path().join("new");
    let restore_args = [
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        new.to_str().unwrap(),
        "--kek-from",
        data.to_str().unwrap(),
    ];
    // The keyed check opens the KEK in the token: without the PIN, restore is refused (and
    // leaves nothing), as a server start would be.
    let out = run(hsm_cmd(&hsm, None, &restore_args), None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("keyed check of the restored copy: the KEK copied does not open")
            && line.contains("COFFER_PKCS11_PIN"),
        "{line}"
    );
    assert!(!new.exists());
    let out = run(
        hsm_cmd(
            &hsm,
            Some(USER_PIN),
            &[
                "restore",
                "--from",
                file.to_str().unwrap(),
                "--data-dir",
                new.to_str().unwrap(),
                "--kek-from",
                data.to_str().unwrap(),
            ],
        ),
        None,
    )
    .ok();
    assert!(out.stdout.contains("copied kek.toml"), "{out:?}");
    assert!(
        out.stdout
            .contains("audit checkpoint MACs verified with that KEK"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(new.join("kek.toml")).unwrap(), kek_toml);
    assert!(!new.join("kek.key").exists());
    let server = start_server(&hsm, &new);
    assert_eq!(
        read_binding(&server, &service_token),
        (200, VALUE_A.to_owned())
    );
}
