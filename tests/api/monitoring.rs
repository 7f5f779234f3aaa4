//! The operator's files against the service they watch: the Grafana dashboard
//! (`deploy/grafana/wx-jssdk.json`) is valid JSON, and every metric its queries and the
//! alert rules (`deploy/prometheus/alerts.yml`) name is one a running instance exports.
//! A renamed metric, or a typo in a query, would otherwise show as an empty panel or an
//! alert that can never fire, which nothing else notices.
//!
//! The instance is exercised until every labelled family has a series: the exposition
//! leaves out a family without one, `# HELP` and `# TYPE` lines included.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use wx_sandbox::Endpoint;

use crate::helpers::{fault, spawn_app_with, Options, Service, TestApp};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/wx-jssdk.json");
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
const ADMIN_KEY: &str = "monitoring-admin-key-0123456789";
/// An app of this test alone, whose renewal WeChat refuses (45009).
const REFUSED_APP: &str = "monitoring-quota";
const PAGE: &str = "https://page.example.com/monitoring";

#[actix_web::test]
async fn the_dashboard_and_the_alert_rules_query_only_metrics_the_service_exports() {
    let app = spawn_app_with(Options {
        admin_keys: vec![ADMIN_KEY],
        extra_apps: vec![(REFUSED_APP, "wxmonitoring000000001")],
        ..Options::default()
    })
    .await;
    let exported = exercised_metric_names(&app).await;

    let text = std::fs::read_to_string(DASHBOARD).expect("deploy/grafana/wx-jssdk.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 15,
        "the dashboard's queries were not all found: {queries:#?}"
    );
    let rules = std::fs::read_to_string(ALERTS).expect("deploy/prometheus/alerts.yml");
    let exprs = alert_exprs(&rules);
    assert_eq!(
        exprs.len(),
        rules.matches("- alert:").count(),
        "one expr per alert: {exprs:#?}"
    );

    let mut unknown = Vec::new();
    for (file, query) in queries
        .iter()
        .map(|q| ("dashboard", q))
        .chain(exprs.iter().map(|e| ("alerts.yml", e)))
    {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{file}: no metric found in `{query}`");
        unknown.extend(
            names
                .into_iter()
                .filter(|name| !exported.contains(name))
                .map(|name| format!("{file}: `{name}` in `{query}`")),
        );
    }
    assert!(
        unknown.is_empty(),
        "metrics the service does not export:\n{}\nexported:\n{exported:#?}",
        unknown.join("\n")
    );
}

/// The metric names a scrape of `app` exposes, once it has signed pages (requests,
/// WeChat calls, the credentials' deadlines), answered its readiness check (Redis's
/// state), failed a renewal (WeChat's quota refusal) and force-refreshed a token
/// (a caller's invalidation).
async fn exercised_metric_names(app: &TestApp) -> BTreeSet<String> {
    app.sign_and_check(PAGE).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.sandbox
        .inject(fault(Endpoint::StableToken, Some(45009), 0));
    let refused = app.config_for(REFUSED_APP, PAGE).await;
    assert_eq!(
        refused.status(),
        502,
        "WeChat refused: its quota is used up"
    );
    let token = app.access_token("default", Some(ADMIN_KEY)).await;
    assert_eq!(token.status(), 200);
    let token: Value = token.json().await.expect("a JSON token");
    let body = json!({ "access_token": token["access_token"] });
    let invalidated = app
        .invalidate("default", "access_token", body, ADMIN_KEY)
        .await;
    assert_eq!(invalidated.status(), 200);

    let scrape = app.get("/metrics").await;
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.expect("a text body");
    // The series this test made exist, so their families are exposed.
    for series in [
        "wxjssdk_credential_renewal_failures_total{app=\"monitoring-quota\"",
        "wxjssdk_forced_refreshes_today{app=\"default\"}",
        "wxjssdk_store_up ",
    ] {
        assert!(text.contains(series), "no `{series}` in:\n{text}");
    }
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(typed) => typed.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every PromQL query of the dashboard: the panels' targets (rows' nested panels too)
/// and the metric of each `label_values(metric, label)` variable.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.extend(target["expr"].as_str().map(str::to_string));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut queries = Vec::new();
    panels(&dashboard["panels"], &mut queries);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for variable in variables.filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let metric = query
            .strip_prefix("label_values(")
            .and_then(|args| args.rsplit_once(','))
            .map(|(metric, _label)| metric.trim().to_string());
        queries.push(metric.unwrap_or_else(|| query.to_string()));
    }
    queries
}

/// The `expr` of each rule of an alert rules file: a `|` block (the lines indented
/// deeper than `expr:`) or one line.
fn alert_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() {
            continue;
        }
        let value = value.trim();
        if value != "|" && value != "|-" {
            exprs.push(value.to_string());
            continue;
        }
        let mut block = Vec::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent.len();
            if !deeper && !next.trim().is_empty() {
                break;
            }
            block.push(next.trim());
            lines.next();
        }
        exprs.push(block.join(" ").trim().to_string());
    }
    exprs
}

/// The metric names a PromQL expression selects: what is left once strings, label
/// matchers, ranges, Grafana's `$variables`, grouping clauses, function calls,
/// operators' keywords and numbers are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    /// Binary operators' keywords, and the aggregations, whose `by (...)` may come
    /// between the name and its parenthesis.
    const KEYWORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
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
    ];
    /// Their label lists are not metrics.
    const GROUPINGS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = without_enclosed(expr).chars().collect();
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' || c.is_ascii_digit() {
            // A Grafana variable, a number or a duration: skipped whole.
            i += 1;
            while i < chars.len() && (word_char(chars[i]) || "{}.".contains(chars[i])) {
                i += 1;
            }
            continue;
        }
        if !word_char(c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && word_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        let called = next == Some(&'(');
        if GROUPINGS.contains(&word.as_str()) {
            if called {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            }
        } else if !called && !KEYWORDS.contains(&word.as_str()) {
            names.insert(word);
        }
    }
    names
}

/// `expr` without its string literals, label matchers (`{...}`) and ranges (`[...]`),
/// each left as a space. A string's braces do not end a matcher.
fn without_enclosed(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut enclosed: Option<char> = None;
    for c in expr.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_string = false;
                    if enclosed.is_none() {
                        out.push(' ');
                    }
                }
                _ => {}
            }
            continue;
        }
        match (enclosed, c) {
            (_, '"') => in_string = true,
            (None, '{') => enclosed = Some('}'),
            (None, '[') => enclosed = Some(']'),
            (Some(end), c) if c == end => {
                enclosed = None;
                out.push(' ');
            }
            (Some(_), _) => {}
            (None, c) => out.push(c),
        }
    }
    out
}

/// The extraction itself, on the constructs the dashboard and the rules use: if it
/// found nothing, the comparison above would pass on anything.
#[test]
fn metric_names_are_told_from_functions_labels_and_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{instance=~"$instance",route=~"/v1/apps/[{]name[}]/x|y}"}[$__rate_interval])))
        / on (app) group_left max without (instance) (b) - time() > 2 * count by (instance) (c:recorded)
        and d offset 5m unless e{status=~"5.."} > bool 0.05"#;
    let expected: BTreeSet<String> = ["a_bucket", "b", "c:recorded", "d", "e"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(metric_names(expr), expected);
    let rules = "    rules:\n      - alert: A\n        expr: |\n          x > 1\n          and y\n        for: 1m\n      - alert: B\n        expr: z == 0\n";
    assert_eq!(alert_exprs(rules), ["x > 1 and y", "z == 0"]);
    let dashboard = json!({
        "panels": [{"type": "row", "panels": [{"targets": [{"expr": "rate(f[5m])"}]}]}],
        "templating": {"list": [{"type": "query", "query": {"query": "label_values(g, instance)"}}]}
    });
    assert_eq!(dashboard_queries(&dashboard), ["rate(f[5m])", "g"]);
}
