//! The Grafana dashboard (`deploy/grafana/dashboards/stampede.json`) queries only metrics the service
//! exposes: every metric name in its PromQL appears in `/metrics` once the routes and jobs that produce it
//! have run, so renaming a metric in the code (or a typo in the dashboard) fails here, not on an operator's
//! empty panel.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::coupons::{create_coupon, wait_persisted};
use crate::support::{RedisServer, TestApp, isolated_store, serve_config};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards/stampede.json");
/// How long the background jobs (writer, relay) may take to record their metrics once there is work.
const JOBS_WITHIN: Duration = Duration::from_secs(30);
/// PromQL words that are not metric names: aggregation operators (`sum by (le) (...)` puts no `(` right
/// after `sum`), their modifiers, set and vector-matching operators.
const KEYWORDS: [&str; 23] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
];

/// Words a list of label names in parentheses follows.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Every `expr` of every panel, nested rows included.
fn expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

/// The metric names a PromQL expression selects: identifiers that are not functions (followed by `(`), not
/// label names (inside `{...}` or the label list of `by`, `on`, ...), not keywords, not numbers or durations
/// (`offset 1m`, `[5m]`), and not Grafana variables (`$__rate_interval`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_braces, mut depth_brackets, mut label_list) = (0, 0, 0, false);
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            '(' => label_list = LABEL_LISTS.contains(&last_word.as_str()),
            ')' => label_list = false,
            '"' => {
                // A string literal (a label value): skip to its closing quote.
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            // A number or a duration (`offset 1m`): not a name.
            _ if c.is_ascii_digit() => {
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '.') {
                    i += 1;
                }
            }
            _ if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || "_:$".contains(chars[i + 1])) {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let selects = depth_braces == 0
                    && depth_brackets == 0
                    && !label_list
                    && next != Some(&'(')
                    && !word.starts_with('$')
                    && !KEYWORDS.contains(&word.as_str());
                if selects {
                    names.insert(word.clone());
                }
                last_word = word;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The metric names of `/metrics`' samples (`name{labels} value` or `name value`).
async fn exposed(app: &TestApp) -> BTreeSet<String> {
    let response = app.http.get(app.url("/metrics")).send().await.expect("request reaches the app");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_durations() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="/x", a="b(c)"}[$__rate_interval])))
           / on (route) group_left sum(rate(up_total[5m] offset 1m)) or vector(0) + max(coupon_writer_queue_depth)"#,
    );
    let expected = ["coupon_writer_queue_depth", "http_request_duration_seconds_bucket", "up_total"];
    assert_eq!(names, expected.iter().map(|name| name.to_string()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_appears_in_metrics_once_its_routes_and_jobs_ran() {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let queried: BTreeSet<String> = exprs.iter().flat_map(|expr| metric_names(expr)).collect();
    assert!(queried.len() >= 10, "the dashboard queries {queried:?}");

    // A Redis of the test's own, so it can be killed for the error metrics.
    let mut redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let app = TestApp::spawn_with(serve_config(store)).await;

    // Issue a coupon (issuance counters, request metrics), and let the writer persist it (queue, lag).
    let user = app.create_user("kim").await;
    let coupon = create_coupon(&app, 10).await;
    let (status, body) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    wait_persisted(&app, coupon, 1).await;
    // Pay an order (an outbox row, whose backlog the relay reports), refresh the ranking.
    let socks = app.create_product("socks", 1_000, 5).await;
    app.charge(user, 5_000).await;
    let order = json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1 }], "pay": true });
    let (status, body) = app.post("/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Redis gone: an issue answers 503 (store and script errors), the writer's next step fails.
    redis.kill();
    let (status, body) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let started = Instant::now();
    loop {
        let exposed = exposed(&app).await;
        let missing: BTreeSet<&String> = queried.difference(&exposed).collect();
        if missing.is_empty() {
            break;
        }
        assert!(started.elapsed() < JOBS_WITHIN, "the dashboard queries metrics /metrics lacks: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}
