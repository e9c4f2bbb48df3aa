//! Tests of the generated `StatefulService` CRD: the committed YAML matches the types, the schema
//! carries the validation rules and defaults the API server needs, the schema is structural, and
//! a minimal spec deserializes with the same defaults the schema declares.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure"
)]

use std::path::PathBuf;

use locus_operator::crd::{
    self, AVAILABLE, BalanceMode, ColdSessions, DEGRADED, HotShardStatus, MovedSessionsSummary,
    PROGRESSING, Phase, PlacementStatus, PodFailurePolicy, PodLoad, RebalanceRecord,
    StatefulService, StatefulServiceSpec, StatefulServiceStatus, TransitionKind, TransitionRecord,
    TriggerHeld, UpdateStrategyType, WarmSessions, rules,
};
use serde_json::{Value, json};

const STALE: &str = "crds/statefulservices.locus.dev.yaml is stale: run `cargo run -p locus-operator --bin crdgen > crds/statefulservices.locus.dev.yaml`";

fn committed_crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/statefulservices.locus.dev.yaml")
}

/// The CRD as JSON, for navigating the schema.
fn crd_json() -> Value {
    serde_json::to_value(crd::crd()).expect("the CRD serializes")
}

/// The openAPIV3Schema of the only version.
fn root_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn spec_schema() -> Value {
    root_schema()["properties"]["spec"].clone()
}

/// The `x-kubernetes-validations` of a schema node, as (rule, message or messageExpression,
/// fieldPath) triples.
fn validations(schema: &Value) -> Vec<(String, String, Option<String>)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|rule| {
                    let text = |key: &str| rule[key].as_str().map(str::to_owned);
                    (
                        text("rule").unwrap_or_default(),
                        text("message")
                            .or_else(|| text("messageExpression"))
                            .unwrap_or_default(),
                        text("fieldPath"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn minimal_spec_json() -> Value {
    json!({
        "port": "http",
        "template": { "spec": { "containers": [
            { "name": "app", "image": "example/app:1", "ports": [{ "name": "http", "containerPort": 8080 }] }
        ] } }
    })
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    let generated = crd::crd_yaml().expect("the CRD renders as YAML");
    let path = committed_crd_path();
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{STALE} (cannot read {}: {error})", path.display()));
    assert!(committed == generated, "{STALE}");
}

#[test]
fn names_scope_and_version() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], crd::CRD_NAME);
    assert_eq!(crd["spec"]["group"], "locus.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let names = &crd["spec"]["names"];
    assert_eq!(names["kind"], "StatefulService");
    assert_eq!(names["plural"], "statefulservices");
    assert_eq!(names["singular"], "statefulservice");
    assert_eq!(names["shortNames"], json!(["stsvc"]));
    assert_eq!(names["categories"], json!(["locus"]));
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], "v1alpha1");
    assert_eq!(versions[0]["served"], true);
    assert_eq!(versions[0]["storage"], true);
    assert_eq!(
        format!("{}.{}", crd::PLURAL, crd::GROUP),
        crd::CRD_NAME,
        "the CRD name is <plural>.<group>"
    );
}

#[test]
fn short_name_does_not_clash_with_built_in_resources() {
    // Short names of the built-in resources of Kubernetes 1.36 that an operator user is likely
    // to type; a clash would make `kubectl get <short>` ambiguous.
    let built_in = [
        "cm", "cs", "csr", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits", "netpol", "no",
        "ns", "pc", "pdb", "po", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts", "svc",
    ];
    assert!(!built_in.contains(&crd::SHORT_NAME), "{}", crd::SHORT_NAME);
}

#[test]
fn status_and_scale_subresources() {
    let subresources = &crd_json()["spec"]["versions"][0]["subresources"];
    assert_eq!(subresources["status"], json!({}));
    assert_eq!(
        subresources["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
    // The scale subresource needs integer replicas on both sides and a string selector.
    let root = root_schema();
    assert_eq!(
        root["properties"]["spec"]["properties"]["replicas"]["type"],
        "integer"
    );
    assert_eq!(
        root["properties"]["status"]["properties"]["replicas"]["type"],
        "integer"
    );
    assert_eq!(
        root["properties"]["status"]["properties"]["selector"]["type"],
        "string"
    );
}

#[test]
fn printer_columns() {
    let columns = crd_json()["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    let columns: Vec<(String, String, String)> = columns
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                c["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Replicas", ".spec.replicas", "integer"),
        ("Ready", ".status.readyReplicas", "integer"),
        ("Ring", ".status.ringVersion", "integer"),
        ("Phase", ".status.phase", "string"),
        ("Shards", ".status.shards", "integer"),
        ("Active", ".status.activeReplicas", "integer"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(columns, expected);
}

#[test]
fn shards_rules_power_of_two_and_only_grow() {
    let shards = &spec_schema()["properties"]["shards"];
    assert_eq!(
        validations(shards),
        vec![
            (
                rules::SHARDS_POWER_OF_TWO.to_owned(),
                rules::SHARDS_POWER_OF_TWO_MESSAGE.to_owned(),
                None
            ),
            (
                "self >= oldSelf".to_owned(),
                rules::SHARDS_ONLY_GROW_MESSAGE.to_owned(),
                None
            ),
        ]
    );
    assert_eq!(shards["minimum"], json!(1.0));
    assert_eq!(shards["maximum"], json!(65536.0));
    // No default: unset means the operator chooses the count (`crd::auto_shards`).
    assert_eq!(shards.get("default"), None);
}

#[test]
fn power_of_two_rule_lists_exactly_the_powers_of_two_up_to_the_maximum() {
    let list = rules::SHARDS_POWER_OF_TWO
        .strip_prefix("self in [")
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("a membership test against a list literal");
    let listed: Vec<u32> = list
        .split(',')
        .map(|n| n.trim().parse().expect("an integer"))
        .collect();
    let powers: Vec<u32> = (0..=16).map(|exp| 1_u32 << exp).collect();
    assert_eq!(listed, powers);
    assert_eq!(listed.last(), Some(&rules::MAX_SHARDS));
    assert!(listed.contains(&crd::DEFAULT_SHARDS));
}

#[test]
fn spec_rules_port_and_replicas() {
    let rules_found = validations(&spec_schema());
    assert_eq!(
        rules_found,
        vec![
            (
                rules::PORT_NAMES_CONTAINER_PORT.to_owned(),
                rules::PORT_NAMES_CONTAINER_PORT_MESSAGE.to_owned(),
                Some(".port".to_owned())
            ),
            (
                rules::REPLICAS_AT_MOST_SHARDS.to_owned(),
                rules::REPLICAS_AT_MOST_SHARDS_MESSAGE.to_owned(),
                Some(".replicas".to_owned())
            ),
            (
                "self.updateStrategy.type != 'InPlace' || has(self.snapshot)".to_owned(),
                rules::IN_PLACE_NEEDS_SNAPSHOT_MESSAGE.to_owned(),
                Some(".updateStrategy.type".to_owned())
            ),
        ]
    );
    // The port message is a CEL expression that quotes the offending name.
    let port_rule = &spec_schema()["x-kubernetes-validations"][0];
    assert_eq!(
        port_rule["messageExpression"],
        r#""spec.port '" + self.port + "' must name a containerPort in spec.template.spec.containers[*].ports""#
    );
    assert!(port_rule.get("message").is_none());
}

#[test]
fn port_rule_walks_bounded_lists_and_a_bounded_name() {
    let spec = spec_schema();
    let port = &spec["properties"]["port"];
    assert_eq!(port["maxLength"], json!(15));
    assert_eq!(port["minLength"], json!(1));
    assert_eq!(port["pattern"], rules::PORT_NAME_PATTERN);
    let containers =
        &spec["properties"]["template"]["properties"]["spec"]["properties"]["containers"];
    assert_eq!(containers["maxItems"], json!(rules::MAX_CONTAINERS));
    assert_eq!(
        containers["items"]["properties"]["ports"]["maxItems"],
        json!(rules::MAX_CONTAINER_PORTS)
    );
    // The rule reads these fields, so they must be declared (not preserved unknown fields).
    assert_eq!(
        containers["items"]["properties"]["ports"]["items"]["properties"]["name"]["type"],
        "string"
    );
}

#[test]
fn durations_and_quantity_are_validated() {
    let spec = spec_schema();
    let durations = [
        &spec["properties"]["timeouts"]["properties"]["warm"],
        &spec["properties"]["timeouts"]["properties"]["drain"],
        &spec["properties"]["timeouts"]["properties"]["settle"],
        &spec["properties"]["unreadyGrace"],
    ];
    for duration in durations {
        assert_eq!(duration["type"], "string");
        assert_eq!(duration["pattern"], rules::DURATION_PATTERN);
        assert_eq!(duration["maxLength"], json!(rules::DURATION_MAX_LENGTH));
        assert_eq!(
            validations(duration),
            vec![(
                rules::DURATION_POSITIVE.to_owned(),
                rules::DURATION_POSITIVE_MESSAGE.to_owned(),
                None
            )]
        );
    }
    // The CEL rule skips what the pattern already refuses, with the very same pattern.
    assert_eq!(
        rules::DURATION_POSITIVE,
        format!(
            "!self.matches('{}') || duration(self) > duration('0s')",
            rules::DURATION_PATTERN
        )
    );
    let size_limit = &spec["properties"]["snapshot"]["properties"]["sizeLimit"];
    assert_eq!(
        validations(size_limit),
        vec![(
            rules::QUANTITY_POSITIVE.to_owned(),
            rules::QUANTITY_POSITIVE_MESSAGE.to_owned(),
            None
        )]
    );
}

#[test]
fn other_bounds_and_enums() {
    let spec = spec_schema();
    let p = &spec["properties"];
    assert_eq!(p["replicas"]["minimum"], json!(0.0));
    assert_eq!(p["vnodes"]["minimum"], json!(1.0));
    assert_eq!(p["vnodes"]["maximum"], json!(1024.0));
    assert_eq!(p["maxShardMovesPerStep"]["minimum"], json!(1.0));
    assert_eq!(
        p["updateStrategy"]["properties"]["type"]["enum"],
        json!(["Surge", "InPlace"])
    );
    assert_eq!(p["onPodFailure"]["enum"], json!(["Reroute", "Wait"]));
    let mut required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["port", "template"]);
}

#[test]
fn schema_declares_the_defaults() {
    let spec = spec_schema();
    let p = &spec["properties"];
    assert_eq!(p["replicas"]["default"], json!(1));
    assert!(
        p["shards"].get("default").is_none(),
        "unset means the operator chooses the count"
    );
    assert_eq!(p["vnodes"]["default"], json!(128));
    assert_eq!(p["updateStrategy"]["default"], json!({ "type": "Surge" }));
    assert_eq!(
        p["updateStrategy"]["properties"]["type"]["default"],
        "Surge"
    );
    assert_eq!(
        p["timeouts"]["default"],
        json!({ "warm": "30s", "drain": "30s", "settle": "60s" })
    );
    assert_eq!(p["timeouts"]["properties"]["warm"]["default"], "30s");
    assert_eq!(p["timeouts"]["properties"]["drain"]["default"], "30s");
    assert_eq!(p["timeouts"]["properties"]["settle"]["default"], "60s");
    assert_eq!(p["unreadyGrace"]["default"], "10s");
    assert_eq!(p["onPodFailure"]["default"], "Reroute");
    assert_eq!(p["snapshot"]["properties"]["sizeLimit"]["default"], "256Mi");
    assert!(
        p["maxShardMovesPerStep"].get("default").is_none(),
        "unset means no limit"
    );
}

#[test]
fn schema_defaults_agree_with_serde_defaults() {
    // What the API server fills in must be what the operator assumes when a field is missing.
    let spec: StatefulServiceSpec =
        serde_json::from_value(minimal_spec_json()).expect("a minimal spec deserializes");
    let filled = serde_json::to_value(&spec).expect("the spec serializes");
    let schema = spec_schema();
    let mut checked = 0;
    for (name, property) in schema["properties"].as_object().expect("properties") {
        if let Some(default) = property.get("default") {
            assert_eq!(&filled[name], default, "default of spec.{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 7, "every defaulted field of the spec was compared");
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &root_schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let mut required: Vec<&str> = conditions["items"]["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        ["lastTransitionTime", "message", "reason", "status", "type"],
        "a list-map key must be required"
    );
    assert_eq!(
        [AVAILABLE, PROGRESSING, DEGRADED],
        ["Available", "Progressing", "Degraded"]
    );
}

#[test]
fn status_schema_enums() {
    let status = &root_schema()["properties"]["status"]["properties"];
    assert_eq!(
        status["phase"]["enum"],
        json!(["Stable", "Warm", "Switch", "Settle"])
    );
    assert_eq!(
        status["lastTransition"]["properties"]["kind"]["enum"],
        json!([
            "ScaleUp",
            "ScaleDown",
            "Rollout",
            "InPlace",
            "Reroute",
            "Rebalance",
            "Reshard"
        ])
    );
    let moved = &status["lastTransition"]["properties"]["movedSessions"]["properties"];
    for field in [
        "warm",
        "cold",
        "served",
        "coldWhilePreviousAlive",
        "coldPreviousGone",
        "podsExpected",
        "podsReported",
        "pending",
        "missing",
        "final",
    ] {
        assert!(moved.get(field).is_some(), "movedSessions.{field}");
    }
    assert!(moved["cold"]["properties"].get("fencedLoad").is_some());
}

/// Collects the JSON pointers of every node that breaks a rule of structural schemas as the API
/// server checks them: no `$ref`, no `$schema` or `definitions`, a `type` on every node (unless
/// it is int-or-string or preserves unknown fields), no `additionalProperties` beside
/// `properties`, and logical junctors without types or defaults inside.
fn structural_violations(schema: &Value, path: &str, inside_junctor: bool, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for forbidden in ["$ref", "$schema", "definitions", "$defs"] {
        if node.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    let escape_hatch = node.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !inside_junctor && !node.contains_key("type") && !escape_hatch {
        out.push(format!("{path}: no type"));
    }
    if inside_junctor {
        for forbidden in [
            "type",
            "default",
            "description",
            "nullable",
            "additionalProperties",
        ] {
            if node.contains_key(forbidden) {
                out.push(format!("{path}: {forbidden} inside a junctor"));
            }
        }
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!("{path}: properties and additionalProperties"));
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, property) in properties {
            structural_violations(
                property,
                &format!("{path}/properties/{name}"),
                inside_junctor,
                out,
            );
        }
    }
    if let Some(items) = node.get("items") {
        structural_violations(items, &format!("{path}/items"), inside_junctor, out);
    }
    if let Some(additional @ Value::Object(_)) = node.get("additionalProperties") {
        structural_violations(
            additional,
            &format!("{path}/additionalProperties"),
            inside_junctor,
            out,
        );
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = node.get(junctor) {
            for (i, branch) in branches.iter().enumerate() {
                structural_violations(branch, &format!("{path}/{junctor}/{i}"), true, out);
            }
        }
    }
    if let Some(not) = node.get("not") {
        structural_violations(not, &format!("{path}/not"), true, out);
    }
}

#[test]
fn schema_is_structural() {
    let mut violations = Vec::new();
    structural_violations(&root_schema(), "", false, &mut violations);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Visits every schema node outside `spec.template` (whose descriptions are the Pod's own).
fn visit_outside_template(schema: &Value, path: &str, visit: &mut dyn FnMut(&str, &Value)) {
    if path == "/properties/spec/properties/template" {
        return;
    }
    visit(path, schema);
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                visit_outside_template(value, &format!("{path}/{key}"), visit);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit_outside_template(item, &format!("{path}/{i}"), visit);
            }
        }
        _ => {}
    }
}

#[test]
fn descriptions_are_unwrapped_and_formats_known_to_the_api_server() {
    let mut wrapped = Vec::new();
    let mut formats = std::collections::BTreeSet::new();
    visit_outside_template(&root_schema(), "", &mut |path, node| {
        if let Some(Value::String(text)) = node.get("description")
            && text.replace("\n\n", "").contains('\n')
        {
            wrapped.push(path.to_owned());
        }
        if let Some(Value::String(format)) = node.get("format") {
            formats.insert(format.clone());
        }
    });
    assert!(
        wrapped.is_empty(),
        "descriptions with line breaks: {wrapped:#?}"
    );
    // The API server warns about formats it does not know (uint32 and uint64 among them).
    let known = ["date-time", "double", "int32", "int64"];
    for format in &formats {
        assert!(known.contains(&format.as_str()), "format {format}");
    }
    // Every field of spec and status is documented (the text of `kubectl explain`).
    let mut undocumented = Vec::new();
    let mut fields = 0;
    for part in ["spec", "status"] {
        visit_outside_template(
            &root_schema()["properties"][part],
            &format!("/properties/{part}"),
            &mut |path, node| {
                if path.rsplit('/').nth(1) == Some("properties") {
                    fields += 1;
                    if node.get("description").is_none() {
                        undocumented.push(path.to_owned());
                    }
                }
            },
        );
    }
    assert!(undocumented.is_empty(), "{undocumented:#?}");
    assert!(fields > 30, "only {fields} fields visited");
}

#[test]
fn crd_fits_in_a_client_side_apply_annotation() {
    // `kubectl apply` (client side) stores the object as JSON in an annotation of at most
    // 256 KiB; a CRD larger than that can only be applied server side.
    let json = serde_json::to_string(&crd::crd()).expect("the CRD serializes");
    assert!(
        json.len() < 200 * 1024,
        "CRD is {} bytes of JSON",
        json.len()
    );
}

#[test]
fn minimal_spec_deserializes_with_defaults() {
    let spec: StatefulServiceSpec =
        serde_json::from_value(minimal_spec_json()).expect("a minimal spec deserializes");
    assert_eq!(spec.replicas, 1);
    assert_eq!(spec.shards, None);
    assert_eq!(spec.vnodes, 128);
    assert_eq!(spec.update_strategy.type_, UpdateStrategyType::Surge);
    assert_eq!(spec.max_shard_moves_per_step, None);
    assert_eq!(
        std::time::Duration::from(spec.timeouts.warm),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        std::time::Duration::from(spec.timeouts.drain),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        std::time::Duration::from(spec.timeouts.settle),
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        std::time::Duration::from(spec.unready_grace),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(spec.on_pod_failure, PodFailurePolicy::Reroute);
    assert_eq!(spec.snapshot, None);
    assert_eq!(spec.port, "http");
    let containers = spec.template.spec.as_ref().map(|s| s.containers.len());
    assert_eq!(containers, Some(1));
}

#[test]
fn partial_nested_objects_get_their_field_defaults() {
    let mut value = minimal_spec_json();
    value["timeouts"] = json!({ "warm": "1m30s" });
    value["snapshot"] = json!({});
    value["updateStrategy"] = json!({ "type": "InPlace" });
    value["onPodFailure"] = json!("Wait");
    let spec: StatefulServiceSpec = serde_json::from_value(value).expect("deserializes");
    assert_eq!(
        std::time::Duration::from(spec.timeouts.warm),
        std::time::Duration::from_secs(90)
    );
    assert_eq!(
        std::time::Duration::from(spec.timeouts.settle),
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        spec.snapshot.map(|s| s.size_limit),
        Some("256Mi".to_owned())
    );
    assert_eq!(spec.update_strategy.type_, UpdateStrategyType::InPlace);
    assert_eq!(spec.on_pod_failure, PodFailurePolicy::Wait);
}

#[test]
fn spec_round_trips_through_json_and_yaml() {
    let spec: StatefulServiceSpec =
        serde_json::from_value(minimal_spec_json()).expect("deserializes");
    let json = serde_json::to_value(&spec).expect("serializes");
    // camelCase on the wire, defaults written out, unset options omitted.
    assert_eq!(json["updateStrategy"], json!({ "type": "Surge" }));
    assert_eq!(json["unreadyGrace"], "10s");
    assert_eq!(json["onPodFailure"], "Reroute");
    assert!(json.get("maxShardMovesPerStep").is_none());
    assert!(json.get("snapshot").is_none());
    let again: StatefulServiceSpec = serde_json::from_value(json).expect("deserializes again");
    assert_eq!(again, spec);

    let yaml = serde_yaml::to_string(&spec).expect("serializes as YAML");
    let from_yaml: StatefulServiceSpec = serde_yaml::from_str(&yaml).expect("parses YAML");
    assert_eq!(from_yaml, spec);
}

#[test]
fn bad_values_are_refused_by_serde_too() {
    let mut value = minimal_spec_json();
    value["onPodFailure"] = json!("Retry");
    assert!(serde_json::from_value::<StatefulServiceSpec>(value).is_err());
    let mut value = minimal_spec_json();
    value["timeouts"] = json!({ "warm": "thirty" });
    assert!(serde_json::from_value::<StatefulServiceSpec>(value).is_err());
    let mut value = minimal_spec_json();
    value["shards"] = json!(-1);
    assert!(serde_json::from_value::<StatefulServiceSpec>(value).is_err());
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one whole resource, every status field set, written out"
)]
fn whole_resource_with_status_round_trips() {
    let spec: StatefulServiceSpec =
        serde_json::from_value(minimal_spec_json()).expect("deserializes");
    let mut service = StatefulService::new("cart", spec);
    service.status = Some(StatefulServiceStatus {
        observed_generation: Some(3),
        replicas: 2,
        ready_replicas: 2,
        active_replicas: 2,
        shards: Some(8192),
        ring_version: Some(7),
        phase: Phase::Settle,
        conditions: Vec::new(),
        selector: Some("app.kubernetes.io/instance=cart".to_owned()),
        current_revision: Some("abc".to_owned()),
        update_revision: Some("abc".to_owned()),
        last_transition: Some(TransitionRecord {
            kind: TransitionKind::ScaleUp,
            from_version: 5,
            to_version: 7,
            shards_moved: 1365,
            started_at: serde_json::from_value(json!("2026-01-02T03:04:05Z")).expect("a timestamp"),
            finished_at: None,
            duration_seconds: None,
            warm_hit_percent: Some(99.5),
            moved_sessions: Some(MovedSessionsSummary {
                warm: WarmSessions {
                    precopied: 150,
                    pushed: 49,
                    total: 199,
                    ..WarmSessions::default()
                },
                cold: ColdSessions {
                    rolled_forward: 1,
                    total: 1,
                    ..ColdSessions::default()
                },
                cold_previous_gone: 1,
                pods_expected: 2,
                pods_reported: 2,
                r#final: true,
                ..MovedSessionsSummary::default()
            }),
            losers_gone: vec!["cart-1-x".to_owned()],
        }),
        placement: Some(PlacementStatus {
            pods: vec![PodLoad {
                slot: 1,
                pod: "cart-1-x".to_owned(),
                requests_per_second: Some(120.5),
                bytes_per_second: Some(4096.0),
                ring_version: Some(7),
                seen_at: Some(
                    serde_json::from_value(json!("2026-01-02T03:04:05Z")).expect("a timestamp"),
                ),
                problem: None,
            }],
            busiest_percent: Some(131),
            message: Some("a transition is in progress".to_owned()),
            last_rebalance: Some(RebalanceRecord {
                started_at: serde_json::from_value(json!("2026-01-02T03:04:05Z"))
                    .expect("a timestamp"),
                from_version: 4,
                shards_moved: 12,
                busiest_percent_before: 152,
                busiest_percent_predicted: 108,
                split_to_shards: None,
            }),
            trigger_held: Some(TriggerHeld {
                ring_version: 7,
                window_end_ms: 1_767_323_045_000,
                busiest_percent: 131,
            }),
            hot_shards: vec![HotShardStatus {
                shard: 77,
                slot: 1,
                requests_per_second: 300.0,
                percent_of_mean: 140,
            }],
        }),
    });
    let json = serde_json::to_value(&service).expect("serializes");
    let placement = &json["status"]["placement"];
    assert_eq!(placement["pods"][0]["requestsPerSecond"], 120.5);
    assert_eq!(placement["lastRebalance"]["busiestPercentPredicted"], 108);
    assert_eq!(placement["hotShards"][0]["percentOfMean"], 140);
    assert_eq!(
        placement["triggerHeld"]["windowEndMs"],
        1_767_323_045_000_u64
    );
    assert!(placement["pods"][0].get("problem").is_none());
    let moved = &json["status"]["lastTransition"]["movedSessions"];
    assert_eq!(moved["warm"]["total"], 199);
    assert_eq!(moved["cold"]["rolledForward"], 1);
    assert_eq!(moved["coldPreviousGone"], 1);
    assert_eq!(moved["coldWhilePreviousAlive"], 0);
    assert_eq!(moved["podsExpected"], 2);
    assert_eq!(moved["final"], true);
    assert!(moved.get("missing").is_none(), "empty lists are left out");
    assert_eq!(
        json["status"]["lastTransition"]["losersGone"][0],
        "cart-1-x"
    );
    assert_eq!(json["apiVersion"], "locus.dev/v1alpha1");
    assert_eq!(json["kind"], "StatefulService");
    assert_eq!(json["status"]["phase"], "Settle");
    assert_eq!(json["status"]["lastTransition"]["kind"], "ScaleUp");
    assert_eq!(json["status"]["lastTransition"]["shardsMoved"], 1365);
    assert!(json["status"].get("conditions").is_none());
    let again: StatefulService = serde_json::from_value(json).expect("deserializes");
    assert_eq!(again, service);
}

/// `kubectl get statefulservice good -o json` from kube-apiserver v1.36.3 with the committed CRD:
/// a minimal spec after the API server filled in the schema's defaults, then `shards` raised to
/// 8192 and `kubectl scale --replicas=3`, and a status written by server-side apply
/// (`managedFields` removed).
const SERVED_BY_THE_API_SERVER: &str = r#"{
  "apiVersion": "locus.dev/v1alpha1",
  "kind": "StatefulService",
  "metadata": {
    "creationTimestamp": "2026-11-26T11:52:48Z",
    "generation": 3,
    "name": "good",
    "namespace": "default",
    "resourceVersion": "94",
    "uid": "5dc12269-f37b-4d43-abf7-0acd3a91f48b"
  },
  "spec": {
    "onPodFailure": "Reroute",
    "placement": {
      "balance": "Keys",
      "intervalSeconds": 300,
      "maxShardsPerRound": 64,
      "targetPercent": 110,
      "triggerPercent": 120
    },
    "port": "http",
    "replicas": 3,
    "shards": 8192,
    "template": {
      "spec": {
        "containers": [
          {
            "image": "example/app:1",
            "name": "app",
            "ports": [
              {
                "containerPort": 8080,
                "name": "http"
              }
            ]
          }
        ]
      }
    },
    "timeouts": {
      "drain": "30s",
      "settle": "60s",
      "warm": "30s"
    },
    "unreadyGrace": "10s",
    "updateStrategy": {
      "type": "Surge"
    },
    "vnodes": 128
  },
  "status": {
    "activeReplicas": 2,
    "conditions": [
      {
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "message": "every shard has a Ready owner",
        "reason": "AllShardsServed",
        "status": "True",
        "type": "Available"
      },
      {
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "message": "warming 1365 shards",
        "reason": "ScaleUp",
        "status": "True",
        "type": "Progressing"
      },
      {
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "message": "",
        "reason": "AsExpected",
        "status": "False",
        "type": "Degraded"
      }
    ],
    "lastTransition": {
      "fromVersion": 5,
      "kind": "ScaleUp",
      "shardsMoved": 1365,
      "startedAt": "2026-01-02T03:04:05Z",
      "toVersion": 7,
      "warmHitPercent": 99.5
    },
    "observedGeneration": 3,
    "phase": "Warm",
    "readyReplicas": 2,
    "replicas": 3,
    "ringVersion": 7,
    "selector": "app.kubernetes.io/instance=good"
  }
}"#;

#[test]
fn object_served_by_the_api_server_round_trips() {
    let served: Value = serde_json::from_str(SERVED_BY_THE_API_SERVER).expect("valid JSON");
    let service: StatefulService = serde_json::from_value(served.clone()).expect("deserializes");
    assert_eq!(service.spec.shards, Some(8192));
    assert_eq!(service.spec.replicas, 3);
    let status = service.status.as_ref().expect("status");
    assert_eq!(status.phase, Phase::Warm);
    assert_eq!(status.ring_version, Some(7));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [AVAILABLE, PROGRESSING, DEGRADED]);
    // Serializing gives back exactly what the API server served: no field lost or added.
    assert_eq!(serde_json::to_value(&service).expect("serializes"), served);
}

#[test]
fn placement_defaults_and_its_rule() {
    let spec: StatefulServiceSpec =
        serde_json::from_value(minimal_spec_json()).expect("deserializes");
    assert_eq!(spec.placement.balance, BalanceMode::Keys);
    assert_eq!(
        (
            spec.placement.trigger_percent,
            spec.placement.target_percent,
            spec.placement.max_shards_per_round,
            spec.placement.interval_seconds
        ),
        (120, 110, 64, 300)
    );
    let placement = &spec_schema()["properties"]["placement"];
    assert_eq!(
        validations(placement),
        vec![(
            rules::PLACEMENT_TARGET_BELOW_TRIGGER.to_owned(),
            rules::PLACEMENT_TARGET_BELOW_TRIGGER_MESSAGE.to_owned(),
            Some(".targetPercent".to_owned())
        )]
    );
    let properties = &placement["properties"];
    assert_eq!(
        properties["balance"]["enum"],
        json!(["Off", "Keys", "Load"])
    );
    assert_eq!(properties["balance"]["default"], "Keys");
    assert_eq!(properties["triggerPercent"]["minimum"], json!(101.0));
    assert_eq!(properties["targetPercent"]["minimum"], json!(100.0));
    assert_eq!(properties["maxShardsPerRound"]["minimum"], json!(1.0));
    assert_eq!(properties["intervalSeconds"]["minimum"], json!(1.0));
    assert_eq!(placement["default"]["balance"], "Keys");
}
