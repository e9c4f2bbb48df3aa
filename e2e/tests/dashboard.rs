//! The chart's Grafana dashboard (`charts/locus-operator/files/dashboards/locus.json`) asks
//! only for what the code exports.
//!
//! The metric families and their labels come from the code, not from a list kept here: a
//! sample pod (`locus_examples::sample`: the SDK's request, store and handoff metrics, wired
//! as the `locus-sample` binary wires them) is built in-process and served a few requests,
//! a refused handoff push, a refused ring document and a retiring drain towards a gone
//! peer; the operator's registry is built as the `locus-operator` binary builds it and each
//! family given one series. The families are the registries' descriptors (every family
//! registered, with or without series); their types and labels are read from the
//! `/metrics` pages. Every `PromQL` expression of the dashboard (panel targets and variable
//! queries) is then read for metric and label names: each name must be a family (`_total`
//! of a counter, `_bucket`, `_sum`, `_count` of a histogram), and each label in a matcher or
//! in `by (...)` one the family's series carry, one Prometheus adds at scrape (`namespace`,
//! `pod`, `job`, ...) or `le` on buckets. Labels of a family that had no series here cannot
//! be checked and are printed. The dashboard must also be valid JSON with unique panel ids
//! and a target on every panel, and the chart must render it, when enabled, into a
//! ConfigMap labelled for Grafana's dashboard sidecar.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use locus::handoff::HandoffSecret;
use locus::ring::{
    PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};
use locus::server::session::ShutdownIntent;
use locus::{Mode, StaticRingSource, headers};
use locus_examples::ring_source::RingSourceConfig;
use locus_examples::sample::{HandoffOptions, SampleConfig, SampleService, SecretSource};
use locus_operator::metrics::{
    ErrorLabels, KindLabels, Metrics as OperatorMetrics, PhaseLabels, ResultLabels, ServiceLabels,
    TransitionLabels,
};
use serde_json::Value;
use tower::ServiceExt as _;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/locus-operator/files/dashboards/locus.json"
);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/locus-operator");

/// Labels Prometheus attaches to every series at scrape (`kubernetes_sd` and the
/// prometheus-operator's ServiceMonitor and `PodMonitor` targets).
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "pod",
    "job",
    "instance",
    "service",
    "container",
    "endpoint",
];

/// Words of `PromQL` that are neither metrics nor functions.
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
];

// ---------------------------------------------------------------------------------------
// What the code exports
// ---------------------------------------------------------------------------------------

/// One metric family of an exposition: its type and the label names its series carry.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    /// Whether any series was seen (otherwise its labels are unknown).
    has_series: bool,
}

/// Adds the families of an `OpenMetrics` text page to `into`.
fn read_exposition(text: &str, into: &mut BTreeMap<String, Family>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            kind.clone_into(&mut into.entry(name.to_owned()).or_default().kind);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let sample = &line[..name_end];
        let family = family_of_sample(sample, into)
            .unwrap_or_else(|| panic!("series {sample} of no declared family in\n{text}"));
        let family = into.get_mut(&family).unwrap();
        family.has_series = true;
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').unwrap();
            for label in label_names(&line[name_end + 1..close]) {
                if label != "le" {
                    family.labels.insert(label);
                }
            }
        }
    }
}

/// Adds the families a registry declares, read from its descriptors in its `Debug` form
/// (prometheus-client lists them nowhere else, and its text format leaves out families
/// without series): each descriptor's name with its registry's prefix and its unit. Their
/// type and labels are known only once they have series on a page.
fn read_descriptors(debug: &str, into: &mut BTreeMap<String, Family>) -> usize {
    let mut lines = debug.lines().map(str::trim);
    let quoted = |line: &str| line.split('"').nth(1).map(str::to_owned);
    let mut prefix: Option<String> = None;
    let mut count = 0;
    while let Some(line) = lines.next() {
        if line.starts_with("prefix: None") {
            prefix = None;
        } else if line.starts_with("prefix: Some(") {
            prefix = lines.by_ref().find_map(quoted);
        } else if line == "Descriptor {" {
            let name = lines.next().and_then(quoted).unwrap();
            let _help = lines.next();
            let unit = match lines.next() {
                Some(l) if l.starts_with("unit: Some(") => Some(
                    lines
                        .next()
                        .unwrap()
                        .trim_end_matches(',')
                        .to_ascii_lowercase(),
                ),
                Some(l) if l.starts_with("unit: None") => None,
                other => panic!("a descriptor without unit: {other:?}"),
            };
            let full = [prefix.clone(), Some(name), unit]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("_");
            into.entry(full).or_default();
            count += 1;
        }
    }
    count
}

/// The family a series name belongs to.
fn family_of_sample(sample: &str, families: &BTreeMap<String, Family>) -> Option<String> {
    if families.contains_key(sample) {
        return Some(sample.to_owned());
    }
    ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
        .iter()
        .filter_map(|suffix| sample.strip_suffix(suffix))
        .find(|base| families.contains_key(*base))
        .map(str::to_owned)
}

/// Label names of a rendered label set `a="x",b="y"` (values may hold escaped quotes).
fn label_names(set: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = set.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.trim().is_empty() {
            return names;
        }
        names.push(name.trim().trim_start_matches(',').trim().to_owned());
        assert_eq!(chars.next(), Some('"'), "label value in {set}");
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
}

/// A ring of two slots: slot 0 is the sample pod under test, slot 1 a pod that is gone
/// (nothing listens at its address).
fn two_slot_ring(dir: &Path) -> (PathBuf, Ring) {
    const SHARDS: u32 = 64;
    let gone: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let here: SocketAddr = "127.0.0.1:10".parse().unwrap();
    let planned = plan(&PlanRequest {
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        ..PlanRequest::new("default", "ledger", &[0, 1])
    })
    .unwrap();
    let slot = |index: u16, address| Slot {
        index,
        pod: Pod {
            name: format!("ledger-{index}-test"),
            uid: format!("uid-{index}"),
            address,
        },
        state: SlotState::Active,
        successor: None,
        predecessor: None,
    };
    let ring = Ring::new(RingParts {
        namespace: "default".into(),
        service: "ledger".into(),
        version: 1,
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        slots: vec![slot(0, here), slot(1, gone)],
        current: planned.assignment,
        transition: Transition::Stable,
    })
    .unwrap();
    let path = dir.join("ring.json");
    std::fs::write(&path, RingDocument::to_json(&ring).unwrap()).unwrap();
    (path, ring)
}

/// Sends `request` through the sample's HTTP stack; the status and body.
async fn call(service: &SampleService, request: Request<Body>) -> (StatusCode, String) {
    let response = service.router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn append(key: &str) -> Request<Body> {
    Request::post(format!("/sessions/{key}/events"))
        .header(headers::SESSION, key)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"seq": 1, "kind": "deposit", "amount": 5}"#))
        .unwrap()
}

/// The `/metrics` page of an exercised sample pod, and its registry's `Debug` form.
async fn sample_exposition() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("locus-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, ring) = two_slot_ring(&dir);
    let mut config = SampleConfig::new("ledger-0-test", RingSourceConfig::File(path));
    config.ownership = Mode::Redirect421;
    let mut handoff = HandoffOptions::new(SecretSource::Value(
        HandoffSecret::new("a-test-secret-of-more-than-sixteen-bytes").unwrap(),
    ));
    handoff.shutdown_intent = Some(ShutdownIntent::Retire);
    config.handoff = Some(handoff);
    let service = SampleService::new(config).await.unwrap();
    let watch = service.ring().unwrap();
    assert!(
        watch
            .wait_for_version(1, Duration::from_secs(10))
            .await
            .is_some(),
        "the sample never held its ring"
    );

    // Keys of both slots: served here, or answered 421 (the other slot owns them).
    let keys: Vec<String> = (0..64).map(|i| format!("key-{i}")).collect();
    let mine = keys
        .iter()
        .find(|k| ring.owner(k.as_bytes()).index == 0)
        .unwrap();
    let theirs = keys
        .iter()
        .find(|k| ring.owner(k.as_bytes()).index == 1)
        .unwrap();
    let (status, body) = call(&service, append(mine)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read = Request::get(format!("/sessions/{mine}"))
        .header(headers::SESSION, mine.as_str())
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&service, read).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&service, append(theirs)).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // A handoff push without the secret is refused.
    let push = Request::post("/_locus/handoff/v1/push")
        .body(Body::empty())
        .unwrap();
    let (status, _) = call(&service, push).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A ring document that is not one is refused (counted in the same registry).
    let source = StaticRingSource::with_metrics(service.metrics().clone());
    assert!(source.publish_document(b"{").is_err());
    // Retiring hands the session to the gone slot: the handoff's failure paths.
    let metrics = service.metrics().clone();
    service.drain(Duration::from_secs(3)).await;

    let metrics_page = Request::get("/metrics").body(Body::empty()).unwrap();
    let (status, text) = call(&service, metrics_page).await;
    assert_eq!(status, StatusCode::OK);
    let debug = metrics.with_registry(|registry| format!("{registry:#?}"));
    let _ = std::fs::remove_dir_all(&dir);
    (text, debug)
}

/// The operator's page, every family with one series, and its registry's `Debug` form.
fn operator_exposition() -> (String, String) {
    let metrics = OperatorMetrics::new();
    metrics
        .reconcile_duration
        .get_or_create(&ResultLabels { result: "ok" })
        .observe(0.01);
    metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { error: "kube" })
        .inc();
    metrics
        .transitions
        .get_or_create(&TransitionLabels {
            kind: "ScaleUp".into(),
            step: "warm",
        })
        .inc();
    metrics
        .shards_moved
        .get_or_create(&KindLabels {
            kind: "ScaleUp".into(),
        })
        .inc();
    metrics
        .phase_duration
        .get_or_create(&PhaseLabels { phase: "warm" })
        .observe(1.0);
    metrics
        .ring_version
        .get_or_create(&ServiceLabels {
            namespace: "default".into(),
            service: "ledger".into(),
        })
        .set(1);
    metrics.write("pods", "apply");
    metrics.leader.set(1);
    (metrics.encode(), format!("{metrics:#?}"))
}

// ---------------------------------------------------------------------------------------
// What the dashboard asks for
// ---------------------------------------------------------------------------------------

/// A metric selector in an expression: its name and the labels its matchers name.
#[derive(Debug)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

/// The metric selectors and grouping labels of one `PromQL` expression.
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Reads metric names and label names from a `PromQL` expression: string literals, range
/// selectors, numbers, `$variables`, functions and keywords are passed over.
fn parse_promql(expr: &str) -> Result<Query, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut query = Query::default();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if c == '[' {
            i = chars[i..]
                .iter()
                .position(|c| *c == ']')
                .map(|p| i + p + 1)
                .ok_or("unclosed [")?;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = chars[i..]
                    .iter()
                    .position(|c| *c == '}')
                    .map(|p| i + p + 1)
                    .ok_or("unclosed ${")?;
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let close = chars[next..]
                        .iter()
                        .position(|c| *c == ')')
                        .map(|p| next + p)
                        .ok_or("unclosed label list")?;
                    let list: String = chars[next + 1..close].iter().collect();
                    query.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = close + 1;
                }
            } else if chars.get(next) == Some(&'(') || starts_grouping(&chars[next..]) {
                // A function or an aggregation: its arguments are read in turn.
            } else {
                let mut labels = Vec::new();
                if chars.get(next) == Some(&'{') {
                    i = read_matchers(&chars, next, &mut labels)?;
                }
                query.selectors.push(Selector { name: word, labels });
            }
        } else if c == '{' {
            return Err(format!("a selector without a metric name at {i}"));
        } else {
            i += 1;
        }
    }
    Ok(query)
}

/// Whether `rest` starts with `by` or `without` (an aggregation's grouping before its
/// argument: `sum by (pod) (...)`).
fn starts_grouping(rest: &[char]) -> bool {
    let word: String = rest
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
        .collect();
    matches!(word.to_ascii_lowercase().as_str(), "by" | "without")
}

/// The index after the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unclosed string at {start}"))
}

/// Reads the matchers `{label op "value", ...}` that start at `open`; the index after `}`.
fn read_matchers(chars: &[char], open: usize, labels: &mut Vec<String>) -> Result<usize, String> {
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        match chars.get(i) {
            None => return Err("unclosed {".into()),
            Some('}') => return Ok(i + 1),
            Some(_) => {}
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if start == i {
            return Err(format!("no label name at {i} in a matcher"));
        }
        labels.push(chars[start..i].iter().collect());
        while i < chars.len() && (chars[i].is_whitespace() || matches!(chars[i], '=' | '!' | '~')) {
            i += 1;
        }
        if !chars.get(i).is_some_and(|c| matches!(c, '"' | '\'' | '`')) {
            return Err(format!("no quoted value at {i} in a matcher"));
        }
        i = skip_string(chars, i)?;
    }
}

/// One `PromQL` expression of the dashboard and where it is.
#[derive(Debug)]
struct Expression {
    place: String,
    expr: String,
    /// A label a variable query lists (`label_values(selector, label)`).
    listed_label: Option<String>,
}

/// Every panel (rows' nested panels too), depth first.
fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in panels {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(all_panels(nested));
        }
    }
    out
}

/// Checks the dashboard's structure and returns its `PromQL` expressions.
fn dashboard_expressions(dashboard: &Value) -> Result<Vec<Expression>, Vec<String>> {
    let mut problems = Vec::new();
    let mut expressions = Vec::new();
    let panels = all_panels(dashboard["panels"].as_array().map_or(&[], Vec::as_slice));
    if panels.is_empty() {
        problems.push("the dashboard has no panels".to_owned());
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        match panel["id"].as_u64() {
            Some(id) if !ids.insert(id) => problems.push(format!("panel id {id} is used twice")),
            Some(_) => {}
            None => problems.push(format!("panel {title:?} has no numeric id")),
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no target"));
        }
        for target in targets {
            match target["expr"].as_str() {
                Some(expr) if !expr.trim().is_empty() => expressions.push(Expression {
                    place: format!("panel {title:?} target {}", target["refId"]),
                    expr: expr.to_owned(),
                    listed_label: None,
                }),
                _ => problems.push(format!("panel {title:?} has a target without expr")),
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("(unnamed)");
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default()
            .trim();
        let place = format!("variable ${name}");
        match query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
        {
            Some((selector, label)) => expressions.push(Expression {
                place,
                expr: selector.to_owned(),
                listed_label: Some(label.trim().to_owned()),
            }),
            None => problems.push(format!(
                "{place}: {query:?} is not label_values(selector, label)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(expressions)
    } else {
        Err(problems)
    }
}

/// The family a metric name in a query stands for (`_total` of a counter, `_bucket`, `_sum`
/// or `_count` of a histogram, a gauge's own name).
fn family_of_query<'a>(
    name: &str,
    families: &'a BTreeMap<String, Family>,
) -> Option<(&'a str, &'a Family)> {
    let kinds: [(&str, &[&str]); 5] = [
        ("", &["gauge", "unknown", "info", "stateset"]),
        ("_total", &["counter"]),
        ("_bucket", &["histogram"]),
        ("_sum", &["histogram", "summary"]),
        ("_count", &["histogram", "summary"]),
    ];
    kinds.iter().find_map(|(suffix, allowed)| {
        let base = name.strip_suffix(suffix)?;
        let (key, family) = families.get_key_value(base)?;
        // A declared family without series has no known type: any suffix goes.
        (family.kind.is_empty() || allowed.contains(&family.kind.as_str()))
            .then_some((key.as_str(), family))
    })
}

/// Every problem of `expressions` against `families`, and the labels that could not be
/// checked because the family had no series.
fn check_expressions(
    expressions: &[Expression],
    families: &BTreeMap<String, Family>,
) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut unchecked = Vec::new();
    for Expression {
        place,
        expr,
        listed_label,
    } in expressions
    {
        let query = match parse_promql(expr) {
            Ok(query) => query,
            Err(error) => {
                problems.push(format!("{place}: cannot read {expr:?}: {error}"));
                continue;
            }
        };
        if query.selectors.is_empty() {
            problems.push(format!("{place}: no metric in {expr:?}"));
        }
        let mut found = Vec::new();
        for selector in &query.selectors {
            let Some((family_name, family)) = family_of_query(&selector.name, families) else {
                problems.push(format!(
                    "{place}: unknown metric `{}` (the code exports no such family) in {expr:?}",
                    selector.name
                ));
                continue;
            };
            let bucket = selector.name.ends_with("_bucket");
            for label in &selector.labels {
                check_label(
                    place,
                    label,
                    &[(family_name, family)],
                    bucket,
                    &mut problems,
                    &mut unchecked,
                );
            }
            found.push((family_name, family, bucket));
        }
        if found.is_empty() {
            continue;
        }
        let bucket = found.iter().any(|(_, _, b)| *b);
        let on: Vec<(&str, &Family)> = found.iter().map(|(n, f, _)| (*n, *f)).collect();
        for label in query.grouping.iter().chain(listed_label) {
            check_label(place, label, &on, bucket, &mut problems, &mut unchecked);
        }
    }
    (problems, unchecked)
}

/// Whether `label` is one a series of `families` (any of them) carries or Prometheus adds.
fn check_label(
    place: &str,
    label: &str,
    families: &[(&str, &Family)],
    bucket: bool,
    problems: &mut Vec<String>,
    unchecked: &mut Vec<String>,
) {
    if TARGET_LABELS.contains(&label) || (bucket && label == "le") {
        return;
    }
    if families.iter().any(|(_, f)| f.labels.contains(label)) {
        return;
    }
    let names: Vec<&str> = families.iter().map(|(n, _)| *n).collect();
    if families.iter().all(|(_, f)| f.has_series) {
        let known: Vec<String> = families
            .iter()
            .flat_map(|(_, f)| f.labels.iter().cloned())
            .collect();
        problems.push(format!(
            "{place}: label `{label}` is not on {names:?} (its series carry {known:?})"
        ));
    } else {
        unchecked.push(format!("{place}: label `{label}` on {names:?}"));
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Families a collector computes at scrape time: on the pages, not among the registry's
/// descriptors.
const AT_SCRAPE: [&str; 3] = [
    "locus_ring_age_seconds",
    "locus_load_requests",
    "locus_load_bytes",
];

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

#[tokio::test]
async fn every_query_of_the_dashboard_names_exported_metrics_and_labels() {
    let mut declared = BTreeMap::new();
    let mut families = BTreeMap::new();
    for (page, debug) in [sample_exposition().await, operator_exposition()] {
        assert!(read_descriptors(&debug, &mut declared) > 0, "{debug}");
        read_exposition(&page, &mut families);
    }
    // Every family on the pages is a declared one (the descriptors were read right), but for
    // those a collector computes at scrape time (`AT_SCRAPE`).
    for name in families.keys() {
        assert!(
            declared.contains_key(name) || AT_SCRAPE.contains(&name.as_str()),
            "{name} is on a page but not among the descriptors {:?}",
            declared.keys()
        );
    }
    for (name, family) in declared {
        families.entry(name).or_insert(family);
    }
    // The SDK's, the store's, the handoff's, the sample's and the operator's families.
    for family in [
        "locus_requests",
        "locus_ring_age_seconds",
        "locus_load_requests",
        "locus_store_sessions",
        "locus_handoff_records",
        "sample_appends",
        "locus_operator_transitions",
    ] {
        assert!(families.contains_key(family), "{family} is not exported");
    }

    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"].as_u64(), Some(39));
    let expressions = dashboard_expressions(&dashboard)
        .unwrap_or_else(|problems| panic!("the dashboard:\n  {}", problems.join("\n  ")));
    let (problems, unchecked) = check_expressions(&expressions, &families);
    assert!(
        problems.is_empty(),
        "{} problem(s) in {DASHBOARD}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    // Labels of families this test gave no series are unknown: said, not hidden.
    for label in &unchecked {
        println!("label not checked (the family had no series here): {label}");
    }
}

#[test]
fn the_reader_finds_names_and_labels_and_passes_over_the_rest() {
    let query = parse_promql(
        r#"histogram_quantile(0.99, sum by (side, le) (rate(a_bucket{namespace=~"$namespace", job!="x,y}"}[$__rate_interval]))) / on (pod) group_left b offset 5m + label_replace(c, "d", "$1", "e", "(.+)") > 0.5"#,
    )
    .unwrap();
    let names: Vec<&str> = query.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(query.selectors[0].labels, ["namespace", "job"]);
    assert_eq!(query.grouping, ["side", "le", "pod"]);
    assert!(parse_promql(r#"{__name__="a"}"#).is_err());
    assert!(parse_promql(r#"a{b="c"#).is_err());
}

#[test]
fn a_misspelt_metric_or_label_is_named_with_its_panel() {
    let mut families = BTreeMap::new();
    read_exposition(
        "# TYPE x_requests counter\nx_requests_total{side=\"client\"} 1\n\
         # TYPE x_latency_seconds histogram\nx_latency_seconds_bucket{op=\"read\",le=\"0.1\"} 1\n\
         # TYPE x_up gauge\n# EOF\n",
        &mut families,
    );
    let at = |expr: &str| Expression {
        place: "panel \"P\" target \"A\"".into(),
        expr: expr.into(),
        listed_label: None,
    };
    let ok = [
        at("sum by (side) (rate(x_requests_total[5m]))"),
        at("histogram_quantile(0.5, sum by (op, le) (rate(x_latency_seconds_bucket[5m])))"),
        at("x_up{pod=\"p\"}"),
    ];
    let (problems, unchecked) = check_expressions(&ok, &families);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(unchecked.is_empty(), "{unchecked:?}");
    let (problems, _) = check_expressions(
        &[
            at("rate(x_request_total[5m])"),
            at("sum by (outcome) (rate(x_requests_total[5m]))"),
            at("x_requests"),
            at("x_up_total"),
        ],
        &families,
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].contains("panel \"P\"") && problems[0].contains("`x_request_total`"));
    assert!(problems[1].contains("label `outcome`"));
    // A label on a family without series cannot be checked: said, not passed silently.
    let (_, unchecked) = check_expressions(&[at("x_up{side=\"a\"}")], &families);
    assert_eq!(unchecked.len(), 1);
}

/// The control plane's binaries (helm among them): `LOCUS_K8S_BIN`, or what
/// `e2e/cluster/build.sh` built; `None` when neither is there.
fn helm() -> Option<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os("LOCUS_K8S_BIN") {
        PathBuf::from(dir)
    } else {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh");
        let out = Command::new("bash").arg(script).output().ok()?;
        if !out.status.success() {
            return None;
        }
        PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last()?.trim())
    };
    Some(dir.join("helm")).filter(|helm| helm.exists())
}

fn render(helm: &Path, values: &[&str]) -> String {
    let mut command = Command::new(helm);
    command.args([
        "template",
        "locus-operator",
        CHART,
        "--namespace",
        "locus-system",
        "--kube-version",
        "1.36.3",
    ]);
    for value in values {
        command.args(["--set", value]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "helm template {values:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The dashboard's ConfigMap in a rendering, if there is one.
fn dashboard_config_map(rendered: &str) -> Option<serde_yaml::Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .find(|doc| {
            doc["kind"] == "ConfigMap"
                && doc["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-dashboard"))
        })
}

#[test]
fn the_chart_renders_the_dashboard_for_grafanas_sidecar_only_when_enabled() {
    let Some(helm) = helm() else {
        println!("SKIPPED: no helm (run e2e/cluster/build.sh or set LOCUS_K8S_BIN)");
        return;
    };
    assert!(
        dashboard_config_map(&render(&helm, &[])).is_none(),
        "off by default"
    );

    let config_map = dashboard_config_map(&render(&helm, &["dashboard.enabled=true"])).unwrap();
    assert_eq!(config_map["metadata"]["namespace"], "locus-system");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = config_map["data"]["locus.json"].as_str().unwrap();
    let rendered: Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        rendered,
        dashboard(),
        "the ConfigMap holds the dashboard as it is"
    );

    let config_map = dashboard_config_map(&render(
        &helm,
        &[
            "dashboard.enabled=true",
            "dashboard.label=example.com/dashboard",
            "dashboard.labelValue=locus",
            "dashboard.namespace=monitoring",
            "dashboard.annotations.grafana_folder=Locus",
        ],
    ))
    .unwrap();
    let metadata = &config_map["metadata"];
    assert_eq!(metadata["namespace"], "monitoring");
    assert_eq!(metadata["labels"]["example.com/dashboard"], "locus");
    assert!(metadata["labels"].get("grafana_dashboard").is_none());
    assert_eq!(metadata["annotations"]["grafana_folder"], "Locus");
}
