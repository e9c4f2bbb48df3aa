//! Schema adjustments the derive cannot express with attributes alone: validation of duration and
//! quantity strings, and the bounded pod template.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Value, json};

use super::rules;

/// Appends a CEL rule with a message to the schema's `x-kubernetes-validations`.
fn push_rule(schema: &mut Schema, rule: &str, message: &str) {
    let entry = json!({ "rule": rule, "message": message });
    match schema.ensure_object().get_mut("x-kubernetes-validations") {
        Some(Value::Array(existing)) => existing.push(entry),
        _ => {
            schema.insert("x-kubernetes-validations".into(), json!([entry]));
        }
    }
}

/// A positive Go-style duration string (`30s`, `1m30s`): pattern, length bound and CEL rule.
pub(crate) fn positive_duration(schema: &mut Schema) {
    schema.insert("pattern".into(), json!(rules::DURATION_PATTERN));
    schema.insert("maxLength".into(), json!(rules::DURATION_MAX_LENGTH));
    push_rule(
        schema,
        rules::DURATION_POSITIVE,
        rules::DURATION_POSITIVE_MESSAGE,
    );
}

/// A positive Kubernetes quantity string (`256Mi`): length bound and CEL rule.
pub(crate) fn positive_quantity(schema: &mut Schema) {
    schema.insert("minLength".into(), json!(1));
    schema.insert("maxLength".into(), json!(rules::QUANTITY_MAX_LENGTH));
    push_rule(
        schema,
        rules::QUANTITY_POSITIVE,
        rules::QUANTITY_POSITIVE_MESSAGE,
    );
}

/// The pod template: the full `PodTemplateSpec` schema from k8s-openapi, inlined (a CRD schema
/// may not use `$ref`), with the two lists that the `spec.port` rule walks bounded so that the
/// API server's cost estimate of that rule stays within its budget.
///
/// The descriptions below `template.metadata` and `template.spec` are dropped: they are the
/// Pod's own (`kubectl explain pod.spec` shows them) and would make the CRD about 350 KB, more
/// than the 256 KiB that client-side `kubectl apply` can store in its annotation.
pub(crate) fn pod_template(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<PodTemplateSpec>();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for property in properties.values_mut() {
            if let Some(Value::Object(inner)) = property.get_mut("properties") {
                inner.values_mut().for_each(drop_descriptions);
            }
        }
    }
    if let Some(containers) = schema.pointer_mut("/properties/spec/properties/containers") {
        set_key(containers, "maxItems", json!(rules::MAX_CONTAINERS));
        if let Some(ports) = containers.pointer_mut("/items/properties/ports") {
            set_key(ports, "maxItems", json!(rules::MAX_CONTAINER_PORTS));
        }
    }
    schema
}

/// Removes every `description` from a schema and its subschemas. A property that happens to be
/// named `description` is a schema, not text, and is kept.
fn drop_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if matches!(map.get("description"), Some(Value::String(_))) {
                map.remove("description");
            }
            for (key, value) in map.iter_mut() {
                if key == "properties" {
                    if let Value::Object(properties) = value {
                        properties.values_mut().for_each(drop_descriptions);
                    }
                } else {
                    drop_descriptions(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_descriptions),
        _ => {}
    }
}

/// Adjusts a whole generated schema for the API server and `kubectl explain`, applied to the
/// spec and status types:
///
/// - descriptions come from doc comments wrapped at 100 columns; lines within a paragraph are
///   joined so that `kubectl explain` can wrap them itself;
/// - the API server warns about the `uint32` and `uint64` formats schemars gives unsigned
///   integers; the format is dropped (the `minimum: 0` beside it stays).
pub(crate) fn for_kubernetes(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        for value in object.values_mut() {
            adjust(value);
        }
        adjust_node(object);
    }
}

fn adjust(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for inner in object.values_mut() {
                adjust(inner);
            }
            adjust_node(object);
        }
        Value::Array(items) => items.iter_mut().for_each(adjust),
        _ => {}
    }
}

/// Adjusts one schema node (its children are done by the caller).
fn adjust_node(node: &mut serde_json::Map<String, Value>) {
    if let Some(Value::String(description)) = node.get_mut("description") {
        *description = unwrap_lines(description);
    }
    if matches!(node.get("format"), Some(Value::String(f)) if f == "uint32" || f == "uint64") {
        node.remove("format");
    }
}

/// Joins the lines of each paragraph with a space; paragraphs stay separated by a blank line.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Sets `key` on a JSON object; leaves any other value alone.
fn set_key(value: &mut Value, key: &str, new: Value) {
    if let Value::Object(map) = value {
        map.insert(key.to_owned(), new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_schema() -> Schema {
        schemars::json_schema!({ "type": "string" })
    }

    #[test]
    fn positive_duration_adds_pattern_bound_and_rule() {
        let mut schema = string_schema();
        positive_duration(&mut schema);
        assert_eq!(schema.get("pattern"), Some(&json!(rules::DURATION_PATTERN)));
        assert_eq!(schema.get("maxLength"), Some(&json!(32)));
        assert_eq!(
            schema.get("x-kubernetes-validations"),
            Some(&json!([{
                "rule": rules::DURATION_POSITIVE,
                "message": rules::DURATION_POSITIVE_MESSAGE,
            }]))
        );
    }

    #[test]
    fn rules_accumulate_instead_of_replacing() {
        let mut schema = string_schema();
        push_rule(&mut schema, "a", "first");
        push_rule(&mut schema, "b", "second");
        let rules = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .map(Vec::len);
        assert_eq!(rules, Some(2));
    }

    #[test]
    fn unwrap_lines_joins_lines_but_keeps_paragraphs() {
        assert_eq!(
            unwrap_lines("one\ntwo\n  three\n\nfour\nfive"),
            "one two three\n\nfour five"
        );
        assert_eq!(unwrap_lines("single line"), "single line");
    }

    #[test]
    fn for_kubernetes_unwraps_descriptions_and_drops_unsigned_formats() {
        let mut schema = schemars::json_schema!({
            "description": "a\nb",
            "type": "object",
            "properties": {
                "count": { "type": "integer", "format": "uint32", "minimum": 0, "description": "c\nd" },
                "version": { "type": "integer", "format": "uint64", "minimum": 0 },
                "generation": { "type": "integer", "format": "int64" },
                "items": { "type": "array", "items": { "type": "string", "description": "e\nf" } },
            },
        });
        for_kubernetes(&mut schema);
        assert_eq!(
            schema.as_value(),
            &json!({
                "description": "a b",
                "type": "object",
                "properties": {
                    "count": { "type": "integer", "minimum": 0, "description": "c d" },
                    "version": { "type": "integer", "minimum": 0 },
                    "generation": { "type": "integer", "format": "int64" },
                    "items": { "type": "array", "items": { "type": "string", "description": "e f" } },
                },
            })
        );
    }

    #[test]
    fn drop_descriptions_keeps_a_property_named_description() {
        let mut schema = json!({
            "description": "text",
            "properties": {
                "description": { "type": "string", "description": "nested text" },
                "items": { "type": "array", "items": { "description": "x", "type": "string" } },
            },
        });
        drop_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({
                "properties": {
                    "description": { "type": "string" },
                    "items": { "type": "array", "items": { "type": "string" } },
                },
            })
        );
    }

    #[test]
    fn pod_template_bounds_containers_and_ports() {
        let mut generator = schemars::generate::SchemaSettings::openapi3()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let schema = pod_template(&mut generator);
        let containers = schema.pointer("/properties/spec/properties/containers");
        assert_eq!(
            containers.and_then(|c| c.get("maxItems")),
            Some(&json!(rules::MAX_CONTAINERS))
        );
        assert_eq!(
            containers.and_then(|c| c.pointer("/items/properties/ports/maxItems")),
            Some(&json!(rules::MAX_CONTAINER_PORTS))
        );
    }
}
