//! `--metrics-listen`: served by the binary on its own address, and an address in use stops
//! `coffer server` and `coffer edge` with one line.

use std::path::Path;

use crate::common::*;

/// The address the metrics listener bound (`--metrics-listen 127.0.0.1:0`), read back from the
/// server's log line: no port is picked beforehand, so none can be taken in between.
fn metrics_addr(server: &Server) -> String {
    const LINE: &str = "serving metrics on http://";
    let log = server.log_with(LINE);
    let rest = &log[log.find(LINE).unwrap() + LINE.len()..];
    rest[..rest.find("/metrics").expect("the line names /metrics")].to_owned()
}

#[test]
fn the_server_serves_metrics_on_its_own_address() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let server = Server::start_with(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    // The public port answers its own request first, so that it is counted.
    let health = runtime_get(&server.url, "none", "/healthz");
    assert_eq!(health.status, 200);
    let scrape = runtime_get(&format!("http://{metrics}"), "none", "/metrics");
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body).unwrap();
    // The whole line: `} 1` alone would match 10 or 11 as well.
    assert!(
        text.lines().any(|l| l
            == "coffer_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\",status=\"2xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE coffer_runtime_reads_total counter"),
        "{text}"
    );
}

fn assert_metrics_address_refused(args: &[&str], data: &Path) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = coffer_cmd();
    cmd.args(args).arg("--data-dir").arg(data).args([
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]);
    let out = run(cmd, None);
    let line = out.one_error_line(1).to_owned();
    assert!(
        line.contains(&format!(
            "cannot listen on {addr} for metrics (--metrics-listen)"
        )),
        "{line}"
    );
}

#[test]
fn a_metrics_address_in_use_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    assert_metrics_address_refused(&["server"], &data);
    assert_metrics_address_refused(
        &[
            "edge",
            "--upstream",
            "http://127.0.0.1:9",
            "--node-token",
            "coffernode_x",
        ],
        &tmp.path().join("edge"),
    );
}
