//! The Grafana dashboard (`rel/grafana/flack-dashboard.json`) against what
//! real nodes export: a single node and a two-node gproc_dist cluster are
//! scraped, and every PromQL expression of the dashboard may name only
//! metrics and labels found in those scrapes. Every exported metric must be
//! on the dashboard and in the README's metrics table.

mod node_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flack::app::{RunningNode, start};
use flack::config::erl_args::ErlArgs;
use flack::config::sys_config::GprocDist;
use flack::config::{NodeName, Settings};
use node_support::{TestEpmd, unique};
use serde_json::Value;
use support::{Client, PATIENCE, run_args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/rel/grafana/flack-dashboard.json"
);

/// `GET path` on `addr`: the body of a 200 answer.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_owned()
}

/// Metric names of a scrape, each with the label names its samples carry.
fn samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, _value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let entry = found.entry(name.to_owned()).or_default();
        for pair in labels.split(',').filter(|pair| !pair.is_empty()) {
            let (label, _) = pair.split_once('=').expect("label=value");
            entry.insert(label.to_owned());
        }
    }
    found
}

/// Every string under a key named `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key
                    && let Some(text) = v.as_str()
                {
                    out.push(text.to_owned());
                }
                strings_under(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

/// The identifiers of a PromQL expression (metric names, functions, label
/// names, keywords), outside string literals and `[...]` ranges.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                }
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
            }
            '$' => {
                // A Grafana variable such as $__rate_interval.
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => {
                word.push(c);
                continue;
            }
            _ => {}
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Label names used in matchers (`{role="leader"}`) and groupings
/// (`by (instance, role)`).
fn label_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closed matcher") + open;
        for matcher in rest[open + 1..close].split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    for keyword in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let after = &rest[at + keyword.len()..];
            let close = after.find(')').expect("closed grouping");
            names.extend(after[..close].split(',').map(|n| n.trim().to_owned()));
            rest = &after[close..];
        }
    }
    names
}

async fn eventually_healthy(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let health: Value = serde_json::from_str(&get(addr, "/health").await).expect("JSON");
        if ok(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two in-process nodes with each other as gproc_dist candidates.
async fn two_node_cluster(epmd: &TestEpmd, dir: &std::path::Path) -> Vec<RunningNode> {
    let stem = unique("dash");
    let names: Vec<String> = (1..=2).map(|i| format!("{stem}n{i}@localhost")).collect();
    let mut nodes = Vec::new();
    for name in &names {
        let mut settings = Settings::resolve(&run_args(), ErlArgs::default()).expect("settings");
        settings.node_name = Some(NodeName::Short(name.clone()));
        settings.cookie = Some("dashboard-test-cookie".into());
        settings.epmd_port = epmd.port;
        settings.gproc_dist = GprocDist::Candidates {
            nodes: names.clone(),
            opts: Vec::new(),
        };
        settings.data_dir = dir.join(name);
        std::fs::create_dir_all(&settings.data_dir).expect("data dir");
        nodes.push(start(settings).await.expect("node starts"));
    }
    nodes
}

/// What a single node and a cluster node export, after some traffic.
async fn scrape_everything() -> BTreeMap<String, BTreeSet<String>> {
    let single = support::node().await;
    let mut alice = Client::login(single.local_addr, "alice").await;
    alice.join("room").await;
    alice.post("room", "hello").await;
    alice.expect("chat_message").await;
    let mut exported = samples(&get(single.local_addr, "/metrics").await);

    let dir = std::env::temp_dir().join(unique("flack-dashboard-"));
    let epmd = TestEpmd::start().await;
    let nodes = two_node_cluster(&epmd, &dir).await;
    for node in &nodes {
        eventually_healthy(node.local_addr, "a cluster of two", |health| {
            health["cluster"]["leader"].is_string()
                && health["cluster"]["down"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
                && health["cluster"]["candidates"].as_array().map(Vec::len) == Some(2)
        })
        .await;
    }
    let mut bob = Client::login(nodes[1].local_addr, "bob").await;
    bob.join("room").await;
    bob.post("room", "hi").await;
    bob.expect("chat_message").await;
    for node in &nodes {
        for (name, labels) in samples(&get(node.local_addr, "/metrics").await) {
            exported.entry(name).or_default().extend(labels);
        }
    }
    for node in nodes {
        node.stop().await.expect("node stops");
    }
    single.stop().await.expect("node stops");
    let _ = std::fs::remove_dir_all(&dir);
    exported
}

#[tokio::test]
async fn the_dashboard_queries_only_what_nodes_export() {
    let exported = scrape_everything().await;
    for name in [
        "flack_build_info",
        "flack_cluster_role",
        "flack_cluster_registry_entries",
    ] {
        assert!(
            exported.contains_key(name),
            "{name} not scraped: {exported:?}"
        );
    }
    let exported_names: BTreeSet<&str> = flack::metrics::EXPORTED.iter().map(|(n, _)| *n).collect();
    let scraped_names: BTreeSet<&str> = exported.keys().map(String::as_str).collect();
    assert_eq!(
        scraped_names, exported_names,
        "scrapes differ from metrics::EXPORTED"
    );

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    strings_under(&dashboard, "definition", &mut exprs);
    assert!(exprs.len() > 20, "only {} expressions", exprs.len());

    let mut labels: BTreeSet<String> = ["instance", "job"].map(String::from).into();
    labels.extend(exported.values().flatten().cloned());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let metrics: Vec<String> = identifiers(expr)
            .into_iter()
            .filter(|word| word.starts_with("flack_"))
            .collect();
        assert!(!metrics.is_empty(), "no flack metric in {expr}");
        for metric in metrics {
            assert!(
                exported.contains_key(&metric),
                "{expr}: {metric} is not exported by a node"
            );
            used.insert(metric);
        }
        for label in label_names(expr) {
            assert!(
                labels.contains(&label),
                "{expr}: no metric has a label {label}"
            );
        }
    }
    let unused: Vec<&String> = exported
        .keys()
        .filter(|name| !used.contains(*name))
        .collect();
    assert!(
        unused.is_empty(),
        "exported but not on the dashboard: {unused:?}"
    );

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    for name in exported.keys() {
        assert!(
            readme.contains(&format!("| `{name}")),
            "{name} is not in the README's metrics table"
        );
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "panel {id}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
            assert!(target["expr"].is_string(), "panel {id}");
        }
    }
}

#[test]
fn expressions_are_read_as_promql() {
    let expr = r#"sum by (instance, role) (rate(flack_x_total{role="a b",instance=~"$instance"}[$__rate_interval])) / flack_y"#;
    let words = identifiers(expr);
    assert!(words.contains(&"flack_x_total".to_owned()) && words.contains(&"flack_y".to_owned()));
    assert!(
        !words
            .iter()
            .any(|w| w == "a" || w == "b" || w.contains("rate_interval"))
    );
    assert_eq!(label_names(expr), ["role", "instance", "instance", "role"]);
}
