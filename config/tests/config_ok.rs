//! Valid configs: defaults, loading from a file, the forms values may take.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::io::Write;
use std::time::Duration;

use agent_config::config::{self, ActionCategory, LogFormat, Source};

const MINIMAL: &str =
    "version = 1\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool/\"\n";

#[test]
fn defaults_fill_what_is_left_out() {
    let c = config::parse(MINIMAL, "agent.toml").unwrap();
    assert!(!c.agent.name.is_empty());
    assert_eq!(c.agent.work_dir.to_str(), Some("/var/lib/agent/work"));
    assert_eq!(c.agent.state_dir.to_str(), Some("/var/lib/agent/state"));
    assert_eq!(c.agent.concurrency, 1);
    assert_eq!(c.agent.drain_timeout, Duration::from_secs(900));
    assert_eq!(c.agent.metrics_address, None);
    assert_eq!(c.agent.log_format, LogFormat::Plain);
    assert_eq!(c.jobs.default_timeout, Duration::from_secs(3600));
    assert_eq!(c.jobs.max_timeout, Duration::from_secs(8 * 3600));
    assert_eq!(c.jobs.default_image, "agent-standard:latest");
    assert!(c.jobs.allowed_images.is_empty());
    assert!(!c.jobs.allow_privileged);
    assert_eq!(c.jobs.memory, 4 << 30);
    assert_eq!(c.jobs.cpus, 2.0);
    assert_eq!(c.jobs.pids, 4096);
    assert_eq!(c.storage, config::StorageConfig::default());
    assert!(c.roles.allowed.is_empty() && c.roles.environments.is_empty());
    assert_eq!(c.deploy.root.to_str(), Some("/var/lib/agent/deployments"));
    assert!(c.deploy.allowed_destinations.is_empty());
    assert_eq!(c.deploy.max_revisions, 5);
    assert_eq!(c.notifications.webhook, None);
    assert_eq!(c.aws, config::AwsConfig::default());
    // A trailing slash is dropped: the same directory is the same source.
    assert_eq!(
        c.sources,
        [Source::Spool(config::SpoolSource {
            path: "/var/lib/agent/spool".into(),
            max_receive_count: 5,
        })]
    );
}

#[test]
fn values_take_every_documented_form() {
    let text = r#"
version = 1
[agent]
drain_timeout = 90
concurrency = 8
log_format = "json"
metrics_address = "[::1]:9095"
[jobs]
default_timeout = "1h30m"
max_timeout = "36000"
memory = 536870912
cpus = 1
allowed_images = ["registry.example.com/**", "agent-standard:1.*"]
[[sources]]
type = "sqs"
queue_url = "http://127.0.0.1:5000/123456789012/jobs.fifo"
wait_time = 0
visibility_timeout = "12h"
[[sources]]
type = "codepipeline"
category = "Deploy"
provider = "Agent_Deploy-2"
version = 12
query_param = { Fleet = "linux-large_2" }
"#;
    let c = config::parse(text, "agent.toml").unwrap();
    assert_eq!(c.agent.drain_timeout, Duration::from_secs(90));
    assert_eq!(c.agent.log_format, LogFormat::Json);
    assert_eq!(c.jobs.default_timeout, Duration::from_secs(5400));
    assert_eq!(c.jobs.max_timeout, Duration::from_secs(36000));
    assert_eq!(c.jobs.memory, 512 << 20);
    assert_eq!(c.jobs.cpus, 1.0);
    let Source::Sqs(sqs) = &c.sources[0] else {
        panic!()
    };
    assert_eq!(sqs.wait_time, Duration::ZERO);
    assert_eq!(sqs.visibility_timeout, Duration::from_secs(12 * 3600));
    let Source::Codepipeline(cp) = &c.sources[1] else {
        panic!()
    };
    assert_eq!(cp.category, ActionCategory::Deploy);
    assert_eq!(cp.version, "12");
    assert_eq!(cp.poll_interval, Duration::from_secs(30));
    assert_eq!(cp.query_param["Fleet"], "linux-large_2");
    let again = config::parse(&c.to_toml().unwrap(), "again.toml").unwrap();
    assert_eq!(c, again);
}

#[test]
fn load_reports_problems_against_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(file, "{MINIMAL}[agent]\nconcurrency = 0\n").unwrap();
    let e = config::load(&path).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:6:15: error:", path.display())),
        "{e}"
    );
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(config::load(&path).unwrap().sources.len(), 1);
}

#[test]
fn an_environment_role_is_found_by_name() {
    let c = config::parse(
        &format!("{MINIMAL}[roles.environments.dev]\nrole_arn = \"arn:aws:iam::111111111111:role/agent-dev\"\n"),
        "agent.toml",
    )
    .unwrap();
    let role = agent_config::allow::environment_role(&c, "dev").unwrap();
    assert_eq!(role.role_arn.account(), "111111111111");
    assert_eq!(role.external_id, None);
    assert!(agent_config::allow::environment_role(&c, "Dev").is_none());
}

#[test]
fn git_credentials_pick_the_longest_prefix() {
    let text = "version = 1\n[[git_credentials]]\nurl_prefix = \"https://git.example.com/\"\ntoken_file = \"/etc/agent/all\"\n[[git_credentials]]\nurl_prefix = \"https://git.example.com/platform/\"\nusername = \"x-access-token\"\ntoken_file = \"/etc/agent/platform\"\n[[git_credentials]]\nurl_prefix = \"git@git.example.com:\"\nssh_key_file = \"/etc/agent/key\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n";
    let config = agent_config::config::parse(text, "agent.toml").unwrap();
    let pick = |url: &str| {
        agent_config::config::git_credential_for(&config.git_credentials, url)
            .map(|c| c.url_prefix.as_str())
    };
    assert_eq!(
        pick("https://git.example.com/platform/api.git"),
        Some("https://git.example.com/platform/")
    );
    assert_eq!(
        pick("https://git.example.com/web.git"),
        Some("https://git.example.com/")
    );
    assert_eq!(
        pick("git@git.example.com:platform/api.git"),
        Some("git@git.example.com:")
    );
    assert_eq!(pick("https://git.example.com.evil.test/x.git"), None);
    assert_eq!(config.git_credentials[0].username, "git");
    assert_eq!(config.git_credentials[1].username, "x-access-token");
}
