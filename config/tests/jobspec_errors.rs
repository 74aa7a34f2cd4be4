//! Bad JobSpec messages: each reports the exact `line:column` and says what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use agent_config::Problem;
use agent_config::jobspec;

fn problems(text: &str) -> Vec<Problem> {
    match jobspec::parse(text.as_bytes()) {
        Ok(job) => panic!("accepted: {job:?}\n{text}"),
        Err(e) => e.problems,
    }
}

#[track_caller]
fn bad(text: &str, at: &str, fragment: &str) {
    let found = problems(text);
    let shown: Vec<String> = found.iter().map(|p| p.render("job.json")).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem, got:\n{}",
        shown.join("\n")
    );
    let p = &found[0];
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{}", shown[0]);
    }
    assert_eq!(format!("{}:{}", p.line, p.column), at, "{}", shown[0]);
    let all = format!("{} {}", p.message, p.hint.as_deref().unwrap_or(""));
    assert!(all.contains(fragment), "`{fragment}` not in: {}", shown[0]);
}

const GIT: &str = r#"{"type": "git", "url": "https://github.com/example/app.git"}"#;

/// A build job from `kind` and `source` lines, with `extra` lines from line 6 on, each
/// indented by two spaces.
fn job_of(kind: &str, source: &str, extra: &[&str]) -> String {
    let mut lines = vec![
        "{".to_string(),
        "  \"version\": 1,".to_string(),
        "  \"id\": \"job-1\",".to_string(),
        format!("  \"kind\": \"{kind}\","),
        format!("  \"source\": {source}"),
    ];
    for line in extra {
        let last = lines.len() - 1;
        lines[last].push(',');
        lines.push(format!("  {line}"));
    }
    lines.push("}".to_string());
    lines.join("\n")
}

fn build(extra: &[&str]) -> String {
    job_of("build", GIT, extra)
}

fn deploy(extra: &[&str]) -> String {
    job_of(
        "deploy",
        r#"{"type": "s3", "url": "s3://example-bucket/web.zip"}"#,
        extra,
    )
}

const DEPLOY: &str = r#""deploy": {"application_name": "web", "deployment_group": "prod"}"#;

#[test]
fn the_helpers_make_valid_jobs() {
    jobspec::parse(build(&[]).as_bytes()).unwrap();
    jobspec::parse(deploy(&[DEPLOY]).as_bytes()).unwrap();
}

#[test]
fn syntax_error() {
    bad("{\n  \"version\": 1,\n}", "3:1", "trailing comma");
}

#[test]
fn not_an_object() {
    bad("[1, 2]", "1:1", "a JobSpec is a JSON object");
}

#[test]
fn missing_version() {
    bad(
        "{\"id\": \"x\"}",
        "1:1",
        "this agent reads JobSpec version 1",
    );
}

#[test]
fn unknown_version() {
    bad(
        "{\n  \"version\": 2,\n  \"whatever\": true\n}",
        "2:14",
        "JobSpec version 2 is not one this agent reads",
    );
}

#[test]
fn version_as_a_string() {
    bad("{\"version\": \"1\"}", "1:13", "send `\"version\": 1`");
}

#[test]
fn duplicate_key() {
    bad(
        &build(&[
            r#""image": "agent-standard:latest""#,
            r#""image": "evil.com/x""#,
        ]),
        "7:3",
        "`image` is written twice",
    );
}

#[test]
fn duplicate_env_key() {
    bad(
        &build(&[r#""env": {"A": "1", "A": "2"}"#]),
        "6:21",
        "`A` is written twice",
    );
}

#[test]
fn unknown_field_suggests_the_right_one() {
    bad(
        &build(&[r#""imgae": "agent-standard""#]),
        "6:3",
        "did you mean `image`?",
    );
}

#[test]
fn unknown_nested_field() {
    bad(
        &build(&[r#""role": {"arn": "arn:aws:iam::123456789012:role/x", "externalId": "x"}"#]),
        "6:55",
        "did you mean `external_id`?",
    );
}

#[test]
fn wrong_type() {
    bad(
        &build(&[r#""privileged": "yes""#]),
        "6:17",
        "invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn env_value_not_a_string() {
    bad(
        &build(&[r#""env": {"PORT": 8080}"#]),
        "6:19",
        "expected a string",
    );
}

#[test]
fn missing_required_field() {
    bad(
        "{\n  \"version\": 1,\n  \"kind\": \"build\"\n}",
        "1:1",
        "missing field `id`",
    );
}

#[test]
fn id_with_a_slash() {
    bad(
        &"{\n  \"version\": 1,\n  \"id\": \"../job\",\n  \"kind\": \"build\",\n  \"source\": SRC\n}".replace("SRC", GIT),
        "3:9",
        "`id`: `/` is not allowed",
    );
}

#[test]
fn kind_typo() {
    bad(&job_of("buid", GIT, &[]), "4:11", "did you mean `build`?");
}

#[test]
fn buildspec_on_a_deploy_job() {
    bad(
        &deploy(&[DEPLOY, r#""buildspec": {"path": "b.yml"}"#]),
        "7:3",
        "`buildspec` is for `\"kind\": \"build\"` jobs",
    );
}

#[test]
fn privileged_on_a_deploy_job() {
    bad(
        &deploy(&[DEPLOY, r#""privileged": false"#]),
        "7:3",
        "`privileged` is for `\"kind\": \"build\"` jobs",
    );
}

#[test]
fn deploy_on_a_build_job() {
    bad(
        &build(&[DEPLOY]),
        "6:3",
        "`deploy` is for `\"kind\": \"deploy\"` jobs",
    );
}

#[test]
fn deploy_job_without_deploy() {
    bad(
        &deploy(&[]),
        "4:11",
        "a deploy job needs a `deploy` section",
    );
}

#[test]
fn buildspec_with_both_forms() {
    bad(
        &build(&[r#""buildspec": {"path": "a.yml", "inline": "version: 0.2"}"#]),
        "6:16",
        "exactly one of `path`, `inline` and `s3`",
    );
}

#[test]
fn buildspec_in_s3_names_an_object() {
    bad(
        &build(&[r#""buildspec": {"s3": "s3://ci-config/buildspecs/"}"#]),
        "6:23",
        "names no object",
    );
    bad(
        &build(&[r#""buildspec": {"s3": "arn:aws:s3:::Bad_Bucket/x.yml"}"#]),
        "6:23",
        "`buildspec.s3`",
    );
}

#[test]
fn buildspec_path_outside_the_source() {
    bad(
        &build(&[r#""buildspec": {"path": "../secrets.yml"}"#]),
        "6:25",
        "must stay inside the source",
    );
}

#[test]
fn source_type_typo() {
    bad(
        &job_of("build", r#"{"type": "gti", "url": "x"}"#, &[]),
        "5:22",
        "did you mean `git`?",
    );
}

#[test]
fn git_url_that_runs_a_command() {
    bad(
        &job_of(
            "build",
            r#"{"type": "git", "url": "ext::sh -c touch% /tmp/x"}"#,
            &[],
        ),
        "5:36",
        "holds whitespace",
    );
}

#[test]
fn git_ref_that_is_an_option() {
    bad(
        &job_of(
            "build",
            r#"{"type": "git", "url": "https://h.example/r.git", "ref": "--upload-pack=x"}"#,
            &[],
        ),
        "5:70",
        "which git reads as an option",
    );
}

#[test]
fn git_url_with_a_token() {
    bad(
        &job_of(
            "build",
            r#"{"type": "git", "url": "https://x:ghp_123@github.com/o/r.git"}"#,
            &[],
        ),
        "5:36",
        "carries credentials",
    );
}

#[test]
fn s3_source_without_a_key() {
    bad(
        &job_of(
            "build",
            r#"{"type": "s3", "url": "s3://example-bucket"}"#,
            &[],
        ),
        "5:35",
        "names a bucket but no object or prefix",
    );
}

#[test]
fn field_of_another_source_type() {
    bad(
        &job_of(
            "build",
            r#"{"type": "s3", "url": "s3://example-bucket/a.zip", "ref": "main"}"#,
            &[],
        ),
        "5:64",
        "`ref` does not apply to an `s3` source",
    );
}

#[test]
fn inline_file_outside_the_source() {
    bad(
        &job_of(
            "build",
            r#"{"type": "inline", "files": {"../../etc/cron.d/x": "* * * * * root sh"}}"#,
            &[],
        ),
        "5:42",
        "must stay inside the source",
    );
}

#[test]
fn inline_without_files() {
    bad(
        &job_of("build", r#"{"type": "inline", "files": {}}"#, &[]),
        "5:41",
        "`files` is empty",
    );
}

#[test]
fn https_source_over_plain_http() {
    bad(
        &job_of(
            "build",
            r#"{"type": "https", "url": "http://example.com/b.tgz"}"#,
            &[],
        ),
        "5:38",
        "plain http",
    );
}

#[test]
fn https_source_with_a_bad_checksum() {
    bad(
        &job_of(
            "build",
            r#"{"type": "https", "url": "https://example.com/b.tgz", "sha256": "ABC"}"#,
            &[],
        ),
        "5:77",
        "64 lowercase hex",
    );
}

#[test]
fn env_name_starting_with_a_digit() {
    bad(
        &build(&[r#""env": {"1BAD": "x"}"#]),
        "6:11",
        "is not a variable name",
    );
}

#[test]
fn reserved_env_name() {
    bad(
        &build(&[r#""env": {"CODEBUILD_BUILD_ID": "x"}"#]),
        "6:11",
        "reserved for the variables the agent sets",
    );
}

#[test]
fn variable_both_plain_and_secret() {
    bad(
        &build(&[
            r#""env": {"DB": "x"}"#,
            r#""secrets": {"parameter_store": {"DB": "/db/password"}}"#,
        ]),
        "7:35",
        "`DB` is set both in `env` and in `secrets`",
    );
}

#[test]
fn bad_secrets_manager_arn() {
    bad(
        &build(&[
            r#""secrets": {"secrets_manager": {"DB": "arn:aws:secretsmanager:eu-west-1:1234:secret:db"}}"#,
        ]),
        "6:41",
        "the account must be 12 digits",
    );
}

#[test]
fn bad_parameter_name() {
    bad(
        &build(&[r#""secrets": {"parameter_store": {"DB": "db password"}}"#]),
        "6:41",
        "is not a Parameter Store name",
    );
}

#[test]
fn role_with_both_arn_and_environment() {
    bad(
        &build(&[r#""role": {"arn": "arn:aws:iam::123456789012:role/x", "environment": "prod"}"#]),
        "6:55",
        "not both",
    );
}

#[test]
fn role_arn_with_a_wildcard() {
    bad(
        &build(&[r#""role": {"arn": "arn:aws:iam::123456789012:role/*"}"#]),
        "6:19",
        "wildcards belong in patterns",
    );
}

#[test]
fn session_tag_in_the_aws_namespace() {
    bad(
        &build(&[r#""role": {"environment": "prod", "session_tags": {"aws:team": "x"}}"#]),
        "6:52",
        "which AWS reserves",
    );
}

#[test]
fn environment_role_with_an_external_id() {
    bad(
        &build(&[r#""role": {"environment": "prod", "external_id": "abc"}"#]),
        "6:35",
        "comes from the agent's config",
    );
}

#[test]
fn packaging_in_lowercase() {
    bad(
        &build(&[r#""artifacts": {"packaging": "zip"}"#]),
        "6:30",
        "did you mean `ZIP`?",
    );
}

#[test]
fn artifacts_not_in_s3() {
    bad(
        &build(&[r#""artifacts": {"s3": "/tmp/artifacts"}"#]),
        "6:23",
        "is not an S3 URL",
    );
}

#[test]
fn zero_timeout() {
    bad(
        &build(&[r#""timeout": "0s""#]),
        "6:14",
        "`timeout` must be more than 0s",
    );
}

#[test]
fn bad_timeout() {
    bad(
        &build(&[r#""timeout": "soon""#]),
        "6:14",
        "is not a duration",
    );
}

#[test]
fn bad_label() {
    bad(
        &build(&[r#""labels": {"-x": "y"}"#]),
        "6:14",
        "must start with a letter or digit",
    );
}

#[test]
fn webhook_over_plain_http() {
    bad(
        &build(&[r#""notify": {"webhook": "http://10.0.0.1/hook"}"#]),
        "6:25",
        "plain http",
    );
}

#[test]
fn lifecycle_event_typo() {
    bad(
        &deploy(&[
            r#""deploy": {"application_name": "web", "deployment_group": "prod", "events": ["AfterInstal"]}"#,
        ]),
        "6:80",
        "`deploy.events[0]`: `AfterInstal` is not a valid value",
    );
}

#[test]
fn traffic_hook_without_traffic() {
    bad(
        &deploy(&[
            r#""deploy": {"application_name": "web", "deployment_group": "prod", "events": ["BeforeInstall", "BeforeAllowTraffic"]}"#,
        ]),
        "6:97",
        "`traffic` is off",
    );
}

#[test]
fn reserved_lifecycle_event() {
    bad(
        &deploy(&[
            r#""deploy": {"application_name": "web", "deployment_group": "prod", "events": ["Install"]}"#,
        ]),
        "6:80",
        "is run by the agent",
    );
}

#[test]
fn deployment_group_that_is_a_path() {
    bad(
        &deploy(&[r#""deploy": {"application_name": "web", "deployment_group": "../../etc"}"#]),
        "6:61",
        "they name directories on the host",
    );
}

#[test]
fn file_exists_behavior_in_lowercase() {
    bad(
        &deploy(&[
            r#""deploy": {"application_name": "web", "deployment_group": "prod", "file_exists_behavior": "overwrite"}"#,
        ]),
        "6:93",
        "did you mean `OVERWRITE`?",
    );
}

#[test]
fn too_large_a_message() {
    let files = format!(
        r#"{{"type": "inline", "files": {{"a": "{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    bad(
        &job_of("build", &files, &[]),
        "1:1",
        "at most 1048576 bytes",
    );
}

#[test]
fn not_utf8() {
    let found = jobspec::parse(b"{\n  \"id\": \"\xff\"}")
        .unwrap_err()
        .problems;
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].line, found[0].column), (2, 10));
    assert!(found[0].message.contains("not UTF-8"));
}

#[test]
fn every_problem_is_reported_in_order() {
    let text = job_of(
        "build",
        r#"{"type": "git", "url": "ext::sh -c x"}"#,
        &[
            r#""image": "Evil""#,
            r#""timeout": "forever""#,
            r#""labels": {"ok": "\u0007"}"#,
        ],
    );
    let found = problems(&text);
    let at: Vec<String> = found
        .iter()
        .map(|p| format!("{}:{} {}", p.line, p.column, p.field))
        .collect();
    assert_eq!(
        at,
        [
            "5:36 source.url",
            "6:12 image",
            "7:14 timeout",
            "8:20 labels.ok"
        ]
    );
}

#[test]
fn errors_render_with_origin_position_and_hint() {
    let e = jobspec::parse(job_of("buid", GIT, &[]).as_bytes()).unwrap_err();
    assert_eq!(
        e.render("sqs:msg-1"),
        "sqs:msg-1:4:11: error: `kind`: `buid` is not a valid value\n  hint: did you mean `build`?"
    );
    assert!(e.to_string().starts_with("job:4:11: error:"));
}
