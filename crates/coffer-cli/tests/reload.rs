//! SIGHUP reloads what `coffer server` and `coffer edge` read from files: the server's TLS
//! certificate and key, and the CA bundle an edge trusts for its upstreams. Real processes, a
//! private CA rolled over from one root to another, and real signals.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// How long a reload or a replicated write may take.
const WAIT: Duration = Duration::from_secs(30);

/// A private CA and a certificate it issued for 127.0.0.1, as PEM.
struct Issued {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn issue() -> Issued {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Issued {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Replaces a file the way deployment tools do: a new file renamed over it.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn hangup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_for(what: &str, logs: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {WAIT:?}; logs:\n{}", logs());
}

/// `GET url`, trusting only `ca_pem`, on a new connection; the body as JSON if it answered.
fn get_json(ca_pem: Option<&str>, url: &str) -> Option<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = reqwest::Client::builder().pool_max_idle_per_host(0);
        if let Some(pem) = ca_pem {
            client =
                client.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()]);
        }
        let res = client.build().unwrap().get(url).send().await.ok()?;
        res.json().await.ok()
    })
}

/// The edge's log lines of CA reloads asked for (by SIGHUP) and done.
fn ca_reloads_asked(edge: &Server) -> usize {
    edge.log()
        .lines()
        .filter(|l| l.contains("reloaded") && l.contains("upstream CA") && l.contains("asked"))
        .count()
}

/// The edge's log lines saying it refused an upstream's certificate (rustls: "invalid peer
/// certificate"; the two CAs share a name, so the old one is found and its signature fails).
fn refused_certificate(edge: &Server) -> usize {
    edge.log()
        .lines()
        .filter(|l| l.contains("invalid peer certificate"))
        .count()
}

fn logs(cp: &Server, edge: &Server) -> String {
    format!("control plane:\n{}\nedge:\n{}", cp.log(), edge.log())
}

fn applied(edge: &Server) -> u64 {
    get_json(None, &format!("{}/healthz", edge.url))
        .and_then(|v| v["applied_seq"].as_u64())
        .unwrap_or(0)
}

fn start_server(data: &Path, listen: &str, cert: &Path, key: &Path) -> Server {
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", listen, "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("RUST_LOG", "info");
    Server::spawn(cmd)
}

#[test]
fn sighup_reloads_the_servers_certificate_and_the_edges_upstream_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (old, new) = (issue(), issue());
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let (old_ca, new_ca, edge_ca) = (
        dir.join("old-ca.pem"),
        dir.join("new-ca.pem"),
        dir.join("edge-ca.pem"),
    );
    std::fs::write(&old_ca, &old.ca_pem).unwrap();
    std::fs::write(&new_ca, &new.ca_pem).unwrap();
    std::fs::write(&edge_ca, &old.ca_pem).unwrap();

    let data = dir.join("cp");
    let (account, token) = init(&data);
    let mut cp = start_server(&data, "127.0.0.1:0", &cert, &key);
    let addr = cp.url.strip_prefix("https://").unwrap().to_owned();
    let conn = Conn {
        url: cp.url.clone(),
        token,
        account,
    };
    let as_client = |ca: &Path, args: &[&str], stdin: Option<&str>| {
        let mut cmd = conn.cmd(args);
        cmd.env("COFFER_CA_CERT", ca);
        run(cmd, stdin.map(str::as_bytes)).ok().json()
    };
    let node = as_client(&old_ca, &["node", "create", "rollover", "--json"], None);
    let node_token = node["node_token"].as_str().unwrap().to_owned();
    let store = as_client(&old_ca, &["store", "create", "--name", "s", "--json"], None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let create_secret = |name: &str| {
        let args = [
            "secret", "create", &store, "--name", name, "--scopes", "workers", "--json",
        ];
        as_client(&new_ca, &args, Some("a value"));
    };

    let mut cmd = coffer_cmd();
    cmd.arg("edge")
        .args([
            "--upstream",
            &cp.url,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("edge"))
        .arg("--ca-cert")
        .arg(&edge_ca)
        .env("COFFER_NODE_TOKEN", &node_token)
        .env("RUST_LOG", "info");
    let edge = Server::spawn(cmd);
    wait_for(
        "the edge syncs",
        || logs(&cp, &edge),
        || get_json(None, &format!("{}/healthz", edge.url)).is_some_and(|v| v["ready"] == true),
    );

    // The server: new files and SIGHUP; new connections are shown the new certificate, which
    // only the new CA verifies.
    assert!(get_json(Some(&new.ca_pem), &format!("{}/healthz", cp.url)).is_none());
    replace(&key, &new.key_pem);
    replace(&cert, &new.cert_pem);
    hangup(&cp);
    wait_for(
        "the server shows the new certificate",
        || logs(&cp, &edge),
        || get_json(Some(&new.ca_pem), &format!("{}/healthz", cp.url)).is_some(),
    );
    assert!(get_json(Some(&old.ca_pem), &format!("{}/healthz", cp.url)).is_none());

    // The edge: trusts the new CA once told to. A restart of the control plane drops every
    // connection the edge holds, so it must verify the new certificate to go on following.
    replace(&edge_ca, &new.ca_pem);
    let asked = ca_reloads_asked(&edge);
    hangup(&edge);
    wait_for(
        "the edge reloads its CA",
        || logs(&cp, &edge),
        || ca_reloads_asked(&edge) > asked,
    );
    drop(cp);
    cp = start_server(&data, &addr, &cert, &key);
    let before = applied(&edge);
    create_secret("a");
    wait_for(
        "the edge follows the restarted control plane",
        || logs(&cp, &edge),
        || applied(&edge) > before,
    );

    // And the reload is what did it: back to the old CA alone, the edge cannot verify the
    // control plane once its connections are gone, and stops receiving writes.
    replace(&edge_ca, &old.ca_pem);
    let asked = ca_reloads_asked(&edge);
    hangup(&edge);
    wait_for(
        "the edge reloads its CA again",
        || logs(&cp, &edge),
        || ca_reloads_asked(&edge) > asked,
    );
    drop(cp);
    let cp = start_server(&data, &addr, &cert, &key);
    let before = applied(&edge);
    let refusals = refused_certificate(&edge);
    create_secret("b");
    wait_for(
        "the edge refuses the control plane's certificate",
        || logs(&cp, &edge),
        || refused_certificate(&edge) > refusals,
    );
    assert_eq!(
        applied(&edge),
        before,
        "an edge trusting only the old CA followed a control plane it cannot verify; logs:\n{}",
        logs(&cp, &edge)
    );
}
