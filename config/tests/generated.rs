//! The committed schemas and the field tables in docs/ are what the code generates.
//! Regenerate both with `AGENT_WRITE_SCHEMAS=1 cargo test --test generated`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agent_config::config::{self, Reloads};
use agent_config::schema;
use serde_json::Value;

/// Where the schemas live, relative to the crate's manifest. In the workspace, where this
/// crate sits one level below the repository root, this is `../schema`.
const SCHEMA_DIR: &str = "../schema";
/// Where the docs live, relative to the crate's manifest (`../docs` in the workspace).
const DOCS_DIR: &str = "../docs";

const BEGIN: &str =
    "<!-- BEGIN GENERATED FIELDS: AGENT_WRITE_SCHEMAS=1 cargo test --test generated -->\n";
const END: &str = "<!-- END GENERATED FIELDS -->";

fn path(dir: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(file)
}

fn writing() -> bool {
    std::env::var_os("AGENT_WRITE_SCHEMAS").is_some_and(|v| v == "1")
}

/// Compares a committed file with what the code generates, or rewrites it.
fn check_file(file: &Path, generated: &str) {
    if writing() {
        // Write then rename, so tests reading the file meanwhile never see half of it.
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let temporary = file.with_extension("tmp");
        std::fs::write(&temporary, generated).unwrap();
        std::fs::rename(&temporary, file).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what the code generates; regenerate it with `AGENT_WRITE_SCHEMAS=1 cargo test --test generated` and commit the result",
        file.display()
    );
}

/// Replaces the generated part of a doc (between the markers) and compares or rewrites.
fn check_doc(file: &Path, table: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let start = text.find(BEGIN).expect("the begin marker") + BEGIN.len();
    let end = text.find(END).expect("the end marker");
    let generated = format!("{}{table}{}", &text[..start], &text[end..]);
    check_file(file, &generated);
}

#[test]
fn config_schema_is_up_to_date() {
    check_file(
        &path(SCHEMA_DIR, "agent-config.schema.json"),
        &schema::config_schema(),
    );
}

#[test]
fn jobspec_schema_is_up_to_date() {
    check_file(
        &path(SCHEMA_DIR, "jobspec-v1.schema.json"),
        &schema::jobspec_schema(),
    );
}

#[test]
fn schemas_are_json_schema_documents() {
    for text in [schema::config_schema(), schema::jobspec_schema()] {
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(value["additionalProperties"], false);
        assert!(
            value["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from("version"))
        );
    }
    // TOML has no null, so the config schema must not offer it.
    assert!(!schema::config_schema().contains("\"null\""));
}

/// One row of a field table.
struct Row {
    path: String,
    variant: Option<String>,
    kind: String,
    default: String,
    description: String,
}

struct Walker<'s> {
    defs: &'s Value,
    rows: Vec<Row>,
}

impl<'s> Walker<'s> {
    fn resolve(&self, schema: &'s Value) -> &'s Value {
        if let Some(name) = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            return &self.defs[name];
        }
        // `anyOf: [X, null]` is an optional X.
        if let Some(any) = schema["anyOf"].as_array()
            && any.len() == 2
            && let Some(other) = any.iter().find(|s| s["type"] != "null")
            && any.iter().any(|s| s["type"] == "null")
        {
            return self.resolve(other);
        }
        schema
    }

    fn def_name(schema: &Value) -> Option<&str> {
        let any = schema["anyOf"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["type"] != "null"));
        any.unwrap_or(schema)["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
    }

    fn kind(&self, schema: &Value) -> String {
        match Self::def_name(schema) {
            Some("Duration") => return "duration".into(),
            Some("Size") => return "size".into(),
            Some("S3Url") => return "S3 URL".into(),
            Some("RoleArn") => return "role ARN".into(),
            Some("RolePattern") => return "role ARN pattern".into(),
            Some("ImagePattern") => return "image pattern".into(),
            _ => {}
        }
        let schema = self.resolve(schema);
        if let Some(values) = schema["enum"].as_array() {
            return values
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        if let Some(variants) = schema["oneOf"].as_array()
            && variants.iter().all(|v| v["const"].is_string())
        {
            return variants
                .iter()
                .map(|v| format!("`{}`", v["const"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => vec![],
        };
        match types.first().copied() {
            Some("array") => format!("array of {}", self.kind(&schema["items"])),
            Some("object") if schema["additionalProperties"].is_object() => {
                format!("table of {}", self.kind(&schema["additionalProperties"]))
            }
            Some(t) => t.to_string(),
            None => "table".into(),
        }
    }

    fn walk(&mut self, prefix: &str, variant: Option<&str>, inherited: &str, schema: &'s Value) {
        let schema = self.resolve(schema);
        if let Some(variants) = schema["oneOf"].as_array().or(schema["anyOf"].as_array())
            && variants
                .iter()
                .all(|v| v["properties"].is_object() || v["$ref"].is_string())
        {
            for v in variants {
                let v = self.resolve(v);
                let name = v["properties"]["type"]["const"]
                    .as_str()
                    .map(|t| format!("type = \"{t}\""))
                    .or_else(|| v["required"][0].as_str().map(|r| format!("with `{r}`")));
                let about = v["description"].as_str().unwrap_or(inherited);
                self.walk(prefix, name.as_deref().or(variant), about, v);
            }
            return;
        }
        let Some(properties) = schema["properties"].as_object() else {
            return;
        };
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, field) in properties {
            if variant.is_some_and(|v| v.starts_with("type =")) && name == "type" {
                continue;
            }
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let target = self.resolve(field);
            let variants = target["oneOf"].as_array().or(target["anyOf"].as_array());
            let is_table = target["properties"].is_object()
                || variants
                    .is_some_and(|v| v.iter().all(|v| self.resolve(v)["properties"].is_object()));
            let description = field["description"]
                .as_str()
                .or(target["description"].as_str())
                .unwrap_or(if properties.len() == 1 { inherited } else { "" })
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|");
            let default = if required.contains(name.as_str()) {
                "required".to_string()
            } else if let Some(d) = field.get("default") {
                format!("`{}`", d.to_string().replace('|', "\\|"))
            } else if let Some(i) = description.find("Default: ") {
                let rest = &description[i + "Default: ".len()..];
                rest.split(". ")
                    .next()
                    .unwrap_or(rest)
                    .trim_end_matches('.')
                    .to_string()
            } else if self.kind(field) == "boolean" {
                "`false`".to_string()
            } else if self.kind(field).starts_with("table of")
                || self.kind(field).starts_with("array of")
            {
                "empty".to_string()
            } else {
                "none".to_string()
            };
            let array_of_tables =
                target["items"].is_object() && self.resolve(&target["items"])["oneOf"].is_array();
            if array_of_tables {
                self.walk(&format!("{path}[]"), variant, "", &target["items"]);
                continue;
            }
            if is_table {
                self.walk(&path, variant, "", field);
                continue;
            }
            if let Some(map) = target["additionalProperties"].as_object()
                && (map.contains_key("$ref")
                    && self.resolve(&target["additionalProperties"])["properties"].is_object())
            {
                self.walk(
                    &format!("{path}.<name>"),
                    variant,
                    "",
                    &target["additionalProperties"],
                );
                continue;
            }
            self.rows.push(Row {
                path,
                variant: variant.map(str::to_string),
                kind: self.kind(field),
                default,
                description,
            });
        }
    }
}

fn rows(schema_text: &str) -> Vec<Row> {
    let value: Value = serde_json::from_str(schema_text).unwrap();
    let mut walker = Walker {
        defs: &value["$defs"],
        rows: Vec::new(),
    };
    walker.walk("", None, "", &value);
    walker.rows
}

/// How a config field reloads: its own entry, or that of the table it belongs to.
fn reload_class(path: &str) -> Option<Reloads> {
    let mut candidate = path.to_string();
    loop {
        if let Some(how) = config::reloads(&candidate) {
            return Some(how);
        }
        let cut = candidate.rfind(['.', '['])?;
        candidate.truncate(cut);
    }
}

fn table(rows: &[Row], reload: bool) -> String {
    let mut out = String::new();
    if reload {
        out.push_str(
            "| field | type | default | on reload | description |\n|---|---|---|---|---|\n",
        );
    } else {
        out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
    }
    for row in rows {
        let name = match &row.variant {
            Some(v) => format!("`{}` ({})", row.path, v.replace('`', "")),
            None => format!("`{}`", row.path),
        };
        if reload {
            let how = match reload_class(&row.path) {
                Some(Reloads::Live) => "live",
                Some(Reloads::Restart) => "restarts sources",
                Some(Reloads::Process) => "at the next start",
                None => "?",
            };
            out.push_str(&format!(
                "| {name} | {} | {} | {how} | {} |\n",
                row.kind, row.default, row.description
            ));
        } else {
            out.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                row.kind, row.default, row.description
            ));
        }
    }
    out
}

#[test]
fn config_doc_lists_every_field() {
    let rows = rows(&schema::config_schema());
    check_doc(&path(DOCS_DIR, "config.md"), &table(&rows, true));
}

#[test]
fn jobspec_doc_lists_every_field() {
    let rows = rows(&schema::jobspec_schema());
    check_doc(&path(DOCS_DIR, "jobspec.md"), &table(&rows, false));
}

#[test]
fn every_config_field_has_a_reload_class_and_every_class_a_field() {
    let rows = rows(&schema::config_schema());
    let paths: BTreeSet<String> = rows.iter().map(|r| r.path.clone()).collect();
    for path in &paths {
        assert!(
            reload_class(path).is_some(),
            "`{path}` has no entry in config::FIELDS"
        );
    }
    for (field, _) in config::FIELDS {
        assert!(
            paths.iter().any(|p| p == field
                || p.starts_with(&format!("{field}."))
                || p.starts_with(&format!("{field}["))),
            "config::FIELDS names `{field}`, which the schema does not have"
        );
    }
    for expected in [
        "agent.concurrency",
        "sources[].queue_url",
        "roles.environments.<name>.role_arn",
        "aws.endpoint_url",
    ] {
        assert!(
            paths.contains(expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn docs_show_the_example_files_verbatim() {
    let config_doc = std::fs::read_to_string(path(DOCS_DIR, "config.md")).unwrap();
    let example = std::fs::read_to_string(path(DOCS_DIR, "examples/agent.toml")).unwrap();
    assert!(
        config_doc.contains(&example),
        "docs/config.md must show docs/examples/agent.toml as it is"
    );
    let job_doc = std::fs::read_to_string(path(DOCS_DIR, "jobspec.md")).unwrap();
    for entry in std::fs::read_dir(path(DOCS_DIR, "examples/jobs")).unwrap() {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            job_doc.contains(&text),
            "docs/jobspec.md must show {} as it is",
            file.display()
        );
    }
}
