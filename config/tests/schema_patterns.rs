//! The JobSpec schema's patterns say what the parser accepts: a dispatcher that validates
//! its messages against the published schema gets no surprise from the agent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use agent_config::jobspec;
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(&agent_config::jobspec_schema()).unwrap()
}

/// Whether `value` satisfies a string schema's `pattern`, `minLength`, `maxLength` and
/// `not.pattern`.
fn schema_accepts(rule: &Value, value: &str) -> bool {
    let matches = |pattern: &Value| {
        regex::Regex::new(pattern.as_str().unwrap())
            .unwrap()
            .is_match(value)
    };
    let len = value.chars().count() as u64;
    rule.get("pattern").is_none_or(matches)
        && rule
            .get("minLength")
            .is_none_or(|n| len >= n.as_u64().unwrap())
        && rule
            .get("maxLength")
            .is_none_or(|n| len <= n.as_u64().unwrap())
        && rule
            .get("not")
            .and_then(|n| n.get("pattern"))
            .is_none_or(|p| !matches(p))
}

fn parser_accepts(job: &Value) -> bool {
    jobspec::parse(job.to_string().as_bytes()).is_ok()
}

fn build(extra: Value) -> Value {
    let mut job = json!({
        "version": 1, "id": "job-1", "kind": "build",
        "source": {"type": "inline", "files": {"buildspec.yml": "x"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    job
}

const NAMES: [&str; 12] = [
    "job-1",
    "a",
    ".hidden",
    "...",
    ".",
    "a.b_c-d",
    "",
    "white space",
    "ü",
    "a/b",
    "-x",
    "x=y",
];

#[test]
fn ids_env_names_and_labels_agree_with_the_parser() {
    let schema = schema();
    let properties = &schema["properties"];
    let long = "a".repeat(129);
    for id in NAMES.iter().copied().chain([long.as_str(), &long[..128]]) {
        assert_eq!(
            schema_accepts(&properties["id"], id),
            parser_accepts(&build(json!({"id": id}))),
            "id {id:?}"
        );
    }
    let env_names = [
        "NAME",
        "_x",
        "A1",
        "1A",
        "CODEBUILD_X",
        "CODEBUILDX",
        "a-b",
        "",
        "Ä",
    ];
    for name in env_names {
        assert_eq!(
            schema_accepts(&properties["env"]["propertyNames"], name),
            parser_accepts(&build(json!({"env": {name: "v"}}))),
            "env name {name:?}"
        );
    }
    let long_key = "k".repeat(64);
    for key in NAMES
        .iter()
        .copied()
        .chain([long_key.as_str(), &long_key[..63]])
    {
        assert_eq!(
            schema_accepts(&properties["labels"]["propertyNames"], key),
            parser_accepts(&build(json!({"labels": {key: "v"}}))),
            "label key {key:?}"
        );
    }
    let long_value = "v".repeat(257);
    for value in [
        "v",
        "",
        "a\tb",
        "x\u{85}",
        long_value.as_str(),
        &long_value[..256],
    ] {
        assert_eq!(
            schema_accepts(&properties["labels"]["additionalProperties"], value),
            parser_accepts(&build(json!({"labels": {"k": value}}))),
            "label value of {} characters",
            value.len()
        );
    }
}

#[test]
fn deploy_names_and_checksums_agree_with_the_parser() {
    let schema = schema();
    let deploy = &schema["$defs"]["DeploySpec"]["properties"];
    let long = "a".repeat(101);
    let names = NAMES
        .iter()
        .copied()
        .chain(["web+api", "a,b@c", long.as_str(), &long[..100]]);
    for name in names {
        let job = json!({
            "version": 1, "id": "d-1", "kind": "deploy",
            "source": {"type": "inline", "files": {"appspec.yml": "x"}},
            "deploy": {"application_name": name, "deployment_group": "prod"}
        });
        assert_eq!(
            schema_accepts(&deploy["application_name"], name),
            parser_accepts(&job),
            "application name {name:?}"
        );
    }
    let text = schema.to_string();
    assert!(
        text.contains(r#""pattern":"^[0-9a-f]{64}$""#),
        "sha256 pattern"
    );
    let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let hex = regex::Regex::new("^[0-9a-f]{64}$").unwrap();
    for (sum, ok) in [
        (good, true),
        (&good.to_uppercase()[..], false),
        (&good[..63], false),
    ] {
        let job = build(
            json!({"source": {"type": "https", "url": "https://example.com/a.tgz", "sha256": sum}}),
        );
        assert_eq!(parser_accepts(&job), ok, "sha256 {sum}");
        assert_eq!(hex.is_match(sum), ok);
    }
}
