use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use super::*;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

/// The value of the series `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone())
}

fn number(v: Option<Value>) -> f64 {
    match v {
        Some(Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n)) => n,
        other => panic!("not a number: {other:?}"),
    }
}

#[derive(Debug)]
struct Fixed(Sample);

impl Source for Fixed {
    fn sample(&self) -> Sample {
        self.0.clone()
    }
}

#[test]
fn requests_are_counted_per_route_method_and_status_class() {
    let m = Metrics::new();
    let route = m.route("/runtime/v1/bindings/{binding}");
    route.observe(Method::Get, 200, Duration::from_micros(80));
    route.observe(Method::Get, 200, Duration::from_micros(90));
    route.observe(Method::Get, 404, Duration::from_millis(2));
    m.route(UNMATCHED_ROUTE)
        .observe(Method::Other, 405, Duration::from_micros(5));
    assert!(
        Arc::ptr_eq(&route, &m.route("/runtime/v1/bindings/{binding}")),
        "a route is resolved once"
    );

    let scrape = parse(&m.encode().unwrap());
    let count = |route: &str, method: &str, status: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "coffer_http_request_duration_seconds"
                    && s.labels.get("route") == Some(route)
                    && s.labels.get("method") == Some(method)
                    && s.labels.get("status") == Some(status)
            })
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets.last().unwrap().count,
                other => panic!("not a histogram: {other:?}"),
            })
    };
    assert_eq!(
        count("/runtime/v1/bindings/:binding", "GET", "2xx"),
        Some(2.0)
    );
    assert_eq!(
        count("/runtime/v1/bindings/:binding", "GET", "4xx"),
        Some(1.0)
    );
    assert_eq!(count("/runtime/v1/bindings/:binding", "GET", "5xx"), None);
    assert_eq!(count("unmatched", "other", "4xx"), Some(1.0));
}

#[test]
fn events_and_a_sample_are_exposed() {
    let m = Metrics::new();
    m.auth_failure();
    m.auth_failure();
    m.rate_limited(Limit::RuntimeReads);
    m.committed(3, Duration::from_millis(1));
    m.kek_call(
        KekBackend::Pkcs11,
        KekOp::Unwrap,
        Outcome::Error,
        Duration::from_millis(4),
    );
    let conns = m.connections();
    let held = conns.open();
    let _other = conns.open();
    drop(held);
    assert!(m.set_source(Arc::new(Fixed(Sample {
        runtime: Some(RuntimeSample {
            served: 5,
            denied: 1,
            not_found: 2,
            cache_hits: 7,
            cache_misses: 3,
        }),
        change_log_head: Some(42),
        dek_cache_keys: Some(4),
        storage: Some(StorageSample {
            audit_entries: 9,
            audit_failures: 1,
        }),
        edge: Some(EdgeSample {
            applied_seq: 40,
            lag_seconds: 1.5,
            alarms: 2,
            upstream_index: 1,
            upstreams: 2,
            failovers: 1,
            serving: true,
        }),
    }))));

    let text = m.encode().unwrap();
    let s = parse(&text);
    assert_eq!(number(value(&s, "coffer_auth_failures_total", &[])), 2.0);
    assert_eq!(
        number(value(
            &s,
            "coffer_rate_limited_total",
            &[("limit", "runtime_reads")]
        )),
        1.0
    );
    assert_eq!(number(value(&s, "coffer_http_connections_open", &[])), 1.0);
    for (outcome, n) in [("served", 5.0), ("denied", 1.0), ("not_found", 2.0)] {
        assert_eq!(
            number(value(
                &s,
                "coffer_runtime_reads_total",
                &[("outcome", outcome)]
            )),
            n,
            "{outcome}"
        );
    }
    assert_eq!(
        number(value(
            &s,
            "coffer_runtime_cache_lookups_total",
            &[("result", "hit")]
        )),
        7.0
    );
    assert_eq!(number(value(&s, "coffer_change_log_head", &[])), 42.0);
    assert_eq!(number(value(&s, "coffer_dek_cache_keys", &[])), 4.0);
    assert_eq!(
        number(value(&s, "coffer_audit_entries_written_total", &[])),
        9.0
    );
    assert_eq!(
        number(value(&s, "coffer_audit_write_failures_total", &[])),
        1.0
    );
    assert_eq!(number(value(&s, "coffer_edge_applied_seq", &[])), 40.0);
    assert_eq!(number(value(&s, "coffer_edge_lag_seconds", &[])), 1.5);
    assert_eq!(number(value(&s, "coffer_edge_alarms_total", &[])), 2.0);
    assert_eq!(number(value(&s, "coffer_edge_failovers_total", &[])), 1.0);
    assert_eq!(number(value(&s, "coffer_edge_upstream_index", &[])), 1.0);
    assert_eq!(number(value(&s, "coffer_edge_serving", &[])), 1.0);
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "coffer_kek_operation_seconds"
                && x.labels.get("backend") == Some("pkcs11")
                && x.labels.get("outcome") == Some("error")),
        "{text}"
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "coffer_storage_commit_batch_jobs"),
        "{text}"
    );
}

#[test]
fn without_a_source_only_the_event_metrics_appear() {
    let text = Metrics::new().encode().unwrap();
    let s = parse(&text);
    assert!(
        !s.samples
            .iter()
            .any(|x| x.metric.starts_with("coffer_runtime_reads")),
        "{text}"
    );
    assert_eq!(number(value(&s, "coffer_auth_failures_total", &[])), 0.0);
}

#[test]
fn status_classes_are_bounded() {
    assert_eq!(StatusClass::of(100).index(), 0);
    assert_eq!(StatusClass::of(204).index(), 1);
    assert_eq!(StatusClass::of(599).index(), 4);
    assert_eq!(StatusClass::of(999).index(), 4);
    assert_eq!(Method::from_name("BREW"), Method::Other);
}

/// Every method and status class has a histogram slot of its own: `Method::COUNT` covers every
/// variant (an index past it would panic here).
#[test]
fn every_method_and_class_has_a_slot() {
    let m = Metrics::new();
    let route = m.route("/every");
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW",
    ];
    for name in methods {
        for status in [101, 200, 302, 404, 503] {
            route.observe(Method::from_name(name), status, Duration::from_micros(1));
        }
    }
    let text = m.encode().unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("coffer_http_request_duration_seconds_count{"))
            .count(),
        methods.len() * 5,
        "{text}"
    );
}

/// The docs' table of every metric (docs/operations.md, "Every metric") names exactly the
/// families a scrape with every source present declares, with the same types: a metric added,
/// renamed or retyped without its row fails here.
#[test]
fn the_docs_table_matches_the_scrape() {
    let m = Metrics::new();
    assert!(m.set_source(Arc::new(Fixed(Sample {
        runtime: Some(RuntimeSample::default()),
        change_log_head: Some(0),
        dek_cache_keys: Some(0),
        storage: Some(StorageSample::default()),
        edge: Some(EdgeSample::default()),
    }))));
    // A labelled family declares itself once it has a series.
    m.route("/r")
        .observe(Method::Get, 200, Duration::from_micros(1));
    m.kek_call(
        KekBackend::File,
        KekOp::Wrap,
        Outcome::Ok,
        Duration::from_micros(1),
    );
    m.rate_limited(Limit::AuthFailures);
    let text = m.encode().unwrap();
    let mut scraped: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name type");
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    scraped.sort();

    let docs = include_str!("../../../docs/operations.md");
    let table = docs
        .split("### Every metric")
        .nth(1)
        .expect("docs/operations.md has the table");
    let mut documented: Vec<(String, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| name"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect();
    documented.sort();
    assert_eq!(
        scraped, documented,
        "# TYPE lines (left) against the docs' table (right)"
    );
}
