//! Bad configs: each reports the exact `line:column` and says what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use agent_config::Problem;
use agent_config::config::{self, ConfigError};

const SPOOL: &str = "[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n";

fn problems(text: &str) -> Vec<Problem> {
    match config::parse(text, "agent.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The text has exactly one problem, at `at` (`line:col`), whose message or hint holds
/// `fragment`.
#[track_caller]
fn bad(text: &str, at: &str, fragment: &str) {
    let found = problems(text);
    let shown: Vec<String> = found.iter().map(|p| p.render("agent.toml")).collect();
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

/// The text with a valid spool source appended.
fn with_source(text: &str) -> String {
    format!("version = 1\n{text}\n{SPOOL}")
}

#[test]
fn missing_version() {
    bad(
        &format!("[agent]\nconcurrency = 2\n{SPOOL}"),
        "1:1",
        "add `version = 1`",
    );
}

#[test]
fn unknown_version() {
    bad(
        &format!("version = 2\n{SPOOL}"),
        "1:11",
        "config version 2 is not one this agent reads",
    );
}

#[test]
fn version_as_a_string() {
    bad(
        &format!("version = \"1\"\n{SPOOL}"),
        "1:11",
        "this agent reads config version 1",
    );
}

#[test]
fn toml_syntax_error() {
    bad("version = 1\n[agent]\nconcurrency = \n", "3:15", "");
}

#[test]
fn unknown_key_suggests_the_right_one() {
    bad(
        &with_source("[agent]\nconcurency = 2"),
        "3:1",
        "did you mean `concurrency`?",
    );
}

#[test]
fn unknown_section_suggests_the_right_one() {
    bad(
        "version = 1\n[[source]]\ntype = \"spool\"\n",
        "2:3",
        "did you mean `sources`?",
    );
}

#[test]
fn concurrency_zero() {
    bad(
        &with_source("[agent]\nconcurrency = 0"),
        "3:15",
        "`concurrency` must be at least 1",
    );
}

#[test]
fn concurrency_wrong_type() {
    bad(
        &with_source("[agent]\nconcurrency = \"2\""),
        "3:15",
        "expected an integer",
    );
}

#[test]
fn bad_duration() {
    bad(
        &with_source("[agent]\ndrain_timeout = \"15x\""),
        "3:17",
        "is not a duration",
    );
}

#[test]
fn default_timeout_above_max() {
    bad(
        &with_source("[jobs]\ndefault_timeout = \"9h\""),
        "3:19",
        "`default_timeout` (9h) is longer than `max_timeout` (8h)",
    );
}

#[test]
fn zero_max_timeout() {
    bad(
        &with_source("[jobs]\nmax_timeout = 0"),
        "3:15",
        "`max_timeout` must be at least 1s",
    );
}

#[test]
fn bad_size() {
    bad(
        &with_source("[jobs]\nmemory = \"4q\""),
        "3:10",
        "is not a size like 4g, 512m or a number of bytes",
    );
}

#[test]
fn size_below_docker_minimum() {
    bad(
        &with_source("[jobs]\nmemory = \"1m\""),
        "3:10",
        "at least 6m",
    );
}

#[test]
fn zero_cpus() {
    bad(
        &with_source("[jobs]\ncpus = 0"),
        "3:8",
        "`cpus` must be between 0.01 and 1024",
    );
}

#[test]
fn too_few_pids() {
    bad(
        &with_source("[jobs]\npids = 5"),
        "3:8",
        "`pids` must be at least 16",
    );
}

#[test]
fn relative_work_dir() {
    bad(
        &with_source("[agent]\nwork_dir = \"var/lib/agent\""),
        "3:12",
        "is not an absolute path",
    );
}

#[test]
fn dot_dot_in_state_dir() {
    bad(
        &with_source("[agent]\nstate_dir = \"/var/lib/../x\""),
        "3:13",
        "holds `.` or `..`",
    );
}

#[test]
fn metrics_address_with_a_host_name() {
    bad(
        &with_source("[agent]\nmetrics_address = \"localhost:9095\""),
        "3:19",
        "`metrics_address = \"127.0.0.1:9095\"`",
    );
}

#[test]
fn log_format_typo() {
    bad(
        &with_source("[agent]\nlog_format = \"jsno\""),
        "3:14",
        "did you mean `json`?",
    );
}

#[test]
fn bad_label_key() {
    bad(
        &with_source("[agent]\nlabels = { \"bad key\" = \"x\" }"),
        "3:12",
        "label key `bad key`",
    );
}

#[test]
fn bucket_name_with_capitals() {
    bad(
        &with_source("[storage]\nlogs = \"s3://My_Bucket/logs\""),
        "3:8",
        "is not a valid S3 bucket name",
    );
}

#[test]
fn storage_not_s3() {
    bad(
        &with_source("[storage]\nartifacts = \"https://bucket/x\""),
        "3:13",
        "is not an S3 URL",
    );
}

#[test]
fn role_pattern_with_a_partial_account_wildcard() {
    bad(
        &with_source("[roles]\nallowed = [\"arn:aws:iam::12345678901*:role/x\"]"),
        "3:12",
        "must be the whole field",
    );
}

#[test]
fn role_pattern_with_a_partition_wildcard() {
    bad(
        &with_source(
            "[roles]\nallowed = [\"arn:aws:iam::123456789012:role/a\", \"arn:*:iam::123456789012:role/x\"]",
        ),
        "3:48",
        "the partition cannot hold a wildcard",
    );
}

#[test]
fn environment_role_with_a_short_account() {
    bad(
        &with_source("[roles.environments.dev]\nrole_arn = \"arn:aws:iam::111:role/x\""),
        "3:12",
        "the account must be 12 digits",
    );
}

#[test]
fn environment_name_with_a_space() {
    bad(
        &with_source(
            "[roles.environments.\"prod env\"]\nrole_arn = \"arn:aws:iam::111111111111:role/x\"",
        ),
        "2:21",
        "is not an environment name",
    );
}

#[test]
fn short_external_id() {
    bad(
        &with_source(
            "[roles.environments.dev]\nrole_arn = \"arn:aws:iam::111111111111:role/x\"\nexternal_id = \"x\"",
        ),
        "4:15",
        "is not an external id",
    );
}

#[test]
fn image_pattern_with_a_registry_wildcard() {
    bad(
        &with_source("[jobs]\nallowed_images = [\"*.example.com/x\"]"),
        "3:19",
        "registry host cannot hold a wildcard",
    );
}

#[test]
fn default_image_with_capitals() {
    bad(
        &with_source("[jobs]\ndefault_image = \"Agent:latest\""),
        "3:17",
        "must be lowercase",
    );
}

#[test]
fn no_sources() {
    bad(
        "version = 1\n[agent]\nconcurrency = 2\n",
        "1:1",
        "the config has no job sources",
    );
}

#[test]
fn duplicate_spool_sources() {
    bad(
        &format!("version = 1\n{SPOOL}\n{SPOOL}"),
        "6:1",
        "repeats the spool source on line 2",
    );
}

#[test]
fn duplicate_queues_with_different_tuning() {
    let sqs = |wait: &str| {
        format!(
            "[[sources]]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/jobs\"\nwait_time = \"{wait}\"\n"
        )
    };
    bad(
        &format!("version = 1\n{}{}", sqs("10s"), sqs("20s")),
        "6:1",
        "repeats the sqs source on line 2",
    );
}

#[test]
fn pipeline_sources_repeat_only_with_the_same_query() {
    let source = |query: &str| {
        format!(
            "[[sources]]\ntype = \"codepipeline\"\ncategory = \"Build\"\nprovider = \"AgentBuild\"\nversion = \"1\"\nquery_param = {{ Fleet = \"{query}\" }}\n"
        )
    };
    let fleets = format!("version = 1\n{}{}", source("linux"), source("arm64"));
    if let Err(e) = config::parse(&fleets, "agent.toml") {
        panic!("two fleets' sources refused: {:?}", e.problems());
    }
    bad(
        &format!("version = 1\n{}{}", source("linux"), source("linux")),
        "8:1",
        "repeats the codepipeline source on line 2",
    );
}

fn sqs(extra: &str) -> String {
    format!(
        "version = 1\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/jobs\"\n{extra}\n"
    )
}

#[test]
fn visibility_timeout_above_twelve_hours() {
    bad(&sqs("visibility_timeout = \"13h\""), "5:22", "at most 12h");
}

#[test]
fn wait_time_above_twenty_seconds() {
    bad(
        &sqs("wait_time = 21"),
        "5:13",
        "`wait_time` must be at most 20s",
    );
}

#[test]
fn max_receive_count_zero() {
    bad(
        &sqs("max_receive_count = 0"),
        "5:21",
        "`max_receive_count` must be at least 1",
    );
}

#[test]
fn queue_url_without_account() {
    bad(
        "version = 1\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/jobs\"\n",
        "4:13",
        "does not end in `/<12-digit account>/<queue name>`",
    );
}

#[test]
fn field_of_another_source_type() {
    bad(
        &format!(
            "version = 1\n{SPOOL}queue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/jobs\"\n"
        ),
        "5:13",
        "`queue_url` does not apply to a `spool` source",
    );
}

#[test]
fn source_type_typo() {
    bad(
        "version = 1\n[[sources]]\ntype = \"sqss\"\n",
        "3:8",
        "did you mean `sqs`?",
    );
}

fn pipeline(fields: &str) -> String {
    format!("version = 1\n[[sources]]\ntype = \"codepipeline\"\n{fields}\n")
}

#[test]
fn pipeline_category_in_the_wrong_case() {
    bad(
        &pipeline("category = \"build\"\nprovider = \"AgentBuild\"\nversion = \"1\""),
        "4:12",
        "did you mean `Build`?",
    );
}

#[test]
fn pipeline_provider_with_a_space() {
    bad(
        &pipeline("category = \"Build\"\nprovider = \"Agent Build\"\nversion = 1"),
        "5:12",
        "is not a CodePipeline action provider",
    );
}

#[test]
fn pipeline_without_version() {
    bad(
        &pipeline("category = \"Build\"\nprovider = \"AgentBuild\""),
        "2:1",
        "has no `version`",
    );
}

#[test]
fn pipeline_poll_interval_too_long() {
    bad(
        &pipeline(
            "category = \"Build\"\nprovider = \"AgentBuild\"\nversion = \"1\"\npoll_interval = \"1h\"",
        ),
        "7:17",
        "at most 5m",
    );
}

#[test]
fn pipeline_query_of_two_properties() {
    bad(
        &pipeline(
            "category = \"Build\"\nprovider = \"AgentBuild\"\nversion = \"1\"\nquery_param = { Fleet = \"linux\", Zone = \"a\" }",
        ),
        "7:15",
        "CodePipeline queries one property",
    );
}

#[test]
fn pipeline_query_value_with_a_space() {
    bad(
        &pipeline(
            "category = \"Build\"\nprovider = \"AgentBuild\"\nversion = \"1\"\nquery_param = { Fleet = \"linux large\" }",
        ),
        "7:25",
        "is not a value CodePipeline can query",
    );
}

#[test]
fn query_of_an_sqs_source() {
    bad(
        "version = 1\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/jobs\"\nquery_param = { Fleet = \"linux\" }\n",
        "5:15",
        "`query_param` does not apply to an `sqs` source",
    );
}

#[test]
fn webhook_over_plain_http() {
    bad(
        &with_source("[notifications]\nwebhook = \"http://hooks.example.com/agent\""),
        "3:11",
        "uses plain http to another machine",
    );
}

#[test]
fn bad_region() {
    bad(
        &with_source("[aws]\nregion = \"eu-west\""),
        "3:10",
        "is not an AWS region",
    );
}

#[test]
fn root_as_a_deploy_destination() {
    bad(
        &with_source("[deploy]\nallowed_destinations = [\"/srv\", \"/\"]"),
        "3:33",
        "would let a deployment overwrite any file",
    );
}

#[test]
fn zero_revisions() {
    bad(
        &with_source("[deploy]\nmax_revisions = 0"),
        "3:17",
        "`max_revisions` must be at least 1",
    );
}

#[test]
fn spool_inside_the_work_dir() {
    bad(
        "version = 1\n[agent]\nwork_dir = \"/srv/agent\"\n[[sources]]\ntype = \"spool\"\npath = \"/srv/agent/spool\"\n",
        "6:8",
        "the work directory is emptied between jobs",
    );
}

#[test]
fn state_dir_equal_to_deploy_root() {
    bad(
        &with_source(
            "[agent]\nstate_dir = \"/var/lib/agent/x\"\n[deploy]\nroot = \"/var/lib/agent/x/\"",
        ),
        "5:8",
        "`deploy.root` (/var/lib/agent/x) overlaps `agent.state_dir`",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "version = 1\n[agent]\nconcurrency = 0\ndrain_timeout = \"soon\"\n[jobs]\ncpus = -1\n[storage]\nlogs = \"s3://x\"\n";
    let found = problems(text);
    let at: Vec<String> = found
        .iter()
        .map(|p| format!("{}:{} {}", p.line, p.column, p.field))
        .collect();
    assert_eq!(
        at,
        [
            "1:1 sources",
            "3:15 agent.concurrency",
            "4:17 agent.drain_timeout",
            "6:8 jobs.cpus",
            "8:8 storage.logs",
        ]
    );
}

#[test]
fn errors_render_with_file_position_and_hint() {
    let e = config::parse(
        &with_source("[agent]\nconcurrency = 0"),
        "/etc/agent/agent.toml",
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { .. }));
    assert_eq!(
        e.to_string(),
        "/etc/agent/agent.toml:3:15: error: `concurrency` must be at least 1\n  hint: it is how many jobs run at once; write `concurrency = 1` or more"
    );
}

#[test]
fn unreadable_file() {
    let e = config::load(std::path::Path::new("/nonexistent/agent.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/agent.toml")
    );
    assert!(e.problems().is_empty());
}

#[test]
fn git_credentials_are_scoped_and_name_one_secret_file() {
    let table = |body: &str| with_source(&format!("[[git_credentials]]\n{body}"));
    bad(
        &table("url_prefix = \"https://git.example.com\"\ntoken_file = \"/etc/agent/t\""),
        "3:14",
        "does not end in `/` or `:`",
    );
    bad(
        &table("url_prefix = \"ext::sh -c x/\"\ntoken_file = \"/etc/agent/t\""),
        "3:14",
        "https://",
    );
    bad(
        &table("url_prefix = \"https://git.example.com/\"\ntoken_file = \"etc/t\""),
        "4:14",
        "absolute",
    );
    bad(
        &table("url_prefix = \"https://git.example.com/\""),
        "2:1",
        "exactly one of `token_file` and `ssh_key_file`",
    );
    bad(
        &table("url_prefix = \"git@git.example.com:\"\ntoken_file = \"/t\"\nssh_key_file = \"/k\""),
        "2:1",
        "exactly one of",
    );
    bad(
        &table(
            "url_prefix = \"https://git.example.com/\"\ntoken_file = \"/t\"\npassphrase_file = \"/p\"",
        ),
        "2:1",
        "`passphrase_file` is for an ssh key",
    );
    bad(&table("token_file = \"/t\""), "2:1", "no `url_prefix`");
    bad(
        &with_source(
            "[[git_credentials]]\nurl_prefix = \"https://g.example.com/a/\"\ntoken_file = \"/t\"\n[[git_credentials]]\nurl_prefix = \"https://g.example.com/a/\"\ntoken_file = \"/u\"",
        ),
        "6:14",
        "has credentials already",
    );
}
