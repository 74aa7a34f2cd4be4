//! `check_policy`: what the config does not allow is refused before anything runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::time::Duration;

use agent_config::config::{self, Config};
use agent_config::jobspec::{self, JobSpec, PolicyViolation};

const CONFIG: &str = r#"
version = 1
[jobs]
default_timeout = "30m"
max_timeout = "2h"
allowed_images = ["agent-*", "registry.example.com/team/*"]
[roles]
allowed = ["arn:aws:iam::123456789012:role/deploy-*"]
[roles.environments.prod]
role_arn = "arn:aws:iam::222222222222:role/agent-prod"
external_id = "prod-ext"
[[sources]]
type = "spool"
path = "/var/lib/agent/spool"
"#;

fn config() -> Config {
    config::parse(CONFIG, "policy.toml").unwrap()
}

fn config_with(extra: &str) -> Config {
    let text = CONFIG.replacen("[jobs]\n", &format!("[jobs]\n{extra}\n"), 1);
    config::parse(&text, "policy.toml").unwrap()
}

fn build(fields: &str) -> JobSpec {
    let text = format!(
        r#"{{"version": 1, "id": "j1", "kind": "build", "source": {{"type": "s3", "url": "s3://example-bucket/src.zip"}}{fields}}}"#
    );
    jobspec::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(job: &JobSpec, config: &Config) -> Vec<PolicyViolation> {
    match jobspec::check_policy(job, config) {
        Ok(r) => panic!("allowed: {r:?}"),
        Err(v) => v,
    }
}

#[track_caller]
fn refused_once(job: &JobSpec, config: &Config, field: &str, fragment: &str) -> PolicyViolation {
    let v = refused(job, config);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].field, field);
    let text = v[0].to_string();
    assert!(text.contains(fragment), "`{fragment}` not in {text}");
    v.into_iter().next().unwrap()
}

#[test]
fn an_allowed_build_is_resolved_with_defaults() {
    let job = build(r#", "role": {"arn": "arn:aws:iam::123456789012:role/deploy-web"}"#);
    let r = jobspec::check_policy(&job, &config()).unwrap();
    assert_eq!(r.timeout, Duration::from_secs(30 * 60));
    assert_eq!(
        r.image.unwrap().to_string(),
        "docker.io/library/agent-standard:latest"
    );
    let role = r.role.unwrap();
    assert_eq!(
        role.arn.as_str(),
        "arn:aws:iam::123456789012:role/deploy-web"
    );
    assert_eq!(role.external_id, None);
    assert!(!r.privileged);
}

#[test]
fn an_environment_gives_the_role_and_its_external_id() {
    let job = build(r#", "role": {"environment": "prod", "session_tags": {"team": "web"}}"#);
    let role = jobspec::check_policy(&job, &config())
        .unwrap()
        .role
        .unwrap();
    assert_eq!(
        role.arn.as_str(),
        "arn:aws:iam::222222222222:role/agent-prod"
    );
    assert_eq!(role.external_id.as_deref(), Some("prod-ext"));
    assert_eq!(role.environment.as_deref(), Some("prod"));
    assert_eq!(role.session_tags["team"], "web");
}

#[test]
fn a_role_outside_the_allow_list_is_refused() {
    let job = build(r#", "role": {"arn": "arn:aws:iam::123456789012:role/admin"}"#);
    refused_once(
        &job,
        &config(),
        "role.arn",
        "add a pattern to `roles.allowed`",
    );
}

#[test]
fn a_role_in_another_account_is_refused() {
    let job = build(r#", "role": {"arn": "arn:aws:iam::999999999999:role/deploy-web"}"#);
    refused_once(&job, &config(), "role.arn", "is not in `roles.allowed`");
}

#[test]
fn a_role_in_another_partition_is_refused() {
    let job = build(r#", "role": {"arn": "arn:aws-cn:iam::123456789012:role/deploy-web"}"#);
    refused_once(&job, &config(), "role.arn", "is not in `roles.allowed`");
}

#[test]
fn an_environment_role_named_by_arn_points_to_the_environment() {
    let job = build(r#", "role": {"arn": "arn:aws:iam::222222222222:role/agent-prod"}"#);
    refused_once(
        &job,
        &config(),
        "role.arn",
        r#"name it with `"role": {"environment": "prod"}`"#,
    );
}

#[test]
fn no_role_arn_is_allowed_when_the_list_is_empty() {
    let empty = config::parse(
        "version = 1\n[[sources]]\ntype = \"spool\"\npath = \"/srv/spool\"\n",
        "empty.toml",
    )
    .unwrap();
    let job = build(r#", "role": {"arn": "arn:aws:iam::123456789012:role/deploy-web"}"#);
    refused_once(&job, &empty, "role.arn", "`roles.allowed` is empty");
}

#[test]
fn an_unknown_environment_is_refused_with_a_suggestion() {
    let job = build(r#", "role": {"environment": "prdo"}"#);
    refused_once(&job, &config(), "role.environment", "did you mean `prod`?");
}

#[test]
fn an_image_outside_the_allow_list_is_refused() {
    let job = build(r#", "image": "evil.com/agent-standard:latest""#);
    let v = refused_once(&job, &config(), "image", "`jobs.allowed_images`");
    assert!(v.message.contains("evil.com/agent-standard:latest"), "{v}");
}

#[test]
fn allowed_images_match() {
    for image in [
        "agent-small:1.0",
        "docker.io/library/agent-standard",
        "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let job = build(&format!(r#", "image": "{image}""#));
        jobspec::check_policy(&job, &config()).unwrap_or_else(|v| panic!("{image}: {v:?}"));
    }
}

#[test]
fn only_the_default_image_when_no_patterns() {
    let strict = config::parse(
        "version = 1\n[jobs]\ndefault_image = \"agent-standard:1.2\"\n[[sources]]\ntype = \"spool\"\npath = \"/srv/spool\"\n",
        "strict.toml",
    )
    .unwrap();
    assert!(jobspec::check_policy(&build(""), &strict).is_ok());
    assert!(jobspec::check_policy(&build(r#", "image": "agent-standard:1.2""#), &strict).is_ok());
    refused_once(
        &build(r#", "image": "agent-standard:latest""#),
        &strict,
        "image",
        "default image",
    );
}

#[test]
fn privileged_is_refused_unless_allowed() {
    let job = build(r#", "privileged": true"#);
    refused_once(
        &job,
        &config(),
        "privileged",
        "`jobs.allow_privileged = true`",
    );
    let r = jobspec::check_policy(&job, &config_with("allow_privileged = true")).unwrap();
    assert!(r.privileged);
}

#[test]
fn a_timeout_above_the_maximum_is_refused() {
    refused_once(
        &build(r#", "timeout": "3h""#),
        &config(),
        "timeout",
        "raise `jobs.max_timeout`",
    );
    let r = jobspec::check_policy(&build(r#", "timeout": "2h""#), &config()).unwrap();
    assert_eq!(r.timeout, Duration::from_secs(7200));
}

#[test]
fn artifacts_need_a_location() {
    refused_once(
        &build(r#", "artifacts": {"packaging": "ZIP"}"#),
        &config(),
        "artifacts.s3",
        "`storage.artifacts`",
    );
    let with_storage = config::parse(
        &format!("{CONFIG}\n[storage]\nartifacts = \"s3://example-bucket/artifacts\"\n"),
        "storage.toml",
    )
    .unwrap();
    let r = jobspec::check_policy(
        &build(r#", "artifacts": {"packaging": "ZIP"}"#),
        &with_storage,
    )
    .unwrap();
    assert_eq!(
        r.artifacts.unwrap().to_string(),
        "s3://example-bucket/artifacts"
    );
}

#[test]
fn every_refusal_is_reported() {
    let job = build(
        r#", "image": "busybox", "privileged": true, "timeout": "9h", "role": {"arn": "arn:aws:iam::123456789012:role/root"}"#,
    );
    let fields: Vec<String> = refused(&job, &config())
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["role.arn", "image", "privileged", "timeout"]);
}

#[test]
fn a_deployment_has_no_image_to_check() {
    let strict = config::parse(
        "version = 1\n[[sources]]\ntype = \"spool\"\npath = \"/srv/spool\"\n",
        "strict.toml",
    )
    .unwrap();
    let job = jobspec::parse(
        br#"{"version": 1, "id": "d1", "kind": "deploy", "source": {"type": "s3", "url": "s3://example-bucket/web.zip"},
            "deploy": {"application_name": "web", "deployment_group": "prod"}}"#,
    )
    .unwrap();
    let r = jobspec::check_policy(&job, &strict).unwrap();
    assert_eq!(r.image, None);
    assert_eq!(r.role, None);
    assert_eq!(r.timeout, strict.jobs.default_timeout);
}

/// Ways a job could try to slip a role past `deploy-*` in account 123456789012: each is
/// refused, either as an invalid ARN or by the allow-list.
#[test]
fn role_allow_list_bypass_attempts_are_refused() {
    let attempts = [
        // Another role whose name only looks right after normalising.
        "arn:aws:iam::123456789012:role/admin",
        "arn:aws:iam::123456789012:role/Admin-deploy-x",
        "arn:aws:iam::123456789012:role/xdeploy-web",
        // Wildcards and patterns in the job's own ARN are literal text, never globs.
        "arn:aws:iam::123456789012:role/*",
        "arn:aws:iam::123456789012:role/deploy*/../admin",
        "arn:aws:iam::*:role/deploy-web",
        "arn:aws:iam::12345678901?:role/deploy-web",
        // Other partitions, services, accounts and resource types.
        "arn:aws-cn:iam::123456789012:role/deploy-web",
        "arn:aws-us-gov:iam::123456789012:role/deploy-web",
        "arn:aws:sts::123456789012:role/deploy-web",
        "arn:aws:iam::123456789013:role/deploy-web",
        "arn:aws:iam::0123456789012:role/deploy-web",
        "arn:aws:iam::123456789012:user/deploy-web",
        "arn:aws:iam::123456789012:group/deploy-web",
        // Paths, separators and trailing characters.
        "arn:aws:iam::123456789012:role/admin/deploy-web",
        "arn:aws:iam::123456789012:role/deploy-web ",
        " arn:aws:iam::123456789012:role/deploy-web",
        "arn:aws:iam::123456789012:role/deploy-web\n",
        "arn:aws:iam::123456789012:role/deploy-web\u{0}",
        "arn:aws:iam::123456789012:role/deploy-web:extra",
        "arn:aws:iam::123456789012:role/deploy-web#",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role",
        // Case: the partition, service and resource type are lower case in every ARN.
        "ARN:AWS:IAM::123456789012:ROLE/DEPLOY-WEB",
        "arn:AWS:iam::123456789012:role/deploy-web",
        "arn:aws:IAM::123456789012:role/deploy-web",
        "arn:aws:iam::123456789012:Role/deploy-web",
        // Look-alike characters.
        "arn:aws:iam::123456789012:role/dеploy-web",
        "arn:aws:iam::１２３456789012:role/deploy-web",
    ];
    let config = config();
    for arn in attempts {
        let text = format!(
            r#"{{"version": 1, "id": "j1", "kind": "build", "source": {{"type": "s3", "url": "s3://example-bucket/src.zip"}}, "role": {{"arn": {}}}}}"#,
            serde_json::to_string(arn).unwrap()
        );
        match jobspec::parse(text.as_bytes()) {
            Err(_) => {}
            Ok(job) => {
                let v = refused(&job, &config);
                assert!(v.iter().any(|v| v.field == "role.arn"), "{arn:?}: {v:#?}");
            }
        }
    }
}

#[test]
fn a_local_git_repository_needs_its_directory_allowed() {
    let git = |url: &str| {
        let text = format!(
            r#"{{"version": 1, "id": "j1", "kind": "build", "source": {{"type": "git", "url": "{url}"}}}}"#
        );
        jobspec::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    };
    refused_once(
        &git("file:///srv/git/app.git"),
        &config(),
        "source.url",
        "`jobs.allowed_git_paths` is empty",
    );
    let allowing = config_with("allowed_git_paths = [\"/srv/git\"]");
    assert!(jobspec::check_policy(&git("file:///srv/git/app.git"), &allowing).is_ok());
    for outside in [
        "file:///srv/gitx/app.git",
        "file:///etc/app.git",
        "file:///srv",
    ] {
        refused_once(
            &git(outside),
            &allowing,
            "source.url",
            "allowed: `/srv/git`",
        );
    }
    // `..` never gets as far as the policy.
    let text = r#"{"version": 1, "id": "j1", "kind": "build", "source": {"type": "git", "url": "file:///srv/git/../../etc"}}"#;
    assert!(jobspec::parse(text.as_bytes()).is_err());
}
